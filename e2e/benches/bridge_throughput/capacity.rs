//! Capacity, the first part of benchmark v2: how fast each replicator drains a backlog when it
//! has the machine to itself. The source is preloaded with a backlog while nothing replicates;
//! then the replicator starts and the target's count is polled. Capacity is the rate between 10 %
//! and 90 % of the backlog arriving (a JVM's start-up and the last stragglers left out); cost is
//! the CPU time of the replicator's own processes, and of everything in the run (brokers
//! included, which is how in-broker peers are compared), per message. No producer runs while the
//! replicator drains, so the figure is the replicator's, not how two cores were split with a
//! flat-out producer. Runs repeat interleaved (ours, peer, ours, peer, ...) so that drift of the
//! machine lands on both; the summary gives the median and range of each figure and of the ratio
//! ours / peer within each repeat.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use serde_json::{Value, json};

use crate::load::{Endpoint, Kind, Producer, amqp_channel, create_queue, nats_context, now_ns, payload};
use crate::machine_load;
use crate::replicator::{self, WINDOW};
use crate::workload::Workload;
use crate::{Brokers, Scenario, Side};

/// How often the target's count is read.
const POLL: Duration = Duration::from_millis(100);
/// The slowest drain allowed: below this rate the run is reported as not finished.
const SLOWEST_RATE: f64 = 500.0;
/// A backlog holds at most this many bytes of payload (32,768 messages of 64 KiB): source and
/// target copies of it must fit on the disk beside everything else.
pub const BACKLOG_BYTES: u64 = 2 << 30;

/// Messages the target queue holds: Kafka's high watermarks summed (the topic is new and keeps
/// everything), the stream's count, the queue's ready messages.
pub enum Counter {
    Kafka(std::sync::Arc<BaseConsumer>, String),
    Nats(async_nats::jetstream::Context, String),
    Amqp(lapin::Channel, String),
}

impl Counter {
    pub async fn connect(endpoint: &Endpoint) -> anyhow::Result<Self> {
        Ok(match endpoint.kind {
            Kind::Kafka => {
                let consumer: BaseConsumer =
                    ClientConfig::new().set("bootstrap.servers", &endpoint.address).create()?;
                Counter::Kafka(std::sync::Arc::new(consumer), endpoint.queue.clone())
            }
            Kind::Nats => Counter::Nats(nats_context(&endpoint.address).await?, endpoint.queue.clone()),
            Kind::Amqp => Counter::Amqp(amqp_channel(&endpoint.address).await?, endpoint.queue.clone()),
        })
    }

    /// The count now; 0 while the queue does not exist yet (a peer that creates it).
    pub async fn count(&self) -> u64 {
        match self {
            Counter::Kafka(consumer, topic) => {
                let (consumer, topic) = (consumer.clone(), topic.clone());
                tokio::task::spawn_blocking(move || kafka_count(&consumer, &topic).unwrap_or(0)).await.unwrap_or(0)
            }
            Counter::Nats(context, stream) => match context.get_stream(stream).await {
                Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
                Err(_) => 0,
            },
            Counter::Amqp(channel, queue) => {
                let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
                channel
                    .queue_declare(queue.as_str().into(), options, lapin::types::FieldTable::default())
                    .await
                    .map_or(0, |q| u64::from(q.message_count()))
            }
        }
    }
}

fn kafka_count(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<u64> {
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len());
    let mut total = 0;
    for partition in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, i32::try_from(partition)?, timeout)?;
        total += u64::try_from(high).unwrap_or(0);
    }
    Ok(total)
}

/// Publishes `backlog` messages of the workload's size and keys as fast as a window of [`WINDOW`]
/// unconfirmed publishes allows; returns the rate the source took them at.
async fn preload(source: &Endpoint, backlog: u64, workload: &Workload) -> anyhow::Result<f64> {
    let producer = Producer::connect(source).await?;
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for sequence in 0..backlog {
        while pending.len() >= WINDOW as usize {
            pending.next().await.context("a pending confirm")??;
        }
        let message = payload(workload.message_size, sequence, false, now_ns());
        pending.push(producer.send(message, workload.key_distributor.key(sequence)).await?);
    }
    while let Some(confirmed) = pending.next().await {
        confirmed?;
    }
    Ok(backlog as f64 / started.elapsed().as_secs_f64())
}

