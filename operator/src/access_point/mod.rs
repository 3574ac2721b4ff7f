//! The MessagingAccessPoint controller.
//!
//! Reconcile: dereference (default region; a managed Kafka's StatefulSet, and its Queues when the
//! spec asks to shrink) -> [`validate`] into an [`AccessPoint`] (which also decides the size to run,
//! never rewriting the spec) -> credentials (read, or generated and written once) -> for a NATS
//! or RabbitMQ cluster shrinking, the next step its brokers allow ([`shrink`]) -> [`render`] the desired
//! objects -> server-side apply in order -> probe or read back -> [`status`]. An invalid spec gets
//! a condition and waits for a change; API errors back off and retry.

mod credentials;
pub mod kafka_placement;
pub mod kafka_quorum;
mod nats_shrink;
pub mod policy;
mod rabbitmq_shrink;
pub mod render;
pub mod roll;
mod shrink;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use oms_crds::access_point::{Driver, MessagingAccessPoint, MessagingAccessPointStatus};
use oms_crds::common::condition_type::READY;
use oms_crds::queue::Queue;
use tokio_util::sync::CancellationToken;

use self::credentials::{Logins, admin_endpoint, apply_kafka_tenants, apply_rocketmq_tenants, broker_tls, credentials};
use self::render::{access_point_url, binding_secret, client_hosts, managed_objects};
use self::shrink::Shrinking;
use self::validate::{AccessPoint, Managed, Plan, Running, validate};
use crate::admin::kafka_cluster::{self, Finalized};
use crate::admin::rabbitmq_cluster::RabbitmqCluster;
use crate::apply::{apply, apply_status};
use crate::binding;
use crate::broker_tls::BrokerTls;
use crate::certificates::{self, CertificateError, Ensured, Subject};
use crate::conditions::{Decided, Status, merge};
use crate::context::Context;
use crate::drivers::kafka::Quorum as KafkaQuorum;
use crate::drivers::{BrokerDriver, capabilities, managed_driver, tls_secret};
use crate::metrics::keep_resources_gauge;
use crate::pki::{Pki, Trusts};
use crate::probe::{Login, probe};
use kafka_placement::Tend;
use kafka_quorum::VoterStep;
use oms_probe::kafka::quorum::Voter;

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
/// How often a NATS server being retired is looked at: each look takes one step.
const SHRINK_POLL: Duration = Duration::from_secs(5);
/// How often a Kafka roll is looked at: whether a broker has caught up is not watched.
const ROLL_POLL: Duration = Duration::from_secs(5);

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
    #[error("cannot list the pods of StatefulSet {name}: {source}")]
    ReadPods { name: String, source: kube::Error },
    #[error("Secret {name} with the operator's broker user is gone while its brokers hold that user")]
    CredentialsLost { name: String },
    #[error("cannot read ConfigMap {name}: {source}")]
    ReadConfigMap { name: String, source: kube::Error },
    #[error("{message}")]
    TlsMaterialMissing { message: String },
    #[error("{message}")]
    CredentialsUnusable { message: String },
    #[error(transparent)]
    Certificate(#[from] CertificateError),
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
            Error::ReadPods { .. } => "read_pods",
            Error::CredentialsLost { .. } => "credentials_lost",
            Error::ReadConfigMap { .. } => "read_config_map",
            Error::TlsMaterialMissing { .. } => "tls_material_missing",
            Error::CredentialsUnusable { .. } => "credentials_unusable",
            Error::Certificate(error) => error.metric_label(),
        }
    }
}

/// Runs the controller until `shutdown`; one watch over `namespace`, or all namespaces. `pki`
/// issues the managed brokers' server certificates.
pub async fn run(ctx: Arc<Context>, pki: Arc<Pki>, namespace: Option<String>, shutdown: CancellationToken) {
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
        .run(reconcile, error_policy, Arc::new((ctx, pki)))
        .for_each(|_| futures::future::ready(()));
    futures::join!(reconciling, counting);
}

