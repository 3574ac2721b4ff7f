//! Kafka's side of the probe: the requests it sends (SaslHandshake v1, SaslAuthenticate v1,
//! Metadata v8, all in Kafka 4's baseline) and what it reads back, as pure byte codecs; the
//! operator's requests about features, about the brokers and their partitions, and about the
//! controller quorum are in [`features`], [`cluster`] and [`quorum`].
//!
//! A broker is ready when, after a SCRAM login, the Metadata it answers lists the broker itself,
//! under its node id and advertised address: a KRaft broker lists only unfenced brokers, so a
//! broker that has not caught up with the metadata log, or has been fenced, fails.

pub mod cluster;
pub mod features;
pub mod quorum;

use std::fmt;

const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
const METADATA: i16 = 3;
const CLIENT_ID: &[u8] = b"oms-probe";

/// A request: length, header v1 (api key, version, correlation id, client id), body.
#[must_use]
pub fn request(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(18 + CLIENT_ID.len() + body.len());
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    put_string(&mut frame, CLIENT_ID);
    frame.extend_from_slice(body);
    let length = u32::try_from(frame.len() - 4).unwrap_or(u32::MAX);
    frame[..4].copy_from_slice(&length.to_be_bytes());
    frame
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An unsigned varint: seven bits a byte, low bits first (the flexible versions' lengths).
fn put_uvarint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push(u8::try_from(value & 0x7f).unwrap_or(0) | 0x80);
        value >>= 7;
    }
    out.push(u8::try_from(value).unwrap_or(0));
}

/// A flexible version's string: its length plus one as a varint.
fn put_compact_string(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uvarint(out, u32::try_from(bytes.len() + 1).unwrap_or(u32::MAX));
    out.extend_from_slice(bytes);
}

/// A flexible version's array of broker ids.
fn put_compact_ids(out: &mut Vec<u8>, ids: &[i32]) {
    put_uvarint(out, u32::try_from(ids.len() + 1).unwrap_or(u32::MAX));
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
}

/// No tagged field: what flexible versions end every structure with.
const NO_TAGGED_FIELDS: u8 = 0;

/// A request of a flexible version: header v2 is header v1 and its (empty) tagged fields.
fn request_flexible(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut tagged = Vec::with_capacity(1 + body.len());
    tagged.push(NO_TAGGED_FIELDS);
    tagged.extend_from_slice(body);
    request(api_key, version, correlation_id, &tagged)
}

/// ApiVersions v0: the one request every Kafka version answers before authentication (the
/// operator's probe of external brokers sends it).
#[must_use]
pub fn api_versions(correlation_id: i32) -> Vec<u8> {
    request(API_VERSIONS, 0, correlation_id, &[])
}

#[must_use]
pub fn sasl_handshake(correlation_id: i32, mechanism: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_string(&mut body, mechanism.as_bytes());
    request(SASL_HANDSHAKE, 1, correlation_id, &body)
}

#[must_use]
pub fn sasl_authenticate(correlation_id: i32, auth_bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + auth_bytes.len());
    body.extend_from_slice(&u32::try_from(auth_bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    body.extend_from_slice(auth_bytes);
    request(SASL_AUTHENTICATE, 1, correlation_id, &body)
}

/// Metadata of no topic (an empty array, not null, which would mean all of them): the brokers
/// and the cluster only.
#[must_use]
pub fn metadata(correlation_id: i32) -> Vec<u8> {
    // topics: [], allow_auto_topic_creation, include_cluster_/topic_authorized_operations.
    request(METADATA, 8, correlation_id, &[0, 0, 0, 0, 0, 0, 0])
}

#[derive(Debug, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed Kafka response: {}", self.0)
    }
}

