//! Latency at a fixed rate: the rate each workload runs at, and what each replicator adds to the
//! end-to-end latency of the target alone at that rate, over the repeats.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use crate::capacity::{ids_in_order, paired, shown, spread};
use crate::workload::Workload;
use crate::{LATENCY, Scenario};

/// The rate a workload runs at, and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct FixedRate {
    pub rate: f64,
    pub from: String,
}

/// Per workload file: its `producerRate`, or half the median capacity of the slowest replicator
/// run on it (of every scenario, not only those picked by `OMS_BENCH_ONLY`, so that a partial run
/// uses the rate a full one would), from the first of `capacities` that measured it. At that rate
/// every replicator compared keeps up, so latency compares like with like.
pub fn fixed_rates(
    scenarios: &[Scenario],
    workloads: &BTreeMap<&str, Workload>,
    capacities: &[Value],
) -> anyhow::Result<BTreeMap<&'static str, FixedRate>> {
    let mut rates = BTreeMap::new();
    for scenario in scenarios {
        let workload = &workloads[scenario.workload];
        if workload.producer_rate > 0 {
            let from = "the workload's producerRate".to_owned();
            rates.insert(scenario.workload, FixedRate { rate: workload.producer_rate as f64, from });
            continue;
        }
        let mut slowest: Option<(String, f64)> = None;
        for other in LATENCY.iter().filter(|s| s.workload == scenario.workload && s.source.is_some()) {
            let id = other.id();
            let Some(capacity) = crate::capacity::median(capacities, &id) else {
                anyhow::bail!(
                    "{}: producerRate 0 takes half the slowest capacity, but no capacity.json (this run's directory, \
                     docs/bench) has {id}; run `make bench-capacity` first or set producerRate",
                    scenario.workload
                );
            };
            if slowest.as_ref().is_none_or(|(_, c)| capacity < *c) {
                slowest = Some((id, capacity));
            }
        }
        let (id, capacity) = slowest.ok_or_else(|| {
            anyhow::anyhow!("{}: no replicator runs on it to take a rate from; set producerRate", scenario.workload)
        })?;
        let from = format!("half the median capacity of {id} ({capacity:.0} msg/s)");
        rates.insert(scenario.workload, FixedRate { rate: (capacity / 2.0).round(), from });
    }
    Ok(rates)
}

const RAW: &str = "raw target (ceiling)";
const PERCENTILES: [(&str, &str); 3] = [("p50", "50pct"), ("p99", "99pct"), ("p999", "999pct")];

/// The run of the target alone in the same repeat as `run`.
fn raw_of<'a>(runs: &'a [Value], run: &Value) -> Option<&'a Value> {
    let target = run["driver"].as_str()?.rsplit(' ').next()?;
    runs.iter().find(|r| r["driver"] == format!("{target} alone") && r["repeat"] == run["repeat"])
}

/// End-to-end latency of `run` minus the target alone's at the same rate, in ms.
fn added(runs: &[Value], run: &Value, percentile: &str) -> Option<f64> {
    let key = format!("aggregatedEndToEndLatency{percentile}");
    Some(run[&key].as_f64()? - raw_of(runs, run)?[&key].as_f64()?)
}

/// CPU time of the replicator per message published in the window, in µs.
fn cpu_micros_per_message(run: &Value) -> Option<f64> {
    per_message(run, "replicatorCpuSeconds")
}

/// `seconds_key` of `run` per message published in its window, in µs.
fn per_message(run: &Value, seconds_key: &str) -> Option<f64> {
    let messages = run["messagesPublished"].as_f64().filter(|m| *m > 0.0)?;
    Some(run[seconds_key].as_f64()? * 1e6 / messages)
}

/// What replication costs per message, in µs: the replicator's own CPU (none for the in-broker
/// peers) plus what the brokers used beyond the target alone's at the same rate in the same
/// repeat (the source's writes and reads, an in-broker peer's work).
fn replication_micros_per_message(runs: &[Value], run: &Value) -> Option<f64> {
    let own = cpu_micros_per_message(run).unwrap_or(0.0);
    Some(own + per_message(run, "brokersCpuSeconds")? - per_message(raw_of(runs, run)?, "brokersCpuSeconds")?)
}

fn runs_of<'a>(runs: &'a [Value], id: &'a str) -> impl Iterator<Item = &'a Value> {
    runs.iter().filter(move |r| r["id"] == id)
}

