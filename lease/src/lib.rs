//! One holder among candidates over a `coordination.k8s.io` Lease: the operator's replicas elect
//! the one that reconciles, and the workers of a Bridge whose source has no lock of its own (an
//! MQTT session, a gateway stream) the one that reads it.
//!
//! A candidate takes the Lease when it is free or expired, with optimistic concurrency (the
//! write carries the Lease's resourceVersion, so only one of two racing candidates wins). The
//! holder renews it; if it cannot renew before the Lease would expire, it steps down by
//! cancelling its token, before any other candidate may take the Lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// Timing of the election.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and a candidate retries.
    pub retry_period: Duration,
}

impl Timing {
    /// Kubernetes' own components use 15 s leases renewed every 2 s; we renew a little less often.
    #[must_use]
    pub fn new(lease_duration: Duration) -> Self {
        Self { lease_duration, retry_period: lease_duration / 5 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the API server: {source}")]
    Client { source: kube::Error },
    #[error("cannot read Lease {name}: {source}")]
    ReadLease { name: String, source: kube::Error },
    #[error("cannot write Lease {name}: {source}")]
    WriteLease { name: String, source: kube::Error },
}

/// One candidate for the Lease `name` in `namespace`.
pub struct Candidate {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
}

/// What a candidate decides from the Lease it read. Pure.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The Lease is ours or free: write it with us as holder.
    Take { transition: bool },
    /// Someone else holds a valid Lease.
    Wait { holder: String },
}

/// Decides whether `identity` may take `lease` at `now`.
#[must_use]
pub fn decide(lease: &LeaseSpec, identity: &str, now: Timestamp) -> Decision {
    let holder = lease.holder_identity.clone().unwrap_or_default();
    if holder.is_empty() || holder == identity {
        return Decision::Take { transition: holder.is_empty() };
    }
    let duration = SignedDuration::from_secs(i64::from(lease.lease_duration_seconds.unwrap_or(0)));
    let expired = lease.renew_time.as_ref().is_none_or(|renewed| renewed.0 + duration < now);
    if expired { Decision::Take { transition: true } } else { Decision::Wait { holder } }
}

impl Candidate {
    #[must_use]
    pub fn new(client: Client, namespace: &str, name: &str, identity: String, timing: Timing) -> Self {
        Self { api: Api::namespaced(client, namespace), name: name.to_owned(), identity, timing }
    }

    /// A candidate with the client of this process's environment: in a pod, its service
    /// account's; elsewhere `KUBECONFIG`'s.
    pub async fn from_environment(
        namespace: &str,
        name: &str,
        identity: String,
        timing: Timing,
    ) -> Result<Self, Error> {
        let client = Client::try_default().await.map_err(|source| Error::Client { source })?;
        Ok(Self::new(client, namespace, name, identity, timing))
    }

    /// Waits until this candidate holds the Lease; returns `false` if `shutdown` came first.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> bool {
        let mut waiting_for = String::new();
        loop {
            match self.try_take().await {
                Ok(Decision::Take { .. }) => {
                    tracing::info!(message = "Holding the Lease.", lease = %self.name, identity = %self.identity);
                    return true;
                }
                Ok(Decision::Wait { holder }) => {
                    if holder != waiting_for {
                        tracing::info!(message = "Waiting for the Lease.", lease = %self.name, %holder);
                        waiting_for = holder;
                    }
                }
                Err(error) => tracing::warn!(message = "Cannot take the Lease; retrying.", %error),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(self.timing.retry_period) => {}
            }
        }
    }

    /// Renews the Lease until `shutdown`; cancels `shutdown` itself when the Lease is lost, so
    /// that the holder stops before another candidate starts. Returns whether it was lost.
    pub async fn hold(&self, shutdown: CancellationToken) -> bool {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(self.timing.retry_period) => {}
            }
            match self.try_take().await {
                Ok(Decision::Take { .. }) => last_renewal = tokio::time::Instant::now(),
                Ok(Decision::Wait { holder }) => {
                    tracing::error!(message = "Lost the Lease; stopping.", lease = %self.name, %holder);
                    shutdown.cancel();
                    return true;
                }
                Err(error) => {
                    tracing::warn!(message = "Could not renew the Lease.", %error);
                    // Step down before the Lease expires, so that two holders never overlap.
                    if last_renewal.elapsed() + self.timing.retry_period >= self.timing.lease_duration {
                        tracing::error!(message = "Lease renewal deadline passed; stopping.", lease = %self.name);
                        shutdown.cancel();
                        return true;
                    }
                }
            }
        }
    }

    /// Gives the Lease up after a clean stop, so that a standby (or the replica a rollout starts)
    /// takes it at once instead of waiting out the lease duration. Only the holder empties it; a
    /// failure is logged, since the Lease then simply expires.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else { return };
        let Some(spec) = lease.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(self.identity.as_str()))
        else {
            return;
        };
        spec.holder_identity = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(message = "Released the Lease.", lease = %self.name),
            Err(error) => tracing::warn!(message = "Could not release the Lease; it expires instead.", %error),
        }
    }

    /// Reads the Lease and takes it when [`decide`] says so.
    async fn try_take(&self) -> Result<Decision, Error> {
        let now = Timestamp::now();
        let read = |source| Error::ReadLease { name: self.name.clone(), source };
        let write = |source| Error::WriteLease { name: self.name.clone(), source };
        let seconds = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(read)? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Decision::Take { transition: true }),
                // Another candidate created it first; read it again next round.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Decision::Wait { holder: String::new() }),
                Err(source) => Err(write(source)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let decision = decide(spec, &self.identity, now);
        if let Decision::Take { transition } = decision {
            if transition {
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(MicroTime(now));
            // `replace` sends the resourceVersion we read: a concurrent writer makes this fail.
            match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    return Ok(Decision::Wait { holder: "a concurrent candidate".into() });
                }
                Err(source) => return Err(write(source)),
            }
        }
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_at: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_at).expect("time"))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("time")
    }

    #[test]
    fn a_valid_lease_of_another_holder_makes_us_wait() {
        assert_eq!(decide(&lease("a", 100, 15), "b", at(110)), Decision::Wait { holder: "a".into() });
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        assert_eq!(decide(&lease("a", 100, 15), "b", at(116)), Decision::Take { transition: true });
    }

    #[test]
    fn our_own_lease_is_renewed_without_a_transition() {
        assert_eq!(decide(&lease("b", 100, 15), "b", at(105)), Decision::Take { transition: false });
    }

    #[test]
    fn a_released_lease_is_free() {
        assert_eq!(decide(&LeaseSpec::default(), "b", at(0)), Decision::Take { transition: true });
    }
}
