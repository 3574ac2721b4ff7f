//! The Queue controller.
//!
//! Reconcile: keep the finalizer in step with `deletionPolicy` -> dereference the access point
//! (existence, sharing grant, binding Secret) -> [`plan`] -> observe the broker -> create, or
//! compare and converge (`driftPolicy`) -> status, written only when it changed. Deletion runs the
//! policy; absence of knowledge (access point gone) never deletes anything.

pub mod binding;
pub mod plan;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use oms_crds::access_point::{Driver, MessagingAccessPoint};
use oms_crds::common::Capabilities;
use oms_crds::common::condition_type::{READY, UNSUPPORTED};
use oms_crds::quantity::format_duration;
use oms_crds::queue::{DeletionPolicy, DriftPolicy, Queue, QueueStatus};
use tokio_util::sync::CancellationToken;

use self::plan::{QueuePlan, drift};
use crate::admin::{Admin, AdminError, Deleted, Endpoint, Kept};
use crate::apply::apply_status;
use crate::conditions::{Decided, Status, merge};
use crate::context::Context;
use crate::drivers::capabilities;
use crate::metrics::keep_resources_gauge;
use crate::tenancy::{broker_name, is_shared, reference_permitted};

/// The `kind` label of this controller's metrics.
const KIND: &str = "Queue";
/// Held while broker-side cleanup is owed (deletionPolicy Delete or DeleteIfEmpty).
pub const FINALIZER: &str = "openmessaging.cloud/queue-cleanup";
/// Condition listing differences between the spec and the broker.
pub const DRIFTED: &str = "Drifted";
/// Reconciles running at once: bounds API and broker calls when many objects change together
/// (start-up, an access point coming back).
const CONCURRENT_RECONCILES: u16 = 8;
/// Retry soon after a failure that time may fix (broker down, access point not ready).
const RETRY_SOON: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read MessagingAccessPoint {name}: {source}")]
    ReadAccessPoint { name: String, source: kube::Error },
    #[error("cannot read the binding Secret {name}: {source}")]
    ReadBinding { name: String, source: kube::Error },
    #[error("cannot update the finalizers: {0}")]
    PatchFinalizers(#[source] kube::Error),
    #[error("cannot write the status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("cannot write the tenant's binding Secret {name}: {source}")]
    WriteBinding { name: String, source: kube::Error },
}

impl Error {
    /// The `result` label of `oms_operator_reconcile_total`.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadAccessPoint { .. } => "read_access_point",
            Error::ReadBinding { .. } => "read_binding",
            Error::PatchFinalizers(_) => "patch_finalizers",
            Error::WriteStatus(_) => "write_status",
            Error::WriteBinding { .. } => "write_binding",
        }
    }
}

/// Runs the controller until `shutdown`; one watch over `namespace`, or all namespaces.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>, shutdown: CancellationToken) {
    let controller = Controller::new(ctx.api::<Queue>(namespace.as_deref()), watcher::Config::default());
    let queues = controller.store();
    // An access point that changes (becomes ready, is recreated, is deleted) re-reconciles the
    // queues on it, so that they converge without waiting for their next drift check.
    let controller = controller.watches(ctx.api::<MessagingAccessPoint>(None), watcher::Config::default(), move |ap| {
        let (ap_namespace, ap_name) = (ap.namespace().unwrap_or_default(), ap.name_any());
        queues
            .state()
            .into_iter()
            .filter(|q| q.is_on(&ap_namespace, &ap_name))
            .map(|q| ObjectRef::from_obj(&*q))
            .collect::<Vec<_>>()
    });
    let counting = keep_resources_gauge(controller.store(), ctx.metrics.clone(), KIND, ready_status, shutdown.clone());
    let reconciling = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENT_RECONCILES))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    futures::join!(reconciling, counting);
}

fn ready_status(queue: &Queue) -> Option<String> {
    queue.status.as_ref()?.conditions.iter().find(|c| c.type_ == READY).map(|c| c.status.clone())
}

