//! AMQP 0-9-1's side of the probes (RabbitMQ): the connection handshake as byte codecs.
//!
//! Ready when the broker takes a PLAIN login and opens a virtual host: RabbitMQ answers
//! Connection.Open only once the virtual host runs on this node.

/// What a client sends first: the protocol and its version.
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
const FRAME_METHOD: u8 = 1;
const FRAME_END: u8 = 0xce;
const CONNECTION: u16 = 10;

/// Connection methods by their method id.
pub const START: u16 = 10;
pub const START_OK: u16 = 11;
pub const TUNE: u16 = 30;
pub const TUNE_OK: u16 = 31;
pub const OPEN: u16 = 40;
pub const OPEN_OK: u16 = 41;
pub const CLOSE: u16 = 50;
pub const CLOSE_OK: u16 = 51;

/// A method frame on channel 0 of the Connection class.
fn connection_frame(method: u16, arguments: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 + arguments.len());
    payload.extend_from_slice(&CONNECTION.to_be_bytes());
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(arguments);
    let mut frame = vec![FRAME_METHOD, 0, 0];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(FRAME_END);
    frame
}

fn short_string(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(255)];
    out.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(bytes);
}

/// Start-Ok: no client properties, PLAIN with `user` and `password`, locale en_US.
#[must_use]
pub fn start_ok(user: &str, password: &str) -> Vec<u8> {
    let response = [b"\0", user.as_bytes(), b"\0", password.as_bytes()].concat();
    let mut arguments = 0u32.to_be_bytes().to_vec(); // an empty field table
    short_string(&mut arguments, "PLAIN");
    arguments.extend_from_slice(&u32::try_from(response.len()).unwrap_or(u32::MAX).to_be_bytes());
    arguments.extend_from_slice(&response);
    short_string(&mut arguments, "en_US");
    connection_frame(START_OK, &arguments)
}

/// Tune-Ok with the server's limits as they came, and no heartbeats (the probe lives seconds).
#[must_use]
pub fn tune_ok(tune_arguments: &[u8]) -> Vec<u8> {
    let mut arguments = tune_arguments.get(..6).unwrap_or(&[0; 6]).to_vec();
    arguments.extend_from_slice(&0u16.to_be_bytes());
    connection_frame(TUNE_OK, &arguments)
}

#[must_use]
pub fn open(vhost: &str) -> Vec<u8> {
    let mut arguments = Vec::new();
    short_string(&mut arguments, vhost);
    arguments.extend_from_slice(&[0, 0]); // reserved: an empty short string, a bit
    connection_frame(OPEN, &arguments)
}

/// Close with 200 (reply success): the client leaves on purpose.
#[must_use]
pub fn close() -> Vec<u8> {
    let mut arguments = 200u16.to_be_bytes().to_vec();
    short_string(&mut arguments, "");
    arguments.extend_from_slice(&[0, 0, 0, 0]);
    connection_frame(CLOSE, &arguments)
}

/// A frame's header: type, channel, payload size; the payload and its end octet follow.
pub const HEADER_LEN: usize = 7;

/// The payload size a frame header announces, if it is a method frame on channel 0.
pub fn method_frame_size(header: [u8; HEADER_LEN]) -> Result<usize, String> {
    if header[0] != FRAME_METHOD || header[1..3] != [0, 0] {
        return Err(format!("expected a method frame on channel 0, got header {header:?}"));
    }
    Ok(usize::try_from(u32::from_be_bytes([header[3], header[4], header[5], header[6]])).unwrap_or(usize::MAX))
}

/// A Connection method: its id and arguments, from a payload and its end octet.
pub fn connection_method(payload_and_end: &[u8]) -> Result<(u16, &[u8]), String> {
    let Some((&FRAME_END, payload)) = payload_and_end.split_last() else {
        return Err("a frame without its end octet".to_owned());
    };
    match payload {
        [0, 10, high, low, arguments @ ..] => Ok((u16::from_be_bytes([*high, *low]), arguments)),
        _ => Err(format!("expected a Connection method, got {:?}", payload.get(..4))),
    }
}

/// What a Connection.Close says: its reply code and text.
#[must_use]
pub fn close_reason(arguments: &[u8]) -> String {
    let code = arguments.get(..2).map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
    let text = arguments
        .get(2)
        .and_then(|length| arguments.get(3..3 + usize::from(*length)))
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    format!("{code} {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ok_carries_a_plain_login_in_a_method_frame() {
        let frame = start_ok("oms_admin", "secret");
        assert_eq!(&frame[..3], &[1, 0, 0]);
        let size = method_frame_size(frame[..7].try_into().expect("header")).expect("method frame");
        assert_eq!(size, frame.len() - 8);
        let (method, arguments) = connection_method(&frame[7..]).expect("a Connection method");
        assert_eq!(method, START_OK);
        assert_eq!(&arguments[..4], &[0, 0, 0, 0], "no client properties");
        assert_eq!(&arguments[4..10], b"\x05PLAIN");
        assert_eq!(&arguments[10..14], &17u32.to_be_bytes());
        assert_eq!(&arguments[14..31], b"\0oms_admin\0secret");
        assert_eq!(&arguments[31..], b"\x05en_US");
    }

    #[test]
    fn open_and_close_are_connection_methods_and_a_close_says_why() {
        let (open, close) = (open("/"), close());
        let (method, arguments) = connection_method(&open[7..]).expect("open");
        assert_eq!((method, arguments), (OPEN, &[1, b'/', 0, 0][..]));
        let (method, arguments) = connection_method(&close[7..]).expect("close");
        assert_eq!((method, close_reason(arguments)), (CLOSE, "200 ".to_owned()));
        let refused = [&[1u8, 0x92][..], b"\x0dNOT_ALLOWED -", &[0, 10, 0, 40]].concat();
        assert_eq!(close_reason(&refused), "402 NOT_ALLOWED -");
        assert!(method_frame_size([3, 0, 0, 0, 0, 0, 0]).is_err(), "a heartbeat is no method");
        assert!(connection_method(&[0, 20, 0, 10, 0xce]).is_err(), "a Channel method is not expected");
    }

    #[test]
    fn tune_ok_takes_the_servers_limits_and_no_heartbeat() {
        // channel-max 2047, frame-max 131072, heartbeat 60 s
        let tune = [0x07, 0xff, 0x00, 0x02, 0x00, 0x00, 0x00, 0x3c];
        let frame = tune_ok(&tune);
        let (method, arguments) = connection_method(&frame[7..]).expect("tune-ok");
        assert_eq!((method, arguments), (TUNE_OK, &[0x07, 0xff, 0x00, 0x02, 0x00, 0x00, 0, 0][..]));
    }
}
