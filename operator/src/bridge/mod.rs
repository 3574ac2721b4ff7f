//! The Bridge controller.
//!
//! Reconcile: the Bridge's workload identity (a certificate Secret `<bridge>-oms-tls` with
//! `tls.crt`, `tls.key` and the trust bundle `ca.crt` for
//! `spiffe://<trust-domain>/ns/<namespace>/bridge/<name>`, renewed at two thirds of its lifetime)
//! -> dereference both Queues and their access points (existence, sharing grant, binding Secret)
//! -> [`render`] the worker config and Deployment -> server-side apply -> status. A reference the
//! access point does not grant creates nothing and says `ReferenceNotPermitted`. Ends behind
//! another cloud's gateway and status from the data path come next.

pub mod render;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use oms_crds::access_point::{Driver, MessagingAccessPoint};
use oms_crds::bridge::Bridge;
use oms_crds::common::condition_type::READY;
use oms_crds::queue::Queue;
use tokio_util::sync::CancellationToken;

use crate::apply::{apply, apply_status};
use crate::certificates::{self, CertificateError, Subject};
use crate::conditions::{Decided, Status, merge};
use crate::context::Context;
use crate::pki::Pki;
use crate::queue::plan::{broker_name, is_shared, reference_permitted};

use self::render::ResolvedEnd;

/// The `kind` label of this controller's metrics.
const KIND: &str = "Bridge";
/// Retry soon after a failure that time may fix (API server busy).
const RETRY_SOON: Duration = Duration::from_secs(15);
/// Look again at a Bridge whose worker is in place this often: changes to its ConfigMap,
/// Deployment and Secret wake it through the watches anyway; this catches changed Queues and
/// access points, without re-applying every few seconds.
const RESYNC: Duration = Duration::from_mins(5);

/// The certificate Secret of a Bridge.
#[must_use]
pub fn certificate_secret_name(bridge: &str) -> String {
    format!("{bridge}-oms-tls")
}

/// Runs until `shutdown`; watches the Secrets it owns, so a deleted or edited one is put back.
pub async fn run(ctx: Arc<Context>, pki: Arc<Pki>, namespace: Option<String>, shutdown: CancellationToken) {
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=oms-operator");
    Controller::new(ctx.api::<Bridge>(namespace.as_deref()), watcher::Config::default())
        .owns(ctx.api::<Secret>(namespace.as_deref()), owned.clone())
        .owns(ctx.api::<ConfigMap>(namespace.as_deref()), owned.clone())
        .owns(ctx.api::<Deployment>(namespace.as_deref()), owned)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, Arc::new((ctx, pki)))
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("cannot read {what}: {source}")]
    Read { what: String, source: kube::Error },
    #[error("cannot write {what}: {source}")]
    Write { what: String, source: kube::Error },
}

async fn reconcile(bridge: Arc<Bridge>, state: Arc<(Arc<Context>, Arc<Pki>)>) -> Result<Action, Error> {
    let (ctx, pki) = (&state.0, &state.1);
    let started = Instant::now();
    let result = reconcile_bridge(&bridge, ctx, pki).await;
    let label = match &result {
        Ok(_) => "success",
        Err(Error::Certificate(error)) => error.metric_label(),
        Err(Error::Read { .. }) => "read",
        Err(Error::Write { .. }) => "write",
    };
    ctx.metrics.observe_reconcile(KIND, label, started);
    result
}

// The signature is the error policy callback of kube-runtime.
#[allow(clippy::needless_pass_by_value)]
fn error_policy(bridge: Arc<Bridge>, error: &Error, _state: Arc<(Arc<Context>, Arc<Pki>)>) -> Action {
    tracing::warn!(message = "Bridge reconcile failed; retrying.", bridge = %bridge.name_any(), %error);
    Action::requeue(RETRY_SOON)
}

async fn reconcile_bridge(bridge: &Bridge, ctx: &Context, pki: &Pki) -> Result<Action, Error> {
    let Some(owner) = bridge.controller_owner_ref(&()) else { return Ok(Action::await_change()) };
    if bridge.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let (namespace, name) = (bridge.namespace().unwrap_or_default(), bridge.name_any());
    let source = resolve(ctx, bridge, &bridge.spec.source.queue_ref).await?;
    let target = resolve(ctx, bridge, &bridge.spec.target.queue_ref).await?;
    // A reference the access point does not grant gets nothing, not even an identity.
    for end in [&source, &target] {
        if let End::NotReady(reason @ REFERENCE_NOT_PERMITTED, message) = end {
            ctx.publish(&bridge.object_ref(&()), EventType::Warning, reason, message).await;
            write_status(ctx, bridge, Status::False, reason, message).await?;
            return Ok(Action::requeue(Duration::from_mins(5)));
        }
    }
    let subject = Subject {
        identity: pki.identity(&namespace, "bridge", &name),
        secret: certificate_secret_name(&name),
        namespace: namespace.clone(),
        dns_names: Vec::new(),
        owner: owner.clone(),
        object: bridge.object_ref(&()),
    };
    let renew_in = certificates::ensure(ctx, pki, subject).await?;
    let ends = match (source, target) {
        (End::Ready(source), End::Ready(target)) => (source, target),
        (End::NotReady(reason, message), _) | (_, End::NotReady(reason, message)) => {
            write_status(ctx, bridge, Status::False, reason, &message).await?;
            return Ok(Action::requeue(RETRY_SOON.min(renew_in)));
        }
    };
    let config = render::worker_config(&namespace, &name, &bridge.spec, &ends.0, &ends.1);
    let write = |what: &str| {
        let what = format!("{what} {}", render::worker_name(&name));
        move |source| Error::Write { what, source }
    };
    apply(&ctx.client, &render::config_map(&namespace, &name, &config, owner.clone()))
        .await
        .map_err(write("ConfigMap"))?;
    let deployment =
        render::deployment(&namespace, &name, &bridge.spec, &ctx.bridge_image, &config, (&ends.0, &ends.1), owner);
    let applied = apply(&ctx.client, &deployment).await.map_err(write("Deployment"))?;
    let ready = applied.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let (status, reason, message) = if ready > 0 {
        (
            Status::True,
            "WorkerRunning",
            format!("{ready} worker pod(s) ready, forwarding {} -> {}", ends.0.queue, ends.1.queue),
        )
    } else {
        (
            Status::False,
            "WorkerStarting",
            format!("worker Deployment {} has no ready pod yet", render::worker_name(&name)),
        )
    };
    write_status(ctx, bridge, status, reason, &message).await?;
    Ok(Action::requeue(RESYNC.min(renew_in)))
}

