//! RocketMQ's remoting protocol, as its name servers and brokers speak it: the frame, the JSON
//! header, the binary header a server configured for it answers with, and the signature a broker
//! with authentication checks. Pure byte codecs and one blocking connection; the operator's
//! provisioning and the brokers' readiness build on them.
//!
//! A frame is `total length | serialize type (high byte) and header length | header | body`, the
//! total counting everything after itself. Requests carry a JSON header whose `extFields` are all
//! strings; answers echo the request's `opaque`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use crate::net::{Connection, Tls};

/// Request codes used here (RocketMQ's `RequestCode`).
pub mod code {
    pub const QUERY_CONSUMER_OFFSET: i32 = 14;
    pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
    pub const UPDATE_AND_CREATE_TOPIC: i32 = 17;
    pub const SEARCH_OFFSET_BY_TIMESTAMP: i32 = 29;
    pub const GET_MAX_OFFSET: i32 = 30;
    pub const GET_MIN_OFFSET: i32 = 31;
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    pub const DELETE_TOPIC_IN_BROKER: i32 = 215;
    pub const DELETE_TOPIC_IN_NAMESRV: i32 = 216;
    pub const GET_TOPIC_CONFIG: i32 = 351;
    pub const UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: i32 = 200;
    /// ACL 2.0's users and ACLs, held by each broker.
    pub const AUTH_CREATE_USER: i32 = 3001;
    pub const AUTH_UPDATE_USER: i32 = 3002;
    pub const AUTH_DELETE_USER: i32 = 3003;
    pub const AUTH_LIST_USER: i32 = 3005;
    pub const AUTH_CREATE_ACL: i32 = 3006;
    pub const AUTH_DELETE_ACL: i32 = 3008;
    pub const AUTH_GET_ACL: i32 = 3009;
}

/// Answer codes (RocketMQ's `ResponseCode`).
pub mod answer {
    pub const SUCCESS: i32 = 0;
    pub const TOPIC_NOT_EXIST: i32 = 17;
    /// A consumer group holds no position in the queue asked about.
    pub const QUERY_NOT_FOUND: i32 = 22;
}

/// The protocol version sent: RocketMQ 5.3.3's. Servers only compare it; at 401 and above the
/// name server answers routes in standard JSON.
const VERSION: i32 = 479;

/// Largest answer read: a name server's cluster info for a few hundred brokers fits.
const ANSWER_LIMIT: usize = 4 << 20;

/// A broker's or name server's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub code: i32,
    pub opaque: i32,
    pub remark: Option<String>,
    pub ext_fields: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The answer's code and remark, for an error message: `code 17: No topic route info ...`.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.remark {
            Some(remark) => format!("code {}: {}", self.code, remark.trim()),
            None => format!("code {}", self.code),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed RocketMQ answer: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// A request frame, length included: `code` with `ext_fields` and `body`, numbered `opaque`.
