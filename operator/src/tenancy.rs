//! Tenants on the broker (pure): a namespace is a tenant. A managed access point gives each tenant
//! it serves (its own namespace and those named in `spec.sharing.tenants`) a broker user of its own
//! that reaches only that tenant's queues: a NATS account, a RabbitMQ user with a virtual host of
//! its own, a Mosquitto user with an ACL on the tenant's topic prefix, a Kafka SCRAM user with
//! prefixed ACLs. Passwords live in one Secret per access point, `<access-point>-tenants`, a key
//! per tenant; brokers read them from it (environment or a mounted file) or get them through their
//! admin API (Kafka), never from a ConfigMap.
//!
//! `*` in `spec.sharing.tenants` lets every namespace put queues there without a user of its own:
//! names are still prefixed per tenant, but the broker does not separate them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use oms_crds::access_point::{Driver, MessagingAccessPointSpec};
use sha2::{Digest, Sha256, Sha512};

/// Key of the Mosquitto password file in the tenants Secret (a namespace name has no dot, so no
/// tenant's key can be this).
pub const MOSQUITTO_PASSWORDS_KEY: &str = "mosquitto.passwd";

/// Key of RabbitMQ's definitions (users, virtual hosts, permissions) in the tenants Secret.
pub const RABBITMQ_DEFINITIONS_KEY: &str = "rabbitmq-definitions.json";

/// Key of a tenant's user name in the tenants Secret (beside its password under the tenant's
/// name): mounted, the two make the `username` and `password` files a bridge or gateway reads.
#[must_use]
pub fn username_key(tenant: &str) -> String {
    format!("{tenant}.username")
}

/// The operator's own broker user where a broker has one (RabbitMQ's administrator, Kafka's super
/// user): no namespace can be named so (no `_` in a DNS label), and Kafka's JAAS options take it
/// unquoted (a `.` would end the option's name there).
pub const ADMIN_USER: &str = "oms_admin";

/// Key of a tenant's RabbitMQ virtual host in the tenants Secret (its name; mounted as `vhost`
/// beside the user; other brokers ignore it).
#[must_use]
pub fn vhost_key(tenant: &str) -> String {
    format!("{tenant}.vhost")
}

/// The Secret with each tenant's broker password.
#[must_use]
pub fn tenants_secret_name(access_point: &str) -> String {
    format!("{access_point}-tenants")
}

/// The tenants an access point serves: its own namespace and those it shares with by name,
/// sorted and without repeats.
#[must_use]
pub fn tenants(namespace: &str, shared_with: &[String]) -> Vec<String> {
    let mut tenants: Vec<String> =
        std::iter::once(namespace.to_owned()).chain(shared_with.iter().filter(|t| *t != "*").cloned()).collect();
    tenants.sort();
    tenants.dedup();
    tenants
}

/// The environment variable a broker pod reads a tenant's password from.
#[must_use]
pub fn password_env(tenant: &str) -> String {
    format!("OMS_TENANT_{}", tenant.to_ascii_uppercase().replace('-', "_"))
}

/// The tenants Secret's data: passwords already there are kept (users keep working across
/// reconciles), new tenants get `fresh()` ones, tenants no longer served are dropped.
pub fn tenant_passwords(
    existing: &BTreeMap<String, String>,
    tenants: &[String],
    mut fresh: impl FnMut() -> String,
) -> BTreeMap<String, String> {
    tenants.iter().map(|t| (t.clone(), existing.get(t).cloned().unwrap_or_else(&mut fresh))).collect()
}

/// One line of a Mosquitto password file: `user:$6$<salt>$<sha512(password || salt)>`, both
/// base64, the salted SHA-512 form Mosquitto 2 reads.
#[must_use]
pub fn mosquitto_password_line(user: &str, password: &str, salt: &[u8]) -> String {
    let digest = Sha512::new().chain_update(password.as_bytes()).chain_update(salt).finalize();
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("{user}:$6${}${}", b64.encode(salt), b64.encode(digest))
}

/// Mosquitto's ACL file: each tenant reads and writes only below its own topic prefix (`<tenant>/`,
/// as shared access points name topics); the only tenant of an unshared access point owns all.
#[must_use]
pub fn mosquitto_acl(tenants: &[String], shared: bool) -> String {
    let mut acl = String::from("# Rendered by oms-operator: one user per tenant namespace.\n");
    for tenant in tenants {
        let pattern = if shared { format!("{tenant}/#") } else { "#".to_owned() };
        let _ = write!(acl, "user {tenant}\ntopic readwrite {pattern}\n");
    }
    acl
}

