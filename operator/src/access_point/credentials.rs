//! Who logs in to an access point's broker: the user's Secret for external brokers; for managed
//! ones the operator's own user (generated once, never overwritten) and a user per tenant (the
//! tenants Secret, with Mosquitto's password file and RabbitMQ's definitions), and on Kafka and
//! RocketMQ the users and ACLs made from them through the admin API.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use oms_crds::access_point::Driver;
use oms_crds::queue::Queue;

use super::validate::{AccessPoint, External, Plan};
use super::{Error, apply_named, render};
use crate::admin::NatsLogin;
use crate::binding::Credentials;
use crate::broker_tls::BrokerTls;
use crate::context::Context;
use crate::drivers::credentials_secret;
use crate::tenancy;

/// Who logs in to an access point's broker.
#[derive(Default)]
pub(super) struct Logins {
    /// For the binding Secret: the user's Secret for external brokers, the access point's own
    /// namespace's tenant user for managed ones.
    pub binding: Option<Credentials>,
    /// The operator's own user on a managed RabbitMQ, Kafka, NATS or RocketMQ, generated once.
    pub admin: Option<Credentials>,
    /// Each served tenant's password, on managed brokers.
    pub tenants: BTreeMap<String, String>,
    /// NATS: the user's Secret's token or credentials file, instead of a user and password.
    pub nats_login: Option<NatsLogin>,
}

/// The logins of an access point: for external brokers the user's Secret; for managed ones a user
/// per tenant (the tenants Secret) and, for RabbitMQ, Kafka, NATS and RocketMQ, the operator's own (made anew
/// only when `brokers_exist` is false: Kafka's metadata keeps the first one).
pub(super) async fn credentials(
    ctx: &Context,
    ap: &AccessPoint,
    owner: &OwnerReference,
    brokers_exist: bool,
) -> Result<Logins, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ap.namespace);
    match (&ap.plan, ap.driver) {
        (Plan::External(external), _) => {
            let Some(name) = &external.credentials_secret else { return Ok(Logins::default()) };
            let secret = secrets.get(name).await.map_err(|source| Error::ReadSecret { name: name.clone(), source })?;
            let data = text_of(secret.data.unwrap_or_default());
            let (binding, nats_login) =
                external_login(ap.driver, name, &data).map_err(|message| Error::CredentialsUnusable { message })?;
            Ok(Logins { binding, nats_login, ..Logins::default() })
        }
        (Plan::Managed(_), Driver::Rabbitmq | Driver::Kafka | Driver::Nats | Driver::Mqtt | Driver::Rocketmq) => {
            // Mosquitto has no user of the operator's.
            let admin = if ap.driver == Driver::Mqtt {
                None
            } else {
                let name = credentials_secret(&ap.name);
                Some(ensure_generated_credentials(&secrets, &name, ap, owner, !brokers_exist).await?)
            };
            // RabbitMQ's definitions list the admin beside the tenants.
            let definitions_admin = admin.as_ref().filter(|_| ap.driver == Driver::Rabbitmq);
            let tenants = ensure_tenants_secret(ctx, &secrets, ap, owner, definitions_admin).await?;
            let password = tenants.get(&ap.namespace).cloned().unwrap_or_default();
            let binding = Some(Credentials { username: ap.namespace.clone(), password });
            Ok(Logins { binding, admin, tenants, nats_login: None })
        }
        _ => Ok(Logins::default()),
    }
}

/// The brokers at `hosts`, logged in to as the operator's user `admin`.
pub(super) fn admin_endpoint(
    hosts: &[(String, u16)],
    admin: &Credentials,
    tls: Option<&BrokerTls>,
) -> crate::admin::Endpoint {
    crate::admin::Endpoint {
        servers: hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect(),
        username: Some(admin.username.clone()),
        password: Some(admin.password.clone()),
        tls: tls.cloned(),
        ..crate::admin::Endpoint::default()
    }
}