#[must_use]
pub fn request(code: i32, opaque: i32, ext_fields: &BTreeMap<String, String>, body: &[u8]) -> Vec<u8> {
    let mut header = Map::new();
    header.insert("code".into(), code.into());
    header.insert("extFields".into(), Value::Object(strings(ext_fields)));
    header.insert("flag".into(), 0.into());
    // OTHER: every 5.x server knows it (RUST only from 5.3.0).
    header.insert("language".into(), "OTHER".into());
    header.insert("opaque".into(), opaque.into());
    header.insert("serializeTypeCurrentRPC".into(), "JSON".into());
    header.insert("version".into(), VERSION.into());
    let header = Value::Object(header).to_string().into_bytes();
    let total = u32::try_from(4 + header.len() + body.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(8 + header.len() + body.len());
    frame.extend_from_slice(&total.to_be_bytes());
    // Serialize type 0 (JSON) in the high byte: the length alone.
    frame.extend_from_slice(&u32::try_from(header.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(body);
    frame
}

fn strings(fields: &BTreeMap<String, String>) -> Map<String, Value> {
    fields.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect()
}

/// Adds the fields a broker with authentication checks: the user as `AccessKey` and the
/// `Signature`, base64 of HMAC-SHA1 under the password over every field's value in the order of
/// their names, then the body.
pub fn sign(ext_fields: &mut BTreeMap<String, String>, user: &str, password: &str, body: &[u8]) {
    ext_fields.remove("Signature");
    ext_fields.insert("AccessKey".into(), user.to_owned());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
    let mut context = ring::hmac::Context::with_key(&key);
    // Java sorts the names by UTF-16 units; a BTreeMap by bytes: the same for ASCII names.
    for value in ext_fields.values() {
        context.update(value.as_bytes());
    }
    context.update(body);
    let signature = BASE64.encode(context.sign().as_ref());
    ext_fields.insert("Signature".into(), signature);
}

/// The `authorization` value of a gRPC request to a 5.x proxy with authentication: HMAC-SHA1
/// under the password over the request's `x-mq-date-time`, in upper-case hex.
#[must_use]
pub fn grpc_authorization(user: &str, password: &str, date_time: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
    let signature = upper_hex(ring::hmac::sign(&key, date_time.as_bytes()).as_ref());
    format!("MQv2-HMAC-SHA1 Credential={user}, SignedHeaders=x-mq-date-time, Signature={signature}")
}

/// Bytes as upper-case hex, as RocketMQ writes signatures and message ids.
#[must_use]
pub fn upper_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut hex, b| {
        let _ = write!(hex, "{b:02X}");
        hex
    })
}

/// Where a topic lives, as a name server routes it: each broker group's master and how many
/// queues consumers read there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Broker name to (master address, read queues); groups without a master are left out.
    pub masters: BTreeMap<String, (String, i32)>,
}

impl Route {
    /// From a GET_ROUTEINFO_BY_TOPIC answer's body (`brokerDatas`, `queueDatas`).
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let text = standard_json(&String::from_utf8_lossy(body));
        let route: Value = serde_json::from_str(&text).map_err(|e| format!("topic route: {e}"))?;
        let list = |name: &str| route.get(name).and_then(Value::as_array).cloned().unwrap_or_default();
        let mut read_queues = BTreeMap::new();
        for queue in list("queueDatas") {
            if let (Some(broker), Some(n)) = (queue["brokerName"].as_str(), queue["readQueueNums"].as_i64()) {
                read_queues.insert(broker.to_owned(), i32::try_from(n).unwrap_or(0));
            }
        }
        let masters = list("brokerDatas")
            .iter()
            .filter_map(|group| {
                let name = group["brokerName"].as_str()?;
                let master = group["brokerAddrs"].get("0")?.as_str()?;
                Some((name.to_owned(), (master.to_owned(), *read_queues.get(name)?)))
            })
            .collect();
        Ok(Route { masters })
    }
}

/// The masters by broker name from a name server's cluster info (`brokerAddrTable`, each
/// broker group's addresses by broker id, 0 being the master).
pub fn masters_of(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let text = standard_json(&String::from_utf8_lossy(body));
    let info: Value = serde_json::from_str(&text).map_err(|e| format!("cluster info: {e}"))?;
    let groups =
        info.get("brokerAddrTable").and_then(Value::as_object).ok_or("cluster info without brokerAddrTable")?;
    Ok(groups
        .iter()
        .filter_map(|(name, group)| {
            let master = group.get("brokerAddrs")?.get("0")?.as_str()?;
            Some((name.clone(), master.to_owned()))
        })
        .collect())
}

/// Decodes an answer frame (what follows the total length).
pub fn decode(frame: &[u8]) -> Result<Answer, DecodeError> {
    let head: [u8; 4] = frame.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(|| short("the header length"))?;
    let serialize_type = head[0];
    let header_length = usize::try_from(u32::from_be_bytes([0, head[1], head[2], head[3]])).unwrap_or(usize::MAX);
    let header = frame.get(4..4 + header_length).ok_or_else(|| short("the header"))?;
    let body = frame[4 + header_length..].to_vec();
    let mut answer = match serialize_type {
        0 => json_header(header)?,
        1 => binary_header(header)?,
        other => return Err(DecodeError(format!("serialize type {other}"))),
    };
    answer.body = body;
    Ok(answer)
}

