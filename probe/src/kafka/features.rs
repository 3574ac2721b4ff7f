//! The operator's feature requests: which `metadata.version` a broker supports and the cluster
//! has finalized (ApiVersions v3, answered before any login), and the request that finalizes a
//! new one (UpdateFeatures v1, which any broker forwards to the active controller). Neither is in
//! librdkafka. The controller checks a new level against every registered broker and controller
//! and refuses it whole if one of them does not support it.

use super::{DecodeError, NO_TAGGED_FIELDS, Reader, put_compact_string, put_uvarint, request_flexible};

const API_VERSIONS: i16 = 18;
const UPDATE_FEATURES: i16 = 57;
/// The feature whose level says which metadata records the cluster writes.
pub const METADATA_VERSION: &str = "metadata.version";
/// UpdateFeatures' upgrade type: raise the level (others downgrade, safely or not).
const UPGRADE: i8 = 1;
/// ApiVersions' tagged fields of the response body.
const SUPPORTED_FEATURES: u32 = 0;
const FINALIZED_FEATURES: u32 = 2;

/// ApiVersions v3 (header v2): from v3 the answer carries the features. The client's name and
/// version must be made of letters, digits, `-` and `.`.
#[must_use]
pub fn api_versions_v3(correlation_id: i32, client: &str, client_version: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_compact_string(&mut body, client.as_bytes());
    put_compact_string(&mut body, client_version.as_bytes());
    body.push(NO_TAGGED_FIELDS);
    // ApiVersions keeps request header v1's client id: request_flexible adds the tagged fields.
    request_flexible(API_VERSIONS, 3, correlation_id, &body)
}

/// UpdateFeatures v1 (header v2): raise `feature` to `level`, or with `validate_only` only check
/// that the controller would.
#[must_use]
pub fn update_features(
    correlation_id: i32,
    feature: &str,
    level: i16,
    validate_only: bool,
    timeout_ms: i32,
) -> Vec<u8> {
    let mut body = timeout_ms.to_be_bytes().to_vec();
    put_uvarint(&mut body, 2); // one update
    put_compact_string(&mut body, feature.as_bytes());
    body.extend_from_slice(&level.to_be_bytes());
    body.extend_from_slice(&UPGRADE.to_be_bytes());
    body.push(NO_TAGGED_FIELDS);
    body.push(u8::from(validate_only));
    body.push(NO_TAGGED_FIELDS);
    request_flexible(UPDATE_FEATURES, 1, correlation_id, &body)
}

/// A broker's `metadata.version`: the highest level it supports, and the cluster's finalized
/// level as it last heard it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetadataVersion {
    pub supported_max: Option<i16>,
    pub finalized: Option<i16>,
}

