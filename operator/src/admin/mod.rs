//! Queue administration on real brokers, through each broker's own admin protocol: Kafka's
//! admin API, NATS JetStream's stream API, AMQP 0.9.1 queue methods. MQTT has no server-side
//! queue object; its "admin" only validates the topic namespace.
//!
//! The controller connects with what the access point's binding Secret says (addresses and
//! credentials), observes a queue, creates it, converges it to the plan, or deletes it. The
//! access point controller also speaks to a managed NATS cluster's system account
//! ([`nats_system`]) and to a managed RabbitMQ cluster's CLI ([`rabbitmq_cluster`]) to retire
//! brokers when they shrink, and raises a managed Kafka's `metadata.version` after an upgrade
//! ([`kafka_cluster`]).

mod kafka;
pub mod kafka_cluster;
mod nats;
pub mod nats_system;
mod rabbitmq;
pub mod rabbitmq_cluster;
mod rocketmq;

use std::collections::BTreeMap;
use std::time::Duration;

use oms_crds::access_point::Driver;
use oms_crds::quantity::{format_duration, format_size};
use oms_crds::queue::{RetentionStatus, UNLIMITED};

use crate::queue::plan::{Drift, QueuePlan};

/// The librdkafka settings of a client of `endpoint` (TLS, SASL mechanism, login).
#[must_use]
pub fn kafka_client_config(endpoint: &Endpoint) -> rdkafka::ClientConfig {
    kafka::config(endpoint)
}

/// How long one admin operation may take before it counts as the broker being unreachable.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to reach a broker: what the access point's binding Secret holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub servers: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// RabbitMQ's virtual host; `/` when none.
    pub vhost: Option<String>,
    /// Kafka: the SASL mechanism of the login; SCRAM-SHA-512 when none.
    pub sasl_mechanism: Option<oms_crds::access_point::SaslMechanism>,
    /// TLS towards the brokers; plaintext when none.
    pub tls: Option<crate::broker_tls::BrokerTls>,
    /// NATS: a login other than a user and password.
    pub nats_login: Option<NatsLogin>,
    /// RocketMQ: its name servers (`servers` are its proxies, for clients).
    pub name_servers: Vec<String>,
}

/// The logins NATS takes besides a user and password.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NatsLogin {
    /// An authorization token.
    Token(String),
    /// A credentials file: the user's JWT and the nkey seed that signs the server's nonce.
    Creds(String),
}

/// What the broker holds for a queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub partitions: i32,
    /// Settings by the driver's keys, as in [`QueuePlan::settings`].
    pub settings: BTreeMap<String, String>,
    /// Messages the queue holds, where the broker can count them.
    pub messages: Option<u64>,
    /// Differences the broker reported itself (RabbitMQ's inequivalent arguments).
    pub reported_drift: Vec<Drift>,
    /// Retention, replication and duplicate window as the broker reports them, for the status.
    pub kept: Kept,
}

/// What the broker reports keeping for a queue; `None` where it does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub retention: Option<RetentionStatus>,
    pub replication: Option<i32>,
    pub duplicate_window: Option<Duration>,
}

/// A retention status from the broker's limits; `None` (or a value the broker uses for "no limit")
/// is unlimited.
#[must_use]
pub fn retention_status(time_ms: Option<u64>, bytes: Option<u64>) -> RetentionStatus {
    RetentionStatus {
        time: time_ms.map_or_else(|| UNLIMITED.to_owned(), |ms| format_duration(Duration::from_millis(ms))),
        bytes: bytes.map_or_else(|| UNLIMITED.to_owned(), format_size),
    }
}

