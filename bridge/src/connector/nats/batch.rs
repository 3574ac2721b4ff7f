//! Fast batch publishing into a JetStream stream that allows it (`allow_batched`, NATS 2.14+).
//!
//! Messages go out as one long batch whose numbering the server checks, with gaps refused: a
//! message lost on the way (a reconnect, a leader change, a server restart) or refused ends the
//! batch, and nothing sent after it is stored. So this sink keeps order itself and the pipeline
//! needs no lane per key: a hot key keeps the window full instead of one message per round trip.
//! Used only where the stream discards old messages at its limits: one that refuses new ones
//! could fail a message at storing, after the checks that end a batch, and store the next.
//!
//! The server answers every `flow` stored messages on the reply subject
//! `<inbox>.<batch>.<flow>.fail.<number>.<operation>.$FI` (a repeat the stream already holds is
//! skipped and counted like the rest), which costs it less than a PubAck per message. The last
//! few of a run wait for the next answer, so when the caller would wait (the source has nothing
//! ready) it calls [`BatchPublisher::flush`]: that commits the batch, the server's PubAck counts
//! what it stored, and the next message starts a new batch. A batch that ends early answers the
//! same way. After any failure nothing more goes: the failed message and every later one come
//! again, in order, in the pipeline's next run. The server forgets a batch 10 s after its last
//! message; one idle for [`IDLE`] is left behind and a new one started.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Mutex, Notify, oneshot};

use crate::connector::{Confirm, ConnectorError, Delivered};

/// How long a batch may sit idle before the next message starts a new one: well inside the 10 s
/// after which the server forgets it.
const IDLE: Duration = Duration::from_secs(5);
/// How long a message may wait for the server's answer (the client's wait for a PubAck).
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// JetStream's error code for a message larger than the stream allows.
const TOO_LARGE: u64 = 10054;

/// What a message is in its batch: the first, one after it, or the end (an empty marker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Start = 0,
    Append = 1,
    Commit = 3,
}

/// The server's answer about a batch.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Every message up to and including `through` is stored.
    Stored { through: u64 },
    /// The batch ended with its first `count` messages stored.
    Ended { count: u64 },
    /// Message `number` was refused; the batch ends before it (a PubAck follows).
    Refused { number: u64, code: u64, description: String },
    /// The batch is gone or cannot go on: a message refused outside it (its first, or one after
    /// the server forgot it), no stream leader to answer, or a lost message seen.
    Broken { why: String },
}

#[derive(serde::Deserialize)]
struct RawAnswer {
    #[serde(rename = "type")]
    kind: Option<String>,
    seq: Option<u64>,
    count: Option<u64>,
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
    let error = || raw.error.as_ref().map_or((0, "refused".to_owned()), |e| (e.err_code, e.description.clone()));
    match raw.kind.as_deref() {
        Some("ack") => Some(Answer::Stored { through: raw.seq? }),
        Some("gap") => Some(Answer::Broken { why: "JetStream saw a message of the batch missing".to_owned() }),
        Some("err") => {
            let (code, description) = error();
            Some(Answer::Refused { number: raw.seq?, code, description })
        }
        Some(_) => None,
        None if raw.error.is_some() => {
            let (code, description) = error();
            Some(Answer::Broken { why: format!("JetStream refused the batch: {description} ({code})") })
        }
        None => Some(Answer::Ended { count: raw.count? }),
    }
}

/// The batch and message number a reply subject names, under `prefix`.
fn batch_and_number<'a>(subject: &'a str, prefix: &str) -> Option<(&'a str, u64)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?.strip_suffix(".$FI")?;
    let mut parts = rest.split('.');
    let (batch, _flow, _gaps, number) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some((batch, number.parse().ok()?))
}

fn reply_subject(prefix: &str, batch: &str, flow: u64, number: u64, operation: Operation) -> String {
    format!("{prefix}.{batch}.{flow}.fail.{number}.{}.$FI", operation as u8)
}

type Settled<T> = Vec<(T, Result<Delivered, ConnectorError>)>;

