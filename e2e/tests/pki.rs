//! The operator's PKI against a real API server: the cluster CA, each Bridge's certificate with
//! its SPIFFE identity, renewal before expiry, the expiry metric, and clean-up with the Bridge;
//! a managed broker's server certificate and the roll a renewal makes.
//! Certificates are checked with openssl, not with our own code.

use std::process::Command;
use std::time::Duration;

use oms_e2e::{Cluster, DEADLINE, Operator, poll, run_ok};
use serde_json::Value;

/// Short-lived certificates so that a renewal happens within the test (renewed at 20 s).
const LIFETIME_SECONDS: &str = "30";

fn kubectl_json(cluster: &Cluster, namespace: &str, object: &str) -> anyhow::Result<Option<Value>> {
    let output = oms_e2e::run(cluster.kubectl().args(["-n", namespace, "get", object, "-o", "json"]))?;
    if !output.status.success() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_slice(&output.stdout)?))
}

/// A base64 data field of a Secret, decoded.
/// The operator's copy of cert-manager's Secret `<secret>-issued`, and that Secret, read together
/// until they hold the same certificate: with a 30 s lifetime cert-manager may renew between two
/// reads, before the operator copies.
fn copied_from_cert_manager(cluster: &Cluster, namespace: &str, secret: &str) -> anyhow::Result<(Value, Value)> {
    let same = |copy: &Value, issued: &Value| {
        secret_field(copy, "tls.crt").ok().is_some_and(|c| secret_field(issued, "tls.crt").ok() == Some(c))
    };
    poll(&format!("Secret {secret} copied from cert-manager's"), DEADLINE, || {
        let copy = kubectl_json(cluster, namespace, &format!("secret/{secret}"))?;
        let issued = kubectl_json(cluster, namespace, &format!("secret/{secret}-issued"))?;
        Ok(copy.zip(issued).filter(|(copy, issued)| same(copy, issued)))
    })
}

fn secret_field(secret: &Value, key: &str) -> anyhow::Result<String> {
    let encoded = secret["data"][key].as_str().ok_or_else(|| anyhow::anyhow!("no {key}"))?;
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(child.stdin.as_mut().ok_or_else(|| anyhow::anyhow!("stdin"))?, encoded.as_bytes())?;
    let output = child.wait_with_output()?;
    Ok(String::from_utf8(output.stdout)?)
}

/// `openssl x509` on a PEM certificate written to `dir/<name>`.
fn openssl_x509(dir: &std::path::Path, name: &str, pem: &str, args: &[&str]) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, pem)?;
    run_ok(Command::new("openssl").args(["x509", "-noout", "-in"]).arg(&path).args(args))
}

/// Whether the operator reports the notAfter of `pem` as the expiry of `namespace/secret`.
fn expiry_metric_is(
    operator: &Operator,
    namespace: &str,
    secret: &str,
    dir: &std::path::Path,
    pem: &str,
) -> anyhow::Result<bool> {
    let series =
        format!(r#"oms_operator_certificate_expiry_timestamp_seconds{{namespace="{namespace}",secret="{secret}"}}"#);
    let until = openssl_x509(dir, "current.crt", pem, &["-enddate"])?;
    let epoch = run_ok(Command::new("date").args(["-d", until.trim().trim_start_matches("notAfter="), "+%s"]))?;
    let (_, metrics) = oms_e2e::http_get(operator.admin, "/metrics")?;
    let reported: Option<f64> =
        metrics.lines().find(|l| l.starts_with(&series)).and_then(|l| l.rsplit(' ').next()?.parse().ok());
    Ok(reported.is_some() && reported == Some(epoch.trim().parse::<f64>()?))
}

fn bridge_yaml(name: &str) -> String {
    format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: {name}}}\n\
         spec: {{source: {{queueRef: {{name: orders}}}}, target: {{queueRef: {{name: orders-copy}}}}}}\n"
    )
}

