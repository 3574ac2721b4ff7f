//! The API contract against a real kube-apiserver: CRDs install, kubectl lists and explains the
//! kinds, every example is accepted, every invalid example is refused with the message it names.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use oms_e2e::{Cluster, repo_root, run, run_ok};

const CLUSTER: &str = "cloud-a";

fn cluster_with_crds() -> anyhow::Result<Cluster> {
    let cluster = Cluster::up(CLUSTER)?;
    cluster.install_crds()?;
    Ok(cluster)
}

fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?.map(|entry| entry.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    Ok(files)
}

#[test]
fn kubectl_get_oms_lists_all_three_kinds_and_explain_documents_fields() -> anyhow::Result<()> {
    let cluster = cluster_with_crds()?;
    let resources = run_ok(cluster.kubectl().args(["api-resources", "--categories", "oms", "-o", "name"]))?;
    for kind in
        ["bridges.openmessaging.cloud", "messagingaccesspoints.openmessaging.cloud", "queues.openmessaging.cloud"]
    {
        assert!(resources.contains(kind), "category oms lacks {kind}: {resources}");
    }
    let ns = cluster.fresh_namespace("get-oms")?;
    run_ok(cluster.kubectl().args(["apply", "-n", &ns.name, "-f", "deploy/examples/kafka.yaml"]))?;
    let listed = run_ok(cluster.kubectl().args(["get", "oms", "-n", &ns.name, "-o", "name"]))?;
    for object in [
        "messagingaccesspoint.openmessaging.cloud/orders-kafka",
        "queue.openmessaging.cloud/orders",
        "bridge.openmessaging.cloud/orders-to-audit",
    ] {
        assert!(listed.contains(object), "kubectl get oms lacks {object}: {listed}");
    }
    let table = run_ok(cluster.kubectl().args(["get", "queues", "-n", &ns.name]))?;
    let header = table.lines().next().unwrap_or_default();
    for column in ["ACCESS POINT", "PARTITIONS", "READY", "AGE"] {
        assert!(header.contains(column), "queue columns lack {column}: {header}");
    }
    let explained = run_ok(cluster.kubectl().args(["explain", "queue.spec.partitions"]))?;
    assert!(explained.contains("May grow, never"), "{explained}");
    Ok(())
}

#[test]
fn every_valid_example_is_accepted_by_server_side_dry_run() -> anyhow::Result<()> {
    let cluster = cluster_with_crds()?;
    let ns = cluster.fresh_namespace("examples")?;
    let files = yaml_files(&repo_root().join("deploy/examples"))?;
    assert!(files.len() >= 5, "expected an example per driver, found {files:?}");
    for file in files {
        run_ok(cluster.kubectl().args(["apply", "--dry-run=server", "-n", &ns.name, "-f"]).arg(&file))?;
    }
    Ok(())
}

/// The message an invalid example must produce, from its `# expect-error:` line.
fn expected_error(text: &str, file: &Path) -> anyhow::Result<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("# expect-error:"))
        .map(|m| m.trim().to_owned())
        .with_context(|| format!("{} has no `# expect-error:` line", file.display()))
}

#[test]
fn every_invalid_example_is_refused_with_the_message_it_names() -> anyhow::Result<()> {
    let cluster = cluster_with_crds()?;
    let ns = cluster.fresh_namespace("invalid")?;
    let files = yaml_files(&repo_root().join("deploy/examples/invalid"))?;
    assert!(files.len() >= 10, "expected the invalid examples, found {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let expected = expected_error(&text, file)?;
        let documents: Vec<&str> = text.split("\n---\n").collect();
        // Two documents: the first is created for real, the second is the refused update.
        let refused = match documents.as_slice() {
            [only] => *only,
            [existing, update] => {
                cluster.apply(&ns.name, existing)?;
                update
            }
            _ => bail!("{} must hold one or two documents", file.display()),
        };
        let output = cluster.apply_output(&ns.name, refused, &["--dry-run=server"])?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            failures.push(format!("{}: accepted, expected refusal with {expected:?}", file.display()));
        } else if !stderr.contains(&expected) {
            failures.push(format!("{}: refused with {stderr:?}, expected {expected:?}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{} invalid examples refused with their expected messages", files.len());
    Ok(())
}

#[test]
fn server_reports_the_pinned_kubernetes_version() -> anyhow::Result<()> {
    let cluster = Cluster::up(CLUSTER)?;
    let version = run(cluster.kubectl().args(["version", "-o", "json"]))?;
    let json: serde_json::Value = serde_json::from_slice(&version.stdout)?;
    let pinned = std::fs::read_to_string(repo_root().join("e2e/harness/versions.env"))?
        .lines()
        .find_map(|l| l.strip_prefix("KUBE_VERSION=").map(str::to_owned))
        .context("KUBE_VERSION pinned")?;
    assert_eq!(json["serverVersion"]["gitVersion"], pinned.as_str());
    assert_eq!(json["clientVersion"]["gitVersion"], pinned.as_str());
    Ok(())
}

#[test]
fn cluster_down_stops_every_process_it_started_and_removes_its_state() -> anyhow::Result<()> {
    let name = format!("down-{}", std::process::id());
    let cluster = Cluster::up(&name)?;
    let state = cluster.kubeconfig.parent().context("state dir")?.to_path_buf();
    let pids: Vec<String> = std::fs::read_dir(state.join("pids"))?
        .map(|entry| std::fs::read_to_string(entry?.path()).map(|p| p.trim().to_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(pids.len(), 3, "etcd, kube-apiserver and kube-controller-manager were recorded");
    run_ok(std::process::Command::new(repo_root().join("e2e/harness/cluster.sh")).args(["down", &name]))?;
    for pid in &pids {
        let alive = std::path::Path::new("/proc").join(pid).exists();
        assert!(!alive, "process {pid} of cluster {name} still runs after down");
    }
    assert!(!state.exists(), "state left in {}", state.display());
    Ok(())
}