async fn reconcile(map: Arc<MessagingAccessPoint>, state: Arc<(Arc<Context>, Arc<Pki>)>) -> Result<Action, Error> {
    let (ctx, pki) = (&state.0, &state.1);
    let started = Instant::now();
    let result = Box::pin(reconcile_access_point(&map, ctx, pki)).await;
    ctx.metrics.observe_reconcile(KIND, result.as_ref().map_or_else(Error::metric_label, |_| "success"), started);
    result
}

// The signature is the error policy callback of kube-runtime.
#[allow(clippy::needless_pass_by_value)]
fn error_policy(map: Arc<MessagingAccessPoint>, error: &Error, _state: Arc<(Arc<Context>, Arc<Pki>)>) -> Action {
    tracing::warn!(message = "Reconcile failed; retrying.", access_point = %map.name_any(), namespace = ?map.namespace(), %error);
    Action::requeue(RETRY_SOON)
}

async fn reconcile_access_point(map: &MessagingAccessPoint, ctx: &Context, pki: &Pki) -> Result<Action, Error> {
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
    let existing = read_managed_stateful_set(ctx, map).await?;
    let running = match existing.as_ref().and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas) {
        Some(replicas) => Some(Running {
            replicas,
            queues: kafka_queues_if_shrinking(ctx, map, replicas).await?,
            metadata_version: finalized_metadata_version(map),
            static_quorum: map.spec.driver == Driver::Kafka
                && existing.as_ref().is_some_and(|s| !kafka_quorum::is_dynamic(s)),
        }),
        None => None,
    };
    let existing_kafka = existing.filter(|_| map.spec.driver == Driver::Kafka);

    // Validate (and decide the size to run), without touching the spec.
    let mut ap = match validate(&name, &namespace, &map.spec, &default_region, running.as_ref(), &ctx.images) {
        Ok(ap) => ap,
        Err(invalid) => {
            write_status(ctx, map, kept_status(map), &status::invalid(&invalid)).await?;
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
        Err(Error::CredentialsUnusable { message }) => {
            say_not_ready(ctx, map, "CredentialsNotUsable", message, MessagingAccessPointStatus::default()).await?;
            return Ok(Action::requeue(RETRY_SOON));
        }
        Err(error) => return Err(error),
    };
    // The brokers' server certificate first: their clients check them against its signer's CA.
    let certificate = server_certificate(ctx, map, &ap, broker.is_some(), pki, &owner).await?;
    let signer_ca = certificate.as_ref().map(|c| c.signer_ca_pem.as_str());
    let tls = match broker_tls(ctx, signer_ca, &ap).await {
        Ok(tls) => tls,
        // Secrets and ConfigMaps of users are not watched: look again soon.
        Err(Error::TlsMaterialMissing { message }) => {
            say_not_ready(ctx, map, "TlsSettingsNotFound", message, kept_status(map)).await?;
            return Ok(Action::requeue(RETRY_SOON));
        }
        Err(error) => return Err(error),
    };

    let shrinking = shrink_step(ctx, &mut ap, &uid, &hosts, &logins, tls.as_ref()).await;
    // The brokers that run from now on.
    let hosts = client_hosts(&ap, broker);

    // Build and apply; then observe.
    let mut observed = MessagingAccessPointStatus::default();
    let (decided, requeue) = match (&ap.plan, broker) {
        (Plan::Managed(managed), Some(broker)) => {
            let certificate = certificate.as_ref();
            let shrinking = shrinking.as_ref();
            let existing = existing_kafka.as_ref();
            let cluster =
                Cluster { ap: &ap, managed, broker, uid: &uid, owner: &owner, certificate, shrinking, existing };
            let applied = Box::pin(apply_managed(ctx, map, &cluster, &hosts, &logins, tls.as_ref())).await?;
            observed.ready_replicas = applied.ready;
            observed.metadata_version = applied.metadata_version.or_else(|| finalized_metadata_version(map));
            (applied.decided, applied.requeue)
        }
        // Nothing watches an external broker: probing again is how a change is noticed.
        (Plan::External(_), _) => (probe_external(&ap, &hosts, &logins, tls.as_ref()).await, ctx.probe_interval),
        (Plan::Gateway { .. } | Plan::Managed(_), _) => (status::gateway(), RESYNC),
    };
    let login = (logins.binding.as_ref(), logins.nats_login.as_ref());
    apply_binding_secret(ctx, &binding_secret(&ap, &hosts, login, tls.as_ref(), &owner)).await?;

    observed.access_point = Some(access_point_url(&ap, &hosts));
    observed.tls = status::tls(&ap, tls.is_some());
    observed.binding_secret = Some(binding::secret_name(&name));
    observed.capabilities = Some(capabilities(ap.driver));
    observed.gateway_endpoint = ap.gateway.as_ref().map(|g| g.endpoint(&name, &namespace));
    announce_ready_change(ctx, map, &decided).await;
    write_status(ctx, map, observed, &decided).await?;
    Ok(Action::requeue(requeue))
}