/// Makes a managed Kafka's SCRAM users and ACLs those of its tenants, as the operator's user.
/// A password is set when its user is new or it changed, and each once per operator process (a
/// tenants Secret made anew has new ones); after that only changes cost a write.
pub(super) async fn apply_kafka_tenants(
    ctx: &Context,
    ap: &AccessPoint,
    hosts: &[(String, u16)],
    logins: &Logins,
    tls: Option<&BrokerTls>,
) -> Result<(), String> {
    let Some(admin) = &logins.admin else { return Ok(()) };
    let endpoint = admin_endpoint(hosts, admin, tls);
    let TenantPlan { tenants, shared, wildcard, recorded } = tenant_plan(ctx, ap, logins).await?;
    let acls = tenancy::kafka_acls(&ap.namespace, &tenants, shared, wildcard, &recorded);
    let applied = ctx.admins.tenants_applied(&endpoint, &logins.tenants).await;
    let result = async {
        let client = ctx.admins.get(Driver::Kafka, &endpoint).await?;
        let crate::admin::Admin::Kafka(kafka) = client.as_ref() else {
            return Ok(crate::admin::TenantChanges::default());
        };
        kafka.apply_tenants(&logins.tenants, &acls, &admin.username, &applied).await
    }
    .await;
    match result {
        Ok(changes) => {
            if !changes.is_empty() {
                tracing::info!(message = "Applied Kafka tenant users and ACLs.", access_point = %ap.name, namespace = %ap.namespace, ?changes);
            }
            ctx.admins.record_tenants_applied(&endpoint, &logins.tenants).await;
            Ok(())
        }
        Err(error) => {
            ctx.admins.evict(Driver::Kafka, &endpoint).await;
            Err(format!("cannot apply the tenants' Kafka users and ACLs as {}: {error}", admin.username))
        }
    }
}

/// Makes a managed RocketMQ's users and ACLs those of its tenants, as the operator's user, on
/// every master its name servers list (each broker keeps its own).
pub(super) async fn apply_rocketmq_tenants(
    ctx: &Context,
    ap: &AccessPoint,
    logins: &Logins,
    tls: Option<&BrokerTls>,
) -> Result<(), String> {
    let Some(admin) = &logins.admin else { return Ok(()) };
    let endpoint = crate::admin::Endpoint {
        name_servers: render::name_servers(ap),
        username: Some(admin.username.clone()),
        password: Some(admin.password.clone()),
        tls: tls.cloned(),
        ..crate::admin::Endpoint::default()
    };
    let TenantPlan { tenants, shared, wildcard, recorded } = tenant_plan(ctx, ap, logins).await?;
    let grants = tenancy::rocketmq_grants(&ap.namespace, &tenants, shared, wildcard, &recorded);
    let result = async {
        let client = ctx.admins.get(Driver::Rocketmq, &endpoint).await?;
        let crate::admin::Admin::Rocketmq(rocketmq) = client.as_ref() else {
            return Ok(crate::admin::TenantChanges::default());
        };
        rocketmq.apply_tenants(&logins.tenants, &grants, &admin.username).await
    }
    .await;
    match result {
        Ok(changes) => {
            if !changes.is_empty() {
                tracing::info!(message = "Applied RocketMQ tenant users and ACLs.", access_point = %ap.name, namespace = %ap.namespace, ?changes);
            }
            Ok(())
        }
        Err(error) => {
            ctx.admins.evict(Driver::Rocketmq, &endpoint).await;
            Err(format!("cannot apply the tenants' RocketMQ users and ACLs as {}: {error}", admin.username))
        }
    }
}

/// Whom a managed broker's users and grants are for, and how its access point is shared.
struct TenantPlan {
    tenants: Vec<String>,
    shared: bool,
    /// Shared with `*`: the owner's user gets every name.
    wildcard: bool,
    /// Queues' names from before the access point was shared ([`recorded_names`]).
    recorded: Vec<(String, String)>,
}

async fn tenant_plan(ctx: &Context, ap: &AccessPoint, logins: &Logins) -> Result<TenantPlan, String> {
    let (shared, wildcard) = (!ap.shared_with.is_empty(), ap.shared_with.iter().any(|t| t == "*"));
    let recorded = if shared && !wildcard { recorded_names(ctx, ap).await? } else { Vec::new() };
    Ok(TenantPlan { tenants: logins.tenants.keys().cloned().collect(), shared, wildcard, recorded })
}