/// A fresh namespace on cloud-a (CRDs installed) that also holds the CA, as the operator's own
/// namespace would, and a directory for certificate files.
struct PkiCase {
    cluster: Cluster,
    ns: oms_e2e::Namespace,
    dir: std::path::PathBuf,
}

impl PkiCase {
    fn new(prefix: &str) -> anyhow::Result<Self> {
        let cluster = Cluster::up("cloud-a")?;
        cluster.install_crds()?;
        let ns = cluster.fresh_namespace(prefix)?;
        let dir = oms_e2e::repo_root().join(format!("e2e/.state/{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { cluster, ns, dir })
    }

    /// An operator watching the namespace, keeping its CA there, with `trust_domain` and `extra` flags.
    fn operator(&self, trust_domain: &str, extra: &[&str]) -> anyhow::Result<Operator> {
        let namespace = self.ns.name.as_str();
        let mut args = vec![
            "--namespace",
            namespace,
            "--leader-election=false",
            "--pki-namespace",
            namespace,
            "--trust-domain",
            trust_domain,
        ];
        args.extend_from_slice(extra);
        Operator::start(&self.cluster, &args)
    }
}

#[test]
fn a_bridge_gets_a_certificate_for_its_identity_renewed_before_expiry_and_removed_with_it() -> anyhow::Result<()> {
    let case = PkiCase::new("pki")?;
    let (cluster, namespace, dir) = (&case.cluster, case.ns.name.as_str(), &case.dir);
    let operator = case.operator("cloud-a.oms", &["--certificate-lifetime-seconds", LIFETIME_SECONDS])?;
    cluster.apply(namespace, &bridge_yaml("orders-to-b"))?;
    let secret = poll("the bridge's certificate Secret", DEADLINE, || {
        kubectl_json(cluster, namespace, "secret/orders-to-b-oms-tls")
    })?;
    let ca = kubectl_json(cluster, namespace, "secret/oms-ca")?.ok_or_else(|| anyhow::anyhow!("no CA Secret"))?;
    let bundle =
        kubectl_json(cluster, namespace, "configmap/oms-trust-bundle")?.ok_or_else(|| anyhow::anyhow!("no bundle"))?;
    let (cert, ca_cert) = (secret_field(&secret, "tls.crt")?, secret_field(&ca, "tls.crt")?);

    // The identity is the Bridge's, the chain verifies against the CA, the bundle carries the CA.
    let san = openssl_x509(dir, "leaf.crt", &cert, &["-ext", "subjectAltName"])?;
    std::fs::write(dir.join("ca.crt"), &ca_cert)?;
    let verified =
        run_ok(Command::new("openssl").arg("verify").arg("-CAfile").arg(dir.join("ca.crt")).arg(dir.join("leaf.crt")))?;
    println!("pki: issued {}; openssl verify: {}", san.trim().replace('\n', " "), verified.trim());
    assert!(san.contains(&format!("URI:spiffe://cloud-a.oms/ns/{namespace}/bridge/orders-to-b")), "{san}");
    assert!(verified.trim().ends_with(": OK"), "{verified}");
    assert_eq!(secret_field(&secret, "ca.crt")?, ca_cert, "ca.crt is the trust bundle");
    assert_eq!(bundle["data"]["ca.crt"].as_str(), Some(ca_cert.as_str()), "the trust-bundle ConfigMap holds the CA");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Bridge", "owned by the Bridge");

    // The expiry metric shows the notAfter of the certificate in the Secret: polled, since the
    // gauge is set just after the Secret is written, and read against the Secret of the moment,
    // since under load the renewal at 20 s may already have replaced the first certificate.
    let not_after = openssl_x509(dir, "leaf.crt", &cert, &["-enddate"])?;
    poll("the expiry metric at the notAfter of the Secret's certificate", DEADLINE, || {
        let Some(current) = kubectl_json(cluster, namespace, "secret/orders-to-b-oms-tls")? else { return Ok(None) };
        let pem = secret_field(&current, "tls.crt")?;
        Ok(expiry_metric_is(&operator, namespace, "orders-to-b-oms-tls", dir, &pem)?.then_some(()))
    })?;

    // Renewed at two thirds of the 30 s lifetime: a new certificate, same identity, later expiry.
    let renewed = poll("the certificate renewed", Duration::from_secs(45), || {
        let Some(current) = kubectl_json(cluster, namespace, "secret/orders-to-b-oms-tls")? else { return Ok(None) };
        let pem = secret_field(&current, "tls.crt")?;
        Ok((pem != cert).then_some(pem))
    })?;
    let renewed_until = openssl_x509(dir, "renewed.crt", &renewed, &["-enddate"])?;
    println!("pki: first certificate {}, renewed one {}", not_after.trim(), renewed_until.trim());
    assert!(openssl_x509(dir, "renewed.crt", &renewed, &["-ext", "subjectAltName"])?.contains("bridge/orders-to-b"));
    assert_ne!(renewed_until, not_after, "the renewed certificate expires later");

    // Deleting the Bridge removes its certificate (owner reference, garbage collector).
    run_ok(cluster.kubectl().args(["-n", namespace, "delete", "bridge/orders-to-b"]))?;
    poll("the certificate Secret is collected", Duration::from_mins(1), || {
        Ok(kubectl_json(cluster, namespace, "secret/orders-to-b-oms-tls")?.is_none().then_some(()))
    })?;
    Ok(())
}

#[test]
fn a_ca_supplied_by_the_user_signs_the_bridge_certificates() -> anyhow::Result<()> {
    let case = PkiCase::new("pki-own")?;
    let (cluster, namespace, dir) = (&case.cluster, case.ns.name.as_str(), &case.dir);
    // A root both clouds share, made outside the operator (here with openssl) and stored first.
    let (key, cert) = (dir.join("root.key"), dir.join("root.crt"));
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/CN=shared root",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )?;
    let pkcs8 = dir.join("root.pk8");
    run_ok(Command::new("openssl").args(["pkcs8", "-topk8", "-nocrypt", "-in"]).arg(&key).arg("-out").arg(&pkcs8))?;
    run_ok(
        cluster
            .kubectl()
            .args(["-n", namespace, "create", "secret", "tls", "oms-ca"])
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--key={}", pkcs8.display())),
    )?;
    let _operator = case.operator("cloud-a.oms", &[])?;
    cluster.apply(namespace, &bridge_yaml("shared"))?;
    let secret = poll("the bridge's certificate Secret", DEADLINE, || {
        kubectl_json(cluster, namespace, "secret/shared-oms-tls")
    })?;
    std::fs::write(dir.join("leaf.crt"), secret_field(&secret, "tls.crt")?)?;
    let verified = run_ok(Command::new("openssl").arg("verify").arg("-CAfile").arg(&cert).arg(dir.join("leaf.crt")))?;
    println!("pki: certificate from the user's root: {}", verified.trim());
    assert!(verified.trim().ends_with(": OK"), "{verified}");
    Ok(())
}

#[test]
fn an_access_point_with_its_gateway_enabled_gets_a_server_certificate_and_workload_and_loses_them_when_disabled()
-> anyhow::Result<()> {
    let case = PkiCase::new("pki-gw")?;
    let (cluster, namespace, dir) = (&case.cluster, case.ns.name.as_str(), &case.dir);
    // A private registry's pull Secret reaches the gateway pods.
    let _operator = case.operator("cloud-b.oms", &["--image-pull-secrets", "regcred"])?;
    let access_point = |enabled: bool| {
        format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: edge}}\n\
             spec: {{driver: nats, external: {{servers: ['nats.example:4222']}}, gateway: {{enabled: {enabled}}}}}\n"
        )
    };
    cluster.apply(namespace, &access_point(true))?;
    let secret = poll("the gateway's certificate Secret", DEADLINE, || {
        kubectl_json(cluster, namespace, "secret/edge-oms-gateway-tls")
    })?;
    let san = openssl_x509(dir, "gateway.crt", &secret_field(&secret, "tls.crt")?, &["-ext", "subjectAltName"])?;
    println!("pki: gateway certificate {}", san.trim().replace('\n', " "));
    assert!(san.contains(&format!("URI:spiffe://cloud-b.oms/ns/{namespace}/gateway/edge")), "{san}");
    assert!(san.contains(&format!("DNS:edge-oms-gateway.{namespace}.svc")), "{san}");
    // The external NATS is not reachable, but its binding Secret names it: the gateway is rendered.
    for object in ["deployment", "service", "configmap", "networkpolicy"] {
        poll(&format!("the gateway {object}"), DEADLINE, || {
            kubectl_json(cluster, namespace, &format!("{object}/edge-oms-gateway"))
        })?;
    }
    let deployment = kubectl_json(cluster, namespace, "deployment/edge-oms-gateway")?.unwrap_or_default();
    assert_eq!(deployment["spec"]["template"]["spec"]["imagePullSecrets"], serde_json::json!([{"name": "regcred"}]));
    cluster.apply(namespace, &access_point(false))?;
    poll("the certificate is removed with the gateway", DEADLINE, || {
        Ok(kubectl_json(cluster, namespace, "secret/edge-oms-gateway-tls")?.is_none().then_some(()))
    })?;
    for object in ["deployment", "service", "configmap", "networkpolicy"] {
        let what = format!("{object}/edge-oms-gateway");
        assert!(kubectl_json(cluster, namespace, &what)?.is_none(), "{what} is removed with the gateway");
    }
    Ok(())
}