/// When the target's count first reached each share of the backlog, from the replicator's start;
/// and the CPU used by then, so that the steady part (10 % to 90 %) has a cost of its own.
#[derive(Debug, Default)]
struct Arrivals {
    first: Option<f64>,
    tenth: Option<f64>,
    nine_tenths: Option<f64>,
    all: Option<f64>,
    last_count: u64,
    /// The replicator's own CPU seconds, and the bench's process groups, at 10 % and at 90 %.
    at_tenth: Option<(Option<f64>, machine_load::CpuSnapshot)>,
    at_nine_tenths: Option<(Option<f64>, machine_load::CpuSnapshot)>,
}

/// Polls `counter` until the whole backlog arrived or the drain is slower than [`SLOWEST_RATE`].
async fn watch_drain(
    counter: &Counter,
    backlog: u64,
    replicator: &mut replicator::Running,
    groups: &[i32],
) -> anyhow::Result<Arrivals> {
    let started = Instant::now();
    let deadline = Duration::from_secs_f64(backlog as f64 / SLOWEST_RATE) + Duration::from_mins(3);
    let mut arrivals = Arrivals::default();
    while arrivals.all.is_none() && started.elapsed() < deadline {
        replicator.check_alive()?;
        let count = counter.count().await;
        let at = started.elapsed().as_secs_f64();
        let reached = |share: f64| count as f64 >= backlog as f64 * share;
        for (slot, share) in [
            (&mut arrivals.first, f64::MIN_POSITIVE),
            (&mut arrivals.tenth, 0.1),
            (&mut arrivals.nine_tenths, 0.9),
            (&mut arrivals.all, 1.0),
        ] {
            if slot.is_none() && reached(share) {
                *slot = Some(at);
            }
        }
        let cpu_now =
            || (crate::sum(replicator.cpu_seconds().into_iter().map(|(_, s)| s)), machine_load::snapshot(groups));
        if arrivals.tenth.is_some() && arrivals.at_tenth.is_none() {
            arrivals.at_tenth = Some(cpu_now());
        }
        if arrivals.nine_tenths.is_some() && arrivals.at_nine_tenths.is_none() {
            arrivals.at_nine_tenths = Some(cpu_now());
        }
        arrivals.last_count = count;
        tokio::time::sleep(POLL).await;
    }
    Ok(arrivals)
}

/// One capacity run of `scenario` (repeat `repeat`): fresh queues, the backlog preloaded, the
/// replicator started and timed until the target holds it all. A raw run's capacity is the rate
/// the target alone takes the backlog from the producer at.
pub async fn run(
    scenario: Scenario,
    index: usize,
    repeat: usize,
    backlog: u64,
    workload: &Workload,
    brokers: &mut Brokers,
) -> anyhow::Result<Value> {
    let backlog = backlog.min(BACKLOG_BYTES / workload.message_size as u64);
    let Some(source_kind) = scenario.source else {
        return raw_run(scenario, index, repeat, backlog, workload, brokers).await;
    };
    let kind = scenario.replicator;
    let queue = format!("cap{index}r{repeat}-{}", std::process::id());
    let source = brokers.endpoint(source_kind, Side::Source, &queue)?;
    let target = brokers.endpoint(scenario.target, Side::Target, &kind.target_queue(&queue))?;
    create_queue(&source, workload.partitions_per_topic).await?;
    if !kind.creates_target_queue() {
        create_queue(&target, workload.partitions_per_topic).await?;
    }
    let preload_rate = preload(&source, backlog, workload).await?;

    let groups = brokers.process_groups();
    let other_share_before = machine_load::wait_for_quiet(&groups).await;
    let counter = Counter::connect(&target).await?;
    let load_at_start = machine_load::snapshot(&groups);
    let management_port = brokers.management_port(scenario.target, Side::Target);
    let name = format!("cap{index}");
    let mut running = replicator::start(kind, &name, &source, &target, management_port, scenario.added_rtt_ms).await?;
    let arrivals = watch_drain(&counter, backlog, &mut running, &groups).await?;
    let load_at_end = machine_load::snapshot(&groups);
    let cpu_seconds: Vec<(&str, Option<f64>)> = running.cpu_seconds();
    let replicator_cpu: Option<f64> = crate::sum(cpu_seconds.iter().map(|(_, s)| *s));
    let peak_rss_kib = crate::sum(running.peak_rss_kib().into_iter().map(|(_, k)| k));
    drop(running);
    crate::delete_queues(vec![&target, &source]).await;

    let everything_cpu = machine_load::own_ticks(load_at_start, load_at_end) / replicator::clock_ticks_per_second();
    let capacity = arrivals
        .tenth
        .zip(arrivals.nine_tenths)
        .filter(|(tenth, nine)| nine > tenth)
        .map(|(tenth, nine)| backlog as f64 * 0.8 / (nine - tenth));
    let per_message_us = |seconds: f64| seconds * 1e6 / backlog as f64;
    // The steady part: 80 % of the backlog, between 10 % and 90 % arrived.
    let steady_us = |seconds: f64| seconds * 1e6 / (backlog as f64 * 0.8);
    let steady = arrivals.at_tenth.zip(arrivals.at_nine_tenths);
    let steady_replicator = steady.and_then(|((a, _), (b, _))| Some(b? - a?)).map(steady_us);
    let steady_run =
        steady.map(|((_, a), (_, b))| steady_us(machine_load::own_ticks(a, b) / replicator::clock_ticks_per_second()));
    let run = json!({
        "backlog": backlog,
        "preloadRate": preload_rate,
        "firstArrivalSeconds": arrivals.first,
        "tenthSeconds": arrivals.tenth,
        "nineTenthsSeconds": arrivals.nine_tenths,
        "drainSeconds": arrivals.all,
        "arrived": arrivals.last_count,
        "capacity": capacity,
        "replicatorCpuSeconds": replicator_cpu,
        "replicatorCpuMicrosPerMessage": replicator_cpu.map(per_message_us),
        "runCpuSeconds": everything_cpu,
        "runCpuMicrosPerMessage": per_message_us(everything_cpu),
        "replicatorCpuMicrosPerMessageSteady": steady_replicator,
        "runCpuMicrosPerMessageSteady": steady_run,
        "replicatorPeakRssKiB": peak_rss_kib,
        "otherCpuShareBefore": other_share_before,
        "otherCpuShareDuringDrain": machine_load::outside_share(load_at_start, load_at_end),
    });
    Ok(merged(described(scenario, repeat, workload), run))
}

