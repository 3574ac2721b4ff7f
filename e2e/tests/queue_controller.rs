//! The Queue controller against real brokers (Kafka, NATS, RabbitMQ started by the harness)
//! behind external access points, checked on the broker with the brokers' own tools.

use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use oms_e2e::{Broker, DEADLINE, Scenario, condition, poll, repo_root, run, tool};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use serde_json::Value;

/// Operator flags that make drift checks and probes quick enough for tests.
const FAST: [&str; 4] = ["--drift-interval-seconds", "2", "--probe-interval-seconds", "2"];

fn access_point(s: &Scenario, name: &str, driver: &str, broker: &Broker) -> anyhow::Result<()> {
    s.apply(&format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: {name}}}\n\
         spec: {{driver: {driver}, external: {{servers: ['{}']}}}}\n",
        broker.address()
    ))?;
    s.wait_for(&format!("messagingaccesspoint/{name}"), "Reachable", |o| {
        condition(o, "Ready").is_some_and(|c| c["reason"] == "Reachable")
    })?;
    Ok(())
}

fn queue(s: &Scenario, name: &str, spec: &str) -> anyhow::Result<()> {
    s.apply(&format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    ))
}

fn wait_reason(s: &Scenario, name: &str, type_: &str, reason: &'static str) -> anyhow::Result<Value> {
    s.wait_for(&format!("queue/{name}"), reason, move |o| condition(o, type_).is_some_and(|c| c["reason"] == reason))
}

/// Asks `queue` (on a broker whose queues have one partition) for 3: the status keeps what the
/// broker has, Unsupported names the field, and Drifted never claims a correction.
fn asks_for_three_partitions(s: &Scenario, queue: &str, driver: &str) -> anyhow::Result<()> {
    s.kubectl(&["patch", &format!("queue/{queue}"), "--type=merge", "-p", r#"{"spec":{"partitions":3}}"#])?;
    let widened = s.wait_for(&format!("queue/{queue}"), "the edit reconciled", |o| {
        o["status"]["observedGeneration"] == o["metadata"]["generation"] && condition(o, "Drifted").is_some()
    })?;
    let drifted = condition(&widened, "Drifted").map(|c| c["reason"].clone()).unwrap_or_default();
    println!(
        "queue controller: {driver} partitions 3: status.partitions {}, Drifted {drifted}, Unsupported {}",
        widened["status"]["partitions"],
        message_of(&widened, "Unsupported")
    );
    assert_eq!(widened["status"]["partitions"], 1, "{driver}: the status says what the broker has");
    assert_eq!(drifted, "InSync", "{driver}: never Corrected");
    assert!(message_of(&widened, "Unsupported").contains("spec.partitions"), "{driver}: and names what it cannot do");
    Ok(())
}

fn message_of(object: &Value, type_: &str) -> String {
    condition(object, type_).and_then(|c| c["message"].as_str()).unwrap_or_default().to_owned()
}

/// Kafka's own topic tool: `--describe` output, or None when the topic does not exist.
fn kafka_describe(broker: &Broker, topic: &str) -> anyhow::Result<Option<String>> {
    let libs = repo_root().join(".bin/kafka-libs/libs/*");
    let output = run(Command::new("java").args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp"]).arg(libs).args([
        "org.apache.kafka.tools.TopicCommand",
        "--bootstrap-server",
        &broker.address(),
        "--describe",
        "--topic",
        topic,
    ]))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    Ok((output.status.success() && stdout.contains(topic)).then_some(stdout))
}

fn nats(broker: &Broker, args: &[&str]) -> anyhow::Result<std::process::Output> {
    run(Command::new(tool("nats"))
        .args(["--server", &format!("nats://{}", broker.address()), "--timeout", "5s"])
        .args(args))
}

