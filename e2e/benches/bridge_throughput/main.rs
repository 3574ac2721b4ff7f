//! Bridges side by side (a measurement, not a test): oms-bridge against the replicator each broker
//! ships (Kafka MirrorMaker 2, the RabbitMQ Shovel, JetStream stream sourcing) and against the
//! target broker alone (the same producer writing to the target with no replicator), plus
//! Kafka -> NATS across vendors, directly and through the mTLS gateway (the price of crossing a
//! cloud boundary). Real brokers from `broker.sh`, on this machine. Three measurements:
//!
//! - Latency at a fixed rate (`make bench-latency`, this file): each run reads an OpenMessaging
//!   Benchmark workload (`e2e/bench/workloads/*.yaml`), produces to the source at a fixed rate
//!   (half the capacity of the slowest replicator of that workload unless the workload names one)
//!   through a warm-up and then the measured window, consumes the target, and reports end-to-end
//!   latency percentiles and what each replicator adds to the target alone's at the same rate,
//!   with peak RSS and CPU time. docs/bench/latency.{json,md}.
//! - Capacity (`OMS_BENCH_MODE=capacity`, `make bench-capacity`, [`capacity`]):
//!   `OMS_BENCH_BACKLOG` messages (default 1,000,000) drained by each replicator alone.
//!   docs/bench/capacity.{json,md}.
//! - Highest sustained rate (`OMS_BENCH_MODE=sustained`, `make bench-sustained`, [`sustained`]):
//!   the latency runs' scenarios, each searching for the highest fixed rate the producer and the
//!   replicator keep up with together. docs/bench/sustained.{json,md}.
//!
//! All three run every scenario `OMS_BENCH_REPEATS` times (default 3), interleaved (A B A B ...), and
//! write docs/bench only for a full run from a clean tree (else e2e/.state/bench). While developing,
//! `OMS_BENCH_ONLY=raw-kafka,kafka-to-kafka` picks runs by a part of their id (`raw-kafka+kafka$`:
//! that id alone), `OMS_BENCH_SECONDS=20` shortens
//! every window (and the warm-up to a tenth of it) and sustained step, and `OMS_BENCH_WINDOW`
//! sets the workers' window.

// A measurement: rates and percentiles are statistics, for which f64 and its casts are ample.
#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]

mod capacity;
mod gateway;
mod latency;
mod load;
mod machine_load;
mod replicator;
mod report;
mod sustained;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use oms_e2e::{Broker, free_server_port, repo_root, run_ok};
use serde_json::{Value, json};

use crate::load::{Consumer, Endpoint, Kind, Producer, Stamp, create_queue, delete_queue, now_ns, payload, wait_for};
use crate::replicator::{NATS_SOURCE_DOMAIN, Replicator, WINDOW};
use crate::workload::Workload;

/// Kafka brokers of latency runs keep at most this much per partition (the oldest segments go
/// first): minutes at a fixed rate then fit on the disk, which a run at 36k msg/s would otherwise
/// fill (12 GB per copy in 5 minutes). Far more than a replicator that keeps up leaves unread.
const KAFKA_RETENTION_LATENCY: &str = "log.retention.bytes=1073741824\nlog.segment.bytes=134217728\n\
     log.retention.check.interval.ms=5000\nfile.delete.delay.ms=1000";
/// Capacity runs keep everything: a backlog (at most [`capacity::BACKLOG_BYTES`]) may exceed the
/// latency runs' bound on one partition, and must not lose its oldest part before it drains.
const KAFKA_RETENTION_CAPACITY: &str = "log.retention.bytes=-1\nlog.segment.bytes=134217728\nfile.delete.delay.ms=1000";
/// JetStream's store limit on both servers. Left unset, a server takes three quarters of the disk
/// free when it starts, which the Kafka runs before it may have just used (deleted topics leave
/// the disk a second later, `file.delete.delay.ms` above), and then refuses a stream of
/// [`crate::load::NATS_STREAM_MAX_BYTES`]. What the streams hold stays far below it.
const NATS_MAX_FILE_STORE: u64 = 16 << 30;

/// OMB's reporting interval: one rate figure per interval.
const STATS_INTERVAL: Duration = Duration::from_secs(10);
/// Until the first message has gone through; a JVM replicator starts slowly on 2 cores.
const READY_DEADLINE: Duration = Duration::from_mins(3);
/// After the window: how long the target may take to catch up before the rest counts as missing.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// One run: what replicates from where to where, under which workload file.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    /// `None`: the producer writes to the target itself (the ceiling run).
    source: Option<Kind>,
    target: Kind,
    replicator: Replicator,
    workload: &'static str,
    /// Round-trip time added between the worker and the gateway (a fault proxy), in ms.
    added_rtt_ms: u32,
}

impl Scenario {
    const fn new(source: Kind, target: Kind, replicator: Replicator, workload: &'static str) -> Self {
        Self { source: Some(source), target, replicator, workload, added_rtt_ms: 0 }
    }

    const fn raw(target: Kind, workload: &'static str) -> Self {
        Self { source: None, target, replicator: Replicator::Raw, workload, added_rtt_ms: 0 }
    }

    /// The gateway route with `ms` more round-trip time between the clouds.
    const fn over_rtt(self, ms: u32) -> Self {
        Self { added_rtt_ms: ms, ..self }
    }

    /// Names the route, the replicator and the workload file: `kafka-to-kafka-oms-bridge+kafka`.
    fn id(&self) -> String {
        let workload = self.workload.trim_end_matches(".yaml");
        match self.source {
            None => format!("raw-{}+{workload}", self.target.broker()),
            Some(_) => {
                format!("{}-{}+{workload}", slug(&self.pair().replace(" -> ", " to ")), slug(self.replicator.label()))
            }
        }
    }

