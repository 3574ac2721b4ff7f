//! The message as it travels through a bridge, whatever the protocols at either end, and the
//! headers the bridge itself reads and writes.

/// Stable id of a message across retries and hops; targets that can deduplicate use it.
pub const MESSAGE_ID_HEADER: &str = "oms-message-id";

/// Payload bytes a worker's window may hold, whatever `inFlight` says: a window of large messages
/// stops reading here rather than holding `inFlight` times their size in memory. (Here, beside the
/// message, so that the gateway can bound a stream by it without depending on the pipeline.)
pub const MAX_WINDOW_BYTES: usize = 64 << 20;
/// The message key, for protocols without a key of their own (NATS).
pub const KEY_HEADER: &str = "oms-key";
/// NATS JetStream's deduplication header, set to the message id.
pub const NATS_MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// The access points a message has come from, comma-separated: a bridge never writes a message
/// back to one of them, so two bridges A->B and B->A run without echo.
pub const PROVENANCE_HEADER: &str = "oms-provenance";

/// Headers in order, as name and raw value.
pub type HeaderList = Vec<(String, Vec<u8>)>;

/// One message between a source and a sink.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Ordering and partitioning key, if any.
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Application headers in order; names may repeat. The bridge's own headers are not here.
    pub headers: HeaderList,
    /// Milliseconds since the epoch at which the source received the message, if it knows.
    pub timestamp_ms: Option<i64>,
    /// The stable id (`oms-message-id`).
    pub id: String,
    /// Access points the message has passed (`oms-provenance`), oldest first.
    pub provenance: Vec<String>,
}

impl Message {
    /// The provenance header value after this hop through `source` (its access point).
    #[must_use]
    pub fn provenance_after(&self, source: Option<&str>) -> Option<String> {
        let mut hops = self.provenance.clone();
        if let Some(source) = source
            && !hops.iter().any(|h| h == source)
        {
            hops.push(source.to_owned());
        }
        (!hops.is_empty()).then(|| hops.join(","))
    }
}

impl oms_bridge_config::filter::Fields for Message {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

/// How a source names the messages that arrive without an id of their own (no `oms-message-id`
/// header, no AMQP `message-id`). The id must never be one an earlier, different message had:
/// targets that deduplicate (JetStream's `Nats-Msg-Id` window, the gateway's window) would drop
/// the new message as a repeat while the source is acknowledged, a silent loss.
///
/// - Positional: the source keeps positions across restarts (Kafka partition and offset, JetStream
///   stream sequence), so `<origin>/<lane>/<position>` is the same for every delivery of a message
///   and a redelivery is dropped by such targets.
/// - Per delivery: the source's numbers restart with each connection (AMQP delivery tags, the
///   count of an MQTT session), so a random epoch drawn once per connection goes into the id,
///   `<origin>/<lane>@<epoch>/<number>`: a redelivery gets a new id and arrives as a duplicate,
///   never in place of another message.
///
/// `<origin>` is `<access point>/<queue>` when the worker knows its source's access point (the
/// operator always fills it), else `<queue>`: two bridges from same-named queues on different
/// brokers into one target never share ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageIds {
    origin: String,
    epoch: Option<u64>,
}

impl MessageIds {
    /// Ids from positions that survive restarts.
    #[must_use]
    pub fn positional(access_point: Option<&str>, queue: &str) -> Self {
        Self { origin: origin(access_point, queue), epoch: None }
    }

    /// Ids from numbers that restart with the connection: call once per connection.
    #[must_use]
    pub fn per_delivery(access_point: Option<&str>, queue: &str) -> Self {
        Self { origin: origin(access_point, queue), epoch: Some(random_epoch()) }
    }

    /// The id a message keeps: the one it arrived with (if not empty), else its own from `lane`
    /// (partition) and `position` (offset, stream sequence, delivery number).
    #[must_use]
    pub fn id(&self, existing: Option<String>, lane: i64, position: u64) -> String {
        match (existing.filter(|id| !id.is_empty()), self.epoch) {
            (Some(id), _) => id,
            (None, None) => format!("{}/{lane}/{position}", self.origin),
            (None, Some(epoch)) => format!("{}/{lane}@{epoch:016x}/{position}", self.origin),
        }
    }