async fn reconcile(queue: Arc<Queue>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_queue(&queue, &ctx).await;
    ctx.metrics.observe_reconcile(KIND, result.as_ref().map_or_else(Error::metric_label, |_| "success"), started);
    result
}

// The signature is the error policy callback of kube-runtime.
#[allow(clippy::needless_pass_by_value)]
fn error_policy(queue: Arc<Queue>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(message = "Reconcile failed; retrying.", queue = %queue.name_any(), namespace = ?queue.namespace(), %error);
    Action::requeue(RETRY_SOON)
}

/// What the controller learnt about the broker side, for the status.
struct Outcome {
    decided: Vec<Decided>,
    broker_name: Option<String>,
    partitions: Option<i32>,
    /// Retention, replication and duplicate window as the broker reports them.
    kept: Option<Kept>,
    capabilities: Option<Capabilities>,
    /// The tenant's binding Secret, when the access point is another namespace's.
    binding: Binding,
    requeue: Duration,
}

/// What this reconcile learnt about the tenant's binding Secret of the Queue.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Binding {
    /// Not reached this time: the status keeps what it says.
    Unknown,
    /// There is none to have (not a tenant of another namespace's access point, or no longer
    /// permitted): one left from before is deleted.
    None,
    Secret(String),
}

impl Outcome {
    fn not_ready(reason: &'static str, message: impl Into<String>, requeue: Duration) -> Self {
        Self {
            decided: vec![Decided::new(READY, Status::False, reason, message)],
            broker_name: None,
            partitions: None,
            kept: None,
            capabilities: None,
            binding: Binding::Unknown,
            requeue,
        }
    }
}

/// The access point, the plan and the connected admin client of a queue, or why not.
enum Resolved {
    Ready {
        plan: QueuePlan,
        admin: Arc<Admin>,
        endpoint: Endpoint,
        binding: Binding,
    },
    /// The access point does not exist (any more).
    Gone(Outcome),
    NotReady(Outcome),
}

async fn reconcile_queue(queue: &Queue, ctx: &Context) -> Result<Action, Error> {
    let policy = queue.spec.deletion_policy;
    let has_finalizer = queue.finalizers().iter().any(|f| f == FINALIZER);
    if queue.metadata.deletion_timestamp.is_some() {
        return if has_finalizer { clean_up(queue, ctx).await } else { Ok(Action::await_change()) };
    }
    // Finalizers only where broker-side cleanup is owed.
    match (policy == DeletionPolicy::Retain, has_finalizer) {
        (false, false) => set_finalizer(queue, ctx, true).await?,
        (true, true) => set_finalizer(queue, ctx, false).await?,
        _ => {}
    }

    let outcome = match resolve(queue, ctx).await? {
        Resolved::Gone(outcome) | Resolved::NotReady(outcome) => outcome,
        Resolved::Ready { plan, admin, endpoint, binding } => {
            let outcome = match converge(queue, ctx, &plan, &admin).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    ctx.admins.evict(plan.driver, &endpoint).await;
                    Outcome::not_ready("BrokerUnreachable", error.to_string(), RETRY_SOON)
                }
            };
            Outcome { binding, ..outcome }
        }
    };
    if outcome.binding == Binding::None {
        forget_tenant_binding(queue, ctx).await?;
    }
    write_status(queue, ctx, &outcome).await?;
    Ok(Action::requeue(outcome.requeue))
}