fn short(what: &str) -> DecodeError {
    DecodeError(format!("{what} is cut short"))
}

fn json_header(header: &[u8]) -> Result<Answer, DecodeError> {
    let value: Value = serde_json::from_slice(header).map_err(|e| DecodeError(format!("header: {e}")))?;
    let number = |name: &str| value.get(name).and_then(Value::as_i64).and_then(|n| i32::try_from(n).ok());
    let ext_fields = value
        .get("extFields")
        .and_then(Value::as_object)
        .map(|fields| {
            fields.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect()
        })
        .unwrap_or_default();
    Ok(Answer {
        code: number("code").ok_or_else(|| DecodeError("no code in the header".into()))?,
        opaque: number("opaque").unwrap_or_default(),
        remark: value.get("remark").and_then(Value::as_str).map(str::to_owned),
        ext_fields,
        body: Vec::new(),
    })
}

/// The binary header: code i16, language u8, version i16, opaque i32, flag i32, remark (i32
/// length, 0 for none), then the fields (i32 total length, each an i16 length name and an i32
/// length value).
fn binary_header(header: &[u8]) -> Result<Answer, DecodeError> {
    let mut reader = Reader { bytes: header };
    let code = i32::from(i16::from_be_bytes(reader.array("the code")?));
    reader.take(1 + 2, "the language and version")?;
    let opaque = i32::from_be_bytes(reader.array("the opaque")?);
    reader.take(4, "the flag")?;
    let remark_length = reader.length32("the remark")?;
    let remark = (remark_length > 0).then(|| reader.text(remark_length, "the remark")).transpose()?;
    let fields_length = reader.length32("the fields")?;
    let mut fields = Reader { bytes: reader.take(fields_length, "the fields")? };
    let mut ext_fields = BTreeMap::new();
    while !fields.bytes.is_empty() {
        let name_length = usize::from(u16::from_be_bytes(fields.array("a field name")?));
        let name = fields.text(name_length, "a field name")?;
        let value_length = fields.length32("a field value")?;
        ext_fields.insert(name, fields.text(value_length, "a field value")?);
    }
    Ok(Answer { code, opaque, remark, ext_fields, body: Vec::new() })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(short(what));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        self.take(N, what)?.try_into().map_err(|_| short(what))
    }

    fn length32(&mut self, what: &str) -> Result<usize, DecodeError> {
        let length = i32::from_be_bytes(self.array(what)?);
        usize::try_from(length).map_err(|_| DecodeError(format!("{what}: length {length}")))
    }

    fn text(&mut self, n: usize, what: &str) -> Result<String, DecodeError> {
        String::from_utf8(self.take(n, what)?.to_vec()).map_err(|_| DecodeError(format!("{what}: not UTF-8")))
    }
}

/// Standard JSON from the name server's fastjson, which writes the keys of a map by number bare
/// (`{0:"10.0.0.5:10911"}`): every such key gets its quotes.
#[must_use]
pub fn standard_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_string, mut escaped, mut key_may_start) = (false, false, false);
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if key_may_start && (c.is_ascii_digit() || c == '-') {
            let digits: String = text[at..].chars().take_while(|d| d.is_ascii_digit() || *d == '-').collect();
            let after = text[at + digits.len()..].trim_start();
            if after.starts_with(':') {
                out.push('"');
                out.push_str(&digits);
                out.push('"');
                for _ in 1..digits.chars().count() {
                    chars.next();
                }
                key_may_start = false;
                continue;
            }
        }
        out.push(c);
        match c {
            '"' => in_string = true,
            '{' | ',' => key_may_start = true,
            c if c.is_whitespace() => {}
            _ => key_may_start = false,
        }
    }
    out
}

/// A connection to one name server or broker that numbers its requests, signs them when it has
/// a login, and checks that each answer is to the request just sent.
pub struct RemotingConnection {
    addr: SocketAddr,
    connection: Connection,
    opaque: i32,
    login: Option<(String, String)>,
}

