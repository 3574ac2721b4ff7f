//! Figures every run records: OMB-style latency percentiles, and what the runs ran on.

use std::process::Command;

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
        // Dirty as the bench judges it: docs/bench, which the bench writes, does not count.
        "omsBridge": crate::commit_and_dirty().ok().map(|(commit, dirty)| {
            format!("commit {}{}, release build", &commit[..commit.len().min(7)], if dirty { "-dirty" } else { "" })
        }),
        "kafka": kafka.map(|v| format!("{v} (KRaft, one node per cluster; MirrorMaker 2 = connect-mirror {v})")),
        "natsServer": output(Command::new(repo_root().join(".bin/nats-server")).arg("--version")),
        "rabbitmq": output(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "rabbitmq-server"]))
            .map(|v| format!("{v} (Debian package, rabbitmq_shovel plugin)")),
        "java": java,
    })
}
