//! The highest sustained rate, the OpenMessaging Benchmark way: the highest fixed rate at which
//! the producer keeps its schedule and the target keeps up, with the producer, the replicator and
//! the brokers sharing the machine. Capacity (a backlog drained by the replicator alone) says how
//! fast a replicator can go; this says what rate it carries while the messages are being made.
//!
//! Each run searches by halving: the rate lies between 0 and 1.25x the scenario's median capacity
//! (docs/bench/capacity.json); each step publishes at the middle rate for [`STEP`], then the
//! target drains what is left. A step is sustained when the producer published at least
//! [`KEPT_SCHEDULE`] of its schedule and at most [`MAX_LAG`] of the rate is left unread at the
//! end: a target that falls behind by 5 % of the rate gains a second of lag per 20 s.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::capacity::{described, ids_in_order, merged, paired, shown, spread};
use crate::load::wait_for;
use crate::workload::{Workload, developing_seconds};
use crate::{Brokers, Rig, Scenario, produce_all};

/// How long each rate is held.
const STEP: Duration = Duration::from_secs(20);

/// [`STEP`], or `OMS_BENCH_SECONDS` while developing (a quick look at the search).
fn step() -> Duration {
    developing_seconds().unwrap_or(STEP)
}

/// Halvings of the search: the result is within 1.25 / 2^5 (4 %) of the capacity.
const STEPS: usize = 5;
/// The top of the search, as a share of the capacity a replicator drains a backlog at alone.
const ABOVE_CAPACITY: f64 = 1.25;
/// The share of the schedule the producer must have published in a sustained step.
const KEPT_SCHEDULE: f64 = 0.97;
/// The most left unread at the end of a sustained step, in seconds of the rate.
const MAX_LAG: Duration = Duration::from_secs(1);
/// How long a step's leftovers may take to arrive before the next step; a run whose target
/// cannot catch up in that time ends its search there.
const CATCH_UP: Duration = Duration::from_mins(1);

/// The rate range still open: `low` was sustained (0 at first), `high` was not or is the top.
#[derive(Debug, Clone, Copy)]
struct Search {
    low: f64,
    high: f64,
}

impl Search {
    fn new(capacity: f64) -> Self {
        Self { low: 0.0, high: capacity * ABOVE_CAPACITY }
    }

    fn next_rate(self) -> f64 {
        f64::midpoint(self.low, self.high).round()
    }

    fn after(self, rate: f64, sustained: bool) -> Self {
        if sustained { Self { low: rate, ..self } } else { Self { high: rate, ..self } }
    }
}

/// Whether a step at `rate` for `seconds` was sustained: the producer kept its schedule and the
/// target was at most [`MAX_LAG`] behind at the end.
fn sustained(rate: f64, seconds: f64, published: u64, unread: u64) -> bool {
    published as f64 >= KEPT_SCHEDULE * rate * seconds && unread as f64 <= rate * MAX_LAG.as_secs_f64()
}

