//! The Bridge controller.
//!
//! Reconcile: the Bridge's workload identity (a certificate Secret `<bridge>-oms-tls` with
//! `tls.crt`, `tls.key` and the trust bundle `ca.crt` for
//! `spiffe://<trust-domain>/ns/<namespace>/bridge/<name>`, renewed at two thirds of its lifetime)
//! -> dereference both Queues and their access points (existence, sharing grant, binding Secret;
//! for a Queue behind another cloud's gateway, the gateway's endpoint and the access point behind
//! it) -> [`render`] the worker config, [`validate`] it with the worker's own checks (a refusal is
//! `Ready=False`, reason `InvalidSpec` or `Unsupported`, naming the spec field; nothing is deployed, and a worker
//! already running keeps its last accepted config) -> render the Deployment and NetworkPolicy (and, for workers that
//! take turns on an MQTT source, their Lease with a ServiceAccount and Role for it) -> server-side apply ->
//! [`observe`] the workers' admin endpoints -> status (`Ready`, `Connected`, `Stalled`, lag,
//! forwarded). A reference the access point does not grant creates nothing and says
//! `ReferenceNotPermitted`. Every Bridge is looked at again each `--bridge-observe-interval-seconds`.

pub mod observe;
pub mod render;
pub mod validate;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use oms_crds::access_point::MessagingAccessPoint;
use oms_crds::bridge::{Bridge, BridgeStatus};
use oms_crds::common::condition_type::READY;
use oms_crds::quantity::parse_duration;
use oms_crds::queue::Queue;
use tokio_util::sync::CancellationToken;

use crate::apply::{apply, apply_status};
use crate::certificates::{self, Subject};
use crate::conditions::{Decided, Status, merge};
use crate::context::Context;
use crate::pki::{Pki, Trusts};
use crate::tenancy::reference_permitted;
use crate::workload::Error;

use self::render::ResolvedEnd;

/// The `kind` label of this controller's metrics.
const KIND: &str = "Bridge";
/// Retry soon after a failure that time may fix (API server busy).
const RETRY_SOON: Duration = Duration::from_secs(15);

/// The certificate Secret of a Bridge.
#[must_use]
pub fn certificate_secret_name(bridge: &str) -> String {
    format!("{bridge}-oms-tls")
}

/// What the reconciles of one controller share.
pub struct State {
    ctx: Arc<Context>,
    pki: Arc<Pki>,
    /// Forwarded counts per Bridge (by uid), kept across worker restarts.
    /// Per Bridge (uid): the forwarded and the duplicate counts over its workers' lives.
    ledgers: Mutex<HashMap<String, [observe::Ledger; 2]>>,
}

/// Runs until `shutdown`; watches what it owns, so a deleted or edited object is put back.
pub async fn run(ctx: Arc<Context>, pki: Arc<Pki>, namespace: Option<String>, shutdown: CancellationToken) {
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=oms-operator");
    let workers = watcher::Config::default().labels("app.kubernetes.io/component=bridge-worker");
    let controller = Controller::new(ctx.api::<Bridge>(namespace.as_deref()), watcher::Config::default())
        .owns(ctx.api::<Secret>(namespace.as_deref()), owned.clone())
        .owns(ctx.api::<ConfigMap>(namespace.as_deref()), owned)
        .owns(ctx.api::<Deployment>(namespace.as_deref()), workers);
    let store = controller.store();
    let state = Arc::new(State { ctx: ctx.clone(), pki, ledgers: Mutex::new(HashMap::new()) });
    let sweeping = sweep_deleted(state.clone(), store, shutdown.clone());
    let reconciling = controller
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, state)
        .for_each(|_| futures::future::ready(()));
    futures::join!(reconciling, sweeping);
}

