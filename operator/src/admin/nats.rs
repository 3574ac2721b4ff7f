//! NATS JetStream streams: create, update (limits, storage is fixed at creation), delete. A
//! stream `<name>` captures the subjects `<name>` and `<name>.>`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, stream};

use super::{ADMIN_TIMEOUT, AdminError, Deleted, Endpoint, Kept, NatsLogin, Observed, retention_status, timed};
use crate::queue::plan::{Drift, QueuePlan};

pub struct NatsAdmin {
    jetstream: jetstream::Context,
    /// The server takes fast batches (NATS 2.14+): streams are made to allow them, so that bridges
    /// writing into them keep order without a lane per key.
    fast_batches: bool,
}

/// A client of the servers `endpoint` names, logged in as it says.
pub(super) async fn connect(endpoint: &Endpoint) -> Result<async_nats::Client, AdminError> {
    let mut options = async_nats::ConnectOptions::new().connection_timeout(ADMIN_TIMEOUT);
    if let (Some(user), Some(password)) = (&endpoint.username, &endpoint.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    match &endpoint.nats_login {
        Some(NatsLogin::Token(token)) => options = options.token(token.clone()),
        Some(NatsLogin::Creds(creds)) => {
            // The client's parser wants a line end after the seed's closing marker, which a
            // Secret made from a literal may lack.
            let creds = format!("{}\n", creds.trim_end());
            options = options.credentials(&creds).map_err(|e| AdminError::Connect {
                servers: endpoint.servers.join(","),
                message: format!("the credentials file: {e}"),
            })?;
        }
        None => {}
    }
    if let Some(tls) = &endpoint.tls {
        let config = crate::broker_tls::client_config(tls)
            .map_err(|message| AdminError::Connect { servers: endpoint.servers.join(","), message })?;
        options = options.tls_client_config(config).require_tls(true);
    }
    let servers: Vec<String> = endpoint.servers.iter().map(|s| format!("nats://{s}")).collect();
    timed("connect", async {
        options
            .connect(servers.clone())
            .await
            .map_err(|e| AdminError::Connect { servers: servers.join(","), message: e.to_string() })
    })
    .await
}

impl NatsAdmin {
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, AdminError> {
        let client = connect(endpoint).await?;
        let fast_batches = oms_bridge_config::nats_2_14_or_later(&client.server_info().version);
        Ok(Self { jetstream: jetstream::new(client), fast_batches })
    }

    async fn info(&self, name: &str) -> Result<Option<stream::Info>, AdminError> {
        timed("read stream", async {
            match self.jetstream.get_stream(name).await {
                Ok(mut stream) => {
                    stream.info().await.map(|i| Some(i.clone())).map_err(|e| AdminError::operation("read stream", e))
                }
                Err(error) => match error.kind() {
                    GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => Ok(None),
                    _ => Err(AdminError::operation("read stream", error)),
                },
            }
        })
        .await
    }

    pub async fn observe(&self, name: &str) -> Result<Option<Observed>, AdminError> {
        let Some(info) = self.info(name).await? else { return Ok(None) };
        let config = &info.config;
        let storage = match config.storage {
            stream::StorageType::File => "file",
            stream::StorageType::Memory => "memory",
        };
        let settings: BTreeMap<String, String> = [
            ("max_age_ms", config.max_age.as_millis().to_string()),
            ("max_bytes", config.max_bytes.to_string()),
            ("max_msg_size", config.max_message_size.to_string()),
            ("storage", storage.to_owned()),
            ("num_replicas", config.num_replicas.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let kept = Kept {
            // JetStream says "no limit" with a zero age and -1 bytes.
            retention: Some(retention_status(
                Some(config.max_age)
                    .filter(|age| !age.is_zero())
                    .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
                u64::try_from(config.max_bytes).ok(),
            )),
            replication: i32::try_from(config.num_replicas).ok(),
            duplicate_window: Some(config.duplicate_window),
        };
        Ok(Some(Observed {
            partitions: 1,
            settings,
            messages: Some(info.state.messages),
            reported_drift: Vec::new(),
            kept,
        }))
    }

    fn stream_config(&self, plan: &QueuePlan) -> Result<stream::Config, AdminError> {
        let number = |key: &str| -> Result<Option<i64>, AdminError> {
            plan.settings
                .get(key)
                .map(|v| v.parse::<i64>().map_err(|e| AdminError::operation("plan stream", e)))
                .transpose()
        };
        Ok(stream::Config {
            name: plan.broker_name.clone(),
            subjects: vec![plan.broker_name.clone(), format!("{}.>", plan.broker_name)],
            max_age: number("max_age_ms")?
                .map_or(Duration::ZERO, |ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            max_bytes: number("max_bytes")?.unwrap_or(-1),
            max_message_size: number("max_msg_size")?.map_or(-1, |v| i32::try_from(v).unwrap_or(i32::MAX)),
            storage: if plan.settings.get("storage").map(String::as_str) == Some("memory") {
                stream::StorageType::Memory
            } else {
                stream::StorageType::File
            },
            num_replicas: number("num_replicas")?.map_or(1, |v| usize::try_from(v).unwrap_or(1)),
            allow_batch_publish: self.fast_batches,
            ..stream::Config::default()
        })
    }

    pub async fn create(&self, plan: &QueuePlan) -> Result<(), AdminError> {
        let config = self.stream_config(plan)?;
        timed("create stream", async {
            self.jetstream
                .create_stream(config)
                .await
                .map(|_| ())
                .map_err(|e| AdminError::operation("create stream", e))
        })
        .await
    }

    pub async fn converge(&self, plan: &QueuePlan, drift: &[Drift]) -> Result<Vec<String>, AdminError> {
        // JetStream fixes the storage type at creation; everything else in the plan updates.
        let cannot: Vec<String> = drift
            .iter()
            .filter(|d| d.setting == "storage")
            .map(|d| format!("{d} (JetStream cannot change a stream's storage)"))
            .collect();
        if drift.iter().any(|d| d.setting != "storage") {
            let mut config = self.stream_config(plan)?;
            if let Some(storage) = drift.iter().find(|d| d.setting == "storage").and_then(|d| d.actual.as_deref()) {
                config.storage =
                    if storage == "memory" { stream::StorageType::Memory } else { stream::StorageType::File };
            }
            timed("update stream", async {
                self.jetstream
                    .update_stream(config)
                    .await
                    .map(|_| ())
                    .map_err(|e| AdminError::operation("update stream", e))
            })
            .await?;
        }
        Ok(cannot)
    }

    pub async fn delete(&self, name: &str, if_empty: bool) -> Result<Deleted, AdminError> {
        let Some(info) = self.info(name).await? else { return Ok(Deleted::AlreadyGone) };
        if if_empty && info.state.messages > 0 {
            return Ok(Deleted::NotEmpty { messages: Some(info.state.messages) });
        }
        timed("delete stream", async {
            self.jetstream
                .delete_stream(name)
                .await
                .map(|_| Deleted::Deleted)
                .map_err(|e| AdminError::operation("delete stream", e))
        })
        .await
    }
}
