//! The gateway: the one mTLS port a cloud exposes to bridges of other clouds
//! (`proto/gateway.proto`). It authenticates each peer by its certificate, lets it touch only the
//! queues of its tenant, and reads and writes through the same connectors as the worker.

pub mod authz;
pub mod server;
pub mod tls;

use std::collections::{HashSet, VecDeque};

use futures::Stream;
use tokio::sync::mpsc;

use crate::message::Message;

/// The generated gRPC code of `proto/gateway.proto`.
#[allow(clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("oms.gateway.v1");
}

/// Messages a peer may have in flight on one stream when it does not say its window: above the
/// worker's default window (1,000), so such a route runs at the worker's window.
pub const STREAM_CREDIT: u32 = 1024;
/// The most credit a publish stream gets, whatever its peer asks: the largest worker window.
const MAX_STREAM_CREDIT: u32 = 100_000;
/// Payload bytes a publish stream may have in flight: the worker's byte bound, which its window
/// may pass by one message (at most tonic's default 4 MiB).
pub const MAX_STREAM_BYTES: usize = crate::message::MAX_WINDOW_BYTES + (4 << 20);

/// HTTP/2 flow-control windows of a gateway connection and of each stream, fixed on both ends.
/// Large enough for a long link at full rate (8 MiB per 20 ms is 400 MB/s) from the first byte,
/// where adaptive windows start at 64 KiB; and h2 lets a reader buffer small DATA frames worth
/// half its connection window before it closes the connection (`too_many_data_frames`), which at
/// 64 KiB a burst of single small messages across a 40 ms link did. Credit, not these windows,
/// bounds what is in flight.
pub const CONNECTION_WINDOW: u32 = 32 << 20;
pub const STREAM_WINDOW: u32 = 16 << 20;

/// Encoded bytes a batch of messages may hold, well under tonic's 4 MiB decoding limit (a single
/// larger message still goes, alone).
pub const BATCH_BYTES: usize = 1 << 20;

/// What `items` holds each time the stream is polled, as one batch of at most `max_bytes` by
/// `bytes` (an item larger than that alone): one item per batch when they come one at a time,
/// few large batches under load. A frame per item let bursts on a long link pile up thousands of
/// small HTTP/2 DATA frames at the reader, which h2 answers by closing the connection
/// (`too_many_data_frames`).
pub fn batches<T>(items: mpsc::Receiver<T>, bytes: fn(&T) -> usize, max_bytes: usize) -> impl Stream<Item = Vec<T>> {
    futures::stream::unfold((items, None), move |(mut items, carried): (mpsc::Receiver<T>, Option<T>)| async move {
        let first = match carried {
            Some(item) => item,
            None => items.recv().await?,
        };
        let mut size = bytes(&first);
        let mut batch = vec![first];
        let mut carry = None;
        while let Ok(item) = items.try_recv() {
            let more = bytes(&item);
            if size + more > max_bytes {
                carry = Some(item);
                break;
            }
            size += more;
            batch.push(item);
        }
        Some((batch, (items, carry)))
    })
}

/// A batch of replies as frames: the items up to the first error in one frame (`frame` wraps
/// them), then that error, which ends the stream.
pub fn frames_of<T, F>(batch: Vec<Result<T, tonic::Status>>, frame: fn(Vec<T>) -> F) -> Vec<Result<F, tonic::Status>> {
    let mut items = Vec::with_capacity(batch.len());
    let mut error = None;
    for item in batch {
        match item {
            Ok(item) => items.push(item),
            Err(status) => {
                error = Some(status);
                break;
            }
        }
    }
    let frames = (!items.is_empty()).then(|| Ok(frame(items)));
    frames.into_iter().chain(error.map(Err)).collect()
}

/// The credit a publish stream is granted for the window its peer asked for (0: it did not say):
/// a route through the gateway then has the worker's whole window in flight, which a link with a
/// long round trip needs.
#[must_use]
pub fn publish_credit(asked: u32) -> u32 {
    if asked == 0 { STREAM_CREDIT } else { asked.min(MAX_STREAM_CREDIT) }
}

impl From<&Message> for proto::Message {
    fn from(message: &Message) -> Self {
        Self {
            id: message.id.clone(),
            key: message.key.clone(),
            headers: message
                .headers
                .iter()
                .map(|(name, value)| proto::Header { name: name.clone(), value: value.clone() })
                .collect(),
            payload: message.payload.clone(),
            timestamp_ms: message.timestamp_ms,
            provenance: message.provenance.clone(),
        }
    }
}

/// A message off the wire. The id must be there: the dedup window and the targets key on it.
pub fn from_wire(message: proto::Message) -> Result<Message, String> {
    if message.id.is_empty() {
        return Err("the message has no id".into());
    }
    Ok(Message {
        key: message.key,
        payload: message.payload,
        headers: message.headers.into_iter().map(|h| (h.name, h.value)).collect(),
        timestamp_ms: message.timestamp_ms,
        id: message.id,
        provenance: message.provenance,
    })
}