/// One publisher's batch, free of I/O: `T` is how a message's outcome is told to the pipeline.
struct Batch<T> {
    id: String,
    next: u64,
    /// Stored messages the server answers at a time, at most.
    flow: u64,
    /// Nothing more goes into this batch; the next message starts a new one.
    ended: bool,
    /// Committed; its PubAck ends it.
    committing: bool,
    /// Published and not yet answered, in order.
    sent: VecDeque<(u64, T)>,
    last_publish: Instant,
    /// Why nothing more may go: a message failed, and a later one stored now would land before it
    /// comes again in the pipeline's next run.
    broken: Option<String>,
}

impl<T> Batch<T> {
    fn new(id: String, flow: u64, now: Instant) -> Self {
        Self {
            id,
            next: 1,
            flow,
            ended: false,
            committing: false,
            sent: VecDeque::new(),
            last_publish: now,
            broken: None,
        }
    }

    /// Numbers a message to publish now, in this batch or a new one; fails it at once after an
    /// earlier failure.
    fn admit(
        &mut self,
        tell: T,
        now: Instant,
        fresh: impl FnOnce() -> String,
    ) -> Result<(u64, Operation), (T, ConnectorError)> {
        if let Some(why) = &self.broken {
            return Err((tell, ConnectorError::Send(why.clone())));
        }
        // An ended batch has nothing left unanswered (see `answer`), and a committing one is
        // waited for by `flush` before anything else is sent.
        if self.ended || (self.sent.is_empty() && now.duration_since(self.last_publish) >= IDLE) {
            *self = Self::new(fresh(), self.flow, now);
        }
        let number = self.next;
        self.next += 1;
        self.sent.push_back((number, tell));
        self.last_publish = now;
        Ok((number, if number == 1 { Operation::Start } else { Operation::Append }))
    }

    /// The number of the commit that ends the batch, if one is needed now: something is
    /// unanswered, and either the caller would otherwise wait for the source, or its window is
    /// full with fewer unanswered than an answer covers (so none may come).
    fn needs_commit(&self, window_full: bool) -> Option<u64> {
        let stuck = !window_full || (self.sent.len() as u64) < self.flow;
        if self.broken.is_some() || self.committing || self.sent.is_empty() || !stuck {
            return None;
        }
        Some(self.next)
    }

    /// The client refused to publish the latest message (larger than the server takes): it was
    /// never sent, and its number is free again.
    fn unsend(&mut self, number: u64) -> Option<T> {
        let (_, tell) = self.sent.pop_back_if(|(n, _)| *n == number)?;
        self.next = number;
        Some(tell)
    }

