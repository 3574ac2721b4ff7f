//! Scale run of the Queue controller (a measurement, not a test): 500 Queues on one Kafka access
//! point. Reports the time until all are Ready, the API-server requests the operator made (from
//! the API server's audit log, by the operator's own identity), its RSS, and then a steady-state
//! window in which the operator should write nothing: to the API server (audit log) and to the
//! broker (records in Kafka's KRaft metadata log other than the controller's heartbeats).
//!
//! Run with `make bench`; writes docs/bench/queue-scale.{json,md}.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use oms_e2e::{Broker, Cluster, DEADLINE, Operator, condition, poll, repo_root, run, run_ok};
use serde_json::{Value, json};

const QUEUES: usize = 500;
const STEADY_WINDOW: Duration = Duration::from_mins(2);
const CLUSTER: &str = "bench";

fn main() -> anyhow::Result<()> {
    // A cluster of its own, with the audit log on.
    run_ok(Command::new(repo_root().join("e2e/harness/cluster.sh")).args(["down", CLUSTER]))?;
    run_ok(Command::new(repo_root().join("e2e/harness/cluster.sh")).args(["up", CLUSTER]).env("OMS_AUDIT", "1"))?;
    let cluster = Cluster::up(CLUSTER)?;
    cluster.install_crds()?;
    let audit_log = cluster.kubeconfig.parent().context("state")?.join("logs/audit.log");
    let ns = cluster.fresh_namespace("scale")?;
    let broker = Broker::up("kafka", "bench-kafka")?;

    // The operator runs as the chart's ServiceAccount, so that its requests carry its own name.
    let release = "scale";
    run_ok(cluster.helm().args(["install", release, "charts/oms-operator", "--namespace", &ns.name]))?;
    let account = format!("{release}-oms-operator");
    let user = format!("system:serviceaccount:{}:{account}", ns.name);
    let kubeconfig = cluster.service_account_kubeconfig(&ns.name, &account)?;
    let operator = Operator::start_with_kubeconfig(&kubeconfig, &["--namespace", &ns.name, "--leader-election=false"])?;

    cluster.apply(
        &ns.name,
        &format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: kafka}}\n\
             spec: {{driver: kafka, external: {{servers: ['{}']}}}}\n",
            broker.address()
        ),
    )?;
    poll("the access point is reachable", DEADLINE, || {
        let out = run(cluster.kubectl().args(["-n", &ns.name, "get", "messagingaccesspoint/kafka", "-o", "json"]))?;
        let ap: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        Ok(condition(&ap, "Ready").is_some_and(|c| c["status"] == "True").then_some(()))
    })?;

    let audit_before = audit_lines(&audit_log);
    let mut queues = String::new();
    for i in 0..QUEUES {
        let _ = write!(
            queues,
            "---\napiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: q{i:03}}}\n\
                 spec: {{accessPointRef: {{name: kafka}}, partitions: 3, retention: {{time: 1d}}}}\n"
        );
    }
    let started = Instant::now();
    cluster.apply(&ns.name, &queues)?;
    let applied = started.elapsed();
    let ready_after = poll("all queues are Ready", Duration::from_mins(30), || {
        let out = run(cluster.kubectl().args(["-n", &ns.name, "get", "queues", "-o", "json"]))?;
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let ready = list["items"].as_array().map_or(0, |items| {
            items.iter().filter(|q| condition(q, "Ready").is_some_and(|c| c["status"] == "True")).count()
        });
        Ok((ready == QUEUES).then(|| started.elapsed()))
    })?;
    let to_ready = operator_requests(&audit_log, &user, audit_before)?;
    let rss_ready = rss_kib(operator.pid())?;

    // Steady state: watch what the operator does when nothing changes.
    let audit_steady = audit_lines(&audit_log);
    let metadata_before = kafka_metadata_writes(&broker)?;
    std::thread::sleep(STEADY_WINDOW);
    let steady = operator_requests(&audit_log, &user, audit_steady)?;
    let metadata_after = kafka_metadata_writes(&broker)?;
    let broker_writes: BTreeMap<String, i64> = metadata_after
        .iter()
        .map(|(kind, after)| (kind.clone(), after - metadata_before.get(kind).copied().unwrap_or(0)))
        .filter(|(_, delta)| *delta != 0)
        .collect();
    let (rss_steady, rss_peak) = (rss_kib(operator.pid())?, peak_rss_kib(operator.pid())?);

    let writes = |counts: &BTreeMap<String, u64>| {
        counts
            .iter()
            .filter(|(verb, _)| matches!(verb.as_str(), "create" | "update" | "patch" | "delete"))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let result = json!({
        "scenario": format!("{QUEUES} Queues (3 partitions, 1d retention) on one external Kafka access point"),
        "machine": machine()?,
        "apply_seconds": applied.as_secs_f64(),
        "all_ready_seconds": ready_after.as_secs_f64(),
        "operator_requests_until_ready": to_ready,
        "operator_writes_until_ready": writes(&to_ready),
        "operator_rss_kib_when_ready": rss_ready,
        "steady_window_seconds": STEADY_WINDOW.as_secs(),
        "steady_operator_requests": steady,
        "steady_operator_api_writes": writes(&steady),
        "steady_broker_metadata_writes": broker_writes,
        "operator_rss_kib_after_steady": rss_steady,
        "operator_peak_rss_kib": rss_peak,
    });
    let out_dir = repo_root().join("docs/bench");
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(out_dir.join("queue-scale.json"), serde_json::to_string_pretty(&result)? + "\n")?;
    std::fs::write(out_dir.join("queue-scale.md"), markdown(&result))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    drop(operator);
    run_ok(cluster.helm().args(["uninstall", release, "--namespace", &ns.name]))?;
    drop(ns);
    run_ok(Command::new(repo_root().join("e2e/harness/cluster.sh")).args(["down", CLUSTER]))?;
    Ok(())
}

