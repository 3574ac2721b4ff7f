//! RabbitMQ queues over AMQP 0.9.1: declare with arguments (queue type, TTL, length limits,
//! priority), observe by passive declare, delete with `if-empty`. RabbitMQ cannot change the
//! arguments of an existing queue; a redeclare with different ones is refused with a
//! PRECONDITION_FAILED that names the argument, which is how drift is seen.

use std::collections::BTreeMap;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Connection, ConnectionProperties};

use super::{AdminError, Deleted, Endpoint, Kept, Observed, retention_status, timed};
use crate::queue::plan::{Drift, QueuePlan};

/// AMQP's port, for a server address without one.
const AMQP_PORT: u16 = 5672;

/// amqps with the binding's CA bundle as the only trust (lapin's rustls has no roots of its own)
/// and its client certificate, if any; the host dialled is the name checked.
fn tls_config(tls: &crate::broker_tls::BrokerTls) -> OwnedTLSConfig {
    OwnedTLSConfig {
        cert_chain: Some(tls.ca_pem.clone()),
        identity: tls
            .client
            .as_ref()
            .map(|(cert, key)| OwnedIdentity::PKCS8 { pem: cert.clone().into_bytes(), key: key.clone().into_bytes() }),
    }
}

pub struct RabbitAdmin {
    connection: Connection,
}

