//! MQTT 3.1.1's side of the probes: CONNECT and what its CONNACK says.

/// CONNECT, clean session, keep-alive 10 s, with the login when there is one. An empty
/// `client_id` lets the broker assign one, so that a probe never takes over a client's session.
#[must_use]
pub fn connect(client_id: &str, login: Option<(&str, &str)>) -> Vec<u8> {
    let field = |bytes: &[u8], out: &mut Vec<u8>| {
        out.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(&bytes[..bytes.len().min(usize::from(u16::MAX))]);
    };
    let mut body = Vec::new();
    field(b"MQTT", &mut body);
    body.push(4); // protocol level 4 (3.1.1)
    body.push(if login.is_some() { 0xc2 } else { 0x02 }); // user, password, clean session
    body.extend_from_slice(&10u16.to_be_bytes());
    field(client_id.as_bytes(), &mut body);
    if let Some((user, password)) = login {
        field(user.as_bytes(), &mut body);
        field(password.as_bytes(), &mut body);
    }
    let mut packet = vec![0x10];
    // Remaining length, variable-length encoded.
    let mut length = body.len();
    loop {
        let byte = u8::try_from(length % 128).unwrap_or(0);
        length /= 128;
        packet.push(if length > 0 { byte | 0x80 } else { byte });
        if length == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// DISCONNECT: a clean goodbye, so that the broker logs no lost client.
pub const DISCONNECT: [u8; 2] = [0xe0, 0];

/// The return code of a CONNACK (0 accepts), or what came instead of one.
pub fn connack_code(connack: [u8; 4]) -> Result<u8, String> {
    match connack {
        [0x20, 2, _, code] => Ok(code),
        other => Err(format!("expected CONNACK, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_remaining_length_matches_its_body_with_and_without_a_login() {
        let anonymous = connect("oms-probe", None);
        assert_eq!(usize::from(anonymous[1]), anonymous.len() - 2);
        assert_eq!(anonymous[9], 0x02, "clean session only");
        let (user, password) = ("u".repeat(100), "p".repeat(100));
        let with_login = connect("", Some((&user, &password)));
        let (first, second) = (usize::from(with_login[1] & 0x7f), usize::from(with_login[2]));
        assert!(with_login[1] & 0x80 != 0, "two length bytes past 127");
        assert_eq!(first + second * 128, with_login.len() - 3);
        assert_eq!(with_login[10], 0xc2, "user, password, clean session");
        assert_eq!(&with_login[13..15], &[0, 0], "an empty client id: the broker assigns one");
    }

    #[test]
    fn connack_gives_its_return_code() {
        assert_eq!(connack_code([0x20, 2, 0, 0]), Ok(0));
        assert_eq!(connack_code([0x20, 2, 0, 5]), Ok(5));
        assert!(connack_code([0x30, 2, 0, 0]).is_err());
    }
}
