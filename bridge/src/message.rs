//! The message as it travels through a bridge, whatever the protocols at either end, and the
//! headers the bridge itself reads and writes.

/// Stable id of a message across retries and hops; targets that can deduplicate use it.
pub const MESSAGE_ID_HEADER: &str = "oms-message-id";
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
    /// The id a message keeps for its life: the one it arrived with, else `<source>/<lane>/<position>`
    /// (queue, partition, offset or stream sequence), which a redelivery reproduces exactly.
    #[must_use]
    pub fn stable_id(existing: Option<&str>, source: &str, lane: i64, position: u64) -> String {
        existing.map_or_else(|| format!("{source}/{lane}/{position}"), str::to_owned)
    }

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
    fn an_existing_id_is_kept_and_a_new_one_is_positional() {
        assert_eq!(Message::stable_id(Some("upstream-1"), "orders", 3, 42), "upstream-1");
        assert_eq!(Message::stable_id(None, "orders", 3, 42), "orders/3/42");
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
