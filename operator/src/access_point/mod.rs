//! The MessagingAccessPoint controller.
//!
//! Reconcile: dereference (default region; a managed Kafka's StatefulSet, and its Queues when the
//! spec asks to shrink) -> [`validate`] into an [`AccessPoint`] (which also decides the size to run,
//! never rewriting the spec) -> credentials (read, or generated and written once) -> [`render`] the
//! desired objects -> server-side apply in order -> probe or read back -> [`status`]. An invalid
//! spec gets a condition and waits for a change; API errors back off and retry.

pub mod policy;
pub mod render;
pub mod status;
pub mod validate;

use std::collections::BTreeMap;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use oms_crds::access_point::{Driver, MessagingAccessPoint, MessagingAccessPointStatus};
use oms_crds::common::condition_type::READY;
use oms_crds::queue::Queue;
use tokio_util::sync::CancellationToken;

use self::render::{access_point_url, binding_secret, client_hosts, managed_objects};
use self::validate::{AccessPoint, Managed, Plan, RunningKafka, validate};
use crate::apply::{apply, apply_status};
use crate::binding::{self, Credentials};
use crate::conditions::{Decided, Status, merge};
use crate::context::Context;
use crate::drivers::{BrokerDriver, capabilities, credentials_secret, managed_driver};
use crate::metrics::keep_resources_gauge;
use crate::probe::probe;
use crate::tenancy;

/// The `kind` label of this controller's metrics.
const KIND: &str = "MessagingAccessPoint";
/// Label on nodes that names their region.
const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Region when neither the spec nor any node names one.
const FALLBACK_REGION: &str = "local";
/// Reconciles running at once: bounds API and broker calls when many objects change together
/// (start-up, an access point coming back).
const CONCURRENT_RECONCILES: u16 = 8;
/// How often a healthy access point is looked at again, as a safety net besides watches.
const RESYNC: Duration = Duration::from_mins(5);
/// How often an external broker is probed while it does not answer or brokers start.
const RETRY_SOON: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot list nodes to find the default region: {0}")]
    ReadNodes(#[source] kube::Error),
    #[error("cannot read Secret {name}: {source}")]
    ReadSecret { name: String, source: kube::Error },
    #[error("cannot create Secret {name}: {source}")]
    CreateSecret { name: String, source: kube::Error },
    #[error("cannot apply {kind} {name}: {source}")]
    Apply { kind: &'static str, name: String, source: kube::Error },
    #[error("cannot write the status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("cannot list Queues: {0}")]
    ReadQueues(#[source] kube::Error),
    #[error("cannot read StatefulSet {name}: {source}")]
    ReadStatefulSet { name: String, source: kube::Error },
    #[error("Secret {name} with the operator's broker user is gone while its brokers hold that user")]
    CredentialsLost { name: String },
}

impl Error {
    /// The `result` label of `oms_operator_reconcile_total`.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadNodes(_) => "read_nodes",
            Error::ReadSecret { .. } => "read_secret",
            Error::CreateSecret { .. } => "create_secret",
            Error::Apply { .. } => "apply",
            Error::WriteStatus(_) => "write_status",
            Error::ReadQueues(_) => "read_queues",
            Error::ReadStatefulSet { .. } => "read_stateful_set",
            Error::CredentialsLost { .. } => "credentials_lost",
        }
    }
}

/// Runs the controller until `shutdown`; one watch over `namespace`, or all namespaces.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let namespace = namespace.as_deref();
    // Children are watched by our label only: the operator does not cache every Secret.
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=oms-operator");
    let controller = Controller::new(ctx.api::<MessagingAccessPoint>(namespace), watcher::Config::default())
        .owns(ctx.api::<StatefulSet>(namespace), owned.clone())
        .owns(ctx.api::<Service>(namespace), owned.clone())
        .owns(ctx.api::<ConfigMap>(namespace), owned.clone())
        .owns(ctx.api::<Secret>(namespace), owned);
    let counting = keep_resources_gauge(controller.store(), ctx.metrics.clone(), KIND, ready_status, shutdown.clone());
    let reconciling = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENT_RECONCILES))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    futures::join!(reconciling, counting);
}