/// The managed brokers of access point `hub` got their certificate from cert-manager (copied,
/// checked with openssl against the issuer's CA in `dir/corp-ca.crt`); they trust `issuer_ca`
/// alone, and their clients check them against it.
fn brokers_trust_the_issuer_alone(
    cluster: &Cluster,
    namespace: &str,
    dir: &std::path::Path,
    issuer_ca: &str,
) -> anyhow::Result<()> {
    let broker = poll("the brokers' certificate copied from cert-manager's", DEADLINE, || {
        kubectl_json(cluster, namespace, "secret/hub-broker-tls")
    })?;
    std::fs::write(dir.join("broker.crt"), secret_field(&broker, "tls.crt")?)?;
    let verified = run_ok(
        Command::new("openssl").arg("verify").arg("-CAfile").arg(dir.join("corp-ca.crt")).arg(dir.join("broker.crt")),
    )?;
    println!("pki: brokers' certificate from cert-manager: {}", verified.trim());
    assert!(verified.trim().ends_with(": OK"), "{verified}");
    assert_eq!(secret_field(&broker, "ca.crt")?, issuer_ca, "the brokers trust the issuer's CA alone");
    let binding = poll("the binding says TLS", DEADLINE, || {
        let binding = kubectl_json(cluster, namespace, "secret/hub-binding")?;
        Ok(binding.filter(|b| secret_field(b, "TLS").is_ok_and(|tls| tls == "true")))
    })?;
    assert_eq!(secret_field(&binding, "CA_CERT")?, issuer_ca, "clients check the brokers against the issuer's CA");
    Ok(())
}