/// Dereferences the access point and connects to its broker.
async fn resolve(queue: &Queue, ctx: &Context) -> Result<Resolved, Error> {
    let namespace = queue.namespace().unwrap_or_default();
    let reference = &queue.spec.access_point_ref;
    let ap_namespace = reference.namespace.clone().unwrap_or_else(|| namespace.clone());
    let aps: Api<MessagingAccessPoint> = Api::namespaced(ctx.client.clone(), &ap_namespace);
    let read = |source| Error::ReadAccessPoint { name: format!("{ap_namespace}/{}", reference.name), source };
    let Some(ap) = aps.get_opt(&reference.name).await.map_err(read)? else {
        return Ok(Resolved::Gone(Outcome {
            binding: Binding::None,
            ..Outcome::not_ready(
                "AccessPointNotFound",
                format!(
                    "MessagingAccessPoint {ap_namespace}/{} does not exist; nothing on any broker was changed",
                    reference.name
                ),
                RETRY_SOON,
            )
        }));
    };
    let shared_with = ap.spec.sharing.as_ref().map(|s| s.tenants.clone()).unwrap_or_default();
    if !reference_permitted(&namespace, &ap_namespace, &shared_with) {
        let message = format!(
            "MessagingAccessPoint {ap_namespace}/{} does not share with namespace {namespace}; ask its owner to add {namespace} to spec.sharing.tenants",
            reference.name
        );
        ctx.publish(&queue.object_ref(&()), EventType::Warning, "ReferenceNotPermitted", &message).await;
        return Ok(Resolved::NotReady(Outcome {
            binding: Binding::None,
            ..Outcome::not_ready("ReferenceNotPermitted", message, Duration::from_mins(5))
        }));
    }
    let driver = ap.spec.driver;
    // The broker-side name is decided once and kept in status.brokerName (also as written by earlier
    // versions): sharing the access point later never renames, re-points or orphans a queue.
    let recorded = queue.status.as_ref().and_then(|s| s.broker_name.clone());
    let name = recorded.unwrap_or_else(|| {
        broker_name(driver, &namespace, &queue.name_any(), queue.spec.name.as_deref(), is_shared(&ap.spec))
    });
    let plan = match plan::plan(driver, name, &queue.spec) {
        Ok(plan) => plan,
        Err(invalid) => {
            return Ok(Resolved::NotReady(Outcome::not_ready(
                "InvalidSpec",
                invalid.to_string(),
                Duration::from_mins(5),
            )));
        }
    };
    // From here on the name is decided: every outcome records it.
    let named =
        |outcome: Outcome| Resolved::NotReady(Outcome { broker_name: Some(plan.broker_name.clone()), ..outcome });
    let Some(mut endpoint) = binding_endpoint(ctx, &ap).await? else {
        return Ok(named(Outcome::not_ready(
            "AccessPointNotReady",
            format!("MessagingAccessPoint {ap_namespace}/{} has not published its binding Secret yet", reference.name),
            RETRY_SOON,
        )));
    };
    // A tenant of another namespace's managed access point has a broker user of its own: its NATS
    // streams live in its own account, its RabbitMQ queues in its own virtual host, its Kafka
    // topics under its own ACLs, so they are provisioned as that tenant; and it gets a binding
    // Secret of its own with that user.
    let mut binding = Binding::None;
    // Namespaces admitted only by `*` have no user of their own: they work as the owner (no
    // broker-side separation, as documented).
    let named_tenant = namespace != ap_namespace && shared_with.contains(&namespace);
    if crate::drivers::managed_driver(driver).is_some() && ap.spec.managed.is_some() && named_tenant {
        let Some(password) = tenant_password(ctx, &ap_namespace, &reference.name, &namespace).await? else {
            return Ok(named(Outcome::not_ready(
                "AccessPointNotReady",
                format!(
                    "MessagingAccessPoint {ap_namespace}/{} has no broker user for tenant {namespace} yet",
                    reference.name
                ),
                RETRY_SOON,
            )));
        };
        endpoint.username = Some(namespace.clone());
        endpoint.password = Some(password);
        endpoint.vhost = (driver == Driver::Rabbitmq).then(|| namespace.clone());
        binding = Binding::Secret(write_tenant_binding(queue, ctx, &ap, &endpoint, &plan.broker_name).await?);
    }
    match ctx.admins.get(driver, &endpoint).await {
        Ok(admin) => Ok(Resolved::Ready { plan, admin, endpoint, binding }),
        Err(error) => {
            Ok(named(Outcome { binding, ..Outcome::not_ready("BrokerUnreachable", error.to_string(), RETRY_SOON) }))
        }
    }
}