/// Probes each server of an external broker, as the access point's login; the conditions they
/// decide.
async fn probe_external(
    ap: &AccessPoint,
    hosts: &[(String, u16)],
    logins: &Logins,
    tls: Option<&BrokerTls>,
) -> Vec<Decided> {
    let login = Login {
        credentials: logins.binding.as_ref(),
        nats_login: logins.nats_login.as_ref(),
        tls,
        sasl_mechanism: ap.plan.sasl_mechanism(),
    };
    let mut results = Vec::with_capacity(hosts.len());
    for (host, port) in hosts {
        results.push((format!("{host}:{port}"), probe(ap.driver, host, *port, &login).await));
    }
    let mut decided = status::external(ap.driver.as_str(), &results);
    if ap.driver == Driver::Rocketmq {
        // The proxies serve clients; the operator provisions through the name servers.
        let mut name_servers = Vec::new();
        for (host, port) in ap.plan.name_servers() {
            let server = format!("{host}:{port}");
            let endpoint = crate::admin::Endpoint {
                name_servers: vec![server.clone()],
                tls: tls.cloned(),
                ..crate::admin::Endpoint::default()
            };
            let listed = crate::admin::rocketmq_masters(&endpoint).await;
            name_servers.push((server, listed.map(|_| ()).map_err(|e| e.to_string())));
        }
        status::rocketmq_name_servers(&mut decided, &name_servers);
    }
    decided
}

/// A NATS or RabbitMQ cluster asked to shrink retires one broker per step, as its brokers allow:
/// the step they allow now, taken; one that stopped a broker makes `ap` run one fewer.
async fn shrink_step(
    ctx: &Context,
    ap: &mut AccessPoint,
    uid: &str,
    hosts: &[(String, u16)],
    logins: &Logins,
    tls: Option<&BrokerTls>,
) -> Option<Shrinking> {
    let Plan::Managed(Managed { steps_down_to: Some(desired), replicas, .. }) = &ap.plan else { return None };
    let sizes = (*replicas, *desired);
    let shrinking = match ap.driver {
        Driver::Nats => Shrinking::nats(nats_shrink::ask_servers(ap, hosts, logins, tls, sizes).await, sizes).await,
        Driver::Rabbitmq => {
            let cluster = RabbitmqCluster::new(ctx.client.clone(), &ap.namespace, &ap.name);
            Shrinking::rabbitmq(rabbitmq_shrink::ask_nodes(cluster, sizes.0).await, sizes).await
        }
        Driver::Kafka => {
            let endpoint = logins.admin.as_ref().map(|admin| admin_endpoint(hosts, admin, tls));
            let cluster_id = render::cluster_id(uid);
            let asked = kafka_placement::Shrinking::ask(&ctx.admins, endpoint, &ap.name, cluster_id, sizes.0).await;
            Shrinking::kafka(asked, sizes).await
        }
        Driver::Mqtt | Driver::Rocketmq | Driver::Gateway => return None,
    };
    if let (true, Plan::Managed(managed)) = (shrinking.stopped_one(), &mut ap.plan) {
        managed.replicas -= 1;
    }
    Some(shrinking)
}