/// A RabbitMQ password hash (`rabbit_password_hashing_sha256`): base64 of a 4-byte salt followed
/// by SHA-256 of the salt and the password.
#[must_use]
pub fn rabbitmq_password_hash(password: &str, salt: [u8; 4]) -> String {
    let digest = Sha256::new().chain_update(salt).chain_update(password.as_bytes()).finalize();
    base64::engine::general_purpose::STANDARD.encode([&salt[..], &digest[..]].concat())
}

/// Whether `hash` (as [`rabbitmq_password_hash`] makes them) is of `password`: an unchanged
/// password keeps its hash, so the definitions change only when a user does.
#[must_use]
pub fn rabbitmq_hash_matches(hash: &str, password: &str) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(hash) else { return false };
    let Some(salt) = bytes.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok()) else { return false };
    rabbitmq_password_hash(password, salt) == hash
}

/// The password hash of a former tenant: 36 zero bytes, salt and digest, which no password hashes
/// to, so the user cannot log in. RabbitMQ's import at boot adds and updates users but never
/// deletes one, so a tenant no longer served stays in the definitions, locked.
pub const RABBITMQ_LOCKED_HASH: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Each user's password hash in `existing` definitions (none without them).
#[must_use]
pub fn rabbitmq_existing_hashes(existing: Option<&str>) -> BTreeMap<String, String> {
    existing
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
        .and_then(|definitions| definitions["users"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|u| Some((u["name"].as_str()?.to_owned(), u["password_hash"].as_str()?.to_owned())))
        .collect()
}

/// Each user's hash for `passwords` (user to password): the one in `old` (from
/// [`rabbitmq_existing_hashes`]) when it is still of the same password, else a new one with a
/// `fresh` salt.
pub fn rabbitmq_hashes(
    old: &BTreeMap<String, String>,
    passwords: &BTreeMap<String, String>,
    mut fresh: impl FnMut() -> [u8; 4],
) -> BTreeMap<String, String> {
    passwords
        .iter()
        .map(|(user, password)| {
            let hash = match old.get(user) {
                Some(hash) if rabbitmq_hash_matches(hash, password) => hash.clone(),
                _ => rabbitmq_password_hash(password, fresh()),
            };
            (user.clone(), hash)
        })
        .collect()
}

/// RabbitMQ's definitions, imported at every boot (`load_definitions`): the operator's admin
/// user (administrator, every virtual host) and, per tenant, a user and a virtual host named
/// after the tenant, the user allowed everything in its own virtual host and nothing elsewhere;
/// `former` tenants locked ([`RABBITMQ_LOCKED_HASH`]). `hashes` are `(user, password hash)` for the
/// admin and every tenant.
#[must_use]
pub fn rabbitmq_definitions(
    admin: &str,
    tenants: &[String],
    hashes: &BTreeMap<String, String>,
    former: &[String],
) -> String {
    let user = |name: &str, tags: &[&str]| {
        serde_json::json!({
            "name": name,
            "password_hash": hashes.get(name).map_or(RABBITMQ_LOCKED_HASH, String::as_str),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": tags,
        })
    };
    let everything = |user: &str, vhost: &str| serde_json::json!({"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"});
    let vhosts: Vec<&str> = std::iter::once("/").chain(tenants.iter().map(String::as_str)).collect();
    let mut users = vec![user(admin, &["administrator"])];
    users.extend(tenants.iter().chain(former).map(|tenant| user(tenant, &[])));
    let mut permissions: Vec<serde_json::Value> = vhosts.iter().map(|vhost| everything(admin, vhost)).collect();
    permissions.extend(tenants.iter().map(|tenant| everything(tenant, tenant)));
    let definitions = serde_json::json!({
        "users": users,
        "vhosts": vhosts.iter().map(|name| serde_json::json!({"name": name})).collect::<Vec<_>>(),
        "permissions": permissions,
    });
    serde_json::to_string_pretty(&definitions).unwrap_or_default() + "\n"
}

pub use oms_kafka_users::{KafkaAcl, KafkaResource};

/// The Kafka principal of a user.
#[must_use]
pub fn kafka_principal(user: &str) -> String {
    format!("User:{user}")
}

/// The ACLs of a managed Kafka's tenants. On a shared access point each tenant gets everything on
/// the topics, consumer groups and transactional ids that begin with `<tenant>.` (its queues'
/// names on the broker, and the groups bridges and gateways keep positions in); no namespace has
/// a dot, so no tenant's prefix begins another's. The owner of an unshared access point, or of one
/// shared with `*` (whose namespaces work as the owner), gets every name.
///
/// Sharing later takes nothing from the owner that its applications used: `recorded` holds
/// (namespace, `status.brokerName`) of the Queues on the access point, and a name outside its
/// namespace's prefix (made before the access point was shared) gets a literal topic ACL for that
/// namespace; the owner, who runs the cluster, keeps every consumer group and transactional id
/// (they hold positions and fence producers, not messages), so its consumers keep their groups.
#[must_use]
pub fn kafka_acls(
    owner: &str,
    tenants: &[String],
    shared: bool,
    wildcard: bool,
    recorded: &[(String, String)],
) -> Vec<KafkaAcl> {
    let mut acls = Vec::new();
    for tenant in tenants {
        let (principal, prefix) = (kafka_principal(tenant), format!("{tenant}."));
        let everything = tenant == owner && (!shared || wildcard);
        for resource in [KafkaResource::Topic, KafkaResource::Group, KafkaResource::TransactionalId] {
            let every_name = everything || (tenant == owner && resource != KafkaResource::Topic);
            let name = if every_name { "*".to_owned() } else { prefix.clone() };
            acls.push(KafkaAcl { principal: principal.clone(), resource, name, prefixed: !every_name });
        }
        let named_before_sharing =
            recorded.iter().filter(|(namespace, name)| namespace == tenant && !name.starts_with(&prefix));
        for (_, name) in named_before_sharing.filter(|_| !everything) {
            let resource = KafkaResource::Topic;
            acls.push(KafkaAcl { principal: principal.clone(), resource, name: name.clone(), prefixed: false });
        }
    }
    acls.sort();
    acls.dedup();
    acls
}

/// What to change on a Kafka cluster to go from `observed` to `desired` ACLs: `(create, delete)`.
/// Every ACL not desired goes except those of `keep` (the operator's own user): on a managed
/// Kafka only the operator, its only super user, can write ACLs.
#[must_use]
pub fn kafka_acl_changes(desired: &[KafkaAcl], observed: &[KafkaAcl], keep: &str) -> (Vec<KafkaAcl>, Vec<KafkaAcl>) {
    let create = desired.iter().filter(|acl| !observed.contains(acl)).cloned().collect();
    let delete = observed
        .iter()
        .filter(|acl| !desired.contains(acl) && acl.principal != kafka_principal(keep))
        .cloned()
        .collect();
    (create, delete)
}

/// What each tenant of a managed RocketMQ may reach, by user: ACL 2.0 resources on which it gets
/// every action. On a shared access point each tenant gets the topics and consumer groups that
/// begin with `<tenant>%` (its queues' names on the broker, and the groups bridges read them
/// in); no namespace has a `%`, so no tenant's prefix begins another's. The owner of an unshared
/// access point, or of one shared with `*`, gets every topic and group; sharing later leaves the
/// owner every consumer group and a literal grant on each topic it had before (`recorded`, as
/// for Kafka).
#[must_use]
pub fn rocketmq_grants(
    owner: &str,
    tenants: &[String],
    shared: bool,
    wildcard: bool,
    recorded: &[(String, String)],
) -> BTreeMap<String, Vec<String>> {
    let mut grants = BTreeMap::new();
    for tenant in tenants {
        let prefix = format!("{tenant}%");
        let everything = tenant == owner && (!shared || wildcard);
        let mut resources = if everything {
            vec!["Topic:*".to_owned(), "Group:*".to_owned()]
        } else {
            let groups = if tenant == owner { "Group:*".to_owned() } else { format!("Group:{prefix}*") };
            let mut own = vec![format!("Topic:{prefix}*"), groups];
            let named_before_sharing =
                recorded.iter().filter(|(namespace, name)| namespace == tenant && !name.starts_with(&prefix));
            own.extend(named_before_sharing.map(|(_, name)| format!("Topic:{name}")));
            own
        };
        resources.sort();
        resources.dedup();
        grants.insert(tenant.clone(), resources);
    }
    grants
}

/// Whether namespace `tenant` may use an access point in `home` with the given sharing list.
#[must_use]
pub fn reference_permitted(tenant: &str, home: &str, shared_with: &[String]) -> bool {
    tenant == home || shared_with.iter().any(|t| t == "*" || t == tenant)
}

/// The broker-side name: `spec.name` or the object's name, prefixed with the tenant on an
/// access point shared between namespaces, so that tenants never collide.
#[must_use]
pub fn broker_name(driver: Driver, namespace: &str, name: &str, spec_name: Option<&str>, shared: bool) -> String {
    let base = spec_name.unwrap_or(name);
    if !shared {
        return base.to_owned();
    }
    // NATS stream names may not contain dots; MQTT topics nest with slashes; RocketMQ names its
    // namespaces' topics `namespace%topic`.
    let separator = match driver {
        Driver::Nats => "_",
        Driver::Mqtt => "/",
        Driver::Rocketmq => "%",
        _ => ".",
    };
    format!("{namespace}{separator}{base}")
}

/// Whether an access point with this spec is shared between namespaces.
#[must_use]
pub fn is_shared(spec: &MessagingAccessPointSpec) -> bool {
    spec.sharing.as_ref().is_some_and(|s| !s.tenants.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rocketmq_tenants_get_their_prefix_and_an_unshared_owner_everything() {
        let tenants = ["acme".to_owned(), "beta".to_owned()];
        let alone = rocketmq_grants("acme", &tenants[..1], false, false, &[]);
        assert_eq!(alone["acme"], ["Group:*", "Topic:*"]);
        let recorded = [("acme".to_owned(), "orders".to_owned()), ("acme".to_owned(), "acme%new".to_owned())];
        let shared = rocketmq_grants("acme", &tenants, true, false, &recorded);
        assert_eq!(shared["acme"], ["Group:*", "Topic:acme%*", "Topic:orders"]);
        assert_eq!(shared["beta"], ["Group:beta%*", "Topic:beta%*"]);
        assert_eq!(rocketmq_grants("acme", &tenants, true, true, &[])["acme"], ["Group:*", "Topic:*"]);
    }

    #[test]
    fn references_across_namespaces_need_a_grant() {
        assert!(reference_permitted("acme", "acme", &[]));
        assert!(!reference_permitted("beta", "acme", &[]));
        assert!(reference_permitted("beta", "acme", &["beta".into()]));
        assert!(reference_permitted("gamma", "acme", &["*".into()]));
    }

    #[test]
    fn shared_access_points_prefix_the_tenant_with_the_driver_separator() {
        assert_eq!(broker_name(Driver::Kafka, "acme", "orders", None, false), "orders");
        assert_eq!(broker_name(Driver::Kafka, "acme", "q", Some("orders"), true), "acme.orders");
        assert_eq!(broker_name(Driver::Nats, "acme", "orders", None, true), "acme_orders");
        assert_eq!(broker_name(Driver::Mqtt, "acme", "devices", None, true), "acme/devices");
        assert_eq!(broker_name(Driver::Rocketmq, "acme", "orders", None, true), "acme%orders");
    }

    #[test]
    fn tenants_are_the_own_namespace_and_the_named_ones() {
        let shared = ["globex".to_owned(), "*".to_owned(), "acme".to_owned(), "initech".to_owned()];
        assert_eq!(tenants("acme", &shared), ["acme", "globex", "initech"]);
        assert_eq!(tenants("acme", &[]), ["acme"]);
    }

    #[test]
    fn existing_passwords_survive_and_gone_tenants_are_dropped() {
        let existing = BTreeMap::from([("acme".to_owned(), "a".to_owned()), ("gone".to_owned(), "g".to_owned())]);
        let data = tenant_passwords(&existing, &["acme".to_owned(), "globex".to_owned()], || "new".to_owned());
        assert_eq!(
            data,
            BTreeMap::from([("acme".to_owned(), "a".to_owned()), ("globex".to_owned(), "new".to_owned())])
        );
    }

    #[test]
    fn the_password_line_is_salted_sha512() {
        let line = mosquitto_password_line("acme", "secret", b"0123456789ab");
        let (user, hash) = line.split_once(':').expect("user:hash");
        assert_eq!(user, "acme");
        let parts: Vec<&str> = hash.split('$').collect();
        assert_eq!(parts[1], "6");
        assert_eq!(parts[2], "MDEyMzQ1Njc4OWFi", "the salt, base64");
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(parts[3]).expect("base64").len(), 64);
        assert_ne!(line, mosquitto_password_line("acme", "other", b"0123456789ab"));
    }

    #[test]
    fn each_tenant_gets_its_prefix_and_an_unshared_tenant_everything() {
        let acl = mosquitto_acl(&["acme".to_owned(), "globex".to_owned()], true);
        assert!(
            acl.contains("user acme\ntopic readwrite acme/#\n")
                && acl.contains("user globex\ntopic readwrite globex/#\n")
        );
        assert!(mosquitto_acl(&["acme".to_owned()], false).contains("user acme\ntopic readwrite #\n"));
        assert_eq!(password_env("team-a"), "OMS_TENANT_TEAM_A");
    }

    #[test]
    fn a_rabbitmq_hash_is_the_salt_then_sha256_of_salt_and_password() {
        let hash = rabbitmq_password_hash("secret", *b"salt");
        let bytes = base64::engine::general_purpose::STANDARD.decode(&hash).expect("base64");
        assert_eq!(&bytes[..4], b"salt");
        assert_eq!(&bytes[4..], &Sha256::new().chain_update(b"saltsecret").finalize()[..]);
        assert!(rabbitmq_hash_matches(&hash, "secret"));
        assert!(!rabbitmq_hash_matches(&hash, "other"));
        assert!(!rabbitmq_hash_matches("not base64!", "secret"));
    }

    #[test]
    fn rabbitmq_hashes_of_unchanged_passwords_are_kept() {
        let passwords = BTreeMap::from([("acme".to_owned(), "a".to_owned()), ("oms-admin".to_owned(), "x".to_owned())]);
        let first = rabbitmq_hashes(&BTreeMap::new(), &passwords, || *b"salt");
        let tenants = ["acme".to_owned()];
        let definitions = rabbitmq_definitions("oms-admin", &tenants, &first, &[]);
        let old = rabbitmq_existing_hashes(Some(&definitions));
        let again = rabbitmq_hashes(&old, &passwords, || *b"new!");
        assert_eq!(again, first, "same passwords, same hashes: the definitions do not change");
        let changed = BTreeMap::from([("acme".to_owned(), "b".to_owned()), ("oms-admin".to_owned(), "x".to_owned())]);
        let after = rabbitmq_hashes(&old, &changed, || *b"new!");
        assert!(rabbitmq_hash_matches(&after["acme"], "b"));
        assert_eq!(after["oms-admin"], first["oms-admin"]);
    }

    #[test]
    fn rabbitmq_tenants_get_a_virtual_host_each_and_the_admin_all() {
        let tenants = ["acme".to_owned(), "globex".to_owned()];
        let hashes: BTreeMap<String, String> =
            ["oms-admin", "acme", "globex"].iter().map(|u| ((*u).to_owned(), format!("{u}-hash"))).collect();
        let definitions: serde_json::Value =
            serde_json::from_str(&rabbitmq_definitions("oms-admin", &tenants, &hashes, &["gone".to_owned()]))
                .expect("JSON");
        let vhosts: Vec<&str> =
            definitions["vhosts"].as_array().expect("vhosts").iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(vhosts, ["/", "acme", "globex"]);
        let grants: Vec<(String, String)> = definitions["permissions"]
            .as_array()
            .expect("permissions")
            .iter()
            .map(|p| {
                (p["user"].as_str().unwrap_or_default().to_owned(), p["vhost"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        let of = |user: &str| grants.iter().filter(|(u, _)| u == user).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(of("acme"), ["acme"], "a tenant reaches its own virtual host only");
        assert_eq!(of("globex"), ["globex"]);
        assert_eq!(of("oms-admin"), ["/", "acme", "globex"]);
        let users = definitions["users"].as_array().expect("users");
        assert_eq!(users[0]["tags"], serde_json::json!(["administrator"]));
        assert_eq!(users[1]["password_hash"], "acme-hash");
        assert_eq!(users[2]["tags"], serde_json::json!([]), "tenants are no administrators");
        assert_eq!(users[3]["name"], "gone");
        assert_eq!(users[3]["password_hash"], RABBITMQ_LOCKED_HASH, "a former tenant stays, locked");
        assert!(!grants.iter().any(|(u, _)| u == "gone"), "and gets no permissions");
        let locked = base64::engine::general_purpose::STANDARD.decode(RABBITMQ_LOCKED_HASH).expect("base64");
        assert_eq!(locked, [0u8; 36]);
        let users: Vec<String> = rabbitmq_existing_hashes(Some(&definitions.to_string())).into_keys().collect();
        assert_eq!(users, ["acme", "globex", "gone", "oms-admin"]);
    }

    fn acl(principal: &str, resource: KafkaResource, name: &str, prefixed: bool) -> KafkaAcl {
        KafkaAcl { principal: principal.into(), resource, name: name.into(), prefixed }
    }

    #[test]
    fn kafka_tenants_of_a_shared_access_point_get_their_prefix_only() {
        let tenants = ["acme".to_owned(), "acme-x".to_owned(), "globex".to_owned()];
        let acls = kafka_acls("acme", &tenants, true, false, &[]);
        let of = |principal: &str| acls.iter().filter(|a| a.principal == principal).cloned().collect::<Vec<_>>();
        assert_eq!(
            of("User:acme"),
            [
                acl("User:acme", KafkaResource::Topic, "acme.", true),
                acl("User:acme", KafkaResource::Group, "*", false),
                acl("User:acme", KafkaResource::TransactionalId, "*", false),
            ],
            "the owner of a shared access point reaches its own topics only, and keeps its groups"
        );
        assert!(of("User:acme-x").iter().all(|a| a.name == "acme-x."), "acme's prefix does not begin acme-x's");
        assert!(of("User:globex").iter().all(|a| a.name == "globex." && a.prefixed));
        assert_eq!(acls.len(), 9);
    }

    #[test]
    fn queues_named_before_sharing_keep_a_literal_acl_for_their_namespace() {
        let tenants = ["acme".to_owned(), "globex".to_owned()];
        let recorded = [
            ("acme".to_owned(), "orders".to_owned()),
            ("acme".to_owned(), "acme.invoices".to_owned()),
            ("globex".to_owned(), "globex.orders".to_owned()),
            ("gone".to_owned(), "legacy".to_owned()),
        ];
        let acls = kafka_acls("acme", &tenants, true, false, &recorded);
        let literal: Vec<_> = acls.iter().filter(|a| !a.prefixed && a.resource == KafkaResource::Topic).collect();
        assert_eq!(literal, [&acl("User:acme", KafkaResource::Topic, "orders", false)], "{acls:?}");
        assert_eq!(acls.len(), 7, "nothing for names under a prefix, nor for a namespace no longer served");
        let unshared = kafka_acls("acme", &["acme".to_owned()], false, false, &recorded);
        assert_eq!(unshared.len(), 3, "an unshared owner already has every name");
    }

    #[test]
    fn the_owner_of_an_unshared_or_wildcard_kafka_gets_every_name() {
        let everything = |owner: &str| {
            [KafkaResource::Topic, KafkaResource::Group, KafkaResource::TransactionalId]
                .map(|r| acl(&kafka_principal(owner), r, "*", false))
                .to_vec()
        };
        assert_eq!(kafka_acls("acme", &["acme".to_owned()], false, false, &[]), everything("acme"));
        let with_wildcard = kafka_acls("acme", &["acme".to_owned(), "globex".to_owned()], true, true, &[]);
        assert!(everything("acme").iter().all(|a| with_wildcard.contains(a)));
        assert!(with_wildcard.iter().filter(|a| a.principal == "User:globex").all(|a| a.name == "globex."));
    }

    #[test]
    fn kafka_acl_changes_keep_the_operators_own() {
        let keep = acl("User:acme", KafkaResource::Topic, "acme.", true);
        let stale = acl("User:gone", KafkaResource::Topic, "gone.", true);
        let operator = acl("User:oms_admin", KafkaResource::Topic, "x", false);
        let new = acl("User:globex", KafkaResource::Topic, "globex.", true);
        let (create, delete) =
            kafka_acl_changes(&[keep.clone(), new.clone()], &[keep, stale.clone(), operator], "oms_admin");
        assert_eq!(create, [new]);
        assert_eq!(delete, [stale], "everything not desired goes, but the operator's own");
    }
}