impl RemotingConnection {
    pub fn open(
        addr: SocketAddr,
        tls: Option<&Tls>,
        login: Option<(String, String)>,
        deadline: Instant,
    ) -> Result<Self, String> {
        Ok(RemotingConnection { addr, connection: Connection::open(addr, tls, deadline)?, opaque: 0, login })
    }

    /// Sends request `code` and returns the answer, whatever its code.
    pub fn call(&mut self, code: i32, fields: &[(&str, &str)], body: &[u8]) -> Result<Answer, String> {
        self.opaque += 1;
        let mut ext_fields: BTreeMap<String, String> =
            fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        if let Some((user, password)) = &self.login {
            sign(&mut ext_fields, user, password, body);
        }
        let named = |error: String| format!("{}, request code {code}: {error}", self.addr);
        let frame =
            self.connection.exchange(&request(code, self.opaque, &ext_fields, body), ANSWER_LIMIT).map_err(named)?;
        let answer = decode(&frame).map_err(|e| named(e.to_string()))?;
        if answer.opaque != self.opaque {
            return Err(format!("answer to request {}, not {}", answer.opaque, self.opaque));
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_masters_are_broker_id_zero_of_each_group_from_fastjson_cluster_info() {
        let body = br#"{"brokerAddrTable":{"broker-b":{"brokerAddrs":{0:"10.0.0.6:10911"},"brokerName":"broker-b","cluster":"c"},"broker-a":{"brokerAddrs":{0:"10.0.0.5:10911",1:"10.0.0.7:10911"},"brokerName":"broker-a","cluster":"c"},"lonely-slave":{"brokerAddrs":{1:"10.0.0.8:10911"}}},"clusterAddrTable":{"c":["broker-a","broker-b"]}}"#;
        let masters = masters_of(body).unwrap();
        assert_eq!(
            masters.into_iter().collect::<Vec<_>>(),
            [
                ("broker-a".to_owned(), "10.0.0.5:10911".to_owned()),
                ("broker-b".to_owned(), "10.0.0.6:10911".to_owned())
            ]
        );
        assert!(masters_of(b"{}").is_err());
    }

    #[test]
    fn a_request_is_its_length_the_json_header_length_the_header_and_the_body() {
        let frame = request(105, 7, &fields(&[("topic", "orders")]), b"xy");
        let total = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        let header_length = u32::from_be_bytes(frame[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, frame.len() - 4);
        assert_eq!(total, 4 + header_length + 2);
        assert_eq!(&frame[frame.len() - 2..], b"xy");
        let header: Value = serde_json::from_slice(&frame[8..8 + header_length]).unwrap();
        assert_eq!(header["code"], 105);
        assert_eq!(header["opaque"], 7);
        assert_eq!(header["flag"], 0);
        assert_eq!(header["version"], 479);
        assert_eq!(header["extFields"]["topic"], "orders");
    }

    #[test]
    fn a_json_answer_decodes_with_its_remark_fields_and_body() {
        let header = br#"{"code":17,"extFields":{"offset":42},"flag":1,"opaque":3,"remark":"No topic route info"}"#;
        let mut frame = u32::try_from(header.len()).unwrap().to_be_bytes().to_vec();
        frame.extend_from_slice(header);
        frame.extend_from_slice(b"{}");
        let answer = decode(&frame).unwrap();
        assert_eq!((answer.code, answer.opaque), (17, 3));
        assert_eq!(answer.remark.as_deref(), Some("No topic route info"));
        assert_eq!(answer.ext_fields["offset"], "42");
        assert_eq!(answer.body, b"{}");
    }

    #[test]
    fn a_binary_answer_decodes_as_a_server_set_to_rocketmq_serialization_sends_it() {
        let mut header = Vec::new();
        header.extend_from_slice(&0i16.to_be_bytes());
        header.push(0);
        header.extend_from_slice(&479i16.to_be_bytes());
        header.extend_from_slice(&9i32.to_be_bytes());
        header.extend_from_slice(&1i32.to_be_bytes());
        header.extend_from_slice(&2i32.to_be_bytes());
        header.extend_from_slice(b"ok");
        let mut field = Vec::new();
        field.extend_from_slice(&6u16.to_be_bytes());
        field.extend_from_slice(b"offset");
        field.extend_from_slice(&2i32.to_be_bytes());
        field.extend_from_slice(b"12");
        header.extend_from_slice(&i32::try_from(field.len()).unwrap().to_be_bytes());
        header.extend_from_slice(&field);
        let mut frame = (u32::try_from(header.len()).unwrap() | 1 << 24).to_be_bytes().to_vec();
        frame.extend_from_slice(&header);
        let answer = decode(&frame).unwrap();
        assert_eq!((answer.code, answer.opaque), (0, 9));
        assert_eq!(answer.remark.as_deref(), Some("ok"));
        assert_eq!(answer.ext_fields["offset"], "12");
        assert!(answer.body.is_empty());
    }

    #[test]
    fn a_cut_answer_is_an_error_not_a_panic() {
        assert!(decode(&[0, 0]).is_err());
        assert!(decode(&[0, 0, 0, 9, b'{']).is_err());
        assert!(decode(&[1, 0, 0, 3, 0, 0, 0]).is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha1_of_the_values_in_name_order_then_the_body() {
        // Vectors computed with Python's hmac, the first matching RocketMQ's own test.
        let mut plain = fields(&[("username", "alice")]);
        sign(&mut plain, "rocketmq", "12345678", b"");
        assert_eq!(plain["Signature"], "rfYAu7rIxE23cHwCSPyNKmkajnU=");
        let mut with_body = fields(&[("username", "alice")]);
        let body = br#"{"password":"alice-secret","userType":"Normal","username":"alice"}"#;
        sign(&mut with_body, "rocketmq", "12345678", body);
        assert_eq!(with_body["Signature"], "nBYvXslT1duQsK1ReKeACHD5zIQ=");
        assert_eq!(with_body["AccessKey"], "rocketmq");
    }

    #[test]
    fn bare_number_keys_get_quotes_and_nothing_else_changes() {
        let text = r#"{"brokerAddrTable":{"b":{"brokerAddrs":{0:"10.0.0.5:10911", 1 :"x:1"},"n":[1,2],"s":"{3:4}"}}}"#;
        let fixed = standard_json(text);
        assert_eq!(
            fixed,
            r#"{"brokerAddrTable":{"b":{"brokerAddrs":{"0":"10.0.0.5:10911", "1" :"x:1"},"n":[1,2],"s":"{3:4}"}}}"#
        );
        let value: Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(value["brokerAddrTable"]["b"]["brokerAddrs"]["1"], "x:1");
        assert_eq!(standard_json(r#"{"a":"q\"{1:2}"}"#), r#"{"a":"q\"{1:2}"}"#);
    }

    #[test]
    fn a_route_lists_each_groups_master_with_its_read_queues() {
        let body = br#"{"brokerDatas":[{"brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"},"brokerName":"b-a","cluster":"c"},
            {"brokerAddrs":{1:"10.0.0.3:10911"},"brokerName":"b-b","cluster":"c"}],
            "queueDatas":[{"brokerName":"b-a","perm":6,"readQueueNums":4,"writeQueueNums":4},
            {"brokerName":"b-b","perm":6,"readQueueNums":2,"writeQueueNums":2}]}"#;
        let route = Route::parse(body).unwrap();
        assert_eq!(route.masters.len(), 1, "b-b has no master (id 0) and is left out");
        assert_eq!(route.masters["b-a"], ("10.0.0.1:10911".to_owned(), 4));
    }

    #[test]
    fn a_grpc_authorization_signs_the_date_time_in_upper_case_hex() {
        // HMAC-SHA1's published example (key "key"), as the signed text.
        let value = grpc_authorization("ak", "key", "The quick brown fox jumps over the lazy dog");
        assert_eq!(
            value,
            "MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time, \
             Signature=DE7C9B85B8B78AA6BC8A7A36F70A90701C9DB4D9"
        );
    }
}