/// Deletes the tenant's binding Secret the status names, if any: the tenant no longer gets one.
async fn forget_tenant_binding(queue: &Queue, ctx: &Context) -> Result<(), Error> {
    let Some(name) = queue.status.as_ref().and_then(|s| s.binding_secret.clone()) else { return Ok(()) };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &queue.namespace().unwrap_or_default());
    match secrets.delete(&name, &kube::api::DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::WriteBinding { name, source }),
    }
}

/// Writes the tenant's binding Secret of `queue` when it differs from what is there; its name.
async fn write_tenant_binding(
    queue: &Queue,
    ctx: &Context,
    ap: &MessagingAccessPoint,
    endpoint: &Endpoint,
    broker_name: &str,
) -> Result<String, Error> {
    let namespace = queue.namespace().unwrap_or_default();
    let url = ap.status.as_ref().and_then(|s| s.access_point.clone()).unwrap_or_default();
    let owner = queue.controller_owner_ref(&()).unwrap_or_default();
    let desired = binding::tenant_binding(owner, &namespace, &url, ap.spec.driver, endpoint, broker_name);
    let name = desired.metadata.name.clone().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = secrets.get_opt(&name).await.map_err(|source| Error::ReadBinding { name: name.clone(), source })?;
    let same = existing
        .is_some_and(|e| e.data == desired.data && e.metadata.owner_references == desired.metadata.owner_references);
    if !same {
        crate::apply::apply(&ctx.client, &desired)
            .await
            .map_err(|source| Error::WriteBinding { name: name.clone(), source })?;
    }
    Ok(name)
}

/// A tenant's broker password from the access point's tenants Secret.
async fn tenant_password(
    ctx: &Context,
    namespace: &str,
    access_point: &str,
    tenant: &str,
) -> Result<Option<String>, Error> {
    let name = crate::tenancy::tenants_secret_name(access_point);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets.get_opt(&name).await.map_err(|source| Error::ReadBinding { name, source })?;
    Ok(secret.and_then(|s| s.data).and_then(|d| d.get(tenant).map(|v| String::from_utf8_lossy(&v.0).into_owned())))
}

/// Addresses and credentials from the access point's binding Secret.
async fn binding_endpoint(ctx: &Context, ap: &MessagingAccessPoint) -> Result<Option<Endpoint>, Error> {
    crate::binding::read(&ctx.client, ap).await.map_err(|(name, source)| Error::ReadBinding { name, source })
}