/// (namespace, `status.brokerName`) of the Queues on this access point: the names they keep
/// whatever the sharing is now.
async fn recorded_names(ctx: &Context, ap: &AccessPoint) -> Result<Vec<(String, String)>, String> {
    let queues: Api<Queue> = Api::all(ctx.client.clone());
    let queues = queues.list(&ListParams::default()).await.map_err(|e| format!("cannot list Queues: {e}"))?;
    Ok(queues
        .items
        .into_iter()
        .filter(|q| q.is_on(&ap.namespace, &ap.name))
        .filter_map(|q| Some((q.namespace()?, q.status?.broker_name?)))
        .collect())
}

/// How clients speak TLS to the brokers: a managed access point's are checked against the CA
/// that signed their certificate (`signer_ca`); an external one's settings (`spec.external.tls`)
/// are read from the Secrets and ConfigMap it names, and a missing object or key is
/// [`Error::TlsMaterialMissing`], naming it.
pub(super) async fn broker_tls(
    ctx: &Context,
    signer_ca: Option<&str>,
    ap: &AccessPoint,
) -> Result<Option<BrokerTls>, Error> {
    if ap.plan.serves_tls() {
        let ca_pem = signer_ca.ok_or_else(|| Error::TlsMaterialMissing {
            message: format!("the brokers' certificate {} is not issued yet", crate::drivers::tls_secret(&ap.name)),
        })?;
        return Ok(Some(BrokerTls { ca_pem: ca_pem.to_owned(), client: None, server_name: None }));
    }
    let Plan::External(External { tls: Some(tls), .. }) = &ap.plan else { return Ok(None) };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ap.namespace);
    let secret_data = |name: String| {
        let secrets = secrets.clone();
        async move {
            let secret = secrets.get_opt(&name).await.map_err(|source| Error::ReadSecret { name, source })?;
            Ok::<_, Error>(secret.map(|s| text_of(s.data.unwrap_or_default())))
        }
    };
    let missing = |message: String| Error::TlsMaterialMissing { message };
    let ca_pem = match (&tls.ca_secret_ref, &tls.ca_config_map_ref) {
        (Some(reference), _) => {
            let data = secret_data(reference.name.clone()).await?.ok_or_else(|| {
                missing(format!("Secret {} named by spec.external.tls.caSecretRef does not exist", reference.name))
            })?;
            data.get(&reference.key).cloned().ok_or_else(|| {
                missing(format!(
                    "Secret {} has no key {} (spec.external.tls.caSecretRef)",
                    reference.name, reference.key
                ))
            })?
        }
        (None, Some(reference)) => {
            let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ap.namespace);
            let config_map = config_maps
                .get_opt(&reference.name)
                .await
                .map_err(|source| Error::ReadConfigMap { name: reference.name.clone(), source })?
                .ok_or_else(|| {
                    missing(format!(
                        "ConfigMap {} named by spec.external.tls.caConfigMapRef does not exist",
                        reference.name
                    ))
                })?;
            config_map.data.unwrap_or_default().get(&reference.key).cloned().ok_or_else(|| {
                missing(format!(
                    "ConfigMap {} has no key {} (spec.external.tls.caConfigMapRef)",
                    reference.name, reference.key
                ))
            })?
        }
        (None, None) => return Err(missing("spec.external.tls names no CA bundle".into())),
    };
    let client = match &tls.client_certificate_secret_ref {
        Some(reference) => {
            let data = secret_data(reference.name.clone()).await?.ok_or_else(|| {
                missing(format!(
                    "Secret {} named by spec.external.tls.clientCertificateSecretRef does not exist",
                    reference.name
                ))
            })?;
            let pair = data.get("tls.crt").cloned().zip(data.get("tls.key").cloned());
            Some(pair.ok_or_else(|| {
                missing(format!(
                    "Secret {} (spec.external.tls.clientCertificateSecretRef) needs keys tls.crt and tls.key",
                    reference.name
                ))
            })?)
        }
        None => None,
    };
    Ok(Some(BrokerTls { ca_pem, client, server_name: tls.server_name.clone() }))
}

fn text_of(data: BTreeMap<String, ByteString>) -> BTreeMap<String, String> {
    data.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect()
}

