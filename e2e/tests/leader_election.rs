//! Two operator processes against one API server: only the Lease holder reconciles, the standby
//! takes over when the leader dies, and a leader that stops cleanly gives the Lease up.

use std::time::Duration;

use oms_e2e::{Cluster, Operator, http_get, poll, run, run_ok};
use serde_json::Value;

const RECONCILED: &str = r#"oms_operator_reconcile_total{kind="MessagingAccessPoint""#;

fn lease_holder(cluster: &Cluster, namespace: &str) -> anyhow::Result<Option<(String, i64)>> {
    let output = run(cluster.kubectl().args(["-n", namespace, "get", "lease", "oms-operator-leader", "-o", "json"]))?;
    if !output.status.success() {
        return Ok(None);
    }
    let lease: Value = serde_json::from_slice(&output.stdout)?;
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_owned();
    Ok(Some((holder, lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0))))
}

fn replicas(cluster: &Cluster, namespace: &str) -> anyhow::Result<Option<i64>> {
    let output =
        run(cluster.kubectl().args(["-n", namespace, "get", "statefulset", "ha", "-o", "jsonpath={.spec.replicas}"]))?;
    Ok(output.status.success().then(|| String::from_utf8_lossy(&output.stdout).parse().ok()).flatten())
}

#[test]
fn only_the_leader_reconciles_and_the_standby_takes_over_after_a_kill() -> anyhow::Result<()> {
    let cluster = Cluster::up("cloud-a")?;
    cluster.install_crds()?;
    let ns = cluster.fresh_namespace("leader")?;
    let args = ["--namespace", &ns.name, "--leader-election-namespace", &ns.name, "--lease-duration-seconds", "10"];
    let first = Operator::start(&cluster, &args)?;
    let deadline = Duration::from_secs(30);
    let first_id = format!("-{}", first.pid());
    poll("the first operator leads", deadline, || {
        Ok(lease_holder(&cluster, &ns.name)?.filter(|(holder, _)| holder.ends_with(&first_id)))
    })?;
    let second = Operator::start(&cluster, &args)?;
    poll("the standby answers /readyz", deadline, || {
        Ok(http_get(second.admin, "/readyz").ok().filter(|(s, _)| *s == 200))
    })?;

    cluster.apply(&ns.name, "apiVersion: openmessaging.cloud/v1alpha1\nkind: MessagingAccessPoint\nmetadata: {name: ha}\nspec: {driver: nats, managed: {replicas: 2}}\n")?;
    poll("the leader renders the broker", deadline, || Ok(replicas(&cluster, &ns.name)?.filter(|r| *r == 2)))?;
    let (_, standby_metrics) = http_get(second.admin, "/metrics")?;
    assert!(!standby_metrics.contains(RECONCILED), "the standby reconciled while the leader held the Lease");
    let (_, transitions_before) = lease_holder(&cluster, &ns.name)?.unwrap_or_default();

    first.kill()?;
    let second_id = format!("-{}", second.pid());
    let (_, transitions_after) = poll("the standby takes the Lease", deadline, || {
        Ok(lease_holder(&cluster, &ns.name)?.filter(|(holder, _)| holder.ends_with(&second_id)))
    })?;
    assert_eq!(transitions_after, transitions_before + 1);
    run_ok(cluster.kubectl().args([
        "-n",
        &ns.name,
        "patch",
        "messagingaccesspoint",
        "ha",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"managed":{"replicas":3}}}"#,
    ]))?;
    poll("the new leader reconciles the change", deadline, || Ok(replicas(&cluster, &ns.name)?.filter(|r| *r == 3)))?;
    let (code, stderr) = second.stop(Duration::from_secs(10))?;
    assert_eq!(code, Some(0), "{stderr}");
    // A clean stop gives the Lease up, so a rollout's new replica need not wait for it to expire.
    let (holder, _) = lease_holder(&cluster, &ns.name)?.unwrap_or_default();
    assert_eq!(holder, "", "the stopped leader released the Lease");
    Ok(())
}