/// Deleted Bridges get no reconcile: drop their gauges (a stale `stalled` or certificate expiry
/// would keep alerting) and their ledgers.
async fn sweep_deleted(state: Arc<State>, store: Store<Bridge>, shutdown: CancellationToken) {
    // An empty store before the first list would look like every Bridge was deleted.
    tokio::select! {
        () = shutdown.cancelled() => return,
        ready = store.wait_until_ready() => if ready.is_err() { return },
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_mins(1)) => {}
        }
        let uids: HashSet<String> = store.state().iter().filter_map(|b| b.uid()).collect();
        state.ledgers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|uid, _| uids.contains(uid));
        let live: HashSet<(String, String)> =
            store.state().iter().map(|b| (b.namespace().unwrap_or_default(), b.name_any())).collect();
        let metrics = &state.ctx.metrics;
        for family in [&metrics.bridge_stalled, &metrics.bridge_lag_messages] {
            for (namespace, bridge) in series_of_gone(family, "bridge", |bridge| Some(bridge), &live) {
                let _ = family.remove_label_values(&[&namespace, &bridge]);
            }
        }
        let certificates = &metrics.certificate_expiry_timestamp_seconds;
        for (namespace, secret) in series_of_gone(certificates, "secret", bridge_of_certificate, &live) {
            let _ = certificates.remove_label_values(&[&namespace, &secret]);
        }
    }
}

/// The Bridge a certificate Secret belongs to.
fn bridge_of_certificate(secret: &str) -> Option<&str> {
    secret.strip_suffix("-oms-tls")
}

/// The (`namespace`, `label`) values of a metric family's series that belong to a Bridge (named
/// by `bridge_of` from the label) that no longer exists.
fn series_of_gone(
    family: &dyn prometheus::core::Collector,
    label: &str,
    bridge_of: fn(&str) -> Option<&str>,
    live: &HashSet<(String, String)>,
) -> Vec<(String, String)> {
    let mut gone = Vec::new();
    for metric in family.collect() {
        for sample in metric.get_metric() {
            let value = |name: &str| sample.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_owned());
            let (Some(namespace), Some(value)) = (value("namespace"), value(label)) else { continue };
            if let Some(bridge) = bridge_of(&value)
                && !live.contains(&(namespace.clone(), bridge.to_owned()))
            {
                gone.push((namespace, value));
            }
        }
    }
    gone
}

async fn reconcile(bridge: Arc<Bridge>, state: Arc<State>) -> Result<Action, Error> {
    let ctx = &state.ctx;
    let started = Instant::now();
    // Boxed: the resolved ends make the future large.
    let result = Box::pin(reconcile_bridge(&bridge, &state)).await;
    let label = result.as_ref().map_or_else(Error::metric_label, |_| "success");
    ctx.metrics.observe_reconcile(KIND, label, started);
    result
}

// The signature is the error policy callback of kube-runtime.
#[allow(clippy::needless_pass_by_value)]
fn error_policy(bridge: Arc<Bridge>, error: &Error, _state: Arc<State>) -> Action {
    tracing::warn!(message = "Bridge reconcile failed; retrying.", bridge = %bridge.name_any(), %error);
    Action::requeue(RETRY_SOON)
}

