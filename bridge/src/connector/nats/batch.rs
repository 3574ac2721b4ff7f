//! Fast batch publishing into a JetStream stream that allows it (`allow_batched`, NATS 2.14+).
//!
//! Messages go out as one long batch whose numbering the server checks, with gaps refused: what
//! the stream stores of a batch is always a prefix of what was sent, through reconnects and leader
//! changes (a lost message ends the batch, and nothing after it is stored). So this sink keeps
//! order itself, and the pipeline needs no lane per key: a hot key keeps the window full instead
//! of one message per round trip.
//!
//! The server acknowledges every stored message (a flow of 1) on the message's reply subject,
//! `<inbox>.<batch>.1.fail.<number>.<operation>.$FI`. A batch that ends early (a gap, a refused
//! message) answers with a PubAck that counts what it stored; the rest failed and come again in
//! the pipeline's next run. A batch starts with its first message alone: a first message that the
//! stream already holds (a repeat after a restart) ends its batch at once, so the rest wait for
//! that answer and go in the batch that follows. The server forgets a batch 10 s after its last
//! message; one idle for [`IDLE`] is left behind and a new one started.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Mutex, oneshot};

use crate::connector::{Confirm, ConnectorError, Delivered};

/// How long a batch may sit idle before the next message starts a new one: well inside the 10 s
/// after which the server forgets it.
const IDLE: Duration = Duration::from_secs(5);
/// How long a message may wait for the server's answer (the client's wait for a PubAck).
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// JetStream's error code for a message larger than the stream allows.
const TOO_LARGE: u64 = 10054;

/// What a message is in its batch: the first, or one after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Start = 0,
    Append = 1,
}

/// The server's answer about a batch.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Every message up to and including `through` is stored.
    Stored { through: u64 },
    /// The batch ended with its first `count` messages stored, the first one a repeat the stream
    /// already held if `repeat`.
    Ended { count: u64, repeat: bool },
    /// A message was refused; the batch ends before it.
    Refused { number: Option<u64>, code: u64, description: String },
    /// A lost message was noticed; an `Ended` follows.
    Gap,
}

#[derive(serde::Deserialize)]
struct RawAnswer {
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<u64>,
    count: Option<u64>,
    #[serde(default)]
    duplicate: bool,
    error: Option<RawError>,
}

#[derive(serde::Deserialize)]
struct RawError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

fn parse_answer(payload: &[u8]) -> Option<Answer> {
    let raw: RawAnswer = serde_json::from_slice(payload).ok()?;
    let refused = |number: Option<u64>, error: Option<RawError>| {
        let error = error.unwrap_or(RawError { err_code: 0, description: "refused".to_owned() });
        Answer::Refused { number, code: error.err_code, description: error.description }
    };
    match raw.kind.as_deref() {
        Some("ack") => Some(Answer::Stored { through: raw.seq? }),
        Some("gap") => Some(Answer::Gap),
        Some("err") => Some(refused(raw.seq, raw.error)),
        Some(_) => None,
        // A PubAck ends the batch; a plain error answers a message outside any batch it knows.
        None if raw.error.is_some() => Some(refused(None, raw.error)),
        None => Some(Answer::Ended { count: raw.count?, repeat: raw.duplicate }),
    }
}

/// The batch and message number a reply subject names, under `prefix`.
fn batch_and_number<'a>(subject: &'a str, prefix: &str) -> Option<(&'a str, u64)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?.strip_suffix(".$FI")?;
    let mut parts = rest.split('.');
    let (batch, _flow, _gaps, number) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((batch, number.parse().ok()?))
}

fn reply_subject(prefix: &str, batch: &str, number: u64, operation: Operation) -> String {
    format!("{prefix}.{batch}.1.fail.{number}.{}.$FI", operation as u8)
}

/// A message to publish, kept until it goes out.
struct Outgoing {
    headers: HeaderMap,
    payload: Bytes,
}