/// Observes the queue on the broker and makes it match the plan as the drift policy says.
async fn converge(queue: &Queue, ctx: &Context, plan: &QueuePlan, admin: &Admin) -> Result<Outcome, AdminError> {
    let unsupported = if plan.unsupported.is_empty() {
        Decided::new(UNSUPPORTED, Status::False, "AllSupported", "every field is honoured by the broker")
    } else {
        Decided::new(UNSUPPORTED, Status::True, "FieldsNotHonoured", plan.unsupported.join("; "))
    };
    let provisioned_before =
        queue.status.as_ref().and_then(|s| s.broker_name.as_deref()) == Some(plan.broker_name.as_str());
    let report_only = queue.spec.drift_policy == DriftPolicy::Report;
    let reference = queue.object_ref(&());
    let (ready, drifted, read) = match admin.observe(plan).await? {
        None if provisioned_before && report_only => (
            Decided::new(
                READY,
                Status::False,
                "MissingOnBroker",
                format!("{} was deleted on the broker", plan.broker_name),
            ),
            Decided::new(DRIFTED, Status::True, "MissingOnBroker", "driftPolicy Report: the queue is not recreated"),
            None,
        ),
        None => {
            admin.create(plan).await?;
            let (reason, note) = if provisioned_before {
                ("Recreated", format!("{} was missing on the broker and was recreated", plan.broker_name))
            } else {
                ("Created", format!("created {} on the broker", plan.broker_name))
            };
            ctx.publish(&reference, EventType::Normal, reason, &note).await;
            (
                Decided::new(READY, Status::True, "Provisioned", format!("{} exists on the broker", plan.broker_name)),
                Decided::new(DRIFTED, Status::False, "InSync", ""),
                // What the broker made of the plan, read back.
                admin.observe(plan).await?,
            )
        }
        Some(observed) => {
            let mut differences = drift(plan, observed.partitions, &observed.settings);
            differences.extend(observed.reported_drift.iter().cloned());
            let listed = differences.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            // What the broker has, never what the spec asks; read again after an update.
            let (drifted, read) = if differences.is_empty() {
                (Decided::new(DRIFTED, Status::False, "InSync", ""), observed)
            } else if report_only {
                (Decided::new(DRIFTED, Status::True, "Drifted", listed), observed)
            } else {
                let mut cannot = admin.converge(plan, &observed, &differences).await?;
                // Corrected only when the broker, read again, agrees.
                let after = admin.observe(plan).await?;
                let left: Vec<_> = after
                    .iter()
                    .flat_map(|a| {
                        drift(plan, a.partitions, &a.settings).into_iter().chain(a.reported_drift.iter().cloned())
                    })
                    .collect();
                if cannot.is_empty() && !left.is_empty() {
                    cannot = left.iter().map(|d| format!("{d} after the update")).collect();
                }
                let read = after.unwrap_or(observed);
                if cannot.is_empty() {
                    ctx.publish(&reference, EventType::Normal, "DriftCorrected", &listed).await;
                    (Decided::new(DRIFTED, Status::False, "Corrected", format!("corrected: {listed}")), read)
                } else {
                    (Decided::new(DRIFTED, Status::True, "CannotConverge", cannot.join("; ")), read)
                }
            };
            (
                Decided::new(READY, Status::True, "Provisioned", format!("{} exists on the broker", plan.broker_name)),
                drifted,
                Some(read),
            )
        }
    };
    Ok(Outcome {
        decided: vec![ready, drifted, unsupported],
        broker_name: Some(plan.broker_name.clone()),
        partitions: read.as_ref().map(|r| r.partitions),
        kept: read.map(|r| r.kept),
        capabilities: Some(capabilities(plan.driver)),
        binding: Binding::Unknown,
        requeue: ctx.drift_interval,
    })
}