/// ApiVersions v3's answer body (after the correlation id: its response header stays v0): the
/// `metadata.version` levels, or the broker's error code.
pub fn api_versions_metadata_version(body: &[u8]) -> Result<Result<MetadataVersion, i16>, DecodeError> {
    let mut reader = Reader { bytes: body };
    let error = reader.i16("error code")?;
    if error != 0 {
        return Ok(Err(error));
    }
    for _ in 0..reader.compact_count("api keys")?.unwrap_or(0) {
        reader.take(6, "api key and versions")?;
        reader.tagged_fields("api key's tagged fields")?;
    }
    reader.i32("throttle time")?;
    let mut levels = MetadataVersion { supported_max: None, finalized: None };
    for (tag, bytes) in reader.tagged_fields("tagged fields")? {
        let mut field = Reader { bytes };
        match tag {
            SUPPORTED_FEATURES => {
                for (name, _min, max) in features(&mut field)? {
                    if name == METADATA_VERSION {
                        levels.supported_max = Some(max);
                    }
                }
            }
            FINALIZED_FEATURES => {
                // Finalized levels are written max first.
                for (name, max, _min) in features(&mut field)? {
                    if name == METADATA_VERSION {
                        levels.finalized = Some(max);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Ok(levels))
}

/// An array of features: each a name and two levels, in the order written.
fn features(reader: &mut Reader<'_>) -> Result<Vec<(String, i16, i16)>, DecodeError> {
    (0..reader.compact_count("features")?.unwrap_or(0))
        .map(|_| {
            let name = reader.compact_string("feature name")?.unwrap_or_default();
            let first = reader.i16("feature level")?;
            let second = reader.i16("feature level")?;
            reader.tagged_fields("feature's tagged fields")?;
            Ok((name, first, second))
        })
        .collect()
}

/// UpdateFeatures v1's answer (after the correlation id; response header v1 adds tagged fields):
/// done, or the error code and the controller's message. Since Kafka 4.0 an update is applied
/// whole or not at all, and the top-level error says which.
pub fn update_features_response(answer: &[u8]) -> Result<Result<(), (i16, String)>, DecodeError> {
    let mut reader = Reader { bytes: answer };
    if let Some(refused) = reader.flexible_error()? {
        return Ok(Err(refused));
    }
    // Before 4.0 the result was per feature.
    for _ in 0..reader.compact_count("results")?.unwrap_or(0) {
        let feature = reader.compact_string("feature")?.unwrap_or_default();
        let error = reader.i16("error code")?;
        let message = reader.compact_string("error message")?.unwrap_or_default();
        reader.tagged_fields("result's tagged fields")?;
        if error != 0 {
            return Ok(Err((error, format!("{feature}: {message}"))));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::super::split_header;
    use super::*;

    /// An ApiVersions v3 answer body as a broker writes it, with `supported` and `finalized`
    /// levels of metadata.version and another feature beside each.
    fn api_versions_body(supported: Option<(i16, i16)>, finalized: Option<i16>) -> Vec<u8> {
        let mut body = 0i16.to_be_bytes().to_vec();
        put_uvarint(&mut body, 3); // two api keys
        for (key, min, max) in [(18i16, 0i16, 4i16), (57, 0, 2)] {
            for value in [key, min, max] {
                body.extend_from_slice(&value.to_be_bytes());
            }
            body.push(NO_TAGGED_FIELDS);
        }
        body.extend_from_slice(&0i32.to_be_bytes());
        let feature_array = |levels: &[(&str, i16, i16)]| {
            let mut array = Vec::new();
            put_uvarint(&mut array, u32::try_from(levels.len() + 1).expect("count"));
            for (name, first, second) in levels {
                put_compact_string(&mut array, name.as_bytes());
                array.extend_from_slice(&first.to_be_bytes());
                array.extend_from_slice(&second.to_be_bytes());
                array.push(NO_TAGGED_FIELDS);
            }
            array
        };
        let mut fields = vec![];
        if let Some((min, max)) = supported {
            fields.push((0, feature_array(&[("kraft.version", 0, 1), (METADATA_VERSION, min, max)])));
        }
        fields.push((1, 7i64.to_be_bytes().to_vec()));
        if let Some(level) = finalized {
            fields.push((2, feature_array(&[(METADATA_VERSION, level, 7), ("kraft.version", 0, 0)])));
        }
        fields.push((3, vec![0])); // ZkMigrationReady
        put_uvarint(&mut body, u32::try_from(fields.len()).expect("count"));
        for (tag, bytes) in fields {
            put_uvarint(&mut body, tag);
            put_uvarint(&mut body, u32::try_from(bytes.len()).expect("size"));
            body.extend_from_slice(&bytes);
        }
        body
    }

    #[test]
    fn varints_take_seven_bits_a_byte() {
        for (value, bytes) in
            [(0u32, vec![0u8]), (1, vec![1]), (127, vec![0x7f]), (128, vec![0x80, 1]), (300, vec![0xac, 2])]
        {
            let mut out = Vec::new();
            put_uvarint(&mut out, value);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(Reader { bytes: &bytes }.uvarint("v"), Ok(value));
        }
        assert!(Reader { bytes: &[0x80; 6] }.uvarint("v").is_err(), "six continuation bytes");
    }

    #[test]
    fn api_versions_v3_has_header_v2_and_the_clients_name() {
        let frame = api_versions_v3(5, "oms-operator", "0.1.0");
        assert_eq!(&frame[..4], &u32::try_from(frame.len() - 4).expect("len").to_be_bytes());
        assert_eq!(&frame[4..12], &[0, 18, 0, 3, 0, 0, 0, 5]);
        let mut rest = b"\x00\x09oms-probe\x00".to_vec();
        put_compact_string(&mut rest, b"oms-operator");
        put_compact_string(&mut rest, b"0.1.0");
        rest.push(0);
        assert_eq!(&frame[12..], &rest[..]);
    }

    #[test]
    fn update_features_asks_one_upgrade() {
        let frame = update_features(9, METADATA_VERSION, 27, false, 30_000);
        assert_eq!(&frame[4..12], &[0, 57, 0, 1, 0, 0, 0, 9]);
        let mut body = b"\x00\x09oms-probe\x00".to_vec();
        body.extend_from_slice(&30_000i32.to_be_bytes());
        body.push(2);
        put_compact_string(&mut body, b"metadata.version");
        body.extend_from_slice(&[0, 27, 1, 0, 0, 0]);
        assert_eq!(&frame[12..], &body[..]);
        assert_eq!(update_features(9, METADATA_VERSION, 27, true, 30_000)[frame.len() - 2], 1, "validate only");
    }

    #[test]
    fn metadata_version_is_read_from_the_tagged_fields() {
        let levels = |supported, finalized| api_versions_metadata_version(&api_versions_body(supported, finalized));
        assert_eq!(
            levels(Some((7, 27)), Some(25)),
            Ok(Ok(MetadataVersion { supported_max: Some(27), finalized: Some(25) }))
        );
        assert_eq!(levels(None, None), Ok(Ok(MetadataVersion { supported_max: None, finalized: None })));
        let body = api_versions_body(Some((7, 27)), Some(25));
        assert!(api_versions_metadata_version(&body[..body.len() - 8]).is_err(), "a cut answer is an error");
        // An unsupported version is answered with an error and v0's body.
        let mut refused = 35i16.to_be_bytes().to_vec();
        refused.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(api_versions_metadata_version(&refused), Ok(Err(35)));
    }

    #[test]
    fn update_features_answers_give_the_controllers_refusal() {
        let answer = |error: i16, message: Option<&str>, results: &[(&str, i16)]| {
            let mut answer = 4i32.to_be_bytes().to_vec();
            answer.insert(0, NO_TAGGED_FIELDS);
            answer.extend_from_slice(&error.to_be_bytes());
            match message {
                Some(m) => put_compact_string(&mut answer, m.as_bytes()),
                None => answer.push(0),
            }
            put_uvarint(&mut answer, u32::try_from(results.len() + 1).expect("count"));
            for (feature, code) in results {
                put_compact_string(&mut answer, feature.as_bytes());
                answer.extend_from_slice(&code.to_be_bytes());
                answer.push(0);
                answer.push(NO_TAGGED_FIELDS);
            }
            answer.push(NO_TAGGED_FIELDS);
            answer
        };
        assert_eq!(update_features_response(&answer(0, None, &[])), Ok(Ok(())));
        assert_eq!(update_features_response(&answer(0, None, &[(METADATA_VERSION, 0)])), Ok(Ok(())));
        let refusal =
            "Invalid update version 29 for feature metadata.version. Controller 0 only supports versions 7-27";
        assert_eq!(update_features_response(&answer(95, Some(refusal), &[])), Ok(Err((95, refusal.to_owned()))));
        assert_eq!(
            update_features_response(&answer(0, None, &[(METADATA_VERSION, 95)])),
            Ok(Err((95, "metadata.version: ".to_owned())))
        );
        // The correlation id comes first, as with every answer.
        let mut framed = 3i32.to_be_bytes().to_vec();
        framed.extend_from_slice(&answer(0, None, &[]));
        let (id, rest) = split_header(&framed).expect("header");
        assert_eq!((id, update_features_response(rest)), (3, Ok(Ok(()))));
    }
}
