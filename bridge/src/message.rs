//! The message as it travels through a bridge, whatever the protocols at either end, and the
//! headers the bridge itself reads and writes.

/// Stable id of a message across retries and hops; targets that can deduplicate use it.
pub const MESSAGE_ID_HEADER: &str = "oms-message-id";
/// The message key, for protocols without a key of their own (NATS).
pub const KEY_HEADER: &str = "oms-key";
/// NATS JetStream's deduplication header, set to the message id.
pub const NATS_MSG_ID_HEADER: &str = "Nats-Msg-Id";

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
}

impl Message {
    /// The id a message keeps for its life: the one it arrived with, else `<source>/<lane>/<position>`
    /// (queue, partition, offset or stream sequence), which a redelivery reproduces exactly.
    #[must_use]
    pub fn stable_id(existing: Option<&str>, source: &str, lane: i64, position: u64) -> String {
        existing.map_or_else(|| format!("{source}/{lane}/{position}"), str::to_owned)
    }
}

/// Splits the bridge's own headers from the application's: returns (id, key, application headers).
#[must_use]
pub fn take_bridge_headers(headers: HeaderList) -> (Option<String>, Option<Vec<u8>>, HeaderList) {
    let mut id = None;
    let mut key = None;
    let mut rest = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(MESSAGE_ID_HEADER) {
            id = String::from_utf8(value).ok();
        } else if name.eq_ignore_ascii_case(KEY_HEADER) {
            key = Some(value);
        } else if !name.eq_ignore_ascii_case(NATS_MSG_ID_HEADER) {
            rest.push((name, value));
        }
    }
    (id, key, rest)
}

/// Whether a header value can travel as a NATS header (text, no line breaks).
#[must_use]
pub fn is_text_header_value(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|v| !v.contains(['\r', '\n']))
}

#[cfg(test)]
mod tests {
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
        ];
        let (id, key, rest) = take_bridge_headers(headers);
        assert_eq!(id.as_deref(), Some("m1"));
        assert_eq!(key.as_deref(), Some(&b"k"[..]));
        assert_eq!(rest, vec![("region".to_owned(), b"eu".to_vec())]);
    }

    #[test]
    fn binary_or_multiline_values_are_not_nats_header_text() {
        assert!(is_text_header_value(b"eu-west"));
        assert!(!is_text_header_value(b"a\r\nb"));
        assert!(!is_text_header_value(&[0xff, 0xfe]));
    }
}