/// `base` with the fields of `more` added.
pub fn merged(mut base: Value, more: Value) -> Value {
    if let (Some(base), Value::Object(more)) = (base.as_object_mut(), more) {
        base.extend(more);
    }
    base
}

/// What every run of every mode records about itself: which run, and what it moved.
pub fn described(scenario: Scenario, repeat: usize, workload: &Workload) -> Value {
    json!({
        "id": scenario.id(),
        "driver": scenario.pair(),
        "replicator": scenario.replicator.label(),
        "replicatorRunsIn": scenario.replicator.runs_in(),
        "repeat": repeat,
        "workload": workload.name,
        "workloadFile": format!("e2e/bench/workloads/{}", scenario.workload),
        "messageSize": workload.message_size,
        "partitions": workload.partitions_per_topic,
        "keyDistributor": workload.key_distributor,
        "addedRttMs": scenario.added_rtt_ms,
        "window": replicator::window_for(scenario.added_rtt_ms),
    })
}

/// The target alone: the producer preloads the backlog into it; that rate is the capacity.
async fn raw_run(
    scenario: Scenario,
    index: usize,
    repeat: usize,
    backlog: u64,
    workload: &Workload,
    brokers: &mut Brokers,
) -> anyhow::Result<Value> {
    let target =
        brokers.endpoint(scenario.target, Side::Target, &format!("cap{index}r{repeat}-{}", std::process::id()))?;
    create_queue(&target, workload.partitions_per_topic).await?;
    let groups = brokers.process_groups();
    let other_share_before = machine_load::wait_for_quiet(&groups).await;
    let load_at_start = machine_load::snapshot(&groups);
    let rate = preload(&target, backlog, workload).await?;
    let load_at_end = machine_load::snapshot(&groups);
    crate::delete_queues(vec![&target]).await;
    let run_cpu = machine_load::own_ticks(load_at_start, load_at_end) / replicator::clock_ticks_per_second();
    let run = json!({
        "backlog": backlog,
        "capacity": rate,
        "preloadRate": rate,
        "runCpuSeconds": run_cpu,
        "runCpuMicrosPerMessage": run_cpu * 1e6 / backlog as f64,
        "otherCpuShareBefore": other_share_before,
        "otherCpuShareDuringDrain": machine_load::outside_share(load_at_start, load_at_end),
    });
    Ok(merged(described(scenario, repeat, workload), run))
}

/// Median, lowest and highest of `values`; None without any.
pub fn spread(mut values: Vec<f64>) -> Option<Value> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let median = if values.len() % 2 == 1 {
        values[values.len() / 2]
    } else {
        f64::midpoint(values[values.len() / 2 - 1], values[values.len() / 2])
    };
    Some(json!({"median": median, "min": values[0], "max": values[values.len() - 1], "n": values.len()}))
}