/// Reads a response body (after its length) field by field.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError(format!("{what}: {n} bytes wanted, {} left", self.bytes.len())));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn i16(&mut self, what: &str) -> Result<i16, DecodeError> {
        self.take(2, what).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        self.take(4, what).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.take(8, what)?);
        Ok(i64::from_be_bytes(bytes))
    }

    /// A nullable string: length -1 is null.
    fn string(&mut self, what: &str) -> Result<Option<String>, DecodeError> {
        let length = self.i16(what)?;
        let Ok(length) = usize::try_from(length) else { return Ok(None) };
        Ok(Some(String::from_utf8_lossy(self.take(length, what)?).into_owned()))
    }

    /// Nullable bytes: length -1 is null, read as empty.
    fn bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let length = self.i32(what)?;
        match usize::try_from(length) {
            Ok(length) => self.take(length, what),
            Err(_) => Ok(&[]),
        }
    }

    fn count(&mut self, what: &str) -> Result<usize, DecodeError> {
        Ok(usize::try_from(self.i32(what)?).unwrap_or(0))
    }

    fn uvarint(&mut self, what: &str) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1, what)?[0];
            value |= u32::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError(format!("{what}: a varint longer than 5 bytes")))
    }

    /// A flexible version's array length or nullable string length: the count plus one, 0 null.
    fn compact_count(&mut self, what: &str) -> Result<Option<usize>, DecodeError> {
        let stored = self.uvarint(what)?;
        Ok(stored.checked_sub(1).map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
    }

    fn compact_string(&mut self, what: &str) -> Result<Option<String>, DecodeError> {
        let Some(length) = self.compact_count(what)? else { return Ok(None) };
        Ok(Some(String::from_utf8_lossy(self.take(length, what)?).into_owned()))
    }

    fn compact_ids(&mut self, what: &str) -> Result<Vec<i32>, DecodeError> {
        (0..self.compact_count(what)?.unwrap_or(0)).map(|_| self.i32(what)).collect()
    }

    /// The start of a flexible answer that has a top-level error: the response header's tagged
    /// fields, the throttle time, and the error code and message, if there is an error.
    fn flexible_error(&mut self) -> Result<Option<(i16, String)>, DecodeError> {
        self.tagged_fields("response header's tagged fields")?;
        self.i32("throttle time")?;
        let error = self.i16("error code")?;
        let message = self.compact_string("error message")?.unwrap_or_default();
        Ok((error != 0).then_some((error, message)))
    }

    /// A structure's tagged fields, each as its tag and its bytes.
    fn tagged_fields(&mut self, what: &str) -> Result<Vec<(u32, &'a [u8])>, DecodeError> {
        (0..self.uvarint(what)?)
            .map(|_| {
                let tag = self.uvarint(what)?;
                let size = usize::try_from(self.uvarint(what)?).unwrap_or(usize::MAX);
                Ok((tag, self.take(size, what)?))
            })
            .collect()
    }
}

/// The correlation id (response header v0) and the body after it.
pub fn split_header(response: &[u8]) -> Result<(i32, &[u8]), DecodeError> {
    let mut reader = Reader { bytes: response };
    let correlation_id = reader.i32("correlation id")?;
    Ok((correlation_id, reader.bytes))
}

/// SaslHandshake v1: the mechanisms the listener offers, or why it refused.
pub fn sasl_handshake_response(body: &[u8]) -> Result<Result<(), Vec<String>>, DecodeError> {
    let mut reader = Reader { bytes: body };
    let error = reader.i16("error code")?;
    let offered = (0..reader.count("mechanisms")?)
        .map(|_| reader.string("mechanism").map(Option::unwrap_or_default))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if error == 0 { Ok(()) } else { Err(offered) })
}

/// SaslAuthenticate v1: the server's SCRAM message, or its error code and message.
pub fn sasl_authenticate_response(body: &[u8]) -> Result<Result<String, String>, DecodeError> {
    let mut reader = Reader { bytes: body };
    let error = reader.i16("error code")?;
    let message = reader.string("error message")?;
    let auth_bytes = reader.bytes("auth bytes")?;
    Ok(if error == 0 {
        Ok(String::from_utf8_lossy(auth_bytes).into_owned())
    } else {
        Err(format!("error {error}: {}", message.unwrap_or_default()))
    })
}

/// A broker as Metadata lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}:{}", self.node_id, self.host, self.port)
    }
}

/// Metadata v8's brokers (the rest of the response is not needed).
pub fn metadata_brokers(body: &[u8]) -> Result<Vec<Broker>, DecodeError> {
    let mut reader = Reader { bytes: body };
    reader.i32("throttle time")?;
    (0..reader.count("brokers")?)
        .map(|_| {
            let node_id = reader.i32("node id")?;
            let host = reader.string("host")?.unwrap_or_default();
            let port = reader.i32("port")?;
            reader.string("rack")?;
            Ok(Broker { node_id, host, port })
        })
        .collect()
}