/// The ids most recently written, per queue, up to a fixed number: a resend of any of them after
/// a reconnect is answered as a duplicate without writing again.
pub struct DedupWindow {
    capacity: usize,
    order: VecDeque<(String, String)>,
    seen: HashSet<(String, String)>,
}

impl DedupWindow {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self { capacity, order: VecDeque::with_capacity(capacity), seen: HashSet::with_capacity(capacity) }
    }

    #[must_use]
    pub fn contains(&self, queue: &str, id: &str) -> bool {
        self.seen.contains(&(queue.to_owned(), id.to_owned()))
    }

    /// Remembers `id` for `queue`, forgetting the oldest id when full.
    pub fn insert(&mut self, queue: &str, id: &str) {
        let entry = (queue.to_owned(), id.to_owned());
        if self.capacity == 0 || !self.seen.insert(entry.clone()) {
            return;
        }
        self.order.push_back(entry);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;

    #[test]
    fn a_publish_stream_gets_the_window_its_peer_asks_for_within_the_limit() {
        assert_eq!(publish_credit(0), STREAM_CREDIT, "a peer that does not say gets the default");
        assert_eq!(publish_credit(4000), 4000);
        assert_eq!(publish_credit(u32::MAX), MAX_STREAM_CREDIT);
    }

    #[test]
    fn the_window_forgets_the_oldest_id_first() {
        let mut window = DedupWindow::new(2);
        window.insert("q", "a");
        window.insert("q", "b");
        window.insert("q", "a");
        assert!(window.contains("q", "a") && window.contains("q", "b"));
        window.insert("q", "c");
        assert!(!window.contains("q", "a"), "the oldest went");
        assert!(window.contains("q", "b") && window.contains("q", "c"));
        assert!(!window.contains("other", "b"), "ids are per queue");
    }

    #[test]
    fn a_message_survives_the_wire() {
        let message = Message {
            key: Some(b"k".to_vec()),
            payload: b"p".to_vec(),
            headers: vec![("h".into(), vec![0, 255])],
            timestamp_ms: Some(7),
            id: "q/0/1".into(),
            provenance: vec!["acme/a".into()],
        };
        let bytes = proto::Message::from(&message).encode_to_vec();
        let decoded = proto::Message::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(from_wire(decoded).expect("valid"), message);
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_ready_up_to_its_bytes_and_keeps_the_rest_for_the_next() {
        use futures::StreamExt;
        let (items, received) = mpsc::channel(16);
        let mut batches = Box::pin(batches(received, |size: &usize| *size, 10));
        items.send(4).await.expect("open");
        assert_eq!(batches.next().await, Some(vec![4]), "one item alone when that is all there is");
        for size in [4, 4, 4, 20, 1] {
            items.send(size).await.expect("open");
        }
        assert_eq!(batches.next().await, Some(vec![4, 4]), "a third 4 would pass 10 bytes");
        assert_eq!(batches.next().await, Some(vec![4]), "the item that did not fit starts the next batch");
        assert_eq!(batches.next().await, Some(vec![20]), "an item larger than a batch goes alone");
        assert_eq!(batches.next().await, Some(vec![1]));
        drop(items);
        assert_eq!(batches.next().await, None, "the stream ends with the channel");
    }

    #[test]
    fn replies_up_to_an_error_make_one_frame_and_the_error_ends_the_batch() {
        let frame = |items: Vec<u32>| items.iter().sum::<u32>();
        let sums = |batch| frames_of(batch, frame).into_iter().map(|f| f.map_err(|s| s.code())).collect::<Vec<_>>();
        assert_eq!(sums(vec![Ok(1), Ok(2)]), vec![Ok(3)]);
        let failed = || tonic::Status::unavailable("down");
        assert_eq!(sums(vec![Ok(1), Err(failed()), Ok(5)]), vec![Ok(1), Err(tonic::Code::Unavailable)]);
        assert_eq!(sums(vec![Err(failed())]), vec![Err(tonic::Code::Unavailable)], "no empty frame before an error");
    }

    proptest! {
        // Fuzz of the gateway's decoding: arbitrary bytes as any frame decode or fail, never panic;
        // a decoded message without an id is refused.
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(frame) = proto::PublishFrame::decode(bytes.as_slice())
                && let Some(proto::publish_frame::Frame::Messages(batch)) = frame.frame
            {
                for message in batch.messages {
                    let empty = message.id.is_empty();
                    prop_assert_eq!(from_wire(message).is_err(), empty);
                }
            }
            let _ = proto::ConsumeFrame::decode(bytes.as_slice());
            let _ = proto::PublishReply::decode(bytes.as_slice());
            let _ = proto::ConsumeReply::decode(bytes.as_slice());
        }
    }
}