    /// The id a message keeps from a source that names each message itself, the same name on
    /// every delivery (RocketMQ's message id): the one it arrived with, else `<origin>/<name>`.
    #[must_use]
    pub fn id_named(&self, existing: Option<String>, name: &str) -> String {
        existing.filter(|id| !id.is_empty()).unwrap_or_else(|| format!("{}/{name}", self.origin))
    }
}

fn origin(access_point: Option<&str>, queue: &str) -> String {
    access_point.map_or_else(|| queue.to_owned(), |ap| format!("{ap}/{queue}"))
}

/// 64 random bits from the OS; should it ever fail, the clock's nanoseconds and the process id,
/// which no earlier connection of this or another worker had either.
fn random_epoch() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        // Truncation keeps the fast-changing low bits, which is all that matters here.
        #[allow(clippy::cast_possible_truncation)]
        let low = nanos as u64;
        low ^ (u64::from(std::process::id()) << 32)
    })
}

/// What the bridge itself reads from a message's headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BridgeHeaders {
    pub id: Option<String>,
    pub key: Option<Vec<u8>>,
    pub provenance: Vec<String>,
}

/// Splits the bridge's own headers from the application's.
#[must_use]
pub fn take_bridge_headers(headers: HeaderList) -> (BridgeHeaders, HeaderList) {
    let mut own = BridgeHeaders::default();
    let mut rest = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(MESSAGE_ID_HEADER) {
            own.id = String::from_utf8(value).ok();
        } else if name.eq_ignore_ascii_case(KEY_HEADER) {
            own.key = Some(value);
        } else if name.eq_ignore_ascii_case(PROVENANCE_HEADER) {
            let text = String::from_utf8_lossy(&value);
            own.provenance = text.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_owned).collect();
        } else if !name.eq_ignore_ascii_case(NATS_MSG_ID_HEADER) {
            rest.push((name, value));
        }
    }
    (own, rest)
}