/// With `--pki-issuer-kind Issuer --pki-issuer-name corp-ca` the operator signs nothing itself: a
/// Bridge, a gateway and managed brokers get cert-manager Certificates, cert-manager's CA issuer
/// signs them with a CA the operator never sees the key of, the operator copies each into the
/// Secret pods mount with the trust bundle (with the peers' CAs for the Bridge and gateway, alone
/// for the brokers and their clients), and a renewal cert-manager makes reaches that Secret and
/// the expiry metric while the operator runs on. A gateway switched off takes its Certificate
/// with it.
#[test]
fn with_a_cert_manager_issuer_bridges_and_gateways_get_its_certificates_and_renewals() -> anyhow::Result<()> {
    let case = PkiCase::new("pki-cm")?;
    let (cluster, namespace, dir) = (&case.cluster, case.ns.name.as_str(), &case.dir);
    let _cert_manager = oms_e2e::CertManager::start(cluster, &dir.join("cert-manager.log"))?;
    let corp = oms_pki::Ca::generate("Corp CA", Duration::from_hours(24))?;
    std::fs::write(dir.join("corp-ca.crt"), corp.cert_pem())?;
    oms_e2e::ca_issuer(cluster, namespace, "corp-ca", &corp)?;
    // A peer cloud's CA: bridges and gateways trust it besides the issuer's, brokers do not.
    let peer = oms_pki::Ca::generate("peer cloud CA", Duration::from_hours(1))?;
    std::fs::write(dir.join("peers.pem"), peer.cert_pem())?;
    let peers = dir.join("peers.pem").display().to_string();
    let with_peers = oms_operator::pki::trust_bundle(corp.cert_pem(), peer.cert_pem());
    let operator = case.operator(
        "cloud-a.oms",
        &[
            "--peer-trust-bundle",
            &peers,
            "--pki-issuer-kind",
            "Issuer",
            "--pki-issuer-name",
            "corp-ca",
            "--certificate-lifetime-seconds",
            LIFETIME_SECONDS,
        ],
    )?;
    let gateway = |enabled: bool| {
        format!(
            "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {{name: edge}}\n\
             spec: {{driver: nats, external: {{servers: ['nats.example:4222']}}, gateway: {{enabled: {enabled}}}}}\n"
        )
    };
    let brokers = "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {name: hub}\n\
                   spec: {driver: nats, managed: {replicas: 1}}\n";
    cluster.apply(namespace, &format!("{}---\n{}---\n{brokers}", bridge_yaml("orders-to-b"), gateway(true)))?;

    let mut first = Vec::new();
    for (secret, identity, name) in [
        ("orders-to-b-oms-tls", "bridge/orders-to-b", None),
        ("edge-oms-gateway-tls", "gateway/edge", Some(format!("DNS:edge-oms-gateway.{namespace}.svc"))),
    ] {
        let (copy, issued) = copied_from_cert_manager(cluster, namespace, secret)?;
        let certificate = kubectl_json(cluster, namespace, &format!("certificate/{secret}"))?
            .ok_or_else(|| anyhow::anyhow!("no Certificate {secret}"))?;
        let cert = secret_field(&copy, "tls.crt")?;
        let san = openssl_x509(dir, "leaf.crt", &cert, &["-ext", "subjectAltName"])?;
        let verified = run_ok(
            Command::new("openssl").arg("verify").arg("-CAfile").arg(dir.join("corp-ca.crt")).arg(dir.join("leaf.crt")),
        )?;
        println!(
            "pki: {secret} from cert-manager (Certificate issuerRef {}): {}; openssl verify with the issuer's CA: {}",
            certificate["spec"]["issuerRef"],
            san.trim().replace('\n', " "),
            verified.trim()
        );
        assert!(san.contains(&format!("URI:spiffe://cloud-a.oms/ns/{namespace}/{identity}")), "{san}");
        if let Some(name) = name {
            assert!(san.contains(&name), "{san}");
        }
        assert!(verified.trim().ends_with(": OK"), "{verified}");
        assert_eq!(secret_field(&issued, "tls.crt")?, cert, "the copy holds what cert-manager issued");
        assert_eq!(secret_field(&copy, "ca.crt")?, with_peers, "ca.crt: the issuer's CA and the peers'");
        assert_eq!(certificate["spec"]["issuerRef"]["name"], "corp-ca");
        first.push((secret, cert));
    }
    assert!(kubectl_json(cluster, namespace, "secret/oms-ca")?.is_none(), "no CA of the operator's own");
    let bundle = kubectl_json(cluster, namespace, "configmap/oms-trust-bundle")?.unwrap_or_default();
    assert_eq!(bundle["data"]["ca.crt"].as_str(), Some(with_peers.as_str()), "peers import the issuer's CA");
    brokers_trust_the_issuer_alone(cluster, namespace, dir, corp.cert_pem())?;

    // cert-manager renews at two thirds of the 30 s lifetime; the operator, running on, copies
    // the new certificate and reports its expiry.
    let (secret, cert) = &first[0];
    let renewed = poll("cert-manager's renewal in the Secret pods mount", Duration::from_secs(45), || {
        let Some(current) = kubectl_json(cluster, namespace, &format!("secret/{secret}"))? else { return Ok(None) };
        let pem = secret_field(&current, "tls.crt")?;
        Ok((pem != *cert).then_some(pem))
    })?;
    let revision = kubectl_json(cluster, namespace, &format!("certificate/{secret}"))?
        .and_then(|c| c["status"]["revision"].as_u64())
        .unwrap_or_default();
    println!(
        "pki: cert-manager renewed {secret} (Certificate revision {revision}): {} -> {}",
        openssl_x509(dir, "first.crt", cert, &["-serial"])?.trim(),
        openssl_x509(dir, "renewed.crt", &renewed, &["-serial"])?.trim()
    );
    assert!(revision >= 2, "the Certificate's revision after a renewal: {revision}");
    poll("the expiry metric at the renewed certificate's notAfter", DEADLINE, || {
        let Some(current) = kubectl_json(cluster, namespace, &format!("secret/{secret}"))? else { return Ok(None) };
        let pem = secret_field(&current, "tls.crt")?;
        Ok(expiry_metric_is(&operator, namespace, secret, dir, &pem)?.then_some(()))
    })?;

    // A gateway switched off (the operator deletes) and a Bridge deleted (owner references, the
    // garbage collector) leave neither their Certificates nor either Secret behind.
    cluster.apply(namespace, &gateway(false))?;
    run_ok(cluster.kubectl().args(["-n", namespace, "delete", "bridge/orders-to-b"]))?;
    for object in ["edge-oms-gateway-tls", "orders-to-b-oms-tls"]
        .iter()
        .flat_map(|s| [format!("certificate/{s}"), format!("secret/{s}"), format!("secret/{s}-issued")])
    {
        poll(&format!("{object} removed"), Duration::from_mins(1), || {
            Ok(kubectl_json(cluster, namespace, &object)?.is_none().then_some(()))
        })?;
    }
    Ok(())
}