/// A message published in the batch, numbered, or held back for the next one.
type Publish = (u64, Operation, Outgoing);
type Settled<T> = Vec<(T, Result<Delivered, ConnectorError>)>;

/// One publisher's batch, free of I/O: `T` is how a message's outcome is told to the pipeline.
struct Batch<T> {
    id: String,
    next: u64,
    /// The first message is stored: the rest may go.
    open: bool,
    /// Nothing more goes into this batch; the next one starts once `sent` is settled.
    ended: bool,
    sent: VecDeque<(u64, T)>,
    held: VecDeque<(Outgoing, T)>,
    last_publish: Instant,
    /// Why nothing more may go: a message failed, and a later one stored now would land before it
    /// comes again in the pipeline's next run.
    broken: Option<String>,
}

impl<T> Batch<T> {
    fn new(id: String, now: Instant) -> Self {
        Self {
            id,
            next: 1,
            open: false,
            ended: false,
            sent: VecDeque::new(),
            held: VecDeque::new(),
            last_publish: now,
            broken: None,
        }
    }

    /// Takes a message: numbered to publish now, `None` while it waits for the batch to open, or
    /// failed at once after an earlier failure.
    fn admit(
        &mut self,
        message: Outgoing,
        tell: T,
        now: Instant,
        fresh: impl FnOnce() -> String,
    ) -> Result<Option<Publish>, (T, ConnectorError)> {
        if let Some(why) = &self.broken {
            return Err((tell, ConnectorError::Send(why.clone())));
        }
        if self.open && self.sent.is_empty() && now.duration_since(self.last_publish) >= IDLE {
            self.ended = true;
        }
        self.held.push_back((message, tell));
        Ok(self.release(now, fresh).pop())
    }

    /// A publish that did not reach the connection: its number is free again.
    fn unsend(&mut self, number: u64) -> Option<T> {
        if self.sent.back().is_some_and(|(n, _)| *n == number) {
            self.next = number;
            if number == 1 {
                self.open = false;
            }
            return self.sent.pop_back().map(|(_, tell)| tell);
        }
        None
    }

    /// Applies the server's answer about message `number`; returns the outcomes to tell and the
    /// messages to publish next.
    fn answer(
        &mut self,
        number: u64,
        answer: Answer,
        now: Instant,
        fresh: impl FnOnce() -> String,
    ) -> (Settled<T>, Vec<Publish>) {
        let mut settled = Vec::new();
        match answer {
            Answer::Stored { through } => {
                while let Some((_, tell)) = self.sent.pop_front_if(|(n, _)| *n <= through) {
                    settled.push((tell, Ok(Delivered::Stored)));
                }
                self.open |= through >= 1;
            }
            Answer::Ended { count, repeat } => {
                for (n, tell) in self.sent.drain(..) {
                    settled.push(if n <= count {
                        (tell, Ok(if repeat && n == 1 { Delivered::Duplicate } else { Delivered::Stored }))
                    } else {
                        (
                            tell,
                            Err(ConnectorError::Send(format!(
                                "JetStream ended the batch after message {count}; {n} was not stored"
                            ))),
                        )
                    });
                }
                self.ended = true;
            }
            Answer::Refused { number: refused, code, description } => {
                let refused = refused.unwrap_or(number);
                while let Some((n, tell)) = self.sent.pop_back_if(|(n, _)| *n > refused) {
                    let why = format!("not stored: JetStream refused message {refused} of its batch before {n}");
                    settled.push((tell, Err(ConnectorError::Send(why))));
                }
                if let Some((_, tell)) = self.sent.pop_back_if(|(n, _)| *n == refused) {
                    let error = if code == TOO_LARGE {
                        ConnectorError::Rejected { reason: "too_large", message: description }
                    } else {
                        ConnectorError::Send(format!("JetStream refused the message: {description} ({code})"))
                    };
                    settled.push((tell, Err(error)));
                }
                settled.reverse();
                self.ended = true;
            }
            Answer::Gap => {}
        }
        if self.broken.is_none()
            && let Some((_, Err(error))) = settled.iter().find(|(_, outcome)| outcome.is_err())
        {
            self.broken = Some(format!("not sent after an earlier message failed: {error}"));
        }
        if let Some(why) = &self.broken {
            let held = std::mem::take(&mut self.held);
            settled.extend(held.into_iter().map(|(_, tell)| (tell, Err(ConnectorError::Send(why.clone())))));
        }
        (settled, self.release(now, fresh))
    }

