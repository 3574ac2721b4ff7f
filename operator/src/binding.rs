//! The binding Secret: where an access point's brokers are and as whom to log in, in
//! OpenMessaging's environment keys. The access point controller writes it, the Queue controller
//! writes a tenant's own copy, and bridge workers and gateways read it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use oms_crds::access_point::{Driver, MessagingAccessPoint};

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

/// The keys every binding Secret has: where the broker is (`ACCESS_POINTS`, `ACCESS_POINT_URL`,
/// `DRIVER_IMPL`), as whom to log in (`USERNAME`, `PASSWORD`, where the broker has users) and
/// `VHOST`, always present (empty where the driver has none): workers mount it as a file.
#[must_use]
pub fn keys(
    access_points: String,
    access_point_url: String,
    driver: Driver,
    credentials: Option<&Credentials>,
    vhost: String,
) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = [
        ("ACCESS_POINTS", access_points),
        ("ACCESS_POINT_URL", access_point_url),
        ("DRIVER_IMPL", driver.as_str().to_owned()),
        ("VHOST", vhost),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(credentials) = credentials {
        data.insert("USERNAME".into(), credentials.username.clone());
        data.insert("PASSWORD".into(), credentials.password.clone());
    }
    data
}

/// Addresses and credentials from an access point's binding Secret (`ACCESS_POINTS`, `USERNAME`,
/// `PASSWORD`); `None` until the access point has published it. The error names the Secret.
pub async fn read(
    client: &kube::Client,
    ap: &MessagingAccessPoint,
) -> Result<Option<crate::admin::Endpoint>, (String, kube::Error)> {
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
    Ok(Some(crate::admin::Endpoint {
        servers,
        username: text("USERNAME"),
        password: text("PASSWORD"),
        vhost: text("VHOST"),
    }))
}