async fn reconcile(map: Arc<MessagingAccessPoint>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = Box::pin(reconcile_access_point(&map, &ctx)).await;
    ctx.metrics.observe_reconcile(KIND, result.as_ref().map_or_else(Error::metric_label, |_| "success"), started);
    result
}

// The signature is the error policy callback of kube-runtime.
#[allow(clippy::needless_pass_by_value)]
fn error_policy(map: Arc<MessagingAccessPoint>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(message = "Reconcile failed; retrying.", access_point = %map.name_any(), namespace = ?map.namespace(), %error);
    Action::requeue(RETRY_SOON)
}

async fn reconcile_access_point(map: &MessagingAccessPoint, ctx: &Context) -> Result<Action, Error> {
    let namespace = map.namespace().unwrap_or_default();
    let name = map.name_any();
    let (Some(owner), Some(uid)) = (map.controller_owner_ref(&()), map.uid()) else {
        return Ok(Action::await_change());
    };

    // Dereference: everything the decisions below need is read first.
    let default_region = match map.spec.region {
        Some(_) => FALLBACK_REGION.to_owned(),
        None => default_region(ctx).await?,
    };
    let existing_kafka = read_managed_kafka(ctx, map).await?;
    let running = match existing_kafka.as_ref().and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas) {
        Some(replicas) => Some(RunningKafka { replicas, queues: queues_if_shrinking(ctx, map, replicas).await? }),
        None => None,
    };

    // Validate (and decide the size to run), without touching the spec.
    let ap = match validate(&name, &namespace, &map.spec, &default_region, running.as_ref(), &ctx.images) {
        Ok(ap) => ap,
        Err(invalid) => {
            write_status(ctx, map, MessagingAccessPointStatus::default(), &status::invalid(&invalid)).await?;
            publish(ctx, map, EventType::Warning, "InvalidSpec", &invalid.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    let broker = managed_driver(ap.driver);
    // A Kafka an earlier version made without authentication cannot move to it in place: leave
    // it as it is, and say so.
    if let Some(message) = existing_kafka.as_ref().and_then(status::kafka_without_users) {
        say_not_ready(ctx, map, "RecreateRequired", message, map.status.clone().unwrap_or_default()).await?;
        return Ok(Action::requeue(RESYNC));
    }
    let hosts = client_hosts(&ap, broker);
    let logins = match credentials(ctx, &ap, &owner, existing_kafka.is_some()).await {
        Ok(logins) => logins,
        Err(Error::CredentialsLost { name }) => {
            let message = format!(
                "Secret {name} with the operator's Kafka user is gone, and the brokers' metadata still holds that user's \
                 password: restore the Secret (keys username and password), or bridge the queues to a new access point \
                 and delete this one"
            );
            say_not_ready(ctx, map, "CredentialsLost", message, map.status.clone().unwrap_or_default()).await?;
            return Ok(Action::requeue(RETRY_SOON));
        }
        // A Secret the user has yet to create: say which, and look again soon (Secrets of
        // users are not watched).
        Err(Error::ReadSecret { name, source: kube::Error::Api(status) }) if status.code == 404 => {
            let message = format!(
                "Secret {name} named by spec.external.credentialsSecretRef does not exist; create it with keys username and password"
            );
            say_not_ready(ctx, map, "CredentialsNotFound", message, MessagingAccessPointStatus::default()).await?;
            return Ok(Action::requeue(RETRY_SOON));
        }
        Err(error) => return Err(error),
    };

    // Build and apply; then observe.
    let mut observed = MessagingAccessPointStatus::default();
    let (decided, requeue) = match (&ap.plan, broker) {
        (Plan::Managed(managed), Some(broker)) => {
            let cluster = Cluster { ap: &ap, managed, broker, uid: &uid, owner: &owner };
            let (decided, requeue, ready) = apply_managed(ctx, map, &cluster, &hosts, &logins).await?;
            observed.ready_replicas = ready;
            (decided, requeue)
        }
        (Plan::External(_), _) => {
            let mut results = Vec::with_capacity(hosts.len());
            for (host, port) in &hosts {
                results.push((format!("{host}:{port}"), probe(ap.driver, host, *port).await));
            }
            // Nothing watches an external broker: probing again is how a change is noticed.
            (status::external(ap.driver.as_str(), &results), ctx.probe_interval)
        }
        (Plan::Gateway { .. } | Plan::Managed(_), _) => (status::gateway(), RESYNC),
    };
    apply_binding_secret(ctx, &binding_secret(&ap, &hosts, logins.binding.as_ref(), &owner)).await?;

    observed.access_point = Some(access_point_url(&ap, &hosts));
    observed.binding_secret = Some(binding::secret_name(&name));
    observed.capabilities = Some(capabilities(ap.driver));
    observed.gateway_endpoint = ap.gateway.as_ref().map(|g| g.endpoint(&name, &namespace));
    announce_ready_change(ctx, map, &decided).await;
    write_status(ctx, map, observed, &decided).await?;
    Ok(Action::requeue(requeue))
}

/// A managed cluster to apply: the validated access point and what renders it.
struct Cluster<'a> {
    ap: &'a AccessPoint,
    managed: &'a Managed,
    broker: &'a dyn BrokerDriver,
    uid: &'a str,
    owner: &'a OwnerReference,
}

/// Applies a managed cluster's objects, then its tenants' broker users where they go through the
/// admin API (Kafka); returns its conditions, when to look again and the ready brokers.
async fn apply_managed(
    ctx: &Context,
    map: &MessagingAccessPoint,
    cluster: &Cluster<'_>,
    hosts: &[(String, u16)],
    logins: &Logins,
) -> Result<(Vec<Decided>, Duration, Option<i32>), Error> {
    let Cluster { ap, managed, broker, uid, owner } = *cluster;
    let objects = managed_objects(ap, managed, broker, uid, owner);
    apply_named(ctx, "ServiceAccount", &objects.service_account).await?;
    apply_named(ctx, "ConfigMap", &objects.config_map).await?;
    apply_named(ctx, "Service", &objects.headless_service).await?;
    apply_named(ctx, "Service", &objects.client_service).await?;
    let policy = policy::broker_network_policy(ap, broker, &ctx.operator_namespace, owner);
    apply_named(ctx, "NetworkPolicy", &policy).await?;
    apply_named::<PodDisruptionBudget>(ctx, "PodDisruptionBudget", &objects.pod_disruption_budget).await?;
    match apply(&ctx.client, &objects.stateful_set).await {
        Ok(stateful_set) => {
            let (ready, mut decided) = status::managed(managed.replicas, &stateful_set);
            if let Some(message) = &managed.scale_down_refused {
                publish(ctx, map, EventType::Warning, "ScaleDownRefused", message).await;
                status::refuse_scale_down(&mut decided, message.clone());
            }
            // Tenant users go through the brokers' admin API, once one of them answers.
            let mut users_failed = false;
            if ap.driver == Driver::Kafka
                && ready > 0
                && let Err(message) = apply_kafka_tenants(ctx, ap, hosts, logins).await
            {
                status::tenant_users_failed(&mut decided, message);
                users_failed = true;
            }
            let requeue = if ready >= managed.replicas && !users_failed { RESYNC } else { RETRY_SOON };
            Ok((decided, requeue, Some(ready)))
        }
        // The API server refuses changes of immutable StatefulSet fields; say so instead of looping.
        Err(kube::Error::Api(status)) if status.code == 422 => {
            let message = format!("the StatefulSet cannot take this change: {}", status.message);
            publish(ctx, map, EventType::Warning, "UpdateRefused", &message).await;
            Ok((status::apply_refused(message), RESYNC, None))
        }
        Err(source) => Err(Error::Apply { kind: "StatefulSet", name: ap.name.clone(), source }),
    }
}

/// Says Ready=False with `reason` and `message`, with `status` for the other fields.
async fn say_not_ready(
    ctx: &Context,
    map: &MessagingAccessPoint,
    reason: &'static str,
    message: String,
    status: MessagingAccessPointStatus,
) -> Result<(), Error> {
    let decided = [Decided::new(READY, Status::False, reason, message)];
    announce_ready_change(ctx, map, &decided).await;
    write_status(ctx, map, status, &decided).await
}

async fn apply_named<K>(ctx: &Context, kind: &'static str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    apply(&ctx.client, object).await.map_err(|source| Error::Apply { kind, name: object.name_any(), source })
}

/// The StatefulSet of a managed Kafka access point, if it exists yet.
async fn read_managed_kafka(ctx: &Context, map: &MessagingAccessPoint) -> Result<Option<StatefulSet>, Error> {
    if map.spec.driver != Driver::Kafka || map.spec.managed.is_none() {
        return Ok(None);
    }
    let name = map.name_any();
    let stateful_sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &map.namespace().unwrap_or_default());
    stateful_sets.get_opt(&name).await.map_err(|source| Error::ReadStatefulSet { name, source })
}

