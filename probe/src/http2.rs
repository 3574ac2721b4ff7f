//! The first bytes of an HTTP/2 connection, enough to tell a gRPC server (RocketMQ's proxy)
//! from anything else without a gRPC client.

/// What an HTTP/2 client sends first: its preface, then an empty SETTINGS frame.
pub const CLIENT_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// The server's first HTTP/2 frame must be a SETTINGS frame (type 4) on stream 0.
pub fn check_server_settings(frame: [u8; 9]) -> Result<(), String> {
    if frame[3] == 4 && frame[5..9] == [0, 0, 0, 0] {
        Ok(())
    } else {
        Err(format!("the first answer is not HTTP/2 SETTINGS (bytes {frame:02x?}): not a gRPC endpoint"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_settings_frame_on_stream_zero_passes() {
        assert_eq!(check_server_settings([0, 0, 6, 4, 0, 0, 0, 0, 0]), Ok(()));
        assert!(check_server_settings([0, 0, 6, 4, 0, 0, 0, 0, 1]).is_err(), "stream 1");
        assert!(check_server_settings(*b"HTTP/1.1 ").is_err(), "HTTP/1");
        assert!(CLIENT_PREFACE.ends_with(&[0, 0, 0, 4, 0, 0, 0, 0, 0]), "an empty SETTINGS frame");
    }
}