/// A small pika program: `exists <queue>`, `publish <queue>`, `count <queue>`, answers on stdout.
fn amqp(broker: &Broker, action: &str, queue: &str) -> anyhow::Result<String> {
    let script = r#"
import sys, pika
port, action, queue = int(sys.argv[1]), sys.argv[2], sys.argv[3]
connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
channel = connection.channel()
if action == "exists":
    try:
        channel.queue_declare(queue, passive=True)
        print("yes")
    except pika.exceptions.ChannelClosedByBroker:
        print("no")
elif action == "publish":
    channel.basic_publish("", queue, b"keep me")
    print("published")
elif action == "count":
    print(channel.queue_declare(queue, passive=True).method.message_count)
connection.close()
"#;
    let python = repo_root().join(".bin/amqp-venv/bin/python");
    let output = run(Command::new(python).args(["-c", script, &broker.port.to_string(), action, queue]))?;
    anyhow::ensure!(output.status.success(), "pika: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
fn kafka_topics_are_created_grown_and_reconfigured_and_unsupported_fields_are_named() -> anyhow::Result<()> {
    let broker = Broker::up("kafka", "q-kafka")?;
    let s = Scenario::start("q-kafka", &FAST)?;
    access_point(&s, "kafka", "kafka", &broker)?;
    queue(
        &s,
        "orders",
        "{accessPointRef: {name: kafka}, partitions: 2, retention: {time: 1d}, messageDefaults: {delay: 30s}}",
    )?;
    let q = wait_reason(&s, "orders", "Ready", "Provisioned")?;
    assert_eq!(q["status"]["brokerName"], "orders");
    assert_eq!(q["status"]["partitions"], 2);
    println!(
        "queue controller: kafka status.retention {} replication {}",
        q["status"]["retention"], q["status"]["replication"]
    );
    assert_eq!(q["status"]["retention"]["time"], "1d", "retention.ms read back from the topic");
    assert_eq!(q["status"]["retention"]["bytes"], "unlimited");
    assert_eq!(q["status"]["replication"], 1, "the replicas the broker reports for a topic on one broker");
    let unsupported = message_of(&q, "Unsupported");
    assert!(unsupported.contains("spec.messageDefaults.delay: kafka has no delayed delivery"), "{unsupported}");
    let described = kafka_describe(&broker, "orders")?.context("topic exists on the broker")?;
    assert!(described.contains("PartitionCount: 2") && described.contains("retention.ms=86400000"), "{described}");

    queue(
        &s,
        "orders",
        "{accessPointRef: {name: kafka}, partitions: 5, retention: {time: 2d}, messageDefaults: {delay: 30s}}",
    )?;
    s.wait_for("queue/orders", "grown, with the retention the broker has", |o| {
        o["status"]["partitions"] == 5 && o["status"]["retention"]["time"] == "2d"
    })?;
    let described = poll("the broker has 5 partitions and 2 days of retention", DEADLINE, || {
        Ok(kafka_describe(&broker, "orders")?
            .filter(|d| d.contains("PartitionCount: 5") && d.contains("retention.ms=172800000")))
    })?;
    assert!(!described.is_empty());
    Ok(())
}

#[test]
fn nats_streams_deleted_out_of_band_are_recreated_under_enforce_and_reported_under_report() -> anyhow::Result<()> {
    let broker = Broker::up("nats", "q-nats")?;
    let s = Scenario::start("q-nats", &FAST)?;
    access_point(&s, "nats", "nats", &broker)?;
    queue(&s, "enforced", "{accessPointRef: {name: nats}, retention: {time: 1h}}")?;
    queue(&s, "reported", "{accessPointRef: {name: nats}, driftPolicy: Report}")?;
    let enforced = wait_reason(&s, "enforced", "Ready", "Provisioned")?;
    wait_reason(&s, "reported", "Ready", "Provisioned")?;
    let status = &enforced["status"];
    println!(
        "queue controller: nats status.retention {} replication {} duplicateWindow {}",
        status["retention"], status["replication"], status["duplicateWindow"]
    );
    assert_eq!(status["retention"], serde_json::json!({"time": "1h", "bytes": "unlimited"}), "read from the stream");
    assert_eq!((status["replication"].clone(), status["duplicateWindow"].clone()), (1.into(), "2m".into()));
    for stream in ["enforced", "reported"] {
        let info = nats(&broker, &["stream", "info", stream, "--json"])?;
        assert!(info.status.success(), "stream {stream} exists on the broker");
        // Bridges writing into it publish in fast batches, in order without a lane per key.
        let json: Value = serde_json::from_slice(&info.stdout)?;
        assert_eq!(json["config"]["allow_batched"], true, "stream {stream} takes fast batches (NATS 2.14+)");
        let removed = nats(&broker, &["stream", "rm", stream, "-f"])?;
        assert!(removed.status.success(), "{}", String::from_utf8_lossy(&removed.stderr));
    }
    poll("the enforced stream is recreated on the broker", DEADLINE, || {
        Ok(nats(&broker, &["stream", "info", "enforced", "--json"])?.status.success().then_some(()))
    })?;
    let reported = wait_reason(&s, "reported", "Drifted", "MissingOnBroker")?;
    assert_eq!(condition(&reported, "Ready").map(|c| c["status"].clone()), Some("False".into()));
    assert!(!nats(&broker, &["stream", "info", "reported", "--json"])?.status.success(), "Report must not recreate");

    // Changed settings: corrected under Enforce.
    let edited = nats(&broker, &["stream", "edit", "enforced", "--max-age", "5m", "-f"])?;
    assert!(edited.status.success(), "{}", String::from_utf8_lossy(&edited.stderr));
    let corrected = poll("the retention is put back", DEADLINE, || {
        let info = nats(&broker, &["stream", "info", "enforced", "--json"])?;
        let json: Value = serde_json::from_slice(&info.stdout).unwrap_or_default();
        Ok((json["config"]["max_age"] == 3_600_000_000_000u64).then_some(json))
    })?;
    assert_eq!(corrected["config"]["max_age"], 3_600_000_000_000u64);

    // More partitions than a stream has: named unsupported, never claimed, never "corrected".
    asks_for_three_partitions(&s, "enforced", "nats")?;
    Ok(())
}

#[test]
fn rabbitmq_deletion_policies_delete_retain_and_keep_non_empty_queues() -> anyhow::Result<()> {
    let broker = Broker::up("rabbitmq", "q-rabbit")?;
    let s = Scenario::start("q-rabbit", &FAST)?;
    access_point(&s, "rabbit", "rabbitmq", &broker)?;
    for (name, policy) in [("deleted", "Delete"), ("retained", "Retain"), ("guarded", "DeleteIfEmpty")] {
        queue(
            &s,
            name,
            &format!("{{accessPointRef: {{name: rabbit}}, deletionPolicy: {policy}, messageDefaults: {{expire: 1h}}}}"),
        )?;
        let provisioned = wait_reason(&s, name, "Ready", "Provisioned")?;
        assert_eq!(amqp(&broker, "exists", name)?, "yes", "{name} declared on the broker");
        assert_eq!(provisioned["status"]["retention"]["time"], "1h", "the message TTL the broker accepted");
    }
    assert_eq!(amqp(&broker, "publish", "guarded")?, "published");

    // More partitions than a RabbitMQ queue has: named unsupported, and the status keeps 1.
    asks_for_three_partitions(&s, "retained", "rabbitmq")?;

    s.kubectl(&["delete", "queue/deleted", "queue/retained", "--wait=true"])?;
    assert_eq!(amqp(&broker, "exists", "deleted")?, "no", "deletionPolicy Delete removes the broker queue");
    assert_eq!(amqp(&broker, "exists", "retained")?, "yes", "deletionPolicy Retain keeps the broker queue");

    s.kubectl(&["delete", "queue/guarded", "--wait=false"])?;
    let guarded = wait_reason(&s, "guarded", "Ready", "DeletionWaitsForEmptyQueue")?;
    assert!(message_of(&guarded, "Ready").contains("still holds 1 messages"), "{}", message_of(&guarded, "Ready"));
    assert_eq!(amqp(&broker, "exists", "guarded")?, "yes", "a non-empty queue is kept");
    // The user decides: keep it on the broker and let the Queue go.
    s.kubectl(&["patch", "queue/guarded", "--type", "merge", "-p", r#"{"spec":{"deletionPolicy":"Retain"}}"#])?;
    s.wait_gone("queue/guarded")?;
    assert_eq!(amqp(&broker, "exists", "guarded")?, "yes");
    Ok(())
}

/// An MQTT topic is one stream: more partitions are named unsupported and never claimed.
#[test]
fn an_mqtt_queue_reports_the_one_partition_a_topic_has() -> anyhow::Result<()> {
    let broker = Broker::up("mqtt", "q-mqtt")?;
    let s = Scenario::start("q-mqtt", &FAST)?;
    access_point(&s, "sensors", "mqtt", &broker)?;
    queue(&s, "readings", "{accessPointRef: {name: sensors}, partitions: 3}")?;
    let widened = wait_reason(&s, "readings", "Unsupported", "FieldsNotHonoured")?;
    println!(
        "queue controller: mqtt partitions 3: status.partitions {}, Ready {}, Unsupported {}",
        widened["status"]["partitions"],
        condition(&widened, "Ready").map(|c| c["reason"].clone()).unwrap_or_default(),
        message_of(&widened, "Unsupported")
    );
    assert_eq!(widened["status"]["partitions"], 1, "the status says what the broker has");
    assert!(message_of(&widened, "Unsupported").contains("spec.partitions"), "and names what it cannot do");
    Ok(())
}

#[test]
fn an_outage_never_deletes_and_queues_reconverge_when_the_broker_returns() -> anyhow::Result<()> {
    let broker = Broker::up("kafka", "q-outage")?;
    let s = Scenario::start("q-outage", &FAST)?;
    access_point(&s, "kafka", "kafka", &broker)?;
    queue(&s, "events", "{accessPointRef: {name: kafka}, partitions: 3, deletionPolicy: Delete}")?;
    wait_reason(&s, "events", "Ready", "Provisioned")?;

    broker.down()?;
    let down = wait_reason(&s, "events", "Ready", "BrokerUnreachable")?;
    assert!(!message_of(&down, "Ready").is_empty());
    // A fresh broker on the same address has lost the topic: it is recreated.
    broker.up_again()?;
    wait_reason(&s, "events", "Ready", "Provisioned")?;
    let described = poll("the topic is back", DEADLINE, || kafka_describe(&broker, "events"))?;
    assert!(described.contains("PartitionCount: 3"), "{described}");

    // The access point goes away: the queue says so, and deleting it deletes nothing.
    s.kubectl(&["delete", "messagingaccesspoint/kafka", "--wait=true"])?;
    wait_reason(&s, "events", "Ready", "AccessPointNotFound")?;
    s.kubectl(&["delete", "queue/events", "--wait=true"])?;
    assert!(kafka_describe(&broker, "events")?.is_some(), "nothing is deleted without the access point");
    let events = s.kubectl(&["get", "events", "--field-selector", "reason=BrokerQueueLeftInPlace", "-o", "name"])?;
    assert!(!events.trim().is_empty(), "an Event says the broker-side queue was left in place");
    Ok(())
}

#[test]
fn sharing_an_access_point_later_never_renames_its_queues() -> anyhow::Result<()> {
    let broker = Broker::up("nats", "q-keep")?;
    let s = Scenario::start("q-keep", &FAST)?;
    access_point(&s, "nats", "nats", &broker)?;
    queue(&s, "orders", "{accessPointRef: {name: nats}, retention: {time: 1h}}")?;
    let first = wait_reason(&s, "orders", "Ready", "Provisioned")?;
    assert_eq!(first["status"]["brokerName"], "orders");

    // Shared from now on: new Queues get the tenant prefix, this one keeps its name.
    s.kubectl(&[
        "patch",
        "messagingaccesspoint/nats",
        "--type=merge",
        "-p",
        r#"{"spec":{"sharing":{"tenants":["elsewhere"]}}}"#,
    ])?;
    // An edit makes the Queue reconcile against the shared access point; the edit lands on the
    // recorded name.
    s.kubectl(&["patch", "queue/orders", "--type=merge", "-p", r#"{"spec":{"retention":{"time":"2h"}}}"#])?;
    let after = s.wait_for("queue/orders", "the edit reconciled", |o| {
        o["status"]["observedGeneration"] == o["metadata"]["generation"]
            && condition(o, "Ready").is_some_and(|c| c["reason"] == "Provisioned")
    })?;
    println!("queue controller: after sharing, brokerName {}", after["status"]["brokerName"]);
    assert_eq!(after["status"]["brokerName"], "orders", "the recorded name stays");
    poll("the new retention on the stream it always was", DEADLINE, || {
        let info = nats(&broker, &["stream", "info", "orders", "--json"])?;
        let json: Value = serde_json::from_slice(&info.stdout).unwrap_or_default();
        Ok((json["config"]["max_age"] == 7_200_000_000_000u64).then_some(()))
    })?;
    let prefixed = format!("{}_orders", s.ns.name);
    assert!(!nats(&broker, &["stream", "info", &prefixed, "--json"])?.status.success(), "no empty {prefixed} appeared");
    queue(&s, "invoices", "{accessPointRef: {name: nats}}")?;
    let new = wait_reason(&s, "invoices", "Ready", "Provisioned")?;
    assert_eq!(new["status"]["brokerName"], format!("{}_invoices", s.ns.name), "a new Queue gets the prefix");
    Ok(())
}

/// Writes one record to partition 0 of `topic`, as a client of the broker would.
fn kafka_produce(broker: &Broker, topic: &str) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", broker.address()).create()?;
    producer.send(BaseRecord::<(), _>::to(topic).partition(0).payload("keep me")).map_err(|(e, _)| e)?;
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

/// Records in partition 0 of `topic`.
fn kafka_count(broker: &Broker, topic: &str) -> anyhow::Result<i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", broker.address()).set("group.id", "q-count").create()?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
    Ok(high - low)
}

#[test]
fn sharing_a_kafka_or_rabbitmq_access_point_later_keeps_names_data_and_the_owners_access() -> anyhow::Result<()> {
    let (kafka, rabbit) = (Broker::shared("kafka")?, Broker::shared("rabbitmq")?);
    let s = Scenario::start("q-share", &FAST)?;
    access_point(&s, "kafka", "kafka", kafka)?;
    access_point(&s, "rabbit", "rabbitmq", rabbit)?;
    let topic = format!("{}-orders", s.ns.name);
    queue(&s, "orders", &format!("{{accessPointRef: {{name: kafka}}, name: {topic}}}"))?;
    let jobs = format!("{}-jobs", s.ns.name);
    queue(&s, "jobs", &format!("{{accessPointRef: {{name: rabbit}}, name: {jobs}}}"))?;
    for name in ["orders", "jobs"] {
        wait_reason(&s, name, "Ready", "Provisioned")?;
    }
    // The owner's applications write to both before anything is shared.
    for _ in 0..3 {
        kafka_produce(kafka, &topic)?;
        assert_eq!(amqp(rabbit, "publish", &jobs)?, "published");
    }

    for access_point in ["kafka", "rabbit"] {
        s.kubectl(&[
            "patch",
            &format!("messagingaccesspoint/{access_point}"),
            "--type=merge",
            "-p",
            r#"{"spec":{"sharing":{"tenants":["elsewhere"]}}}"#,
        ])?;
    }
    // An edit makes each Queue reconcile against its now shared access point.
    for (name, edit) in
        [("orders", r#"{"spec":{"retention":{"time":"2d"}}}"#), ("jobs", r#"{"spec":{"driftPolicy":"Report"}}"#)]
    {
        s.kubectl(&["patch", &format!("queue/{name}"), "--type=merge", "-p", edit])?;
    }
    let orders = s.wait_for("queue/orders", "the edit on the recorded name", |o| {
        o["status"]["observedGeneration"] == o["metadata"]["generation"] && o["status"]["retention"]["time"] == "2d"
    })?;
    let reconciled = s.wait_for("queue/jobs", "the edit reconciled", |o| {
        o["status"]["observedGeneration"] == o["metadata"]["generation"]
    })?;
    assert_eq!(orders["status"]["brokerName"], topic.as_str(), "the Kafka topic keeps its name");
    assert_eq!(reconciled["status"]["brokerName"], jobs.as_str(), "the RabbitMQ queue keeps its name");
    // The owner's client reads and writes the same queues, which still hold what they held.
    kafka_produce(kafka, &topic)?;
    assert_eq!(amqp(rabbit, "publish", &jobs)?, "published");
    let (records, messages) = (kafka_count(kafka, &topic)?, amqp(rabbit, "count", &jobs)?);
    println!("queue controller: after sharing kafka and rabbitmq: {topic} holds {records}, {jobs} holds {messages}");
    assert_eq!((records, messages.as_str()), (4, "4"), "3 from before sharing and 1 after, in each");
    let prefixed = format!("{}.{jobs}", s.ns.name);
    assert_eq!(amqp(rabbit, "exists", &prefixed)?, "no", "no empty {prefixed} appeared");
    assert_eq!(kafka_count(kafka, &format!("{}.{topic}", s.ns.name)).ok(), None, "no prefixed topic appeared");
    Ok(())
}

#[test]
fn queues_on_another_namespaces_access_point_need_its_grant_and_get_the_tenant_prefix() -> anyhow::Result<()> {
    let broker = Broker::up("kafka", "q-tenant")?;
    let owner = Scenario::start("q-owner", &FAST)?;
    let tenant = owner.cluster.fresh_namespace("q-tenant")?;
    // One operator watching both namespaces.
    let operator = oms_e2e::Operator::start(
        &owner.cluster,
        &[
            "--namespace",
            &format!("{},{}", owner.ns.name, tenant.name),
            "--leader-election=false",
            "--drift-interval-seconds",
            "2",
        ],
    )?;
    access_point(&owner, "shared", "kafka", &broker)?;
    let reference = format!("{{accessPointRef: {{name: shared, namespace: {}}}}}", owner.ns.name);
    owner.cluster.apply(
        &tenant.name,
        &format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders}}\nspec: {reference}\n"
        ),
    )?;
    let refused = poll("ReferenceNotPermitted", DEADLINE, || {
        let out = run(owner.cluster.kubectl().args(["-n", &tenant.name, "get", "queue/orders", "-o", "json"]))?;
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        Ok(condition(&json, "Ready").is_some_and(|c| c["reason"] == "ReferenceNotPermitted").then_some(json))
    })?;
    assert!(message_of(&refused, "Ready").contains("spec.sharing.tenants"));
    assert!(kafka_describe(&broker, "orders")?.is_none(), "nothing is created without a grant");

    owner.kubectl(&[
        "patch",
        "messagingaccesspoint/shared",
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"spec":{{"sharing":{{"tenants":["{}"]}}}}}}"#, tenant.name),
    ])?;
    let granted = poll("provisioned with the tenant prefix", DEADLINE, || {
        let out = run(owner.cluster.kubectl().args(["-n", &tenant.name, "get", "queue/orders", "-o", "json"]))?;
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        Ok(condition(&json, "Ready").is_some_and(|c| c["reason"] == "Provisioned").then_some(json))
    })?;
    let prefixed = format!("{}.orders", tenant.name);
    assert_eq!(granted["status"]["brokerName"], prefixed.as_str());
    assert!(kafka_describe(&broker, &prefixed)?.is_some());
    drop(operator);
    Ok(())
}

/// The Secret's `key` as text.
fn secret_text(secret: &Value, key: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(secret["data"][key].as_str()?).ok()?;
    String::from_utf8(bytes).ok()
}

#[test]
fn a_tenant_of_a_shared_managed_access_point_gets_a_binding_secret_with_its_own_user() -> anyhow::Result<()> {
    let cluster = oms_e2e::Cluster::up("cloud-a")?;
    cluster.install_crds()?;
    let owner_ns = cluster.fresh_namespace("q-bind-owner")?;
    let tenant = cluster.fresh_namespace("q-bind-tenant")?;
    let operator = oms_e2e::Operator::start(
        &cluster,
        &["--namespace", &format!("{},{}", owner_ns.name, tenant.name), "--leader-election=false"],
    )?;
    let owner = Scenario { cluster, ns: owner_ns, operator };
    // A managed NATS that shares with the tenant (no broker pod runs in this tier: the Queue stays
    // BrokerUnreachable, but its tenant's binding is written before the broker is needed).
    owner.apply(&format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: shared-nats}}\n\
         spec: {{driver: nats, managed: {{replicas: 1}}, sharing: {{tenants: [{}]}}}}\n",
        tenant.name
    ))?;
    owner.cluster.apply(
        &tenant.name,
        &format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders}}\n\
             spec: {{accessPointRef: {{name: shared-nats, namespace: {}}}}}\n",
            owner.ns.name
        ),
    )?;
    let in_tenant = |object: &str| -> anyhow::Result<Option<Value>> {
        let out = run(owner.cluster.kubectl().args(["-n", &tenant.name, "get", object, "-o", "json"]))?;
        Ok(out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap_or_default()))
    };
    let binding = poll("the tenant's binding Secret", DEADLINE, || in_tenant("secret/orders.binding"))?;
    let tenants = owner
        .wait_for("secret/shared-nats-tenants", "the tenant's password", |o| secret_text(o, &tenant.name).is_some())?;
    assert_eq!(secret_text(&binding, "USERNAME"), Some(tenant.name.clone()), "the tenant's own user");
    assert_eq!(secret_text(&binding, "PASSWORD"), secret_text(&tenants, &tenant.name));
    assert_eq!(secret_text(&binding, "QUEUE_NAME"), Some(format!("{}_orders", tenant.name)));
    let owners_binding = owner.json("secret/shared-nats-binding")?;
    assert_eq!(secret_text(&owners_binding, "USERNAME"), Some(owner.ns.name.clone()));
    assert_ne!(secret_text(&binding, "PASSWORD"), secret_text(&owners_binding, "PASSWORD"), "never the owner's");
    assert_eq!(binding["metadata"]["ownerReferences"][0]["kind"], "Queue");
    let queue = poll("status.bindingSecret", DEADLINE, || {
        Ok(in_tenant("queue/orders")?.filter(|q| q["status"]["bindingSecret"] == "orders.binding"))
    })?;
    assert!(condition(&queue, "Ready").is_some());
    // The grant withdrawn: the tenant's user is dropped, and so is its binding.
    let share = |tenants: &str| {
        owner.kubectl(&[
            "patch",
            "messagingaccesspoint/shared-nats",
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"spec":{{"sharing":{{"tenants":[{tenants}]}}}}}}"#),
        ])
    };
    share("")?;
    poll("the binding deleted and the status cleared once the grant is gone", DEADLINE, || {
        let gone = in_tenant("secret/orders.binding")?.is_none();
        let cleared = in_tenant("queue/orders")?.is_some_and(|q| q["status"]["bindingSecret"].is_null());
        Ok((gone && cleared).then_some(()))
    })?;
    share(&format!("\"{}\"", tenant.name))?;
    poll("the binding back with the grant", DEADLINE, || in_tenant("secret/orders.binding"))?;
    // The Secret belongs to the Queue: it goes with it.
    run_ok_in(&owner, &tenant.name, &["delete", "queue/orders"])?;
    poll("the binding Secret collected with its Queue", DEADLINE, || {
        Ok(in_tenant("secret/orders.binding")?.is_none().then_some(()))
    })?;
    Ok(())
}