/// A spread as a table cell, `median (lowest-highest)` with `digits` decimals; `-` without one.
pub fn shown(spread: &Value, digits: usize) -> String {
    match (spread["median"].as_f64(), spread["min"].as_f64(), spread["max"].as_f64()) {
        (Some(median), Some(min), Some(max)) => format!("{median:.digits$} ({min:.digits$}-{max:.digits$})"),
        _ => "-".to_owned(),
    }
}

/// The spread over the repeats of `figure(a) / figure(b)` (or `-`, unless `ratio`), where a is a
/// run of `a_id` and b the run of `b_id` in the same repeat.
pub fn paired(
    runs: &[Value],
    a_id: &Value,
    b_id: &Value,
    figure: &dyn Fn(&Value) -> Option<f64>,
    ratio: bool,
) -> Option<Value> {
    let values: Vec<f64> = runs
        .iter()
        .filter(|a| a["id"] == *a_id)
        .filter_map(|a| {
            let b = runs.iter().find(|b| b["id"] == *b_id && b["repeat"] == a["repeat"])?;
            let (a, b) = (figure(a)?, figure(b)?);
            if ratio { (b > 0.0).then(|| a / b) } else { Some(a - b) }
        })
        .collect();
    spread(values)
}

/// The median capacity of run `id` in the first of `documents` (capacity.json files) that has it.
pub fn median(documents: &[Value], id: &str) -> Option<f64> {
    documents.iter().find_map(|document| {
        document["summary"]["runs"].as_array()?.iter().find(|r| r["id"] == id)?["capacity"]["median"].as_f64()
    })
}

