//! Kafka topics through the admin API (librdkafka): create with partitions, replication and
//! configs; grow partitions; alter configs; delete. Message counts come from the partitions'
//! watermarks, for `DeleteIfEmpty`. On a managed cluster, as the operator's own user: the
//! tenants' SCRAM users and ACLs (the `oms-kafka-users` crate, the only one that calls C).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use oms_kafka_users as kafka_users;

use super::{ADMIN_TIMEOUT, AdminError, Deleted, Endpoint, Kept, Observed, retention_status, timed};
use crate::queue::plan::{Drift, QueuePlan};
use crate::tenancy::{self, KafkaAcl};

/// What [`KafkaAdmin::apply_tenants`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantChanges {
    /// Users whose credential was set (new, or not among those known applied).
    pub users_set: Vec<String>,
    pub users_removed: Vec<String>,
    pub acls_created: usize,
    pub acls_deleted: usize,
}

impl TenantChanges {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A partition's replicas and those in sync, by broker id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplicas {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub in_sync: Vec<i32>,
}

impl PartitionReplicas {
    /// `topic-partition`, as Kafka's tools name a partition.
    #[must_use]
    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

pub struct KafkaAdmin {
    /// Shared with blocking threads for the calls rust-rdkafka does not wrap.
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Reads partition watermarks (message counts); metadata calls block, hence the Arc for
    /// `spawn_blocking`.
    consumer: Arc<BaseConsumer>,
}

/// A client of the endpoint's brokers: over TLS with its CA (and client certificate) when it has
/// them, logged in with its mechanism when it has a user.
pub(crate) fn config(endpoint: &Endpoint) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", endpoint.servers.join(","));
    config.set("socket.timeout.ms", ADMIN_TIMEOUT.as_millis().to_string());
    if let (Some(user), Some(password)) = (&endpoint.username, &endpoint.password) {
        log_in(&mut config, user, password);
        config.set("sasl.mechanism", endpoint.sasl_mechanism.unwrap_or_default().as_str());
    }
    if let Some(tls) = &endpoint.tls {
        let login = endpoint.username.is_some();
        config.set("security.protocol", if login { "SASL_SSL" } else { "SSL" }).set("ssl.ca.pem", &tls.ca_pem);
        if let Some((cert, key)) = &tls.client {
            config.set("ssl.certificate.pem", cert).set("ssl.key.pem", key);
        }
    }
    config
}

/// Client settings that log in as `user` with SCRAM-SHA-512 in plaintext, what managed Kafka
/// serves; [`config`] turns them to TLS and another mechanism where the access point says so.
pub fn log_in(config: &mut ClientConfig, user: &str, password: &str) {
    config
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "SCRAM-SHA-512")
        .set("sasl.username", user)
        .set("sasl.password", password);
}

fn options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(Timeout::After(ADMIN_TIMEOUT)))
        .request_timeout(Some(Timeout::After(ADMIN_TIMEOUT)))
}

impl KafkaAdmin {
    pub fn connect(endpoint: &Endpoint) -> Result<Self, AdminError> {
        let connect = |e: rdkafka::error::KafkaError| AdminError::Connect {
            servers: endpoint.servers.join(","),
            message: e.to_string(),
        };
        Ok(Self {
            admin: Arc::new(config(endpoint).create().map_err(connect)?),
            consumer: Arc::new(config(endpoint).create().map_err(connect)?),
        })
    }