/// (namespace/name, replication) of the Queues on this access point, when the spec asks for
/// fewer brokers than `running`: what a scale-down would have to keep.
async fn queues_if_shrinking(
    ctx: &Context,
    map: &MessagingAccessPoint,
    running: i32,
) -> Result<Vec<(String, i32)>, Error> {
    if map.spec.managed.as_ref().is_none_or(|m| m.replicas >= running) {
        return Ok(Vec::new());
    }
    let (name, namespace) = (map.name_any(), map.namespace().unwrap_or_default());
    let queues: Api<Queue> = Api::all(ctx.client.clone());
    let queues = queues.list(&ListParams::default()).await.map_err(Error::ReadQueues)?;
    Ok(queues
        .items
        .iter()
        .filter(|q| q.is_on(&namespace, &name))
        .filter_map(|q| {
            q.spec.replication.map(|r| (format!("{}/{}", q.namespace().unwrap_or_default(), q.name_any()), r))
        })
        .collect())
}

/// Applies the binding Secret unless it already holds exactly this: external access points are
/// reconciled at every probe, and an unchanged Secret must cost no write.
async fn apply_binding_secret(ctx: &Context, desired: &Secret) -> Result<(), Error> {
    let name = desired.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &desired.namespace().unwrap_or_default());
    let existing = secrets.get_opt(&name).await.map_err(|source| Error::ReadSecret { name: name.clone(), source })?;
    let same = existing.is_some_and(|e| {
        e.data == desired.data
            && e.metadata.owner_references == desired.metadata.owner_references
            && desired.metadata.labels.iter().flatten().all(|(k, v)| e.labels().get(k) == Some(v))
    });
    if !same {
        apply_named(ctx, "Secret", desired).await?;
    }
    Ok(())
}