/// A managed cluster to apply: the validated access point and what renders it.
struct Cluster<'a> {
    ap: &'a AccessPoint,
    managed: &'a Managed,
    broker: &'a dyn BrokerDriver,
    uid: &'a str,
    owner: &'a OwnerReference,
    /// The brokers' server certificate, with TLS.
    certificate: Option<&'a Ensured>,
    /// NATS and RabbitMQ: the step of a shrink under way.
    shrinking: Option<&'a Shrinking>,
    /// Kafka: its StatefulSet as read before this apply.
    existing: Option<&'a StatefulSet>,
}

/// The brokers' server certificate, when we run brokers serving TLS (`driven`: a driver renders
/// them): their pods' names through the headless Service and the client Service's, from the
/// signer, trusting the signer's CA alone.
async fn server_certificate(
    ctx: &Context,
    map: &MessagingAccessPoint,
    ap: &AccessPoint,
    driven: bool,
    pki: &Pki,
    owner: &OwnerReference,
) -> Result<Option<Ensured>, CertificateError> {
    if !(driven && ap.plan.serves_tls()) {
        return Ok(None);
    }
    let subject = Subject {
        namespace: ap.namespace.clone(),
        secret: tls_secret(&ap.name),
        identity: pki.identity(&ap.namespace, "broker", &ap.name),
        dns_names: render::server_names(&ap.name, &ap.namespace),
        trusts: Trusts::SignerAlone,
        lifetime: pki.broker_lifetime,
        owner: owner.clone(),
        object: map.object_ref(&()),
    };
    Ok(Some(certificates::ensure(ctx, pki, subject).await?))
}

/// What applying a managed cluster decided and saw.
struct Applied {
    decided: Vec<Decided>,
    /// When to look again.
    requeue: Duration,
    /// The brokers Ready, when the StatefulSet was applied.
    ready: Option<i32>,
    /// Kafka: the finalized `metadata.version`, when it was read.
    metadata_version: Option<String>,
}