    pub async fn observe(&self, topic: &str) -> Result<Option<Observed>, AdminError> {
        let consumer = self.consumer.clone();
        let name = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || consumer.fetch_metadata(Some(&name), ADMIN_TIMEOUT))
            .await
            .map_err(|e| AdminError::operation("read topic metadata", e))?
            .map_err(|e| AdminError::operation("read topic metadata", e))?;
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
        if let Some(error) = found.error() {
            let code = RDKafkaErrorCode::from(error);
            return if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                Ok(None)
            } else {
                Err(AdminError::operation("read topic metadata", code))
            };
        }
        let partitions = i32::try_from(found.partitions().len()).unwrap_or(i32::MAX);
        let replication = found.partitions().first().and_then(|p| i32::try_from(p.replicas().len()).ok());
        drop(metadata);
        let described = timed("describe topic configs", async {
            self.admin
                .describe_configs(&[ResourceSpecifier::Topic(topic)], &options())
                .await
                .map_err(|e| AdminError::operation("describe topic configs", e))
        })
        .await?;
        let mut settings = BTreeMap::new();
        for resource in described {
            let resource = resource.map_err(|e| AdminError::operation("describe topic configs", e))?;
            for entry in resource.entries {
                if let Some(value) = entry.value {
                    settings.insert(entry.name, value);
                }
            }
        }
        let messages = self.count_messages(topic, partitions).await?;
        // Kafka says "no limit" with -1.
        let limit = |key: &str| settings.get(key).and_then(|v| v.parse::<u64>().ok());
        let kept = Kept {
            retention: Some(retention_status(limit("retention.ms"), limit("retention.bytes"))),
            replication,
            duplicate_window: None,
        };
        Ok(Some(Observed { partitions, settings, messages: Some(messages), reported_drift: Vec::new(), kept }))
    }

    /// Every partition of every topic (`topic-id`), with its replicas' and in-sync replicas'
    /// broker ids.
    pub async fn partition_replicas(&self) -> Result<Vec<PartitionReplicas>, AdminError> {
        let consumer = self.consumer.clone();
        let metadata = tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, ADMIN_TIMEOUT))
            .await
            .map_err(|e| AdminError::operation("read the cluster's metadata", e))?
            .map_err(|e| AdminError::operation("read the cluster's metadata", e))?;
        Ok(metadata
            .topics()
            .iter()
            .flat_map(|topic| {
                topic.partitions().iter().map(move |p| PartitionReplicas {
                    topic: topic.name().to_owned(),
                    partition: p.id(),
                    replicas: p.replicas().to_vec(),
                    in_sync: p.isr().to_vec(),
                })
            })
            .collect())
    }

    async fn count_messages(&self, topic: &str, partitions: i32) -> Result<u64, AdminError> {
        let consumer = self.consumer.clone();
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut total = 0u64;
            for partition in 0..partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&name, partition, ADMIN_TIMEOUT)
                    .map_err(|e| AdminError::operation("read partition watermarks", e))?;
                total += u64::try_from(high - low).unwrap_or(0);
            }
            Ok(total)
        })
        .await
        .map_err(|e| AdminError::operation("read partition watermarks", e))?
    }

    pub async fn create(&self, plan: &QueuePlan) -> Result<(), AdminError> {
        // -1 lets the brokers apply their default.replication.factor.
        let replication = TopicReplication::Fixed(plan.replication.unwrap_or(-1));
        let mut topic = NewTopic::new(&plan.broker_name, plan.partitions, replication);
        for (key, value) in &plan.settings {
            topic = topic.set(key, value);
        }
        let results = timed("create topic", async {
            self.admin.create_topics(&[topic], &options()).await.map_err(|e| AdminError::operation("create topic", e))
        })
        .await?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(AdminError::operation("create topic", code)),
            }
        }
        Ok(())
    }

    pub async fn converge(
        &self,
        plan: &QueuePlan,
        observed: &Observed,
        drift: &[Drift],
    ) -> Result<Vec<String>, AdminError> {
        let mut cannot = Vec::new();
        if observed.partitions < plan.partitions {
            let grow = NewPartitions::new(&plan.broker_name, usize::try_from(plan.partitions).unwrap_or(0));
            let results = timed("grow partitions", async {
                self.admin
                    .create_partitions(&[grow], &options())
                    .await
                    .map_err(|e| AdminError::operation("grow partitions", e))
            })
            .await?;
            for result in results {
                result.map_err(|(_, code)| AdminError::operation("grow partitions", code))?;
            }
        } else if observed.partitions > plan.partitions {
            cannot.push(format!(
                "partitions: broker has {}, spec wants {} (Kafka cannot remove partitions)",
                observed.partitions, plan.partitions
            ));
        }
        if drift.iter().any(|d| d.setting != "partitions") {
            // AlterConfigs sets the topic's whole override set: exactly the planned settings.
            let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&plan.broker_name));
            for (key, value) in &plan.settings {
                alter = alter.set(key, value);
            }
            let results = timed("alter topic configs", async {
                self.admin
                    .alter_configs(&[alter], &options())
                    .await
                    .map_err(|e| AdminError::operation("alter topic configs", e))
            })
            .await?;
            for result in results {
                result.map_err(|(_, code)| AdminError::operation("alter topic configs", code))?;
            }
        }
        Ok(cannot)
    }

    /// Makes the cluster's SCRAM users and ACLs those of `users` (user to password) and `acls`:
    /// ACLs not desired go first, then missing ones are made; users are set when they are missing
    /// or not in `applied` (those whose current password is known to be set), and users no longer
    /// served are removed. `keep` (the operator's own user) is never touched. Returns what changed.
    pub async fn apply_tenants(
        &self,
        users: &BTreeMap<String, String>,
        acls: &[KafkaAcl],
        keep: &str,
        applied: &BTreeSet<String>,
    ) -> Result<TenantChanges, AdminError> {
        let admin = self.admin.clone();
        let users = users.clone();
        let desired = acls.to_vec();
        let keep = keep.to_owned();
        let applied = applied.clone();
        tokio::task::spawn_blocking(move || {
            let client = &kafka_users::Handle::new(admin.inner(), ADMIN_TIMEOUT);
            let (create, delete) = tenancy::kafka_acl_changes(&desired, &kafka_users::acls(client)?, &keep);
            kafka_users::delete_acls(client, &delete)?;
            kafka_users::create_acls(client, &create)?;
            let existing = kafka_users::scram_users(client)?;
            let former: Vec<String> =
                existing.iter().filter(|u| **u != keep && !users.contains_key(*u)).cloned().collect();
            let upsert: Vec<(String, String)> = users
                .iter()
                .filter(|(u, _)| !applied.contains(*u) || !existing.contains(u))
                .map(|(u, p)| (u.clone(), p.clone()))
                .collect();
            kafka_users::alter_scram_users(client, &upsert, &former)?;
            Ok(TenantChanges {
                users_set: upsert.into_iter().map(|(u, _)| u).collect(),
                users_removed: former,
                acls_created: create.len(),
                acls_deleted: delete.len(),
            })
        })
        .await
        .map_err(|e| AdminError::operation("apply tenant users", e))?
    }

    pub async fn delete(&self, topic: &str, if_empty: bool) -> Result<Deleted, AdminError> {
        let Some(observed) = self.observe(topic).await? else { return Ok(Deleted::AlreadyGone) };
        if if_empty && observed.messages.unwrap_or(0) > 0 {
            return Ok(Deleted::NotEmpty { messages: observed.messages });
        }
        let results = timed("delete topic", async {
            self.admin.delete_topics(&[topic], &options()).await.map_err(|e| AdminError::operation("delete topic", e))
        })
        .await?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((_, code)) => return Err(AdminError::operation("delete topic", code)),
            }
        }
        Ok(Deleted::Deleted)
    }
}