impl RabbitAdmin {
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, AdminError> {
        let user = endpoint.username.clone().unwrap_or_else(|| "guest".into());
        let password = endpoint.password.clone().unwrap_or_else(|| "guest".into());
        let server = endpoint.servers.first().cloned().unwrap_or_default();
        let (host, port) = match server.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().unwrap_or(AMQP_PORT)),
            None => (server.clone(), AMQP_PORT),
        };
        // The URI as parts: user, password and virtual host go in as they are, nothing to escape.
        let uri = AMQPUri {
            scheme: if endpoint.tls.is_some() { AMQPScheme::AMQPS } else { AMQPScheme::AMQP },
            authority: AMQPAuthority { userinfo: AMQPUserInfo { username: user, password }, host, port },
            vhost: endpoint.vhost.clone().unwrap_or_else(|| "/".to_owned()),
            ..AMQPUri::default()
        };
        let refused = |e: lapin::Error| AdminError::Connect { servers: server.clone(), message: e.to_string() };
        let connection = timed("connect", async {
            match &endpoint.tls {
                None => Connection::connect_uri(uri, ConnectionProperties::default()).await.map_err(refused),
                Some(tls) => {
                    let runtime = lapin::runtime::default_runtime().map_err(refused)?;
                    Connection::connect_uri_with_config(uri, ConnectionProperties::default(), tls_config(tls), runtime)
                        .await
                        .map_err(refused)
                }
            }
        })
        .await?;
        Ok(Self { connection })
    }

    /// A fresh channel per operation: AMQP closes a channel on every refused method.
    async fn channel(&self) -> Result<lapin::Channel, AdminError> {
        self.connection.create_channel().await.map_err(|e| AdminError::operation("open channel", e))
    }

    pub async fn observe(&self, plan: &QueuePlan) -> Result<Option<Observed>, AdminError> {
        let name = plan.broker_name.as_str();
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let existing = timed("read queue", async {
            let channel = self.channel().await?;
            match channel.queue_declare(name.into(), passive, FieldTable::default()).await {
                Ok(queue) => Ok(Some(u64::from(queue.message_count()))),
                Err(error) if refused_with(&error, 404) => Ok(None),
                Err(error) => Err(AdminError::operation("read queue", error)),
            }
        })
        .await?;
        let Some(messages) = existing else { return Ok(None) };
        // Redeclaring with the planned arguments is a no-op when they match, and refused,
        // naming the argument, when they do not.
        let reported_drift = timed("compare queue arguments", async {
            let channel = self.channel().await?;
            match channel.queue_declare(name.into(), durable(), arguments(plan)).await {
                Ok(_) => Ok(Vec::new()),
                Err(error) if refused_with(&error, 406) => {
                    Ok(inequivalent_argument(&error.to_string()).into_iter().collect())
                }
                Err(error) => Err(AdminError::operation("compare queue arguments", error)),
            }
        })
        .await?;
        // A redeclare RabbitMQ accepted confirms the planned arguments, missing ones included; the
        // queue's own are unknown when it refused.
        let limit = |key: &str| plan.settings.get(key).and_then(|v| v.parse::<u64>().ok());
        let kept = Kept {
            retention: reported_drift
                .is_empty()
                .then(|| retention_status(limit("x-message-ttl"), limit("x-max-length-bytes"))),
            ..Kept::default()
        };
        Ok(Some(Observed {
            partitions: 1,
            settings: plan.settings.clone(),
            messages: Some(messages),
            reported_drift,
            kept,
        }))
    }

    pub async fn create(&self, plan: &QueuePlan) -> Result<(), AdminError> {
        timed("declare queue", async {
            let channel = self.channel().await?;
            channel
                .queue_declare(plan.broker_name.as_str().into(), durable(), arguments(plan))
                .await
                .map(|_| ())
                .map_err(|e| AdminError::operation("declare queue", e))
        })
        .await
    }

    pub async fn delete(&self, name: &str, if_empty: bool) -> Result<Deleted, AdminError> {
        timed("delete queue", async {
            let channel = self.channel().await?;
            let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let messages = match channel.queue_declare(name.into(), passive, FieldTable::default()).await {
                Ok(queue) => u64::from(queue.message_count()),
                Err(error) if refused_with(&error, 404) => return Ok(Deleted::AlreadyGone),
                Err(error) => return Err(AdminError::operation("read queue", error)),
            };
            // Quorum queues refuse the if-empty flag (NOT_IMPLEMENTED), so emptiness is checked
            // here; a message published between the check and the delete would still be lost.
            if if_empty && messages > 0 {
                return Ok(Deleted::NotEmpty { messages: Some(messages) });
            }
            match channel.queue_delete(name.into(), QueueDeleteOptions::default()).await {
                Ok(_) => Ok(Deleted::Deleted),
                Err(error) if refused_with(&error, 404) => Ok(Deleted::AlreadyGone),
                Err(error) => Err(AdminError::operation("delete queue", error)),
            }
        })
        .await
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

/// The planned settings as AMQP queue arguments.
fn arguments(plan: &QueuePlan) -> FieldTable {
    let mut table = BTreeMap::new();
    for (key, value) in &plan.settings {
        let value = match value.parse::<i64>() {
            Ok(number) => AMQPValue::LongLongInt(number),
            Err(_) => AMQPValue::LongString(LongString::from(value.as_str())),
        };
        table.insert(ShortString::from(key.as_str()), value);
    }
    FieldTable::from(table)
}

/// Whether AMQP refused the method with `code` (404 NOT_FOUND, 406 PRECONDITION_FAILED).
fn refused_with(error: &lapin::Error, code: u16) -> bool {
    error.to_string().contains(match code {
        404 => "NOT_FOUND",
        _ => "PRECONDITION_FAILED",
    })
}

/// Reads RabbitMQ's "inequivalent arg 'x' ... received the value 'a' ... but current is the
/// value 'b'" (either side may be "none").
fn inequivalent_argument(message: &str) -> Option<Drift> {
    let after = |text: &str, marker: &str| text.find(marker).map(|i| text[i + marker.len()..].to_owned());
    let quoted = |text: &str| text.split('\'').nth(1).map(str::to_owned);
    let rest = after(message, "inequivalent arg '")?;
    let setting = rest.split('\'').next()?.to_owned();
    let received = after(&rest, "received ")?;
    let (received, current) = received.split_once("but current is ")?;
    let desired = if received.starts_with("none") { None } else { quoted(received) };
    let actual = if current.starts_with("none") { None } else { quoted(current) };
    Some(Drift { setting, desired, actual })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inequivalent_arguments_name_the_setting_and_both_values() {
        let drift = inequivalent_argument(
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': \
             received the value '3600000' of type 'signedint' but current is the value '60000' of type 'long'",
        )
        .expect("parsed");
        assert_eq!(drift.setting, "x-message-ttl");
        assert_eq!(drift.desired.as_deref(), Some("3600000"));
        assert_eq!(drift.actual.as_deref(), Some("60000"));
        let missing = inequivalent_argument(
            "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': \
             received the value 'quorum' of type 'longstr' but current is none",
        )
        .expect("parsed");
        assert_eq!(missing.actual, None);
    }
}