    /// Numbers held messages that may go now: all of them into an open batch, or the first alone
    /// into a new batch once the ended one is settled.
    fn release(&mut self, now: Instant, fresh: impl FnOnce() -> String) -> Vec<Publish> {
        if self.broken.is_some() {
            return Vec::new();
        }
        if self.ended && self.sent.is_empty() && !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            *self = Self { held, ..Self::new(fresh(), now) };
        }
        let mut out = Vec::new();
        while !self.ended && (self.open || self.next == 1) {
            let Some((message, tell)) = self.held.pop_front() else { break };
            let number = self.next;
            self.next += 1;
            self.sent.push_back((number, tell));
            out.push((number, if number == 1 { Operation::Start } else { Operation::Append }, message));
        }
        if !out.is_empty() {
            self.last_publish = now;
        }
        out
    }

    /// Everything sent or held, for when the answers can no longer come.
    fn abandon(&mut self) -> impl Iterator<Item = T> {
        self.ended = true;
        self.broken = Some("the connection to JetStream closed".to_owned());
        let sent = std::mem::take(&mut self.sent).into_iter().map(|(_, tell)| tell);
        sent.chain(std::mem::take(&mut self.held).into_iter().map(|(_, tell)| tell))
    }
}

type Tell = oneshot::Sender<Result<Delivered, ConnectorError>>;

/// The bytes a message takes on the wire, headers included, as the server measures it.
fn wire_size(headers: &HeaderMap, payload: &[u8]) -> usize {
    let lines: usize = headers
        .iter()
        .flat_map(|(name, values)| {
            values.iter().map(move |value| AsRef::<[u8]>::as_ref(name).len() + value.as_str().len() + 4)
        })
        .sum();
    "NATS/1.0\r\n\r\n".len() + lines + payload.len()
}

/// Publishes into one stream in fast batches and tells each message's outcome.
pub struct BatchPublisher {
    client: async_nats::Client,
    subject: String,
    /// The largest message the server and the stream take: a larger one is refused here, before
    /// it would end the batch and take the messages sent after it along.
    largest: usize,
    prefix: String,
    batch: Arc<Mutex<Batch<Tell>>>,
    answers: tokio::task::JoinHandle<()>,
}

impl Drop for BatchPublisher {
    fn drop(&mut self) {
        self.answers.abort();
    }
}

/// A batch id: unique among the stream's publishers (the server keys batches by it).
fn fresh_id() -> String {
    let random = || {
        getrandom::u64().unwrap_or_else(|_| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            u64::try_from(now.as_nanos() & u128::from(u64::MAX)).unwrap_or_default()
        })
    };
    format!("{:016x}{:016x}", random(), random())
}