fn run_ok_in(s: &Scenario, namespace: &str, args: &[&str]) -> anyhow::Result<()> {
    oms_e2e::run_ok(s.cluster.kubectl().args(["-n", namespace]).args(args)).map(|_| ())
}

/// RocketMQ's own admin tool (`mqadmin`) against the broker's name server: its output, or the
/// failure with its output (it exits 0 either way; a failure prints the exception).
fn mqadmin(broker: &Broker, args: &[&str]) -> anyhow::Result<Result<String, String>> {
    let libs = repo_root().join(".bin/rocketmq-libs/libs/*");
    let home = repo_root().join("e2e/.state/brokers").join(&broker.name).join("home/admin");
    let name_server = format!("127.0.0.1:{}", broker.port_of("NAMESRV_PORT")?);
    let output = run(Command::new("java")
        .args(["-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
        .arg(format!("-Duser.home={}", home.display()))
        .arg("-cp")
        .arg(libs)
        .arg("org.apache.rocketmq.tools.command.MQAdminStartup")
        .args(args)
        .args(["-n", &name_server]))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    Ok(if output.status.success() && !text.contains("Exception") { Ok(text) } else { Err(text) })
}

/// [`mqadmin`] for a command that may run twice (a read, an update to fixed values): again after
/// a failure that is not `settled` (a timeout of the tool's 3 s requests on a busy machine), up to
/// four runs.
fn mqadmin_retried(
    broker: &Broker,
    args: &[&str],
    settled: impl Fn(&str) -> bool,
) -> anyhow::Result<Result<String, String>> {
    let mut runs = 0;
    loop {
        runs += 1;
        match mqadmin(broker, args)? {
            Err(text) if !settled(&text) && runs < 4 => {
                println!("mqadmin {args:?} failed, again: {}", text.lines().next().unwrap_or_default());
            }
            outcome => return Ok(outcome),
        }
    }
}

/// A topic's read and write queues and permission on its broker, from `mqadmin topicRoute`;
/// `None` when the name server has no route for it (answer code 17).
fn rocketmq_route(broker: &Broker, topic: &str) -> anyhow::Result<Option<(i64, i64, i64)>> {
    let no_route = |text: &str| text.contains("CODE: 17 ");
    let text = match mqadmin_retried(broker, &["topicRoute", "-t", topic], no_route)? {
        Ok(text) => text,
        Err(text) if no_route(&text) => return Ok(None),
        Err(text) => anyhow::bail!("mqadmin topicRoute -t {topic}: {text}"),
    };
    // fastjson output (broker ids as bare keys, not JSON): the one queue data's numbers by name.
    let number = |key: &str| -> anyhow::Result<i64> {
        let at = text.find(&format!("\"{key}\":")).with_context(|| format!("no {key} in topicRoute: {text}"))?;
        let digits: String = text[at + key.len() + 3..].chars().take_while(char::is_ascii_digit).collect();
        Ok(digits.parse()?)
    };
    Ok(Some((number("readQueueNums")?, number("writeQueueNums")?, number("perm")?)))
}

#[test]
fn rocketmq_topics_are_created_grown_kept_in_shape_and_deleted_by_policy() -> anyhow::Result<()> {
    let broker = Broker::up("rocketmq", "q-rocket")?;
    let s = Scenario::start("q-rocket", &FAST)?;
    let name_server = format!("127.0.0.1:{}", broker.port_of("NAMESRV_PORT")?);
    s.apply(&format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: rocket}}\n\
         spec: {{driver: rocketmq, external: {{servers: ['{}'], nameServers: ['{name_server}']}}}}\n",
        broker.address()
    ))?;
    let ap = s.wait_for("messagingaccesspoint/rocket", "Reachable", |o| {
        condition(o, "Ready").is_some_and(|c| c["reason"] == "Reachable")
    })?;
    println!("queue controller: rocketmq access point: {}", message_of(&ap, "Ready"));
    assert_eq!(ap["status"]["capabilities"]["partitions"], true);

    // Created with its queues on the broker, then grown.
    queue(&s, "orders", "{accessPointRef: {name: rocket}, partitions: 2, deletionPolicy: Delete}")?;
    let created = wait_reason(&s, "orders", "Ready", "Provisioned")?;
    assert_eq!(created["status"]["partitions"], 2);
    assert_eq!(rocketmq_route(&broker, "orders")?, Some((2, 2, 6)), "2 read and write queues, read-write");
    queue(&s, "orders", "{accessPointRef: {name: rocket}, partitions: 4, deletionPolicy: Delete}")?;
    s.wait_for("queue/orders", "grown to 4 queues", |o| o["status"]["partitions"] == 4)?;
    assert_eq!(rocketmq_route(&broker, "orders")?, Some((4, 4, 6)));

    // Made read-only behind the operator's back: put back under Enforce, reported under Report.
    queue(&s, "audit", "{accessPointRef: {name: rocket}, driftPolicy: Report, deletionPolicy: Retain}")?;
    wait_reason(&s, "audit", "Ready", "Provisioned")?;
    // Side by side: the admin tool spends most of its seconds waiting (its client's shutdown).
    let cluster = format!("oms-{}", broker.name);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let read_only = |topic: &'static str, queues: &'static str| {
            let (broker, cluster) = (&broker, &cluster);
            scope.spawn(move || {
                let update = ["updateTopic", "-c", cluster, "-t", topic, "-r", queues, "-w", queues, "-p", "4"];
                mqadmin_retried(broker, &update, |_| false)
            })
        };
        for made in [read_only("orders", "4"), read_only("audit", "1")] {
            let made = made.join().map_err(|_| anyhow::anyhow!("mqadmin thread panicked"))??;
            assert!(made.is_ok(), "{made:?}");
        }
        Ok(())
    })?;
    poll("Enforce puts the orders topic back to read-write", DEADLINE, || {
        Ok(rocketmq_route(&broker, "orders")?.filter(|route| *route == (4, 4, 6)))
    })?;
    let reported = wait_reason(&s, "audit", "Drifted", "Drifted")?;
    println!("queue controller: rocketmq under Report: {}", message_of(&reported, "Drifted"));
    assert!(message_of(&reported, "Drifted").contains("perm: broker has 4, spec wants 6"), "{reported}");
    assert_eq!(rocketmq_route(&broker, "audit")?, Some((1, 1, 4)), "Report leaves the broker as it is");

    // What RocketMQ keeps per broker, not per topic, is named; a name it refuses too.
    queue(&s, "kept", "{accessPointRef: {name: rocket}, retention: {time: 1d}, deletionPolicy: DeleteIfEmpty}")?;
    let kept = wait_reason(&s, "kept", "Unsupported", "FieldsNotHonoured")?;
    assert!(
        message_of(&kept, "Unsupported")
            .contains("spec.retention: rocketmq keeps messages by its brokers' fileReservedTime")
    );
    queue(&s, "dotted", "{accessPointRef: {name: rocket}, name: a.b}")?;
    let dotted = s.wait_for("queue/dotted", "refused", |o| {
        condition(o, "Ready").is_some_and(|c| c["status"] == "False" && message_of(o, "Ready").contains("spec.name"))
    })?;
    println!("queue controller: rocketmq name a.b: {}", message_of(&dotted, "Ready"));

    // A Bridge from RocketMQ cannot keep order (a message delivered again comes after later ones):
    // refused by name until it asks for none; then its worker is given the name servers.
    let bridge = |ordering: &str| {
        s.apply(&format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: copy}}\n\
             spec: {{source: {{queueRef: {{name: orders}}}}, target: {{queueRef: {{name: audit}}}}{ordering}}}\n"
        ))
    };
    bridge("")?;
    let refused = s.wait_for("bridge/copy", "refused", |o| {
        condition(o, "Ready")
            .is_some_and(|c| c["reason"] == "InvalidSpec" && message_of(o, "Ready").contains("spec.ordering"))
    })?;
    println!("queue controller: a Bridge from rocketmq keeping order: {}", message_of(&refused, "Ready"));
    bridge(", ordering: None")?;
    s.wait_for("configmap/copy-oms-bridge", "the worker config with the name servers", |o| {
        o["data"]["worker.yaml"].as_str().is_some_and(|yaml| yaml.contains(&name_server) && yaml.contains("rocketmq"))
    })?;

    // Deletion: Delete removes the topic and its route, Retain keeps it, DeleteIfEmpty waits.
    wait_reason(&s, "kept", "Ready", "Provisioned")?;
    // RocketMQ's own producer, with time for a busy machine (the admin tool's send gives up at 3 s).
    oms_e2e::rocketmq_client(&broker, &["produce", "kept", "0", "1", "1"])?;
    s.kubectl(&["delete", "queue/orders", "queue/audit", "queue/dotted", "--wait=true"])?;
    s.kubectl(&["delete", "queue/kept", "--wait=false"])?;
    let guarded = wait_reason(&s, "kept", "Ready", "DeletionWaitsForEmptyQueue")?;
    assert!(message_of(&guarded, "Ready").contains("still holds 1 messages"), "{}", message_of(&guarded, "Ready"));
    let [orders, audit, kept] = std::thread::scope(|scope| {
        let broker = &broker;
        let routes = ["orders", "audit", "kept"].map(|topic| scope.spawn(move || rocketmq_route(broker, topic)));
        routes.map(|route| route.join().map_err(|_| anyhow::anyhow!("mqadmin thread panicked")))
    });
    assert!(orders??.is_none(), "deletionPolicy Delete removes the topic's route");
    assert!(audit??.is_some(), "deletionPolicy Retain keeps the topic");
    assert!(kept??.is_some(), "a topic with a message is kept");
    Ok(())
}