    /// The brokers a run uses; a NATS target also needs the source server its leafnode joins.
    fn brokers(&self) -> Vec<(&'static str, Side)> {
        let mut brokers = vec![(self.target.broker(), Side::Target)];
        if self.target == Kind::Nats {
            brokers.push((Kind::Nats.broker(), Side::Source));
        }
        if let Some(source) = self.source {
            brokers.push((source.broker(), Side::Source));
        }
        brokers
    }

    fn pair(&self) -> String {
        match self.source {
            None => format!("{} alone", self.target.broker()),
            Some(source) if self.replicator == Replicator::OmsBridgeViaGateway && self.added_rtt_ms > 0 => {
                format!("{} -> gateway ({} ms RTT) -> {}", source.broker(), self.added_rtt_ms, self.target.broker())
            }
            Some(source) if self.replicator == Replicator::OmsBridgeViaGateway => {
                format!("{} -> gateway -> {}", source.broker(), self.target.broker())
            }
            Some(source) => format!("{} -> {}", source.broker(), self.target.broker()),
        }
    }
}

/// Lower-case words of `text` joined by `-`: `Kafka MirrorMaker 2 (tuned)` -> `kafka-mirrormaker-2-tuned`.
fn slug(text: &str) -> String {
    let words: Vec<&str> = text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    words.join("-").to_lowercase()
}

use Kind::{Amqp, Kafka, Nats};
use Replicator::{JetStreamSourcing, MirrorMaker2, MirrorMaker2Tuned, OmsBridge, OmsBridgeViaGateway, Shovel};

/// Latency runs, in run order; brokers start on first use and stop after the last run that
/// needs them.
const LATENCY: [Scenario; 11] = [
    Scenario::raw(Kafka, "kafka.yaml"),
    Scenario::new(Kafka, Kafka, OmsBridge, "kafka.yaml"),
    Scenario::new(Kafka, Kafka, MirrorMaker2, "kafka.yaml"),
    Scenario::new(Kafka, Nats, OmsBridge, "nats.yaml"),
    // Right after the direct run, on the same workload and brokers: the ratio is the boundary's price.
    Scenario::new(Kafka, Nats, OmsBridgeViaGateway, "nats.yaml"),
    Scenario::raw(Nats, "nats.yaml"),
    Scenario::new(Nats, Nats, OmsBridge, "nats.yaml"),
    Scenario::new(Nats, Nats, JetStreamSourcing, "nats.yaml"),
    Scenario::raw(Amqp, "rabbitmq.yaml"),
    Scenario::new(Amqp, Amqp, OmsBridge, "rabbitmq.yaml"),
    Scenario::new(Amqp, Amqp, Shovel, "rabbitmq.yaml"),
];