/// Per run id: the spread over the repeats of latency, added latency and cost; per pair: ours /
/// peer within each repeat; per gateway route: its added p99 minus the direct route's.
pub fn summary(runs: &[Value]) -> Value {
    let ids = ids_in_order(runs);
    let per_run: Vec<Value> = ids
        .iter()
        .map(|id| {
            let first = runs_of(runs, id).next().cloned().unwrap_or_default();
            let mut entry = json!({
                "id": id,
                "driver": first["driver"],
                "replicator": first["replicator"],
                "fixedRate": first["fixedRate"],
                "consumeRate": spread(runs_of(runs, id).filter_map(|r| r["consumeRateAvg"].as_f64()).collect()),
                "missingAfterDrain": runs_of(runs, id).filter_map(|r| r["missingAfterDrain"].as_u64()).sum::<u64>(),
                "replicatorCpuMicrosPerMessage": spread(runs_of(runs, id).filter_map(cpu_micros_per_message).collect()),
                "brokersCpuMicrosPerMessage":
                    spread(runs_of(runs, id).filter_map(|r| per_message(r, "brokersCpuSeconds")).collect()),
                "replicatorPeakRssMiB": spread(
                    runs_of(runs, id).filter_map(|r| r["replicatorPeakRssKiB"].as_f64()).map(|k| k / 1024.0).collect()
                ),
            });
            for (name, percentile) in PERCENTILES {
                let key = format!("aggregatedEndToEndLatency{percentile}");
                entry[format!("endToEnd{name}Ms")] =
                    json!(spread(runs_of(runs, id).filter_map(|r| r[&key].as_f64()).collect()));
                if first["replicator"] != RAW {
                    entry["replicationCpuMicrosPerMessage"] = json!(spread(
                        runs_of(runs, id).filter_map(|r| replication_micros_per_message(runs, r)).collect()
                    ));
                    let added: Vec<f64> = runs_of(runs, id).filter_map(|r| added(runs, r, percentile)).collect();
                    entry[format!("added{name}Ms")] = json!(spread(added));
                }
            }
            entry
        })
        .collect();
    let paired = |a_id: &Value, b_id: &Value, figure: &dyn Fn(&Value) -> Option<f64>, ratio: bool| {
        paired(runs, a_id, b_id, figure, ratio)
    };
    let replication = |r: &Value| replication_micros_per_message(runs, r);
    let added_p99 = |r: &Value| added(runs, r, "99pct");
    let firsts = || runs.iter().filter(|r| r["repeat"] == 0);
    let ours_per_peer: Vec<Value> = firsts()
        .filter(|r| r["replicator"] == "oms-bridge")
        .filter_map(|ours| {
            let peer = firsts().find(|r| r["driver"] == ours["driver"] && r["replicator"] != "oms-bridge")?;
            Some(json!({
                "driver": ours["driver"],
                "peer": peer["replicator"],
                "addedP99OursPerPeer": paired(&ours["id"], &peer["id"], &added_p99, true),
                "cpuPerMessageOursPerPeer": paired(&ours["id"], &peer["id"], &cpu_micros_per_message, true),
                "replicationCpuPerMessageOursPerPeer": paired(&ours["id"], &peer["id"], &replication, true),
            }))
        })
        .collect();
    let gateway_minus_direct: Vec<Value> = firsts()
        .filter(|r| r["driver"].as_str().is_some_and(|d| d.contains(" -> gateway -> ")))
        .filter_map(|via| {
            let direct_driver = via["driver"].as_str()?.replace(" -> gateway -> ", " -> ");
            let direct = firsts().find(|r| r["driver"] == direct_driver.as_str() && r["replicator"] == "oms-bridge")?;
            Some(json!({
                "driver": via["driver"],
                "direct": direct_driver,
                "addedP99GatewayMinusDirectMs": paired(&via["id"], &direct["id"], &added_p99, false),
            }))
        })
        .collect();
    json!({"runs": per_run, "oursPerPeer": ours_per_peer, "gatewayMinusDirect": gateway_minus_direct})
}