/// Condition reason for a Queue in another namespace whose access point does not share with us.
const REFERENCE_NOT_PERMITTED: &str = "ReferenceNotPermitted";

enum End {
    Ready(ResolvedEnd),
    NotReady(&'static str, String),
}

/// One end of the Bridge from its Queue and that Queue's access point.
async fn resolve(ctx: &Context, bridge: &Bridge, reference: &oms_crds::common::QueueRef) -> Result<End, Error> {
    let namespace = bridge.namespace().unwrap_or_default();
    let queue_namespace = reference.namespace.clone().unwrap_or_else(|| namespace.clone());
    let queues: Api<Queue> = Api::namespaced(ctx.client.clone(), &queue_namespace);
    let what = format!("Queue {queue_namespace}/{}", reference.name);
    let Some(queue) =
        queues.get_opt(&reference.name).await.map_err(|source| Error::Read { what: what.clone(), source })?
    else {
        return Ok(End::NotReady("QueueNotFound", format!("{what} does not exist")));
    };
    let ap_ref = &queue.spec.access_point_ref;
    let ap_namespace = ap_ref.namespace.clone().unwrap_or_else(|| queue_namespace.clone());
    let aps: Api<MessagingAccessPoint> = Api::namespaced(ctx.client.clone(), &ap_namespace);
    let ap_what = format!("MessagingAccessPoint {ap_namespace}/{}", ap_ref.name);
    let Some(ap) = aps.get_opt(&ap_ref.name).await.map_err(|source| Error::Read { what: ap_what.clone(), source })?
    else {
        return Ok(End::NotReady("AccessPointNotFound", format!("{ap_what} (of {what}) does not exist")));
    };
    let shared_with = ap.spec.sharing.as_ref().map(|s| s.tenants.clone()).unwrap_or_default();
    if !reference_permitted(&namespace, &ap_namespace, &shared_with) {
        return Ok(End::NotReady(
            REFERENCE_NOT_PERMITTED,
            format!(
                "{what} is on {ap_what}, which does not share with namespace {namespace}; ask its owner to add {namespace} to spec.sharing.tenants"
            ),
        ));
    }
    let driver = match ap.spec.driver {
        Driver::Kafka => "kafka",
        Driver::Nats => "nats",
        Driver::Rabbitmq => "amqp",
        Driver::Mqtt => "mqtt",
        Driver::Gateway => {
            return Ok(End::NotReady(
                "Unsupported",
                format!("{what} is behind another cloud's gateway; bridges through gateways are not rendered yet"),
            ));
        }
    };
    let endpoint = crate::access_point::read_binding(&ctx.client, &ap)
        .await
        .map_err(|(name, source)| Error::Read { what: format!("binding Secret {name}"), source })?;
    let Some(endpoint) = endpoint else {
        return Ok(End::NotReady("AccessPointNotReady", format!("{ap_what} has not published its binding Secret yet")));
    };
    // A pod mounts Secrets of its own namespace only.
    let credentials_secret = (ap_namespace == namespace && endpoint.username.is_some())
        .then(|| ap.status.as_ref().and_then(|s| s.binding_secret.clone()))
        .flatten();
    Ok(End::Ready(ResolvedEnd {
        driver: driver.to_owned(),
        servers: endpoint.servers,
        queue: broker_name(
            ap.spec.driver,
            &queue_namespace,
            &queue.name_any(),
            queue.spec.name.as_deref(),
            is_shared(&ap.spec),
        ),
        access_point: format!("{ap_namespace}/{}", ap_ref.name),
        credentials_secret,
    }))
}

async fn write_status(
    ctx: &Context,
    bridge: &Bridge,
    status: Status,
    reason: &'static str,
    message: &str,
) -> Result<(), Error> {
    let generation = bridge.metadata.generation;
    let current = bridge.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let decided = [Decided { type_: READY, status, reason, message: message.to_owned() }];
    let conditions = merge(&current, &decided, generation, k8s_openapi::jiff::Timestamp::now());
    if conditions == current {
        return Ok(());
    }
    let (namespace, name) = (bridge.namespace().unwrap_or_default(), bridge.name_any());
    apply_status::<Bridge>(
        &ctx.client,
        &namespace,
        &name,
        serde_json::json!({"observedGeneration": generation, "conditions": conditions}),
    )
    .await
    .map_err(|source| Error::Write { what: format!("status of Bridge {name}"), source })?;
    Ok(())
}
