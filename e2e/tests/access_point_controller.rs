//! The MessagingAccessPoint controller against a real API server and controller-manager: each
//! test runs its own operator, watching only the test's fresh namespace.

use anyhow::Context as _;
use base64::Engine as _;
use oms_e2e::{Broker, Cluster, DEADLINE, Operator, Scenario, condition, http_get, poll, run_ok};
use serde_json::Value;

const KAFKA: &str = "
apiVersion: openmessaging.cloud/v1alpha1
kind: MessagingAccessPoint
metadata: {name: orders-kafka}
spec:
  driver: kafka
  region: eu-west-1
  managed:
    replicas: 3
    storage: {size: 1Gi}
    config: {log.retention.hours: '48'}
";

#[test]
fn managed_kafka_gets_owned_children_a_binding_secret_and_truthful_status() -> anyhow::Result<()> {
    // A private registry's pull Secret reaches the broker pods.
    let s = Scenario::start("ap-kafka", &["--image-pull-secrets", "regcred"])?;
    s.apply(KAFKA)?;
    let ap = s.wait_for("messagingaccesspoint/orders-kafka", "status written", |o| condition(o, "Ready").is_some())?;
    let uid = ap["metadata"]["uid"].as_str().context("uid")?.to_owned();

    // Every child is owned by the access point (controller reference) and labelled.
    for child in [
        "statefulset/orders-kafka",
        "service/orders-kafka",
        "service/orders-kafka-client",
        "configmap/orders-kafka-config",
        "poddisruptionbudget/orders-kafka",
        "serviceaccount/orders-kafka",
        "secret/orders-kafka-binding",
        "networkpolicy/orders-kafka",
    ] {
        let object = s.json(child)?;
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], uid.as_str(), "{child} owner");
        assert_eq!(owner["controller"], true, "{child} controller reference");
        assert_eq!(object["metadata"]["labels"]["app.kubernetes.io/managed-by"], "oms-operator", "{child}");
    }
    let sts = s.json("statefulset/orders-kafka")?;
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["template"]["spec"]["imagePullSecrets"], serde_json::json!([{"name": "regcred"}]));
    assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"], "1Gi");
    let config = s.json("configmap/orders-kafka-config")?;
    let properties = config["data"]["server.properties"].as_str().context("server.properties")?;
    assert!(properties.contains("log.retention.hours=48"), "{properties}");
    // Tenancy on the network: the client port admits only this namespace (the access point shares with no one).
    let policy = s.json("networkpolicy/orders-kafka")?;
    let client = &policy["spec"]["ingress"][1];
    assert_eq!(client["ports"][0]["port"], 9092, "{policy}");
    assert_eq!(client["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"], serde_json::json!([s.ns.name]));

    // No pods run without nodes: the status says so instead of claiming Ready.
    let ready = condition(&ap, "Ready").context("Ready")?;
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "BrokersNotReady");
    assert_eq!(ap["status"]["readyReplicas"], 0);
    assert_eq!(
        ap["status"]["accessPoint"],
        format!(
            "oms:kafka://orders-kafka-0.orders-kafka.{ns}.svc:9092,orders-kafka-1.orders-kafka.{ns}.svc:9092,orders-kafka-2.orders-kafka.{ns}.svc:9092/eu-west-1",
            ns = s.ns.name
        )
    );
    assert_eq!(ap["status"]["capabilities"]["partitions"], true);
    let binding = s.json("secret/orders-kafka-binding")?;
    for key in ["ACCESS_POINTS", "ACCESS_POINT_URL", "REGION", "ACCOUNT_ID", "DRIVER_IMPL"] {
        assert!(binding["data"][key].is_string(), "binding Secret lacks {key}");
    }
    // Every Kafka client logs in: the binding carries this namespace's tenant user, never the
    // operator's, whose credentials the brokers read from the generated Secret.
    let text = |secret: &Value, key: &str| -> anyhow::Result<String> {
        let encoded = secret["data"][key].as_str().with_context(|| format!("{key} in {secret}"))?;
        Ok(String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded)?)?)
    };
    assert_eq!(text(&binding, "USERNAME")?, s.ns.name);
    let tenants = s.json("secret/orders-kafka-tenants")?;
    assert_eq!(text(&binding, "PASSWORD")?, text(&tenants, &s.ns.name)?);
    let admin = s.json("secret/orders-kafka-credentials")?;
    assert_eq!(text(&admin, "username")?, oms_operator::tenancy::ADMIN_USER);
    assert_ne!(text(&admin, "password")?, text(&binding, "PASSWORD")?);
    let env = &sts["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(env.to_string().contains("orders-kafka-credentials"), "the brokers read the operator's user: {env}");
    // Printer columns are filled.
    let table = s.kubectl(&["get", "messagingaccesspoints"])?;
    assert!(table.contains("kafka") && table.contains("False") && table.contains("oms:kafka://"), "{table}");
    Ok(())
}

