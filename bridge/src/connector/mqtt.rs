//! MQTT 3.1.1 through rumqttc, QoS 1 both ways. Source: a persistent session (clean session off,
//! client id from the bridge) subscribed to the queue's topic with manual acks, so an unacked
//! message comes again after a reconnect. Sink: publishes QoS 1; a message counts as sent when the
//! broker's PUBACK for its packet id arrived.
//!
//! The event loop runs in a task of its own; sends learn their packet ids from the loop's
//! `Outgoing::Publish` events, which come in send order.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, Incoming, MqttOptions, Outgoing, Publish, QoS, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, oneshot};

use super::{Ack, Confirm, ConnectorError, Delivered, Received};
use crate::message::{Message, MessageIds};
use oms_bridge_config::{Endpoint, Protocol};

/// Requests rumqttc may hold before `publish` waits (its own bounded queue).
const CLIENT_QUEUE: usize = 1024;
/// How long the broker has to accept the connection and the subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

fn options(endpoint: &Endpoint, client_id: &str, clean: bool) -> Result<MqttOptions, ConnectorError> {
    let (host, port) = endpoint.servers.first().cloned().unwrap_or_default();
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_keep_alive(Duration::from_secs(10));
    options.set_clean_session(clean);
    options.set_manual_acks(true);
    if let Some((user, password)) = super::credentials(endpoint) {
        options.set_credentials(user, password);
    }
    // With a CA bundle the connection is TLS or nothing, the broker checked against it and the
    // name dialled.
    if let Some(files) = &endpoint.tls {
        let config = crate::gateway::tls::broker_client_config(files).map_err(|e| fail(endpoint, e))?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config))));
    }
    Ok(options)
}

fn fail(endpoint: &Endpoint, error: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Connect {
        protocol: Protocol::Mqtt,
        servers: format!("{:?}", endpoint.servers),
        message: error.to_string(),
    }
}

pub struct MqttSource {
    client: AsyncClient,
    incoming: mpsc::Receiver<Result<Publish, String>>,
    /// MQTT 3.1.1 has no id and no position: ids count the messages of this connection, under its epoch.
    ids: MessageIds,
    received: u64,
}

impl MqttSource {
    pub async fn connect(endpoint: &Endpoint, client_id: &str, in_flight: u32) -> Result<Self, ConnectorError> {
        let mut options = options(endpoint, client_id, false)?;
        options.set_inflight(u16::try_from(in_flight).unwrap_or(u16::MAX));
        let (client, mut events) = AsyncClient::new(options, CLIENT_QUEUE);
        client.subscribe(&endpoint.queue, QoS::AtLeastOnce).await.map_err(|e| fail(endpoint, e))?;
        // Connected only once the broker has the subscription: `subscribe` merely queues it, and
        // what is published before the broker has it is not ours to forward. A persistent
        // session's messages may come first; they are kept, in order.
        let mut early = Vec::new();
        let subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
            loop {
                match events.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Incoming::SubAck(ack)) => {
                        return if ack.return_codes.iter().all(|code| matches!(code, SubscribeReasonCode::Success(_))) {
                            Ok(())
                        } else {
                            Err(format!("the broker refused the subscription to {}", endpoint.queue))
                        };
                    }
                    Event::Incoming(Incoming::Publish(publish)) => early.push(publish),
                    _ => {}
                }
            }
        })
        .await;
        match subscribed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(fail(endpoint, error)),
            Err(_) => return Err(fail(endpoint, format!("no SUBACK within {SUBSCRIBE_TIMEOUT:?}"))),
        }
        // Bounded like the window: the loop stops reading from the socket when it is full.
        let (tx, incoming) = mpsc::channel(usize::try_from(in_flight).unwrap_or(1).max(1));
        tokio::spawn(async move {
            for publish in early {
                if tx.send(Ok(publish)).await.is_err() {
                    return;
                }
            }
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(publish))) => {
                        if tx.send(Ok(publish)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let _ = tx.send(Err(error.to_string())).await;
                        return;
                    }
                }
            }
        });
        let ids = MessageIds::per_delivery(endpoint.access_point.as_deref(), &endpoint.queue);
        Ok(Self { client, incoming, ids, received: 0 })
    }

    pub async fn next(&mut self) -> Result<Received, ConnectorError> {
        let publish = self
            .incoming
            .recv()
            .await
            .ok_or_else(|| ConnectorError::Receive("the MQTT event loop ended".into()))?
            .map_err(ConnectorError::Receive)?;
        self.received += 1;
        let message = Message {
            key: None,
            payload: publish.payload.to_vec(),
            headers: Vec::new(),
            timestamp_ms: None,
            id: self.ids.id(None, 0, self.received),
            provenance: Vec::new(),
        };
        let redelivered = publish.dup;
        Ok(Received { message, ack: Ack::Mqtt(Box::new(publish)), gap: 0, redelivered })
    }

    pub async fn ack(&self, publish: &Publish) -> Result<(), ConnectorError> {
        self.client.ack(publish).await.map_err(|e| ConnectorError::Ack(e.to_string()))
    }
}

/// Sends waiting for their packet id, then for their PUBACK.
#[derive(Default)]
struct Pending {
    unnumbered: VecDeque<oneshot::Sender<Result<(), String>>>,
    by_packet: HashMap<u16, oneshot::Sender<Result<(), String>>>,
}

pub struct MqttSink {
    client: AsyncClient,
    pending: Arc<Mutex<Pending>>,
    topic: String,
}

impl MqttSink {
    pub fn connect(endpoint: &Endpoint, client_id: &str) -> Result<Self, ConnectorError> {
        let (client, mut events) = AsyncClient::new(options(endpoint, client_id, true)?, CLIENT_QUEUE);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let tracked = pending.clone();
        tokio::spawn(async move {
            loop {
                let event = events.poll().await;
                let mut pending = tracked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match event {
                    Ok(Event::Outgoing(Outgoing::Publish(packet))) => {
                        if let Some(waiter) = pending.unnumbered.pop_front() {
                            pending.by_packet.insert(packet, waiter);
                        }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                        if let Some(waiter) = pending.by_packet.remove(&ack.pkid) {
                            let _ = waiter.send(Ok(()));
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        // Every send in flight fails; the worker reconnects and the source resends.
                        let message = error.to_string();
                        let Pending { unnumbered, by_packet } = &mut *pending;
                        for waiter in unnumbered.drain(..).chain(by_packet.drain().map(|(_, w)| w)) {
                            let _ = waiter.send(Err(message.clone()));
                        }
                        return;
                    }
                }
            }
        });
        Ok(Self { client, pending, topic: endpoint.queue.clone() })
    }

    pub async fn send(&self, message: &Message) -> Result<Confirm, ConnectorError> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).unnumbered.push_back(tx);
        self.client
            .publish(self.topic.clone(), QoS::AtLeastOnce, false, message.payload.clone())
            .await
            .map_err(|e| ConnectorError::Send(e.to_string()))?;
        Ok(Box::pin(async move {
            match rx.await {
                Ok(Ok(())) => Ok(Delivered::Stored),
                Ok(Err(error)) => Err(ConnectorError::Send(error)),
                Err(_) => Err(ConnectorError::Send("the MQTT event loop ended".into())),
            }
        }))
    }
}
