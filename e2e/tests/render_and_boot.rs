//! Render-and-boot: the StatefulSet and ConfigMap the operator renders for one replica, run for
//! real on this machine (e2e/harness/boot.sh), serve a produce/consume round trip. This proves
//! the broker configs before any pod runs them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use oms_crds::access_point::{Driver, MessagingAccessPointSpec};
use oms_e2e::{repo_root, run};
use std::time::Duration;

use oms_operator::access_point::kafka_quorum::quorum_of;
use oms_operator::access_point::render::{managed_objects, server_names};
use oms_operator::access_point::validate::{Plan, validate};
use oms_operator::drivers::DefaultImages;
use oms_operator::drivers::{managed_driver, rocketmq};
use oms_operator::tenancy;

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

/// The operator's own user's password in the generated credentials Secret.
const ADMIN_PASSWORD: &str = "boot-password";

/// What the access point controller would have generated: the operator's own user (RabbitMQ's
/// and Kafka's) and RabbitMQ's cookie, and a password per tenant (with Mosquitto's password file
/// and RabbitMQ's definitions of them).
fn generated_secrets(tenants: &[String]) -> BTreeMap<String, String> {
    let admin = oms_operator::drivers::generated_credentials(tenancy::ADMIN_USER, ADMIN_PASSWORD, "boot-cookie");
    let mut generated: BTreeMap<String, String> = admin.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let mut lines = String::new();
    let mut users = BTreeMap::from([(tenancy::ADMIN_USER.to_owned(), ADMIN_PASSWORD.to_owned())]);
    for tenant in tenants {
        let password = format!("{tenant}-password");
        lines.push_str(&tenancy::mosquitto_password_line(tenant, &password, b"boot-salt-12"));
        lines.push('\n');
        users.insert(tenant.clone(), password.clone());
        generated.insert(tenant.clone(), password);
        generated.insert(tenancy::username_key(tenant), tenant.clone());
    }
    generated.insert(tenancy::MOSQUITTO_PASSWORDS_KEY.to_owned(), lines);
    let hashes = tenancy::rabbitmq_hashes(&BTreeMap::new(), &users, || *b"boot");
    generated.insert(
        tenancy::RABBITMQ_DEFINITIONS_KEY.to_owned(),
        tenancy::rabbitmq_definitions(tenancy::ADMIN_USER, tenants, &hashes, &[]),
    );
    generated
}

/// Boots the rendered pod and runs the round trip (or `attempts`, a client script run in the
/// pod's network with its DNS name and port); returns what it printed.
/// What the access point controller issues with TLS: a certificate from a CA for the names it
/// renders, in the Secret's layout (`tls/`), and the CA alone as the binding carries it.
fn write_server_certificate(dir: &Path) -> anyhow::Result<()> {
    let ca = oms_pki::Ca::generate("boot CA", Duration::from_hours(1))?;
    let identity = oms_pki::SpiffeId {
        trust_domain: "boot.oms".into(),
        namespace: NAMESPACE.into(),
        kind: "broker".into(),
        name: NAME.into(),
    };
    let issued = ca.issue(&oms_pki::Leaf::new(&identity, server_names(NAME, NAMESPACE), Duration::from_hours(1)))?;
    std::fs::write(dir.join("tls/tls.crt"), &issued.cert_pem)?;
    std::fs::write(dir.join("tls/tls.key"), &issued.key_pem)?;
    std::fs::write(dir.join("tls/ca.crt"), ca.cert_pem())?;
    // Readable by the broker's user, as the pod's fsGroup makes it.
    run(std::process::Command::new("chmod").args(["0444"]).arg(dir.join("tls/tls.key")))?;
    std::fs::write(dir.join("client_ca"), ca.cert_pem())?;
    Ok(())
}

/// Where boot.sh finds a pod volume, in the pod directory.
fn volume_dir(name: &str) -> anyhow::Result<&str> {
    match name {
        "config" => Ok("files"),
        "credentials" => Ok("secret"),
        "data" | "tmp" | "tls" | "probe" => Ok(name),
        other => anyhow::bail!("{other} is not provided by boot.sh"),
    }
}

