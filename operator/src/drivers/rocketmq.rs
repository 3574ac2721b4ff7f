//! Apache RocketMQ 5 on the official `apache/rocketmq` image: in each pod a name server and a
//! broker with the 5.x proxy in the broker's process (the proxy's "local" mode, one JVM fewer
//! than a separate proxy). A local proxy serves only its own broker, so that a client reaching
//! one Service address would miss the messages of the others: one replica, until brokers are
//! reached each at its own address. With TLS (the default) every client port (proxy, name server,
//! broker) takes TLS only; authentication and authorization (ACL 2.0) are on, with the
//! operator's user as the first super user.
//!
//! The container runs `start.sh` (rendered here), which writes the files the processes read into
//! the pod's /tmp, starts both JVMs directly (the image's scripts keep a shell between the
//! kubelet and Java, which drops SIGTERM) and stops both when either ends or a signal comes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use oms_crds::common::{Capabilities, Dedup, Ordering};

use super::{
    ADMIN_PASSWORD_ENV, ADMIN_USER_ENV, BrokerDriver, BrokerInput, BrokerPod, credentials_secret, passthrough_lines,
    secret_env,
};

pub struct Rocketmq;

/// The proxy's gRPC port: what clients use.
pub const PROXY_PORT: u16 = 8081;
/// The name servers' port, where clients and the operator find the brokers.
pub const NAME_SERVER_PORT: u16 = 9876;
/// The broker's remoting port: the operator provisions topics there.
pub const BROKER_PORT: u16 = 10911;
/// The proxy's remoting port (RocketMQ 4 clients through the proxy); not offered outside the pod.
const PROXY_REMOTING_PORT: u16 = 8080;

const CONFIG_DIR: &str = "/home/rocketmq/oms/config";
const TLS_DIR: &str = "/home/rocketmq/oms/tls";
const DATA_DIR: &str = "/home/rocketmq/data";
/// The files the processes read, written at each start into the pod's /tmp: they carry the
/// operator's password, and the broker writes config changes made through its admin API back
/// into its file, which must not outlive the pod (the ConfigMap is what counts).
const RUN_DIR: &str = "/tmp/rocketmq";

/// The user the image runs as (`rocketmq`).
const IMAGE_USER: i64 = 3000;

impl BrokerDriver for Rocketmq {
    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    fn ports(&self, _tls: bool) -> Vec<(&'static str, u16)> {
        vec![("grpc", PROXY_PORT), ("name-server", NAME_SERVER_PORT), ("remoting", BROKER_PORT)]
    }

    /// Clients also find the brokers through the name servers and read and write there (RocketMQ 4
    /// clients; bridges keep their positions there). The name server takes no login, which is one
    /// reason a managed RocketMQ is not shared.
    fn tenant_ports(&self, _tls: bool) -> Vec<u16> {
        vec![PROXY_PORT, NAME_SERVER_PORT, BROKER_PORT]
    }

