//! The Bridge controller against a real API server and real brokers (behind external access
//! points): the worker config it renders is one `oms-bridge` accepts and names the right brokers
//! and queues, the Deployment runs it with the Bridge's certificate, a reference to another
//! tenant's queue without a grant creates nothing and says why, and a spec the worker would
//! refuse is `InvalidSpec` at once, naming the field, with no worker deployed.

use std::process::Command;

use anyhow::Context as _;
use oms_e2e::{Broker, Cluster, DEADLINE, Operator, condition, poll, run, run_ok, workspace_binary};
use serde_json::Value;

fn get(cluster: &Cluster, namespace: &str, object: &str) -> anyhow::Result<Option<Value>> {
    let output = run(cluster.kubectl().args(["-n", namespace, "get", object, "-o", "json"]))?;
    Ok(output.status.success().then(|| serde_json::from_slice(&output.stdout)).transpose()?)
}

fn ready_reason(object: &Value) -> Option<String> {
    condition(object, "Ready").and_then(|c| c["reason"].as_str()).map(str::to_owned)
}

#[test]
fn a_bridge_gets_a_worker_config_and_deployment_and_a_foreign_queue_needs_a_grant() -> anyhow::Result<()> {
    let kafka = Broker::up("kafka", "bridge-ctl-k")?;
    let nats = Broker::up("nats", "bridge-ctl-n")?;
    let cluster = Cluster::up("cloud-a")?;
    cluster.install_crds()?;
    let home = cluster.fresh_namespace("bridge-ctl")?;
    let other = cluster.fresh_namespace("bridge-ctl-other")?;
    let (ns, ns2) = (home.name.as_str(), other.name.as_str());
    let watched = format!("{ns},{ns2}");
    // A private registry's pull Secrets reach the worker pods.
    let _operator = Operator::start(
        &cluster,
        &[
            "--namespace",
            &watched,
            "--leader-election=false",
            "--pki-namespace",
            ns,
            "--image-pull-secrets",
            "regcred,mirror",
        ],
    )?;
    cluster.apply(
        ns,
        &format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: orders-kafka}}\n\
             spec: {{driver: kafka, external: {{servers: ['{}']}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: edge-nats}}\n\
             spec: {{driver: nats, external: {{servers: ['{}']}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders}}\n\
             spec: {{accessPointRef: {{name: orders-kafka}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders-edge}}\n\
             spec: {{accessPointRef: {{name: edge-nats}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: to-edge}}\n\
             spec: {{source: {{queueRef: {{name: orders}}}}, target: {{queueRef: {{name: orders-edge}}}}, filter: \"headers['region'] == 'eu'\"}}\n",
            kafka.address(),
            nats.address()
        ),
    )?;

    // The rendered config, exactly as the pod would mount it, passes the worker's own check.
    let config_map = poll("the worker ConfigMap", DEADLINE, || get(&cluster, ns, "configmap/to-edge-oms-bridge"))?;
    let worker_yaml = config_map["data"]["worker.yaml"].as_str().unwrap_or_default().to_owned();
    let file = oms_e2e::repo_root().join(format!("e2e/.state/bridge-ctl-{}.yaml", std::process::id()));
    std::fs::write(&file, &worker_yaml)?;
    let checked =
        run_ok(Command::new(workspace_binary("oms-bridge")).args(["worker", "--check", "--config"]).arg(&file))?;
    println!("bridge controller: {}", checked.trim());
    assert!(checked.contains("Kafka orders -> Nats orders-edge"), "{checked}\n{worker_yaml}");
    assert!(worker_yaml.contains(&kafka.address()) && worker_yaml.contains(&nats.address()), "{worker_yaml}");
    assert!(worker_yaml.contains("headers['region'] == 'eu'"), "the filter travels: {worker_yaml}");

    let deployment = poll("the worker Deployment", DEADLINE, || get(&cluster, ns, "deployment/to-edge-oms-bridge"))?;
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(volumes.contains("to-edge-oms-tls") && volumes.contains("to-edge-oms-bridge"), "{volumes}");
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["kind"], "Bridge");
    let pull = &deployment["spec"]["template"]["spec"]["imagePullSecrets"];
    assert_eq!(pull, &serde_json::json!([{"name": "regcred"}, {"name": "mirror"}]), "pull Secrets");
    // No nodes in this cluster: the worker cannot run yet, and the status says so.
    let bridge = poll("Bridge status", DEADLINE, || {
        Ok(get(&cluster, ns, "bridge/to-edge")?.filter(|b| ready_reason(b).as_deref() == Some("WorkerStarting")))
    })?;
    println!("bridge controller: Ready {}", condition(&bridge, "Ready").map(ToString::to_string).unwrap_or_default());

    // Another tenant names our queue: the access point does not share, so nothing is created.
    cluster.apply(
        ns2,
        &format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: mine}}\n\
             spec: {{accessPointRef: {{name: edge-nats, namespace: {ns}}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: borrow}}\n\
             spec: {{source: {{queueRef: {{name: orders, namespace: {ns}}}}}, target: {{queueRef: {{name: mine}}}}}}\n"
        ),
    )?;
    let refused = poll("ReferenceNotPermitted", DEADLINE, || {
        Ok(get(&cluster, ns2, "bridge/borrow")?.filter(|b| ready_reason(b).as_deref() == Some("ReferenceNotPermitted")))
    })?;
    let message = condition(&refused, "Ready").and_then(|c| c["message"].as_str()).unwrap_or_default().to_owned();
    println!("bridge controller: cross-tenant reference: {message}");
    assert!(message.contains("spec.sharing.tenants"), "the message says how to fix it: {message}");
    assert!(get(&cluster, ns2, "configmap/borrow-oms-bridge")?.is_none(), "no worker config for a refused reference");
    assert!(get(&cluster, ns2, "deployment/borrow-oms-bridge")?.is_none(), "no worker for a refused reference");
    assert!(get(&cluster, ns2, "secret/borrow-oms-tls")?.is_none(), "no identity for a refused reference");
    Ok(())
}