/// The readiness probe where it is a command (`ready_probe` for boot.sh): installed as the init
/// container does, with the workspace's own oms-probe in place of the operator image's.
fn install_ready_probe(dir: &Path, pod: &PodSpec) -> anyhow::Result<()> {
    let Some(command) = pod.containers[0].readiness_probe.as_ref().and_then(|p| p.exec.as_ref()?.command.clone())
    else {
        return Ok(());
    };
    let installer = pod.init_containers.iter().flatten().find(|c| c.name == "oms-probe").context("probe installer")?;
    let args = installer.command.clone().unwrap_or_default();
    anyhow::ensure!(args.get(1).map(String::as_str) == Some("install"), "the installer runs {args:?}");
    run(std::process::Command::new(oms_e2e::workspace_binary("oms-probe"))
        .arg("install")
        .arg(dir.join("probe/oms-probe")))?;
    std::fs::write(dir.join("ready_probe"), command.join("\n") + "\n")?;
    Ok(())
}

/// With TLS (the default) the round trip checks the broker's certificate against the CA, and a
/// plaintext client with the same login is refused.
fn boot(driver: Driver, spec_yaml: &str) -> anyhow::Result<()> {
    let output = boot_with(driver, "round-trip", spec_yaml, None)?;
    assert!(output.contains(&format!("{driver} round trip ok over TLS")), "{driver}: {output}");
    assert!(output.contains(&format!("{driver} plaintext client refused")), "{driver}: {output}");
    println!("{driver}: round trip over TLS with the binding's CA; plaintext clients refused: 1 of 1");
    // NATS keeps its own health endpoint; the others are ready by oms-probe.
    if driver != Driver::Nats {
        let probe_lines: Vec<&str> = output.lines().filter(|l| l.contains("ready probe")).collect();
        assert!(
            probe_lines.iter().any(|l| l.contains("stopped broker: port open, ready probe failed")),
            "{driver}: the readiness probe must fail while the broker is stopped: {output}"
        );
        println!("{driver}: {}", probe_lines.join("; "));
    }
    Ok(())
}

/// Default images: boot.sh runs the brokers of this machine, whatever the image.
fn test_images() -> DefaultImages {
    DefaultImages {
        kafka: "k".into(),
        nats: "n".into(),
        rabbitmq: "r".into(),
        mqtt: "m".into(),
        rocketmq: "q".into(),
        probe: "p".into(),
    }
}