async fn reconcile_bridge(bridge: &Bridge, state: &State) -> Result<Action, Error> {
    let (ctx, pki) = (&*state.ctx, &*state.pki);
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
            write_status(ctx, bridge, &not_running(bridge, reason, message)).await?;
            return Ok(Action::requeue(Duration::from_mins(5)));
        }
    }
    let subject = Subject {
        identity: pki.identity(&namespace, "bridge", &name),
        secret: certificate_secret_name(&name),
        namespace: namespace.clone(),
        dns_names: Vec::new(),
        trusts: Trusts::Bundle,
        lifetime: pki.leaf_lifetime,
        owner: owner.clone(),
        object: bridge.object_ref(&()),
    };
    let renew_in = certificates::ensure(ctx, pki, subject).await?.recheck_in;
    let ends = match (source, target) {
        (End::Ready(source), End::Ready(target)) => (source, target),
        (End::NotReady(reason, message), _) | (_, End::NotReady(reason, message)) => {
            write_status(ctx, bridge, &not_running(bridge, reason, &message)).await?;
            return Ok(Action::requeue(RETRY_SOON.min(renew_in)));
        }
    };
    let file = render::worker_file(&namespace, &name, &bridge.spec, &ends.0, &ends.1);
    let checked = validate::check(&file, bridge.spec.replicas)
        .and_then(|()| validate::check_target_window(&file, ends.1.duplicate_window));
    if let Err(invalid) = checked {
        let message = invalid.to_string();
        ctx.publish(&bridge.object_ref(&()), EventType::Warning, invalid.reason, &message).await;
        write_status(ctx, bridge, &not_running(bridge, invalid.reason, &message)).await?;
        // An edit of the Bridge reconciles at once; one of its Queues or access points is seen here.
        return Ok(Action::requeue(Duration::from_mins(5).min(renew_in)));
    }
    let config = render::worker_config(&file);
    let write = |what: &str| {
        let what = format!("{what} {}", render::worker_name(&name));
        move |source| Error::Write { what, source }
    };
    apply(&ctx.client, &render::config_map(&namespace, &name, &config, owner.clone()))
        .await
        .map_err(write("ConfigMap"))?;
    if render::takes_turns(&bridge.spec, &ends.0) {
        let (lease, account, role, binding) = render::lease_access(&namespace, &name, owner.clone());
        apply(&ctx.client, &lease).await.map_err(write("Lease"))?;
        apply(&ctx.client, &account).await.map_err(write("ServiceAccount"))?;
        apply(&ctx.client, &role).await.map_err(write("Role"))?;
        apply(&ctx.client, &binding).await.map_err(write("RoleBinding"))?;
    }
    let mut deployment = render::deployment(
        &namespace,
        &name,
        &bridge.spec,
        &ctx.bridge_image,
        &config,
        (&ends.0, &ends.1),
        owner.clone(),
    );
    let pod = deployment.spec.as_mut().and_then(|s| s.template.spec.as_mut());
    crate::workload::add_pull_secrets(pod, &ctx.image_pull_secrets);
    let applied = apply(&ctx.client, &deployment).await.map_err(write("Deployment"))?;
    apply(&ctx.client, &render::network_policy(&namespace, &name, owner)).await.map_err(write("NetworkPolicy"))?;
    let deployment_ready = applied.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    let route = format!("{} -> {}", ends.0.queue, ends.1.queue);
    let status = observe_workers(state, bridge, deployment_ready, &route).await?;
    write_status(ctx, bridge, &status).await?;
    Ok(Action::requeue(ctx.bridge_observe_interval.min(renew_in)))
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
    let Some(driver) = crate::workload::protocol(ap.spec.driver) else {
        // Behind another cloud's gateway: reached with the Bridge's certificate, no credentials.
        let (Some(endpoint), Some(remote)) = (&ap.spec.endpoint, &ap.spec.remote) else {
            return Ok(End::NotReady("AccessPointNotReady", format!("{ap_what} has no spec.endpoint or spec.remote")));
        };
        return Ok(End::Ready(ResolvedEnd {
            driver: oms_bridge_config::Protocol::Gateway,
            servers: vec![endpoint.clone()],
            queue: queue.spec.name.clone().unwrap_or_else(|| queue.name_any()),
            access_point: format!("{}/{}", remote.namespace, remote.name),
            name_servers: Vec::new(),
            binding: None,
            duplicate_window: None,
        }));
    };
    // The name the Queue controller decided and recorded; never recomputed from today's sharing.
    let Some(queue_name) = queue.status.as_ref().and_then(|s| s.broker_name.clone()) else {
        return Ok(End::NotReady("QueueNotReady", format!("{what} has not decided its broker-side name yet")));
    };
    let endpoint = crate::binding::read(&ctx.client, &ap)
        .await
        .map_err(|(name, source)| Error::Read { what: format!("binding Secret {name}"), source })?;
    let Some(endpoint) = endpoint else {
        return Ok(End::NotReady("AccessPointNotReady", format!("{ap_what} has not published its binding Secret yet")));
    };
    // A pod mounts Secrets of its own namespace only: the access point's binding Secret when it is
    // ours, else the tenant's own binding Secret the Queue controller wrote for a Queue of ours.
    let secret = if ap_namespace == namespace {
        ap.status.as_ref().and_then(|s| s.binding_secret.clone())
    } else if queue_namespace == namespace {
        queue.status.as_ref().and_then(|s| s.binding_secret.clone())
    } else {
        None
    };
    let binding = secret.and_then(|secret| crate::workload::MountedBinding::of(secret, &endpoint));
    // Never a worker without the login or the TLS settings the brokers need: it would reach
    // them in plaintext, or trust whatever roots its client falls back to.
    if binding.is_none() && (endpoint.username.is_some() || endpoint.tls.is_some()) {
        return Ok(End::NotReady(
            "BindingNotMountable",
            format!(
                "{what} is on {ap_what}, whose login and TLS settings are in a Secret of namespace {ap_namespace}, \
                 which a worker in namespace {namespace} cannot mount; put the Bridge in {queue_namespace} with its Queue"
            ),
        ));
    }
    Ok(End::Ready(ResolvedEnd {
        driver,
        servers: endpoint.servers,
        name_servers: endpoint.name_servers,
        queue: queue_name,
        access_point: format!("{ap_namespace}/{}", ap_ref.name),
        binding,
        duplicate_window: queue
            .status
            .as_ref()
            .and_then(|s| s.duplicate_window.as_deref())
            .and_then(|w| parse_duration(w).ok()),
    }))
}

