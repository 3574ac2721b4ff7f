//! The binding Secret a tenant gets for a Queue on another namespace's access point (pure): the
//! access point's addresses with the tenant's own broker user, so that applications and bridges
//! of the tenant never see the owner's credentials (the access point's binding Secret lives in
//! the owner's namespace and holds the owner's user).

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use oms_crds::access_point::Driver;

use crate::admin::Endpoint;
use crate::binding;

/// The tenant's binding Secret of a Queue.
#[must_use]
pub fn secret_name(queue: &str) -> String {
    // The dot keeps it apart from every access point's `<name>-binding`.
    format!("{queue}.binding")
}

/// The Secret, owned by the Queue: the access point's OpenMessaging keys (`ACCESS_POINTS`,
/// `ACCESS_POINT_URL`, `DRIVER_IMPL`), the tenant's `USERNAME`, `PASSWORD` and `VHOST` from
/// `endpoint`, and `QUEUE_NAME`, the queue's name on the broker.
#[must_use]
pub fn tenant_binding(
    owner: OwnerReference,
    namespace: &str,
    access_point_url: &str,
    driver: Driver,
    endpoint: &Endpoint,
    broker_name: &str,
) -> Secret {
    // The tenant's user, always written: an empty one where the broker has no users.
    let tenant = Endpoint { username: Some(endpoint.username.clone().unwrap_or_default()), ..endpoint.clone() };
    let mut data = binding::keys(&tenant, access_point_url.to_owned(), driver);
    data.insert("QUEUE_NAME".into(), broker_name.to_owned());
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&owner.name)),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [
                    ("app.kubernetes.io/managed-by".to_owned(), "oms-operator".to_owned()),
                    ("openmessaging.cloud/queue".to_owned(), owner.name.clone()),
                ]
                .into(),
            ),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_binding_carries_the_tenants_user_and_belongs_to_the_queue() {
        let owner = OwnerReference { name: "orders".into(), uid: "u".into(), ..OwnerReference::default() };
        let endpoint = Endpoint {
            servers: vec!["nats-0.nats.owner.svc:4222".into()],
            username: Some("team-a".into()),
            password: Some("pw".into()),
            ..Endpoint::default()
        };
        let secret = tenant_binding(
            owner,
            "team-a",
            "oms:nats://nats-0.nats.owner.svc:4222/local",
            Driver::Nats,
            &endpoint,
            "team-a_orders",
        );
        assert_eq!(secret.metadata.name.as_deref(), Some("orders.binding"));
        assert_eq!(secret.metadata.owner_references.as_ref().map(|o| o[0].name.as_str()), Some("orders"));
        let data = secret.data.unwrap_or_default();
        let text = |key: &str| data.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned());
        assert_eq!(text("USERNAME").as_deref(), Some("team-a"));
        assert_eq!(text("PASSWORD").as_deref(), Some("pw"));
        assert_eq!(text("QUEUE_NAME").as_deref(), Some("team-a_orders"));
        assert_eq!(text("VHOST").as_deref(), Some(""), "present for the workers' mount, empty where unused");
    }
}