#[test]
fn config_change_rolls_the_pods_and_scaling_updates_the_stateful_set() -> anyhow::Result<()> {
    let s = Scenario::start("ap-roll", &[])?;
    s.apply(KAFKA)?;
    let hash_of =
        |sts: &Value| sts["spec"]["template"]["metadata"]["annotations"]["openmessaging.cloud/config-hash"].clone();
    let before = hash_of(&s.wait_for("statefulset/orders-kafka", "created", |_| true)?);
    s.apply(&KAFKA.replace("'48'", "'72'").replace("replicas: 3", "replicas: 4"))?;
    let after = s.wait_for("statefulset/orders-kafka", "rolled and scaled", |sts| {
        sts["spec"]["replicas"] == 4 && hash_of(sts) != before
    })?;
    assert_ne!(hash_of(&after), before);
    let config = s.json("configmap/orders-kafka-config")?;
    let file = |config: &Value, name: &str| config["data"][name].as_str().unwrap_or_default().to_owned();
    let properties = file(&config, "server.properties");
    assert!(properties.contains("log.retention.hours=72"));
    // A new cluster's quorum is dynamic: no voters in the configuration; the first three format
    // with each other as the voters, and the bootstrap list names the voters the size keeps.
    assert!(!properties.contains("controller.quorum.voters"), "{properties}");
    assert_eq!(after["metadata"]["annotations"]["openmessaging.cloud/kafka-quorum"], "dynamic");
    let first_voters = file(&config, "initial-controllers");
    assert!(
        first_voters.starts_with("0@orders-kafka-0.") && first_voters.contains(",2@orders-kafka-2."),
        "{first_voters}"
    );
    assert!(!first_voters.contains("3@"), "{first_voters}");
    assert!(!file(&config, "bootstrap-servers").contains("orders-kafka-3."));
    // Five brokers keep five voters: the size changes, no pod rolls (the voters are the
    // operator's to add), and the quorum still forms from the first three.
    s.apply(&KAFKA.replace("'48'", "'72'").replace("replicas: 3", "replicas: 5"))?;
    let at_five = s.wait_for("statefulset/orders-kafka", "scaled to 5", |sts| sts["spec"]["replicas"] == 5)?;
    assert_eq!(hash_of(&at_five), hash_of(&after), "a size rolls no pod");
    let config = s.json("configmap/orders-kafka-config")?;
    assert!(file(&config, "bootstrap-servers").contains("orders-kafka-4.orders-kafka."), "{config}");
    assert_eq!(file(&config, "initial-controllers"), first_voters);
    // A cluster an earlier operator made (no dynamic mark) keeps static voters, listed in every
    // broker's configuration, and a size that would change them is refused, naming why.
    // A reconcile under way may apply the mark again after it is taken: take it until the operator
    // renders the static voters.
    let unmark = r#"{"metadata": {"annotations": {"openmessaging.cloud/kafka-quorum": null}}}"#;
    s.wait_for("configmap/orders-kafka-config", "static voters rendered", |config| {
        let _ = s.kubectl(&["patch", "statefulset/orders-kafka", "--type", "merge", "-p", unmark]);
        file(config, "server.properties").contains("controller.quorum.voters=")
    })?;
    s.apply(&KAFKA.replace("'48'", "'72'"))?;
    let refused = s.wait_for("messagingaccesspoint/orders-kafka", "ResizeRefused", |o| {
        condition(o, "Progressing").is_some_and(|c| c["reason"] == "ResizeRefused")
    })?;
    let message = condition(&refused, "Progressing").and_then(|c| c["message"].as_str()).unwrap_or_default();
    assert!(
        message.contains("from 5 to 3 voters") && message.contains("static") && message.contains("keeping 5"),
        "{message}"
    );
    assert_eq!(s.json("statefulset/orders-kafka")?["spec"]["replicas"], 5);
    let properties = file(&s.json("configmap/orders-kafka-config")?, "server.properties");
    assert!(
        properties.contains("controller.quorum.voters=0@orders-kafka-0.") && properties.contains(",4@orders-kafka-4."),
        "{properties}"
    );
    Ok(())
}