/// Reads the workers' admin endpoints and decides the status from what they say.
async fn observe_workers(
    state: &State,
    bridge: &Bridge,
    deployment_ready: i32,
    route: &str,
) -> Result<Observed, Error> {
    let ctx = &state.ctx;
    let (namespace, name) = (bridge.namespace().unwrap_or_default(), bridge.name_any());

    // Observe the data path.
    let readings = observe::read_workers(&ctx.client, ctx.bridge_admin_url.as_deref(), &namespace, &name)
        .await
        .map_err(|source| Error::Read { what: format!("pods of {}", render::worker_name(&name)), source })?;
    let previous = bridge.status.clone().unwrap_or_default();
    let [forwarded, duplicates] = {
        let mut ledgers = state.ledgers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let uid = bridge.uid().unwrap_or_default();
        let known = |total: Option<i64>| total.and_then(|t| u64::try_from(t).ok()).unwrap_or(0);
        let [forwarded, duplicates] = ledgers.entry(uid).or_insert_with(|| {
            [
                observe::Ledger::resume(observe::forwarded, known(previous.forwarded_total), &readings),
                observe::Ledger::resume(observe::duplicates, known(previous.duplicates_total), &readings),
            ]
        });
        [forwarded.record(&readings), duplicates.record(&readings)]
    };
    let observation = observe::Observation {
        expected: bridge.spec.replicas,
        readings: readings.into_iter().map(|(_, reading)| reading).collect(),
    };
    let stalled_after =
        oms_crds::quantity::parse_duration(&bridge.spec.stalled_after).unwrap_or(Duration::from_mins(5));
    let now = k8s_openapi::jiff::Timestamp::now();
    let [connected, stalled] = observe::decide(&observation, &previous.conditions, now.as_second(), stalled_after);
    let workers_up = deployment_ready.max(i32::try_from(observation.readings.len()).unwrap_or(i32::MAX));
    let (active, standby) = observation.active_and_standby();
    let ready = if stalled.status == Status::True {
        Decided::new(READY, Status::False, "Stalled", stalled.message.clone())
    } else if workers_up > 0 && connected.status == Status::True {
        let standing_by = if standby > 0 { format!(", {standby} standing by") } else { String::new() };
        Decided::new(
            READY,
            Status::True,
            "WorkerRunning",
            format!("{active} worker(s) forwarding {route}{standing_by}"),
        )
    } else if workers_up > 0 {
        Decided::new(READY, Status::False, "Disconnected", connected.message.clone())
    } else {
        Decided::new(
            READY,
            Status::False,
            "WorkerStarting",
            format!("worker Deployment {} has no ready pod yet", render::worker_name(&name)),
        )
    };
    let labels = [namespace.as_str(), name.as_str()];
    ctx.metrics.bridge_stalled.with_label_values(&labels).set(i64::from(stalled.status == Status::True));
    let lag = observation.lag().or(previous.lag_messages.filter(|_| observation.readings.is_empty()));
    ctx.metrics.bridge_lag_messages.with_label_values(&labels).set(lag.unwrap_or(0));
    let status = Observed {
        decided: vec![ready, connected, stalled],
        // The worker runs with the spec's guarantee: validation refused any the ends cannot keep.
        delivery: Some(bridge.spec.delivery),
        lag_messages: lag,
        forwarded_total: Some(i64::try_from(forwarded).unwrap_or(i64::MAX)),
        duplicates_total: Some(i64::try_from(duplicates).unwrap_or(i64::MAX)),
        replicas: Some((active, standby)),
        last_forwarded_time: observation
            .last_forwarded()
            .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t).ok())
            .map(Time)
            .or(previous.last_forwarded_time),
    };
    Ok(status)
}