    fn owned_config_keys(&self) -> &'static [&'static str] {
        &[
            "brokerClusterName",
            "brokerName",
            "brokerId",
            "brokerRole",
            "brokerIP1",
            "brokerIP2",
            "namesrvAddr",
            "listenPort",
            "haListenPort",
            "storePathRootDir",
            "storePathCommitLog",
            "autoCreateTopicEnable",
            "authenticationEnabled",
            "authenticationProvider",
            "authenticationMetadataProvider",
            "authenticationStrategy",
            "authenticationWhitelist",
            "authorizationEnabled",
            "authorizationProvider",
            "authorizationMetadataProvider",
            "authorizationStrategy",
            "authorizationWhitelist",
            "initAuthenticationUser",
            "innerClientAuthenticationCredentials",
            "migrateAuthFromV1Enabled",
        ]
    }

    fn max_replicas(&self) -> i32 {
        1
    }

    fn max_replicas_reason(&self) -> &'static str {
        "each broker's proxy runs in its process and serves only that broker (RocketMQ's local mode), so a client \
         reaching the access point's one address would miss the others' messages"
    }

    fn config_dir(&self) -> &'static str {
        CONFIG_DIR
    }

    fn tls_dir(&self) -> &'static str {
        TLS_DIR
    }

    fn data_dir(&self) -> &'static str {
        DATA_DIR
    }

    fn run_as(&self) -> i64 {
        IMAGE_USER
    }

    fn render(&self, broker: &BrokerInput) -> BrokerPod {
        let domain = format!("{}.{}.svc", broker.name, broker.namespace);
        let credentials = credentials_secret(&broker.name);
        let mut probe: Vec<String> = [
            "rocketmq",
            "--port",
            &PROXY_PORT.to_string(),
            "--name-server-port",
            &NAME_SERVER_PORT.to_string(),
            "--broker-port",
            &BROKER_PORT.to_string(),
            "--domain",
            &domain,
        ]
        .map(str::to_owned)
        .into();
        if broker.tls {
            probe.extend(["--ca".to_owned(), format!("{TLS_DIR}/ca.crt")]);
        }
        BrokerPod {
            files: BTreeMap::from([
                ("start.sh".to_owned(), start_script(&domain, broker.tls)),
                ("namesrv.conf".to_owned(), name_server_conf()),
                ("broker.conf".to_owned(), broker_conf(broker)),
                ("proxy.json".to_owned(), proxy_json(broker)),
            ]),
            command: vec!["bash".into(), format!("{CONFIG_DIR}/start.sh")],
            env: vec![
                secret_env(ADMIN_USER_ENV, &credentials, "username"),
                secret_env(ADMIN_PASSWORD_ENV, &credentials, "password"),
            ],
            ready_probe: Some(probe),
            ..BrokerPod::default()
        }
    }
}

/// What the operator makes of RocketMQ 5, managed or not: normal topics with read and write
/// queues on every broker (partitions), message keys and properties; no order promise, no
/// broker-side deduplication, no priorities, and no delay (FIFO and DELAY topics are not made
/// yet).
#[must_use]
pub fn capabilities() -> Capabilities {
    Capabilities {
        partitions: true,
        ordering: Ordering::None,
        dedup: Dedup::None,
        delay: false,
        priority: false,
        headers: true,
        queue_objects: true,
    }
}

/// Every pod's name server (`host:port`), as brokers register with them and clients find them.
#[must_use]
pub fn name_servers(name: &str, namespace: &str, replicas: i32) -> Vec<String> {
    (0..replicas).map(|ordinal| format!("{}:{NAME_SERVER_PORT}", super::pod_host(name, namespace, ordinal))).collect()
}

/// The name servers as RocketMQ's configs list them.
fn name_server_list(broker: &BrokerInput) -> String {
    name_servers(&broker.name, &broker.namespace, broker.replicas).join(";")
}

fn name_server_conf() -> String {
    format!(
        "# Rendered by oms-operator.\nlistenPort={NAME_SERVER_PORT}\nkvConfigPath={DATA_DIR}/namesrv/kvConfig.json\n"
    )
}

/// The broker's file as the ConfigMap holds it; `start.sh` adds this pod's name and address and
/// the operator's user.
fn broker_conf(broker: &BrokerInput) -> String {
    let mut conf = String::from("# Rendered by oms-operator.\n");
    let _ = write!(
        conf,
        "brokerClusterName={}\nbrokerId=0\nbrokerRole=ASYNC_MASTER\nnamesrvAddr={}\nlistenPort={BROKER_PORT}\n\
         storePathRootDir={DATA_DIR}/store\nstorePathCommitLog={DATA_DIR}/store/commitlog\n",
        broker.name,
        name_server_list(broker)
    );
    // Topics come from Queues only.
    conf.push_str("autoCreateTopicEnable=false\n");
    // Every request signed by a user the broker knows, and allowed by that user's ACLs; users and
    // ACLs in the broker's own store (RocketMQ's ACL 2.0).
    conf.push_str(
        "authenticationEnabled=true\n\
         authenticationMetadataProvider=org.apache.rocketmq.auth.authentication.provider.LocalAuthenticationMetadataProvider\n\
         authorizationEnabled=true\n\
         authorizationMetadataProvider=org.apache.rocketmq.auth.authorization.provider.LocalAuthorizationMetadataProvider\n",
    );
    conf.push_str(&passthrough_lines(&broker.config, "="));
    conf
}