#[test]
fn an_invalid_access_point_gets_a_condition_an_event_and_no_children() -> anyhow::Result<()> {
    let s = Scenario::start("ap-invalid", &[])?;
    s.apply(&KAFKA.replace("log.retention.hours: '48'", "listeners: 'PLAINTEXT://:1'"))?;
    let ap = s.wait_for("messagingaccesspoint/orders-kafka", "InvalidSpec", |o| {
        condition(o, "Ready").is_some_and(|c| c["reason"] == "InvalidSpec")
    })?;
    let message = condition(&ap, "Ready").and_then(|c| c["message"].as_str()).unwrap_or_default().to_owned();
    assert!(message.contains("spec.managed.config") && message.contains("listeners"), "{message}");
    let children = s.kubectl(&[
        "get",
        "statefulsets,configmaps,services,secrets",
        "-l",
        "app.kubernetes.io/managed-by=oms-operator",
        "-o",
        "name",
    ])?;
    assert!(children.trim().is_empty(), "nothing is created for an invalid spec: {children}");
    let events = poll("InvalidSpec event", DEADLINE, || {
        let events = s.kubectl(&["get", "events", "--field-selector", "reason=InvalidSpec", "-o", "name"])?;
        Ok((!events.trim().is_empty()).then_some(events))
    })?;
    assert!(!events.is_empty());
    Ok(())
}

#[test]
fn deleting_an_access_point_garbage_collects_its_children() -> anyhow::Result<()> {
    let s = Scenario::start("ap-delete", &[])?;
    s.apply(KAFKA)?;
    s.wait_for("statefulset/orders-kafka", "created", |_| true)?;
    s.wait_for("secret/orders-kafka-binding", "created", |_| true)?;
    s.kubectl(&["delete", "messagingaccesspoint/orders-kafka", "--wait=true"])?;
    // The controller-manager's garbage collector follows the owner references.
    for child in [
        "statefulset/orders-kafka",
        "service/orders-kafka",
        "configmap/orders-kafka-config",
        "secret/orders-kafka-binding",
    ] {
        s.wait_gone(child)?;
    }
    Ok(())
}

