//! `oms-bridge worker` between real brokers: every Kafka/NATS/AMQP/MQTT source-sink pair round-trips keys,
//! headers and per-key order; kill -9 of the worker mid-stream loses nothing. What the tests share
//! (brokers, the worker and gateway processes, certificates, the verdicts) is in
//! `bridge_data_plane/fixtures.rs`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use oms_e2e::{Broker, Certs, HOUR, TlsBroker, TlsBrokerKind, TlsBrokerSpec, TlsPaths};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[path = "bridge_data_plane/fixtures.rs"]
mod fixtures;
use fixtures::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pair_of_kafka_nats_amqp_and_mqtt_round_trips_keys_headers_and_per_key_order() -> anyhow::Result<()> {
    let brokers = Brokers::shared(true)?;
    for source in [Kind::Kafka, Kind::Nats, Kind::Amqp, Kind::Mqtt] {
        for target in [Kind::Kafka, Kind::Nats, Kind::Amqp, Kind::Mqtt] {
            round_trip(&brokers, source, target).await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocketmq_round_trips_with_kafka_nats_amqp_and_mqtt_both_ways() -> anyhow::Result<()> {
    // A RocketMQ of the test's own, stopped when it ends: an idle one costs a good part of a core.
    let brokers = Brokers::shared(true)?.with_rocketmq(Some("rmq-pairs"))?;
    for other in [Kind::Kafka, Kind::Nats, Kind::Amqp, Kind::Mqtt] {
        round_trip(&brokers, Kind::Rocketmq, other).await?;
        round_trip(&brokers, other, Kind::Rocketmq).await?;
    }
    Ok(())
}

/// [`PAIR_COUNT`] messages from a new `source` queue into a new `target` queue through a worker:
/// none lost, keys and headers kept where both ends carry them, and order per key where the
/// bridge keeps it (not from RocketMQ, which needs `ordering: None`).
async fn round_trip(brokers: &Brokers, source: Kind, target: Kind) -> anyhow::Result<()> {
    let pair = format!("{}-to-{}", source.name(), target.name());
    let (from, to) = (format!("{pair}-in"), format!("{pair}-out"));
    brokers.create_queue(source, &from).await?;
    brokers.create_queue(target, &to).await?;
    if source == Kind::Mqtt {
        brokers.mqtt_session(&format!("oms-bridge-e2e-{pair}"), &from).await?;
    }
    if target == Kind::Mqtt {
        brokers.mqtt_session(&format!("verify-{to}"), &to).await?;
    }
    brokers.produce(source, &from, 0, PAIR_COUNT).await?;
    let worker = Worker::start(&pair, brokers, (source, &from), (target, &to))?;
    let seen = brokers.consume(target, &to, PAIR_COUNT, Duration::from_mins(1)).await?;
    worker.kill()?;
    let headers_travel = source.carries_headers() && target.carries_headers();
    check_round_trip_with(&seen, PAIR_COUNT, &pair, headers_travel, source != Kind::Rocketmq);
    println!("{pair}: sent {PAIR_COUNT}, received {}, lost 0", seen.len());
    Ok(())
}

/// Kafka -> RocketMQ -> NATS, two workers at once: each killed with -9 twice mid-stream, and the
/// RocketMQ broker restarted under them. RocketMQ keeps every message (repeats counted), NATS
/// drops the repeats by the id the Kafka source gave and RocketMQ carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocketmq_source_and_target_lose_nothing_across_kill_9_and_a_broker_restart() -> anyhow::Result<()> {
    let brokers = Brokers::shared(false)?.with_rocketmq(Some("rmq-kill"))?;
    let (into, middle, out) = ("rmq-kill-in", "rmq-kill-mid", "rmq-kill-out");
    brokers.create_queue(Kind::Kafka, into).await?;
    brokers.create_queue(Kind::Rocketmq, middle).await?;
    let js = jetstream::new(async_nats::connect(format!("nats://{}", brokers.nats.address())).await?);
    // Repeats come up to a minute (RocketMQ's invisible time) after each kill and the restart:
    // a duplicate window longer than the whole run, so that every one is dropped.
    js.create_stream(jetstream::stream::Config {
        name: out.to_owned(),
        subjects: vec![out.to_owned()],
        allow_batch_publish: true,
        duplicate_window: Duration::from_mins(15),
        ..Default::default()
    })
    .await?;
    brokers.produce(Kind::Kafka, into, 0, KILL_COUNT).await?;
    let start = || -> anyhow::Result<[Worker; 2]> {
        Ok([
            Worker::start("rmq-kill-a", &brokers, (Kind::Kafka, into), (Kind::Rocketmq, middle))?,
            Worker::start("rmq-kill-b", &brokers, (Kind::Rocketmq, middle), (Kind::Nats, out))?,
        ])
    };
    let stored = || async { anyhow::Ok(js.get_stream(out).await?.info().await?.state.messages) };
    // The stream must get there while the workers run (across the restart, too).
    let wait_for = |goal: usize| async move {
        let started = Instant::now();
        loop {
            let messages = stored().await?;
            if messages >= goal as u64 {
                return anyhow::Ok(());
            }
            anyhow::ensure!(started.elapsed() < Duration::from_mins(2), "NATS holds {messages} of {goal} after 2 min");
            tokio::time::sleep(oms_e2e::poll_interval(started.elapsed())).await;
        }
    };
    for round in 0..2 {
        let workers = start()?;
        wait_for((2 * round + 1) * KILL_COUNT / 6).await?;
        if round == 1 {
            brokers.broker(Kind::Rocketmq).restart()?;
            wait_for(4 * KILL_COUNT / 6).await?;
        }
        for worker in workers {
            worker.kill()?;
        }
    }
    let _workers = start()?;
    // What a killed worker held comes back once the broker counts its client gone (30 s without
    // heartbeats on the test broker, broker.sh).
    let seen = brokers.consume(Kind::Nats, out, KILL_COUNT, Duration::from_mins(4)).await?;
    let carried = brokers.consume(Kind::Rocketmq, middle, KILL_COUNT, Duration::from_mins(1)).await?;
    let (lost, duplicated) = lost_and_duplicated(&seen, KILL_COUNT);
    let (carried_lost, carried_twice) = lost_and_duplicated(&carried, KILL_COUNT);
    println!(
        "rocketmq kill -9 x2 + broker restart: sent {KILL_COUNT}; RocketMQ holds {} (lost {carried_lost}, \
         repeats {carried_twice}); NATS received {} (lost {lost}, duplicated {duplicated})",
        carried.len(),
        seen.len()
    );
    let arrived: HashSet<&str> = seen.iter().map(|s| s.payload.as_str()).collect();
    let missing: Vec<usize> = (0..KILL_COUNT).filter(|i| !arrived.contains(format!("msg-{i}").as_str())).collect();
    assert_eq!(carried_lost, 0, "messages lost on the way into RocketMQ");
    assert_eq!(lost, 0, "messages lost on the way out of RocketMQ: {missing:?}");
    assert_eq!(duplicated, 0, "JetStream drops repeats by the id RocketMQ carried");
    Ok(())
}

/// A RocketMQ source's lag is what its group has not taken yet (read from the brokers) plus what
/// the worker holds: 3,000 messages waiting behind a slow target show as a lag of most of them,
/// falling as they go, and 0 once all arrived. The end lists a proxy that does not answer before
/// the one that does: the worker dials the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rocketmq_source_past_a_dead_proxy_reports_what_waits_as_its_lag() -> anyhow::Result<()> {
    let brokers = Brokers::shared(false)?.with_rocketmq(Some("rmq-lag"))?;
    let (from, to) = ("lag-in", "lag-out");
    brokers.create_queue(Kind::Rocketmq, from).await?;
    brokers.create_queue(Kind::Nats, to).await?;
    brokers.produce(Kind::Rocketmq, from, 0, KILL_COUNT).await?;
    // Every write to NATS waits 300 ms: the worker drains the topic over many lag readings.
    let slow = oms_e2e::FaultProxy::start(&brokers.nats.address())?;
    slow.add_latency(300)?;
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", oms_e2e::free_server_port()).parse()?;
    let proxy = brokers.broker(Kind::Rocketmq).address();
    let dead = format!("127.0.0.1:{}", oms_e2e::free_server_port());
    let yaml = brokers
        .config("lag", (Kind::Rocketmq, from), (Kind::Nats, to), admin, "ordering: None\n")
        .replace(&brokers.nats.address(), &format!("127.0.0.1:{}", slow.listen))
        .replace(&format!("servers: ['{proxy}']"), &format!("servers: ['{dead}', '{proxy}']"));
    anyhow::ensure!(yaml.contains(&dead), "the dead proxy is listed first: {yaml}");
    let _worker = Worker::start_with("lag", &yaml)?;
    let js = jetstream::new(async_nats::connect(format!("nats://{}", brokers.nats.address())).await?);
    let (started, mut most, mut between) = (Instant::now(), 0, 0);
    loop {
        let lag = oms_e2e::metric(admin, "oms_bridge_source_lag_messages", None);
        most = most.max(lag);
        if (1..KILL_COUNT as u64).contains(&lag) {
            between += 1;
        }
        let stored = js.get_stream(to).await?.info().await?.state.messages;
        if stored >= KILL_COUNT as u64 && lag == 0 {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_mins(2), "stored {stored}, lag {lag} after 2 min");
        tokio::time::sleep(oms_e2e::poll_interval(started.elapsed())).await;
    }
    println!("rocketmq lag: most {most} of {KILL_COUNT} waiting, 0 once all arrived after {:?}", started.elapsed());
    assert!(most >= KILL_COUNT as u64 / 2, "a lag of {most} while {KILL_COUNT} waited behind a slow target");
    assert!(most <= KILL_COUNT as u64, "a lag of {most}, more than the {KILL_COUNT} sent");
    assert!(between > 0, "no reading between 0 and {KILL_COUNT} while the topic drained");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_worker_mid_stream_loses_nothing_and_nats_drops_the_repeats() -> anyhow::Result<()> {
    let brokers = Brokers::shared(false)?;
    brokers.create_queue(Kind::Kafka, "kill-in").await?;
    brokers.create_queue(Kind::Nats, "kill-out").await?;
    brokers.produce(Kind::Kafka, "kill-in", 0, KILL_COUNT).await?;
    let js = jetstream::new(async_nats::connect(format!("nats://{}", brokers.nats.address())).await?);
    for kill in 0..KILLS {
        let worker = Worker::start("kill", &brokers, (Kind::Kafka, "kill-in"), (Kind::Nats, "kill-out"))?;
        // Kill when a part of the stream has gone through, at a different point each time.
        let goal = (kill + 1) * KILL_COUNT / (KILLS + 2);
        let started = Instant::now();
        loop {
            let stored = js.get_stream("kill-out").await?.info().await?.state.messages;
            if stored >= goal as u64 || started.elapsed() > Duration::from_mins(1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worker.kill()?;
    }
    let worker = Worker::start("kill", &brokers, (Kind::Kafka, "kill-in"), (Kind::Nats, "kill-out"))?;
    let seen = brokers.consume(Kind::Nats, "kill-out", KILL_COUNT, Duration::from_mins(2)).await?;
    drop(worker);
    let distinct: HashSet<&str> = seen.iter().map(|s| s.payload.as_str()).collect();
    let lost = KILL_COUNT - distinct.len();
    let duplicated = seen.len() - distinct.len();
    println!("kill -9 x{KILLS}: sent {KILL_COUNT}, received {}, lost {lost}, duplicated {duplicated}", seen.len());
    assert_eq!(lost, 0, "messages lost across kill -9");
    assert_eq!(duplicated, 0, "JetStream deduplicates by Nats-Msg-Id within its window");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_kafka_exactly_once_commits_each_message_once_through_kill_9() -> anyhow::Result<()> {
    const COUNT: usize = 20_000;
    let brokers = Brokers::shared(false)?;
    brokers.create_queue(Kind::Kafka, "eos-in").await?;
    brokers.create_queue(Kind::Kafka, "eos-out").await?;
    brokers.produce(Kind::Kafka, "eos-in", 0, COUNT).await?;
    let config = |admin| {
        brokers.config("eos", (Kind::Kafka, "eos-in"), (Kind::Kafka, "eos-out"), admin, "delivery: ExactlyOnce\n")
    };
    let mut sent_before_kills = 0;
    for kill in 0..KILLS {
        let admin = oms_e2e::admin_address()?;
        let worker = Worker::start_with("eos", &config(admin))?;
        // Killed in the middle of its work, at a different point each time; most likely with a
        // transaction open.
        let goal = ((kill + 1) * COUNT / 10) as u64;
        sent_before_kills +=
            oms_e2e::wait_metric(admin, "oms_bridge_messages_sent_total", goal, Duration::from_mins(2)).await;
        worker.kill()?;
    }
    let admin = oms_e2e::admin_address()?;
    let worker = Worker::start_with("eos", &config(admin))?;
    let arrived = brokers.consume(Kind::Kafka, "eos-out", COUNT, Duration::from_mins(3)).await?;
    let missing = lost_and_duplicated(&arrived, COUNT).0;
    anyhow::ensure!(missing == 0, "{missing} of {COUNT} never arrived");
    // SIGTERM ends the last transaction; then every committed record is read, to the end.
    worker.stop()?;
    let committed = brokers.kafka_read_to_end("eos-out", Duration::from_mins(1)).await?;
    let (lost, duplicated) = lost_and_duplicated(&committed, COUNT);
    println!(
        "kafka -> kafka ExactlyOnce, kill -9 x{KILLS}: produced {COUNT}, committed in the target {}, lost {lost}, \
         duplicates {duplicated} (the killed workers had sent {sent_before_kills}, their open transactions aborted)",
        committed.len()
    );
    assert_eq!(lost, 0, "messages lost across kill -9");
    assert_eq!(duplicated, 0, "a read_committed consumer saw a message twice");
    Ok(())
}

/// ExactlyOnce into JetStream from each source whose ids are stable (Kafka offsets, JetStream
/// sequences): three kill -9 of the worker mid-stream, then the stream holds each message once,
/// its duplicate window dropping what the killed workers had sent and not acknowledged, and each
/// key's messages in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_into_jetstream_stores_each_message_once_through_kill_9() -> anyhow::Result<()> {
    const COUNT: usize = 20_000;
    let brokers = Brokers::shared(false)?;
    let js = jetstream::new(async_nats::connect(format!("nats://{}", brokers.nats.address())).await?);
    for source in [Kind::Kafka, Kind::Nats] {
        let pair = format!("eos-{}-nats", source.name());
        let (from, to) = (format!("{pair}-in"), format!("{pair}-out"));
        brokers.create_queue(source, &from).await?;
        brokers.create_queue(Kind::Nats, &to).await?;
        brokers.produce(source, &from, 0, COUNT).await?;
        let config =
            |admin| brokers.config(&pair, (source, &from), (Kind::Nats, &to), admin, "delivery: ExactlyOnce\n");
        let mut sent_before_kills = 0;
        for kill in 0..KILLS {
            let admin = oms_e2e::admin_address()?;
            let worker = Worker::start_with(&pair, &config(admin))?;
            let goal = ((kill + 1) * COUNT / 10) as u64;
            sent_before_kills +=
                oms_e2e::wait_metric(admin, "oms_bridge_messages_sent_total", goal, Duration::from_mins(2)).await;
            worker.kill()?;
        }
        let admin = oms_e2e::admin_address()?;
        let worker = Worker::start_with(&pair, &config(admin))?;
        let seen = brokers.consume(Kind::Nats, &to, COUNT, Duration::from_mins(3)).await?;
        // SIGTERM drains what is in flight; then the stream is what it will stay.
        worker.stop()?;
        let verdict = verdict(&seen, COUNT);
        let stored = stored(&js, &to).await?;
        println!(
            "{pair} ExactlyOnce, kill -9 x{KILLS}: produced {COUNT}, the stream holds {stored}, {verdict:?} \
             (the killed workers had sent {sent_before_kills})"
        );
        assert_eq!(verdict.lost, 0, "{pair}: messages lost across kill -9");
        assert_eq!(verdict.duplicates, 0, "{pair}: a message read twice from the target");
        assert_eq!(stored, COUNT as u64, "{pair}: the stream holds each message once");
        // A restarted NATS worker resets its consumer to the ack floor: the killed one's messages
        // come first, so keys keep their order.
        assert_eq!(verdict.out_of_order, 0, "{pair}: per-key order broken by a restart");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_repeat_a_kill_9_leaves_in_a_kafka_target_is_counted_as_a_redelivery() -> anyhow::Result<()> {
    const COUNT: usize = 3000;
    let brokers = Brokers::shared(true)?;
    brokers.create_queue(Kind::Amqp, "redeliver-in").await?;
    brokers.create_queue(Kind::Kafka, "redeliver-out").await?;
    brokers.produce(Kind::Amqp, "redeliver-in", 0, COUNT).await?;
    let config =
        |admin| brokers.config("redeliver", (Kind::Amqp, "redeliver-in"), (Kind::Kafka, "redeliver-out"), admin, "");
    let admin = oms_e2e::admin_address()?;
    let worker = Worker::start_with("redeliver", &config(admin))?;
    let sent =
        oms_e2e::wait_metric(admin, "oms_bridge_messages_sent_total", (COUNT / 3) as u64, Duration::from_mins(1)).await;
    anyhow::ensure!(sent < COUNT as u64, "the stream was over before the kill");
    // Killed with messages sent to Kafka and not yet acknowledged to RabbitMQ, which delivers
    // them again, marked redelivered, to the next worker.
    worker.kill()?;
    let admin = oms_e2e::admin_address()?;
    let worker = Worker::start_with("redeliver", &config(admin))?;
    let seen = brokers.consume(Kind::Kafka, "redeliver-out", COUNT, Duration::from_mins(2)).await?;
    let (lost, duplicated) = lost_and_duplicated(&seen, COUNT);
    let counted = oms_e2e::metric(admin, "oms_bridge_messages_redelivered_total", None);
    worker.stop()?;
    println!(
        "amqp -> kafka, kill -9 after {sent}: lost {lost}, the target holds {duplicated} twice, \
         the next worker counted {counted} redeliveries it stored again"
    );
    assert_eq!(lost, 0, "messages lost across kill -9");
    // Each repeat in the target came from a redelivery the second worker stored; a redelivery
    // whose first copy never reached Kafka is counted too, so the count may be higher, by at most
    // the window the killed worker had in flight.
    assert!(duplicated as u64 <= counted, "{duplicated} repeats in the target, {counted} counted");
    // The killed worker held a window of deliveries it had not acknowledged: they come again.
    assert!(counted > 0 && counted <= 64, "{counted} redeliveries; the killed worker's window was 64");
    Ok(())
}

fn skipped_loops(admin: std::net::SocketAddr) -> u64 {
    oms_e2e::metric(admin, "oms_bridge_messages_skipped_total", Some("loop"))
}

fn failed_with(admin: std::net::SocketAddr, reason: &str) -> u64 {
    oms_e2e::metric(admin, "oms_bridge_messages_failed_total", Some(reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_a_to_b_and_b_to_a_run_without_echo() -> anyhow::Result<()> {
    const EACH: usize = 50;
    let a = Broker::up("nats", "loop-a")?;
    let b = Broker::up("nats", "loop-b")?;
    for (broker, stream) in [(&a, "a"), (&b, "b")] {
        let js = jetstream::new(async_nats::connect(format!("nats://{}", broker.address())).await?);
        js.create_stream(jetstream::stream::Config {
            name: stream.to_owned(),
            subjects: vec![stream.to_owned()],
            ..Default::default()
        })
        .await?;
    }
    let admin_ab: std::net::SocketAddr = format!("127.0.0.1:{}", oms_e2e::free_server_port()).parse()?;
    let admin_ba: std::net::SocketAddr = format!("127.0.0.1:{}", oms_e2e::free_server_port()).parse()?;
    let config = |name: &str,
                  (from, from_queue, from_ap): (&Broker, &str, &str),
                  (to, to_queue, to_ap): (&Broker, &str, &str),
                  admin| {
        format!(
            "bridge: {{name: {name}, namespace: e2e}}\n\
             source: {{driver: nats, servers: ['{}'], queue: {from_queue}, accessPoint: {from_ap}}}\n\
             target: {{driver: nats, servers: ['{}'], queue: {to_queue}, accessPoint: {to_ap}}}\n\
             admin: {{listen: '{admin}'}}\n",
            from.address(),
            to.address()
        )
    };
    let _ab = Worker::start_with("a-to-b", &config("a-to-b", (&a, "a", "e2e/a"), (&b, "b", "e2e/b"), admin_ab))?;
    let _ba = Worker::start_with("b-to-a", &config("b-to-a", (&b, "b", "e2e/b"), (&a, "a", "e2e/a"), admin_ba))?;
    for (broker, stream) in [(&a, "a"), (&b, "b")] {
        let js = jetstream::new(async_nats::connect(format!("nats://{}", broker.address())).await?);
        for i in 0..EACH {
            js.publish(stream.to_owned(), format!("{stream}-{i}").into()).await?.await?;
        }
    }
    // Each side's 50 cross over once; their return trips are the loops each worker must skip.
    let started = Instant::now();
    while (skipped_loops(admin_ab) < EACH as u64 || skipped_loops(admin_ba) < EACH as u64)
        && started.elapsed() < Duration::from_mins(1)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (loops_ab, loops_ba) = (skipped_loops(admin_ab), skipped_loops(admin_ba));
    let mut counts = Vec::new();
    for (broker, stream) in [(&a, "a"), (&b, "b")] {
        let js = jetstream::new(async_nats::connect(format!("nats://{}", broker.address())).await?);
        counts.push(js.get_stream(stream).await?.info().await?.state.messages);
    }
    println!("A<->B: published {EACH} on each side; stored {counts:?}; echoes skipped {loops_ab} and {loops_ba}");
    assert_eq!((loops_ab, loops_ba), (EACH as u64, EACH as u64), "every echo is recognised");
    assert_eq!(counts, vec![2 * EACH as u64, 2 * EACH as u64], "each side holds its own and the other's, once");
    Ok(())
}

async fn stored(js: &jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    Ok(js.get_stream(stream).await?.info().await?.state.messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_and_a_30_second_cut_lose_nothing() -> anyhow::Result<()> {
    const COUNT: usize = 3000;
    let brokers = Brokers::shared(false)?;
    brokers.create_queue(Kind::Kafka, "cut-in").await?;
    brokers.create_queue(Kind::Nats, "cut-out").await?;
    brokers.produce(Kind::Kafka, "cut-in", 0, COUNT).await?;
    let proxy = oms_e2e::FaultProxy::start(&brokers.nats.address())?;
    let js = jetstream::new(async_nats::connect(format!("nats://{}", brokers.nats.address())).await?);

    // The worker reaches NATS only through the proxy, first over a slow link.
    proxy.add_latency(50)?;
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", oms_e2e::free_server_port()).parse()?;
    let _worker = Worker::start_with(
        "cut",
        &format!(
            "bridge: {{name: cut, namespace: e2e}}\n\
             source: {{driver: kafka, servers: ['{}'], queue: cut-in}}\n\
             target: {{driver: nats, servers: ['127.0.0.1:{}'], queue: cut-out}}\n\
             inFlight: 64\nadmin: {{listen: '{admin}'}}\n",
            brokers.kafka.address(),
            proxy.listen
        ),
    )?;
    let started = Instant::now();
    while stored(&js, "cut-out").await? < (COUNT / 3) as u64 && started.elapsed() < Duration::from_mins(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Cut the link mid-stream for 30 seconds: the fault itself, not a wait for something. Cut
    // first, then lift the latency: the other way round the worker could finish in between.
    proxy.set_enabled(false)?;
    proxy.remove_latency()?;
    let at_cut = stored(&js, "cut-out").await?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during_cut = stored(&js, "cut-out").await?;
    proxy.set_enabled(true)?;

    let seen = brokers.consume(Kind::Nats, "cut-out", COUNT, Duration::from_mins(2)).await?;
    let distinct: HashSet<&str> = seen.iter().map(|s| s.payload.as_str()).collect();
    let (lost, duplicated) = (COUNT - distinct.len(), seen.len() - distinct.len());
    println!(
        "worker: {} reconnects, {} refused as too large",
        failed_with(admin, "link"),
        failed_with(admin, "too_large")
    );
    if lost > 0 {
        let missing: Vec<String> =
            (0..COUNT).map(|i| format!("msg-{i}")).filter(|p| !distinct.contains(p.as_str())).collect();
        println!("missing {missing:?}; the stream holds {}", stored(&js, "cut-out").await?);
    }
    println!(
        "slow link then 30 s cut: sent {COUNT}, stored {at_cut} at the cut and {during_cut} at its end, received {}, lost {lost}, duplicated {duplicated}",
        seen.len()
    );
    assert!(during_cut < COUNT as u64, "the cut happened mid-stream");
    assert_eq!(lost, 0, "messages lost across the cut");
    assert_eq!(duplicated, 0, "JetStream deduplicates the resent messages");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_the_target_is_skipped_counted_and_the_rest_flows() -> anyhow::Result<()> {
    let brokers = Brokers::shared(false)?;
    brokers.create_queue(Kind::Kafka, "large-in").await?;
    brokers.produce(Kind::Kafka, "large-in", 0, 10).await?;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", brokers.kafka.address()).create()?;
    let big = "x".repeat(5000);
    producer
        .send(FutureRecord::to("large-in").key("k0").payload(&big), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;
    brokers.produce(Kind::Kafka, "large-in", 10, 10).await?;

    // Published one at a time, and in fast batches (where a refusal would end the batch).
    for (name, batched) in [("large", false), ("large-batched", true)] {
        // The target stream takes messages of at most 1000 bytes.
        let js = jetstream::new(async_nats::connect(format!("nats://{}", brokers.nats.address())).await?);
        js.create_stream(jetstream::stream::Config {
            name: format!("{name}-out"),
            subjects: vec![format!("{name}-out")],
            max_message_size: 1000,
            allow_batch_publish: batched,
            ..Default::default()
        })
        .await?;
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", oms_e2e::free_server_port()).parse()?;
        let _worker = Worker::start_with(
            name,
            &format!(
                "bridge: {{name: {name}, namespace: e2e}}\n\
                 source: {{driver: kafka, servers: ['{}'], queue: large-in}}\n\
                 target: {{driver: nats, servers: ['{}'], queue: {name}-out}}\n\
                 admin: {{listen: '{admin}'}}\n",
                brokers.kafka.address(),
                brokers.nats.address()
            ),
        )?;
        let seen = brokers.consume(Kind::Nats, &format!("{name}-out"), 20, Duration::from_mins(1)).await?;
        // Messages of other keys may overtake the large one: its refusal can land after they arrived.
        let refused = oms_e2e::poll("the refusal is counted", oms_e2e::DEADLINE, || {
            Ok(Some(failed_with(admin, "too_large")).filter(|n| *n > 0))
        })
        .unwrap_or(0);
        let reconnects = failed_with(admin, "link");
        println!(
            "too large ({name}): 21 sent, {} received, {refused} refused as too large, {reconnects} reconnects",
            seen.len()
        );
        assert_eq!(seen.len(), 20, "{name}: every message that fits arrives, once");
        assert_eq!(refused, 1, "{name}: the large message is counted");
        assert_eq!(reconnects, 0, "{name}: no crash loop: the worker never reconnected over it");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_at_the_source_and_the_target_mid_stream_loses_nothing_and_keeps_key_order()
-> anyhow::Result<()> {
    // Enough that each broker restarts while the stream flows (checked below), at the slowest
    // pair's paced rate (a few hundred a second into Kafka with two in flight).
    const COUNT: usize = 10_000;
    let brokers = Brokers::up("bridge-restart", true)?;
    // NATS to RabbitMQ: the target restarts while the source stays up.
    for (source, target) in [(Kind::Kafka, Kind::Nats), (Kind::Nats, Kind::Kafka), (Kind::Nats, Kind::Amqp)] {
        let pair = format!("restart-{}-to-{}", source.name(), target.name());
        let (from, to) = (format!("{pair}-in"), format!("{pair}-out"));
        brokers.create_queue(source, &from).await?;
        brokers.create_queue(target, &to).await?;
        // Half now, half once the source is back: a Kafka source reads ahead of what it sends, and
        // had it read everything before its broker went down, it could send it all while the
        // broker restarts, leaving no stream for the target's restart.
        brokers.produce(source, &from, 0, COUNT / 2).await?;
        let admin = oms_e2e::admin_address()?;
        // A narrow window paces the worker, so that on a fast machine the stream is still going when
        // each broker restarts (with 64 it could finish the backlog before the second restart).
        let config =
            brokers.config(&pair, (source, &from), (target, &to), admin, "").replace("inFlight: 64", "inFlight: 2");
        let _worker = Worker::start_with(&pair, &config)?;
        // Restart the source broker a third of the way through, the target at two thirds. Sends
        // count the repeats a restarted Kafka source delivers again, which JetStream drops: the
        // stream is still going while the sends minus those are below the count.
        for (role, kind, share) in [("source", source, 1), ("target", target, 2)] {
            let goal = (share * COUNT / 3) as u64;
            let sent =
                oms_e2e::wait_metric(admin, "oms_bridge_messages_sent_total", goal, Duration::from_mins(2)).await;
            let stored = sent.saturating_sub(oms_e2e::metric(admin, "oms_bridge_messages_deduplicated_total", None));
            anyhow::ensure!(
                sent >= goal && stored < COUNT as u64,
                "{pair}: {sent} sent ({stored} without the repeats the target dropped) when the {role} was due to restart"
            );
            brokers.broker(kind).restart()?;
            if role == "source" {
                brokers.produce(source, &from, COUNT / 2, COUNT - COUNT / 2).await?;
            }
        }
        // Kafka keeps order through failures itself, and JetStream in fast batches: no lanes there.
        let lanes = oms_e2e::metric(admin, "oms_bridge_ordering_lanes", None);
        assert_eq!(lanes, u64::from(target == Kind::Amqp), "{pair}: lanes only where the target cannot keep order");
        let seen = brokers.consume(target, &to, COUNT, Duration::from_mins(3)).await?;
        let (lost, duplicated) = lost_and_duplicated(&seen, COUNT);
        let out_of_order = overtaken(&seen);
        println!(
            "{pair}: source restarted at 1/3, target at 2/3: sent {COUNT}, received {}, lost {lost}, duplicated {duplicated}, out of key order {out_of_order}, worker reconnects {}, resent {}, repeats dropped by the target {}",
            seen.len(),
            failed_with(admin, "link"),
            oms_e2e::metric(admin, "oms_bridge_messages_resent_total", None),
            oms_e2e::metric(admin, "oms_bridge_messages_deduplicated_total", None),
        );
        assert_eq!(lost, 0, "{pair}: messages lost across broker restarts");
        assert_eq!(out_of_order, 0, "{pair}: a message came after a later one of its key");
        if target == Kind::Nats {
            assert_eq!(duplicated, 0, "{pair}: JetStream drops the resends by Nats-Msg-Id");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_forwards_only_the_matching_messages_and_counts_the_rest() -> anyhow::Result<()> {
    const COUNT: usize = 200;
    let brokers = Brokers::shared(false)?;
    brokers.create_queue(Kind::Kafka, "filter-in").await?;
    brokers.create_queue(Kind::Nats, "filter-out").await?;
    brokers.produce(Kind::Kafka, "filter-in", 0, COUNT).await?;
    let admin = oms_e2e::admin_address()?;
    // Keys k0..k7: keep k3 and every message whose seq ends in 0 (k0, k2, k4, k6 among those).
    let filter = "filter: \"key == 'k3' || (headers['region'] == 'eu' && headers['seq'].endsWith('0'))\"\n";
    let config = brokers.config("filter", (Kind::Kafka, "filter-in"), (Kind::Nats, "filter-out"), admin, filter);
    let _worker = Worker::start_with("filter", &config)?;
    let wanted: HashSet<String> =
        (0..COUNT).filter(|i| i % KEYS == 3 || i % 10 == 0).map(|i| format!("msg-{i}")).collect();
    let skipped = async {
        let deadline = Instant::now() + Duration::from_mins(1);
        while oms_e2e::metric(admin, "oms_bridge_messages_skipped_total", Some("filtered"))
            < (COUNT - wanted.len()) as u64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        oms_e2e::metric(admin, "oms_bridge_messages_skipped_total", Some("filtered"))
    }
    .await;
    // Everything is decided once the skipped count is complete; read what arrived.
    let seen = brokers.consume(Kind::Nats, "filter-out", wanted.len(), Duration::from_secs(30)).await?;
    let arrived: HashSet<String> = seen.iter().map(|s| s.payload.clone()).collect();
    println!("filter: sent {COUNT}, matching {}, received {}, skipped as filtered {skipped}", wanted.len(), seen.len());
    assert_eq!(arrived, wanted, "exactly the matching messages arrive");
    assert_eq!(skipped, (COUNT - wanted.len()) as u64, "every other message is counted as filtered");
    Ok(())
}

/// Milliseconds since the epoch, by this machine's clock (the brokers' too).
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_a_timestamp_skips_what_came_before_it_on_kafka_and_nats() -> anyhow::Result<()> {
    const EACH: usize = 100;
    let brokers = Brokers::shared(false)?;
    for source in [Kind::Kafka, Kind::Nats] {
        let pair = format!("since-{}", source.name());
        let (from, to) = (format!("{pair}-in"), format!("{pair}-out"));
        brokers.create_queue(source, &from).await?;
        brokers.create_queue(Kind::Nats, &to).await?;
        brokers.produce(source, &from, 0, EACH).await?;
        // The first batch is confirmed; everything produced from the next millisecond on is newer.
        let since = now_ms() + 1;
        while now_ms() <= since {
            tokio::task::yield_now().await;
        }
        brokers.produce(source, &from, EACH, EACH).await?;
        let stamp = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since) * 1_000_000)?
            .format(&time::format_description::well_known::Rfc3339)?;
        let extra = format!("startFrom: Timestamp\nstartTimestamp: '{stamp}'\n");
        let admin = oms_e2e::admin_address()?;
        let _worker =
            Worker::start_with(&pair, &brokers.config(&pair, (source, &from), (Kind::Nats, &to), admin, &extra))?;
        let sent =
            oms_e2e::wait_metric(admin, "oms_bridge_messages_sent_total", EACH as u64, Duration::from_mins(1)).await;
        let seen = brokers.consume(Kind::Nats, &to, EACH, Duration::from_secs(30)).await?;
        let first_batch =
            seen.iter().filter(|s| s.payload.trim_start_matches("msg-").parse().unwrap_or(0) < EACH).count();
        println!(
            "{pair}: {EACH} before {stamp} and {EACH} after; sent {sent}, received {}, from before {first_batch}",
            seen.len()
        );
        assert_eq!(first_batch, 0, "{pair}: nothing older than startTimestamp is bridged");
        assert_eq!(lost_and_duplicated(&seen, 2 * EACH).0, EACH, "{pair}: the newer batch arrives, all of it");
    }
    Ok(())
}

/// Workers of earlier versions kept their Kafka positions in `oms-bridge-<namespace>-<bridge>`;
/// today's group is `<namespace>.oms-bridge.<bridge>` (under the tenant's ACL prefix). A worker
/// whose group has no positions continues where the earlier group stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_kafka_group_continues_where_its_earlier_name_stopped() -> anyhow::Result<()> {
    const EACH: usize = 100;
    let brokers = Brokers::shared(false)?;
    let (pair, from, to) = ("legacy", "legacy-in", "legacy-out");
    brokers.create_queue(Kind::Kafka, from).await?;
    brokers.create_queue(Kind::Nats, to).await?;
    brokers.produce(Kind::Kafka, from, 0, EACH).await?;
    // An earlier worker bridged the first batch: its group committed the end of every partition.
    let earlier: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers.kafka.address())
        .set("group.id", format!("oms-bridge-e2e-{pair}"))
        .create()?;
    let metadata = earlier.fetch_metadata(Some(from), Duration::from_secs(10))?;
    let mut ends = rdkafka::TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(rdkafka::metadata::MetadataTopic::partitions) {
        let (_, high) = earlier.fetch_watermarks(from, partition.id(), Duration::from_secs(10))?;
        ends.add_partition_offset(from, partition.id(), rdkafka::Offset::Offset(high))?;
    }
    // A broker just started may not coordinate groups yet (NotCoordinator): retried until it does.
    oms_e2e::poll("the earlier group's commit", Duration::from_mins(1), || {
        Ok(earlier.commit(&ends, rdkafka::consumer::CommitMode::Sync).map(Some)?)
    })?;
    brokers.produce(Kind::Kafka, from, EACH, EACH).await?;
    let admin = oms_e2e::admin_address()?;
    let _worker = Worker::start_with(pair, &brokers.config(pair, (Kind::Kafka, from), (Kind::Nats, to), admin, ""))?;
    let sent = oms_e2e::wait_metric(admin, "oms_bridge_messages_sent_total", EACH as u64, Duration::from_mins(1)).await;
    let seen = brokers.consume(Kind::Nats, to, EACH, Duration::from_secs(30)).await?;
    let first_batch = seen.iter().filter(|s| s.payload.trim_start_matches("msg-").parse().unwrap_or(0) < EACH).count();
    println!("{pair}: {EACH} bridged under the earlier group, {EACH} after; sent {sent}, received {}", seen.len());
    assert_eq!(first_batch, 0, "what the earlier group had bridged is not bridged again");
    assert_eq!(lost_and_duplicated(&seen, 2 * EACH).0, EACH, "the rest arrives, all of it");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_source_lost_before_bridging_are_reported_as_a_gap() -> anyhow::Result<()> {
    const EACH: usize = 100;
    const LOST: u64 = 50;
    let brokers = Brokers::shared(false)?;
    for source in [Kind::Kafka, Kind::Nats] {
        let pair = format!("gap-{}", source.name());
        let (from, to) = (format!("{pair}-in"), format!("{pair}-out"));
        // One partition, so that positions are the message numbers.
        if source == Kind::Kafka {
            brokers.create_topic(&from, 1).await?;
        } else {
            brokers.create_queue(source, &from).await?;
        }
        brokers.create_queue(Kind::Nats, &to).await?;
        let config = |admin| brokers.config(&pair, (source, &from), (Kind::Nats, &to), admin, "");
        // Bridge a first batch completely, then stop the worker the way Kubernetes does.
        brokers.produce(source, &from, 0, EACH).await?;
        let admin = oms_e2e::admin_address()?;
        let worker = Worker::start_with(&pair, &config(admin))?;
        let first =
            oms_e2e::wait_metric(admin, "oms_bridge_messages_sent_total", EACH as u64, Duration::from_mins(1)).await;
        anyhow::ensure!(first == EACH as u64, "{pair}: only {first} of the first batch were bridged");
        worker.stop()?;
        // While it is stopped, a second batch arrives and the source loses the first half of it.
        brokers.produce(source, &from, EACH, EACH).await?;
        let first_kept = EACH as u64 + LOST;
        truncate_before(&brokers, source, &from, first_kept).await?;
        let admin = oms_e2e::admin_address()?;
        let _worker = Worker::start_with(&pair, &config(admin))?;
        let sent =
            oms_e2e::wait_metric(admin, "oms_bridge_messages_sent_total", EACH as u64 - LOST, Duration::from_mins(1))
                .await;
        let gap = oms_e2e::wait_metric(admin, "oms_bridge_gap_detected_total", LOST, Duration::from_secs(10)).await;
        println!(
            "{pair}: {} produced, {LOST} truncated before bridging; sent after restart {sent}, gap reported {gap}",
            2 * EACH
        );
        assert_eq!(sent, EACH as u64 - LOST, "{pair}: what is left of the second batch is bridged");
        assert_eq!(gap, LOST, "{pair}: the loss is counted exactly");
    }
    Ok(())
}

/// Removes messages from the start of a one-partition source queue up to (not including) the
/// 0-based position `keep_from`, as retention would: Kafka's DeleteRecords, JetStream's purge up to
/// a sequence.
async fn truncate_before(brokers: &Brokers, kind: Kind, queue: &str, keep_from: u64) -> anyhow::Result<()> {
    match kind {
        Kind::Kafka => {
            let admin: AdminClient<DefaultClientContext> =
                ClientConfig::new().set("bootstrap.servers", brokers.kafka.address()).create()?;
            let mut offsets = rdkafka::TopicPartitionList::new();
            offsets.add_partition_offset(queue, 0, rdkafka::Offset::Offset(i64::try_from(keep_from)?))?;
            let result = admin.delete_records(&offsets, &AdminOptions::new()).await?;
            for element in result.elements() {
                element.error()?;
            }
        }
        Kind::Nats => {
            // A message limit, as retention does it. (A purge would move the consumer's ack
            // floor along: the server treats it as a deliberate removal, not a loss.)
            let js = jetstream::new(async_nats::connect(format!("nats://{}", brokers.nats.address())).await?);
            let mut stream = js.get_stream(queue).await?;
            let info = stream.info().await?;
            let mut config = info.config.clone();
            config.max_messages = i64::try_from(info.state.last_sequence - keep_from)?;
            js.update_stream(config).await?;
        }
        other => anyhow::bail!("{other:?} has no positions to truncate"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Through the mTLS gateway: cloud-a's worker reaches cloud-b's brokers only through cloud-b's
// gateway, with certificates from the OMS PKI.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_through_the_gateway_into_nats_survives_kill_9_a_gateway_restart_and_a_cut_link() -> anyhow::Result<()> {
    const COUNT: usize = 6000;
    let brokers = Brokers::shared(false)?;
    let certs = Certs::new("gw-in")?;
    let (server, client) = gateway_and_bridge_certs(&certs, "k2n")?;
    let mut gateway = GatewayProcess::start("gw-in", &brokers, &server)?;
    let proxy = oms_e2e::FaultProxy::start(&format!("127.0.0.1:{}", gateway.port))?;
    brokers.create_queue(Kind::Kafka, "gw-k2n-in").await?;
    brokers.create_queue(Kind::Nats, "gw-k2n-out").await?;
    brokers.produce(Kind::Kafka, "gw-k2n-in", 0, COUNT).await?;
    let js = jetstream::new(async_nats::connect(format!("nats://{}", brokers.nats.address())).await?);
    // The worker dials the gateway through the fault proxy, by the name on its certificate.
    let config = |admin| {
        format!(
            "bridge: {{name: k2n, namespace: acme}}\nsource: {{driver: kafka, servers: ['{}'], queue: gw-k2n-in}}\n\
             target: {}\ninFlight: 64\nadmin: {{listen: '{admin}'}}\n",
            brokers.kafka.address(),
            gateway_end("localhost", proxy.listen, "acme/edge-nats", "gw-k2n-out", &client)
        )
    };
    let until_stored = |share: usize| {
        let js = js.clone();
        async move {
            let started = Instant::now();
            while stored(&js, "gw-k2n-out").await? < (share * COUNT / 4) as u64
                && started.elapsed() < Duration::from_mins(2)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::Ok(stored(&js, "gw-k2n-out").await?)
        }
    };
    let worker = Worker::start_with("gw-k2n", &config(oms_e2e::admin_address()?))?;
    let at_kill = until_stored(1).await?;
    worker.kill()?;
    let admin = oms_e2e::admin_address()?;
    let _worker = Worker::start_with("gw-k2n", &config(admin))?;
    let at_restart = until_stored(2).await?;
    gateway.restart()?;
    let at_cut = until_stored(3).await?;
    proxy.set_enabled(false)?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after_cut = stored(&js, "gw-k2n-out").await?;
    proxy.set_enabled(true)?;
    let seen = brokers.consume(Kind::Nats, "gw-k2n-out", COUNT, Duration::from_mins(2)).await?;
    let (lost, duplicated) = lost_and_duplicated(&seen, COUNT);
    println!(
        "kafka -> gateway -> nats: sent {COUNT}; stored {at_kill} at kill -9, {at_restart} at gateway restart, {at_cut}..{after_cut} over a 30 s cut; \
         received {}, lost {lost}, duplicated {duplicated}; gateway dropped {} repeats, worker reconnects {}",
        seen.len(),
        gateway.metric("oms_gateway_messages_deduplicated_total", None),
        failed_with(admin, "link"),
    );
    assert!(at_kill < COUNT as u64 && after_cut < COUNT as u64, "every fault hit mid-stream");
    assert_eq!(lost, 0, "messages lost through the gateway");
    assert_eq!(duplicated, 0, "the gateway's window and JetStream drop the resends");
    // JetStream behind the gateway takes fast batches, so the worker keeps no lanes toward it: key
    // order through the faults above is the gateway's and its broker's.
    assert_eq!(oms_e2e::metric(admin, "oms_bridge_ordering_lanes", None), 0, "the gateway said its broker keeps order");
    check_round_trip(&seen, COUNT, "kafka -> gateway -> nats", true);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_through_the_gateway_into_kafka_survives_kill_9_and_a_gateway_restart() -> anyhow::Result<()> {
    const COUNT: usize = 6000;
    let brokers = Brokers::shared(false)?;
    let certs = Certs::new("gw-out")?;
    let (server, client) = gateway_and_bridge_certs(&certs, "n2k")?;
    let mut gateway = GatewayProcess::start("gw-out", &brokers, &server)?;
    brokers.create_queue(Kind::Nats, "gw-n2k-in").await?;
    brokers.create_queue(Kind::Kafka, "gw-n2k-out").await?;
    brokers.produce(Kind::Nats, "gw-n2k-in", 0, COUNT).await?;
    let config = |admin| {
        format!(
            "bridge: {{name: n2k, namespace: acme}}\nsource: {}\ntarget: {{driver: kafka, servers: ['{}'], queue: gw-n2k-out}}\n\
             inFlight: 64\nadmin: {{listen: '{admin}'}}\n",
            gateway_end("localhost", gateway.port, "acme/edge-nats", "gw-n2k-in", &client),
            brokers.kafka.address()
        )
    };
    let first = oms_e2e::admin_address()?;
    let worker = Worker::start_with("gw-n2k", &config(first))?;
    let at_kill =
        oms_e2e::wait_metric(first, "oms_bridge_messages_sent_total", (COUNT / 3) as u64, Duration::from_mins(2)).await;
    worker.kill()?;
    let admin = oms_e2e::admin_address()?;
    let _worker = Worker::start_with("gw-n2k", &config(admin))?;
    let at_restart =
        oms_e2e::wait_metric(admin, "oms_bridge_messages_sent_total", (COUNT / 3) as u64, Duration::from_mins(2)).await;
    gateway.restart()?;
    let seen = brokers.consume(Kind::Kafka, "gw-n2k-out", COUNT, Duration::from_mins(2)).await?;
    let (lost, duplicated) = lost_and_duplicated(&seen, COUNT);
    println!(
        "nats -> gateway -> kafka: sent {COUNT}; kill -9 of the worker after {at_kill}, gateway restart after the next worker sent {at_restart}; received {}, lost {lost}, duplicated {duplicated} (Kafka keeps repeats), worker reconnects {}",
        seen.len(),
        failed_with(admin, "link"),
    );
    assert!(at_kill < COUNT as u64, "the kill hit mid-stream");
    assert_eq!(lost, 0, "messages lost through the gateway");
    Ok(())
}

/// One attempt to write a message through the gateway: true only if the gateway stored it.
/// The NATS client holds a publish while 5,000 of its acks are outstanding (async-nats's default);
/// a window larger than that once waited on itself for good at 5,000 messages. Acks delayed by a
/// second through the fault proxy make every window fill, direct and behind the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_above_5000_into_nats_fills_and_drains_direct_and_through_the_gateway() -> anyhow::Result<()> {
    const COUNT: usize = 12_000;
    const WINDOW: usize = 8000;
    let brokers = Brokers::shared(false)?;
    let slow_acks = oms_e2e::FaultProxy::start(&brokers.nats.address())?;
    slow_acks.add_latency(1000)?;
    let certs = Certs::new("gw-window")?;
    let (server, client) = gateway_and_bridge_certs(&certs, "wide")?;
    let gateway = GatewayProcess::start_reaching_nats_at(
        "gw-window",
        &brokers,
        &server,
        &format!("127.0.0.1:{}", slow_acks.listen),
    )?;
    let mut routes = Vec::new();
    for (route, target) in [
        ("direct", format!("{{driver: nats, servers: ['127.0.0.1:{}'], queue: wide-direct-out}}", slow_acks.listen)),
        ("gateway", gateway_end("localhost", gateway.port, "acme/edge-nats", "wide-gateway-out", &client)),
    ] {
        let (input, output) = (format!("wide-{route}-in"), format!("wide-{route}-out"));
        brokers.create_queue(Kind::Kafka, &input).await?;
        brokers.create_queue(Kind::Nats, &output).await?;
        brokers.produce(Kind::Kafka, &input, 0, COUNT).await?;
        // Keyed messages in order lanes would hold one per key in flight; this fills the window.
        let config = format!(
            "bridge: {{name: wide, namespace: acme}}\nsource: {{driver: kafka, servers: ['{}'], queue: {input}}}\n\
             target: {target}\ninFlight: {WINDOW}\nordering: None\nadmin: {{listen: '{}'}}\n",
            brokers.kafka.address(),
            oms_e2e::admin_address()?,
        );
        routes.push((route, output, Worker::start_with(&format!("wide-{route}"), &config)?));
    }
    for (route, output, _worker) in &routes {
        let seen = brokers.consume(Kind::Nats, output, COUNT, Duration::from_mins(2)).await?;
        let (lost, duplicated) = lost_and_duplicated(&seen, COUNT);
        println!(
            "kafka -> {route} -> nats, window {WINDOW}, acks 1 s late: sent {COUNT}, lost {lost}, duplicated {duplicated}"
        );
        assert_eq!(lost, 0, "{route}: a window above the client's 5,000 pending acks stalled");
    }
    Ok(())
}

/// HTTP/2 closes a connection whose reader holds too many small frames unread (h2's
/// `too_many_data_frames`); a frame per message and per ack did that every few seconds on a long
/// link. Small messages across a 40 ms link with a wide window flow without a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_across_a_40_ms_link_to_the_gateway_flow_without_a_reconnect() -> anyhow::Result<()> {
    const COUNT: usize = 30_000;
    let brokers = Brokers::shared(false)?;
    let certs = Certs::new("gw-long")?;
    let (server, client) = gateway_and_bridge_certs(&certs, "long")?;
    let gateway = GatewayProcess::start("gw-long", &brokers, &server)?;
    let link = oms_e2e::FaultProxy::start(&format!("127.0.0.1:{}", gateway.port))?;
    link.add_round_trip(40)?;
    brokers.create_queue(Kind::Kafka, "long-in").await?;
    brokers.create_queue(Kind::Nats, "long-out").await?;
    brokers.produce(Kind::Kafka, "long-in", 0, COUNT).await?;
    let admin = oms_e2e::admin_address()?;
    let config = format!(
        "bridge: {{name: long, namespace: acme}}\nsource: {{driver: kafka, servers: ['{}'], queue: long-in}}\n\
         target: {}\ninFlight: 8000\nordering: None\nadmin: {{listen: '{admin}'}}\n",
        brokers.kafka.address(),
        gateway_end("localhost", link.listen, "acme/edge-nats", "long-out", &client),
    );
    let _worker = Worker::start_with("long", &config)?;
    let seen = brokers.consume(Kind::Nats, "long-out", COUNT, Duration::from_mins(2)).await?;
    let (lost, duplicated) = lost_and_duplicated(&seen, COUNT);
    let reconnects = failed_with(admin, "link");
    println!(
        "kafka -> 40 ms link -> gateway -> nats, window 8000: sent {COUNT}, lost {lost}, duplicated {duplicated}, worker reconnects {reconnects}"
    );
    assert_eq!(lost, 0, "messages lost across the long link");
    assert_eq!(reconnects, 0, "the stream broke (the worker's log says why, e.g. too_many_data_frames)");
    Ok(())
}

async fn publish_attempt(host: &str, port: u16, access_point: &str, tls: &TlsPaths) -> bool {
    oms_e2e::gateway_publish_attempt(&format!("{host}:{port}"), access_point, "gw-sec", tls).await
}

/// One attempt to read through the gateway: true only if the gateway opened the stream.
async fn consume_attempt(port: u16, access_point: &str, tls: &TlsPaths) -> bool {
    oms_e2e::gateway_consume_attempt(&format!("localhost:{port}"), access_point, "gw-sec", tls).await
}

/// A gRPC call over plain TCP, no TLS at all.
async fn plaintext_attempt(port: u16) -> bool {
    use oms_bridge::gateway::proto;
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")) else { return false };
    let Ok(Ok(channel)) = tokio::time::timeout(Duration::from_secs(5), channel.connect()).await else { return false };
    let open = proto::PublishFrame {
        frame: Some(proto::publish_frame::Frame::Open(proto::QueueRef {
            access_point: "acme/edge-nats".into(),
            queue: "gw-sec".into(),
        })),
        window: 0,
    };
    let mut client = proto::gateway_client::GatewayClient::new(channel);
    let call = client.publish(tokio_stream::iter([open]));
    matches!(tokio::time::timeout(Duration::from_secs(5), call).await, Ok(Ok(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_admits_only_trusted_unexpired_certificates_of_the_queues_tenant() -> anyhow::Result<()> {
    const ATTEMPTS: usize = 3;
    let brokers = Brokers::shared(false)?;
    brokers.create_queue(Kind::Nats, "gw-sec").await?;
    let certs = Certs::new("gw-sec")?;
    let (server, acme) = gateway_and_bridge_certs(&certs, "acme-probe")?;
    let gateway = GatewayProcess::start("gw-sec", &brokers, &server)?;
    let port = gateway.port;
    let stranger = Certs::new("gw-sec-stranger")?;
    let unknown_ca =
        stranger.issue("unknown", "spiffe://cloud-a.oms/ns/acme/bridge/unknown", &[], Certs::now(), HOUR)?;
    // The stranger's leaf, trusting our CA: only the client certificate is foreign.
    let unknown_ca = TlsPaths { ca: certs.dir.join("ca.crt"), ..unknown_ca };
    let expired = certs.issue(
        "expired",
        "spiffe://cloud-a.oms/ns/acme/bridge/old",
        &[],
        Certs::now() - time::Duration::hours(3),
        HOUR,
    )?;
    let globex = certs.issue("globex", "spiffe://cloud-a.oms/ns/globex/bridge/probe", &[], Certs::now(), HOUR)?;
    let untrusted_domain = certs.issue("evil", "spiffe://evil.oms/ns/acme/bridge/probe", &[], Certs::now(), HOUR)?;

    let mut report = Vec::new();
    for (case, attempt) in [
        ("plaintext client", 0),
        ("client certificate from an unknown CA", 1),
        ("expired client certificate", 2),
        ("tenant globex writing acme's queue", 3),
        ("tenant globex reading acme's queue", 4),
        ("bridge of an untrusted trust domain", 5),
        ("server certificate not matching the name dialled (client side)", 6),
    ] {
        let mut successes = 0;
        for _ in 0..ATTEMPTS {
            let admitted = match attempt {
                0 => plaintext_attempt(port).await,
                1 => publish_attempt("localhost", port, "acme/edge-nats", &unknown_ca).await,
                2 => publish_attempt("localhost", port, "acme/edge-nats", &expired).await,
                3 => publish_attempt("localhost", port, "acme/edge-nats", &globex).await,
                4 => consume_attempt(port, "acme/edge-nats", &globex).await,
                5 => publish_attempt("localhost", port, "acme/edge-nats", &untrusted_domain).await,
                // The gateway's certificate names localhost; dialling 127.0.0.1 must be refused.
                _ => publish_attempt("127.0.0.1", port, "acme/edge-nats", &acme).await,
            };
            successes += usize::from(admitted);
        }
        println!("security: {case}: {ATTEMPTS} attempts, {successes} successes");
        report.push((case, successes));
    }
    // The same calls with the right identity do succeed, so the refusals above mean something.
    let own_publish = publish_attempt("localhost", port, "acme/edge-nats", &acme).await;
    let own_consume = consume_attempt(port, "acme/edge-nats", &acme).await;
    let handshakes = gateway.metric("oms_gateway_tls_handshake_failures_total", None);
    let denied = gateway.metric("oms_gateway_denied_total", Some("publish"))
        + gateway.metric("oms_gateway_denied_total", Some("consume"));
    println!(
        "security: tenant acme's own publish {own_publish}, consume {own_consume}; gateway counted {handshakes} refused handshakes, {denied} denials"
    );
    for (case, successes) in report {
        assert_eq!(successes, 0, "{case} got through");
    }
    assert!(own_publish && own_consume, "the right identity is admitted");
    assert!(handshakes >= (3 * ATTEMPTS) as u64, "refused handshakes are counted");
    assert_eq!(denied, (3 * ATTEMPTS) as u64, "each denial is counted once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_both_certificates_under_load_loses_nothing_and_keeps_the_stream() -> anyhow::Result<()> {
    // Steady load: a batch every 100 ms for about 35 s, across the renewal and the expiry.
    const BATCH: usize = 50;
    const BATCHES: usize = 350;
    const COUNT: usize = BATCH * BATCHES;
    // Short enough to expire during the test, long enough to outlast the first part of the stream.
    const FIRST_LIFETIME: Duration = Duration::from_secs(20);
    let brokers = Brokers::shared(false)?;
    let certs = Certs::new("gw-rot")?;
    let issued_at = time::OffsetDateTime::now_utc();
    let server = certs.issue(
        "gateway",
        "spiffe://cloud-b.oms/ns/acme/gateway/edge",
        &["localhost"],
        issued_at,
        FIRST_LIFETIME,
    )?;
    let client = certs.issue("rot", "spiffe://cloud-a.oms/ns/acme/bridge/rot", &[], issued_at, FIRST_LIFETIME)?;
    let mut gateway = GatewayProcess::start("gw-rot", &brokers, &server)?;
    brokers.create_queue(Kind::Kafka, "gw-rot-in").await?;
    brokers.create_queue(Kind::Nats, "gw-rot-out").await?;
    let admin = oms_e2e::admin_address()?;
    let _worker = Worker::start_with(
        "gw-rot",
        &format!(
            "bridge: {{name: rot, namespace: acme}}\nsource: {{driver: kafka, servers: ['{}'], queue: gw-rot-in}}\n\
             target: {}\ninFlight: 16\nadmin: {{listen: '{admin}'}}\n",
            brokers.kafka.address(),
            gateway_end("localhost", gateway.port, "acme/edge-nats", "gw-rot-out", &client)
        ),
    )?;
    // One producer for the whole run (a new one per batch would spend the time on connecting).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers.kafka.address())
        .set("enable.idempotence", "true")
        .create()?;
    let producing = async {
        for batch in 0..BATCHES {
            let mut deliveries = Vec::with_capacity(BATCH);
            for i in batch * BATCH..(batch + 1) * BATCH {
                let (key, payload) = (format!("k{}", i % KEYS), format!("msg-{i}"));
                let record = FutureRecord::to("gw-rot-in").key(&key).payload(&payload);
                deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
            }
            for delivery in deliveries {
                delivery.await?.map_err(|(e, _)| e)?;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(())
    };
    let rotating = async {
        let before = oms_e2e::wait_metric(admin, "oms_bridge_messages_sent_total", 500, Duration::from_mins(1)).await;
        // Renew both certificates in place, as the operator does at two thirds of their life.
        certs.issue("gateway", "spiffe://cloud-b.oms/ns/acme/gateway/edge", &["localhost"], Certs::now(), HOUR)?;
        certs.issue("rot", "spiffe://cloud-a.oms/ns/acme/bridge/rot", &[], Certs::now(), HOUR)?;
        // Wait out the first certificates: from then on only the renewed ones can be used.
        let expiry = issued_at + FIRST_LIFETIME + time::Duration::seconds(1);
        while time::OffsetDateTime::now_utc() < expiry {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let at_expiry = (oms_e2e::metric(admin, "oms_bridge_messages_sent_total", None), failed_with(admin, "link"));
        // A fresh handshake now needs the renewed certificates on both sides: force one.
        gateway.restart()?;
        anyhow::Ok((before, at_expiry))
    };
    let (all_produced, rotated) = tokio::join!(producing, rotating);
    all_produced?;
    let (before, (sent_at_expiry, reconnects_at_expiry)) = rotated?;
    let seen = brokers.consume(Kind::Nats, "gw-rot-out", COUNT, Duration::from_mins(2)).await?;
    let (lost, duplicated) = lost_and_duplicated(&seen, COUNT);
    let reconnects = failed_with(admin, "link");
    println!(
        "rotation: produced {COUNT} over ~35 s; {before} sent before renewal, {sent_at_expiry} when the first certificates expired, \
         with {reconnects_at_expiry} reconnects; after a gateway restart forced new handshakes on the renewed certificates: \
         received {}, lost {lost}, duplicated {duplicated}, reconnects {reconnects}",
        seen.len()
    );
    assert!(sent_at_expiry < COUNT as u64, "the rotation happened under load");
    assert_eq!(reconnects_at_expiry, 0, "renewal dropped no stream");
    assert!(reconnects >= 1, "the gateway restart made the worker reconnect, on its renewed certificate");
    assert_eq!(lost, 0, "messages lost across the rotation");
    assert_eq!(duplicated, 0, "JetStream drops the resends");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Message identities: a message that arrives without an id of its own must never get the id of an
// earlier, different message, or a target that deduplicates drops it while the source is acked.

/// Messages per batch in the identity test.
const ID_BATCH: usize = 100;

/// Where an identity bridge writes: JetStream (`Nats-Msg-Id`) or the gateway's window (into Kafka,
/// which keeps repeats, so only the gateway could drop a message).
#[derive(Clone, Copy, Debug)]
enum DedupTarget {
    JetStream,
    Gateway,
}

/// One bridge of the identity test and its worker, started and stopped as the test goes.
struct IdentityBridge {
    name: String,
    target: DedupTarget,
    config: String,
    admin: std::net::SocketAddr,
}

impl IdentityBridge {
    /// The source queue, the target queue and the config of a bridge from `source` into `target`.
    async fn set_up(
        brokers: &Brokers,
        gateway: (u16, &TlsPaths),
        source: Kind,
        target: DedupTarget,
    ) -> anyhow::Result<Self> {
        let name = format!("ids-{}-to-{target:?}", source.name()).to_lowercase();
        let (from, to) = (format!("{name}-in"), format!("{name}-out"));
        brokers.create_queue(source, &from).await?;
        if source == Kind::Mqtt {
            // The worker's persistent session (oms-bridge-<namespace>-<bridge>) queues from now on.
            brokers.mqtt_session(&format!("oms-bridge-acme-{name}"), &from).await?;
        }
        let target_end = match target {
            DedupTarget::JetStream => {
                brokers.create_queue(Kind::Nats, &to).await?;
                format!(
                    "{{driver: nats, servers: ['{}'], queue: {to}, accessPoint: acme/ids-out}}",
                    brokers.nats.address()
                )
            }
            DedupTarget::Gateway => {
                brokers.create_queue(Kind::Kafka, &to).await?;
                gateway_end("localhost", gateway.0, "acme/edge-kafka", &to, gateway.1)
            }
        };
        let admin = oms_e2e::admin_address()?;
        // The source's access point is named, as the operator always does: ids carry it.
        let config = format!(
            "bridge: {{name: {name}, namespace: acme}}\n\
             source: {{driver: {}, servers: ['{}'], queue: {from}, accessPoint: acme/ids-in}}\n\
             target: {target_end}\ninFlight: 64\nadmin: {{listen: '{admin}'}}\n",
            source.name(),
            brokers.broker(source).address(),
        );
        Ok(Self { name, target, config, admin })
    }

    fn source_queue(&self) -> String {
        format!("{}-in", self.name)
    }

    /// Starts the worker and waits until both its ends are connected.
    fn start(&self) -> anyhow::Result<Worker> {
        let worker = Worker::start_with(&self.name, &self.config)?;
        // Two minutes: after the source broker's restart, on two cores that every tier shares.
        oms_e2e::poll(&format!("{} is connected", self.name), Duration::from_mins(2), || {
            Ok(oms_e2e::http_get(self.admin, "/readyz").ok().filter(|(code, _)| *code == 200).map(|_| ()))
        })?;
        Ok(worker)
    }

    /// Every message on the target, repeats included, once `expected` distinct ones arrived or a
    /// minute passed.
    async fn received(&self, brokers: &Brokers, expected: usize) -> anyhow::Result<Vec<Seen>> {
        let kind = match self.target {
            DedupTarget::JetStream => Kind::Nats,
            DedupTarget::Gateway => Kind::Kafka,
        };
        brokers.consume(kind, &format!("{}-out", self.name), expected, Duration::from_mins(1)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_without_ids_survive_worker_and_broker_restarts_into_deduplicating_targets() -> anyhow::Result<()> {
    let brokers = Brokers::up("bridge-ids", true)?;
    let certs = Certs::new("bridge-ids")?;
    let (server, client) = gateway_and_bridge_certs(&certs, "ids")?;
    let gateway = GatewayProcess::start("bridge-ids", &brokers, &server)?;
    let (mut failures, mut gateway_dropped) = (Vec::new(), 0);
    for source in [Kind::Kafka, Kind::Nats, Kind::Amqp, Kind::Mqtt] {
        let mut bridges = Vec::new();
        for target in [DedupTarget::JetStream, DedupTarget::Gateway] {
            bridges.push(IdentityBridge::set_up(&brokers, (gateway.port, &client), source, target).await?);
        }
        // First batch through, then SIGTERM; a new worker is killed with -9; the source broker
        // restarts; a third worker carries the second batch.
        for bridge in &bridges {
            brokers.produce(source, &bridge.source_queue(), 0, ID_BATCH).await?;
        }
        let workers = bridges.iter().map(IdentityBridge::start).collect::<anyhow::Result<Vec<_>>>()?;
        for bridge in &bridges {
            let sent = oms_e2e::wait_metric(
                bridge.admin,
                "oms_bridge_messages_sent_total",
                ID_BATCH as u64,
                Duration::from_mins(1),
            )
            .await;
            anyhow::ensure!(sent == ID_BATCH as u64, "{}: {sent} of the first {ID_BATCH} sent", bridge.name);
        }
        for worker in workers {
            worker.stop()?;
        }
        for worker in bridges.iter().map(IdentityBridge::start).collect::<anyhow::Result<Vec<_>>>()? {
            worker.kill()?;
        }
        brokers.broker(source).restart()?;
        let _workers = bridges.iter().map(IdentityBridge::start).collect::<anyhow::Result<Vec<_>>>()?;
        for bridge in &bridges {
            brokers.produce(source, &bridge.source_queue(), ID_BATCH, ID_BATCH).await?;
        }
        let mut received = Vec::new();
        for bridge in &bridges {
            received.push(bridge.received(&brokers, 2 * ID_BATCH).await?);
        }
        let dropped_by_gateway = gateway.metric("oms_gateway_messages_deduplicated_total", None) - gateway_dropped;
        gateway_dropped += dropped_by_gateway;
        for (bridge, seen) in bridges.iter().zip(received) {
            let (lost, duplicated) = lost_and_duplicated(&seen, 2 * ID_BATCH);
            println!(
                "{} -> {:?}: published {} without ids around SIGTERM, kill -9 and a source broker restart; \
                 the target holds {} distinct, lost {lost}, duplicated {duplicated}; the target dropped {} as repeats",
                source.name(),
                bridge.target,
                2 * ID_BATCH,
                seen.len() - duplicated,
                match bridge.target {
                    DedupTarget::JetStream =>
                        oms_e2e::metric(bridge.admin, "oms_bridge_messages_deduplicated_total", None),
                    DedupTarget::Gateway => dropped_by_gateway,
                },
            );
            if lost > 0 {
                failures.push(format!("{}: lost {lost}", bridge.name));
            }
        }
    }
    assert!(failures.is_empty(), "new messages were taken for earlier ones: {failures:?}");
    Ok(())
}

/// Waits until `want` of the workers at `admins` take messages (`oms_bridge_worker_active`) and
/// every one answers with its link up (a worker that does not answer reads as 0, not standby);
/// returns which ones.
async fn active_workers(
    admins: &[std::net::SocketAddr],
    want: usize,
    deadline: Duration,
) -> anyhow::Result<Vec<usize>> {
    let started = Instant::now();
    loop {
        let up = admins.iter().all(|&admin| oms_e2e::metric(admin, "oms_bridge_link_up", None) == 1);
        let active: Vec<usize> =
            (0..admins.len()).filter(|&i| oms_e2e::metric(admins[i], "oms_bridge_worker_active", None) == 1).collect();
        if up && active.len() == want {
            return Ok(active);
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "{} of {admins:?} active after {deadline:?} (links up: {up}), not {want}",
            active.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three workers of one Bridge (ordering PerKey): on an AMQP queue one holds the exclusive consumer
/// and two stand by; on a JetStream consumer one holds the pin and two stand by; a Kafka group
/// gives each a partition. The active worker is killed mid-stream: a standby takes over (RabbitMQ
/// puts the killed one's unacknowledged messages back at the head; the new JetStream holder resets
/// the consumer to its ack floor), the group rebalances, and the target holds every message with
/// each key's order kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_nothing_and_keep_key_order_when_the_active_one_is_killed() -> anyhow::Result<()> {
    const COUNT: usize = 20_000;
    // JetStream pins a holder at its first delivery: a few messages go before the workers are
    // counted, the rest after.
    const FIRST: usize = 100;
    let brokers = Brokers::shared(true)?;
    for (source, target, expected_active) in
        [(Kind::Amqp, Kind::Kafka, 1), (Kind::Nats, Kind::Kafka, 1), (Kind::Kafka, Kind::Nats, 3)]
    {
        let pair = format!("replicas-{}", source.name());
        let (from, to) = (format!("{pair}-in"), format!("{pair}-out"));
        if source == Kind::Kafka {
            brokers.create_topic(&from, 3).await?;
        } else {
            brokers.create_queue(source, &from).await?;
        }
        brokers.create_queue(target, &to).await?;
        let admins = [oms_e2e::admin_address()?, oms_e2e::admin_address()?, oms_e2e::admin_address()?];
        let mut workers = Vec::new();
        for (i, &admin) in admins.iter().enumerate() {
            let config = brokers.config(&pair, (source, &from), (target, &to), admin, "");
            workers.push(Some(Worker::start_with(&format!("{pair}-{i}"), &config)?));
        }
        brokers.produce(source, &from, 0, FIRST).await?;
        let active = active_workers(&admins, expected_active, Duration::from_mins(1)).await?;
        let victim = active[0];
        let goal = oms_e2e::metric(admins[victim], "oms_bridge_messages_sent_total", None) + 1000;
        // The kill comes while the rest is still being produced: a worker that keeps pace with
        // the producer would otherwise have forwarded it all before the kill.
        let victim_worker = workers[victim].take().expect("running");
        let (produced, killed) = tokio::join!(brokers.produce(source, &from, FIRST, COUNT - FIRST), async {
            let sent =
                oms_e2e::wait_metric(admins[victim], "oms_bridge_messages_sent_total", goal, Duration::from_mins(1))
                    .await;
            victim_worker.kill().map(|()| sent)
        });
        produced?;
        let sent = killed?;
        anyhow::ensure!(sent < COUNT as u64, "{pair}: the stream was over before the kill (sent {sent})");
        let survivors: Vec<_> = (0..3).filter(|&i| i != victim).map(|i| admins[i]).collect();
        let took_over = Instant::now();
        // A standby takes the AMQP queue or the pin; the group gives the killed member's partition
        // to another.
        let after = active_workers(&survivors, expected_active.min(2), Duration::from_mins(1)).await?;
        let takeover = took_over.elapsed();
        let seen = brokers.consume(target, &to, COUNT, Duration::from_mins(2)).await?;
        let verdict = verdict(&seen, COUNT);
        println!(
            "{pair} -> {}: 3 workers, {expected_active} active; killed the active one after it sent {sent}; \
             {} active of the 2 left after {takeover:?}; {verdict:?}",
            target.name(),
            after.len()
        );
        assert_eq!(verdict.lost, 0, "{pair}: messages lost when the active worker was killed");
        assert_eq!(verdict.out_of_order, 0, "{pair}: per-key order broken by the takeover");
    }
    Ok(())
}

/// An ordered worker's JetStream consumer acks runs (one ack covers the earlier messages, the
/// pipeline acking in order). Competing workers (ordering None) would ack each other's messages
/// with it, and JetStream cannot change a consumer's ack policy; making it again could lose its
/// position. So when the Bridge's ordering becomes None its workers keep taking turns on it, from
/// its ack floor: nothing before the floor is sent again and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_consumer_that_acks_in_runs_keeps_one_holder_and_its_floor_under_ordering_none() -> anyhow::Result<()> {
    use async_nats::jetstream::consumer::{AckPolicy, PriorityPolicy};
    const FIRST: usize = 2_000;
    const COUNT: usize = 4_000;
    const DURABLE: &str = "oms-bridge-e2e-switch";
    let brokers = Brokers::shared(false)?;
    let (from, to) = ("switch-in", "switch-out");
    brokers.create_queue(Kind::Nats, from).await?;
    brokers.create_queue(Kind::Nats, to).await?;
    let js = jetstream::new(async_nats::connect(format!("nats://{}", brokers.nats.address())).await?);
    brokers.produce(Kind::Nats, from, 0, FIRST).await?;
    let ordered = Worker::start("switch", &brokers, (Kind::Nats, from), (Kind::Nats, to))?;
    let started = Instant::now();
    while stored(&js, to).await? < FIRST as u64 {
        anyhow::ensure!(started.elapsed() < Duration::from_mins(1), "the ordered worker did not forward {FIRST}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ordered.stop()?;
    let before = js.get_stream(from).await?.consumer_info(DURABLE).await?;
    assert_eq!(before.config.ack_policy, AckPolicy::All, "an ordered worker's consumer acks runs");
    assert_eq!(before.ack_floor.stream_sequence, FIRST as u64, "a clean stop sends the acks it held back");

    brokers.produce(Kind::Nats, from, FIRST, COUNT - FIRST).await?;
    let admin = oms_e2e::admin_address()?;
    let config = brokers.config("switch", (Kind::Nats, from), (Kind::Nats, to), admin, "ordering: None\n");
    let competing = Worker::start_with("switch-none", &config)?;
    let seen = brokers.consume(Kind::Nats, to, COUNT, Duration::from_mins(2)).await?;
    let sent =
        oms_e2e::wait_metric(admin, "oms_bridge_messages_sent_total", (COUNT - FIRST) as u64, Duration::from_mins(1))
            .await;
    competing.stop()?;
    let after = js.get_stream(from).await?.consumer_info(DURABLE).await?;
    let verdict = verdict(&seen, COUNT);
    println!(
        "ordering PerKey -> None: ack policy {:?} -> {:?}, ack floor {} -> {}; the worker under ordering None sent {sent}; {verdict:?}",
        before.config.ack_policy,
        after.config.ack_policy,
        before.ack_floor.stream_sequence,
        after.ack_floor.stream_sequence
    );
    assert_eq!(after.config.ack_policy, AckPolicy::All, "the consumer is the one made while order was kept");
    assert_eq!(after.config.priority_policy, PriorityPolicy::PinnedClient, "its workers take turns");
    assert_eq!(verdict.lost, 0, "messages lost across the switch");
    assert_eq!(sent, (COUNT - FIRST) as u64, "the worker went on after the ack floor");
    assert_eq!(after.ack_floor.stream_sequence, COUNT as u64, "every message acknowledged");
    Ok(())
}

/// The holder of a Lease, as the API server has it.
fn lease_holder(cluster: &oms_e2e::Cluster, namespace: &str, lease: &str) -> anyhow::Result<String> {
    let holder = oms_e2e::run_ok(cluster.kubectl().args([
        "-n",
        namespace,
        "get",
        "lease",
        lease,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]))?;
    Ok(holder.trim().to_owned())
}

/// Three workers of a Bridge from an MQTT source (a session belongs to one client) take turns
/// through the Lease the operator made for them, each acting as the ServiceAccount the operator
/// made: one holds the Lease and the session, two stand by. The holder is killed mid-stream; a
/// standby takes the Lease once it lapses and resumes the session: lost 0, order kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_mqtt_workers_take_turns_through_the_lease_the_operator_made() -> anyhow::Result<()> {
    // Mosquitto queues at most 1,000 messages for a session whose client is away: the stream
    // stays under that while no worker reads.
    const COUNT: usize = 1000;
    const BEFORE_KILL: usize = 400;
    let brokers = Brokers::shared(true)?;
    // The workers reach Mosquitto over a slow link, so that messages are in flight at the kill.
    let proxy = oms_e2e::FaultProxy::start(&brokers.broker(Kind::Mqtt).address())?;
    proxy.add_latency(40)?;
    let cluster = oms_e2e::Cluster::up("cloud-a")?;
    cluster.install_crds()?;
    let home = cluster.fresh_namespace("mqtt-turns")?;
    let ns = home.name.as_str();
    let _operator =
        oms_e2e::Operator::start(&cluster, &["--namespace", ns, "--leader-election=false", "--pki-namespace", ns])?;
    cluster.apply(
        ns,
        &format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: sensors}}\n\
             spec: {{driver: mqtt, external: {{servers: ['127.0.0.1:{}']}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: lake}}\n\
             spec: {{driver: kafka, external: {{servers: ['{}']}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: readings}}\n\
             spec: {{accessPointRef: {{name: sensors}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: readings-lake}}\n\
             spec: {{accessPointRef: {{name: lake}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: turns}}\n\
             spec: {{source: {{queueRef: {{name: readings}}}}, target: {{queueRef: {{name: readings-lake}}}}, replicas: 3}}\n",
            proxy.listen,
            brokers.kafka.address()
        ),
    )?;
    let read = |object: &str| -> anyhow::Result<Option<String>> {
        let out = cluster.kubectl().args(["-n", ns, "get", object, "-o", "json", "--ignore-not-found"]).output()?;
        Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()).filter(|json| !json.trim().is_empty()))
    };
    let config_map = oms_e2e::poll("the worker ConfigMap", oms_e2e::DEADLINE, || read("configmap/turns-oms-bridge"))?;
    oms_e2e::poll("the workers' RoleBinding", oms_e2e::DEADLINE, || read("rolebinding/turns-oms-bridge"))?;
    let rendered: serde_json::Value = serde_json::from_str(&config_map)?;
    let yaml = rendered["data"]["worker.yaml"].as_str().unwrap_or_default().to_owned();
    let parsed = oms_bridge_config::parse_worker("rendered", &yaml).map_err(|e| anyhow::anyhow!("{e}\n{yaml}"))?;
    anyhow::ensure!(parsed.lease.as_deref() == Some("turns-oms-bridge"), "no Lease in the config:\n{yaml}");
    let (topic, lake) = (parsed.source.queue, parsed.target.queue);
    // What the Role lets the workers do: that one Lease, and nothing else.
    let account = format!("system:serviceaccount:{ns}:turns-oms-bridge");
    let can = |verb: &str, object: &str| {
        let out = cluster.kubectl().args(["-n", ns, "auth", "can-i", verb, object, "--as", &account]).output()?;
        anyhow::Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
    };
    let allowed = (can("update", "leases/turns-oms-bridge")?, can("update", "leases/other")?, can("get", "secrets")?);
    assert_eq!(allowed, (true, false, false), "update its Lease, another Lease, read Secrets");
    let kubeconfig = cluster.service_account_kubeconfig(ns, "turns-oms-bridge")?;

    brokers.mqtt_session(&format!("oms-bridge-{ns}-turns"), &topic).await?;
    let admins = [oms_e2e::admin_address()?, oms_e2e::admin_address()?, oms_e2e::admin_address()?];
    let mut workers = Vec::new();
    for (i, admin) in admins.iter().enumerate() {
        let host = format!("turns-{i}");
        let env = [("KUBECONFIG", kubeconfig.as_os_str()), ("HOSTNAME", std::ffi::OsStr::new(&host))];
        let config = yaml.replace("0.0.0.0:9090", &admin.to_string());
        workers.push(Some(Worker::start_with_env(&format!("mqtt-turns-{i}"), &config, &env)?));
    }
    let victim = active_workers(&admins, 1, Duration::from_mins(1)).await?[0];
    assert_eq!(
        lease_holder(&cluster, ns, "turns-oms-bridge")?,
        format!("turns-{victim}"),
        "the reader holds the Lease"
    );
    // Part of the stream before the kill, the rest after it: the kill falls mid-stream however
    // fast the holder forwards (all 1,000 at once fit in its window).
    brokers.produce(Kind::Mqtt, &topic, 0, BEFORE_KILL).await?;
    let sent =
        oms_e2e::wait_metric(admins[victim], "oms_bridge_messages_sent_total", 300, Duration::from_mins(1)).await;
    workers[victim].take().expect("running").kill()?;
    let took_over = Instant::now();
    brokers.produce(Kind::Mqtt, &topic, BEFORE_KILL, COUNT - BEFORE_KILL).await?;
    let survivors: Vec<_> = (0..3).filter(|&i| i != victim).map(|i| admins[i]).collect();
    let after = active_workers(&survivors, 1, Duration::from_mins(1)).await?;
    let takeover = took_over.elapsed();
    let holder = lease_holder(&cluster, ns, "turns-oms-bridge")?;
    let seen = brokers.consume(Kind::Kafka, &lake, COUNT, Duration::from_mins(2)).await?;
    let verdict = verdict(&seen, COUNT);
    println!(
        "mqtt -> kafka: 3 workers taking turns through a Lease; killed the holder turns-{victim} after it sent {sent}; \
         {holder} holds the Lease and {} of the 2 left read after {takeover:?}; {verdict:?}",
        after.len()
    );
    assert_ne!(holder, format!("turns-{victim}"), "the Lease passed on");
    assert_eq!(verdict.lost, 0, "messages lost when the holder was killed");
    assert_eq!(verdict.out_of_order, 0, "order broken by the takeover");
    Ok(())
}

/// What a worker whose CA bundle does not sign the broker's certificate did until it had failed
/// to connect twice.
struct Refused {
    failed_connections: u64,
    received: u64,
    link_up: u64,
    /// The log line that says why.
    reason: String,
}

fn refused_by_another_ca(name: &str, config: impl Fn(std::net::SocketAddr) -> String) -> anyhow::Result<Refused> {
    let admin = oms_e2e::admin_address()?;
    let worker = Worker::start_with(name, &config(admin))?;
    let failed_connections = oms_e2e::poll("two refused connections", Duration::from_secs(30), || {
        let failed = oms_e2e::metric(admin, "oms_bridge_messages_failed_total", Some("link"));
        Ok((failed >= 2).then_some(failed))
    })?;
    let received = oms_e2e::metric(admin, "oms_bridge_messages_received_total", None);
    let link_up = oms_e2e::metric(admin, "oms_bridge_link_up", None);
    drop(worker);
    let log = oms_e2e::repo_root().join(format!("e2e/.state/bridges/{name}-{}.log", std::process::id()));
    let reason =
        std::fs::read_to_string(log)?.lines().find(|l| l.contains("reconnecting")).unwrap_or_default().to_owned();
    Ok(Refused { failed_connections, received, link_up, reason })
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Refused { failed_connections, received, link_up, reason } = self;
        write!(f, "{failed_connections} failed connections, {received} received, link up {link_up}; {reason}")
    }
}

/// A plaintext NATS client's publish: true only if the server answered its PING (it takes the
/// message), false if it insists on TLS.
fn plaintext_publish(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    if stream.write_all(b"CONNECT {\"verbose\":false}\r\nPUB tls-out 5\r\nhello\r\nPING\r\n").is_err() {
        return false;
    }
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buffer[..n]);
        if String::from_utf8_lossy(&seen).contains("PONG") {
            return true;
        }
    }
    false
}

/// The worker reaches a NATS server that takes TLS only with the CA bundle its config names, and
/// forwards everything; with another CA it connects to nothing and says why; a plaintext client is
/// refused by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reaches_a_tls_only_nats_with_its_ca_and_nothing_with_another() -> anyhow::Result<()> {
    const COUNT: usize = 5000;
    let brokers = Brokers::shared(false)?;
    let certs = Certs::new("nats-tls")?;
    let nats = TlsBroker::start(&certs, &TlsBrokerSpec::localhost(TlsBrokerKind::Nats))?;
    let ca = certs.dir.join("ca.crt");
    let js = nats.jetstream(&ca, async_nats::ConnectOptions::new()).await?;
    js.create_stream(jetstream::stream::Config {
        name: "tls-out".into(),
        subjects: vec!["tls-out".into()],
        ..Default::default()
    })
    .await?;
    brokers.create_queue(Kind::Kafka, "tls-in").await?;
    brokers.produce(Kind::Kafka, "tls-in", 0, COUNT).await?;
    let config = |admin: std::net::SocketAddr, ca: &std::path::Path| {
        format!(
            "bridge: {{name: tls, namespace: e2e}}\n\
             source: {{driver: kafka, servers: ['{}'], queue: tls-in}}\n\
             target: {{driver: nats, servers: ['localhost:{}'], queue: tls-out, tls: {{caFile: '{}'}}}}\n\
             inFlight: 64\nadmin: {{listen: '{admin}'}}\n",
            brokers.kafka.address(),
            nats.port,
            ca.display()
        )
    };

    // Another CA: the worker reaches nothing, and its log names the certificate it refused.
    let stranger = Certs::new("nats-tls-stranger")?;
    let refused = refused_by_another_ca("nats-tls-stranger", |admin| config(admin, &stranger.dir.join("ca.crt")))?;
    println!("nats tls: worker with another CA: {refused}");
    assert_eq!(refused.link_up, 0, "a server of another CA is never trusted");
    assert!(refused.reason.contains("UnknownIssuer"), "{}", refused.reason);
    assert_eq!(stored(&js, "tls-out").await?, 0);

    let plaintext = (0..3).filter(|_| plaintext_publish(nats.port)).count();
    println!("nats tls: plaintext client: 3 attempts, {plaintext} successes");
    assert_eq!(plaintext, 0, "the server takes TLS only");

    let admin = oms_e2e::admin_address()?;
    let worker = Worker::start_with("tls", &config(admin, &ca))?;
    let started = Instant::now();
    let held = oms_e2e::poll("every message in the TLS-only stream", Duration::from_mins(2), || {
        let stored = oms_e2e::metric(admin, "oms_bridge_messages_sent_total", None);
        Ok((stored >= COUNT as u64).then_some(stored))
    })?;
    worker.stop()?;
    let stored = stored(&js, "tls-out").await?;
    println!(
        "nats tls: kafka -> TLS-only NATS: produced {COUNT}, sent {held}, the stream holds {stored} after {:?}",
        started.elapsed()
    );
    assert_eq!(stored, COUNT as u64, "each message once");
    Ok(())
}

/// A plaintext MQTT CONNECT: true only if the broker answered it with a CONNACK.
fn plaintext_mqtt_connect(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let connect = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'p'];
    if stream.write_all(&connect).is_err() {
        return false;
    }
    let mut first = [0u8; 1];
    matches!(stream.read(&mut first), Ok(1) if first[0] == 0x20)
}

/// The worker reads an MQTT broker that takes TLS only with the CA bundle its config names and
/// forwards everything; with another CA it reads nothing and says why; a plaintext client gets no
/// CONNACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reads_a_tls_only_mosquitto_with_its_ca_and_nothing_with_another() -> anyhow::Result<()> {
    const COUNT: usize = 500;
    let brokers = Brokers::shared(true)?;
    let certs = Certs::new("mqtt-tls")?;
    let mqtt = TlsBroker::start(&certs, &TlsBrokerSpec::localhost(TlsBrokerKind::Mqtt))?;
    let ca = certs.dir.join("ca.crt");
    brokers.create_topic("mqtt-tls-out", 1).await?;
    // The bridge's persistent session, so that the broker keeps what is published from now on.
    let (session, mut events) = mqtt.mqtt_client("oms-bridge-e2e-mqtt-tls", &ca, false)?;
    session.subscribe("mqtt-tls-in", rumqttc::QoS::AtLeastOnce).await?;
    while !matches!(events.poll().await?, rumqttc::Event::Incoming(rumqttc::Incoming::SubAck(_))) {}
    session.disconnect().await?;
    while events.poll().await.is_ok() {}
    let config = |admin: std::net::SocketAddr, ca: &std::path::Path| {
        format!(
            "bridge: {{name: mqtt-tls, namespace: e2e}}\n\
             source: {{driver: mqtt, servers: ['localhost:{}'], queue: mqtt-tls-in, tls: {{caFile: '{}'}}}}\n\
             target: {{driver: kafka, servers: ['{}'], queue: mqtt-tls-out}}\n\
             inFlight: 64\nadmin: {{listen: '{admin}'}}\n",
            mqtt.port,
            ca.display(),
            brokers.kafka.address()
        )
    };

    // Another CA: the worker reads nothing, and its log names the certificate it refused.
    let stranger = Certs::new("mqtt-tls-stranger")?;
    let refused = refused_by_another_ca("mqtt-tls-stranger", |admin| config(admin, &stranger.dir.join("ca.crt")))?;
    println!("mqtt tls: worker with another CA: {refused}");
    assert_eq!(refused.received, 0, "a broker of another CA is never read");
    assert!(refused.reason.contains("UnknownIssuer"), "{}", refused.reason);

    let plaintext = (0..3).filter(|_| plaintext_mqtt_connect(mqtt.port)).count();
    println!("mqtt tls: plaintext client: 3 attempts, {plaintext} successes");
    assert_eq!(plaintext, 0, "the listener takes TLS only");

    let (publisher, mut events) = mqtt.mqtt_client("mqtt-tls-publisher", &ca, true)?;
    let publishing = async {
        for i in 0..COUNT {
            publisher.publish("mqtt-tls-in", rumqttc::QoS::AtLeastOnce, false, format!("msg-{i}")).await?;
        }
        anyhow::Ok(())
    };
    let acknowledged = async {
        let mut acks = 0;
        while acks < COUNT {
            if let rumqttc::Event::Incoming(rumqttc::Incoming::PubAck(_)) = events.poll().await? {
                acks += 1;
            }
        }
        anyhow::Ok(())
    };
    let (sent, confirmed) = tokio::join!(publishing, acknowledged);
    sent?;
    confirmed?;
    let admin = oms_e2e::admin_address()?;
    let worker = Worker::start_with("mqtt-tls", &config(admin, &ca))?;
    let seen = brokers.consume(Kind::Kafka, "mqtt-tls-out", COUNT, Duration::from_mins(2)).await?;
    worker.stop()?;
    let verdict = verdict(&seen, COUNT);
    println!("mqtt tls: TLS-only Mosquitto -> kafka: published {COUNT}; {verdict:?}");
    assert_eq!(verdict.lost, 0, "every message over TLS");
    assert_eq!(verdict.out_of_order, 0, "in the order published (one partition)");
    Ok(())
}

/// A gateway reaches a TLS-only NATS backend with the CA its config names, and one of another CA
/// not at all: a bridge's write through it lands only where the backend's certificate checks out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_reaches_a_tls_only_nats_backend_with_its_ca_and_nothing_with_another() -> anyhow::Result<()> {
    let certs = Certs::new("gw-tls-backend")?;
    let nats = TlsBroker::start(&certs, &TlsBrokerSpec::localhost(TlsBrokerKind::Nats))?;
    let ca = certs.dir.join("ca.crt");
    let js = nats.jetstream(&ca, async_nats::ConnectOptions::new()).await?;
    js.create_stream(jetstream::stream::Config {
        name: "gw-tls".into(),
        subjects: vec!["gw-tls".into()],
        ..Default::default()
    })
    .await?;
    let stranger = Certs::new("gw-tls-backend-stranger")?;
    let (server, bridge) = gateway_and_bridge_certs(&certs, "probe")?;
    let (port, admin) = (oms_e2e::free_server_port(), oms_e2e::admin_address()?);
    let backend = |access_point: &str, ca: &std::path::Path| {
        format!(
            "- {{accessPoint: {access_point}, driver: nats, servers: ['localhost:{}'], tls: {{caFile: '{}'}}}}\n",
            nats.port,
            ca.display()
        )
    };
    let yaml = format!(
        "listen: '127.0.0.1:{port}'\ntrustDomain: cloud-b.oms\npeerTrustDomains: [cloud-a.oms]\ntls: {}\nbackends:\n{}{}\
         admin: {{listen: '{admin}'}}\n",
        server.yaml(),
        backend("acme/tls-nats", &ca),
        backend("acme/stranger-nats", &stranger.dir.join("ca.crt")),
    );
    let config = oms_e2e::repo_root().join(format!("e2e/.state/bridges/gw-tls-backend-{}.yaml", std::process::id()));
    std::fs::create_dir_all(config.parent().unwrap_or(&oms_e2e::repo_root()))?;
    std::fs::write(&config, yaml)?;
    let gateway = GatewayProcess { child: GatewayProcess::spawn(&config)?, config, port, admin };
    gateway.wait_listening()?;
    let server = format!("localhost:{port}");
    let mut through_stranger = 0;
    for _ in 0..3 {
        through_stranger +=
            usize::from(oms_e2e::gateway_publish_attempt(&server, "acme/stranger-nats", "gw-tls", &bridge).await);
    }
    let through_ca = oms_e2e::gateway_publish_attempt(&server, "acme/tls-nats", "gw-tls", &bridge).await;
    let held = stored(&js, "gw-tls").await?;
    println!(
        "gateway tls backend: with its CA stored {through_ca}; with another CA 3 attempts, {through_stranger} stored; the stream holds {held}"
    );
    assert!(through_ca, "the backend with the right CA takes the write");
    assert_eq!(through_stranger, 0, "a backend of another CA is never trusted");
    assert_eq!(held, 1);
    drop(gateway);
    Ok(())
}