impl BatchPublisher {
    /// `largest`: the stream's largest message, where it sets one.
    pub async fn start(
        client: async_nats::Client,
        subject: String,
        largest: Option<usize>,
    ) -> Result<Self, ConnectorError> {
        let server = client.server_info().max_payload;
        let largest = largest.map_or(server, |stream| stream.min(server));
        let prefix = client.new_inbox();
        let mut replies = client
            .subscribe(format!("{prefix}.>"))
            .await
            .map_err(|e| ConnectorError::Send(format!("subscribe to batch answers: {e}")))?;
        let batch = Arc::new(Mutex::new(Batch::<Tell>::new(fresh_id(), Instant::now())));
        let answers = tokio::spawn({
            let (client, subject, prefix, batch) = (client.clone(), subject.clone(), prefix.clone(), batch.clone());
            async move {
                while let Some(reply) = replies.next().await {
                    let Some((id, number)) = batch_and_number(reply.subject.as_str(), &prefix) else { continue };
                    let Some(answer) = parse_answer(&reply.payload) else { continue };
                    let mut batch = batch.lock().await;
                    if batch.id != id {
                        continue;
                    }
                    if answer == Answer::Gap {
                        tracing::warn!(
                            message = "JetStream saw a message of the batch missing; the batch ends there.",
                            batch = id
                        );
                    }
                    let (settled, next) = batch.answer(number, answer, Instant::now(), fresh_id);
                    for (tell, outcome) in settled {
                        let _ = tell.send(outcome);
                    }
                    publish(&client, &subject, &prefix, &mut batch, next).await;
                }
                // The connection is gone: nothing more will be answered.
                batch.lock().await.abandon().for_each(drop);
            }
        });
        Ok(Self { client, subject, largest, prefix, batch, answers })
    }

    pub async fn send(&self, headers: HeaderMap, payload: Bytes) -> Confirm {
        let size = wire_size(&headers, &payload);
        if size > self.largest {
            let message = format!("{size} bytes with headers, over the {} the stream takes", self.largest);
            return Box::pin(async move { Err(ConnectorError::Rejected { reason: "too_large", message }) });
        }
        let (tell, told) = oneshot::channel();
        let mut batch = self.batch.lock().await;
        match batch.admit(Outgoing { headers, payload }, tell, Instant::now(), fresh_id) {
            Ok(next) => {
                publish(&self.client, &self.subject, &self.prefix, &mut batch, next.into_iter().collect()).await;
            }
            Err((_, error)) => return Box::pin(async move { Err(error) }),
        }
        drop(batch);
        Box::pin(async move {
            match tokio::time::timeout(ANSWER_WAIT, told).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err(ConnectorError::Send("the connection to JetStream closed before its answer".into())),
                Err(_) => Err(ConnectorError::Send(format!("JetStream did not answer within {ANSWER_WAIT:?}"))),
            }
        })
    }
}

