//! The binding Secret: where an access point's brokers are and as whom to log in, in
//! OpenMessaging's environment keys. The access point controller writes it, the Queue controller
//! writes a tenant's own copy, and bridge workers and gateways read it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use oms_crds::access_point::{Driver, MessagingAccessPoint, SaslMechanism};

use crate::admin::{Endpoint, NatsLogin};
use crate::broker_tls::BrokerTls;

/// The access point's binding Secret.
#[must_use]
pub fn secret_name(ap: &str) -> String {
    format!("{ap}-binding")
}

/// Username and password applications use, where the broker has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// The binding Secret's TLS keys, also the file names workers mount them as (see
/// `workload::MountedBinding`).
pub const TLS_KEY: &str = "TLS";
pub const CA_CERT_KEY: &str = "CA_CERT";
pub const TLS_CERT_KEY: &str = "TLS_CERT";
pub const TLS_KEY_KEY: &str = "TLS_KEY";
pub const TLS_SERVER_NAME_KEY: &str = "TLS_SERVER_NAME";

/// The binding Secret's key with the SASL mechanism of a Kafka login, also a file workers mount.
pub const SASL_MECHANISM_KEY: &str = "SASL_MECHANISM";

/// The binding Secret's key with RocketMQ's name servers (`ACCESS_POINTS` are its proxies).
pub const NAME_SERVERS_KEY: &str = "NAME_SERVERS";

/// The binding Secret's keys of NATS logins other than a user and password: a token, and a
/// credentials file (JWT and nkey seed).
pub const TOKEN_KEY: &str = "TOKEN";
pub const NATS_CREDS_KEY: &str = "NATS_CREDS";