#[test]
fn every_driver_renders_its_broker_and_gateway_access_points_are_stored() -> anyhow::Result<()> {
    let s = Scenario::start("ap-drivers", &[])?;
    for file in [
        "deploy/examples/nats.yaml",
        "deploy/examples/rabbitmq.yaml",
        "deploy/examples/mqtt.yaml",
        "deploy/examples/rocketmq.yaml",
        "deploy/examples/gateway.yaml",
    ] {
        run_ok(s.cluster.kubectl().args(["-n", &s.ns.name, "apply", "-f", file]))?;
    }
    for (name, file) in [
        ("edge-nats", "nats.conf"),
        ("billing-rabbit", "rabbitmq.conf"),
        ("devices-mqtt", "mosquitto.conf"),
        ("payments-rocketmq", "broker.conf"),
    ] {
        let config = s.wait_for(&format!("configmap/{name}-config"), "rendered", |_| true)?;
        assert!(config["data"][file].is_string(), "{name} lacks {file}");
        s.wait_for(&format!("statefulset/{name}"), "created", |_| true)?;
    }
    // RabbitMQ: the binding Secret carries the namespace's own tenant user and virtual host, never
    // the admin; the tenants Secret the definitions of both that the broker imports.
    let binding = s.wait_for("secret/billing-rabbit-binding", "credentials", |o| o["data"]["USERNAME"].is_string())?;
    let text = |o: &serde_json::Value, key: &str| {
        o["data"][key].as_str().and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
    };
    assert_eq!(text(&binding, "USERNAME"), Some(s.ns.name.clone().into_bytes()));
    assert_eq!(text(&binding, "VHOST"), Some(s.ns.name.clone().into_bytes()));
    assert!(binding["data"]["PASSWORD"].is_string());
    let tenants = s.wait_for("secret/billing-rabbit-tenants", "definitions", |o| {
        o["data"]["rabbitmq-definitions.json"].is_string()
    })?;
    let definitions: serde_json::Value =
        serde_json::from_slice(&text(&tenants, "rabbitmq-definitions.json").unwrap_or_default())?;
    let users: Vec<&str> =
        definitions["users"].as_array().into_iter().flatten().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(users, [oms_operator::tenancy::ADMIN_USER, s.ns.name.as_str()]);
    // RocketMQ: the binding names the pod's proxy and its name server, with the namespace's user.
    let rocketmq =
        s.wait_for("secret/payments-rocketmq-binding", "name servers", |o| o["data"]["NAME_SERVERS"].is_string())?;
    let pod = format!("payments-rocketmq-0.payments-rocketmq.{}.svc", s.ns.name);
    assert_eq!(text(&rocketmq, "NAME_SERVERS"), Some(format!("{pod}:9876").into_bytes()));
    assert_eq!(text(&rocketmq, "ACCESS_POINTS"), Some(format!("{pod}:8081").into_bytes()));
    assert_eq!(text(&rocketmq, "USERNAME"), Some(s.ns.name.clone().into_bytes()));
    let mqtt =
        s.wait_for("messagingaccesspoint/devices-mqtt", "status", |o| o["status"]["capabilities"].is_object())?;
    assert_eq!(mqtt["status"]["capabilities"]["queueObjects"], false);
    assert_eq!(mqtt["status"]["capabilities"]["headers"], false);
    let gateway = s.wait_for("messagingaccesspoint/cloud-b", "status", |o| condition(o, "Ready").is_some())?;
    assert_eq!(condition(&gateway, "Ready").map(|c| c["status"].clone()), Some("Unknown".into()));
    assert_eq!(gateway["status"]["accessPoint"], "oms:gateway://oms-gateway.cloud-b.example.com:30743/eu-central-1");
    // The access point that exposes a gateway publishes where other clouds reach it.
    s.wait_for("messagingaccesspoint/eu-nats", "gateway endpoint", |o| {
        o["status"]["gatewayEndpoint"] == "oms-gateway.cloud-b.example.com:30743"
    })?;
    Ok(())
}

