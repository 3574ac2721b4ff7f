//! `oms-operator` started for real against a real API server.

use std::time::Duration;

use oms_e2e::{Cluster, Operator, http_get, poll, run, workspace_binary};

#[test]
fn operator_without_crds_exits_with_the_install_hint() -> anyhow::Result<()> {
    // A cluster that never gets our CRDs.
    let cluster = Cluster::up("e2e-bare")?;
    let output = run(std::process::Command::new(workspace_binary("oms-operator"))
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["--admin-addr", "127.0.0.1:0"]))?;
    assert!(!output.status.success(), "operator must refuse to start without CRDs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not installed"), "{stderr}");
    assert!(stderr.contains("kubectl apply --server-side -f crds/"), "{stderr}");
    assert!(stderr.contains("helm install"), "{stderr}");
    Ok(())
}

#[test]
fn operator_with_an_unreachable_api_server_says_so() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("oms-unreachable-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
    )?;
    let output =
        run(std::process::Command::new(workspace_binary("oms-operator")).arg("--kubeconfig").arg(&kubeconfig))?;
    std::fs::remove_dir_all(&dir)?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach the Kubernetes API server"), "{stderr}");
    Ok(())
}

#[test]
fn operator_serves_health_readiness_and_metrics_and_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let cluster = Cluster::up("cloud-a")?;
    cluster.install_crds()?;
    let operator = Operator::start(&cluster, &["--log-format", "json"])?;
    let admin = operator.admin;
    poll("operator /readyz is 200", Duration::from_secs(30), || {
        Ok(http_get(admin, "/readyz").ok().filter(|(status, _)| *status == 200))
    })?;
    assert_eq!(http_get(admin, "/healthz")?.0, 200);
    let (status, body) = http_get(admin, "/metrics")?;
    assert_eq!(status, 200);
    assert!(body.is_empty() || body.contains("# TYPE"), "Prometheus text format: {body}");

    let (code, stderr) = operator.stop(Duration::from_secs(10))?;
    assert_eq!(code, Some(0), "clean exit on SIGTERM; stderr: {stderr}");
    // JSON logs: every line is an object, and the shutdown was logged.
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line).map_err(|e| anyhow::anyhow!("{e}: {line}"))?;
    }
    assert!(stderr.contains("Shutdown requested."), "{stderr}");
    assert!(stderr.contains("Operator stopped cleanly."), "{stderr}");
    Ok(())
}