/// Applies a managed cluster's objects, then its tenants' broker users where they go through the
/// admin API (Kafka), and once a Kafka roll is over its `metadata.version`.
async fn apply_managed(
    ctx: &Context,
    map: &MessagingAccessPoint,
    cluster: &Cluster<'_>,
    hosts: &[(String, u16)],
    logins: &Logins,
    tls: Option<&BrokerTls>,
) -> Result<Applied, Error> {
    let Cluster { ap, managed, broker, uid, owner, certificate, shrinking, existing } = *cluster;
    let quorum = match ap.driver {
        Driver::Kafka => Some(read_kafka_quorum(ctx, ap, existing, managed.replicas).await?),
        _ => None,
    };
    let mut objects = managed_objects(ap, managed, broker, uid, owner, certificate.map(|c| c.digest.as_str()), quorum);
    if let Some(quorum) = quorum {
        kafka_quorum::mark(&mut objects.stateful_set, quorum);
    }
    let pod = objects.stateful_set.spec.as_mut().and_then(|s| s.template.spec.as_mut());
    crate::workload::add_pull_secrets(pod, &ctx.image_pull_secrets);
    // Kafka takes a change one broker at a time, each once every partition is in sync ([`roll`]).
    // The operator's login to a managed Kafka: for its roll, placement and metadata.version.
    let kafka_endpoint =
        logins.admin.as_ref().filter(|_| ap.driver == Driver::Kafka).map(|a| admin_endpoint(hosts, a, tls));
    let roll = match &kafka_endpoint {
        Some(endpoint) => {
            Some(hold_kafka_roll(ctx, existing, managed.replicas, &mut objects.stateful_set, endpoint).await?)
        }
        None => None,
    };
    // A certificate due for renewal is looked at in time.
    let recheck = |requeue: Duration| certificate.map_or(requeue, |c| requeue.min(c.recheck_in));
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
            let shrink_poll = match shrinking {
                Some(shrinking) => Some(say_shrink_step(ctx, map, shrinking, &mut decided).await),
                None => None,
            };
            let roll_poll = match roll.as_ref() {
                Some(roll::Step { progress: Some(progress), let_go, .. }) => {
                    if let Some(pod) = let_go {
                        say_broker_let_go(ctx, map, pod, progress).await;
                    }
                    status::rolling(&mut decided, progress);
                    Some(ROLL_POLL)
                }
                _ => None,
            };
            // A refused size needs the user: it is what Progressing says, with a roll under way.
            if let Some(message) = &managed.resize_refused {
                publish(ctx, map, EventType::Warning, "ResizeRefused", message).await;
                let rolling = roll.as_ref().and_then(|r| r.progress.as_deref());
                status::refuse_resize(
                    &mut decided,
                    rolling.map_or_else(|| message.clone(), |p| format!("{message}; {p}")),
                );
            }
            // Tenant users go through the brokers' admin API, once one of them answers.
            let mut users_failed = false;
            let tenants_applied = match ap.driver {
                _ if ready == 0 => Ok(()),
                Driver::Kafka => apply_kafka_tenants(ctx, ap, hosts, logins, tls).await,
                Driver::Rocketmq => apply_rocketmq_tenants(ctx, ap, logins, tls).await,
                _ => Ok(()),
            };
            if let Err(message) = tenants_applied {
                status::tenant_users_failed(&mut decided, message);
                users_failed = true;
            }
            // Settled Kafka brokers: the quorum's voters and the partitions go where they should,
            // and a roll to a newer release, if that is what is over, lets the cluster write its
            // metadata as it does.
            let (mut metadata_version, mut placing_poll) = (None, None);
            if let (Some(endpoint), Some(roll::Step { progress: None, .. }), None) =
                (&kafka_endpoint, roll.as_ref(), shrinking)
                && status::settled(managed.replicas, &stateful_set)
            {
                let config_map = &mut objects.config_map;
                let tending = tend_settled_kafka(ctx, map, endpoint, quorum, config_map, uid, managed).await?;
                // A refused size, said above, needs the user more.
                let refused = managed.resize_refused.is_some();
                if !matches!(tending, KafkaTending::Settled(_)) {
                    placing_poll = Some(ROLL_POLL);
                }
                match tending {
                    KafkaTending::Voting(progress) if !refused => status::changing_voters(&mut decided, progress),
                    KafkaTending::Placing(progress) if !refused => status::placing(&mut decided, progress),
                    KafkaTending::Settled(level) => metadata_version = level,
                    KafkaTending::Voting(_) | KafkaTending::Placing(_) => {}
                }
            }
            let requeue = match (shrink_poll.or(roll_poll).or(placing_poll), ready >= managed.replicas && !users_failed)
            {
                (Some(poll), _) => poll,
                (None, true) => RESYNC,
                (None, false) => RETRY_SOON,
            };
            Ok(Applied { decided, requeue: recheck(requeue), ready: Some(ready), metadata_version })
        }
        // The API server refuses changes of immutable StatefulSet fields; say so instead of looping.
        Err(kube::Error::Api(status)) if status.code == 422 => {
            let message = format!("the StatefulSet cannot take this change: {}", status.message);
            publish(ctx, map, EventType::Warning, "UpdateRefused", &message).await;
            let decided = status::apply_refused(message);
            Ok(Applied { decided, requeue: recheck(RESYNC), ready: None, metadata_version: None })
        }
        Err(source) => Err(Error::Apply { kind: "StatefulSet", name: ap.name.clone(), source }),
    }
}

/// What settled Kafka brokers are doing.
enum KafkaTending {
    /// Their controller quorum forms, or its voters change: what Progressing says.
    Voting(String),
    /// Partitions move between them: what Progressing says.
    Placing(String),
    /// Nothing: the `metadata.version` they are at, when a broker answered.
    Settled(Option<String>),
}

