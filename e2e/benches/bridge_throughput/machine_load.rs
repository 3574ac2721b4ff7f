//! Whether something outside the bench used the CPU during a run (another build or test on a
//! shared machine skews every figure): the machine's busy time from /proc/stat minus the CPU time
//! of the bench's own process groups (this process with its replicators, and each broker's groups
//! as broker.sh recorded them).

use std::time::{Duration, Instant};

/// At most this share of the machine may go to other work before a run starts.
const QUIET_SHARE: f64 = 0.10;
/// How long to wait for a quiet machine before running anyway (the run then records the load).
const QUIET_DEADLINE: Duration = Duration::from_mins(3);
const QUIET_SAMPLE: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug)]
pub struct CpuSnapshot {
    at: Instant,
    machine_busy_ticks: u64,
    ours_ticks: u64,
}

/// The process group of this bench (its replicators are children in the same group).
pub fn own_group() -> Option<i32> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    stat.rsplit_once(") ")?.1.split(' ').nth(2)?.parse().ok()
}

pub fn snapshot(groups: &[i32]) -> CpuSnapshot {
    CpuSnapshot { at: Instant::now(), machine_busy_ticks: machine_busy_ticks(), ours_ticks: group_ticks(groups) }
}

/// The share of the whole machine (all cores) that other processes used between two snapshots.
pub fn outside_share(before: CpuSnapshot, after: CpuSnapshot) -> f64 {
    let machine_ticks = after.at.duration_since(before.at).as_secs_f64()
        * crate::replicator::clock_ticks_per_second()
        * std::thread::available_parallelism().map_or(1, usize::from) as f64;
    let busy = after.machine_busy_ticks.saturating_sub(before.machine_busy_ticks);
    let ours = after.ours_ticks.saturating_sub(before.ours_ticks);
    (busy.saturating_sub(ours) as f64 / machine_ticks.max(1.0)).clamp(0.0, 1.0)
}

/// CPU time (clock ticks) the bench's own process groups used between two snapshots.
pub fn own_ticks(before: CpuSnapshot, after: CpuSnapshot) -> f64 {
    after.ours_ticks.saturating_sub(before.ours_ticks) as f64
}

/// Waits until other work leaves the machine (or the deadline passes); returns the last share.
pub async fn wait_for_quiet(groups: &[i32]) -> f64 {
    let started = Instant::now();
    loop {
        let before = snapshot(groups);
        tokio::time::sleep(QUIET_SAMPLE).await;
        let share = outside_share(before, snapshot(groups));
        if share <= QUIET_SHARE || started.elapsed() > QUIET_DEADLINE {
            return share;
        }
        eprintln!("bridge_throughput: waiting for other work to finish ({:.0}% of the CPU)", share * 100.0);
    }
}

/// Busy time of all CPUs: everything in the `cpu` line of /proc/stat except idle and iowait.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}

/// User and system time of every live process in `groups`.
fn group_ticks(groups: &[i32]) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut ticks = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(") ") else { continue };
        // After the command name: state, ppid, pgrp, ... utime (11th) and stime (12th).
        let fields: Vec<&str> = rest.split(' ').collect();
        let in_group = fields.get(2).and_then(|g| g.parse::<i32>().ok()).is_some_and(|g| groups.contains(&g));
        if in_group {
            let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            ticks += field(11) + field(12);
        }
    }
    ticks
}