/// Whether `me` is among the brokers listed: by node id, at its advertised address.
pub fn check_listed(brokers: &[Broker], me: &Broker) -> Result<(), String> {
    match brokers.iter().find(|b| b.node_id == me.node_id) {
        Some(listed) if listed == me => Ok(()),
        Some(listed) => Err(format!(
            "broker {} is listed at {}:{}, not {}:{}",
            me.node_id, listed.host, listed.port, me.host, me.port
        )),
        None => {
            let ids: Vec<String> = brokers.iter().map(|b| b.node_id.to_string()).collect();
            Err(format!(
                "broker {} is not among the brokers it serves as unfenced (listed: {})",
                me.node_id,
                if ids.is_empty() { "none".to_owned() } else { ids.join(", ") }
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(node_id: i32, host: &str) -> Broker {
        Broker { node_id, host: host.into(), port: 9092 }
    }

    /// A Metadata v8 response body as a broker writes it.
    fn metadata_body(brokers: &[Broker]) -> Vec<u8> {
        let mut body = 0i32.to_be_bytes().to_vec();
        body.extend_from_slice(&i32::try_from(brokers.len()).expect("count").to_be_bytes());
        for b in brokers {
            body.extend_from_slice(&b.node_id.to_be_bytes());
            put_string(&mut body, b.host.as_bytes());
            body.extend_from_slice(&b.port.to_be_bytes());
            body.extend_from_slice(&(-1i16).to_be_bytes()); // no rack
        }
        put_string(&mut body, b"cluster-id");
        body.extend_from_slice(&1i32.to_be_bytes()); // controller
        body.extend_from_slice(&0i32.to_be_bytes()); // topics
        body.extend_from_slice(&i32::MIN.to_be_bytes()); // authorized operations
        body
    }

    #[test]
    fn requests_carry_their_length_header_and_body() {
        let frame = sasl_handshake(7, "SCRAM-SHA-512");
        assert_eq!(&frame[..4], &u32::try_from(frame.len() - 4).expect("len").to_be_bytes());
        assert_eq!(&frame[4..12], &[0, 17, 0, 1, 0, 0, 0, 7]);
        assert_eq!(&frame[12..23], b"\x00\x09oms-probe");
        assert_eq!(&frame[23..], b"\x00\x0dSCRAM-SHA-512");
        let authenticate = sasl_authenticate(8, b"n,,n=u,r=x");
        assert_eq!(&authenticate[23..27], &10u32.to_be_bytes());
        assert_eq!(&api_versions(7)[4..12], &[0, 18, 0, 0, 0, 0, 0, 7]);
        let metadata = metadata(9);
        assert_eq!(&metadata[4..8], &[0, 3, 0, 8]);
        assert_eq!(&metadata[23..], &[0, 0, 0, 0, 0, 0, 0], "no topic, not all of them");
    }

    #[test]
    fn metadata_brokers_are_read_from_a_v8_response() {
        let listed = [broker(0, "kafka-0.k.ns.svc"), broker(1, "kafka-1.k.ns.svc")];
        assert_eq!(metadata_brokers(&metadata_body(&listed)), Ok(listed.to_vec()));
        assert!(metadata_brokers(&metadata_body(&listed)[..20]).is_err(), "a cut response is an error");
    }

    #[test]
    fn a_broker_is_ready_only_when_listed_under_its_id_at_its_address() {
        let me = broker(2, "kafka-2.k.ns.svc");
        assert_eq!(check_listed(&[broker(0, "a"), me.clone()], &me), Ok(()));
        assert_eq!(
            check_listed(&[broker(0, "a"), broker(1, "b")], &me),
            Err("broker 2 is not among the brokers it serves as unfenced (listed: 0, 1)".into())
        );
        assert_eq!(
            check_listed(&[broker(2, "elsewhere")], &me),
            Err("broker 2 is listed at elsewhere:9092, not kafka-2.k.ns.svc:9092".into())
        );
    }

    #[test]
    fn sasl_responses_give_the_servers_message_or_its_error() {
        let mut ok = 0i16.to_be_bytes().to_vec();
        ok.extend_from_slice(&(-1i16).to_be_bytes());
        ok.extend_from_slice(&3i32.to_be_bytes());
        ok.extend_from_slice(b"r=x");
        ok.extend_from_slice(&0i64.to_be_bytes());
        assert_eq!(sasl_authenticate_response(&ok), Ok(Ok("r=x".into())));
        let mut refused = 58i16.to_be_bytes().to_vec();
        put_string(&mut refused, b"Authentication failed");
        refused.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(sasl_authenticate_response(&refused), Ok(Err("error 58: Authentication failed".into())));
        let mut handshake = 33i16.to_be_bytes().to_vec();
        handshake.extend_from_slice(&1i32.to_be_bytes());
        put_string(&mut handshake, b"PLAIN");
        assert_eq!(sasl_handshake_response(&handshake), Ok(Err(vec!["PLAIN".to_owned()])));
    }
}
