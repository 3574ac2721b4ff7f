//! NATS decentralized auth for test servers: an operator, an account with JetStream, and users'
//! credentials files, as `nsc` would make them (JWTs signed with nkeys), so that a real
//! nats-server checks a real credentials file.

use base64::Engine as _;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// An operator and one account it signed; users of the account get credentials files. The
/// operator's system account (which JetStream needs) comes with it.
pub struct NatsAccounts {
    operator_jwt: String,
    account: KeyPair,
    account_jwt: String,
    system: String,
    system_jwt: String,
}

impl NatsAccounts {
    /// A fresh operator and account `name`, JetStream unlimited in it.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let operator_jwt = jwt(&operator, &operator.public_key(), name, &json!({"type": "operator", "version": 2}))?;
        let limits = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1,
            "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
        });
        let claims =
            json!({"limits": limits, "default_permissions": {"pub": {}, "sub": {}}, "type": "account", "version": 2});
        let account_jwt = jwt(&operator, &account.public_key(), name, &claims)?;
        let system = KeyPair::new_account().public_key();
        let system_jwt = jwt(&operator, &system, "SYS", &json!({"type": "account", "version": 2}))?;
        Ok(Self { operator_jwt, account, account_jwt, system, system_jwt })
    }

    /// The server's config lines: trust the operator, know the accounts from memory.
    #[must_use]
    pub fn server_config(&self) -> String {
        format!(
            "operator: {}\nsystem_account: {system}\nresolver: MEMORY\nresolver_preload: {{ {}: {}, {system}: {} }}\n",
            self.operator_jwt,
            self.account.public_key(),
            self.account_jwt,
            self.system_jwt,
            system = self.system,
        )
    }

    /// A credentials file of a new user `name` of the account: its JWT and its nkey seed.
    pub fn user_creds(&self, name: &str) -> anyhow::Result<String> {
        let user = KeyPair::new_user();
        let claims = json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2});
        let user_jwt = jwt(&self.account, &user.public_key(), name, &claims)?;
        let seed = user.seed().map_err(|e| anyhow::anyhow!("user seed: {e}"))?;
        Ok(format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ))
    }
}

/// A JWT of `subject` signed by `issuer` (algorithm `ed25519-nkey`), with `nats` claims.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: &Value) -> anyhow::Result<String> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let issued_at = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "jti": format!("{subject}{issued_at}"),
        "iat": issued_at,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let signed = format!("{}.{}", b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#), b64(claims.to_string().as_bytes()));
    let signature = issuer.sign(signed.as_bytes()).map_err(|e| anyhow::anyhow!("signing a JWT: {e}"))?;
    Ok(format!("{signed}.{}", b64(&signature)))
}