/// Outcome of a delete request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    AlreadyGone,
    /// `DeleteIfEmpty` found messages; the queue stays.
    NotEmpty {
        messages: Option<u64>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot connect to {servers}: {message}")]
    Connect { servers: String, message: String },
    #[error("{action} failed: {message}")]
    Operation { action: &'static str, message: String },
    #[error("{action} took longer than {ADMIN_TIMEOUT:?}")]
    Timeout { action: &'static str },
}

impl AdminError {
    fn operation(action: &'static str, error: impl std::fmt::Display) -> Self {
        AdminError::Operation { action, message: error.to_string() }
    }
}

impl From<oms_kafka_users::Error> for AdminError {
    fn from(error: oms_kafka_users::Error) -> Self {
        match error {
            oms_kafka_users::Error::Operation { action, message } => AdminError::Operation { action, message },
            oms_kafka_users::Error::Timeout { action, .. } => AdminError::Timeout { action },
        }
    }
}

pub use kafka::{KafkaAdmin, PartitionReplicas, TenantChanges, log_in as kafka_log_in};
pub use rocketmq::RocketAdmin;

/// A connected admin client for one access point.
pub enum Admin {
    Kafka(kafka::KafkaAdmin),
    Nats(nats::NatsAdmin),
    Rabbitmq(rabbitmq::RabbitAdmin),
    /// MQTT: nothing to provision on the broker.
    Mqtt,
    Rocketmq(rocketmq::RocketAdmin),
}

impl Admin {
    /// Connects to the broker behind `endpoint`.
    pub async fn connect(driver: Driver, endpoint: &Endpoint) -> Result<Self, AdminError> {
        Ok(match driver {
            Driver::Kafka => Admin::Kafka(kafka::KafkaAdmin::connect(endpoint)?),
            Driver::Nats => Admin::Nats(nats::NatsAdmin::connect(endpoint).await?),
            Driver::Rabbitmq => Admin::Rabbitmq(rabbitmq::RabbitAdmin::connect(endpoint).await?),
            Driver::Mqtt => Admin::Mqtt,
            Driver::Rocketmq => Admin::Rocketmq(rocketmq::RocketAdmin::connect(endpoint).await?),
            Driver::Gateway => {
                return Err(AdminError::Connect {
                    servers: endpoint.servers.join(","),
                    message: "queues behind another cloud's gateway are provisioned through that gateway".into(),
                });
            }
        })
    }

    /// The queue as the broker holds it, or `None` when it does not exist.
    pub async fn observe(&self, plan: &QueuePlan) -> Result<Option<Observed>, AdminError> {
        match self {
            Admin::Kafka(admin) => admin.observe(&plan.broker_name).await,
            Admin::Nats(admin) => admin.observe(&plan.broker_name).await,
            Admin::Rabbitmq(admin) => admin.observe(plan).await,
            Admin::Rocketmq(admin) => admin.observe(plan).await,
            Admin::Mqtt => Ok(Some(Observed {
                partitions: plan.partitions,
                settings: plan.settings.clone(),
                // MQTT keeps no limit for a topic namespace; nothing to report.
                ..Observed::default()
            })),
        }
    }

    /// Creates the queue as planned.
    pub async fn create(&self, plan: &QueuePlan) -> Result<(), AdminError> {
        match self {
            Admin::Kafka(admin) => admin.create(plan).await,
            Admin::Nats(admin) => admin.create(plan).await,
            Admin::Rabbitmq(admin) => admin.create(plan).await,
            Admin::Rocketmq(admin) => admin.create(plan).await,
            Admin::Mqtt => Ok(()),
        }
    }

    /// Corrects the differences the broker can correct; returns the ones it cannot, each with
    /// the reason appended.
    pub async fn converge(
        &self,
        plan: &QueuePlan,
        observed: &Observed,
        drift: &[Drift],
    ) -> Result<Vec<String>, AdminError> {
        match self {
            Admin::Kafka(admin) => admin.converge(plan, observed, drift).await,
            Admin::Nats(admin) => admin.converge(plan, drift).await,
            // Queue arguments are fixed at declaration in RabbitMQ.
            Admin::Rabbitmq(_) => Ok(drift
                .iter()
                .map(|d| format!("{d} (RabbitMQ cannot change the arguments of an existing queue)"))
                .collect()),
            Admin::Rocketmq(admin) => admin.converge(plan, observed, drift).await,
            Admin::Mqtt => Ok(Vec::new()),
        }
    }

    /// Deletes the queue; with `if_empty`, only when it holds no message.
    pub async fn delete(&self, broker_name: &str, if_empty: bool) -> Result<Deleted, AdminError> {
        match self {
            Admin::Kafka(admin) => admin.delete(broker_name, if_empty).await,
            Admin::Nats(admin) => admin.delete(broker_name, if_empty).await,
            Admin::Rabbitmq(admin) => admin.delete(broker_name, if_empty).await,
            Admin::Rocketmq(admin) => admin.delete(broker_name, if_empty).await,
            Admin::Mqtt => Ok(Deleted::AlreadyGone),
        }
    }
}

/// The master brokers a RocketMQ name server of `endpoint` lists, by broker name.
pub async fn rocketmq_masters(endpoint: &Endpoint) -> Result<BTreeMap<String, String>, AdminError> {
    rocketmq::masters(endpoint).await
}

/// Runs `future` under [`ADMIN_TIMEOUT`].
async fn timed<T>(action: &'static str, future: impl Future<Output = Result<T, AdminError>>) -> Result<T, AdminError> {
    tokio::time::timeout(ADMIN_TIMEOUT, future).await.map_err(|_| AdminError::Timeout { action })?
}

/// Connected admin clients, one per (driver, endpoint): connecting per reconcile would cost a
/// broker handshake (and for Kafka, client threads) every time.
#[derive(Default)]
pub struct AdminCache {
    clients: tokio::sync::Mutex<std::collections::HashMap<(Driver, Endpoint), std::sync::Arc<Admin>>>,
    /// Per admin endpoint, each tenant user's password [`fingerprint`] as last applied to its
    /// broker (Kafka's users), so that unchanged ones are not written again.
    tenants_applied: tokio::sync::Mutex<std::collections::HashMap<Endpoint, BTreeMap<String, u64>>>,
}

/// A fingerprint of a password, to tell whether it changed since it was applied.
#[must_use]
pub fn fingerprint(password: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    password.hash(&mut hasher);
    hasher.finish()
}

impl AdminCache {
    /// The cached client for `endpoint`, connecting first if there is none.
    pub async fn get(&self, driver: Driver, endpoint: &Endpoint) -> Result<std::sync::Arc<Admin>, AdminError> {
        let key = (driver, endpoint.clone());
        if let Some(admin) = self.clients.lock().await.get(&key) {
            return Ok(admin.clone());
        }
        // Connect without holding the lock: one slow broker must not stall the others.
        // Boxed: the connect futures of three client libraries would bloat every caller.
        let admin = std::sync::Arc::new(Box::pin(Admin::connect(driver, endpoint)).await?);
        Ok(self.clients.lock().await.entry(key).or_insert(admin).clone())
    }

    /// Forgets the client after a failure, so that the next reconcile connects afresh (and
    /// applies tenant users again).
    pub async fn evict(&self, driver: Driver, endpoint: &Endpoint) {
        self.clients.lock().await.remove(&(driver, endpoint.clone()));
        self.tenants_applied.lock().await.remove(endpoint);
    }

    /// The users of `passwords` whose password is the one last applied through `endpoint`.
    pub async fn tenants_applied(
        &self,
        endpoint: &Endpoint,
        passwords: &BTreeMap<String, String>,
    ) -> std::collections::BTreeSet<String> {
        let recorded = self.tenants_applied.lock().await;
        let Some(recorded) = recorded.get(endpoint) else { return std::collections::BTreeSet::new() };
        passwords.iter().filter(|(u, p)| recorded.get(*u) == Some(&fingerprint(p))).map(|(u, _)| u.clone()).collect()
    }

    /// Records `passwords` as applied through `endpoint`.
    pub async fn record_tenants_applied(&self, endpoint: &Endpoint, passwords: &BTreeMap<String, String>) {
        let fingerprints = passwords.iter().map(|(u, p)| (u.clone(), fingerprint(p))).collect();
        self.tenants_applied.lock().await.insert(endpoint.clone(), fingerprints);
    }
}
