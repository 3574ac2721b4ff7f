//! The gateway of a MessagingAccessPoint (`spec.gateway.enabled`): the one mTLS port through which
//! bridges of other clouds reach this access point's queues.
//!
//! Reconcile: the server certificate (a Secret `<access-point>-oms-gateway-tls` for
//! `spiffe://<trust-domain>/ns/<namespace>/gateway/<name>`, with the DNS names of its Service and
//! the advertised host, renewed at two thirds of its lifetime) -> the access point's binding
//! Secret (its brokers and credentials) -> [`render`] the config, Deployment, Service and
//! NetworkPolicy -> server-side apply. Switching the gateway off removes all of them. The
//! access point controller publishes `status.gatewayEndpoint`.

pub mod render;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use oms_crds::access_point::MessagingAccessPoint;
use tokio_util::sync::CancellationToken;

use crate::apply::apply;
use crate::certificates::{self, Subject};
use crate::context::Context;
use crate::exposure::{Gateway, certificate_secret_name, dns_names, service_name};
use crate::pki::{Pki, Trusts};
use crate::workload::{Error, MountedBinding};

use self::render::GatewayInput;

/// The `kind` label of this controller's metrics.
const KIND: &str = "Gateway";
const RETRY_SOON: Duration = Duration::from_secs(15);
/// Look again this often: changes of the binding Secret (new broker addresses) are not watched.
const RESYNC: Duration = Duration::from_mins(5);

/// Runs until `shutdown`; watches what it owns, so a deleted or edited object is put back.
pub async fn run(ctx: Arc<Context>, pki: Arc<Pki>, namespace: Option<String>, shutdown: CancellationToken) {
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=oms-operator");
    let gateways = watcher::Config::default().labels("app.kubernetes.io/component=gateway");
    Controller::new(ctx.api::<MessagingAccessPoint>(namespace.as_deref()), watcher::Config::default())
        .owns(ctx.api::<Secret>(namespace.as_deref()), owned)
        .owns(ctx.api::<Deployment>(namespace.as_deref()), gateways.clone())
        .owns(ctx.api::<Service>(namespace.as_deref()), gateways)
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, Arc::new((ctx, pki)))
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(map: Arc<MessagingAccessPoint>, state: Arc<(Arc<Context>, Arc<Pki>)>) -> Result<Action, Error> {
    let (ctx, pki) = (&state.0, &state.1);
    let started = Instant::now();
    let result = reconcile_gateway(&map, ctx, pki).await;
    ctx.metrics.observe_reconcile(KIND, result.as_ref().map_or_else(Error::metric_label, |_| "success"), started);
    result
}

// The signature is the error policy callback of kube-runtime.
#[allow(clippy::needless_pass_by_value)]
fn error_policy(map: Arc<MessagingAccessPoint>, error: &Error, _state: Arc<(Arc<Context>, Arc<Pki>)>) -> Action {
    tracing::warn!(message = "Gateway reconcile failed; retrying.", access_point = %map.name_any(), %error);
    Action::requeue(RETRY_SOON)
}

async fn reconcile_gateway(map: &MessagingAccessPoint, ctx: &Context, pki: &Pki) -> Result<Action, Error> {
    let Some(owner) = map.controller_owner_ref(&()) else { return Ok(Action::await_change()) };
    let (namespace, name) = (map.namespace().unwrap_or_default(), map.name_any());
    let exposure = Gateway::from_spec(map.spec.gateway.as_ref());
    let protocol = crate::workload::protocol(map.spec.driver);
    let (Some(exposure), Some(protocol), None) = (exposure, protocol, &map.metadata.deletion_timestamp) else {
        // A gateway switched off (or on an access point that cannot have one) leaves nothing behind.
        remove(ctx, pki, &namespace, &name).await?;
        return Ok(Action::await_change());
    };
    let mut dns_names = dns_names(&name, &namespace);
    dns_names.extend(exposure.advertised_host.clone());
    let subject = Subject {
        identity: pki.identity(&namespace, "gateway", &name),
        dns_names,
        secret: certificate_secret_name(&name),
        namespace: namespace.clone(),
        trusts: Trusts::Bundle,
        lifetime: pki.leaf_lifetime,
        owner: owner.clone(),
        object: map.object_ref(&()),
    };
    let renew_in = certificates::ensure(ctx, pki, subject).await?.recheck_in;
    let binding = crate::binding::read(&ctx.client, map)
        .await
        .map_err(|(name, source)| Error::Read { what: format!("binding Secret {name}"), source })?;
    let Some(binding) = binding else {
        // The access point controller writes the binding Secret; its watch wakes us only by resync.
        return Ok(Action::requeue(RETRY_SOON));
    };
    let input = GatewayInput {
        namespace: namespace.clone(),
        access_point: name.clone(),
        protocol,
        servers: binding.servers.clone(),
        binding: map
            .status
            .as_ref()
            .and_then(|s| s.binding_secret.clone())
            .and_then(|secret| MountedBinding::of(secret, &binding)),
        shared_with: map.spec.sharing.as_ref().map(|s| s.tenants.clone()).unwrap_or_default(),
        tenant_users: (map.spec.managed.is_some() && crate::drivers::managed_driver(map.spec.driver).is_some()).then(
            || {
                let shared = map.spec.sharing.as_ref().map(|s| s.tenants.clone()).unwrap_or_default();
                (crate::tenancy::tenants_secret_name(&name), crate::tenancy::tenants(&namespace, &shared))
            },
        ),
        exposure,
        trust_domain: pki.trust_domain.clone(),
        peer_trust_domains: pki.peer_trust_domains.clone(),
    };
    let config = render::gateway_config(&input);
    let write = |kind: &str| {
        let what = format!("{kind} {}", service_name(&name));
        move |source| Error::Write { what, source }
    };
    apply(&ctx.client, &render::config_map(&input, &config, &owner)).await.map_err(write("ConfigMap"))?;
    let mut deployment = render::deployment(&input, &ctx.bridge_image, &config, &owner);
    crate::workload::add_pull_secrets(
        deployment.spec.as_mut().and_then(|s| s.template.spec.as_mut()),
        &ctx.image_pull_secrets,
    );
    apply(&ctx.client, &deployment).await.map_err(write("Deployment"))?;
    apply(&ctx.client, &render::service(&input, &owner)).await.map_err(write("Service"))?;
    apply(&ctx.client, &render::network_policy(&input, &owner)).await.map_err(write("NetworkPolicy"))?;
    Ok(Action::requeue(RESYNC.min(renew_in)))
}

/// Deletes the gateway's objects; those already gone are fine.
/// The certificate Secret is made first and deleted last: without it there is nothing to remove,
/// which spares access points that never had a gateway four deletes per event.
async fn remove(ctx: &Context, pki: &Pki, namespace: &str, access_point: &str) -> Result<(), Error> {
    let name = service_name(access_point);
    let secret = certificate_secret_name(access_point);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let existing =
        secrets.get_opt(&secret).await.map_err(|source| Error::Read { what: format!("Secret {secret}"), source })?;
    if existing.is_none() && !certificates::requested(ctx, pki, namespace, &secret).await? {
        return Ok(());
    }
    delete::<ConfigMap>(ctx, namespace, &name).await?;
    delete::<Deployment>(ctx, namespace, &name).await?;
    delete::<Service>(ctx, namespace, &name).await?;
    delete::<NetworkPolicy>(ctx, namespace, &name).await?;
    Ok(certificates::remove(ctx, pki, namespace, &secret).await?)
}

async fn delete<K>(ctx: &Context, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Write { what: format!("{} {name} (delete)", K::kind(&())), source }),
    }
}
