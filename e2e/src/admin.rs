//! The admin endpoints of our binaries (metrics over plain HTTP) and this machine's figures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::process::free_server_port;

/// A plain HTTP/1.1 GET; returns (status, body). Enough for the admin endpoints.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).context("no status line")?.parse()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// An integer counter or gauge of an admin endpoint (worker, gateway), optionally the series with
/// a label of value `label` (e.g. `reason="loop"`, `operation="publish"`); 0 while it does not answer.
#[must_use]
pub fn metric(admin: std::net::SocketAddr, name: &str, label: Option<&str>) -> u64 {
    let Ok((_, body)) = http_get(admin, "/metrics") else { return 0 };
    let label = label.map(|value| format!(r#"="{value}""#));
    body.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| label.as_ref().is_none_or(|label| l.contains(label.as_str())))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A free loopback address for a worker's admin endpoint, so the test can read its metrics.
pub fn admin_address() -> anyhow::Result<std::net::SocketAddr> {
    Ok(format!("127.0.0.1:{}", free_server_port()).parse()?)
}

/// Polls a worker's metric until it reaches `goal` or `deadline` passes; returns the last value.
pub async fn wait_metric(admin: std::net::SocketAddr, name: &str, goal: u64, deadline: Duration) -> u64 {
    let started = Instant::now();
    loop {
        let value = metric(admin, name, None);
        if value >= goal || started.elapsed() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmRSS:` (resident now) or `VmHWM:` (peak).
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

/// The CPU model and total memory (KiB) of this machine, for the description beside benchmark
/// figures.
#[must_use]
pub fn cpu_model_and_memory_kib() -> (Option<String>, Option<u64>) {
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
    });
    let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    });
    (model, memory)
}