/// The login in the user's Secret `name` of an external access point: `username` and `password`,
/// or for NATS instead a `token` or `creds` (a credentials file); one of them, or a message that
/// says what to change.
fn external_login(
    driver: Driver,
    name: &str,
    data: &BTreeMap<String, String>,
) -> Result<(Option<Credentials>, Option<NatsLogin>), String> {
    let key = |key: &str| data.get(key).filter(|v| !v.trim().is_empty()).cloned();
    let nats_login = match (key("token"), key("creds")) {
        (Some(_), Some(_)) => {
            return Err(format!("Secret {name} holds both token and creds: keep the one the brokers expect"));
        }
        (Some(token), None) => Some(NatsLogin::Token(token.trim().to_owned())),
        (None, Some(creds)) => Some(NatsLogin::Creds(creds)),
        (None, None) => None,
    };
    match (nats_login, key("username")) {
        (Some(_), _) if driver != Driver::Nats => Err(format!(
            "Secret {name} holds a token or creds, which only NATS takes: driver {driver} logs in with keys username and \
             password"
        )),
        (Some(_), Some(_)) => Err(format!(
            "Secret {name} holds username and a token or creds: keep one login (NATS takes a user and password, a \
             token, or a credentials file as creds)"
        )),
        (Some(login), None) => Ok((None, Some(login))),
        (None, Some(username)) => {
            Ok((Some(Credentials { username, password: data.get("password").cloned().unwrap_or_default() }), None))
        }
        (None, None) => Err(format!(
            "Secret {name} named by spec.external.credentialsSecretRef has no key username{}",
            if driver == Driver::Nats { ", token or creds" } else { " (and password)" }
        )),
    }
}

/// `username` and `password` of a credentials Secret.
async fn read_credentials(secrets: &Api<Secret>, name: &str) -> Result<Credentials, Error> {
    let secret = secrets.get(name).await.map_err(|source| Error::ReadSecret { name: name.to_owned(), source })?;
    Ok(secret_credentials(&secret))
}

fn secret_credentials(secret: &Secret) -> Credentials {
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| data.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned()).unwrap_or_default();
    Credentials { username: text("username"), password: text("password") }
}

/// The tenants Secret (`<access-point>-tenants`): a password per tenant served, kept once made,
/// and for Mosquitto the password file of their hashes, for RabbitMQ the definitions of the
/// `admin` and the tenants. Written only when a tenant came or went.
async fn ensure_tenants_secret(
    ctx: &Context,
    secrets: &Api<Secret>,
    ap: &AccessPoint,
    owner: &OwnerReference,
    admin: Option<&Credentials>,
) -> Result<BTreeMap<String, String>, Error> {
    let name = tenancy::tenants_secret_name(&ap.name);
    let existing = secrets.get_opt(&name).await.map_err(|source| Error::ReadSecret { name: name.clone(), source })?;
    let text: BTreeMap<String, String> = existing
        .and_then(|s| s.data)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    let tenants = tenancy::tenants(&ap.namespace, &ap.shared_with);
    let passwords = tenancy::tenant_passwords(&text, &tenants, random_token);
    let mut data = passwords.clone();
    data.extend(tenants.iter().map(|t| (tenancy::username_key(t), t.clone())));
    data.extend(tenants.iter().map(|t| (tenancy::vhost_key(t), t.clone())));
    if ap.driver == Driver::Mqtt {
        // Lines of tenants already there keep their salt: the file changes only with the tenants.
        let old: BTreeMap<&str, &str> = text
            .get(tenancy::MOSQUITTO_PASSWORDS_KEY)
            .map(|file| file.lines().filter_map(|l| l.split_once(':').map(|(user, _)| (user, l))).collect())
            .unwrap_or_default();
        let lines: Vec<String> = passwords
            .iter()
            .map(|(tenant, password)| match old.get(tenant.as_str()) {
                Some(line) if text.get(tenant) == Some(password) => (*line).to_owned(),
                _ => tenancy::mosquitto_password_line(
                    tenant,
                    password,
                    random_token().as_bytes().get(..12).unwrap_or_default(),
                ),
            })
            .collect();
        data.insert(tenancy::MOSQUITTO_PASSWORDS_KEY.to_owned(), lines.join("\n") + "\n");
    }
    if let Some(admin) = admin {
        let mut users = passwords.clone();
        users.insert(admin.username.clone(), admin.password.clone());
        let old = tenancy::rabbitmq_existing_hashes(text.get(tenancy::RABBITMQ_DEFINITIONS_KEY).map(String::as_str));
        let hashes = tenancy::rabbitmq_hashes(&old, &users, random_salt);
        let former: Vec<String> =
            old.into_keys().filter(|user| *user != admin.username && !tenants.contains(user)).collect();
        let definitions = tenancy::rabbitmq_definitions(&admin.username, &tenants, &hashes, &former);
        data.insert(tenancy::RABBITMQ_DEFINITIONS_KEY.to_owned(), definitions);
    }
    if data != text {
        apply_named(ctx, "Secret", &owned_secret(&name, ap, owner, data)).await?;
    }
    Ok(passwords)
}

