//! Tenants on the broker (pure): a namespace is a tenant. A managed access point gives each tenant
//! it serves (its own namespace and those named in `spec.sharing.tenants`) a broker user of its own
//! that reaches only that tenant's queues: a NATS account, a Mosquitto user with an ACL on the
//! tenant's topic prefix. Passwords live in one Secret per access point, `<access-point>-tenants`,
//! a key per tenant; brokers read them from it (environment or a mounted file), never from a
//! ConfigMap.
//!
//! `*` in `spec.sharing.tenants` lets every namespace put queues there without a user of its own:
//! names are still prefixed per tenant, but the broker does not separate them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use sha2::{Digest, Sha512};

/// Key of the Mosquitto password file in the tenants Secret (a namespace name has no dot, so no
/// tenant's key can be this).
pub const MOSQUITTO_PASSWORDS_KEY: &str = "mosquitto.passwd";

/// Key of a tenant's user name in the tenants Secret (beside its password under the tenant's
/// name): mounted, the two make the `username` and `password` files a bridge or gateway reads.
#[must_use]
pub fn username_key(tenant: &str) -> String {
    format!("{tenant}.username")
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