fn audit_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).unwrap_or_default().lines().count()
}

/// Requests by verb that `user` made after line `from` of the audit log (one event per request:
/// the `ResponseComplete` stage; watches also log `ResponseStarted`, which is skipped).
fn operator_requests(path: &std::path::Path, user: &str, from: usize) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(path)?;
    let mut counts = BTreeMap::new();
    for line in text.lines().skip(from) {
        let event: Value = serde_json::from_str(line)?;
        if event["user"]["username"] == user && event["stage"] == "ResponseComplete" {
            *counts.entry(event["verb"].as_str().unwrap_or("?").to_owned()).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

/// Records in Kafka's KRaft metadata log by type, except the controller's heartbeats (NoOp):
/// every topic the operator creates, grows or reconfigures shows up here.
fn kafka_metadata_writes(broker: &Broker) -> anyhow::Result<BTreeMap<String, i64>> {
    let dir = repo_root().join("e2e/.state/brokers").join(&broker.name).join("data/__cluster_metadata-0");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    let libs = repo_root().join(".bin/kafka-libs/libs/*");
    let mut counts = BTreeMap::new();
    for segment in segments {
        let output = run(Command::new("java")
            .args(["-Xmx512m", "-cp"])
            .arg(&libs)
            .args(["kafka.tools.DumpLogSegments", "--cluster-metadata-decoder", "--files"])
            .arg(&segment))?;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Some(rest) = line.split("\"type\":\"").nth(1) {
                let kind = rest.split('"').next().unwrap_or_default();
                if kind != "NO_OP_RECORD" {
                    *counts.entry(kind.to_owned()).or_insert(0) += 1;
                }
            }
        }
    }
    Ok(counts)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    oms_e2e::proc_status_kib(pid, "VmRSS:")
}

fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    oms_e2e::proc_status_kib(pid, "VmHWM:")
}

fn machine() -> anyhow::Result<Value> {
    let (model, memory_kib) = oms_e2e::cpu_model_and_memory_kib();
    let memory = memory_kib.map(|k| format!("MemTotal: {k} kB"));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_owned();
    Ok(json!({
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "cpu_model": model,
        "memory": memory,
        "kernel": kernel,
        "kubernetes": "v1.34.4 (kube-apiserver, etcd 3.6.16 on tmpfs)",
        "kafka": "4.1.1, one KRaft node, from Maven Central jars",
        "operator_build": "release",
    }))
}

fn markdown(result: &Value) -> String {
    let mut out = String::from(
        "# Queue controller scale run\n\nProduced by `make bench` (e2e/benches/queue_scale.rs); raw figures in queue-scale.json.\n\n",
    );
    let _ = writeln!(out, "Scenario: {}.\n", result["scenario"].as_str().unwrap_or_default());
    let _ = writeln!(out, "| Figure | Value |\n|---|---|");
    for (label, key) in [
        ("kubectl apply of all Queues (s)", "apply_seconds"),
        ("Time until all Queues Ready (s)", "all_ready_seconds"),
        ("Operator API requests until Ready, by verb", "operator_requests_until_ready"),
        ("Operator API writes until Ready", "operator_writes_until_ready"),
        ("Operator RSS when all Ready (KiB)", "operator_rss_kib_when_ready"),
        ("Steady window (s)", "steady_window_seconds"),
        ("Operator API requests in the steady window, by verb", "steady_operator_requests"),
        ("Operator API writes in the steady window", "steady_operator_api_writes"),
        ("Broker metadata writes in the steady window", "steady_broker_metadata_writes"),
        ("Operator RSS after the window (KiB)", "operator_rss_kib_after_steady"),
        ("Operator peak RSS (KiB)", "operator_peak_rss_kib"),
    ] {
        let _ = writeln!(out, "| {label} | {} |", result[key]);
    }
    let _ = writeln!(out, "\nMachine: {}", result["machine"]);
    out
}