/// Creates the generated credentials Secret once; an existing one is never overwritten, so that
/// passwords survive operator restarts and upgrades. A missing one is [`Error::CredentialsLost`]
/// unless `may_create`. Returns its user and password.
async fn ensure_generated_credentials(
    secrets: &Api<Secret>,
    name: &str,
    ap: &AccessPoint,
    owner: &OwnerReference,
    may_create: bool,
) -> Result<Credentials, Error> {
    if let Some(existing) =
        secrets.get_opt(name).await.map_err(|source| Error::ReadSecret { name: name.to_owned(), source })?
    {
        return Ok(secret_credentials(&existing));
    }
    if !may_create {
        return Err(Error::CredentialsLost { name: name.to_owned() });
    }
    let data = crate::drivers::generated_credentials(tenancy::ADMIN_USER, &random_token(), &random_token());
    let secret = owned_secret(name, ap, owner, data);
    match secrets
        .create(
            &PostParams { field_manager: Some(crate::apply::FIELD_MANAGER.into()), ..PostParams::default() },
            &secret,
        )
        .await
    {
        Ok(created) => Ok(secret_credentials(&created)),
        // Another reconcile made it first: its passwords are the ones.
        Err(kube::Error::Api(status)) if status.is_already_exists() => read_credentials(secrets, name).await,
        Err(source) => Err(Error::CreateSecret { name: name.to_owned(), source }),
    }
}

/// Secret `name` of the access point's namespace with its labels, owned by it, holding `data`.
fn owned_secret<K: Into<String>>(
    name: &str,
    ap: &AccessPoint,
    owner: &OwnerReference,
    data: impl IntoIterator<Item = (K, String)>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ap.namespace.clone()),
            labels: Some(render::labels(ap)),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        data: Some(data.into_iter().map(|(k, v)| (k.into(), ByteString(v.into_bytes()))).collect()),
        ..Secret::default()
    }
}

/// A salt for a RabbitMQ password hash, from the OS generator.
fn random_salt() -> [u8; 4] {
    let mut salt = [0u8; 4];
    #[allow(clippy::expect_used)] // as in random_token
    getrandom::fill(&mut salt).expect("the OS random generator works");
    salt
}

/// 32 random alphanumeric characters from the OS generator.
fn random_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 32];
    // A failing OS generator is not recoverable; the zero bytes would still be unique per
    // Secret only by chance, so refuse loudly instead.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the OS random generator works");
    bytes.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn nats_logs_in_with_a_password_a_token_or_a_credentials_file_and_only_nats_takes_the_last_two() {
        let login = |driver, pairs: &[(&str, &str)]| external_login(driver, "login", &data(pairs));
        let password = login(Driver::Kafka, &[("username", "app"), ("password", "pw")]).expect("a password login");
        assert_eq!(password.0.map(|c| c.username).as_deref(), Some("app"));
        assert_eq!(login(Driver::Nats, &[("token", "t0k\n")]), Ok((None, Some(NatsLogin::Token("t0k".into())))));
        assert_eq!(login(Driver::Nats, &[("creds", "JWT")]), Ok((None, Some(NatsLogin::Creds("JWT".into())))));
        let refused = login(Driver::Kafka, &[("token", "t0k")]).expect_err("Kafka takes no token");
        assert!(refused.contains("only NATS") && refused.contains("username and password"), "{refused}");
        assert!(login(Driver::Nats, &[("token", "t"), ("creds", "c")]).is_err(), "two logins are ambiguous");
        assert!(login(Driver::Nats, &[("token", "t"), ("username", "u")]).is_err(), "two logins are ambiguous");
        let empty = login(Driver::Nats, &[("password", "pw")]).expect_err("no user");
        assert!(empty.contains("no key username, token or creds"), "{empty}");
    }
}
