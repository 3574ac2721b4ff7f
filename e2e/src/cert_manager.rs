//! cert-manager for the tests that make it the operator's CA (`pki.issuer`): its controller,
//! built from Go modules by `make tools` (`.bin/cert-manager`), and CA issuers.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::Cluster;
use crate::process::{DEADLINE, poll, run, run_ok, tool};

/// cert-manager's controller serving one cluster; killed on drop.
pub struct CertManager {
    child: Child,
}

impl CertManager {
    /// Installs cert-manager's CRDs on `cluster` (again is harmless) and starts its controller
    /// there as the cluster admin, logging to `log`.
    pub fn start(cluster: &Cluster, log: &Path) -> anyhow::Result<Self> {
        // The trailing slash: kubectl reads the directory behind the link.
        let crds = format!("{}/", tool("cert-manager-crds").display());
        run_ok(cluster.kubectl().args(["apply", "--server-side", "-f", &crds]))?;
        // Polled: `kubectl wait --for=condition` fails at once, rather than waiting, on a CRD the
        // API server has not yet given conditions.
        for crd in ["certificates", "certificaterequests", "issuers"] {
            let crd = format!("crd/{crd}.cert-manager.io");
            poll(&format!("{crd} Established"), Duration::from_mins(1), || {
                let established = run(cluster.kubectl().args([
                    "get",
                    &crd,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
                ]))?;
                Ok((String::from_utf8_lossy(&established.stdout) == "True").then_some(()))
            })?;
        }
        let child = Command::new(tool("cert-manager"))
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()?;
        Ok(Self { child })
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cert-manager CA Issuer `name` in `namespace` that signs with `ca` (its Secret of the same
/// name holds the CA's certificate and key); returns once cert-manager says it is Ready.
pub fn ca_issuer(cluster: &Cluster, namespace: &str, name: &str, ca: &oms_pki::Ca) -> anyhow::Result<()> {
    let indented = |pem: &str| format!("    {}\n", pem.trim_end().replace('\n', "\n    "));
    cluster.apply(
        namespace,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\nstringData:\n  \
             tls.crt: |\n{}  tls.key: |\n{}---\napiVersion: cert-manager.io/v1\nkind: Issuer\n\
             metadata: {{name: {name}}}\nspec: {{ca: {{secretName: {name}}}}}\n",
            indented(ca.cert_pem()),
            indented(ca.key_pem())
        ),
    )?;
    poll(&format!("cert-manager's CA Issuer {name} Ready"), DEADLINE, || {
        let output = run(cluster.kubectl().args([
            "-n",
            namespace,
            "get",
            "issuer",
            name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]))?;
        Ok((String::from_utf8_lossy(&output.stdout).trim() == "True").then_some(()))
    })
}