/// The pod template's config hash of a StatefulSet.
fn config_hash(cluster: &Cluster, namespace: &str, name: &str) -> anyhow::Result<Option<String>> {
    Ok(kubectl_json(cluster, namespace, &format!("statefulset/{name}"))?.and_then(|sts| {
        sts["spec"]["template"]["metadata"]["annotations"]["openmessaging.cloud/config-hash"]
            .as_str()
            .map(str::to_owned)
    }))
}

#[test]
fn a_managed_broker_serves_a_certificate_for_every_pod_from_our_ca_alone_and_a_renewal_rolls_it() -> anyhow::Result<()>
{
    let case = PkiCase::new("pki-broker")?;
    let (cluster, namespace, dir) = (&case.cluster, case.ns.name.as_str(), &case.dir);
    // A peer cloud's CA in the trust bundle: bridges and gateways trust it, the brokers must not.
    let peer = oms_pki::Ca::generate("peer cloud CA", Duration::from_hours(1))?;
    std::fs::write(dir.join("peers.pem"), peer.cert_pem())?;
    let peers = dir.join("peers.pem").display().to_string();
    let _operator = case.operator(
        "cloud-a.oms",
        &["--peer-trust-bundle", &peers, "--broker-certificate-lifetime-seconds", LIFETIME_SECONDS],
    )?;
    cluster.apply(
        namespace,
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {name: edge}\n\
         spec: {driver: nats, managed: {replicas: 3}}\n",
    )?;
    let secret = poll("the brokers' certificate Secret", DEADLINE, || {
        kubectl_json(cluster, namespace, "secret/edge-broker-tls")
    })?;
    let ca = kubectl_json(cluster, namespace, "secret/oms-ca")?.ok_or_else(|| anyhow::anyhow!("no CA Secret"))?;
    let (cert, ca_cert) = (secret_field(&secret, "tls.crt")?, secret_field(&ca, "tls.crt")?);
    let san = openssl_x509(dir, "broker.crt", &cert, &["-ext", "subjectAltName"])?;
    std::fs::write(dir.join("ca.crt"), &ca_cert)?;
    let verified = run_ok(
        Command::new("openssl").arg("verify").arg("-CAfile").arg(dir.join("ca.crt")).arg(dir.join("broker.crt")),
    )?;
    println!("pki: broker certificate {}; openssl verify: {}", san.trim().replace('\n', " "), verified.trim());
    for name in [
        format!("DNS:*.edge.{namespace}.svc"),
        format!("DNS:edge-client.{namespace}.svc"),
        format!("URI:spiffe://cloud-a.oms/ns/{namespace}/broker/edge"),
    ] {
        assert!(san.contains(&name), "{name} in {san}");
    }
    assert!(verified.trim().ends_with(": OK"), "{verified}");
    assert_eq!(secret_field(&secret, "ca.crt")?, ca_cert, "the brokers trust our CA alone, not the peers'");

    // Clients are told: TLS on, checked against our CA alone; the status says TLS is on.
    let binding = poll("the binding says TLS", DEADLINE, || {
        let binding = kubectl_json(cluster, namespace, "secret/edge-binding")?;
        Ok(binding.filter(|b| secret_field(b, "TLS").is_ok_and(|tls| tls == "true")))
    })?;
    assert_eq!(secret_field(&binding, "CA_CERT")?, ca_cert);
    let ap = kubectl_json(cluster, namespace, "messagingaccesspoint/edge")?.ok_or_else(|| anyhow::anyhow!("gone"))?;
    assert_eq!(ap["status"]["tls"], "Enabled", "{ap}");
    let sts = kubectl_json(cluster, namespace, "statefulset/edge")?.ok_or_else(|| anyhow::anyhow!("no StatefulSet"))?;
    let volumes = sts["spec"]["template"]["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "edge-broker-tls"), "mounted: {volumes:?}");

    // Renewed at two thirds of the 30 s lifetime: a new certificate, and the pods roll to it.
    let hash = config_hash(cluster, namespace, "edge")?.ok_or_else(|| anyhow::anyhow!("no config hash"))?;
    let renewed = poll("the brokers' certificate renewed", Duration::from_secs(45), || {
        let Some(current) = kubectl_json(cluster, namespace, "secret/edge-broker-tls")? else { return Ok(None) };
        let pem = secret_field(&current, "tls.crt")?;
        Ok((pem != cert).then_some(pem))
    })?;
    assert!(openssl_x509(dir, "renewed.crt", &renewed, &["-ext", "subjectAltName"])?.contains("broker/edge"));
    poll("the pod template rolls to the renewed certificate", DEADLINE, || {
        Ok(config_hash(cluster, namespace, "edge")?.filter(|now| *now != hash))
    })?;

    // Plaintext on request: said in status and binding, nothing mounted.
    run_ok(
        cluster
            .kubectl()
            .args(["-n", namespace, "patch", "messagingaccesspoint/edge", "--type=merge", "-p"])
            .arg(r#"{"spec": {"tls": {"enabled": false}}}"#),
    )?;
    poll("status.tls Disabled", DEADLINE, || {
        let ap = kubectl_json(cluster, namespace, "messagingaccesspoint/edge")?;
        Ok(ap.filter(|ap| ap["status"]["tls"] == "Disabled"))
    })?;
    let binding = kubectl_json(cluster, namespace, "secret/edge-binding")?.ok_or_else(|| anyhow::anyhow!("gone"))?;
    assert_eq!(secret_field(&binding, "TLS")?, "false");
    let sts = kubectl_json(cluster, namespace, "statefulset/edge")?.ok_or_else(|| anyhow::anyhow!("no StatefulSet"))?;
    let volumes = sts["spec"]["template"]["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    assert!(volumes.iter().all(|v| v["name"] != "tls"), "nothing mounted without TLS: {volumes:?}");
    println!(
        "pki: broker certificate renewed and rolled; spec.tls.enabled false -> status.tls Disabled, binding TLS=false"
    );
    Ok(())
}