/// The next thing settled Kafka brokers need, in order: their dynamic controller quorum sealed
/// once formed, then its voters as the size wants; partitions where they should be; then
/// `metadata.version` raised to the newest the brokers support.
async fn tend_settled_kafka(
    ctx: &Context,
    map: &MessagingAccessPoint,
    endpoint: &crate::admin::Endpoint,
    quorum: Option<KafkaQuorum>,
    config_map: &mut ConfigMap,
    uid: &str,
    managed: &Managed,
) -> Result<KafkaTending, Error> {
    let voting = match quorum {
        Some(KafkaQuorum::Dynamic { first_voters }) => {
            seal_kafka_quorum(ctx, map, endpoint, config_map, uid, (first_voters, managed.replicas)).await?
        }
        Some(KafkaQuorum::DynamicFormed) => tend_kafka_voters(ctx, map, endpoint, uid, managed).await,
        Some(KafkaQuorum::Static) | None => None,
    };
    if let Some(progress) = voting {
        return Ok(KafkaTending::Voting(progress));
    }
    Ok(match place_kafka_partitions(ctx, map, endpoint, managed.replicas).await {
        Some(progress) => KafkaTending::Placing(progress),
        // A gone broker still registered would make the controller refuse the level.
        None => KafkaTending::Settled(raise_metadata_version(ctx, map, endpoint).await),
    })
}

/// The controller quorum a managed Kafka runs: by its StatefulSet as read before this apply, and
/// its config ConfigMap.
async fn read_kafka_quorum(
    ctx: &Context,
    ap: &AccessPoint,
    existing: Option<&StatefulSet>,
    replicas: i32,
) -> Result<KafkaQuorum, Error> {
    let name = render::config_map_name(&ap.name);
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ap.namespace);
    let config_map = config_maps.get_opt(&name).await.map_err(|source| Error::ReadConfigMap { name, source })?;
    Ok(kafka_quorum::quorum_of(existing, config_map.as_ref().and_then(|c| c.data.as_ref()), replicas))
}

/// Once the controller lists a forming dynamic quorum's `first_voters` (of `replicas` brokers now)
/// as its voters, empties their list in `config_map` (applied again): a controller formatting
/// later joins as an observer, and an Event says the quorum formed. What Progressing says until
/// then.
async fn seal_kafka_quorum(
    ctx: &Context,
    map: &MessagingAccessPoint,
    endpoint: &crate::admin::Endpoint,
    config_map: &mut ConfigMap,
    uid: &str,
    (first_voters, replicas): (i32, i32),
) -> Result<Option<String>, Error> {
    let described = match kafka_cluster::read_quorum(endpoint).await {
        Ok(described) => described,
        Err(error) => return Ok(Some(format!("the controller quorum is forming: cannot read it: {error}"))),
    };
    if !kafka_quorum::formed(&described, &render::cluster_id(uid), first_voters, replicas) {
        let now = kafka_quorum::describe(&described);
        return Ok(Some(format!("the controller quorum is forming from {first_voters} voter(s): {now}")));
    }
    let data = config_map.data.get_or_insert_with(Default::default);
    data.insert(kafka_quorum::INITIAL_CONTROLLERS_FILE.to_owned(), String::new());
    apply_named(ctx, "ConfigMap", config_map).await?;
    let message = format!(
        "the controller quorum formed: {}; a controller that formats from now on joins as an observer",
        kafka_quorum::describe(&described)
    );
    publish(ctx, map, EventType::Normal, "ControllerQuorumFormed", &message).await;
    Ok(None)
}

/// Takes the next step of a formed quorum's voters toward the controllers `managed`'s size keeps
/// (an Event says it); what Progressing says while one is due.
async fn tend_kafka_voters(
    ctx: &Context,
    map: &MessagingAccessPoint,
    endpoint: &crate::admin::Endpoint,
    uid: &str,
    managed: &Managed,
) -> Option<String> {
    let described = match kafka_cluster::read_quorum(endpoint).await {
        Ok(described) => described,
        // Voters may be due: nothing else is settled until it can be told.
        Err(error) => return Some(format!("cannot read the controller quorum: {error}")),
    };
    let step = kafka_quorum::next_voter_step(&described, crate::drivers::controller_voters(managed.replicas));
    let (reason, progress) = step.progress()?;
    let cluster_id = render::cluster_id(uid);
    let taken = match step {
        VoterStep::Settled | VoterStep::Wait(_) => return Some(progress),
        VoterStep::Add { id, directory_id } => {
            let listener =
                crate::drivers::kafka::controller_listener(&map.name_any(), &map.namespace().unwrap_or_default(), id);
            kafka_cluster::add_voter(endpoint, cluster_id, Voter { id, directory_id, listener }).await
        }
        VoterStep::Remove { id, directory_id, .. } => {
            kafka_cluster::remove_voter(endpoint, cluster_id, id, directory_id).await
        }
    };
    match taken {
        Ok(()) => {
            publish(ctx, map, EventType::Normal, reason, &progress).await;
            Some(progress)
        }
        Err(error) => Some(format!("{progress}: {error}")),
    }
}

