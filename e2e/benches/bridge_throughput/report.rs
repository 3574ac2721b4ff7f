//! The results: OMB-style figures per run, the ratios between runs, and the markdown table.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use oms_e2e::{repo_root, run_ok};
use serde_json::{Value, json};

/// Adds `<prefix>Avg`, `50pct` ... `999pct` and `Max` in milliseconds, as OMB names them.
pub fn add_latencies(result: &mut Value, prefix: &str, mut micros: Vec<u32>) {
    micros.sort_unstable();
    let ms = |us: u32| f64::from(us) / 1000.0;
    let at = |q: f64| micros.get(((micros.len() as f64 * q) as usize).min(micros.len().saturating_sub(1))).copied();
    let average = (!micros.is_empty())
        .then(|| micros.iter().map(|&us| f64::from(us)).sum::<f64>() / micros.len() as f64 / 1000.0);
    result[format!("{prefix}Avg")] = json!(average);
    for (name, q) in [("50pct", 0.5), ("75pct", 0.75), ("95pct", 0.95), ("99pct", 0.99), ("999pct", 0.999)] {
        result[format!("{prefix}{name}")] = json!(at(q).map(ms));
    }
    result[format!("{prefix}Max")] = json!(micros.last().copied().map(ms));
}

/// A ratio of one figure of two runs; None if either lacks it or the divisor is 0.
fn ratio(a: Option<&Value>, b: Option<&Value>, key: &str) -> Option<f64> {
    let (a, b) = (a?[key].as_f64()?, b?[key].as_f64()?);
    (b > 0.0).then(|| a / b)
}

/// Each run through the mTLS gateway beside the direct run of the same pair: the price of
/// crossing a cloud boundary, as ratios gateway / direct.
fn boundary_crossings(runs: &[Value]) -> Vec<Value> {
    runs.iter()
        .filter_map(|gateway| {
            let route = gateway["driver"].as_str()?;
            let direct_route = route.replace(" -> gateway -> ", " -> ");
            if direct_route == route || gateway["replicator"] != "oms-bridge" {
                return None;
            }
            let direct = runs.iter().find(|r| r["driver"] == direct_route.as_str() && r["replicator"] == "oms-bridge");
            Some(json!({
                "driver": route,
                "direct": direct_route,
                "directConsumeRate": direct.map(|d| d["consumeRateAvg"].clone()),
                "gatewayConsumeRate": gateway["consumeRateAvg"],
                "consumeRateGatewayPerDirect": ratio(Some(gateway), direct, "consumeRateAvg"),
                "consumeRateGatewayPerDirectAfterFirstInterval":
                    ratio(Some(gateway), direct, "consumeRateAfterFirstInterval"),
                "directEndToEndP99": direct.map(|d| d["aggregatedEndToEndLatency99pct"].clone()),
                "gatewayEndToEndP99": gateway["aggregatedEndToEndLatency99pct"],
                "endToEndP99GatewayPerDirect": ratio(Some(gateway), direct, "aggregatedEndToEndLatency99pct"),
                "endToEndP50GatewayPerDirect": ratio(Some(gateway), direct, "aggregatedEndToEndLatency50pct"),
                // Worker + gateway against the direct worker alone.
                "peakRssGatewayPerDirect": ratio(Some(gateway), direct, "replicatorPeakRssKiB"),
                "cpuGatewayPerDirect": ratio(Some(gateway), direct, "replicatorCpuSeconds"),
            }))
        })
        .collect()
}

/// Every run, the comparisons, and what they ran on.
pub fn document(runs: &[Value], wall: Duration) -> anyhow::Result<Value> {
    let comparisons: Vec<Value> = runs
        .iter()
        .filter(|r| r["replicator"] == "oms-bridge")
        .map(|ours| {
            let peer = runs.iter().find(|r| {
                r["driver"] == ours["driver"]
                    && r["replicator"] != "oms-bridge"
                    && r["replicator"] != "raw target (ceiling)"
            });
            let target = ours["driver"].as_str().and_then(|d| d.rsplit(' ').next()).unwrap_or_default();
            let ceiling = runs.iter().find(|r| r["driver"] == format!("{target} alone"));
            json!({
                "driver": ours["driver"],
                "peer": peer.map(|p| p["replicator"].clone()),
                "oursConsumeRate": ours["consumeRateAvg"],
                "peerConsumeRate": peer.map(|p| p["consumeRateAvg"].clone()),
                "ceilingConsumeRate": ceiling.map(|c| c["consumeRateAvg"].clone()),
                "oursPerPeer": ratio(Some(ours), peer, "consumeRateAvg"),
                "oursPerPeerAfterFirstInterval": ratio(Some(ours), peer, "consumeRateAfterFirstInterval"),
                "oursPerCeiling": ratio(Some(ours), ceiling, "consumeRateAvg"),
                "peerPerCeiling": ratio(peer, ceiling, "consumeRateAvg"),
                "endToEndP99OursPerPeer": ratio(Some(ours), peer, "aggregatedEndToEndLatency99pct"),
                "peakRssOursPerPeer": ratio(Some(ours), peer, "replicatorPeakRssKiB"),
            })
        })
        .collect();
    Ok(json!({
        "producedBy": "make bench (e2e/benches/bridge_throughput, workloads in e2e/bench/workloads)",
        "machine": machine()?,
        "software": software(),
        "wallSeconds": wall.as_secs(),
        "comparisons": comparisons,
        "crossingCloudBoundary": boundary_crossings(runs),
        "runs": runs,
    }))
}