/// The keys every binding Secret has, from `endpoint`: where the broker is (`ACCESS_POINTS`,
/// `ACCESS_POINT_URL`, `DRIVER_IMPL`), as whom to log in (`USERNAME`, `PASSWORD`, where the broker
/// has users, and `SASL_MECHANISM` on Kafka; NATS's `TOKEN` or `NATS_CREDS`), `VHOST`, always present (empty where the driver has
/// none: workers mount it as a file), and `TLS` (`true` or `false`), with `CA_CERT` and, where
/// set, `TLS_CERT`, `TLS_KEY` and `TLS_SERVER_NAME` when it is true. [`read`] reads them back.
#[must_use]
pub fn keys(endpoint: &Endpoint, access_point_url: String, driver: Driver) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = [
        ("ACCESS_POINTS", endpoint.servers.join(",")),
        ("ACCESS_POINT_URL", access_point_url),
        ("DRIVER_IMPL", driver.as_str().to_owned()),
        ("VHOST", endpoint.vhost.clone().unwrap_or_default()),
        (TLS_KEY, endpoint.tls.is_some().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(username) = &endpoint.username {
        data.insert("USERNAME".into(), username.clone());
        data.insert("PASSWORD".into(), endpoint.password.clone().unwrap_or_default());
        if driver == Driver::Kafka {
            data.insert(SASL_MECHANISM_KEY.into(), endpoint.sasl_mechanism.unwrap_or_default().as_str().to_owned());
        }
    }
    if driver == Driver::Rocketmq {
        data.insert(NAME_SERVERS_KEY.into(), endpoint.name_servers.join(","));
    }
    match &endpoint.nats_login {
        Some(NatsLogin::Token(token)) => data.insert(TOKEN_KEY.into(), token.clone()),
        Some(NatsLogin::Creds(creds)) => data.insert(NATS_CREDS_KEY.into(), creds.clone()),
        None => None,
    };
    if let Some(tls) = &endpoint.tls {
        data.insert(CA_CERT_KEY.into(), tls.ca_pem.clone());
        if let Some((cert, key)) = &tls.client {
            data.insert(TLS_CERT_KEY.into(), cert.clone());
            data.insert(TLS_KEY_KEY.into(), key.clone());
        }
        if let Some(name) = &tls.server_name {
            data.insert(TLS_SERVER_NAME_KEY.into(), name.clone());
        }
    }
    data
}

/// The TLS settings written by [`keys`], read back from a binding Secret's text values.
#[must_use]
pub fn tls_from_keys(text: impl Fn(&str) -> Option<String>) -> Option<BrokerTls> {
    if text(TLS_KEY).as_deref() != Some("true") {
        return None;
    }
    Some(BrokerTls {
        ca_pem: text(CA_CERT_KEY).unwrap_or_default(),
        client: text(TLS_CERT_KEY).zip(text(TLS_KEY_KEY)),
        server_name: text(TLS_SERVER_NAME_KEY),
    })
}

/// Addresses, credentials and TLS settings from an access point's binding Secret (`ACCESS_POINTS`,
/// `USERNAME`, `PASSWORD`, `VHOST`, the TLS keys); `None` until the access point has published it. The error names the Secret.
pub async fn read(client: &kube::Client, ap: &MessagingAccessPoint) -> Result<Option<Endpoint>, (String, kube::Error)> {
    let Some(name) = ap.status.as_ref().and_then(|s| s.binding_secret.clone()) else { return Ok(None) };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ap.namespace().unwrap_or_default());
    let Some(secret) = secrets.get_opt(&name).await.map_err(|source| (name.clone(), source))? else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| data.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned()).filter(|v| !v.is_empty());
    let servers: Vec<String> =
        text("ACCESS_POINTS").map(|a| a.split(',').map(str::to_owned).collect()).unwrap_or_default();
    if servers.is_empty() {
        return Ok(None);
    }
    Ok(Some(Endpoint {
        servers,
        username: text("USERNAME"),
        password: text("PASSWORD"),
        vhost: text("VHOST"),
        sasl_mechanism: text(SASL_MECHANISM_KEY).as_deref().and_then(SaslMechanism::parse),
        nats_login: text(NATS_CREDS_KEY).map(NatsLogin::Creds).or_else(|| text(TOKEN_KEY).map(NatsLogin::Token)),
        name_servers: text(NAME_SERVERS_KEY).map(|a| a.split(',').map(str::to_owned).collect()).unwrap_or_default(),
        tls: tls_from_keys(text),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_survive_the_round_trip_through_the_secret_and_plaintext_says_so() {
        let tls = BrokerTls {
            ca_pem: "CA".into(),
            client: Some(("CERT".into(), "KEY".into())),
            server_name: Some("nats.example.com".into()),
        };
        for tls in [Some(tls), None] {
            let endpoint = Endpoint { servers: vec!["n:4222".into()], tls: tls.clone(), ..Endpoint::default() };
            let data = keys(&endpoint, "oms:nats://n:4222/local".into(), Driver::Nats);
            assert_eq!(data[TLS_KEY], tls.is_some().to_string(), "the flag is always there");
            assert_eq!(tls_from_keys(|k| data.get(k).cloned()), tls);
        }
    }

    #[test]
    fn a_nats_token_or_credentials_file_is_written_under_its_own_key() {
        let url = || "oms:nats://n:4222/local".to_owned();
        for (login, key) in
            [(NatsLogin::Token("t0k".into()), TOKEN_KEY), (NatsLogin::Creds("--JWT--".into()), NATS_CREDS_KEY)]
        {
            let endpoint = Endpoint { servers: vec!["n:4222".into()], nats_login: Some(login), ..Endpoint::default() };
            let data = keys(&endpoint, url(), Driver::Nats);
            assert!(data.contains_key(key) && !data.contains_key("USERNAME"), "{data:?}");
        }
    }

    #[test]
    fn a_kafka_login_names_its_mechanism_and_scram_sha_512_is_the_default() {
        let login = |mechanism| Endpoint {
            servers: vec!["k:9092".into()],
            username: Some("app".into()),
            password: Some("pw".into()),
            sasl_mechanism: mechanism,
            ..Endpoint::default()
        };
        let url = || "oms:kafka://k:9092/local".to_owned();
        assert_eq!(keys(&login(None), url(), Driver::Kafka)[SASL_MECHANISM_KEY], "SCRAM-SHA-512");
        assert_eq!(keys(&login(Some(SaslMechanism::Plain)), url(), Driver::Kafka)[SASL_MECHANISM_KEY], "PLAIN");
        assert!(!keys(&login(None), url(), Driver::Nats).contains_key(SASL_MECHANISM_KEY), "Kafka's only");
        let anonymous = Endpoint { username: None, password: None, ..login(None) };
        assert!(!keys(&anonymous, url(), Driver::Kafka).contains_key(SASL_MECHANISM_KEY), "no login, no mechanism");
        for mechanism in SaslMechanism::ALL {
            assert_eq!(SaslMechanism::parse(mechanism.as_str()), Some(mechanism));
        }
    }
}
