//! Eclipse Mosquitto on the official `eclipse-mosquitto` image, with persistence on the data
//! volume. Mosquitto does not cluster: one replica, and `capabilities` says what MQTT lacks
//! (no server-side queue objects, no headers in MQTT 3.1.1, no partitions). With TLS (the
//! default) it listens on 8883 only, with the pod's certificate from the operator's CA.

use std::fmt::Write as _;

use oms_crds::common::{Capabilities, Dedup, Ordering};

use super::{BrokerDriver, BrokerInput, BrokerPod, SecretFile, passthrough_lines, ready_probe, secret_env};
use crate::tenancy;

pub struct Mqtt;

/// The environment variables the readiness probe logs in with.
const PROBE_USER_ENV: &str = "OMS_PROBE_USER";
const PROBE_PASSWORD_ENV: &str = "OMS_PROBE_PASSWORD";

const CLIENT_PORT: u16 = 1883;
const TLS_CLIENT_PORT: u16 = 8883;
const CONFIG_DIR: &str = "/mosquitto/config";
const TLS_DIR: &str = "/mosquitto/tls";
const DATA_DIR: &str = "/mosquitto/data";
const SECRETS_DIR: &str = "/mosquitto/secrets";

impl BrokerDriver for Mqtt {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            partitions: false,
            ordering: Ordering::PerPartition,
            dedup: Dedup::None,
            delay: false,
            priority: false,
            headers: false,
            queue_objects: false,
        }
    }

    fn ports(&self, tls: bool) -> Vec<(&'static str, u16)> {
        vec![if tls { ("mqtts", TLS_CLIENT_PORT) } else { ("mqtt", CLIENT_PORT) }]
    }

    fn owned_config_keys(&self) -> &'static [&'static str] {
        &[
            "listener",
            "port",
            "persistence",
            "persistence_location",
            "pid_file",
            "allow_anonymous",
            "password_file",
            "acl_file",
            "cafile",
            "capath",
            "certfile",
            "keyfile",
        ]
    }

    fn max_replicas(&self) -> i32 {
        1
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
        // The image's `mosquitto` user.
        1883
    }

    fn render(&self, broker: &BrokerInput) -> BrokerPod {
        let mut conf = String::from("# Rendered by oms-operator.\n");
        if broker.tls {
            let _ = write!(
                conf,
                "listener {TLS_CLIENT_PORT}\ncafile {TLS_DIR}/ca.crt\ncertfile {TLS_DIR}/tls.crt\nkeyfile {TLS_DIR}/tls.key\n"
            );
        } else {
            let _ = writeln!(conf, "listener {CLIENT_PORT}");
        }
        let _ = write!(
            conf,
            "persistence true\npersistence_location {DATA_DIR}/\n\
             allow_anonymous false\npassword_file {SECRETS_DIR}/passwd\nacl_file {CONFIG_DIR}/acl\n"
        );
        conf.push_str(&passthrough_lines(&broker.config, " "));
        let tenants_secret = tenancy::tenants_secret_name(&broker.name);
        BrokerPod {
            files: [
                ("mosquitto.conf".to_owned(), conf),
                ("acl".to_owned(), tenancy::mosquitto_acl(&broker.tenants, broker.shared)),
            ]
            .into(),
            command: vec!["mosquitto".into(), "-c".into(), format!("{CONFIG_DIR}/mosquitto.conf")],
            // The access point's own tenant logs in for the readiness probe (Mosquitto has no user
            // of the operator's).
            env: vec![
                secret_env(PROBE_USER_ENV, &tenants_secret, &tenancy::username_key(&broker.namespace)),
                secret_env(PROBE_PASSWORD_ENV, &tenants_secret, &broker.namespace),
            ],
            ready_probe: Some(ready_probe(
                "mqtt",
                broker,
                self.client_port(broker.tls),
                (PROBE_USER_ENV, PROBE_PASSWORD_ENV),
                TLS_DIR,
            )),
            // A user per tenant; the hashes come from the tenants Secret.
            secret_file: Some(SecretFile {
                secret: tenants_secret.clone(),
                key: tenancy::MOSQUITTO_PASSWORDS_KEY.into(),
                mount_dir: SECRETS_DIR.into(),
                file: "passwd".into(),
            }),
            ..BrokerPod::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persistence_is_on_and_passthrough_uses_spaces() {
        let input = BrokerInput {
            name: "devices".into(),
            namespace: "acme".into(),
            replicas: 1,
            config: [("max_inflight_messages".to_owned(), "40".to_owned())].into(),
            cluster_id: "x".into(),
            image: "img:1.0".into(),
            tenants: vec!["acme".into()],
            shared: false,
            tls: true,
            kafka_quorum: None,
        };
        let conf = &Mqtt.render(&input).files["mosquitto.conf"];
        assert!(conf.contains("persistence true\npersistence_location /mosquitto/data/\n"));
        assert!(conf.ends_with("max_inflight_messages 40\n"));
        assert!(conf.contains("listener 8883\ncafile /mosquitto/tls/ca.crt\n"), "{conf}");
        let plain = &Mqtt.render(&BrokerInput { tls: false, ..input }).files["mosquitto.conf"];
        assert!(plain.contains("listener 1883\n") && !plain.contains("certfile"), "{plain}");
    }
}
