//! `oms-bridge` as users run it: each role validates its config and names the bad field.

#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn bridge(args: &[&str]) -> Output {
    // cargo runs tests from the package directory (bridge/).
    let root = PathBuf::from("..");
    Command::new(env!("CARGO_BIN_EXE_oms-bridge")).args(args).current_dir(root).output().expect("oms-bridge runs")
}

#[test]
fn help_explains_both_roles() {
    let output = bridge(&["--help"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(text.contains("worker") && text.contains("gateway"), "{text}");
    assert!(text.contains("acknowledges the source only after the target confirmed"), "{text}");
}

#[test]
fn bad_worker_config_exits_non_zero_naming_the_field() {
    let output = bridge(&["worker", "--config", "deploy/examples/bridge-config/bad-worker.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("target.servers[1]"), "{stderr}");
    assert!(stderr.contains("host:port"), "{stderr}");
}

#[test]
fn example_configs_pass_the_check() {
    for (role, file) in [("worker", "worker.yaml"), ("worker", "worker-via-gateway.yaml"), ("gateway", "gateway.yaml")]
    {
        let path = format!("deploy/examples/bridge-config/{file}");
        let output = bridge(&[role, "--config", &path, "--check"]);
        assert!(output.status.success(), "{path}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(String::from_utf8_lossy(&output.stdout).starts_with("config ok"));
    }
}

#[test]
fn missing_config_file_is_reported_with_its_path() {
    let output = bridge(&["gateway", "--config", "/nonexistent/gateway.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/gateway.yaml"));
}