/// Runs the deletion policy; removes the finalizer when nothing more is owed.
async fn clean_up(queue: &Queue, ctx: &Context) -> Result<Action, Error> {
    let reference = queue.object_ref(&());
    let if_empty = match queue.spec.deletion_policy {
        DeletionPolicy::Retain => {
            set_finalizer(queue, ctx, false).await?;
            return Ok(Action::await_change());
        }
        DeletionPolicy::Delete => false,
        DeletionPolicy::DeleteIfEmpty => true,
    };
    let (plan, admin, endpoint) = match resolve(queue, ctx).await? {
        Resolved::Ready { plan, admin, endpoint, .. } => (plan, admin, endpoint),
        // Without the access point there is nothing to delete through: release, say so.
        Resolved::Gone(outcome) => {
            let note = outcome.decided.first().map(|d| d.message.clone()).unwrap_or_default();
            ctx.publish(&reference, EventType::Warning, "BrokerQueueLeftInPlace", &note).await;
            set_finalizer(queue, ctx, false).await?;
            return Ok(Action::await_change());
        }
        // Unreachable now: the deletion waits for the broker, never skips it.
        Resolved::NotReady(outcome) => {
            write_status(queue, ctx, &Outcome { decided: deletion_blocked(&outcome), ..outcome }).await?;
            return Ok(Action::requeue(RETRY_SOON));
        }
    };
    match admin.delete(&plan.broker_name, if_empty).await {
        Ok(Deleted::Deleted | Deleted::AlreadyGone) => {
            ctx.publish(
                &reference,
                EventType::Normal,
                "Deleted",
                &format!("deleted {} on the broker", plan.broker_name),
            )
            .await;
            set_finalizer(queue, ctx, false).await?;
            Ok(Action::await_change())
        }
        Ok(Deleted::NotEmpty { messages }) => {
            let count = messages.map_or_else(|| "messages".to_owned(), |n| format!("{n} messages"));
            let message = format!(
                "deletionPolicy DeleteIfEmpty: {} still holds {count}, so it stays; drain it, or set deletionPolicy to Retain (keep it) or Delete",
                plan.broker_name
            );
            ctx.publish(&reference, EventType::Warning, "NotEmpty", &message).await;
            let decided = vec![Decided::new(READY, Status::False, "DeletionWaitsForEmptyQueue", message)];
            write_status(
                queue,
                ctx,
                &Outcome {
                    decided,
                    broker_name: Some(plan.broker_name.clone()),
                    partitions: None,
                    kept: None,
                    capabilities: None,
                    binding: Binding::Unknown,
                    requeue: RETRY_SOON,
                },
            )
            .await?;
            Ok(Action::requeue(ctx.drift_interval))
        }
        Err(error) => {
            ctx.admins.evict(plan.driver, &endpoint).await;
            let outcome = Outcome::not_ready("BrokerUnreachable", error.to_string(), RETRY_SOON);
            write_status(queue, ctx, &Outcome { decided: deletion_blocked(&outcome), ..outcome }).await?;
            Ok(Action::requeue(RETRY_SOON))
        }
    }
}

fn deletion_blocked(outcome: &Outcome) -> Vec<Decided> {
    let why = outcome.decided.first().map(|d| d.message.clone()).unwrap_or_default();
    vec![Decided::new(
        READY,
        Status::False,
        "DeletionBlocked",
        format!("the broker-side queue cannot be deleted yet: {why}"),
    )]
}

/// Adds or removes our finalizer with a merge patch of the whole list.
async fn set_finalizer(queue: &Queue, ctx: &Context, present: bool) -> Result<(), Error> {
    let mut finalizers: Vec<String> = queue.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    let api: Api<Queue> = Api::namespaced(ctx.client.clone(), &queue.namespace().unwrap_or_default());
    let patch =
        serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": queue.resource_version()}});
    api.patch(&queue.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(Error::PatchFinalizers)
}

/// Writes the status when it differs from the stored one: a steady queue costs no API write.
async fn write_status(queue: &Queue, ctx: &Context, outcome: &Outcome) -> Result<(), Error> {
    let previous = queue.status.clone().unwrap_or_default();
    let status = QueueStatus {
        broker_name: outcome.broker_name.clone().or(previous.broker_name.clone()),
        partitions: outcome.partitions.or(previous.partitions),
        retention: outcome.kept.as_ref().map_or(previous.retention.clone(), |k| k.retention.clone()),
        replication: outcome.kept.as_ref().map_or(previous.replication, |k| k.replication),
        duplicate_window: outcome
            .kept
            .as_ref()
            .map_or(previous.duplicate_window.clone(), |k| k.duplicate_window.map(format_duration)),
        capabilities: outcome.capabilities.clone().or(previous.capabilities.clone()),
        binding_secret: match &outcome.binding {
            Binding::Unknown => previous.binding_secret.clone(),
            Binding::None => None,
            Binding::Secret(name) => Some(name.clone()),
        },
        observed_generation: queue.metadata.generation,
        conditions: merge(&previous.conditions, &outcome.decided, queue.metadata.generation, Timestamp::now()),
    };
    if status == previous {
        return Ok(());
    }
    let value = serde_json::to_value(&status).unwrap_or_default();
    apply_status::<Queue>(&ctx.client, &queue.namespace().unwrap_or_default(), &queue.name_any(), value)
        .await
        .map(|_| ())
        .map_err(Error::WriteStatus)
}
