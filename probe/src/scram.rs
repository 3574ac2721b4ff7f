//! The client side of SCRAM (RFC 5802, with RFC 7677's SHA-256 and Kafka's SHA-512): the
//! password proved without being sent, and the server's signature checked, so that a broker that
//! does not know the password cannot pass the probe.

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::{digest, hmac, pbkdf2};

/// Most PBKDF2 iterations a server may ask for: Kafka allows 16,384; more would let a wrong
/// server keep the probe busy past its deadline.
const MAX_ITERATIONS: u32 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Hash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Hash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Hash::Sha256 => hmac::HMAC_SHA256,
            Hash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha512 => &digest::SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("the server's first message is malformed: {0}")]
    Malformed(String),
    #[error("the server's nonce does not extend ours")]
    NonceMismatch,
    #[error("the server asks for {0} iterations (at most {MAX_ITERATIONS} accepted)")]
    Iterations(u32),
    #[error("the server refused the proof: {0}")]
    Refused(String),
    #[error("the server's signature is wrong: it does not know this password")]
    ServerSignature,
}

/// One exchange, from the client's first message to the check of the server's last.
#[derive(Debug)]
pub struct Exchange {
    hash: Hash,
    password: String,
    nonce: String,
    client_first_bare: String,
}

/// What the client sends second, and what checks the signature the server's last message carries.
#[derive(Debug)]
pub struct ClientFinal {
    pub message: String,
    server_key: hmac::Key,
    auth_message: String,
}

impl Exchange {
    /// `nonce`: printable characters without `,` (the caller draws it at random).
    #[must_use]
    pub fn new(hash: Hash, user: &str, password: &str, nonce: &str) -> Self {
        let user = user.replace('=', "=3D").replace(',', "=2C");
        Exchange {
            hash,
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            client_first_bare: format!("n={user},r={nonce}"),
        }
    }

    /// The first message: no channel binding, no authorization identity.
    #[must_use]
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// The proof, from the server's first message (`r=<nonce>,s=<salt>,i=<iterations>`).
    pub fn client_final(&self, server_first: &str) -> Result<ClientFinal, ScramError> {
        let field = |name: char| {
            server_first
                .split(',')
                .find_map(|part| part.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
                .ok_or_else(|| ScramError::Malformed(format!("no {name}= in {server_first:?}")))
        };
        let nonce = field('r')?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = BASE64.decode(field('s')?).map_err(|e| ScramError::Malformed(format!("salt: {e}")))?;
        let iterations: u32 = field('i')?.parse().map_err(|e| ScramError::Malformed(format!("iterations: {e}")))?;
        let iterations = NonZeroU32::new(iterations)
            .filter(|i| i.get() <= MAX_ITERATIONS)
            .ok_or(ScramError::Iterations(iterations))?;

        let mut salted = vec![0u8; self.hash.len()];
        pbkdf2::derive(self.hash.pbkdf2(), iterations, &salt, self.password.as_bytes(), &mut salted);
        let salted = hmac::Key::new(self.hash.hmac(), &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(self.hash.digest(), client_key.as_ref());
        // "biws" is base64 of "n,,": the header of the first message, no channel binding.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature =
            hmac::sign(&hmac::Key::new(self.hash.hmac(), stored_key.as_ref()), auth_message.as_bytes());
        let proof: Vec<u8> =
            client_key.as_ref().iter().zip(client_signature.as_ref()).map(|(key, sig)| key ^ sig).collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        Ok(ClientFinal {
            message: format!("{without_proof},p={}", BASE64.encode(proof)),
            server_key: hmac::Key::new(self.hash.hmac(), server_key.as_ref()),
            auth_message,
        })
    }
}

impl ClientFinal {
    /// The server's last message: `v=<its signature>`, or `e=<why not>`.
    pub fn check_server_final(&self, server_final: &str) -> Result<(), ScramError> {
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(ScramError::Refused(error.to_owned()));
        }
        let signature = server_final
            .strip_prefix("v=")
            .and_then(|v| BASE64.decode(v.split(',').next().unwrap_or_default()).ok())
            .ok_or_else(|| ScramError::Malformed(format!("server final {server_final:?}")))?;
        // Checked in constant time: cheap, and no timing left for an impostor to read.
        hmac::verify(&self.server_key, self.auth_message.as_bytes(), &signature)
            .map_err(|_| ScramError::ServerSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677, section 3.
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    #[test]
    fn the_rfc_7677_exchange_gives_its_proof_and_accepts_its_server_signature() {
        let exchange = Exchange::new(Hash::Sha256, "user", "pencil", NONCE);
        assert_eq!(exchange.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let last = exchange.client_final(SERVER_FIRST).expect("client final");
        assert_eq!(
            last.message,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(last.check_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="), Ok(()));
    }

    #[test]
    fn a_server_that_does_not_know_the_password_is_caught_by_its_signature() {
        let last = Exchange::new(Hash::Sha256, "user", "not-pencil", NONCE).client_final(SERVER_FIRST).expect("final");
        assert_eq!(
            last.check_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::ServerSignature)
        );
        assert_eq!(last.check_server_final("e=invalid-proof"), Err(ScramError::Refused("invalid-proof".into())));
    }

    #[test]
    fn a_nonce_that_does_not_extend_ours_or_too_many_iterations_are_refused() {
        let exchange = Exchange::new(Hash::Sha512, "user", "pencil", NONCE);
        assert_eq!(exchange.client_final("r=someone-else,s=AAAA,i=4096").err(), Some(ScramError::NonceMismatch));
        assert_eq!(exchange.client_final(&format!("r={NONCE},s=AAAA,i=4096")).err(), Some(ScramError::NonceMismatch));
        assert_eq!(
            exchange.client_final(&format!("r={NONCE}x,s=AAAA,i=1000000")).err(),
            Some(ScramError::Iterations(1_000_000))
        );
        assert!(matches!(exchange.client_final(&format!("r={NONCE}x,i=4096")), Err(ScramError::Malformed(_))));
    }

    #[test]
    fn user_names_with_commas_and_equals_signs_are_escaped() {
        assert_eq!(Exchange::new(Hash::Sha512, "a=b,c", "p", "n").client_first(), "n,,n=a=3Db=2Cc,r=n");
    }
}