/// Whether a header value can travel as a NATS header (text, no line breaks).
#[must_use]
pub fn is_text_header_value(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|v| !v.contains(['\r', '\n']))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_existing_id_is_kept_and_a_positional_one_names_access_point_queue_lane_and_position() {
        let ids = MessageIds::positional(Some("acme/orders-kafka"), "orders");
        assert_eq!(ids.id(Some("upstream-1".into()), 3, 42), "upstream-1");
        assert_eq!(ids.id(None, 3, 42), "acme/orders-kafka/orders/3/42");
        assert_eq!(ids.id(Some(String::new()), 3, 42), "acme/orders-kafka/orders/3/42", "an empty id is none");
        assert_eq!(MessageIds::positional(None, "orders").id(None, 0, 7), "orders/0/7");
    }

    #[test]
    fn a_positional_id_is_the_same_for_every_delivery_of_a_message() {
        let (before, after) = (MessageIds::positional(None, "q"), MessageIds::positional(None, "q"));
        assert_eq!(before.id(None, 1, 9), after.id(None, 1, 9), "a restarted worker names it the same");
    }

    #[test]
    fn delivery_numbers_of_two_connections_never_give_the_same_id() {
        // Delivery tag 1 on the first channel and tag 1 on the next are different messages.
        let (first, second) = (MessageIds::per_delivery(None, "q"), MessageIds::per_delivery(None, "q"));
        assert_ne!(first.id(None, 0, 1), second.id(None, 0, 1));
        assert_eq!(first.id(None, 0, 1), first.id(None, 0, 1), "one connection names one delivery once");
        assert!(first.id(None, 0, 1).starts_with("q/0@"), "{}", first.id(None, 0, 1));
        assert_eq!(first.id(Some("producer-7".into()), 0, 1), "producer-7", "the producer's own id wins");
    }

    #[test]
    fn same_named_queues_of_two_access_points_never_share_an_id() {
        let a = MessageIds::positional(Some("acme/kafka-eu"), "orders");
        let b = MessageIds::positional(Some("acme/kafka-us"), "orders");
        assert_ne!(a.id(None, 0, 5), b.id(None, 0, 5));
    }

    #[test]
    fn bridge_headers_are_separated_from_application_headers() {
        let headers = vec![
            ("oms-message-id".to_owned(), b"m1".to_vec()),
            ("region".to_owned(), b"eu".to_vec()),
            ("OMS-KEY".to_owned(), b"k".to_vec()),
            ("Nats-Msg-Id".to_owned(), b"m1".to_vec()),
            ("oms-provenance".to_owned(), b"acme/a, acme/b".to_vec()),
        ];
        let (own, rest) = take_bridge_headers(headers);
        assert_eq!(own.id.as_deref(), Some("m1"));
        assert_eq!(own.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(own.provenance, vec!["acme/a".to_owned(), "acme/b".to_owned()]);
        assert_eq!(rest, vec![("region".to_owned(), b"eu".to_vec())]);
    }

    #[test]
    fn provenance_grows_by_the_source_once() {
        let message = Message { provenance: vec!["acme/a".into()], ..Message::default() };
        assert_eq!(message.provenance_after(Some("acme/b")).as_deref(), Some("acme/a,acme/b"));
        assert_eq!(message.provenance_after(Some("acme/a")).as_deref(), Some("acme/a"));
        assert_eq!(Message::default().provenance_after(None), None);
    }

    #[test]
    fn binary_or_multiline_values_are_not_nats_header_text() {
        assert!(is_text_header_value(b"eu-west"));
        assert!(!is_text_header_value(b"a\r\nb"));
        assert!(!is_text_header_value(&[0xff, 0xfe]));
    }

    /// Header names: the bridge's own (in any case) mixed with application names.
    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(MESSAGE_ID_HEADER.to_owned()),
            Just(KEY_HEADER.to_uppercase()),
            Just(PROVENANCE_HEADER.to_owned()),
            Just(NATS_MSG_ID_HEADER.to_lowercase()),
            "[A-Za-z][A-Za-z0-9_.-]{0,12}",
        ]
    }

    fn is_bridge_header(name: &str) -> bool {
        [MESSAGE_ID_HEADER, KEY_HEADER, PROVENANCE_HEADER, NATS_MSG_ID_HEADER]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    }

    proptest! {
        // Fuzz of the header mapping: application headers come out complete and in order, the
        // bridge's never leak into them, and no input panics.
        #[test]
        fn application_headers_pass_through_in_order(
            headers in proptest::collection::vec((header_name(), proptest::collection::vec(any::<u8>(), 0..16)), 0..12)
        ) {
            let expected: HeaderList = headers.iter().filter(|(n, _)| !is_bridge_header(n)).cloned().collect();
            let (own, rest) = take_bridge_headers(headers.clone());
            prop_assert_eq!(rest, expected);
            let last_id = headers.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case(MESSAGE_ID_HEADER));
            prop_assert_eq!(own.id, last_id.and_then(|(_, v)| String::from_utf8(v.clone()).ok()));
        }

        // Provenance written by one hop reads back as the same list at the next.
        #[test]
        fn provenance_survives_a_hop(hops in proptest::collection::vec("[a-z]{1,6}/[a-z]{1,6}", 0..5), source in "[a-z]{1,6}/[a-z]{1,6}") {
            let message = Message { provenance: hops.clone(), ..Message::default() };
            let written = message.provenance_after(Some(&source)).expect("a hop was added");
            let (own, _) = take_bridge_headers(vec![(PROVENANCE_HEADER.to_owned(), written.into_bytes())]);
            let mut want = hops.clone();
            if !want.contains(&source) {
                want.push(source);
            }
            prop_assert_eq!(own.provenance, want);
        }
    }
}