/// Sets the partition a Kafka StatefulSet's rolling update holds at, and the hash of its template,
/// on `stateful_set` about to be applied; returns where the roll is (`existing`: as read before).
async fn hold_kafka_roll(
    ctx: &Context,
    existing: Option<&StatefulSet>,
    replicas: i32,
    stateful_set: &mut StatefulSet,
    endpoint: &crate::admin::Endpoint,
) -> Result<roll::Step, Error> {
    let name = stateful_set.metadata.name.clone().unwrap_or_default();
    let Some(spec) = stateful_set.spec.as_mut() else { return Ok(roll::Step::default()) };
    let hash = roll::template_hash(&spec.template);
    let pods = match existing {
        Some(_) => {
            let selector = spec.selector.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}"));
            let selector = selector.collect::<Vec<_>>().join(",");
            let pods: Api<Pod> =
                Api::namespaced(ctx.client.clone(), stateful_set.metadata.namespace.as_deref().unwrap_or_default());
            let listed = pods.list(&ListParams::default().labels(&selector)).await;
            listed.map_err(|source| Error::ReadPods { name: name.clone(), source })?.items
        }
        None => Vec::new(),
    };
    let step = roll::step(roll::look(existing, &hash, replicas, &pods), replicas, &ctx.admins, endpoint).await;
    spec.update_strategy = Some(roll::strategy(step.partition));
    stateful_set.metadata.annotations.get_or_insert_default().insert(roll::TEMPLATE_HASH_ANNOTATION.into(), hash);
    Ok(step)
}

/// Moves what settled Kafka brokers need moved ([`kafka_placement::tend`]) and says so in an
/// Event; what is under way, for the Progressing condition.
async fn place_kafka_partitions(
    ctx: &Context,
    map: &MessagingAccessPoint,
    endpoint: &crate::admin::Endpoint,
    brokers: i32,
) -> Option<String> {
    let tend = match kafka_placement::read(&ctx.admins, endpoint).await {
        Ok((partitions, placement)) => kafka_placement::tend(&partitions, brokers, &placement),
        Err(error) => {
            tracing::warn!(access_point = %map.name_any(), %error, "cannot read where the partitions are");
            return None;
        }
    };
    let progress = tend.progress()?;
    let (taken, reason) = match &tend {
        Tend::Move { moves, .. } => (kafka_cluster::reassign(endpoint, moves.clone()).await, "ReassignPartitions"),
        Tend::Unregister(brokers) => (kafka_cluster::unregister(endpoint, brokers.clone()).await, "UnregisterBrokers"),
        Tend::Settled | Tend::Wait(_) => return Some(progress),
    };
    match taken {
        Ok(()) => {
            publish(ctx, map, EventType::Normal, reason, &progress).await;
            Some(progress)
        }
        Err(error) => Some(format!("{progress}: {error}")),
    }
}

/// Raises a managed Kafka's finalized `metadata.version` to its brokers' newest (an Event says
/// so, or a Warning why the controller refused); the level it is at, when a broker answered.
async fn raise_metadata_version(
    ctx: &Context,
    map: &MessagingAccessPoint,
    endpoint: &crate::admin::Endpoint,
) -> Option<String> {
    match kafka_cluster::finalize_metadata_version(endpoint).await {
        Ok(Finalized { level, raised_from }) => {
            let name = kafka_cluster::level_name(level);
            if let Some(from) = raised_from {
                let message = format!(
                    "metadata.version raised from {} to {name}: every broker runs a release that supports it",
                    kafka_cluster::level_name(from)
                );
                publish(ctx, map, EventType::Normal, "MetadataVersionRaised", &message).await;
            }
            Some(name)
        }
        Err(message) => {
            publish(ctx, map, EventType::Warning, "MetadataVersionNotRaised", &message).await;
            None
        }
    }
}