/// The region of the first node that names one, else `local`.
async fn default_region(ctx: &Context) -> Result<String, Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let list = nodes.list_metadata(&ListParams::default().labels(REGION_LABEL)).await.map_err(Error::ReadNodes)?;
    Ok(list
        .items
        .iter()
        .find_map(|n| n.metadata.labels.as_ref().and_then(|l| l.get(REGION_LABEL)).cloned())
        .unwrap_or_else(|| FALLBACK_REGION.to_owned()))
}

/// Who logs in to an access point's broker.
#[derive(Default)]
struct Logins {
    /// For the binding Secret: the user's Secret for external brokers, the access point's own
    /// namespace's tenant user for managed ones.
    binding: Option<Credentials>,
    /// The operator's own user on a managed RabbitMQ or Kafka, generated once.
    admin: Option<Credentials>,
    /// Each served tenant's password, on managed brokers.
    tenants: BTreeMap<String, String>,
}

/// The logins of an access point: for external brokers the user's Secret; for managed ones a user
/// per tenant (the tenants Secret) and, for RabbitMQ and Kafka, the operator's own (made anew
/// only when `brokers_exist` is false: Kafka's metadata keeps the first one).
async fn credentials(
    ctx: &Context,
    ap: &AccessPoint,
    owner: &OwnerReference,
    brokers_exist: bool,
) -> Result<Logins, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ap.namespace);
    match (&ap.plan, ap.driver) {
        (Plan::External(external), _) => {
            let Some(name) = &external.credentials_secret else { return Ok(Logins::default()) };
            Ok(Logins { binding: Some(read_credentials(&secrets, name).await?), ..Logins::default() })
        }
        (Plan::Managed(_), Driver::Rabbitmq | Driver::Kafka | Driver::Nats | Driver::Mqtt) => {
            let admin = if matches!(ap.driver, Driver::Rabbitmq | Driver::Kafka) {
                let name = credentials_secret(&ap.name);
                Some(ensure_generated_credentials(&secrets, &name, ap, owner, !brokers_exist).await?)
            } else {
                None
            };
            // RabbitMQ's definitions list the admin beside the tenants.
            let definitions_admin = admin.as_ref().filter(|_| ap.driver == Driver::Rabbitmq);
            let tenants = ensure_tenants_secret(ctx, &secrets, ap, owner, definitions_admin).await?;
            let password = tenants.get(&ap.namespace).cloned().unwrap_or_default();
            Ok(Logins { binding: Some(Credentials { username: ap.namespace.clone(), password }), admin, tenants })
        }
        _ => Ok(Logins::default()),
    }
}