pub fn machine() -> anyhow::Result<Value> {
    let (model, memory_kib) = oms_e2e::cpu_model_and_memory_kib();
    Ok(json!({
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "cpuModel": model,
        "memoryGiB": memory_kib.map(|k| (k as f64 / 1024.0 / 1024.0).round()),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim(),
        "note": "brokers, replicator, producer and consumer all share these cores",
    }))
}

/// Versions of everything in the runs, asked from the tools themselves where they say it.
pub fn software() -> Value {
    let output =
        |command: &mut Command| run_ok(command).map(|s| s.lines().next().unwrap_or_default().trim().to_owned()).ok();
    let pinned = std::fs::read_to_string(repo_root().join("e2e/harness/versions.env")).unwrap_or_default();
    let kafka = pinned.lines().find_map(|l| l.strip_prefix("KAFKA_VERSION=")).map(str::to_owned);
    let java = Command::new("java")
        .arg("-version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or_default().to_owned());
    json!({
        "omsBridge": output(Command::new("git").args(["-C"]).arg(repo_root()).args(["describe", "--always", "--dirty"]))
            .map(|c| format!("commit {c}, release build")),
        "kafka": kafka.map(|v| format!("{v} (KRaft, one node per cluster; MirrorMaker 2 = connect-mirror {v})")),
        "natsServer": output(Command::new(repo_root().join(".bin/nats-server")).arg("--version")),
        "rabbitmq": output(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "rabbitmq-server"]))
            .map(|v| format!("{v} (Debian package, rabbitmq_shovel plugin)")),
        "java": java,
    })
}

/// How to read the tables; the same for every run of the bench.
const METHOD: &str = "## How these figures are made

- Each run: one producer client publishes to the source for the workload's window at its
  producerRate (0: as fast as a window of 1000 unconfirmed publishes allows); one consumer reads the
  target from the start. Consumed (msg/s) = window messages read at the target during the window / window length.
  Payloads carry their send time: end-to-end latency is producer send -> target consume.
- Ceiling: the same producer and consumer on the target broker alone, no replicator.
- All processes share the machine's cores: a replicator competes with the producer, the consumer
  and two brokers, so ours / ceiling includes what the replicator's own CPU costs the others.
- At the maximum rate, a replicator that falls behind builds a backlog; its latency is then mostly
  the age of that backlog. Missing after drain = confirmed publishes not yet at the target 30 s
  after the window: backlog, not loss.
- Peak RSS is VmHWM of the replicator's own process. The Shovel and JetStream sourcing run inside
  the target broker: their memory and CPU are the broker's (\"in broker\"), not measured apart.
- Kafka: single-node KRaft brokers. MirrorMaker 2 in dedicated mode, one task, identity replication
  policy, Kafka's defaults otherwise (heap as in Kafka's connect-mirror-maker.sh).