#[test]
fn reconcile_metrics_count_by_kind_and_result() -> anyhow::Result<()> {
    let s = Scenario::start("ap-metrics", &[])?;
    s.apply(KAFKA)?;
    s.wait_for("messagingaccesspoint/orders-kafka", "status written", |o| condition(o, "Ready").is_some())?;
    let body = poll("reconcile metrics", DEADLINE, || {
        let (_, body) = http_get(s.operator.admin, "/metrics")?;
        Ok(body
            .contains(r#"oms_operator_reconcile_total{kind="MessagingAccessPoint",result="success"}"#)
            .then_some(body))
    })?;
    assert!(body.contains(r#"oms_operator_reconcile_duration_seconds_count{kind="MessagingAccessPoint"}"#), "{body}");
    poll("resources gauge counts the not-ready access point", DEADLINE, || {
        let (_, body) = http_get(s.operator.admin, "/metrics")?;
        Ok(body.contains(r#"oms_operator_resources{kind="MessagingAccessPoint",ready="False"} 1"#).then_some(()))
    })?;
    Ok(())
}

#[test]
fn the_operator_works_with_only_the_rbac_the_chart_grants() -> anyhow::Result<()> {
    let cluster = Cluster::up("cloud-a")?;
    cluster.install_crds()?;
    let ns = cluster.fresh_namespace("ap-rbac")?;
    let release = format!("rbac-{}", std::process::id());
    run_ok(cluster.helm().args(["install", &release, "charts/oms-operator", "--namespace", &ns.name]))?;
    let account = format!("{release}-oms-operator");
    let kubeconfig = cluster.service_account_kubeconfig(&ns.name, &account)?;
    let operator = Operator::start_with_kubeconfig(
        &kubeconfig,
        &["--namespace", &ns.name, "--leader-election-namespace", &ns.name],
    )?;
    let s = Scenario { cluster: cluster.clone(), ns, operator };
    s.apply(KAFKA)?;
    s.apply(
        &KAFKA
            .replace("orders-kafka", "billing")
            .replace("driver: kafka", "driver: rabbitmq")
            .replace("    config: {log.retention.hours: '48'}\n", ""),
    )?;
    s.wait_for("messagingaccesspoint/orders-kafka", "reconciled", |o| {
        condition(o, "Ready").is_some_and(|c| c["reason"] == "BrokersNotReady")
    })?;
    s.wait_for("secret/billing-binding", "credentials", |o| o["data"]["PASSWORD"].is_string())?;
    s.wait_for("lease/oms-operator-leader", "held by the service account's operator", |_| true)?;
    // Workers of an MQTT source take turns through a Lease: the operator makes it and grants a
    // Role over it, which RBAC allows only to one that holds those rights itself.
    let mqtt = Broker::up("mqtt", "ap-rbac-mqtt")?;
    s.apply(&format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: sensors}}\n\
         spec: {{driver: mqtt, external: {{servers: ['{}']}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: readings}}\n\
         spec: {{accessPointRef: {{name: sensors}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: readings-copy}}\n\
         spec: {{accessPointRef: {{name: sensors}}}}\n---\n\
         apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: turns}}\n\
         spec: {{source: {{queueRef: {{name: readings}}}}, target: {{queueRef: {{name: readings-copy}}}}, replicas: 2}}\n",
        mqtt.address()
    ))?;
    for object in ["lease", "serviceaccount", "role", "rolebinding", "deployment"] {
        s.wait_for(&format!("{object}/turns-oms-bridge"), "made for the workers' turns", |_| true)?;
    }
    let log = std::fs::read_to_string(&s.operator.log)?;
    assert!(!log.contains("forbidden"), "the chart's RBAC is missing a permission:\n{log}");
    run_ok(cluster.helm().args(["uninstall", &release, "--namespace", &s.ns.name]))?;
    Ok(())
}

#[test]
fn external_access_points_follow_their_real_brokers_up_down_and_back() -> anyhow::Result<()> {
    let cluster = Cluster::up("cloud-a")?;
    cluster.install_crds()?;
    let ns = cluster.fresh_namespace("ap-external")?;
    let operator = Operator::start(
        &cluster,
        &["--namespace", &ns.name, "--leader-election=false", "--probe-interval-seconds", "1"],
    )?;
    let s = Scenario { cluster: cluster.clone(), ns, operator };
    let kinds = [("kafka", "kafka"), ("nats", "nats"), ("rabbitmq", "rabbitmq"), ("mqtt", "mqtt")];
    let mut brokers = Vec::new();
    for (kind, driver) in kinds {
        let broker = Broker::up(kind, &format!("ext-{kind}"))?;
        s.apply(&format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: ext-{kind}}}\n\
             spec: {{driver: {driver}, external: {{servers: ['127.0.0.1:{port}'], account: tenant-a}}}}\n",
            port = broker.port
        ))?;
        brokers.push((kind, broker));
    }
    let ready = |kind: &str, reason: &'static str| {
        s.wait_for(&format!("messagingaccesspoint/ext-{kind}"), reason, move |o| {
            condition(o, "Ready").is_some_and(|c| c["reason"] == reason)
        })
    };
    for (kind, broker) in &brokers {
        let ap = ready(kind, "Reachable")?;
        assert_eq!(ap["status"]["accessPoint"], format!("oms:{kind}://tenant-a@127.0.0.1:{}/local", broker.port));
        s.wait_for(&format!("secret/ext-{kind}-binding"), "written", |_| true)?;
    }
    for (_, broker) in &brokers {
        broker.down()?;
    }
    for (kind, _) in &brokers {
        let ap = ready(kind, "Unreachable")?;
        let message = condition(&ap, "Ready").and_then(|c| c["message"].as_str()).unwrap_or_default().to_owned();
        assert!(message.contains("cannot connect"), "{kind}: {message}");
    }
    for (_, broker) in &brokers {
        broker.up_again()?;
    }
    for (kind, _) in &brokers {
        ready(kind, "Reachable")?;
    }
    Ok(())
}