#[test]
fn a_bridge_the_worker_would_refuse_is_invalid_spec_or_unsupported_and_gets_no_worker() -> anyhow::Result<()> {
    let nats = Broker::up("nats", "bridge-invalid-n")?;
    let cluster = Cluster::up("cloud-a")?;
    cluster.install_crds()?;
    let home = cluster.fresh_namespace("bridge-invalid")?;
    let ns = home.name.as_str();
    let _operator = Operator::start(&cluster, &["--namespace", ns, "--leader-election=false", "--pki-namespace", ns])?;
    // to-eu: `=` where `==` is meant, which the CRD schema cannot tell and the worker's parser can.
    // from-rabbit: ExactlyOnce from a source whose redeliveries get new ids. (Its access point
    // needs no broker: the Bridge is refused before anything connects.) two-workers: several
    // workers reading through one gateway are not built.
    cluster.apply(
        ns,
        &format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: edge-nats}}\n\
             spec: {{driver: nats, external: {{servers: ['{}']}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: rabbit}}\n\
             spec: {{driver: rabbitmq, external: {{servers: ['127.0.0.1:1']}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: cloud-b}}\n\
             spec: {{driver: gateway, endpoint: '127.0.0.1:1', remote: {{namespace: {ns}, name: edge-nats}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders-b}}\n\
             spec: {{accessPointRef: {{name: cloud-b}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders}}\n\
             spec: {{accessPointRef: {{name: edge-nats}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: orders-eu}}\n\
             spec: {{accessPointRef: {{name: edge-nats}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: brief}}\n\
             spec: {{accessPointRef: {{name: edge-nats}}, retention: {{time: 30s}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Queue\nmetadata: {{name: legacy}}\n\
             spec: {{accessPointRef: {{name: rabbit}}}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: to-eu}}\n\
             spec: {{source: {{queueRef: {{name: orders}}}}, target: {{queueRef: {{name: orders-eu}}}}, delivery: ExactlyOnce, filter: \"headers['region'] = 'eu'\"}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: from-rabbit}}\n\
             spec: {{source: {{queueRef: {{name: legacy}}}}, target: {{queueRef: {{name: orders-eu}}}}, delivery: ExactlyOnce}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: two-workers}}\n\
             spec: {{source: {{queueRef: {{name: orders-b}}}}, target: {{queueRef: {{name: orders-eu}}}}, replicas: 2}}\n---\n\
             apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: short-window}}\n\
             spec: {{source: {{queueRef: {{name: orders}}}}, target: {{queueRef: {{name: brief}}}}, delivery: ExactlyOnce}}\n",
            nats.address()
        ),
    )?;
    for (bridge, reason, field) in [
        ("to-eu", "InvalidSpec", "spec.filter: at column 19"),
        ("from-rabbit", "Unsupported", "spec.delivery: ExactlyOnce is unsupported from amqp to nats"),
        ("two-workers", "Unsupported", "spec.replicas: 2 workers from a gateway source are unsupported"),
        (
            "short-window",
            "Unsupported",
            "spec.delivery: ExactlyOnce into stream brief needs a duplicate window of at least 2m",
        ),
    ] {
        let refused = poll(reason, DEADLINE, || {
            Ok(get(&cluster, ns, &format!("bridge/{bridge}"))?.filter(|b| ready_reason(b).as_deref() == Some(reason)))
        })?;
        let message = condition(&refused, "Ready").and_then(|c| c["message"].as_str()).unwrap_or_default().to_owned();
        println!("bridge controller: {bridge}: {reason}: {message}");
        assert!(message.starts_with(field), "names the field and why: {message}");
        let worker = format!("{bridge}-oms-bridge");
        assert!(get(&cluster, ns, &format!("configmap/{worker}"))?.is_none(), "no worker config for {bridge}");
        assert!(get(&cluster, ns, &format!("deployment/{worker}"))?.is_none(), "no worker for {bridge}");
    }

    // What short-window was judged by is what the broker reports, in the target Queue's status.
    for (queue, window) in [("brief", "30s"), ("orders-eu", "2m")] {
        let reported = get(&cluster, ns, &format!("queue/{queue}"))?.context("the Queue")?;
        println!("bridge controller: queue {queue}: duplicateWindow {}", reported["status"]["duplicateWindow"]);
        assert_eq!(reported["status"]["duplicateWindow"], window, "{queue}: the stream's window, read back");
    }

    // The fix is an edit of the Bridge; the worker follows at once, with the guarantee asked for.
    run_ok(cluster.kubectl().args([
        "-n",
        ns,
        "patch",
        "bridge/to-eu",
        "--type=merge",
        "-p",
        r#"{"spec":{"filter":"headers['region'] == 'eu'"}}"#,
    ]))?;
    poll("the worker Deployment after the fix", DEADLINE, || get(&cluster, ns, "deployment/to-eu-oms-bridge"))?;
    let fixed = poll("status.delivery after the fix", DEADLINE, || {
        Ok(get(&cluster, ns, "bridge/to-eu")?.filter(|b| b["status"]["delivery"].is_string()))
    })?;
    println!(
        "bridge controller: after the fix: Ready reason {:?}, delivery {}",
        ready_reason(&fixed),
        fixed["status"]["delivery"]
    );
    assert_ne!(ready_reason(&fixed).as_deref(), Some("InvalidSpec"));
    assert_eq!(fixed["status"]["delivery"], "ExactlyOnce", "NATS into NATS keeps it");
    Ok(())
}