/// The `metadata.version` the status last gave.
fn finalized_metadata_version(map: &MessagingAccessPoint) -> Option<String> {
    map.status.as_ref().and_then(|s| s.metadata_version.clone())
}

/// A status for an access point that cannot be acted on now: empty but for what must outlive
/// that (the finalized `metadata.version`, which guards against a downgrade).
fn kept_status(map: &MessagingAccessPoint) -> MessagingAccessPointStatus {
    MessagingAccessPointStatus {
        metadata_version: finalized_metadata_version(map),
        ..MessagingAccessPointStatus::default()
    }
}

/// An Event for a broker a roll let go, about its pod: the recorder folds Events of the same
/// action and related object into one.
async fn say_broker_let_go(ctx: &Context, map: &MessagingAccessPoint, pod: &str, progress: &str) {
    let reference = map.object_ref(&());
    ctx.publish_action(&reference, EventType::Normal, "RollingBroker", ("Roll", Some(pod_ref(map, pod))), progress)
        .await;
}

/// A pod of the access point's namespace, for the related object of an Event.
fn pod_ref(map: &MessagingAccessPoint, pod: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.to_owned()),
        namespace: map.namespace(),
        ..ObjectReference::default()
    }
}

/// Says a shrink's step: a refusal as such, any other step as progress (an Event for each step
/// taken). Returns when to look again: a refusal depends on what the brokers hold, which nothing
/// watched tells of, so it is looked at again soon too.
async fn say_shrink_step(
    ctx: &Context,
    map: &MessagingAccessPoint,
    shrinking: &Shrinking,
    decided: &mut [Decided],
) -> Duration {
    let progress = shrinking.progress();
    match (shrinking.refused(), shrinking.taken()) {
        (true, _) => {
            publish(ctx, map, EventType::Warning, "ResizeRefused", &progress).await;
            status::refuse_resize(decided, progress);
            return RETRY_SOON;
        }
        (false, Ok(())) => {
            // One Event per step, about the broker's pod: the recorder folds Events of the
            // same action and related object into one.
            if let Some((action, server)) = shrinking.action() {
                let pod = pod_ref(map, server);
                let reference = map.object_ref(&());
                ctx.publish_action(&reference, EventType::Normal, "ScalingDown", (action, Some(pod)), &progress).await;
            }
            status::scaling_down(decided, progress);
        }
        (false, Err(error)) => status::scaling_down(decided, format!("{progress}: {error}")),
    }
    SHRINK_POLL
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

pub(super) async fn apply_named<K>(ctx: &Context, kind: &'static str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    apply(&ctx.client, object).await.map_err(|source| Error::Apply { kind, name: object.name_any(), source })
}

/// The StatefulSet of a managed access point, if it exists yet.
async fn read_managed_stateful_set(ctx: &Context, map: &MessagingAccessPoint) -> Result<Option<StatefulSet>, Error> {
    if map.spec.managed.is_none() {
        return Ok(None);
    }
    let name = map.name_any();
    let stateful_sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &map.namespace().unwrap_or_default());
    stateful_sets.get_opt(&name).await.map_err(|source| Error::ReadStatefulSet { name, source })
}

/// (namespace/name, replication) of the Queues on this Kafka access point, when the spec asks for
/// fewer brokers than `running`: what a scale-down would have to keep.
async fn kafka_queues_if_shrinking(
    ctx: &Context,
    map: &MessagingAccessPoint,
    running: i32,
) -> Result<Vec<(String, i32)>, Error> {
    if map.spec.driver != Driver::Kafka || map.spec.managed.as_ref().is_none_or(|m| m.replicas >= running) {
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