/// Capacity runs, in run order: the latency runs' scenarios (a raw run is the target taking the
/// backlog from the producer), MirrorMaker 2 tuned, the gateway with 20 ms more round trip, and
/// the workloads beside the first ones: keyed (round robin and Zipf), 1 and 12 Kafka partitions,
/// 64 KiB payloads. Runs of a workload keep to the broker pair where it says something: the
/// keyed ones where the bridge's ordering lanes run, partitions only where Kafka has them.
const CAPACITY: [Scenario; 34] = [
    Scenario::raw(Kafka, "kafka.yaml"),
    Scenario::new(Kafka, Kafka, OmsBridge, "kafka.yaml"),
    Scenario::new(Kafka, Kafka, MirrorMaker2, "kafka.yaml"),
    Scenario::new(Kafka, Kafka, MirrorMaker2Tuned, "kafka.yaml"),
    Scenario::new(Kafka, Kafka, OmsBridge, "kafka-keyed.yaml"),
    Scenario::new(Kafka, Kafka, OmsBridge, "kafka-zipf.yaml"),
    Scenario::new(Kafka, Kafka, OmsBridge, "kafka-1-partition.yaml"),
    Scenario::new(Kafka, Kafka, MirrorMaker2, "kafka-1-partition.yaml"),
    Scenario::new(Kafka, Kafka, OmsBridge, "kafka-12-partitions.yaml"),
    Scenario::new(Kafka, Kafka, MirrorMaker2, "kafka-12-partitions.yaml"),
    Scenario::new(Kafka, Kafka, MirrorMaker2Tuned, "kafka-12-partitions.yaml"),
    Scenario::raw(Kafka, "kafka-64kib.yaml"),
    Scenario::new(Kafka, Kafka, OmsBridge, "kafka-64kib.yaml"),
    Scenario::new(Kafka, Kafka, MirrorMaker2, "kafka-64kib.yaml"),
    Scenario::new(Kafka, Nats, OmsBridge, "nats.yaml"),
    Scenario::new(Kafka, Nats, OmsBridgeViaGateway, "nats.yaml"),
    Scenario::new(Kafka, Nats, OmsBridgeViaGateway, "nats.yaml").over_rtt(20),
    Scenario::new(Kafka, Nats, OmsBridge, "nats-keyed.yaml"),
    Scenario::new(Kafka, Nats, OmsBridgeViaGateway, "nats-keyed.yaml"),
    Scenario::raw(Nats, "nats.yaml"),
    Scenario::new(Nats, Nats, OmsBridge, "nats.yaml"),
    Scenario::new(Nats, Nats, JetStreamSourcing, "nats.yaml"),
    Scenario::new(Nats, Nats, OmsBridge, "nats-keyed.yaml"),
    Scenario::new(Nats, Nats, OmsBridge, "nats-zipf.yaml"),
    Scenario::raw(Nats, "nats-64kib.yaml"),
    Scenario::new(Nats, Nats, OmsBridge, "nats-64kib.yaml"),
    Scenario::new(Nats, Nats, JetStreamSourcing, "nats-64kib.yaml"),
    Scenario::raw(Amqp, "rabbitmq.yaml"),
    Scenario::new(Amqp, Amqp, OmsBridge, "rabbitmq.yaml"),
    Scenario::new(Amqp, Amqp, Shovel, "rabbitmq.yaml"),
    Scenario::new(Amqp, Amqp, OmsBridge, "rabbitmq-keyed.yaml"),
    Scenario::raw(Amqp, "rabbitmq-64kib.yaml"),
    Scenario::new(Amqp, Amqp, OmsBridge, "rabbitmq-64kib.yaml"),
    Scenario::new(Amqp, Amqp, Shovel, "rabbitmq-64kib.yaml"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Source,
    Target,
}

/// The bench's brokers: a source and a target of each kind, started on first use. The two NATS
/// servers have JetStream domains `src` and `dst` and a leafnode from the target to the source,
/// which is how the target's stream sources the other server's stream.
struct Brokers {
    up: BTreeMap<(&'static str, Side), Broker>,
    nats_leafnode_port: u16,
    /// `KAFKA_EXTRA_CONFIG` of the Kafka brokers: how much they keep.
    kafka_retention: &'static str,
}

impl Brokers {
    /// None started yet; Kafka brokers will keep what `kafka_retention` says.
    fn new(kafka_retention: &'static str) -> Self {
        Self { up: BTreeMap::new(), nats_leafnode_port: free_server_port(), kafka_retention }
    }

    fn endpoint(&mut self, kind: Kind, side: Side, queue: &str) -> anyhow::Result<Endpoint> {
        if kind == Kind::Nats && side == Side::Target {
            self.start(kind, Side::Source)?;
        }
        let broker = self.start(kind, side)?;
        Ok(Endpoint { kind, address: broker.address(), queue: queue.to_owned() })
    }

    fn start(&mut self, kind: Kind, side: Side) -> anyhow::Result<&Broker> {
        let key = (kind.broker(), side);
        if !self.up.contains_key(&key) {
            let role = if side == Side::Source { "src" } else { "dst" };
            let broker = Broker {
                kind: kind.broker().to_owned(),
                name: format!("bench-{}-{role}-{}", kind.broker(), std::process::id()),
                port: free_server_port(),
            };
            let nats_config = match side {
                Side::Source => format!(
                    "jetstream {{ domain: {NATS_SOURCE_DOMAIN}, max_file_store: {NATS_MAX_FILE_STORE} }}\n\
                     leafnodes {{ listen: 127.0.0.1:{} }}",
                    self.nats_leafnode_port
                ),
                Side::Target => format!(
                    "jetstream {{ domain: dst, max_file_store: {NATS_MAX_FILE_STORE} }}\n\
                     leafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{}\" }} ] }}",
                    self.nats_leafnode_port
                ),
            };
            let mut command = oms_e2e::broker_script();
            command.args(["up", &broker.kind, &broker.name, &broker.port.to_string()]);
            match kind {
                Kind::Nats => command.env("NATS_EXTRA_CONFIG", nats_config),
                Kind::Kafka => command.env("KAFKA_EXTRA_CONFIG", self.kafka_retention),
                Kind::Amqp => &mut command,
            };
            run_ok(&mut command)?;
            self.up.insert(key, broker);
        }
        self.up.get(&key).context("just started")
    }

    /// Stops every broker that none of `later` runs needs (dropping a Broker stops it).
    fn stop_unused(&mut self, later: &[Scenario]) {
        self.up.retain(|key, _| later.iter().any(|s| s.brokers().contains(key)));
    }

    /// The process groups of this bench (with its replicators) and of every running broker.
    fn process_groups(&self) -> Vec<i32> {
        let mut groups: Vec<i32> = machine_load::own_group().into_iter().collect();
        groups.extend(self.broker_groups());
        groups
    }

    /// The process groups of every running broker, as broker.sh recorded them.
    fn broker_groups(&self) -> Vec<i32> {
        let mut groups = Vec::new();
        for broker in self.up.values() {
            let pids = repo_root().join("e2e/.state/brokers").join(&broker.name).join("pids");
            let text = std::fs::read_to_string(pids).unwrap_or_default();
            groups.extend(text.lines().filter_map(|l| l.split(' ').nth(1)?.parse::<i32>().ok()));
        }
        groups
    }

    /// The RabbitMQ management port `broker.sh` picked for a broker.
    fn management_port(&self, kind: Kind, side: Side) -> Option<u16> {
        let broker = self.up.get(&(kind.broker(), side))?;
        let ports =
            std::fs::read_to_string(repo_root().join("e2e/.state/brokers").join(&broker.name).join("ports.env"))
                .ok()?;
        ports.lines().find_map(|l| l.strip_prefix("MANAGEMENT_PORT="))?.trim().parse().ok()
    }
}

/// Counters the producers, the consumer and the sampler share during a run.
#[derive(Default)]
struct Counters {
    /// Window messages the source confirmed.
    published: AtomicU64,
    publish_errors: AtomicU64,
    /// Window messages read from the target, repeats included.
    received: AtomicU64,
    /// Window messages read from the target, each once.
    distinct: AtomicU64,
    warm_up_received: AtomicU64,
    /// Next sequence number, over all producers.
    sequence: AtomicU64,
}

/// What the consumer collected: end-to-end latencies of window messages, in microseconds.
struct Received {
    end_to_end_us: Vec<u32>,
}

/// Reads the target until `stop`; counts window messages and records their latency.
async fn consume(
    mut consumer: Consumer,
    counters: Arc<Counters>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Received> {
    let mut end_to_end_us = Vec::new();
    // One bit per sequence number: repeats (at-least-once redeliveries) count once.
    let mut seen: Vec<u64> = Vec::new();
    loop {
        let stamp = tokio::select! {
            _ = stop.changed() => break,
            next = consumer.next() => next?,
        };
        let Some(Stamp { sent_ns, sequence, warm_up }) = stamp else { continue };
        if warm_up {
            counters.warm_up_received.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let latency_us = load::now_ns().saturating_sub(sent_ns) / 1000;
        end_to_end_us.push(u32::try_from(latency_us).unwrap_or(u32::MAX));
        counters.received.fetch_add(1, Ordering::Relaxed);
        let (word, bit) = ((sequence / 64) as usize, 1u64 << (sequence % 64));
        if seen.len() <= word {
            seen.resize(word + 1, 0);
        }
        if seen[word] & bit == 0 {
            seen[word] |= bit;
            counters.distinct.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(Received { end_to_end_us })
}

/// Publishes at `rate` messages per second until `until`, with at most `WINDOW` publishes
/// unconfirmed, each stamped with the time the schedule gave it; then waits for the outstanding
/// confirms. Returns the publish latencies (scheduled send to confirm) in microseconds.
async fn produce(
    producer: &Producer,
    rate: f64,
    until: Instant,
    workload: &Workload,
    warm_up: bool,
    counters: &Counters,
) -> Vec<u32> {
    let (started, started_ns) = (Instant::now(), now_ns());
    let mut sent = 0u64;
    let mut latencies_us = Vec::new();
    let mut pending = FuturesUnordered::new();
    let mut record = |(scheduled_ns, result): (u64, anyhow::Result<()>)| {
        if result.is_ok() {
            latencies_us.push(u32::try_from(now_ns().saturating_sub(scheduled_ns) / 1000).unwrap_or(u32::MAX));
            if !warm_up {
                counters.published.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            counters.publish_errors.fetch_add(1, Ordering::Relaxed);
        }
    };
    while Instant::now() < until {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due && pending.len() < WINDOW as usize && Instant::now() < until {
            let sequence = counters.sequence.fetch_add(1, Ordering::Relaxed);
            let scheduled_ns = started_ns + (sent as f64 * 1e9 / rate) as u64;
            let message = payload(workload.message_size, sequence, warm_up, scheduled_ns);
            match producer.send(message, workload.key_distributor.key(sequence)).await {
                Ok(confirm) => pending.push(async move { (scheduled_ns, confirm.await) }),
                Err(_) => {
                    counters.publish_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            sent += 1;
        }
        tokio::select! {
            Some(done) = pending.next(), if !pending.is_empty() => record(done),
            () = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
    }
    while let Some(done) = pending.next().await {
        record(done);
    }
    latencies_us
}

/// Runs every producer at its share of `rate` until `until`.
async fn produce_all(
    producers: &[Producer],
    rate: f64,
    workload: &Workload,
    until: Instant,
    warm_up: bool,
    counters: &Counters,
) -> Vec<u32> {
    let rate = rate / producers.len() as f64;
    let runs = producers.iter().map(|p| produce(p, rate, until, workload, warm_up, counters));
    futures::future::join_all(runs).await.concat()
}

/// None if there is nothing to add up or one of the figures is unknown.
fn sum<T: std::iter::Sum<T>>(values: impl Iterator<Item = Option<T>>) -> Option<T> {
    let mut values = values.peekable();
    values.peek()?;
    values.sum()
}

/// Sends a warm-up message every half second until one has gone all the way through: the
/// replicator and the consumer are then running. Returns the seconds that took.
async fn wait_until_ready(
    scenario: &Scenario,
    replicator: &mut replicator::Running,
    producer: &Producer,
    workload: &Workload,
    counters: &Counters,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    while counters.warm_up_received.load(Ordering::Relaxed) == 0 {
        replicator.check_alive()?;
        anyhow::ensure!(started.elapsed() < READY_DEADLINE, "{}: nothing arrived in {READY_DEADLINE:?}", scenario.id());
        let sequence = counters.sequence.fetch_add(1, Ordering::Relaxed);
        let message = payload(workload.message_size, sequence, true, now_ns());
        producer.send(message, workload.key_distributor.key(sequence)).await?.await?;
        wait_for(Duration::from_millis(500), || counters.warm_up_received.load(Ordering::Relaxed) > 0).await;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One figure per STATS_INTERVAL of the window: (publish rate, consume rate, backlog). Also
/// returns the messages consumed by the end of the window.
async fn sample_rates(started: Instant, duration: Duration, counters: &Counters) -> (Vec<(f64, f64, u64)>, u64) {
    let mut samples = Vec::new();
    let (mut published, mut received) = (0, 0);
    let mut boundary = Duration::ZERO;
    while boundary < duration {
        let previous = boundary;
        boundary = (boundary + STATS_INTERVAL).min(duration);
        tokio::time::sleep_until((started + boundary).into()).await;
        let seconds = boundary.saturating_sub(previous).as_secs_f64();
        let (now_published, now_received) =
            (counters.published.load(Ordering::Relaxed), counters.received.load(Ordering::Relaxed));
        let backlog = now_published.saturating_sub(counters.distinct.load(Ordering::Relaxed));
        samples.push((
            (now_published - published) as f64 / seconds,
            (now_received - received) as f64 / seconds,
            backlog,
        ));
        (published, received) = (now_published, now_received);
    }
    (samples, received)
}

/// A run under way: fresh queues, the replicator started, the consumer reading the target and
/// the producers connected, one message through (ready). Shared by the latency and the sustained
/// rate runs.
struct Rig {
    replicator: replicator::Running,
    counters: Arc<Counters>,
    producers: Vec<Producer>,
    stop: tokio::sync::watch::Sender<bool>,
    consumer: tokio::task::JoinHandle<anyhow::Result<Received>>,
    /// The queues to delete at the end (the source's only when a replicator reads it).
    queues: Vec<Endpoint>,
    /// The process groups of the bench and its brokers, for the machine's load.
    groups: Vec<i32>,
    other_share_before: f64,
    ready_seconds: f64,
}

impl Rig {
    /// `prefix` tells the mode's queues apart from another's (`lat`, `sus`).
    async fn start(
        scenario: &Scenario,
        prefix: &str,
        index: usize,
        repeat: usize,
        workload: &Workload,
        brokers: &mut Brokers,
    ) -> anyhow::Result<Self> {
        let replicator_kind = scenario.replicator;
        let queue = format!("{prefix}{index}r{repeat}-{}", std::process::id());
        let target = brokers.endpoint(scenario.target, Side::Target, &replicator_kind.target_queue(&queue))?;
        let source = match scenario.source {
            Some(kind) => brokers.endpoint(kind, Side::Source, &queue)?,
            None => target.clone(),
        };
        if scenario.source.is_some() {
            create_queue(&source, workload.partitions_per_topic).await?;
        }
        if !replicator_kind.creates_target_queue() {
            create_queue(&target, workload.partitions_per_topic).await?;
        }
        // Other work on the machine would skew every figure: wait for it to end, and record it.
        let groups = brokers.process_groups();
        let other_share_before = machine_load::wait_for_quiet(&groups).await;
        let name = format!("bench{index}");
        let management_port = brokers.management_port(scenario.target, Side::Target);
        let mut replicator =
            replicator::start(replicator_kind, &name, &source, &target, management_port, scenario.added_rtt_ms).await?;

        let counters = Arc::new(Counters::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let consumer = tokio::spawn(consume(Consumer::connect(&target).await?, counters.clone(), stopped));
        let mut producers = Vec::new();
        for _ in 0..workload.producers_per_topic {
            producers.push(Producer::connect(&source).await?);
        }
        let ready_seconds = wait_until_ready(scenario, &mut replicator, &producers[0], workload, &counters).await?;
        let queues = if scenario.source.is_some() { vec![target, source] } else { vec![target] };
        Ok(Self { replicator, counters, producers, stop, consumer, queues, groups, other_share_before, ready_seconds })
    }

    /// Window messages published but not yet read from the target.
    fn backlog(&self) -> u64 {
        let published = self.counters.published.load(Ordering::Relaxed);
        published.saturating_sub(self.counters.distinct.load(Ordering::Relaxed))
    }

    /// Waits up to `deadline` for the target to hold every window message published; the seconds
    /// that took.
    async fn drain(&self, deadline: Duration) -> f64 {
        let started = Instant::now();
        wait_for(deadline, || self.backlog() == 0).await;
        started.elapsed().as_secs_f64()
    }

    /// Stops the replicator and the consumer and deletes the queues; what the consumer collected.
    async fn finish(self) -> anyhow::Result<Received> {
        drop(self.replicator);
        let _ = self.stop.send(true);
        let received = self.consumer.await??;
        delete_queues(self.queues.iter().collect()).await;
        Ok(received)
    }
}

/// One run of `scenario` at `rate` messages per second: warm-up, window, drain.
async fn run(
    scenario: Scenario,
    index: usize,
    repeat: usize,
    rate: f64,
    workload: &Workload,
    brokers: &mut Brokers,
) -> anyhow::Result<Value> {
    let mut rig = Rig::start(&scenario, "lat", index, repeat, workload, brokers).await?;
    let counters = rig.counters.clone();
    produce_all(&rig.producers, rate, workload, Instant::now() + workload.warm_up(), true, &counters).await;

    // The measured window, sampled every STATS_INTERVAL.
    let duration = workload.duration();
    let cpu_before = rig.replicator.cpu_seconds();
    let load_at_start = machine_load::snapshot(&rig.groups);
    let brokers_at_start = machine_load::snapshot(&brokers.broker_groups());
    let started = Instant::now();
    let producing = produce_all(&rig.producers, rate, workload, started + duration, false, &counters);
    let sampling = sample_rates(started, duration, &counters);
    let (publish_latencies_us, (samples, received_in_window)) = tokio::join!(producing, sampling);
    let other_share = machine_load::outside_share(load_at_start, machine_load::snapshot(&rig.groups));

    // Drain: give the target time to catch up, then count what is still missing.
    let published = counters.published.load(Ordering::Relaxed);
    let drain_seconds = rig.drain(DRAIN_DEADLINE).await;
    rig.replicator.check_alive()?;
    let brokers_cpu = machine_load::own_ticks(brokers_at_start, machine_load::snapshot(&brokers.broker_groups()))
        / replicator::clock_ticks_per_second();
    // Per process (worker, gateway, ...) and summed: the replicator's whole cost.
    let cpu_seconds: BTreeMap<&str, Option<f64>> = rig
        .replicator
        .cpu_seconds()
        .into_iter()
        .zip(cpu_before)
        .map(|((role, after), (_, before))| (role, after.zip(before).map(|(a, b)| a - b)))
        .collect();
    let peak_rss_kib: BTreeMap<&str, Option<u64>> = rig.replicator.peak_rss_kib().into_iter().collect();
    let (ready_seconds, other_share_before) = (rig.ready_seconds, rig.other_share_before);
    let received = rig.finish().await?;

    let received_total = counters.received.load(Ordering::Relaxed);
    let distinct = counters.distinct.load(Ordering::Relaxed);
    let window_seconds = duration.as_secs_f64();
    let mut result = capacity::merged(
        capacity::described(scenario, repeat, workload),
        json!({
            "topics": workload.topics,
            "producersPerTopic": workload.producers_per_topic,
            "consumersPerTopic": 1,
            "fixedRate": rate,
            "testDurationSeconds": window_seconds,
            "warmUpSeconds": workload.warm_up().as_secs_f64(),
            "readySeconds": ready_seconds,
            "otherCpuShareBefore": other_share_before,
            "otherCpuShareDuringWindow": other_share,
            "publishRate": samples.iter().map(|s| s.0).collect::<Vec<_>>(),
            "consumeRate": samples.iter().map(|s| s.1).collect::<Vec<_>>(),
            "backlog": samples.iter().map(|s| s.2).collect::<Vec<_>>(),
            "publishRateAvg": published as f64 / window_seconds,
            "consumeRateAvg": received_in_window as f64 / window_seconds,
            "publishErrors": counters.publish_errors.load(Ordering::Relaxed),
            "messagesPublished": published,
            "messagesReceived": received_total,
            "duplicates": received_total - distinct,
            "missingAfterDrain": published.saturating_sub(distinct),
            "drainSeconds": drain_seconds,
            "replicatorPeakRssKiB": sum(peak_rss_kib.values().copied()),
            "replicatorCpuSeconds": sum(cpu_seconds.values().copied()),
            "brokersCpuSeconds": brokers_cpu,
            "peakRssKiBByProcess": peak_rss_kib,
            "cpuSecondsByProcess": cpu_seconds,
        }),
    );
    report::add_latencies(&mut result, "aggregatedPublishLatency", publish_latencies_us);
    report::add_latencies(&mut result, "aggregatedEndToEndLatency", received.end_to_end_us);
    Ok(result)
}

/// Deletes a run's queues, best effort: a queue left behind costs disk, not the figures so far.
async fn delete_queues(endpoints: Vec<&Endpoint>) {
    for endpoint in endpoints {
        if let Err(error) = delete_queue(endpoint).await {
            eprintln!("bridge_throughput: {} stays on {}: {error:#}", endpoint.queue, endpoint.address);
        }
    }
}

/// A positive number from the environment variable `name`, or `default`.
fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(value) => {
            value.parse().ok().filter(|n| *n > 0).with_context(|| format!("{name}={value}: a positive number"))
        }
        Err(_) => Ok(default),
    }
}

/// The commit the bench runs from, and whether the tree differs from it (then its results stay
/// out of docs/bench). docs/bench is left out of the comparison: it is what the bench writes, so
/// `make bench` goes on from the scale run's and capacity's documents to the next measurement.
fn commit_and_dirty() -> anyhow::Result<(String, bool)> {
    let git = |args: &[&str]| run_ok(std::process::Command::new("git").arg("-C").arg(repo_root()).args(args));
    let changes = git(&["status", "--porcelain", "--", ".", ":(exclude)docs/bench"])?;
    Ok((git(&["rev-parse", "HEAD"])?.trim().to_owned(), !changes.trim().is_empty()))
}

/// Capacity runs of every scenario, `OMS_BENCH_REPEATS` times interleaved.
fn main_capacity(scenarios: &[Scenario], workloads: &BTreeMap<&str, Workload>) -> anyhow::Result<()> {
    let backlog = env_number("OMS_BENCH_BACKLOG", 1_000_000)?;
    let repeats = usize::try_from(env_number("OMS_BENCH_REPEATS", 3)?)?;
    let (commit, dirty) = commit_and_dirty()?;
    let out_dir = out_dir(dirty)?;
    let sittings = Sittings::open(&commit, "capacity", &out_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut brokers = Brokers::new(KAFKA_RETENTION_CAPACITY);
    let Some(runs) = sittings.run_all(scenarios, repeats, |scenario, index, repeat| {
        let workload = &workloads[scenario.workload];
        eprintln!("bridge_throughput: capacity {} (repeat {repeat}, backlog {backlog})", scenario.id());
        let result = runtime.block_on(capacity::run(*scenario, index, repeat, backlog, workload, &mut brokers))?;
        eprintln!(
            "bridge_throughput: capacity {}: {:.0} msg/s, {:.1} µs CPU per message in the replicator",
            scenario.id(),
            result["capacity"].as_f64().unwrap_or_default(),
            result["replicatorCpuMicrosPerMessage"].as_f64().unwrap_or_default()
        );
        Ok(result)
    })?
    else {
        return Ok(());
    };
    drop(brokers);
    let own = json!({"backlog": backlog, "backlogBytesAtMost": capacity::BACKLOG_BYTES});
    let produced_by = "make bench-capacity (e2e/benches/bridge_throughput/capacity.rs)";
    let document = document(produced_by, &commit, dirty, repeats, own, capacity::summary(&runs), runs)?;
    write_documents(&out_dir, "capacity", &document, &capacity::markdown(&document))?;
    plot(&out_dir);
    say_where(&commit, dirty, &out_dir);
    Ok(())
}

/// A mode's document: where it came from (commit, machine, software, sittings), what is its own
/// (`own`), the summary and every run.
fn document(
    produced_by: &str,
    commit: &str,
    dirty: bool,
    repeats: usize,
    own: Value,
    summary: Value,
    runs: Vec<Value>,
) -> anyhow::Result<Value> {
    let common = json!({
        "producedBy": produced_by,
        "commit": commit,
        "dirtyTree": dirty,
        "repeats": repeats,
        "machine": report::machine()?,
        "software": report::software(),
        "wallSeconds": Sittings::seconds(&runs),
        "sittings": Sittings::count(&runs),
    });
    let mut document = capacity::merged(common, own);
    document["summary"] = summary;
    document["runs"] = Value::Array(runs);
    Ok(document)
}

/// Writes `<mode>.json` and `<mode>.md` in `out_dir`, and shows the tables.
fn write_documents(out_dir: &std::path::Path, mode: &str, document: &Value, markdown: &str) -> anyhow::Result<()> {
    std::fs::write(out_dir.join(format!("{mode}.json")), serde_json::to_string_pretty(document)? + "\n")?;
    std::fs::write(out_dir.join(format!("{mode}.md")), markdown)?;
    println!("{markdown}");
    Ok(())
}

/// Where a full run keeps each result as it comes: a full latency run (3 repeats of 11 runs of 6
/// minutes) takes longer than anyone wants the machine kept quiet at once, so `make bench-*` from
/// the same commit goes on from the first run missing, and writes the documents once all are
/// there. Only full runs from a clean tree are kept ($OMS_CACHE/bench/<commit>/<mode>/), so every
/// kept result is one a full run from that commit would have made. `OMS_BENCH_STOP_AFTER_MINUTES`
/// starts no run after that long (the runs so far stay kept).
struct Sittings {
    dir: Option<std::path::PathBuf>,
    started: Instant,
    /// Unix seconds at this sitting's start, recorded in each of its runs.
    sitting: u64,
    stop_after: Option<Duration>,
}

impl Sittings {
    fn open(commit: &str, mode: &str, out_dir: &std::path::Path) -> anyhow::Result<Self> {
        let dir = if out_dir.ends_with("docs/bench") {
            let cache = std::env::var_os("OMS_CACHE").map_or_else(
                || std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/oms"),
                std::path::PathBuf::from,
            );
            let dir = cache.join("bench").join(commit).join(mode);
            std::fs::create_dir_all(&dir)?;
            Some(dir)
        } else {
            None
        };
        let stop_after = match std::env::var("OMS_BENCH_STOP_AFTER_MINUTES") {
            Ok(_) => Some(Duration::from_mins(env_number("OMS_BENCH_STOP_AFTER_MINUTES", 1)?)),
            Err(_) => None,
        };
        let sitting = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        Ok(Self { dir, started: Instant::now(), sitting, stop_after })
    }

    fn file(&self, repeat: usize, id: &str) -> Option<std::path::PathBuf> {
        Some(self.dir.as_ref()?.join(format!("r{repeat}-{id}.json")))
    }

    /// Every scenario `repeats` times, interleaved, through `run` unless kept from an earlier
    /// sitting; `None` if this sitting stopped before the last.
    fn run_all(
        &self,
        scenarios: &[Scenario],
        repeats: usize,
        mut run: impl FnMut(&Scenario, usize, usize) -> anyhow::Result<Value>,
    ) -> anyhow::Result<Option<Vec<Value>>> {
        let mut runs = Vec::new();
        let total = repeats * scenarios.len();
        for repeat in 0..repeats {
            for (index, scenario) in scenarios.iter().enumerate() {
                let id = scenario.id();
                let file = self.file(repeat, &id);
                if let Some(kept) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
                    runs.push(serde_json::from_str(&kept).with_context(|| format!("{id}: a kept run"))?);
                    continue;
                }
                if self.stop_after.is_some_and(|limit| self.started.elapsed() > limit) {
                    eprintln!(
                        "bridge_throughput: stopped after OMS_BENCH_STOP_AFTER_MINUTES with {} of {total} runs kept in {}; \
                         run again from this commit to go on",
                        runs.len(),
                        self.dir
                            .as_ref()
                            .map_or_else(|| "(nowhere: not a full run)".to_owned(), |d| d.display().to_string())
                    );
                    return Ok(None);
                }
                let started = Instant::now();
                let mut result = run(scenario, index, repeat).with_context(|| id.clone())?;
                result["runSeconds"] = json!(started.elapsed().as_secs());
                result["sitting"] = json!(self.sitting);
                if let Some(file) = file {
                    std::fs::write(file, serde_json::to_string_pretty(&result)? + "\n")?;
                }
                runs.push(result);
            }
        }
        Ok(Some(runs))
    }

    /// The seconds all runs took, in whichever sitting.
    fn seconds(runs: &[Value]) -> u64 {
        runs.iter().filter_map(|r| r["runSeconds"].as_u64()).sum()
    }

    /// How many sittings the runs came from.
    fn count(runs: &[Value]) -> usize {
        runs.iter().filter_map(|r| r["sitting"].as_u64()).collect::<std::collections::BTreeSet<_>>().len()
    }
}

/// Settings that make a run a look while developing (fewer runs, shorter windows, fewer repeats):
/// its results must not replace the full ones in docs/bench.
const DEVELOPING: [&str; 5] =
    ["OMS_BENCH_ONLY", "OMS_BENCH_SECONDS", "OMS_BENCH_BACKLOG", "OMS_BENCH_REPEATS", "OMS_BENCH_WINDOW"];

/// Where this run writes, and reads the capacity figures from: docs/bench for a full run from a
/// clean tree, so that figures in docs come from a commit anyone can check out and every run;
/// else e2e/.state/bench.
fn out_dir(dirty: bool) -> anyhow::Result<std::path::PathBuf> {
    let developing = DEVELOPING.iter().any(|name| std::env::var_os(name).is_some());
    let dir = if dirty || developing { oms_e2e::state_dir("bench")? } else { repo_root().join("docs/bench") };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Says why results went elsewhere than docs/bench.
fn say_where(commit: &str, dirty: bool, dir: &std::path::Path) {
    if dirty {
        eprintln!("bridge_throughput: the tree differs from {commit}: results in {}, not docs/bench", dir.display());
    } else if !dir.ends_with("docs/bench") {
        eprintln!("bridge_throughput: a developing run ({}): results in {}", DEVELOPING.join(", "), dir.display());
    }
}

/// Draws bridges.png in `dir` from its capacity.json and latency.json (e2e/bench/plot.py, with
/// matplotlib from `tools.sh plot`); a missing plot is reported, the figures stand without it.
fn plot(dir: &std::path::Path) {
    let python = repo_root().join(".bin/plot-venv/bin/python");
    let script = repo_root().join("e2e/bench/plot.py");
    if let Err(error) = run_ok(std::process::Command::new(python).arg(script).arg(dir)) {
        eprintln!("bridge_throughput: no plot: {error:#}");
    }
}

/// The capacity figures the other modes take their rates from: `out_dir`'s first (a capacity
/// run just before this one), then the committed ones, for a developing capacity run may have
/// measured only some scenarios.
fn capacity_documents(out_dir: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let mut documents = Vec::new();
    for file in [out_dir.join("capacity.json"), repo_root().join("docs/bench/capacity.json")] {
        if let Ok(text) = std::fs::read_to_string(&file) {
            documents.push(serde_json::from_str::<Value>(&text).with_context(|| file.display().to_string())?);
        }
    }
    Ok(documents)
}

/// Searches of every scenario for its highest sustained rate, `OMS_BENCH_REPEATS` times
/// interleaved.
fn main_sustained(scenarios: &[Scenario], workloads: &BTreeMap<&str, Workload>) -> anyhow::Result<()> {
    let repeats = usize::try_from(env_number("OMS_BENCH_REPEATS", 3)?)?;
    let (commit, dirty) = commit_and_dirty()?;
    let out_dir = out_dir(dirty)?;
    let documents = capacity_documents(&out_dir)?;
    let mut capacities = BTreeMap::new();
    for scenario in scenarios {
        let id = scenario.id();
        let capacity = capacity::median(&documents, &id).with_context(|| {
            format!("{id}: the search starts from its capacity, which no capacity.json (this run's directory, docs/bench) has; run `make bench-capacity` first")
        })?;
        capacities.insert(id, capacity);
    }
    let sittings = Sittings::open(&commit, "sustained", &out_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut brokers = Brokers::new(KAFKA_RETENTION_LATENCY);
    let Some(runs) = sittings.run_all(scenarios, repeats, |scenario, index, repeat| {
        let workload = &workloads[scenario.workload];
        let capacity = capacities[&scenario.id()];
        eprintln!("bridge_throughput: sustained {} (repeat {repeat}, capacity {capacity:.0} msg/s)", scenario.id());
        let result = runtime.block_on(sustained::run(*scenario, index, repeat, capacity, workload, &mut brokers))?;
        if repeat + 1 == repeats {
            brokers.stop_unused(&scenarios[index + 1..]);
        }
        Ok(result)
    })?
    else {
        return Ok(());
    };
    drop(brokers);
    let own = json!({"capacityFrom": documents.iter().map(|c| c["commit"].clone()).collect::<Vec<_>>()});
    let produced_by = "make bench-sustained (e2e/benches/bridge_throughput/sustained.rs)";
    let document = document(produced_by, &commit, dirty, repeats, own, sustained::summary(&runs), runs)?;
    write_documents(&out_dir, "sustained", &document, &sustained::markdown(&document))?;
    say_where(&commit, dirty, &out_dir);
    Ok(())
}

/// Latency runs of every scenario at each workload's fixed rate, `OMS_BENCH_REPEATS` times
/// interleaved.
fn main_latency(scenarios: &[Scenario], workloads: &BTreeMap<&str, Workload>) -> anyhow::Result<()> {
    let repeats = usize::try_from(env_number("OMS_BENCH_REPEATS", 3)?)?;
    let (commit, dirty) = commit_and_dirty()?;
    let out_dir = out_dir(dirty)?;
    let capacities = capacity_documents(&out_dir)?;
    let rates = latency::fixed_rates(scenarios, workloads, &capacities)?;
    let sittings = Sittings::open(&commit, "latency", &out_dir)?;
    // The same two cores the replicators and brokers use: no more threads than that.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut brokers = Brokers::new(KAFKA_RETENTION_LATENCY);
    let Some(runs) = sittings.run_all(scenarios, repeats, |scenario, index, repeat| {
        let workload = &workloads[scenario.workload];
        let rate = rates[scenario.workload].rate;
        eprintln!(
            "bridge_throughput: {} (repeat {repeat}, {rate:.0} msg/s, {} s warm-up, {} s window)",
            scenario.id(),
            workload.warm_up().as_secs(),
            workload.duration().as_secs()
        );
        let result = runtime.block_on(run(*scenario, index, repeat, rate, workload, &mut brokers))?;
        eprintln!(
            "bridge_throughput: {}: consumed {:.0}/s, end-to-end p50 {} ms, p99 {} ms, missing {}",
            scenario.id(),
            result["consumeRateAvg"].as_f64().unwrap_or_default(),
            result["aggregatedEndToEndLatency50pct"],
            result["aggregatedEndToEndLatency99pct"],
            result["missingAfterDrain"]
        );
        if repeat + 1 == repeats {
            brokers.stop_unused(&scenarios[index + 1..]);
        }
        Ok(result)
    })?
    else {
        return Ok(());
    };
    drop(brokers);
    let own = json!({
        "fixedRates": rates,
        "capacityFrom": capacities.iter().map(|c| c["commit"].clone()).collect::<Vec<_>>(),
    });
    let produced_by = "make bench-latency (e2e/benches/bridge_throughput, workloads in e2e/bench/workloads)";
    let document = document(produced_by, &commit, dirty, repeats, own, latency::summary(&runs), runs)?;
    write_documents(&out_dir, "latency", &document, &latency::markdown(&document))?;
    plot(&out_dir);
    say_where(&commit, dirty, &out_dir);
    Ok(())
}

/// Whether an `OMS_BENCH_ONLY` entry picks run `id`: a part of it, or all of it with a `$` after.
fn picks(entry: &str, id: &str) -> bool {
    entry.strip_suffix('$').map_or_else(|| id.contains(entry), |whole| id == whole)
}

fn main() -> anyhow::Result<()> {
    // Read where they are used; checked here so that a mistyped value is refused, not ignored.
    env_number("OMS_BENCH_SECONDS", 1)?;
    u32::try_from(env_number("OMS_BENCH_WINDOW", 1)?).context("OMS_BENCH_WINDOW: at most 4294967295")?;
    let only: Vec<String> = std::env::var("OMS_BENCH_ONLY")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let mode = std::env::var("OMS_BENCH_MODE").unwrap_or_else(|_| "latency".to_owned());
    let all: &[Scenario] = match mode.as_str() {
        "capacity" => &CAPACITY,
        "latency" | "sustained" => &LATENCY,
        other => anyhow::bail!("OMS_BENCH_MODE={other}: one of capacity, sustained, latency"),
    };
    let scenarios: Vec<Scenario> =
        all.iter().copied().filter(|s| only.is_empty() || only.iter().any(|o| picks(o, &s.id()))).collect();
    let workloads_dir = repo_root().join("e2e/bench/workloads");
    let mut workloads = BTreeMap::new();
    for scenario in &scenarios {
        workloads.insert(scenario.workload, Workload::load(&workloads_dir.join(scenario.workload))?);
    }
    match mode.as_str() {
        "capacity" => main_capacity(&scenarios, &workloads),
        "sustained" => main_sustained(&scenarios, &workloads),
        _ => main_latency(&scenarios, &workloads),
    }
}