pub fn markdown(document: &Value) -> String {
    let summary = &document["summary"];
    let mut out = format!(
        "# Latency at a fixed rate, side by side\n\n\
         Produced by `make bench-latency` (e2e/benches/bridge_throughput) from commit {} \
         ({} repeats, interleaved); raw figures of every run in latency.json. Each cell: median \
         (lowest-highest) over the repeats, {} s of runs in {} sitting(s). Compare within this \
         file, not across machines.\n\n\
         ## Added latency (end-to-end minus the target alone's at the same rate, ms)\n\n\
         | Pair | Replicator | Rate (msg/s) | e2e p50 | e2e p99 | e2e p99.9 | added p50 | added p99 | added p99.9 | replicator CPU (µs/msg) | brokers CPU (µs/msg) | replication CPU (µs/msg) | Peak RSS (MiB) | Missing |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        document["commit"].as_str().unwrap_or("?"),
        document["repeats"],
        document["wallSeconds"],
        document["sittings"],
    );
    for r in summary["runs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r["driver"].as_str().unwrap_or_default(),
            r["replicator"].as_str().unwrap_or_default(),
            r["fixedRate"].as_f64().unwrap_or_default(),
            shown(&r["endToEndp50Ms"], 1),
            shown(&r["endToEndp99Ms"], 1),
            shown(&r["endToEndp999Ms"], 1),
            shown(&r["addedp50Ms"], 1),
            shown(&r["addedp99Ms"], 1),
            shown(&r["addedp999Ms"], 1),
            shown(&r["replicatorCpuMicrosPerMessage"], 1),
            shown(&r["brokersCpuMicrosPerMessage"], 1),
            shown(&r["replicationCpuMicrosPerMessage"], 1),
            shown(&r["replicatorPeakRssMiB"], 0),
            r["missingAfterDrain"],
        );
    }
    out.push_str(
        "\n## oms-bridge / peer (within each repeat)\n\n| Pair | Peer | added p99 ours / peer | replicator CPU per message ours / peer | replication CPU per message ours / peer |\n|---|---|---|---|---|\n",
    );
    for c in summary["oursPerPeer"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            c["driver"].as_str().unwrap_or_default(),
            c["peer"].as_str().unwrap_or_default(),
            shown(&c["addedP99OursPerPeer"], 2),
            shown(&c["cpuPerMessageOursPerPeer"], 2),
            shown(&c["replicationCpuPerMessageOursPerPeer"], 2),
        );
    }
    out.push_str("\n## Crossing a cloud boundary\n\n| Route | Direct | added p99 via gateway minus direct (ms) |\n|---|---|---|\n");
    for c in summary["gatewayMinusDirect"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            c["driver"].as_str().unwrap_or_default(),
            c["direct"].as_str().unwrap_or_default(),
            shown(&c["addedP99GatewayMinusDirectMs"], 1),
        );
    }
    out.push_str("\n## Rates\n\n");
    for (workload, rate) in document["fixedRates"].as_object().into_iter().flatten() {
        let _ = writeln!(
            out,
            "- {workload}: {:.0} msg/s, {}",
            rate["rate"].as_f64().unwrap_or_default(),
            rate["from"].as_str().unwrap_or_default()
        );
    }
    let _ = writeln!(out, "\n{METHOD}");
    let _ = writeln!(out, "Machine: {}\n\nSoftware: {}", document["machine"], document["software"]);
    out
}

const METHOD: &str = "## Method
- Each run: the replicator starts, one message goes all the way through (ready), then the producer
  publishes at the fixed rate through the warm-up and the measured window; the consumer reads the
  target throughout. Only window messages count; each is counted once (repeats are duplicates).
- Send times come from the schedule (message n of a producer at start + n / rate), so a producer
  held up by a slow broker adds its wait to the latency (no coordinated omission).
- Added latency: a run's end-to-end percentile minus the same percentile of the target broker
  alone (the same producer writing to the target) in the same repeat, at the same rate.
- The rate of a workload: half the median capacity (docs/bench/capacity.json) of the slowest
  replicator run on it, so that every replicator compared keeps up; a workload may set its own.
- CPU, from the window's start to the end of the drain, per message published in the window:
  replicator = user + system time of its own processes (worker + gateway for the gateway route;
  the in-broker peers, Shovel and sourcing, show as -); brokers = every broker process of the run;
  replication = replicator + brokers - the brokers of the target alone at the same rate in the
  same repeat: what replicating costs on top of writing to and reading from the target, in-broker
  work included, so that the Shovel and sourcing compare with replicators of their own.
- Payloads are random bytes (nothing compresses); brokers keep at most 1 GiB per Kafka partition
  and 4 GiB per JetStream stream, far above what a replicator that keeps up leaves unread.
";