/// The proxy's file (JSON); `start.sh` names the proxy after the pod. Its own name must differ
/// from the broker's: RocketMQ caches its authentication by that name.
fn proxy_json(broker: &BrokerInput) -> String {
    let mut proxy = serde_json::json!({
        "rocketMQClusterName": broker.name,
        "proxyName": "@POD_NAME@-proxy",
        "namesrvAddr": name_server_list(broker),
        "grpcServerPort": PROXY_PORT,
        "remotingListenPort": PROXY_REMOTING_PORT,
        // A stop waits this long for clients' open streams (30 s by default, the pod's whole grace
        // period): the broker and the name server must stop in that time too.
        "grpcShutdownTimeSeconds": 5,
        // Clients through the proxy are checked against the broker's users and ACLs.
        "authenticationEnabled": true,
        "authenticationMetadataProvider": "org.apache.rocketmq.proxy.auth.ProxyAuthenticationMetadataProvider",
        "authorizationEnabled": true,
        "authorizationMetadataProvider": "org.apache.rocketmq.proxy.auth.ProxyAuthorizationMetadataProvider",
    });
    // With TLS the proxy serves our certificate; without, it still builds a TLS context at start
    // and makes itself a certificate for it (its "test mode"), which no listener then offers.
    if broker.tls {
        proxy["tlsTestModeEnable"] = false.into();
        proxy["tlsCertPath"] = format!("{TLS_DIR}/tls.crt").into();
        proxy["tlsKeyPath"] = format!("{TLS_DIR}/tls.key").into();
    }
    format!("{proxy:#}\n")
}

/// The JVM options both processes share: TLS only on every listener (and towards the name
/// servers) with the pod's certificate, or none at all.
fn tls_options(tls: bool) -> String {
    if tls {
        format!(
            "-Dtls.server.mode=enforcing -Dtls.test.mode.enable=false -Dtls.enable=true \
             -Dtls.server.certPath={TLS_DIR}/tls.crt -Dtls.server.keyPath={TLS_DIR}/tls.key"
        )
    } else {
        "-Dtls.server.mode=disabled".to_owned()
    }
}