/// Publishes `next` in order, under the batch's lock so that no other message goes between them.
async fn publish(
    client: &async_nats::Client,
    subject: &str,
    prefix: &str,
    batch: &mut Batch<Tell>,
    next: Vec<Publish>,
) {
    let mut next = next.into_iter();
    while let Some((number, operation, message)) = next.next() {
        let reply = reply_subject(prefix, &batch.id, number, operation);
        let published =
            client.publish_with_reply_and_headers(subject.to_owned(), reply, message.headers, message.payload).await;
        if let Err(error) = published {
            // Not on the connection: this one and the ones after it fail, unsent.
            let failed = batch.unsend(number).into_iter().chain(next.by_ref().filter_map(|(n, ..)| batch.unsend(n)));
            let mut failed: Vec<Tell> = failed.collect();
            failed.extend(std::mem::take(&mut batch.held).into_iter().map(|(_, tell)| tell));
            batch.ended = true;
            batch.broken = Some(format!("not sent after an earlier publish failed: {error}"));
            for tell in failed {
                let _ = tell.send(Err(ConnectorError::Send(format!("publish: {error}"))));
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Outgoing {
        Outgoing { headers: HeaderMap::new(), payload: Bytes::from_static(b"m") }
    }

    /// Admits a message; the number and operation it goes with now, if any.
    fn admit<T>(
        batch: &mut Batch<T>,
        tell: T,
        now: Instant,
        fresh: impl FnOnce() -> String,
    ) -> Option<(u64, Operation)> {
        match batch.admit(message(), tell, now, fresh) {
            Ok(next) => next.map(|(n, op, _)| (n, op)),
            Err((_, error)) => panic!("failed at once: {error}"),
        }
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("b{n}")
        }
    }

    #[test]
    fn answers_are_read_from_the_servers_json() {
        assert_eq!(parse_answer(br#"{"type":"ack","seq":7,"msgs":1}"#), Some(Answer::Stored { through: 7 }));
        assert_eq!(
            parse_answer(br#"{"stream":"S","seq":90,"batch":"b1","count":4}"#),
            Some(Answer::Ended { count: 4, repeat: false })
        );
        assert_eq!(
            parse_answer(br#"{"stream":"S","seq":3,"duplicate": true,"batch":"b1","count":1}"#),
            Some(Answer::Ended { count: 1, repeat: true })
        );
        assert_eq!(parse_answer(br#"{"type":"gap","last_seq":3,"seq":5}"#), Some(Answer::Gap));
        assert_eq!(
            parse_answer(br#"{"type":"err","seq":5,"error":{"code":400,"err_code":10054,"description":"too big"}}"#),
            Some(Answer::Refused { number: Some(5), code: 10054, description: "too big".into() })
        );
        assert_eq!(
            parse_answer(br#"{"error":{"code":400,"err_code":10179,"description":"batch id unknown"},"stream":"S"}"#),
            Some(Answer::Refused { number: None, code: 10179, description: "batch id unknown".into() })
        );
        let subject = reply_subject("_INBOX.x", "b1", 12, Operation::Append);
        assert_eq!(subject, "_INBOX.x.b1.1.fail.12.1.$FI");
        assert_eq!(batch_and_number(&subject, "_INBOX.x"), Some(("b1", 12)));
        assert_eq!(batch_and_number("_INBOX.y.b1.1.fail.12.1.$FI", "_INBOX.x"), None);
    }

    #[test]
    fn a_message_is_measured_as_the_server_measures_it() {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "abc");
        headers.append("k", "v1");
        headers.append("k", "v2");
        // "NATS/1.0\r\n" "Nats-Msg-Id: abc\r\n" "k: v1\r\n" "k: v2\r\n" "\r\n", then the payload.
        assert_eq!(wire_size(&headers, b"12345"), 10 + 18 + 7 + 7 + 2 + 5);
    }

    #[test]
    fn a_batch_opens_with_its_first_message_alone_then_sends_the_rest_at_once() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), now);
        assert_eq!(admit(&mut batch, 'a', now, &mut fresh), Some((1, Operation::Start)), "the first goes");
        assert!(admit(&mut batch, 'b', now, &mut fresh).is_none(), "held until the first is stored");
        assert!(admit(&mut batch, 'c', now, &mut fresh).is_none());
        let (settled, next) = batch.answer(1, Answer::Stored { through: 1 }, now, &mut fresh);
        assert_eq!(settled.len(), 1);
        assert_eq!(
            next.iter().map(|(n, op, _)| (*n, *op)).collect::<Vec<_>>(),
            [(2, Operation::Append), (3, Operation::Append)]
        );
        assert_eq!(
            admit(&mut batch, 'd', now, &mut fresh),
            Some((4, Operation::Append)),
            "an open batch takes it at once"
        );
        let (settled, _) = batch.answer(4, Answer::Stored { through: 3 }, now, &mut fresh);
        assert_eq!(settled.iter().map(|(t, _)| *t).collect::<String>(), "bc", "stored in order, 4 still out");
    }

    #[test]
    fn a_first_message_the_stream_holds_ends_its_batch_and_the_next_starts_with_what_waited() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), now);
        admit(&mut batch, 'a', now, &mut fresh);
        admit(&mut batch, 'b', now, &mut fresh);
        let (settled, next) = batch.answer(1, Answer::Ended { count: 1, repeat: true }, now, &mut fresh);
        assert!(matches!(settled[..], [('a', Ok(Delivered::Duplicate))]));
        assert_eq!(batch.id, "b1", "a new batch");
        assert_eq!(next.iter().map(|(n, op, _)| (*n, *op)).collect::<Vec<_>>(), [(1, Operation::Start)]);
    }

    #[test]
    fn a_batch_ended_early_fails_what_it_did_not_store_and_every_message_after() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), now);
        admit(&mut batch, 1, now, &mut fresh);
        batch.answer(1, Answer::Stored { through: 1 }, now, &mut fresh);
        for n in 2..=5 {
            assert!(admit(&mut batch, n, now, &mut fresh).is_some());
        }
        // Message 3 was lost on the way: the server stored 2 and ended the batch.
        let (settled, next) = batch.answer(4, Answer::Ended { count: 2, repeat: false }, now, &mut fresh);
        let outcomes: Vec<(i32, bool)> = settled.iter().map(|(t, r)| (*t, r.is_ok())).collect();
        assert_eq!(outcomes, [(2, true), (3, false), (4, false), (5, false)]);
        assert!(next.is_empty());
        assert!(matches!(batch.admit(message(), 6, now, &mut fresh), Err((6, _))), "2 to 5 come again first");
    }

    #[test]
    fn a_refused_message_fails_with_what_came_after_it_and_a_too_large_one_is_rejected_for_good() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), now);
        admit(&mut batch, 1, now, &mut fresh);
        batch.answer(1, Answer::Stored { through: 1 }, now, &mut fresh);
        for n in 2..=4 {
            admit(&mut batch, n, now, &mut fresh);
        }
        let refused = Answer::Refused { number: Some(3), code: TOO_LARGE, description: "too big".into() };
        let (settled, _) = batch.answer(3, refused, now, &mut fresh);
        assert!(matches!(settled[0], (3, Err(ConnectorError::Rejected { reason: "too_large", .. }))));
        assert!(matches!(settled[1], (4, Err(ConnectorError::Send(_)))));
        assert_eq!(settled.len(), 2, "2 waits for the PubAck that ends the batch");
        assert!(matches!(batch.admit(message(), 5, now, &mut fresh), Err((5, _))), "nothing goes before 4 again");
        let (settled, next) = batch.answer(2, Answer::Ended { count: 2, repeat: false }, now, &mut fresh);
        assert!(matches!(settled[..], [(2, Ok(Delivered::Stored))]));
        assert!(next.is_empty());
    }

    #[test]
    fn a_refused_first_message_fails_the_ones_held_behind_it() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), now);
        admit(&mut batch, 1, now, &mut fresh);
        assert_eq!(admit(&mut batch, 2, now, &mut fresh), None);
        let refused = Answer::Refused { number: None, code: 10077, description: "insufficient resources".into() };
        let (settled, next) = batch.answer(1, refused, now, &mut fresh);
        let outcomes: Vec<(i32, bool)> = settled.iter().map(|(t, r)| (*t, r.is_ok())).collect();
        assert_eq!(outcomes, [(1, false), (2, false)], "2 would be stored before 1 comes again");
        assert!(next.is_empty());
    }

    #[test]
    fn an_idle_batch_is_left_for_the_server_to_forget_and_a_new_one_started() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), now);
        admit(&mut batch, 1, now, &mut fresh);
        batch.answer(1, Answer::Stored { through: 1 }, now, &mut fresh);
        let soon = admit(&mut batch, 2, now + Duration::from_secs(1), &mut fresh);
        assert_eq!((batch.id.as_str(), soon), ("b0", Some((2, Operation::Append))));
        batch.answer(2, Answer::Stored { through: 2 }, now, &mut fresh);
        let later = admit(&mut batch, 3, now + Duration::from_secs(7), &mut fresh);
        assert_eq!((batch.id.as_str(), later), ("b1", Some((1, Operation::Start))));
    }
}