    /// Applies the server's answer; returns the outcomes to tell.
    fn answer(&mut self, answer: Answer) -> Settled<T> {
        let mut settled = Vec::new();
        match answer {
            Answer::Stored { through } => {
                while let Some((_, tell)) = self.sent.pop_front_if(|(n, _)| *n <= through) {
                    settled.push((tell, Ok(Delivered::Stored)));
                }
            }
            Answer::Ended { count } => {
                for (n, tell) in self.sent.drain(..) {
                    let outcome = if n <= count {
                        Ok(Delivered::Stored)
                    } else {
                        let why = format!("JetStream ended the batch after message {count}; {n} was not stored");
                        Err(ConnectorError::Send(why))
                    };
                    settled.push((tell, outcome));
                }
                self.ended = true;
            }
            Answer::Refused { number, code, description } => {
                // The ones before it are answered by the PubAck that ends the batch.
                while let Some((n, tell)) = self.sent.pop_back_if(|(n, _)| *n > number) {
                    let why = format!("not stored: JetStream refused message {number} of its batch before {n}");
                    settled.push((tell, Err(ConnectorError::Send(why))));
                }
                if let Some((_, tell)) = self.sent.pop_back_if(|(n, _)| *n == number) {
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
            Answer::Broken { why } => {
                // What was stored comes again and is dropped as a repeat by its Nats-Msg-Id.
                settled.extend(self.sent.drain(..).map(|(_, tell)| (tell, Err(ConnectorError::Send(why.clone())))));
                self.ended = true;
            }
        }
        if self.ended {
            self.committing = false;
        }
        if self.broken.is_none()
            && let Some((_, Err(error))) = settled.iter().find(|(_, outcome)| outcome.is_err())
        {
            self.broken = Some(format!("not sent after an earlier message failed: {error}"));
        }
        settled
    }

    /// Everything unanswered, for when the answers can no longer come.
    fn abandon(&mut self, why: &str) -> impl Iterator<Item = T> {
        self.ended = true;
        self.committing = false;
        self.broken = Some(why.to_owned());
        std::mem::take(&mut self.sent).into_iter().map(|(_, tell)| tell)
    }
}

type Tell = oneshot::Sender<Result<Delivered, ConnectorError>>;

/// Gives up the batch: everything unanswered fails with `why` and comes again in the next run.
fn fail_unanswered(batch: &mut Batch<Tell>, why: &str) {
    batch.abandon(why).for_each(|tell| drop(tell.send(Err(ConnectorError::Send(why.to_owned())))));
}

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
    /// The largest message the stream takes, where it sets one: a larger one is refused here,
    /// before it would end the batch (the client checks the server's limit itself).
    largest: Option<usize>,
    prefix: String,
    batch: Arc<Mutex<Batch<Tell>>>,
    /// Told when a batch ends (its PubAck, or a failure).
    ended: Arc<Notify>,
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

/// Stored messages the server answers at a time: a quarter of the window, so that a full window
/// always has answers coming, and at most 100, past which the server's cost no longer falls
/// (docs/bench/ab/README.md).
fn flow_for(window: u32) -> u64 {
    u64::from(window / 4).clamp(1, 100)
}

impl BatchPublisher {
    /// `window`: how many messages the caller has unanswered at most.
    pub async fn start(
        client: async_nats::Client,
        subject: String,
        largest: Option<usize>,
        window: u32,
    ) -> Result<Self, ConnectorError> {
        let prefix = client.new_inbox();
        let mut replies = client
            .subscribe(format!("{prefix}.>"))
            .await
            .map_err(|e| ConnectorError::Send(format!("subscribe to batch answers: {e}")))?;
        let batch = Arc::new(Mutex::new(Batch::<Tell>::new(fresh_id(), flow_for(window), Instant::now())));
        let ended = Arc::new(Notify::new());
        let answers = tokio::spawn({
            let (prefix, batch, ended) = (prefix.clone(), batch.clone(), ended.clone());
            async move {
                while let Some(reply) = replies.next().await {
                    let Some((id, _)) = batch_and_number(reply.subject.as_str(), &prefix) else { continue };
                    let answer = if reply.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                        Answer::Broken { why: "no responders: the stream has no leader".to_owned() }
                    } else {
                        let Some(answer) = parse_answer(&reply.payload) else { continue };
                        answer
                    };
                    let mut batch = batch.lock().await;
                    if batch.id != id {
                        continue;
                    }
                    if let Answer::Broken { why } = &answer {
                        tracing::warn!(
                            message = "The fast batch into JetStream broke off; its unanswered messages come again.",
                            batch = id,
                            why
                        );
                    }
                    for (tell, outcome) in batch.answer(answer) {
                        let _ = tell.send(outcome);
                    }
                    if batch.ended {
                        ended.notify_waiters();
                    }
                }
                // The connection is gone: nothing more will be answered.
                batch.lock().await.abandon("the connection to JetStream closed").for_each(drop);
                ended.notify_waiters();
            }
        });
        Ok(Self { client, subject, largest, prefix, batch, ended, answers })
    }

    /// Ends the batch where its last messages would otherwise wait for an answer, and waits for
    /// the PubAck that answers them: called when the caller would wait anyway, its source having
    /// nothing ready (`window_full` false) or its window full.
    pub async fn flush(&self, window_full: bool) {
        let mut batch = self.batch.lock().await;
        let Some(number) = batch.needs_commit(window_full) else { return };
        let reply = reply_subject(&self.prefix, &batch.id, batch.flow, number, Operation::Commit);
        // Waiting before the lock goes, so that the answer cannot come unseen.
        let ended = self.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if let Err(error) = self.client.publish_with_reply(self.subject.clone(), reply, Bytes::new()).await {
            let why = format!("publish the batch's commit: {error}");
            fail_unanswered(&mut batch, &why);
            return;
        }
        // Only once on its way: a flush cancelled before (by a shutdown) leaves the next one to do it.
        batch.committing = true;
        drop(batch);
        if tokio::time::timeout(ANSWER_WAIT, ended).await.is_err() {
            let why = format!("JetStream did not end the batch within {ANSWER_WAIT:?}");
            let mut batch = self.batch.lock().await;
            fail_unanswered(&mut batch, &why);
        }
    }

    pub async fn send(&self, headers: HeaderMap, payload: Bytes) -> Confirm {
        let size = wire_size(&headers, &payload);
        if let Some(largest) = self.largest.filter(|largest| size > *largest) {
            let message = format!("{size} bytes with headers, over the {largest} the stream takes");
            return Box::pin(async move { Err(ConnectorError::Rejected { reason: "too_large", message }) });
        }
        let (tell, told) = oneshot::channel();
        let mut batch = self.batch.lock().await;
        let (number, operation) = match batch.admit(tell, Instant::now(), fresh_id) {
            Ok(numbered) => numbered,
            Err((_, error)) => return Box::pin(async move { Err(error) }),
        };
        let reply = reply_subject(&self.prefix, &batch.id, batch.flow, number, operation);
        // Under the batch's lock, so that messages reach the connection in their numbers' order.
        if let Err(error) =
            self.client.publish_with_reply_and_headers(self.subject.clone(), reply, headers, payload).await
        {
            let failure = if error.kind() == async_nats::client::PublishErrorKind::MaxPayloadExceeded {
                batch.unsend(number);
                ConnectorError::Rejected { reason: "too_large", message: error.to_string() }
            } else {
                let why = format!("publish: {error}");
                fail_unanswered(&mut batch, &why);
                ConnectorError::Send(why)
            };
            return Box::pin(async move { Err(failure) });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("b{n}")
        }
    }

    /// Admits a message; the number and operation it goes with.
    fn admit<T>(batch: &mut Batch<T>, tell: T, now: Instant, fresh: impl FnOnce() -> String) -> (u64, Operation) {
        match batch.admit(tell, now, fresh) {
            Ok(numbered) => numbered,
            Err((_, error)) => panic!("failed at once: {error}"),
        }
    }

    fn outcomes<T: Copy>(settled: &Settled<T>) -> Vec<(T, bool)> {
        settled.iter().map(|(t, r)| (*t, r.is_ok())).collect()
    }

    #[test]
    fn answers_are_read_from_the_servers_json() {
        assert_eq!(parse_answer(br#"{"type":"ack","seq":7,"msgs":1}"#), Some(Answer::Stored { through: 7 }));
        assert_eq!(
            parse_answer(br#"{"stream":"S","seq":90,"batch":"b1","count":4}"#),
            Some(Answer::Ended { count: 4 })
        );
        assert!(matches!(parse_answer(br#"{"type":"gap","last_seq":3,"seq":5}"#), Some(Answer::Broken { .. })));
        assert_eq!(
            parse_answer(br#"{"type":"err","seq":5,"error":{"code":400,"err_code":10054,"description":"too big"}}"#),
            Some(Answer::Refused { number: 5, code: 10054, description: "too big".into() })
        );
        let unknown =
            br#"{"error":{"code":400,"err_code":10208,"description":"batch publish ID unknown"},"stream":"S"}"#;
        assert!(matches!(parse_answer(unknown), Some(Answer::Broken { why }) if why.contains("10208")));
        let subject = reply_subject("_INBOX.x", "b1", 16, 12, Operation::Append);
        assert_eq!(subject, "_INBOX.x.b1.16.fail.12.1.$FI");
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
    fn messages_go_out_numbered_at_once_and_are_told_stored_in_order() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), 2, now);
        assert_eq!(admit(&mut batch, 'a', now, &mut fresh), (1, Operation::Start));
        assert_eq!(admit(&mut batch, 'b', now, &mut fresh), (2, Operation::Append), "no wait for the first");
        assert_eq!(admit(&mut batch, 'c', now, &mut fresh), (3, Operation::Append));
        assert_eq!(outcomes(&batch.answer(Answer::Stored { through: 2 })), [('a', true), ('b', true)]);
        assert_eq!(outcomes(&batch.answer(Answer::Stored { through: 3 })), [('c', true)]);
        assert_eq!(batch.id, "b0", "one batch throughout");
    }

    #[test]
    fn the_flow_is_a_quarter_of_the_window_within_1_and_100() {
        assert_eq!((flow_for(2), flow_for(64), flow_for(1000), flow_for(100_000)), (1, 16, 100, 100));
    }

    #[test]
    fn a_batch_is_committed_when_the_caller_would_wait_and_its_last_messages_lack_an_answer() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), 2, now);
        assert_eq!(batch.needs_commit(false), None, "nothing to answer");
        for n in 1..=3 {
            admit(&mut batch, n, now, &mut fresh);
        }
        assert_eq!(outcomes(&batch.answer(Answer::Stored { through: 2 })), [(1, true), (2, true)]);
        assert_eq!(batch.needs_commit(true), Some(4), "a full window with fewer unanswered than an answer covers");
        batch.committing = true;
        assert_eq!(batch.needs_commit(false), None, "already committing");
        assert_eq!(outcomes(&batch.answer(Answer::Ended { count: 3 })), [(3, true)]);
        assert_eq!(admit(&mut batch, 4, now, &mut fresh), (1, Operation::Start), "the next message starts a batch");
        assert_eq!(batch.id, "b1");
        admit(&mut batch, 5, now, &mut fresh);
        assert_eq!(batch.needs_commit(true), None, "a full window with an answer to come needs no commit");
        assert_eq!(batch.needs_commit(false), Some(3), "a source with nothing ready does");
    }

    #[test]
    fn a_batch_ended_early_fails_what_it_did_not_store_and_every_message_after() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), 2, now);
        for n in 1..=5 {
            admit(&mut batch, n, now, &mut fresh);
        }
        batch.answer(Answer::Stored { through: 1 });
        // Message 3 was lost on the way: the server stored 2 and ended the batch.
        let settled = batch.answer(Answer::Ended { count: 2 });
        assert_eq!(outcomes(&settled), [(2, true), (3, false), (4, false), (5, false)]);
        assert!(matches!(batch.admit(6, now, &mut fresh), Err((6, _))), "3 to 5 come again first");
    }