/// The container's command. Heaps: the name server's small and fixed, the broker's a share of
/// the container's memory limit (the image's scripts fix 2 GiB whatever the limit). Each JVM
/// logs with its own configuration from RocketMQ's jars (found by name, the proxy's first
/// otherwise), under the data volume's `logs/`.
fn start_script(domain: &str, tls: bool) -> String {
    format!(
        r#"#!/bin/bash
# Rendered by oms-operator: RocketMQ's name server and broker (with the proxy in its process).
set -euo pipefail
name_server= broker=
# The broker first, so that it unregisters from a name server that still answers.
stop() {{
	[[ -z $broker ]] || {{ kill -TERM "$broker" 2>/dev/null || true; wait "$broker" || true; }}
	[[ -z $name_server ]] || {{ kill -TERM "$name_server" 2>/dev/null || true; wait "$name_server" || true; }}
}}
trap 'stop; exit 143' TERM INT
umask 077
run={RUN_DIR}
mkdir -p "$run/tmp" {DATA_DIR}/namesrv
host="$POD_NAME.{domain}"
# The broker resolves its own name (brokerIP1) once, at its start: not before DNS has it.
until getent hosts "$host" >/dev/null; do sleep 1; done
proxy=$(<{CONFIG_DIR}/proxy.json)
printf '%s\n' "${{proxy//@POD_NAME@/$POD_NAME}}" >"$run/proxy.json"
{{
	printf '%s\n' "$(<{CONFIG_DIR}/broker.conf)"
	printf 'brokerName=%s\nbrokerIP1=%s\n' "$POD_NAME" "$host"
	# The operator's user, made a super user at the broker's first start (later changes go
	# through the broker's admin requests).
	printf 'initAuthenticationUser={{"username":"%s","password":"%s"}}\n' "$OMS_ADMIN_USER" "$OMS_ADMIN_PASSWORD"
}} >"$run/broker.conf"
unset OMS_ADMIN_PASSWORD
java_options=(-Duser.home={DATA_DIR} -Djava.io.tmpdir="$run/tmp" -XX:+UseG1GC {tls} -cp "$ROCKETMQ_HOME/lib/*")
java -Xms64m -Xmx256m -Drmq.logback.configurationFile=rmq.namesrv.logback.xml "${{java_options[@]}}" \
	org.apache.rocketmq.namesrv.NamesrvStartup -c {CONFIG_DIR}/namesrv.conf &
name_server=$!
java -XX:MaxRAMPercentage=40 -Drmq.logback.configurationFile=rmq.proxy.logback.xml "${{java_options[@]}}" \
	org.apache.rocketmq.proxy.ProxyStartup -pm local -pc "$run/proxy.json" -bc "$run/broker.conf" &
broker=$!
# Either process ending ends the container, and the kubelet starts both again.
status=0
wait -n || status=$?
echo "a RocketMQ process ended (status $status): stopping the other" >&2
stop
exit "$status"
"#,
        tls = tls_options(tls)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(tls: bool) -> BrokerInput {
        BrokerInput {
            name: "orders".into(),
            namespace: "shop".into(),
            replicas: 1,
            config: [("sendMessageThreadPoolNums".to_owned(), "4".to_owned())].into(),
            cluster_id: "x".into(),
            image: "apache/rocketmq:5.3.3".into(),
            tenants: vec!["shop".into()],
            shared: false,
            tls,
            kafka_quorum: None,
        }
    }

    #[test]
    fn the_broker_registers_with_every_pods_name_server_and_passthrough_comes_last() {
        let pod = Rocketmq.render(&input(true));
        let conf = &pod.files["broker.conf"];
        assert!(conf.contains("namesrvAddr=orders-0.orders.shop.svc:9876\n"), "{conf}");
        assert!(conf.contains("brokerClusterName=orders\n") && conf.contains("autoCreateTopicEnable=false\n"));
        assert!(conf.contains("authenticationEnabled=true\n") && conf.contains("authorizationEnabled=true\n"));
        assert!(conf.ends_with("sendMessageThreadPoolNums=4\n"), "{conf}");
        let start = &pod.files["start.sh"];
        assert!(start.contains(r#"host="$POD_NAME.orders.shop.svc""#), "{start}");
        assert!(start.contains("brokerName=%s\\nbrokerIP1=%s"), "{start}");
    }

    #[test]
    fn with_tls_every_listener_takes_tls_only_with_the_pods_certificate() {
        let pod = Rocketmq.render(&input(true));
        let start = &pod.files["start.sh"];
        assert!(start.contains("-Dtls.server.mode=enforcing") && start.contains("/home/rocketmq/oms/tls/tls.key"));
        let proxy: serde_json::Value = serde_json::from_str(&pod.files["proxy.json"]).expect("JSON");
        assert_eq!(proxy["tlsCertPath"], "/home/rocketmq/oms/tls/tls.crt");
        assert_eq!(proxy["tlsTestModeEnable"], false);
        assert_eq!(proxy["proxyName"], "@POD_NAME@-proxy");
        assert_eq!(
            pod.ready_probe.as_ref().and_then(|args| args.last()).map(String::as_str),
            Some("/home/rocketmq/oms/tls/ca.crt")
        );
        let plain = Rocketmq.render(&input(false));
        assert!(plain.files["start.sh"].contains("-Dtls.server.mode=disabled"));
        let proxy: serde_json::Value = serde_json::from_str(&plain.files["proxy.json"]).expect("JSON");
        assert!(proxy.get("tlsCertPath").is_none() && proxy.get("tlsTestModeEnable").is_none(), "{proxy}");
        assert!(!plain.ready_probe.expect("a probe").contains(&"--ca".to_owned()));
    }
}