/// Kafka below the copies of its data, NATS before 2.15 (it cannot evacuate a server), and a
/// single NATS server into a cluster (it would delete its streams): the StatefulSet keeps its
/// size and the condition says why. NATS 2.15 and RabbitMQ retire brokers step by step, asking
/// them first: here no broker runs, so they wait, keeping their size, and say that they cannot
/// reach them (e2e-nodes shrinks both for real).
#[test]
fn a_size_change_the_operator_cannot_do_safely_is_refused_and_said() -> anyhow::Result<()> {
    let s = Scenario::start("ap-scale", &[])?;
    let nats = KAFKA.replace("kafka", "nats").replace("log.retention.hours: '48'", "");
    let named = |name: &str| nats.replace("orders-nats", name);
    let clusters = [
        ("orders-kafka", KAFKA.to_owned(), (3, 1), "ResizeRefused", "internal topics keep 3 copies"),
        (
            "orders-rabbitmq",
            KAFKA.replace("kafka", "rabbitmq").replace("log.retention.hours: '48'", ""),
            (3, 1),
            "ScalingDown",
            "cannot ask the nodes",
        ),
        (
            "old-nats",
            named("old-nats").replace("storage:", "version: 2.14.5\n    storage:"),
            (3, 1),
            "ResizeRefused",
            "before 2.15",
        ),
        ("single-nats", named("single-nats").replace("replicas: 3", "replicas: 1"), (1, 3), "ResizeRefused", "orphans"),
        ("orders-nats", nats.clone(), (3, 1), "ScalingDown", "cannot reach the servers"),
    ];
    for (name, yaml, (from, _), ..) in &clusters {
        s.apply(yaml)?;
        s.wait_for(&format!("statefulset/{name}"), "created", |sts| sts["spec"]["replicas"] == *from)?;
    }
    for (name, yaml, (from, to), reason, because) in &clusters {
        let sized = |replicas: i32| yaml.replace(&format!("replicas: {from}"), &format!("replicas: {replicas}"));
        s.apply(&sized(*to))?;
        let ap = s.wait_for(&format!("messagingaccesspoint/{name}"), "size change held", |o| {
            condition(o, "Progressing").is_some_and(|c| c["reason"] == *reason)
        })?;
        let message = condition(&ap, "Progressing").and_then(|c| c["message"].as_str()).unwrap_or_default().to_owned();
        assert!(message.contains(because) && message.contains(&format!("from {from} to {to}")), "{name}: {message}");
        assert_eq!(
            s.json(&format!("statefulset/{name}"))?["spec"]["replicas"],
            *from,
            "{name}: the StatefulSet kept its size"
        );
        // A cluster may still grow.
        if *from > 1 {
            s.apply(&sized(from + 1))?;
            s.wait_for(&format!("statefulset/{name}"), "grown", |sts| sts["spec"]["replicas"] == from + 1)?;
        }
    }
    Ok(())
}