    #[test]
    fn a_refused_message_fails_with_what_came_after_it_and_a_too_large_one_is_rejected_for_good() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), 2, now);
        for n in 1..=4 {
            admit(&mut batch, n, now, &mut fresh);
        }
        batch.answer(Answer::Stored { through: 1 });
        let settled = batch.answer(Answer::Refused { number: 3, code: TOO_LARGE, description: "too big".into() });
        assert!(matches!(settled[0], (3, Err(ConnectorError::Rejected { reason: "too_large", .. }))));
        assert!(matches!(settled[1], (4, Err(ConnectorError::Send(_)))));
        assert_eq!(settled.len(), 2, "2 waits for the PubAck that ends the batch");
        assert!(matches!(batch.admit(5, now, &mut fresh), Err((5, _))), "nothing goes before 4 again");
        assert_eq!(outcomes(&batch.answer(Answer::Ended { count: 2 })), [(2, true)]);
    }

    #[test]
    fn a_broken_batch_fails_everything_unanswered_which_comes_again() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), 2, now);
        for n in 1..=3 {
            admit(&mut batch, n, now, &mut fresh);
        }
        let settled = batch.answer(Answer::Broken { why: "no responders".into() });
        assert_eq!(outcomes(&settled), [(1, false), (2, false), (3, false)], "none waits out the answer timeout");
        assert!(batch.admit(4, now, &mut fresh).is_err());
    }

    #[test]
    fn a_message_the_client_refuses_to_publish_frees_its_number() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), 2, now);
        admit(&mut batch, 1, now, &mut fresh);
        assert_eq!(admit(&mut batch, 2, now, &mut fresh), (2, Operation::Append));
        assert_eq!(batch.unsend(2), Some(2));
        assert_eq!(admit(&mut batch, 3, now, &mut fresh), (2, Operation::Append), "no gap in the numbers");
    }

    #[test]
    fn an_idle_batch_is_left_for_the_server_to_forget_and_a_new_one_started() {
        let (now, mut fresh) = (Instant::now(), ids());
        let mut batch = Batch::new("b0".into(), 2, now);
        admit(&mut batch, 1, now, &mut fresh);
        batch.answer(Answer::Stored { through: 1 });
        let soon = admit(&mut batch, 2, now + Duration::from_secs(1), &mut fresh);
        assert_eq!((batch.id.as_str(), soon), ("b0", (2, Operation::Append)));
        batch.answer(Answer::Stored { through: 2 });
        let later = admit(&mut batch, 3, now + Duration::from_secs(7), &mut fresh);
        assert_eq!((batch.id.as_str(), later), ("b1", (1, Operation::Start)));
    }
}