/// Makes a managed Kafka's SCRAM users and ACLs those of its tenants, as the operator's user.
/// A password is set when its user is new or it changed, and each once per operator process (a
/// tenants Secret made anew has new ones); after that only changes cost a write.
async fn apply_kafka_tenants(
    ctx: &Context,
    ap: &AccessPoint,
    hosts: &[(String, u16)],
    logins: &Logins,
) -> Result<(), String> {
    let Some(admin) = &logins.admin else { return Ok(()) };
    let endpoint = crate::admin::Endpoint {
        servers: hosts.iter().map(|(h, p)| format!("{h}:{p}")).collect(),
        username: Some(admin.username.clone()),
        password: Some(admin.password.clone()),
        vhost: None,
    };
    let tenants: Vec<String> = logins.tenants.keys().cloned().collect();
    let acls = tenancy::kafka_acls(
        &ap.namespace,
        &tenants,
        !ap.shared_with.is_empty(),
        ap.shared_with.iter().any(|t| t == "*"),
    );
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
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ap.namespace.clone()),
                labels: Some(render::labels(ap)),
                owner_references: Some(vec![owner.clone()]),
                ..ObjectMeta::default()
            },
            data: Some(data.into_iter().map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes()))).collect()),
            ..Secret::default()
        };
        apply_named(ctx, "Secret", &secret).await?;
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
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ap.namespace.clone()),
            labels: Some(render::labels(ap)),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        data: Some(data.into_iter().map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes()))).collect()),
        ..Secret::default()
    };
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

async fn write_status(
    ctx: &Context,
    map: &MessagingAccessPoint,
    mut status: MessagingAccessPointStatus,
    decided: &[Decided],
) -> Result<(), Error> {
    let previous = map.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    status.observed_generation = map.metadata.generation;
    status.conditions = merge(previous, decided, map.metadata.generation, Timestamp::now());
    // A steady access point costs no API write.
    if map.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let value = serde_json::to_value(&status).unwrap_or_default();
    apply_status::<MessagingAccessPoint>(&ctx.client, &map.namespace().unwrap_or_default(), &map.name_any(), value)
        .await
        .map(|_| ())
        .map_err(Error::WriteStatus)
}

/// Publishes an Event when the Ready condition changes status.
async fn announce_ready_change(ctx: &Context, map: &MessagingAccessPoint, decided: &[Decided]) {
    let Some(ready) = decided.iter().find(|d| d.type_ == READY) else { return };
    let before =
        map.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == READY)).map(|c| c.status.clone());
    let now = match ready.status {
        Status::True => "True",
        Status::False => "False",
        Status::Unknown => "Unknown",
    };
    if before.as_deref() != Some(now) {
        let kind = if ready.status == Status::False { EventType::Warning } else { EventType::Normal };
        publish(ctx, map, kind, ready.reason, &ready.message).await;
    }
}

async fn publish(ctx: &Context, map: &MessagingAccessPoint, type_: EventType, reason: &str, note: &str) {
    ctx.publish(&map.object_ref(&()), type_, reason, note).await;
}

/// The status of an access point's Ready condition, for the resources gauge.
fn ready_status(map: &MessagingAccessPoint) -> Option<String> {
    map.status.as_ref()?.conditions.iter().find(|c| c.type_ == READY).map(|c| c.status.clone())
}
