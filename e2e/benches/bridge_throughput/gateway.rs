//! The cloud boundary of the "kafka -> gateway -> nats" run: certificates from the OMS PKI and the
//! config of cloud-b's `oms-bridge gateway`, which fronts the target NATS server as an access point
//! of tenant acme and accepts bridges of cloud-a over mTLS.

use std::path::PathBuf;
use std::time::Duration;

use oms_e2e::{TlsPaths, free_server_port};
use oms_pki::{Ca, Leaf, SpiffeId};

use crate::load::Endpoint;

/// The tenant whose worker crosses the boundary; the gateway admits only its access points.
pub const TENANT: &str = "acme";
/// The access point behind the gateway that serves the target queue.
pub const ACCESS_POINT: &str = "acme/edge-nats";
/// Longer than any run: no rotation during a window.
const CERT_LIFETIME: Duration = Duration::from_hours(24);

/// A gateway ready to start: its config, its port, and the worker's side of the mTLS pair.
pub struct Prepared {
    pub config: PathBuf,
    pub port: u16,
    pub bridge_tls: TlsPaths,
}

/// Issues the gateway's server certificate (named `localhost`, which the worker dials) and the
/// bridge `name`'s client certificate from one fresh CA, and writes the gateway's config.
pub fn prepare(name: &str, target: &Endpoint) -> anyhow::Result<Prepared> {
    let dir = oms_e2e::state_dir("bench")?.join(format!("{name}-certs"));
    std::fs::create_dir_all(&dir)?;
    let ca = Ca::generate("bridge bench CA", CERT_LIFETIME)?;
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let issue = |stem: &str, identity: &str, dns: &[&str]| -> anyhow::Result<TlsPaths> {
        let leaf = Leaf::new(&SpiffeId::parse(identity)?, dns.iter().map(|d| (*d).to_owned()).collect(), CERT_LIFETIME);
        let issued = ca.issue(&leaf)?;
        let files = TlsPaths {
            ca: ca_file.clone(),
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, issued.cert_pem)?;
        std::fs::write(&files.key, issued.key_pem)?;
        Ok(files)
    };
    let server = issue("gateway", &format!("spiffe://cloud-b.oms/ns/{TENANT}/gateway/edge"), &["localhost"])?;
    let bridge_tls = issue(name, &format!("spiffe://cloud-a.oms/ns/{TENANT}/bridge/{name}"), &[])?;

    let port = free_server_port();
    let config = oms_e2e::state_dir("bench")?.join(format!("{name}-gateway.yaml"));
    std::fs::write(
        &config,
        format!(
            "listen: '127.0.0.1:{port}'\ntrustDomain: cloud-b.oms\npeerTrustDomains: [cloud-a.oms]\ntls: {}\n\
             backends:\n- {{accessPoint: {ACCESS_POINT}, driver: {}, servers: ['{}']}}\n\
             admin: {{listen: '127.0.0.1:{}'}}\n",
            server.yaml(),
            target.kind.driver(),
            target.address,
            free_server_port(),
        ),
    )?;
    Ok(Prepared { config, port, bridge_tls })
}