/// Kafka's metadata holds the operator's user from the first format: a lost credentials Secret is
/// said, never made anew; and brokers an earlier version ran without authentication (no operator
/// user in their environment) are left as they are, and said.
#[test]
fn a_kafka_whose_operator_user_cannot_be_had_is_left_alone_and_said() -> anyhow::Result<()> {
    let s = Scenario::start("ap-kafka-user", &[])?;
    s.apply(KAFKA)?;
    // The whole first reconcile, status included, before its Secret goes.
    s.wait_for("messagingaccesspoint/orders-kafka", "first status", |o| {
        !o["status"]["bindingSecret"].is_null()
            && condition(o, "Ready").is_some_and(|c| c["reason"] == "BrokersNotReady")
    })?;
    let created = s.json("secret/orders-kafka-credentials")?["metadata"]["uid"].clone();
    s.kubectl(&["delete", "secret/orders-kafka-credentials"])?;
    let ap = s.wait_for("messagingaccesspoint/orders-kafka", "credentials lost", |o| {
        condition(o, "Ready").is_some_and(|c| c["reason"] == "CredentialsLost")
    })?;
    let message = condition(&ap, "Ready").and_then(|c| c["message"].as_str()).unwrap_or_default().to_owned();
    assert!(message.contains("Secret orders-kafka-credentials") && message.contains("restore"), "{message}");
    assert!(s.json("secret/orders-kafka-credentials").is_err(), "no new password the brokers do not know");
    assert!(!ap["status"]["bindingSecret"].is_null(), "the status keeps what it said before");

    // Back from a backup: the access point carries on.
    let restore = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: orders-kafka-credentials}}\n\
         stringData: {{username: {}, password: restored}}\n",
        oms_operator::tenancy::ADMIN_USER
    );
    s.apply(&restore)?;
    s.wait_for("messagingaccesspoint/orders-kafka", "credentials back", |o| {
        condition(o, "Ready").is_some_and(|c| c["reason"] == "BrokersNotReady")
    })?;
    assert_ne!(s.json("secret/orders-kafka-credentials")?["metadata"]["uid"], created);

    // An earlier version's brokers: no operator user in their environment. Made as a StatefulSet
    // of its own before its access point, so no reconcile of the one above can race the change.
    let mut earlier = s.json("statefulset/orders-kafka")?;
    earlier["metadata"] = serde_json::json!({"name": "orders-kafka"});
    earlier.as_object_mut().map(|o| o.remove("status"));
    let container = &mut earlier["spec"]["template"]["spec"]["containers"][0];
    container.as_object_mut().map(|c| c.remove("env"));
    s.apply(&earlier.to_string().replace("orders-kafka", "legacy-kafka"))?;
    s.apply(&KAFKA.replace("orders-kafka", "legacy-kafka"))?;
    let ap = s.wait_for("messagingaccesspoint/legacy-kafka", "recreate required", |o| {
        condition(o, "Ready").is_some_and(|c| c["reason"] == "RecreateRequired")
    })?;
    let message = condition(&ap, "Ready").and_then(|c| c["message"].as_str()).unwrap_or_default().to_owned();
    assert!(message.contains("without authentication") && message.contains("new access point"), "{message}");
    let sts = s.json("statefulset/legacy-kafka")?;
    assert!(sts["spec"]["template"]["spec"]["containers"][0]["env"].is_null(), "the StatefulSet is left as it was");
    assert!(s.json("configmap/legacy-kafka-config").is_err(), "nothing of today's configuration is applied");
    Ok(())
}

#[test]
fn volume_claims_outlive_the_access_point_unless_delete_claims_is_set() -> anyhow::Result<()> {
    let s = Scenario::start("ap-claims", &[])?;
    let nats = |name: &str, delete: bool| {
        format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: {name}}}\n\
             spec: {{driver: nats, managed: {{replicas: 1, storage: {{size: 1Gi}}, deleteClaims: {delete}}}}}\n"
        )
    };
    s.apply(&nats("keep", false))?;
    s.apply(&nats("drop", true))?;
    // The StatefulSet controller creates each pod's claim, even before any node runs the pod.
    s.wait_for("persistentvolumeclaim/data-keep-0", "created", |_| true)?;
    s.wait_for("persistentvolumeclaim/data-drop-0", "created", |_| true)?;
    s.kubectl(&["delete", "messagingaccesspoint/keep", "messagingaccesspoint/drop", "--wait=true"])?;
    s.wait_gone("statefulset/keep")?;
    s.wait_gone("statefulset/drop")?;
    s.wait_gone("persistentvolumeclaim/data-drop-0")?;
    s.json("persistentvolumeclaim/data-keep-0").map_err(|e| anyhow::anyhow!("the claim was deleted: {e}"))?;
    Ok(())
}