/// Run ids in the order of their first run.
pub fn ids_in_order(runs: &[Value]) -> Vec<&str> {
    let mut ids: Vec<&str> = Vec::new();
    for id in runs.iter().filter_map(|r| r["id"].as_str()) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// The ends of a route: `kafka -> gateway (20 ms RTT) -> nats` -> (`kafka`, `nats`).
pub fn ends(driver: &Value) -> Option<(&str, &str)> {
    let driver = driver.as_str()?;
    Some((driver.split(' ').next()?, driver.rsplit(' ').next()?))
}

/// Per run id: the spread of capacity and cost over the repeats, and of capacity / the raw
/// target's (same broker, same message size, same repeat). Within each repeat: ours / each peer
/// on the same pair and workload, the gateway route / the direct one, keyed / keyless.
pub fn summary(runs: &[Value]) -> Value {
    let ids = ids_in_order(runs);
    let figure = |id: &str, key: &str| -> Vec<f64> {
        runs.iter().filter(|r| r["id"] == id).filter_map(|r| r[key].as_f64()).collect()
    };
    let firsts: Vec<&Value> = runs.iter().filter(|r| r["repeat"] == 0).collect();
    let capacity = |r: &Value| r["capacity"].as_f64();
    let key = |k: &'static str| move |r: &Value| r[k].as_f64();
    let per_run: Vec<Value> = ids
        .iter()
        .map(|id| {
            let first = runs.iter().find(|r| r["id"] == *id).cloned().unwrap_or_default();
            let raw = ends(&first["driver"]).and_then(|(_, target)| {
                firsts
                    .iter()
                    .find(|r| r["driver"] == format!("{target} alone") && r["messageSize"] == first["messageSize"])
            });
            json!({
                "id": id,
                "driver": first["driver"],
                "replicator": first["replicator"],
                "workloadFile": first["workloadFile"],
                "capacity": spread(figure(id, "capacity")),
                "capacityPerRawTarget": raw.and_then(|raw| paired(runs, &first["id"], &raw["id"], &capacity, true)),
                "replicatorCpuMicrosPerMessage": spread(figure(id, "replicatorCpuMicrosPerMessage")),
                "runCpuMicrosPerMessage": spread(figure(id, "runCpuMicrosPerMessage")),
                "replicatorCpuMicrosPerMessageSteady": spread(figure(id, "replicatorCpuMicrosPerMessageSteady")),
                "runCpuMicrosPerMessageSteady": spread(figure(id, "runCpuMicrosPerMessageSteady")),
                "replicatorPeakRssKiB": spread(figure(id, "replicatorPeakRssKiB")),
                "preloadRate": spread(figure(id, "preloadRate")),
            })
        })
        .collect();
    let ours = || firsts.iter().filter(|r| r["replicator"] == "oms-bridge");
    let same_work = |a: &Value, b: &Value| a["workloadFile"] == b["workloadFile"];
    let ours_per_peer: Vec<Value> = ours()
        .flat_map(|ours| {
            firsts
                .iter()
                .filter(|p| p["driver"] == ours["driver"] && same_work(p, ours))
                .filter(|p| p["replicator"] != "oms-bridge")
                .map(|peer| {
                    json!({
                        "driver": ours["driver"],
                        "workloadFile": ours["workloadFile"],
                        "peer": peer["replicator"],
                        "capacityOursPerPeer": paired(runs, &ours["id"], &peer["id"], &capacity, true),
                        "runCpuPerMessageOursPerPeer": paired(runs, &ours["id"], &peer["id"], &key("runCpuMicrosPerMessage"), true),
                        "runCpuPerMessageSteadyOursPerPeer":
                            paired(runs, &ours["id"], &peer["id"], &key("runCpuMicrosPerMessageSteady"), true),
                        "replicatorCpuPerMessageSteadyOursPerPeer":
                            paired(runs, &ours["id"], &peer["id"], &key("replicatorCpuMicrosPerMessageSteady"), true),
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // The price of a cloud boundary: the route through the gateway against the direct one.
    let gateway_per_direct: Vec<Value> = ours()
        .filter(|r| r["driver"].as_str().is_some_and(|d| d.contains(" -> gateway")))
        .filter_map(|via| {
            let (source, target) = ends(&via["driver"])?;
            let direct_driver = format!("{source} -> {target}");
            let direct = ours().find(|d| d["driver"] == direct_driver.as_str() && same_work(d, via))?;
            Some(json!({
                "driver": via["driver"],
                "workloadFile": via["workloadFile"],
                "direct": direct_driver,
                "capacityGatewayPerDirect": paired(runs, &via["id"], &direct["id"], &capacity, true),
            }))
        })
        .collect();
    // What keys cost: the same route and replicator with the keyless workload of that size and
    // partition count.
    let keyed_per_keyless: Vec<Value> = ours()
        .filter(|r| r["keyDistributor"] != "NO_KEY")
        .filter_map(|keyed| {
            let keyless = ours().find(|k| {
                k["driver"] == keyed["driver"]
                    && k["keyDistributor"] == "NO_KEY"
                    && k["messageSize"] == keyed["messageSize"]
                    && k["partitions"] == keyed["partitions"]
            })?;
            Some(json!({
                "driver": keyed["driver"],
                "keyed": keyed["workloadFile"],
                "keyless": keyless["workloadFile"],
                "capacityKeyedPerKeyless": paired(runs, &keyed["id"], &keyless["id"], &capacity, true),
            }))
        })
        .collect();
    json!({
        "runs": per_run,
        "oursPerPeer": ours_per_peer,
        "gatewayPerDirect": gateway_per_direct,
        "keyedPerKeyless": keyed_per_keyless,
    })
}

/// `e2e/bench/workloads/kafka-keyed.yaml` -> `kafka-keyed`.
fn workload_name(file: &Value) -> &str {
    let file = file.as_str().unwrap_or_default();
    file.rsplit('/').next().unwrap_or(file).trim_end_matches(".yaml")
}

/// The tables of a capacity document.
pub fn markdown(document: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# Bridge capacity: draining a backlog, side by side\n\n\
         Produced by `make bench-capacity` (e2e/benches/bridge_throughput/capacity.rs); every figure below\n\
         comes from capacity.json in this directory. Median (lowest-highest) over the repeats. Workloads\n\
         are the files in e2e/bench/workloads.\n\n",
    );
    let _ = writeln!(
        out,
        "Commit {}{}, {} repeats interleaved, backlog {} messages per run (at most {} bytes of payload), \
         {} s of runs in {} sitting(s).\n",
        document["commit"].as_str().unwrap_or("?"),
        if document["dirtyTree"] == true { " with changes not committed" } else { "" },
        document["repeats"],
        document["backlog"],
        document["backlogBytesAtMost"],
        document["wallSeconds"],
        document["sittings"]
    );
    let summary = &document["summary"];
    out.push_str(
        "## ours / peer (within each repeat)\n\n| Pair | Workload | Peer | capacity | CPU per message 10-90 %, replicator | CPU per message 10-90 %, whole run |\n|---|---|---|---|---|---|\n",
    );
    for ratio in summary["oursPerPeer"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            ratio["driver"].as_str().unwrap_or_default(),
            workload_name(&ratio["workloadFile"]),
            ratio["peer"].as_str().unwrap_or_default(),
            shown(&ratio["capacityOursPerPeer"], 2),
            shown(&ratio["replicatorCpuPerMessageSteadyOursPerPeer"], 2),
            shown(&ratio["runCpuPerMessageSteadyOursPerPeer"], 2)
        );
    }
    out.push_str("\n## Crossing a cloud boundary: gateway / direct (within each repeat)\n\n| Route | Workload | capacity |\n|---|---|---|\n");
    for crossing in summary["gatewayPerDirect"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} / {} | {} | {} |",
            crossing["driver"].as_str().unwrap_or_default(),
            crossing["direct"].as_str().unwrap_or_default(),
            workload_name(&crossing["workloadFile"]),
            shown(&crossing["capacityGatewayPerDirect"], 2)
        );
    }
    out.push_str("\n## Keyed / keyless, oms-bridge (within each repeat)\n\n| Pair | Keyed | Keyless | capacity |\n|---|---|---|---|\n");
    for keyed in summary["keyedPerKeyless"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            keyed["driver"].as_str().unwrap_or_default(),
            workload_name(&keyed["keyed"]),
            workload_name(&keyed["keyless"]),
            shown(&keyed["capacityKeyedPerKeyless"], 2)
        );
    }
    out.push_str(
        "\n## Runs\n\n| Pair | Workload | Replicator | capacity (msg/s) | / raw target | replicator CPU 10-90 % (µs/msg) | whole run CPU 10-90 % (µs/msg) | replicator CPU with start-up (µs/msg) | peak RSS (KiB) | preload (msg/s) |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in summary["runs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run["driver"].as_str().unwrap_or_default(),
            workload_name(&run["workloadFile"]),
            run["replicator"].as_str().unwrap_or_default(),
            shown(&run["capacity"], 0),
            shown(&run["capacityPerRawTarget"], 2),
            shown(&run["replicatorCpuMicrosPerMessageSteady"], 1),
            shown(&run["runCpuMicrosPerMessageSteady"], 1),
            shown(&run["replicatorCpuMicrosPerMessage"], 1),
            shown(&run["replicatorPeakRssKiB"], 0),
            shown(&run["preloadRate"], 0)
        );
    }
    out.push_str(METHOD);
    out
}

const METHOD: &str = "
## How these figures are made

- Each run: a fresh source queue is preloaded with the backlog while nothing replicates (preload =
  the rate the source took it at, one producer, 1000 unconfirmed publishes at most). Then the
  replicator starts alone: no producer and no consumer compete with it. A raw run (\"alone\") is
  the producer preloading the target itself: its capacity is that rate, the ceiling the
  replicators are divided by in \"/ raw target\" (same broker, same message size, same repeat).
- Keyed workloads carry one of 10,000 keys per message, in turn (round robin) or drawn with
  Zipf's law (one key has a tenth of the messages): a Kafka record key, the `oms-key` header
  elsewhere, which the bridge's per-key ordering lanes follow. The gateway route with added round
  trip goes through a fault proxy (toxiproxy) delaying each direction by half of it; its worker
  has the window a user would give a long link (`inFlight` 4,000, the others 1,000). The target's count is read
  every 100 ms (Kafka high watermarks, the stream's count, the queue's ready messages).
- capacity = 80 % of the backlog / the time between 10 % and 90 % of it arriving: a JVM's start-up
  and the last stragglers are left out.
- replicator CPU = user + system time of the replicator's own processes (worker, gateway,
  MirrorMaker 2) per message; the Shovel and JetStream sourcing run in the broker and have none of
  their own. whole run CPU = every process of the bench (brokers, replicator, this program) per
  message: the figure that compares in-broker peers with replicators of their own. \"10-90 %\" is
  the CPU used while the steady 80 % of the backlog arrived, per message of it; \"with start-up\"
  is the replicator's CPU from its start to the last arrival per message of the backlog (a JVM's
  start-up and compilation included; the JSON has the whole run's too).
- Repeats run interleaved (every scenario once, then again), so drift of the machine lands on all
  of them; ours / peer is taken within each repeat, then its median and range.
- The bench writes docs/bench only from a clean tree and records the commit; from a dirty tree it
  writes under e2e/.state/bench instead. A full run keeps each result as it comes and may take
  several sittings from the same commit (`OMS_BENCH_STOP_AFTER_MINUTES`); the header says how many.
";
