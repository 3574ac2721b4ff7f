//! OpenMessaging Benchmark (OMB) workload files: the fields this bench runs, validated once.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// One OMB workload (`e2e/bench/workloads/*.yaml`). OMB fields this bench does not run
/// (`payloadFile`, `consumerBacklogSizeGB`, ...) are refused by name rather than ignored: the
/// payloads are made here, because each must carry its send time and sequence number.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    pub message_size: usize,
    #[serde(default = "one")]
    pub subscriptions_per_topic: u32,
    #[serde(default = "one")]
    pub consumer_per_subscription: u32,
    pub producers_per_topic: u32,
    /// Which key each message carries (a Kafka record key, the `oms-key` header elsewhere).
    #[serde(default)]
    pub key_distributor: KeyDistributor,
    /// Messages per second over all producers. 0: half the capacity of the slowest replicator
    /// run on this workload, from the capacity figures `make bench-capacity` wrote (the rate at
    /// which every replicator compared keeps up, so that latency compares like with like).
    pub producer_rate: u64,
    pub test_duration_minutes: u64,
    /// Published at the workload's rate before the measured window; not counted.
    #[serde(default)]
    pub warmup_duration_minutes: u64,
}

fn one() -> u32 {
    1
}

/// OMB's `NO_KEY` and `KEY_ROUND_ROBIN` (over [`KEYS`] keys, as OMB), and this bench's `ZIPF`:
/// the same keys drawn with Zipf's law (exponent 1), so one key carries a tenth of the messages
/// and the bridge's per-key ordering lanes meet a hot key. OMB's `RANDOM_NANO` is not run here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyDistributor {
    #[default]
    NoKey,
    KeyRoundRobin,
    Zipf,
}

/// Distinct keys of a keyed workload.
pub const KEYS: u64 = 10_000;

impl KeyDistributor {
    /// The key of message `sequence`, the same for every run of a workload.
    pub fn key(self, sequence: u64) -> Option<String> {
        let index = match self {
            KeyDistributor::NoKey => return None,
            KeyDistributor::KeyRoundRobin => sequence % KEYS,
            KeyDistributor::Zipf => {
                let share = (mix(sequence) >> 11) as f64 / (1u64 << 53) as f64;
                zipf_cumulative().partition_point(|c| *c <= share).min(KEYS as usize - 1) as u64
            }
        };
        Some(format!("key-{index:05}"))
    }
}

/// Cumulative shares of keys 0, 1, ... under Zipf's law with exponent 1.
fn zipf_cumulative() -> &'static [f64] {
    static CUMULATIVE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    CUMULATIVE.get_or_init(|| {
        let weights: Vec<f64> = (1..=KEYS).map(|rank| 1.0 / rank as f64).collect();
        let total: f64 = weights.iter().sum();
        weights
            .iter()
            .scan(0.0, |sum, w| {
                *sum += w / total;
                Some(*sum)
            })
            .collect()
    })
}

/// splitmix64's finaliser: a well spread 64-bit value for each sequence number.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The send time (8 bytes) and the sequence number (8 bytes) lead every payload.
pub const STAMP_BYTES: usize = 16;

/// The largest payload a workload may ask for (the length of the payloads' random filler).
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;

impl Workload {
    /// Reads and checks a workload file; errors name the field and what this bench supports.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let workload: Self =
            serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not an OMB workload", path.display()))?;
        let field = |name: &str, problem: &str| anyhow::anyhow!("{}: {name}: {problem}", path.display());
        if workload.topics != 1 {
            return Err(field("topics", "this bench runs one topic per replicator; use 1"));
        }
        if workload.subscriptions_per_topic != 1 || workload.consumer_per_subscription != 1 {
            return Err(field("subscriptionsPerTopic/consumerPerSubscription", "one consumer reads the target; use 1"));
        }
        if workload.partitions_per_topic == 0 || workload.producers_per_topic == 0 {
            return Err(field("partitionsPerTopic/producersPerTopic", "must be at least 1"));
        }
        if !(STAMP_BYTES..=MAX_MESSAGE_SIZE).contains(&workload.message_size) {
            bail!(
                "{}: messageSize: {STAMP_BYTES} (send time and sequence number) to {MAX_MESSAGE_SIZE} bytes",
                path.display()
            );
        }
        if workload.test_duration_minutes == 0 {
            return Err(field("testDurationMinutes", "must be at least 1"));
        }
        Ok(workload)
    }

    /// At the run's rate before the window, not counted; with `OMS_BENCH_SECONDS`, a tenth of
    /// the shortened window.
    pub fn warm_up(&self) -> Duration {
        if developing_seconds().is_some() {
            self.duration() / 10
        } else {
            Duration::from_mins(self.warmup_duration_minutes)
        }
    }

    /// The measured window; `OMS_BENCH_SECONDS` shortens it for a quick look while developing.
    pub fn duration(&self) -> Duration {
        developing_seconds().unwrap_or(Duration::from_mins(self.test_duration_minutes))
    }
}

/// `OMS_BENCH_SECONDS`: every window or step that long, for a quick look while developing (the
/// bench refuses a value that is not a positive number before it starts).
pub fn developing_seconds() -> Option<Duration> {
    std::env::var("OMS_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).map(Duration::from_secs)
}