- RabbitMQ: classic durable queues, persistent messages, publisher confirms. The Shovel is a
  dynamic shovel on the target node, ack-mode on-confirm, prefetch 1000 (= the bridge's inFlight).
- NATS: two nats-servers with JetStream domains src and dst and a leafnode from dst to src; the
  sourcing target stream reads the source stream through the API prefix $JS.src.API.
- Kafka -> NATS has no peer replicator; its ceiling is the NATS target alone.
- Kafka -> gateway -> NATS: the same worker (tenant acme, identity
  spiffe://cloud-a.oms/ns/acme/bridge/<name>) writes through `oms-bridge gateway` (trust domain
  cloud-b.oms, backend access point acme/edge-nats = the NATS target) over mTLS on loopback, with
  certificates from the OMS PKI. It runs right after the direct Kafka -> NATS run on the same workload
  and brokers; gateway / direct is the price of crossing a cloud boundary without the network's
  latency (both ends on one machine); at a maximum-rate workload the e2e p99 ratio is mostly the
  ratio of backlog ages. Its peak RSS and CPU are worker + gateway (two processes),
  each also in the JSON (peakRssKiBByProcess, cpuSecondsByProcess).
- Other load = share of the machine's CPU used during the window by processes outside the bench
  (not its brokers, replicators or clients); each run first waits up to 3 minutes for it to drop
  below 10 %. A high figure means that run shared the machine with other work.
- ours / peer after 10 s leaves out each window's first interval, in which a JVM replicator is
  still compiling its hot paths.
";

pub fn markdown(document: &Value) -> String {
    let mut out = String::from(
        "# Bridge throughput, side by side\n\n\
         Produced by `make bench` (e2e/benches/bridge_throughput); raw figures in bridge-throughput.json,\n\
         plot in bridge-throughput.png. Every figure comes from one run on one machine; compare ratios\n\
         within this file, not across machines.\n\n## Ratios (consume rate at the target)\n\n\
         | Pair | oms-bridge (msg/s) | Peer | Peer (msg/s) | Ceiling (msg/s) | ours / peer | ours / peer after 10 s | ours / ceiling | peer / ceiling | e2e p99 ours / peer | peak RSS ours / peer |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let number = |v: &Value| v.as_f64().map_or_else(|| "-".to_owned(), |n| format!("{n:.0}"));
    let ratio = |v: &Value| v.as_f64().map_or_else(|| "-".to_owned(), |n| format!("{n:.2}"));
    let ms = |v: &Value| v.as_f64().map_or_else(|| "-".to_owned(), |n| format!("{n:.1}"));
    for c in document["comparisons"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c["driver"].as_str().unwrap_or_default(),
            number(&c["oursConsumeRate"]),
            c["peer"].as_str().unwrap_or("none in this run"),
            number(&c["peerConsumeRate"]),
            number(&c["ceilingConsumeRate"]),
            ratio(&c["oursPerPeer"]),
            ratio(&c["oursPerPeerAfterFirstInterval"]),
            ratio(&c["oursPerCeiling"]),
            ratio(&c["peerPerCeiling"]),
            ratio(&c["endToEndP99OursPerPeer"]),
            ratio(&c["peakRssOursPerPeer"]),
        );
    }
    let crossings = document["crossingCloudBoundary"].as_array().into_iter().flatten().collect::<Vec<_>>();
    if !crossings.is_empty() {
        out.push_str(
            "\n## Price of crossing a cloud boundary (oms-bridge through the mTLS gateway / direct)\n\n\
             | Route | Direct (msg/s) | Via gateway (msg/s) | gateway / direct rate | after 10 s | e2e p99 direct / via gateway (ms) | gateway / direct e2e p99 | peak RSS (worker + gateway) / direct | CPU / direct |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
    }
    for c in crossings {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            c["driver"].as_str().unwrap_or_default(),
            number(&c["directConsumeRate"]),
            number(&c["gatewayConsumeRate"]),
            ratio(&c["consumeRateGatewayPerDirect"]),
            ratio(&c["consumeRateGatewayPerDirectAfterFirstInterval"]),
            ms(&c["directEndToEndP99"]),
            ms(&c["gatewayEndToEndP99"]),
            ratio(&c["endToEndP99GatewayPerDirect"]),
            ratio(&c["peakRssGatewayPerDirect"]),
            ratio(&c["cpuGatewayPerDirect"]),
        );
    }
    out.push_str(
        "\n## Runs\n\n\
         | Pair | Replicator | Runs in | Target rate (msg/s) | Published (msg/s) | Consumed (msg/s) | e2e p50 / p99 / max (ms) | Missing after drain | Peak RSS (MiB) | CPU (s) | Other load (%) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in document["runs"].as_array().into_iter().flatten() {
        let rate =
            r["producerRate"].as_u64().map_or_else(String::new, |n| if n == 0 { "max".into() } else { n.to_string() });
        let rss = r["replicatorPeakRssKiB"].as_f64().map_or_else(
            || if r["replicator"] == "raw target (ceiling)" { "-".into() } else { "in broker".into() },
            |k| format!("{:.0}", k / 1024.0),
        );
        // Several processes: the sum, then each (worker + gateway).
        let by_process = r["peakRssKiBByProcess"].as_object().filter(|p| p.len() > 1).map(|p| {
            let parts: Vec<String> = p
                .iter()
                .map(|(role, k)| format!("{role} {}", k.as_f64().map_or(0.0, |k| k / 1024.0).round()))
                .collect();
            format!(" ({})", parts.join(" + "))
        });
        let rss = rss + &by_process.unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {rate} | {} | {} | {} / {} / {} | {} | {rss} | {} | {} |",
            r["driver"].as_str().unwrap_or_default(),
            r["replicator"].as_str().unwrap_or_default(),
            r["replicatorRunsIn"].as_str().unwrap_or_default(),
            number(&r["publishRateAvg"]),
            number(&r["consumeRateAvg"]),
            ms(&r["aggregatedEndToEndLatency50pct"]),
            ms(&r["aggregatedEndToEndLatency99pct"]),
            ms(&r["aggregatedEndToEndLatencyMax"]),
            r["missingAfterDrain"],
            r["replicatorCpuSeconds"].as_f64().map_or_else(|| "-".to_owned(), |s| format!("{s:.1}")),
            r["otherCpuShareDuringWindow"].as_f64().map_or_else(|| "-".to_owned(), |s| format!("{:.0}", s * 100.0)),
        );
    }
    let _ = writeln!(out, "\n{METHOD}");
    let _ = writeln!(
        out,
        "Machine: {}\n\nSoftware: {}\n\nWall time of the whole run: {} s.",
        document["machine"], document["software"], document["wallSeconds"]
    );
    out
}