/// One search over `scenario`: the replicator and consumer run throughout; each step publishes at
/// the next rate, then lets the target catch up.
pub async fn run(
    scenario: Scenario,
    index: usize,
    repeat: usize,
    capacity: f64,
    workload: &Workload,
    brokers: &mut Brokers,
) -> anyhow::Result<Value> {
    let mut rig = Rig::start(&scenario, "sus", index, repeat, workload, brokers).await?;
    let (counters, step) = (rig.counters.clone(), step());
    // A JVM replicator compiles its hot paths in its first seconds at speed: warm every
    // replicator up at half its capacity first, so that the first step measures it warm.
    let (sent_before, arrived_before) =
        (counters.sequence.load(Ordering::Relaxed), counters.warm_up_received.load(Ordering::Relaxed));
    produce_all(&rig.producers, capacity / 2.0, workload, Instant::now() + step, true, &counters).await;
    let sent = counters.sequence.load(Ordering::Relaxed) - sent_before;
    wait_for(CATCH_UP, || counters.warm_up_received.load(Ordering::Relaxed) - arrived_before >= sent).await;
    let mut search = Search::new(capacity);
    let mut steps = Vec::new();
    let mut caught_up = true;
    for _ in 0..STEPS {
        let rate = search.next_rate();
        let published_before = counters.published.load(Ordering::Relaxed);
        let started = Instant::now();
        produce_all(&rig.producers, rate, workload, started + step, false, &counters).await;
        // The producer's last confirms may come after the step's end: its length is measured.
        let seconds = started.elapsed().as_secs_f64();
        let published = counters.published.load(Ordering::Relaxed) - published_before;
        let unread = rig.backlog();
        let kept = sustained(rate, step.as_secs_f64(), published, unread);
        let catch_up_seconds = rig.drain(CATCH_UP).await;
        caught_up = rig.backlog() == 0;
        rig.replicator.check_alive()?;
        steps.push(json!({
            "rate": rate,
            "seconds": seconds,
            "published": published,
            "publishRate": published as f64 / seconds,
            "unreadAtEnd": unread,
            "sustained": kept,
            "catchUpSeconds": catch_up_seconds,
        }));
        eprintln!(
            "bridge_throughput: sustained {} at {rate:.0} msg/s: published {:.0}/s, {unread} unread at the end: {}",
            scenario.id(),
            published as f64 / seconds,
            if kept { "sustained" } else { "not sustained" }
        );
        search = search.after(rate, kept);
        if !caught_up {
            break;
        }
    }
    let (ready_seconds, other_share_before) = (rig.ready_seconds, rig.other_share_before);
    let received = rig.finish().await?;
    let searched = json!({
        "capacity": capacity,
        "stepSeconds": step.as_secs(),
        "steps": steps,
        "searchEnded": if caught_up { "after every step" } else { "a step's leftovers did not arrive in time" },
        "sustainedRate": search.low,
        "notSustainedRate": search.high,
        "readySeconds": ready_seconds,
        "otherCpuShareBefore": other_share_before,
        "messagesReceived": received.end_to_end_us.len(),
    });
    Ok(merged(described(scenario, repeat, workload), searched))
}