/// The status a Bridge gets in this reconcile.
struct Observed {
    decided: Vec<Decided>,
    delivery: Option<oms_crds::bridge::Delivery>,
    lag_messages: Option<i64>,
    forwarded_total: Option<i64>,
    duplicates_total: Option<i64>,
    /// Workers active and standing by among those that answered.
    replicas: Option<(i32, i32)>,
    last_forwarded_time: Option<Time>,
}

fn previous_replicas(previous: &BridgeStatus) -> Option<(i32, i32)> {
    Some((previous.active_replicas?, previous.standby_replicas?))
}

/// A Bridge whose worker is not (or not yet) in place: only `Ready` False with why; what the data
/// path last told stays.
fn not_running(bridge: &Bridge, reason: &'static str, message: &str) -> Observed {
    let previous = bridge.status.clone().unwrap_or_default();
    Observed {
        decided: vec![Decided::new(READY, Status::False, reason, message)],
        delivery: previous.delivery,
        lag_messages: previous.lag_messages,
        forwarded_total: previous.forwarded_total,
        duplicates_total: previous.duplicates_total,
        replicas: previous_replicas(&previous),
        last_forwarded_time: previous.last_forwarded_time,
    }
}

async fn write_status(ctx: &Context, bridge: &Bridge, observed: &Observed) -> Result<(), Error> {
    let generation = bridge.metadata.generation;
    let previous = bridge.status.clone().unwrap_or_default();
    let mut conditions =
        merge(&previous.conditions, &observed.decided, generation, k8s_openapi::jiff::Timestamp::now());
    // Conditions this round did not decide (Connected, Stalled while the worker is not in place) stay.
    for kept in &previous.conditions {
        if !conditions.iter().any(|c| c.type_ == kept.type_) {
            conditions.push(kept.clone());
        }
    }
    let status = BridgeStatus {
        lag_messages: observed.lag_messages,
        last_forwarded_time: observed.last_forwarded_time.clone(),
        forwarded_total: observed.forwarded_total,
        duplicates_total: observed.duplicates_total,
        active_replicas: observed.replicas.map(|(active, _)| active),
        standby_replicas: observed.replicas.map(|(_, standby)| standby),
        delivery: observed.delivery,
        observed_generation: generation,
        conditions,
    };
    if status == previous {
        return Ok(());
    }
    let (namespace, name) = (bridge.namespace().unwrap_or_default(), bridge.name_any());
    apply_status::<Bridge>(&ctx.client, &namespace, &name, serde_json::to_value(&status).unwrap_or_default())
        .await
        .map_err(|source| Error::Write { what: format!("status of Bridge {name}"), source })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_series_of_deleted_bridges_are_swept() {
        let family =
            prometheus::GaugeVec::new(prometheus::Opts::new("expiry", "e"), &["namespace", "secret"]).expect("family");
        for (namespace, secret) in
            [("acme", "kept-oms-tls"), ("acme", "gone-oms-tls"), ("acme", "edge-oms-gateway-tls")]
        {
            family.with_label_values(&[namespace, secret]).set(1.0);
        }
        let live = HashSet::from([("acme".to_owned(), "kept".to_owned())]);
        let gone = series_of_gone(&family, "secret", bridge_of_certificate, &live);
        assert_eq!(gone, [("acme".to_owned(), "gone-oms-tls".to_owned())], "gateway certificates are not ours");
    }
}
