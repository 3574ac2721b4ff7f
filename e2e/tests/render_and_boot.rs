//! Render-and-boot: the StatefulSet and ConfigMap the operator renders for one replica, run for
//! real on this machine (e2e/harness/boot.sh), serve a produce/consume round trip. This proves
//! the broker configs before any pod runs them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use oms_crds::access_point::{Driver, MessagingAccessPointSpec};
use oms_e2e::{repo_root, run};
use oms_operator::access_point::render::managed_objects;
use oms_operator::access_point::validate::{DefaultImages, Plan, validate};
use oms_operator::drivers::managed_driver;

const NAME: &str = "boot";
const NAMESPACE: &str = "oms";

/// Expands `$(VAR)` references the way the kubelet does for container env values.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) if env.contains_key(&after[..end]) => {
                out.push_str(&env[&after[..end]]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn boot(driver: Driver, spec_yaml: &str) -> anyhow::Result<()> {
    let spec: MessagingAccessPointSpec = serde_yaml::from_str(spec_yaml)?;
    let images = DefaultImages { kafka: "k".into(), nats: "n".into(), rabbitmq: "r".into(), mqtt: "m".into() };
    let ap = validate(NAME, NAMESPACE, &spec, "local", &images).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Plan::Managed(managed) = ap.plan.clone() else { anyhow::bail!("managed spec expected") };
    let broker = managed_driver(driver).context("driver")?;
    let owner = OwnerReference {
        name: NAME.into(),
        uid: "00010203-0405-0607-0809-0a0b0c0d0e0f".into(),
        ..OwnerReference::default()
    };
    let objects = managed_objects(&ap, &managed, broker, &owner.uid, &owner);

    let dir = repo_root().join("e2e/.state/boot").join(format!("{driver}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["files", "data", "tmp", "secret"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    // The image's broker user writes the data volume (fsGroup in a pod).
    run(std::process::Command::new("chmod").args(["-R", "0777"]).arg(dir.join("data")).arg(dir.join("tmp")))?;
    for (file, content) in objects.config_map.data.clone().unwrap_or_default() {
        let path = dir.join("files").join(&file);
        std::fs::write(&path, content)?;
        run(std::process::Command::new("chmod").arg("0555").arg(&path))?;
    }
    // What the access point controller would have generated into the credentials Secret.
    let generated: BTreeMap<&str, String> =
        oms_operator::drivers::rabbitmq::generated_credentials("oms-admin", "boot-password", "boot-cookie").into();
    let pod = objects.stateful_set.spec.clone().context("spec")?.template.spec.context("pod spec")?;
    for volume in pod.volumes.clone().unwrap_or_default() {
        for item in volume.secret.and_then(|s| s.items).unwrap_or_default() {
            let content = generated.get(item.key.as_str()).context("a generated Secret key")?;
            std::fs::write(dir.join("secret").join(&item.path), content)?;
        }
    }
    std::fs::write(dir.join("amqp_user"), format!("{}:{}", generated["username"], generated["password"]))?;
    let container = &pod.containers[0];
    let hostname = format!("{NAME}-0");
    let mut env = BTreeMap::new();
    for var in container.env.clone().unwrap_or_default() {
        let value = match (&var.value, var.value_from.as_ref().and_then(|f| f.field_ref.as_ref())) {
            (Some(value), _) => expand(value, &env),
            (None, Some(field)) if field.field_path == "metadata.name" => hostname.clone(),
            (None, Some(field)) if field.field_path == "metadata.namespace" => NAMESPACE.to_owned(),
            (None, None) => match var.value_from.as_ref().and_then(|f| f.secret_key_ref.as_ref()) {
                Some(secret) => generated.get(secret.key.as_str()).context("a generated Secret key")?.clone(),
                None => anyhow::bail!("{driver}: env {} has no value", var.name),
            },
            _ => anyhow::bail!("{driver}: env {} comes from a source boot.sh cannot provide", var.name),
        };
        env.insert(var.name, value);
    }
    let env_lines: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    std::fs::write(dir.join("env"), env_lines.join("\n") + "\n")?;
    std::fs::write(dir.join("command"), container.command.clone().unwrap_or_default().join("\n") + "\n")?;
    let volume_dir = |name: &str| -> anyhow::Result<&Path> {
        Ok(match name {
            "config" => Path::new("files"),
            "data" => Path::new("data"),
            "tmp" => Path::new("tmp"),
            "credentials" => Path::new("secret"),
            other => anyhow::bail!("{driver}: volume {other} is not provided by boot.sh"),
        })
    };
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.clone().unwrap_or_default() {
        mounts.push(format!("{} {}", mount.mount_path, volume_dir(&mount.name)?.display()));
    }
    std::fs::write(dir.join("mounts"), mounts.join("\n") + "\n")?;
    std::fs::write(dir.join("hostname"), &hostname)?;
    std::fs::write(dir.join("pod_host"), format!("{hostname}.{NAME}.{NAMESPACE}.svc"))?;

    let kind = driver.as_str();
    let output = run(std::process::Command::new(repo_root().join("e2e/harness/boot.sh"))
        .arg(kind)
        .arg(&dir)
        .arg(broker.client_port().to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("round trip ok"), "{kind}:\n{stdout}\n{stderr}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn rendered_kafka_pod_boots_kraft_and_round_trips_through_its_advertised_name() -> anyhow::Result<()> {
    boot(Driver::Kafka, "{driver: kafka, managed: {replicas: 1, config: {num.partitions: '2'}}}")
}

#[test]
fn rendered_nats_pod_boots_jetstream_and_round_trips() -> anyhow::Result<()> {
    boot(Driver::Nats, "{driver: nats, managed: {replicas: 1, config: {max_payload: '2097152'}}}")
}

#[test]
fn rendered_rabbitmq_pod_boots_with_its_generated_user_and_round_trips_a_quorum_queue() -> anyhow::Result<()> {
    // Debian ships RabbitMQ 3.10: the operator renders for the version of the image it is given.
    boot(
        Driver::Rabbitmq,
        "{driver: rabbitmq, managed: {replicas: 1, image: 'rabbitmq:3.10', config: {channel_max: '512'}}}",
    )
}

#[test]
fn rendered_mosquitto_pod_boots_with_persistence_and_round_trips() -> anyhow::Result<()> {
    boot(Driver::Mqtt, "{driver: mqtt, managed: {replicas: 1, config: {max_inflight_messages: '40'}}}")
}

#[test]
fn kubelet_style_expansion_replaces_known_references_only() {
    let env: BTreeMap<String, String> = [("POD_NAME".to_owned(), "boot-0".to_owned())].into();
    assert_eq!(expand("rabbit@$(POD_NAME).boot.oms.svc", &env), "rabbit@boot-0.boot.oms.svc");
    assert_eq!(expand("$(UNKNOWN)-x", &env), "$(UNKNOWN)-x");
}