/// Per run id: the spread of the sustained rate and of it / the capacity and / the target
/// alone's (same broker and message size, same repeat); per pair: ours / peer
/// and the gateway route / the direct one, within each repeat.
pub fn summary(runs: &[Value]) -> Value {
    let rate = |r: &Value| r["sustainedRate"].as_f64();
    let per_capacity = |r: &Value| Some(r["sustainedRate"].as_f64()? / r["capacity"].as_f64().filter(|c| *c > 0.0)?);
    let of = |id: &str, figure: &dyn Fn(&Value) -> Option<f64>| -> Option<Value> {
        spread(runs.iter().filter(|r| r["id"] == id).filter_map(figure).collect())
    };
    let firsts = || runs.iter().filter(|r| r["repeat"] == 0);
    let per_run: Vec<Value> = ids_in_order(runs)
        .iter()
        .map(|id| {
            let first = runs.iter().find(|r| r["id"] == *id).cloned().unwrap_or_default();
            let raw = crate::capacity::ends(&first["driver"]).and_then(|(_, target)| {
                firsts().find(|r| r["driver"] == format!("{target} alone") && r["messageSize"] == first["messageSize"])
            });
            json!({
                "id": id,
                "driver": first["driver"],
                "replicator": first["replicator"],
                "workloadFile": first["workloadFile"],
                "sustainedRate": of(id, &rate),
                "sustainedPerCapacity": of(id, &per_capacity),
                "sustainedPerRawTarget": raw.and_then(|raw| paired(runs, &first["id"], &raw["id"], &rate, true)),
            })
        })
        .collect();
    let ours = || firsts().filter(|r| r["replicator"] == "oms-bridge");
    let ours_per_peer: Vec<Value> = ours()
        .flat_map(|ours| {
            firsts()
                .filter(|p| p["driver"] == ours["driver"] && p["replicator"] != "oms-bridge")
                .map(|peer| {
                    json!({
                        "driver": ours["driver"],
                        "peer": peer["replicator"],
                        "sustainedOursPerPeer": paired(runs, &ours["id"], &peer["id"], &rate, true),
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let gateway_per_direct: Vec<Value> = ours()
        .filter(|r| r["driver"].as_str().is_some_and(|d| d.contains(" -> gateway")))
        .filter_map(|via| {
            let (source, target) = crate::capacity::ends(&via["driver"])?;
            let direct_driver = format!("{source} -> {target}");
            let direct = ours().find(|d| d["driver"] == direct_driver.as_str())?;
            Some(json!({
                "driver": via["driver"],
                "direct": direct_driver,
                "sustainedGatewayPerDirect": paired(runs, &via["id"], &direct["id"], &rate, true),
            }))
        })
        .collect();
    json!({"runs": per_run, "oursPerPeer": ours_per_peer, "gatewayPerDirect": gateway_per_direct})
}

pub fn markdown(document: &Value) -> String {
    let summary = &document["summary"];
    let mut out = format!(
        "# Highest sustained rate, side by side\n\n\
         Produced by `make bench-sustained` (e2e/benches/bridge_throughput/sustained.rs) from commit {}{} \
         ({} repeats, interleaved); every figure below comes from sustained.json in this directory. \
         Median (lowest-highest) over the repeats, {} s of runs in {} sitting(s).\n\n\
         ## ours / peer (within each repeat)\n\n| Pair | Peer | sustained rate |\n|---|---|---|\n",
        document["commit"].as_str().unwrap_or("?"),
        if document["dirtyTree"] == true { " with changes not committed" } else { "" },
        document["repeats"],
        document["wallSeconds"],
        document["sittings"],
    );
    for c in summary["oursPerPeer"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            c["driver"].as_str().unwrap_or_default(),
            c["peer"].as_str().unwrap_or_default(),
            shown(&c["sustainedOursPerPeer"], 2)
        );
    }
    out.push_str(
        "\n## Crossing a cloud boundary: gateway / direct\n\n| Route | Direct | sustained rate |\n|---|---|---|\n",
    );
    for c in summary["gatewayPerDirect"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            c["driver"].as_str().unwrap_or_default(),
            c["direct"].as_str().unwrap_or_default(),
            shown(&c["sustainedGatewayPerDirect"], 2)
        );
    }
    out.push_str(
        "\n## Runs\n\n| Pair | Replicator | sustained (msg/s) | / target alone | / capacity |\n|---|---|---|---|---|\n",
    );
    for r in summary["runs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r["driver"].as_str().unwrap_or_default(),
            r["replicator"].as_str().unwrap_or_default(),
            shown(&r["sustainedRate"], 0),
            shown(&r["sustainedPerRawTarget"], 2),
            shown(&r["sustainedPerCapacity"], 2)
        );
    }
    let _ = write!(
        out,
        "\n## How these figures are made\n\n\
         - Each run starts the replicator and a consumer of the target, sends one message through, then\n  \
         searches by halving between 0 and {ABOVE_CAPACITY}x the scenario's median capacity (capacity.json):\n  \
         {STEPS} steps of {} s, each publishing at the middle of the range still open, with send times from\n  \
         the schedule. A step is sustained when the producer published at least {KEPT_SCHEDULE} of its\n  \
         schedule and at most {} s of the rate is unread at its end; the target then catches up before\n  \
         the next step. The sustained rate is the highest step sustained (0 if none was); the next\n  \
         higher one tried was not.\n\
         - The producer, the replicator, the consumer and the brokers share the machine's two cores, as\n  \
         they would in OMB's max-rate runs; \"/ capacity\" says how much of the rate a replicator drains\n  \
         a backlog at alone it keeps while the messages are being made. The target alone (\"alone\")\n  \
         is the producer and the consumer on the target broker: the ceiling \"/ target alone\" divides by.\n\n\
         Machine: {}\n\nSoftware: {}\n",
        step().as_secs(),
        MAX_LAG.as_secs(),
        document["machine"],
        document["software"],
    );
    out
}