fn boot_with(driver: Driver, tag: &str, spec_yaml: &str, attempts: Option<&str>) -> anyhow::Result<String> {
    let spec: MessagingAccessPointSpec = serde_yaml_ng::from_str(spec_yaml)?;
    let ap = validate(NAME, NAMESPACE, &spec, "local", None, &test_images()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let Plan::Managed(managed) = ap.plan.clone() else { anyhow::bail!("managed spec expected") };
    let broker = managed_driver(driver).context("driver")?;
    let owner = OwnerReference {
        name: NAME.into(),
        uid: "00010203-0405-0607-0809-0a0b0c0d0e0f".into(),
        ..OwnerReference::default()
    };
    // A new cluster, as the operator renders one (a Kafka forms a dynamic controller quorum).
    let quorum = (driver == Driver::Kafka).then(|| quorum_of(None, None, managed.replicas));
    let objects = managed_objects(&ap, &managed, broker, &owner.uid, &owner, Some("boot-certificate"), quorum);

    let dir = repo_root().join("e2e/.state/boot").join(format!("{driver}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["files", "data", "tmp", "secret", "tls", "probe"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    if managed.tls {
        write_server_certificate(&dir)?;
    }
    // The image's broker user writes the data volume (fsGroup in a pod).
    run(std::process::Command::new("chmod").args(["-R", "0777"]).arg(dir.join("data")).arg(dir.join("tmp")))?;
    for (file, content) in objects.config_map.data.clone().unwrap_or_default() {
        let path = dir.join("files").join(&file);
        std::fs::write(&path, content)?;
        run(std::process::Command::new("chmod").arg("0555").arg(&path))?;
    }
    let generated = generated_secrets(&tenancy::tenants(NAMESPACE, &ap.shared_with));
    let pod = objects.stateful_set.spec.clone().context("spec")?.template.spec.context("pod spec")?;
    for volume in pod.volumes.clone().unwrap_or_default() {
        for item in volume.secret.and_then(|s| s.items).unwrap_or_default() {
            let content = generated.get(item.key.as_str()).context("a generated Secret key")?;
            std::fs::write(dir.join("secret").join(&item.path), content)?;
        }
    }
    // The client logs in as the access point's own tenant (on RabbitMQ, in its virtual host); on
    // Kafka and RocketMQ, whose tenant users the operator makes through the admin API once it
    // runs, as the operator's user, which the storage format (the broker's first start) made.
    let client_user = if matches!(driver, Driver::Kafka | Driver::Rocketmq) {
        format!("{}:{ADMIN_PASSWORD}", tenancy::ADMIN_USER)
    } else {
        format!("{NAMESPACE}:{}", generated[NAMESPACE])
    };
    std::fs::write(dir.join("client_user"), client_user)?;
    // The Kafka attempts are a program of this crate, run from the pod's tools.
    std::fs::create_dir_all(dir.join("tools"))?;
    std::fs::copy(env!("CARGO_BIN_EXE_kafka-tenancy"), dir.join("tools/kafka-tenancy"))?;
    std::fs::copy(env!("CARGO_BIN_EXE_rocketmq-tenancy"), dir.join("tools/rocketmq-tenancy"))?;
    if driver == Driver::Rabbitmq {
        std::fs::write(dir.join("client_vhost"), NAMESPACE)?;
    }
    if let Some(script) = attempts {
        std::fs::write(dir.join("attempts.sh"), script)?;
    }
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
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.clone().unwrap_or_default() {
        let dir = volume_dir(&mount.name).with_context(|| format!("{driver}: volume {}", mount.name))?;
        mounts.push(format!("{} {dir}", mount.mount_path));
    }
    std::fs::write(dir.join("mounts"), mounts.join("\n") + "\n")?;
    std::fs::write(dir.join("hostname"), &hostname)?;
    install_ready_probe(&dir, &pod)?;
    let security = pod.security_context.clone().context("pod security context")?;
    anyhow::ensure!(security.run_as_non_root == Some(true), "{driver}: the broker pod must not run as root");
    std::fs::write(dir.join("run_as"), security.run_as_user.context("runAsUser")?.to_string())?;
    std::fs::write(dir.join("pod_host"), format!("{hostname}.{NAME}.{NAMESPACE}.svc"))?;

    let kind = driver.as_str();
    // RocketMQ's round trip finds the broker through the name server, as RocketMQ's own clients do.
    let port = if driver == Driver::Rocketmq { rocketmq::NAME_SERVER_PORT } else { broker.client_port(managed.tls) };
    let output = run(std::process::Command::new(repo_root().join("e2e/harness/boot.sh"))
        .arg(kind)
        .arg(&dir)
        .arg(port.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{kind}:\n{stdout}\n{stderr}");
    std::fs::remove_dir_all(&dir)?;
    // The script's own lines (which attempt got in, which own operation failed) go to stderr.
    Ok(stdout + &stderr)
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
fn rendered_rabbitmq_pod_boots_with_its_tenant_user_and_round_trips_a_quorum_queue() -> anyhow::Result<()> {
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

/// Name server, broker and proxy from the official image's layout; the client signs as the
/// operator's user, whom the broker made a super user at its first start.
#[test]
fn rendered_rocketmq_pod_boots_name_server_broker_and_proxy_and_round_trips() -> anyhow::Result<()> {
    boot(Driver::Rocketmq, "{driver: rocketmq, managed: {replicas: 1, config: {sendMessageThreadPoolNums: '2'}}}")
}

#[test]
fn kubelet_style_expansion_replaces_known_references_only() {
    let env: BTreeMap<String, String> = [("POD_NAME".to_owned(), "boot-0".to_owned())].into();
    assert_eq!(expand("rabbit@$(POD_NAME).boot.oms.svc", &env), "rabbit@boot-0.boot.oms.svc");
    assert_eq!(expand("$(UNKNOWN)-x", &env), "$(UNKNOWN)-x");
}

/// Tenant `globex` against tenant `oms` on a managed NATS shared by both (`oms` owns it): every
/// try is judged by its effect on what `oms` sees, and `oms`'s own operations must work.
const NATS_ATTEMPTS: &str = r#"
cd / # the checkout may be hidden under the pod's own /tmp
host=$1 port=$2
as() { local who=$1; shift; nats --server "nats://$host:$port" --timeout 5s --user "$who" --password "$who-password" "$@" 2>&1; }
# oms's stream as oms sees it, in $count: its messages, or "gone" when the server says there is no
# such stream. A look that fails stops the run: it must not pass for a change an attempt made.
look() {
	local info end=$((SECONDS + 30))
	while :; do
		info=$(as oms req '$JS.API.STREAM.INFO.oms_orders' '' --raw)
		if [[ $info == *'"err_code":10059'* ]]; then count=gone; return; fi
		if [[ $info =~ \"messages\":\ *([0-9]+) ]]; then count=${BASH_REMATCH[1]}; return; fi
		((SECONDS < end)) || { echo "oms cannot look at its stream: $info" >&2; exit 1; }
		sleep 0.5
	done
}
own=0 own_ok=0 tries=0 got_in=0
# A tenant's own operation, tried for up to 30 s: on a loaded machine one try may time out.
mine() {
	local end=$((SECONDS + 30))
	own=$((own + 1))
	until "$@" >/dev/null; do
		((SECONDS < end)) || { echo "own operation failed: $*" >&2; return; }
		sleep 0.5
	done
	own_ok=$((own_ok + 1))
}
try() { tries=$((tries + 1)); if [[ $1 == yes ]]; then got_in=$((got_in + 1)); echo "got in: $2" >&2; fi; }
mine as oms stream add oms_orders --subjects oms_orders --storage file --defaults
mine as oms pub oms_orders first --jetstream
mine as globex stream add globex_orders --subjects globex_orders --storage file --defaults
mine as globex pub globex_orders theirs --jetstream
look; before=$count
out=$(as globex stream info oms_orders); try "$([[ $out == *"Messages"* ]] && echo yes)" "read the stream"
out=$(as globex stream get oms_orders 1); try "$([[ $out == *first* ]] && echo yes)" "read a message"
out=$(as globex sub oms_orders --stream oms_orders --all --count 1 --wait 3s); try "$([[ $out == *first* ]] && echo yes)" "consume"
as globex pub oms_orders intruder --jetstream >/dev/null; look; try "$([[ $count != "$before" ]] && echo yes)" "write"
as globex stream purge oms_orders -f >/dev/null; look; try "$([[ $count != "$before" ]] && echo yes)" "purge"
as globex stream rm oms_orders -f >/dev/null; look; try "$([[ $count == gone ]] && echo yes)" "delete"
as globex stream add oms_new --subjects oms_new --defaults >/dev/null; out=$(as oms stream info oms_new); try "$([[ $out == *"Messages"* ]] && echo yes)" "create in oms's account"
out=$(nats --server "nats://$host:$port" --timeout 5s pub oms_orders anonymous 2>&1); try "$([[ $out != *"uthorization"* && $out != *rror* ]] && echo yes)" "connect without a password"
out=$(nats --server "nats://$host:$port" --timeout 5s --user oms --password wrong pub oms_orders x 2>&1); try "$([[ $out != *"uthorization"* && $out != *rror* ]] && echo yes)" "connect with a wrong password"
mine as oms stream get oms_orders 1
echo "tenancy nats: tenant globex: $tries attempts on tenant oms's queues, $got_in succeeded; own operations: $own_ok of $own succeeded"
"#;

/// The same on a managed Mosquitto: `globex` against `oms`'s topics, judged by what `oms` sees.
const MQTT_ATTEMPTS: &str = r#"
cd /
host=$1 port=$2
pub() { local who=$1; shift; mosquitto_pub -h "$host" -p "$port" -u "$who" -P "$who-password" -q 1 "$@" 2>&1; }
sub() { local who=$1; shift; mosquitto_sub -h "$host" -p "$port" -u "$who" -P "$who-password" -q 1 -W 3 "$@" 2>&1; }
own=0 own_ok=0 tries=0 got_in=0
mine() { own=$((own + 1)); if [[ $1 == yes ]]; then own_ok=$((own_ok + 1)); else echo "own operation failed: $2" >&2; fi; }
try() { tries=$((tries + 1)); if [[ $1 == yes ]]; then got_in=$((got_in + 1)); echo "got in: $2" >&2; fi; }
# The retained message of `$2` as `$1` sees it, in $retained: "none" when the wait runs out (exit
# 27). A retained message comes as soon as the subscription is made, so the long wait is only
# spent when there is none. A look that fails otherwise stops the run: it must not pass for a
# change an attempt made.
look() {
	local status=0
	retained=$(mosquitto_sub -h "$host" -p "$port" -u "$1" -P "$1-password" -q 1 -W 20 -t "$2" -C 1 2>&1) || status=$?
	case $status in
	0) ;;
	27) retained=none ;;
	*) echo "$1 cannot read $2 (exit $status): $retained" >&2; exit 1 ;;
	esac
}
pub oms -r -t oms/orders -m oms-secret >/dev/null
look oms oms/orders; mine "$([[ $retained == oms-secret ]] && echo yes)" "oms reads its retained message"
pub globex -r -t globex/orders -m theirs >/dev/null
look globex globex/orders; mine "$([[ $retained == theirs ]] && echo yes)" "globex reads its own topic"
out=$(sub globex -t oms/orders -C 1); try "$([[ $out == *oms-secret* ]] && echo yes)" "read oms/orders"
out=$(sub globex -t '#' -C 2); try "$([[ $out == *oms-secret* ]] && echo yes)" "read everything (#)"
pub globex -r -t oms/orders -m intruder >/dev/null; look oms oms/orders; try "$([[ $retained != oms-secret ]] && echo yes)" "write oms/orders"
pub globex -r -n -t oms/orders >/dev/null; look oms oms/orders; try "$([[ $retained != oms-secret ]] && echo yes)" "delete oms's retained message"
mosquitto_pub -h "$host" -p "$port" -q 1 -r -t oms/orders -m anonymous >/dev/null 2>&1; look oms oms/orders; try "$([[ $retained != oms-secret ]] && echo yes)" "write without a password"
out=$(mosquitto_sub -h "$host" -p "$port" -u oms -P wrong -q 1 -W 3 -t oms/orders -C 1 2>&1); try "$([[ $out == *oms-secret* ]] && echo yes)" "read with a wrong password"
echo "tenancy mqtt: tenant globex: $tries attempts on tenant oms's queues, $got_in succeeded; own operations: $own_ok of $own succeeded"
"#;

/// The same on a managed RabbitMQ: `globex` (its own user and virtual host) against `oms`'s
/// queue, judged by what `oms` sees in its virtual host.
const RABBITMQ_ATTEMPTS: &str = r#"
cd /
exec "${PATH%%:*}/amqp-venv/bin/python" - "$1" "$2" <<'PY'
import sys, time, pika
host, port = sys.argv[1], int(sys.argv[2])
# How long an own operation or a look may keep failing: on a loaded machine one try may time out.
PATIENCE = 30
def connect(user, vhost, password=None):
    credentials = pika.PlainCredentials(user, password or f"{user}-password")
    return pika.BlockingConnection(pika.ConnectionParameters(host, port, virtual_host=vhost, credentials=credentials,
                                                             connection_attempts=1, socket_timeout=5))
own = own_ok = tries = got_in = 0
def mine(what, operation):
    global own, own_ok
    own += 1
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            operation()
            own_ok += 1
            return
        except Exception as error:
            if time.monotonic() >= deadline:
                print(f"own operation failed: {what}: {error!r}", file=sys.stderr)
                return
        time.sleep(0.5)
def attempt(what, operation):
    global tries, got_in
    tries += 1
    try:
        succeeded = bool(operation())
    except Exception:
        succeeded = False
    if succeeded:
        got_in += 1
        print(f"got in: {what}", file=sys.stderr)
def messages():
    """Messages in oms's queue orders, or None when it is gone. A look that fails stops the run
    (SystemExit passes the attempts' `except Exception`): it must not pass for an attempt's effect."""
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            with connect("oms", "oms") as connection:
                try:
                    return connection.channel().queue_declare("orders", passive=True).method.message_count
                except pika.exceptions.ChannelClosedByBroker:
                    return None
        except Exception as error:
            if time.monotonic() >= deadline:
                sys.exit(f"oms cannot look at its queue: {error!r}")
        time.sleep(0.5)
def declare_and_write(who, body):
    with connect(who, who) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare("orders", durable=True, arguments={"x-queue-type": "quorum"})
        channel.basic_publish("", "orders", body, mandatory=True)
def in_oms(operation):
    with connect("globex", "oms") as connection:
        return operation(connection.channel())
def in_own(operation):
    """Whether an operation in globex's own virtual host changed oms's queue."""
    prior = messages()
    with connect("globex", "globex") as connection:
        operation(connection.channel())
    return messages() != prior
mine("declare and write oms/orders", lambda: declare_and_write("oms", b"oms-secret"))
mine("declare and write globex/orders", lambda: declare_and_write("globex", b"theirs"))
attempt("open oms's virtual host", lambda: in_oms(lambda channel: True))
attempt("read oms/orders", lambda: in_oms(lambda channel: channel.basic_get("orders")[2] == b"oms-secret"))
attempt("write into oms's virtual host", lambda: in_oms(lambda channel: channel.basic_publish("", "orders", b"intruder") or True))
attempt("declare in oms's virtual host", lambda: in_oms(lambda channel: channel.queue_declare("globex-was-here") and True))
attempt("write to orders through the default exchange", lambda: in_own(lambda channel: channel.basic_publish("", "orders", b"intruder")))
attempt("purge orders", lambda: in_own(lambda channel: channel.queue_purge("orders")))
attempt("delete orders", lambda: in_own(lambda channel: channel.queue_delete("orders")))
attempt("open the admin's virtual host", lambda: connect("globex", "/") and True)
attempt("connect as oms with a wrong password", lambda: connect("oms", "oms", "wrong") and True)
def read_back():
    with connect("oms", "oms") as connection:
        assert connection.channel().basic_get("orders", auto_ack=True)[2] == b"oms-secret"
mine("read oms/orders back", read_back)
print(f"tenancy rabbitmq: tenant globex: {tries} attempts on tenant oms's queues, {got_in} succeeded; own operations: {own_ok} of {own} succeeded")
PY
"#;

/// `(attempts, successes, own operations, own successes)` from an attempts script's summary line.
fn attempt_counts(output: &str) -> Option<(u32, u32, u32, u32)> {
    let line = output.lines().find(|l| l.starts_with("tenancy "))?;
    let numbers: Vec<u32> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).filter_map(|n| n.parse().ok()).collect();
    match numbers[..] {
        [tries, got_in, own_ok, own] => Some((tries, got_in, own, own_ok)),
        _ => None,
    }
}

/// The same on a managed Kafka: e2e/src/bin/kafka-tenancy.rs, after it gave both tenants their
/// users and ACLs as the operator does (and, `permissive`, `globex` every name besides).
fn kafka_attempts(permissive: bool) -> String {
    let mode = if permissive { " permissive" } else { "" };
    format!("cd /\nexec kafka-tenancy \"$1\" \"$2\" {} {ADMIN_PASSWORD}{mode}\n", tenancy::ADMIN_USER)
}

/// On a managed RocketMQ, as if `oms` shared it with `globex`: the operator's user code gives both
/// tenants their users and grants (e2e/src/bin/rocketmq-tenancy.rs), RocketMQ's own client makes
/// `globex`'s attempts (RocketmqClient `tenancy`), and then `globex` is taken off as the operator
/// does. The port is the name server's.
fn rocketmq_attempts() -> String {
    let admin = tenancy::ADMIN_USER;
    format!(
        r#"
cd /
tools=${{PATH%%:*}}
rocketmq-tenancy grant "$1:$2" {admin} {ADMIN_PASSWORD}
ROCKETMQ_USER={admin} ROCKETMQ_PASSWORD={ADMIN_PASSWORD} java -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
	-Duser.home=/tmp -cp "$tools/rocketmq-client:$tools/rocketmq/lib/*" RocketmqClient tenancy "$1:$2" oms globex
rocketmq-tenancy remove-globex "$1:$2" {admin} {ADMIN_PASSWORD}
"#
    )
}

/// The spec the tenancy tests boot: `oms`'s access point, shared with `globex`. In plaintext
/// (`spec.tls.enabled: false`, which these boots prove renders a working broker): who may do
/// what is the same either way, and the attempts use the clients as they come.
fn shared_spec(driver: Driver) -> String {
    // RabbitMQ: the only version this machine has (the renderer renders by it).
    let image = if driver == Driver::Rabbitmq { ", image: 'rabbitmq:3.10'" } else { "" };
    format!(
        "{{driver: {driver}, managed: {{replicas: 1{image}}}, sharing: {{tenants: [globex]}}, tls: {{enabled: false}}}}"
    )
}

#[test]
fn on_shared_kafka_nats_rabbitmq_and_mosquitto_a_tenant_reaches_only_its_own_queues() -> anyhow::Result<()> {
    let kafka = kafka_attempts(false);
    for (driver, script) in [
        (Driver::Kafka, kafka.as_str()),
        (Driver::Nats, NATS_ATTEMPTS),
        (Driver::Rabbitmq, RABBITMQ_ATTEMPTS),
        (Driver::Mqtt, MQTT_ATTEMPTS),
    ] {
        let output = boot_with(driver, "tenancy", &shared_spec(driver), Some(script))?;
        let (tries, got_in, own, own_ok) =
            attempt_counts(&output).with_context(|| format!("a summary line in: {output}"))?;
        for line in
            output.lines().filter(|l| ["tenancy ", "kafka users:", "rocketmq users:"].iter().any(|p| l.starts_with(p)))
        {
            println!("{line}");
        }
        assert!(tries >= 6, "{driver}: {output}");
        assert_eq!(got_in, 0, "{driver}: no attempt on another tenant's queues succeeds: {output}");
        assert_eq!(own_ok, own, "{driver}: the tenants' own operations succeed: {output}");
    }
    Ok(())
}

/// The control of the Kafka attempts: with ACLs that give `globex` every name, they see it get in.
#[test]
fn kafka_attempts_see_a_tenant_get_in_where_acls_let_it() -> anyhow::Result<()> {
    let output = boot_with(Driver::Kafka, "permissive", &shared_spec(Driver::Kafka), Some(&kafka_attempts(true)))?;
    let (tries, got_in, _, _) = attempt_counts(&output).with_context(|| format!("a summary line in: {output}"))?;
    println!("control, globex granted every name: {tries} attempts, {got_in} got in");
    assert!(got_in >= 6, "the attempts must tell a way in when there is one: {output}");
    Ok(())
}

/// Why a managed RocketMQ is not shared: its users and grants, as the operator would make them for
/// two tenants, keep their queues apart, but RocketMQ 5.3 authorizes no request that names no
/// resource, so any user it knows reads the broker's config (with the super user's password in
/// it) and changes it. The validation refuses `spec.sharing` for it; this pins the reason (a
/// RocketMQ that closes the hole fails the last assertion, and sharing can be offered).
#[test]
fn rocketmq_grants_keep_tenants_queues_apart_but_not_the_broker_so_sharing_is_refused() -> anyhow::Result<()> {
    let spec = "{driver: rocketmq, managed: {replicas: 1}, tls: {enabled: false}}";
    let output = boot_with(Driver::Rocketmq, "grants", spec, Some(&rocketmq_attempts()))?;
    let (tries, got_in, own, own_ok) =
        attempt_counts(&output).with_context(|| format!("a summary line in: {output}"))?;
    for line in output.lines().filter(|l| ["tenancy ", "config ", "rocketmq users:"].iter().any(|p| l.starts_with(p))) {
        println!("{line}");
    }
    assert!(tries >= 7, "{output}");
    assert_eq!(got_in, 0, "no attempt on another tenant's queues succeeds: {output}");
    assert_eq!(own_ok, own, "the tenants' own operations succeed: {output}");
    let config = output.lines().find(|l| l.starts_with("config rocketmq:")).context("the config attempts' line")?;
    assert!(config.ends_with("2 attempts on the broker, 2 succeeded"), "{output}");
    let shared: MessagingAccessPointSpec =
        serde_yaml_ng::from_str("{driver: rocketmq, managed: {replicas: 1}, sharing: {tenants: [globex]}}")?;
    let refused = validate(NAME, NAMESPACE, &shared, "local", None, &test_images()).expect_err("sharing refused");
    assert_eq!(refused.field, "spec.sharing");
    Ok(())
}
