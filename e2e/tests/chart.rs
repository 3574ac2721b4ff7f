//! The Helm chart with the real helm: lint, rendering, values validation, and install/uninstall
//! into a real API server.

use std::process::Command;

use anyhow::Context;
use oms_e2e::{Cluster, DEADLINE, poll, repo_root, run, run_ok, tool};
use serde_json::{Value, json};

const CHART: &str = "charts/oms-operator";

fn kube_version() -> anyhow::Result<String> {
    std::fs::read_to_string(repo_root().join("e2e/harness/versions.env"))?
        .lines()
        .find_map(|l| l.strip_prefix("KUBE_VERSION=").map(str::to_owned))
        .context("KUBE_VERSION pinned in versions.env")
}

fn helm() -> Command {
    let mut command = Command::new(tool("helm"));
    command.current_dir(repo_root());
    command
}

/// `helm template` with extra `--set` values; returns every rendered object.
fn render(sets: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut command = helm();
    command.args(["template", "oms", CHART, "--namespace", "oms-system", "--kube-version", &kube_version()?]);
    for set in sets {
        command.args(["--set", set]);
    }
    let yaml = run_ok(&mut command)?;
    let mut objects = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&yaml) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

fn find<'a>(objects: &'a [Value], kind: &str) -> anyhow::Result<&'a Value> {
    objects.iter().find(|o| o["kind"] == kind).with_context(|| format!("no {kind} rendered"))
}

#[test]
fn helm_lint_passes_in_strict_mode() -> anyhow::Result<()> {
    run_ok(helm().args(["lint", "--strict", CHART, "--kube-version", &kube_version()?]))?;
    Ok(())
}

#[test]
fn operator_deployment_is_hardened_and_probed_on_the_admin_port() -> anyhow::Result<()> {
    let objects =
        render(&["watchNamespaces={acme,beta}", "log.format=text", "pki.brokerCertificateLifetimeSeconds=600"])?;
    let pod = &find(&objects, "Deployment")?["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(container["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert!(container["resources"]["limits"]["memory"].is_string(), "memory limit set");
    let env = |name: &str| {
        container["env"].as_array().and_then(|e| e.iter().find(|v| v["name"] == name)).map(|v| v["value"].clone())
    };
    assert_eq!(env("OMS_WATCH_NAMESPACES"), Some(json!("acme,beta")));
    assert_eq!(env("OMS_LOG_FORMAT"), Some(json!("text")));
    assert_eq!(env("OMS_KAFKA_IMAGE"), Some(json!("apache/kafka:4.1.1")));
    assert_eq!(env("OMS_BROKER_CERTIFICATE_LIFETIME_SECONDS"), Some(json!("600")));
    // The default as digits: helm would write 7776000 as 7.776e+06, which the flag refuses.
    let defaults = render(&[])?;
    let env = find(&defaults, "Deployment")?["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    let lifetime =
        env.as_array().and_then(|e| e.iter().find(|v| v["name"] == "OMS_BROKER_CERTIFICATE_LIFETIME_SECONDS"));
    assert_eq!(lifetime.map(|v| v["value"].clone()), Some(json!("7776000")));
    Ok(())
}

/// The chart's appVersion, the tag its images default to.
fn app_version() -> anyhow::Result<String> {
    std::fs::read_to_string(repo_root().join(CHART).join("Chart.yaml"))?
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:").map(|v| v.trim().trim_matches('"').to_owned()))
        .context("appVersion in Chart.yaml")
}

/// The operator's container and the bridge image it is told to run; the brokers' probe image
/// must be the operator's own (oms-probe ships in it).
fn images(objects: &[Value]) -> anyhow::Result<(Value, Value)> {
    let pod = &find(objects, "Deployment")?["spec"]["template"]["spec"];
    let env = |name: &str| {
        pod["containers"][0]["env"]
            .as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == name))
            .map(|v| v["value"].clone())
            .with_context(|| format!("{name} set"))
    };
    let operator = pod["containers"][0]["image"].clone();
    anyhow::ensure!(env("OMS_PROBE_IMAGE")? == operator, "the probe image is the operator's: {operator}");
    Ok((operator, env("OMS_BRIDGE_IMAGE")?))
}

#[test]
fn images_default_to_the_chart_version_and_follow_a_registry_of_your_own() -> anyhow::Result<()> {
    let version = app_version()?;
    let (operator, bridge) = images(&render(&[])?)?;
    assert_eq!(operator, json!(format!("ghcr.io/openmessaging/oms-operator:{version}")));
    assert_eq!(bridge, json!(format!("ghcr.io/openmessaging/oms-bridge:{version}")));

    let own = render(&[
        "image.repository=registry.example.com/oms/oms-operator",
        "bridge.image.repository=registry.example.com/oms/oms-bridge",
        "bridge.image.tag=rc1",
        "imagePullSecrets[0].name=registry-login",
    ])?;
    let (operator, bridge) = images(&own)?;
    assert_eq!(operator, json!(format!("registry.example.com/oms/oms-operator:{version}")));
    assert_eq!(bridge, json!("registry.example.com/oms/oms-bridge:rc1"));
    let pod = &find(&own, "Deployment")?["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "registry-login"}]));
    Ok(())
}

#[test]
fn watching_every_namespace_leaves_the_namespace_variable_unset() -> anyhow::Result<()> {
    // Set but empty, the operator would read one namespace named "" instead of none.
    let objects = render(&[])?;
    let env = &find(&objects, "Deployment")?["spec"]["template"]["spec"]["containers"][0]["env"];
    let names: Vec<&Value> = env.as_array().context("env")?.iter().map(|v| &v["name"]).collect();
    assert!(!names.contains(&&json!("OMS_WATCH_NAMESPACES")), "{names:?}");
    Ok(())
}

/// The reviewed rules: every verb here is one the operator uses (see the chart's comments).
fn reviewed_rules() -> Value {
    let crud = json!(["get", "list", "watch", "create", "patch", "delete"]);
    json!([
        {"apiGroups": ["openmessaging.cloud"], "resources": ["messagingaccesspoints", "queues", "bridges"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": ["openmessaging.cloud"], "resources": ["messagingaccesspoints/status", "queues/status", "bridges/status"], "verbs": ["get", "patch"]},
        {"apiGroups": ["openmessaging.cloud"], "resources": ["messagingaccesspoints/finalizers", "queues/finalizers", "bridges/finalizers"], "verbs": ["update"]},
        {"apiGroups": ["apps"], "resources": ["statefulsets", "deployments"], "verbs": crud},
        {"apiGroups": [""], "resources": ["services", "configmaps", "secrets", "serviceaccounts"], "verbs": crud},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "delete"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": crud},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": crud},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"], "verbs": ["get", "create", "patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "patch", "update"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ])
}

#[test]
fn cluster_role_grants_exactly_the_reviewed_rules_and_no_wildcards() -> anyhow::Result<()> {
    let objects = render(&[])?;
    let rules = &find(&objects, "ClusterRole")?["rules"];
    assert_eq!(rules, &reviewed_rules(), "ClusterRole rules changed: review them and update this list");
    let role = find(&objects, "Role")?;
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}])
    );
    let text = serde_json::to_string(&objects)?;
    assert!(!text.contains("\"*\""), "no wildcard in any rendered RBAC rule");
    Ok(())
}

#[test]
fn monitoring_objects_render_only_when_enabled() -> anyhow::Result<()> {
    let default = render(&[])?;
    assert!(
        default
            .iter()
            .all(|o| !["ServiceMonitor", "PodMonitor", "PrometheusRule"].contains(&o["kind"].as_str().unwrap_or("")))
    );
    let enabled = render(&[
        "metrics.serviceMonitor.enabled=true",
        "metrics.podMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    ])?;
    assert_eq!(find(&enabled, "ServiceMonitor")?["spec"]["endpoints"][0]["port"], "metrics");
    // Workers and gateways in every namespace, by the labels the operator gives their pods
    // (operator/src/bridge/render.rs, gateway/render.rs), on their admin port.
    let pods = &find(&enabled, "PodMonitor")?["spec"];
    assert_eq!(pods["selector"]["matchLabels"], json!({"app.kubernetes.io/managed-by": "oms-operator"}));
    assert_eq!(
        pods["selector"]["matchExpressions"],
        json!([{"key": "app.kubernetes.io/component", "operator": "In", "values": ["bridge-worker", "gateway"]}])
    );
    assert_eq!(pods["namespaceSelector"], json!({"any": true}));
    assert_eq!(pods["podMetricsEndpoints"][0]["port"], "admin");
    let watched = render(&["metrics.podMonitor.enabled=true", "watchNamespaces={acme,beta}"])?;
    assert_eq!(find(&watched, "PodMonitor")?["spec"]["namespaceSelector"], json!({"matchNames": ["acme", "beta"]}));
    let alerts: Vec<_> = find(&enabled, "PrometheusRule")?["spec"]["groups"][0]["rules"]
        .as_array()
        .context("rules")?
        .iter()
        .map(|r| r["alert"].clone())
        .collect();
    assert!(alerts.contains(&json!("OmsCertificateExpiringSoon")), "{alerts:?}");
    Ok(())
}

#[test]
fn peer_clouds_are_trusted_only_when_given() -> anyhow::Result<()> {
    let env_names = |objects: &[Value]| -> anyhow::Result<Vec<String>> {
        let env = &find(objects, "Deployment")?["spec"]["template"]["spec"]["containers"][0]["env"];
        Ok(env.as_array().context("env")?.iter().filter_map(|e| e["name"].as_str().map(str::to_owned)).collect())
    };
    let default = render(&[])?;
    assert!(!env_names(&default)?.iter().any(|n| n.starts_with("OMS_PEER")));
    assert!(default.iter().all(|o| o["kind"] != "ConfigMap"), "no peer bundle by default");
    let peered = render(&["pki.peerTrustDomains={cloud-a.oms,cloud-c.oms}", "pki.peerTrustBundle=PEM"])?;
    let deployment = find(&peered, "Deployment")?;
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let domains = env.as_array().context("env")?.iter().find(|e| e["name"] == "OMS_PEER_TRUST_DOMAINS");
    assert_eq!(domains.map(|e| e["value"].clone()), Some(json!("cloud-a.oms,cloud-c.oms")));
    assert_eq!(find(&peered, "ConfigMap")?["data"]["bundle.pem"], "PEM");
    assert!(env_names(&peered)?.contains(&"OMS_PEER_TRUST_BUNDLE".to_owned()));
    Ok(())
}

#[test]
fn a_cert_manager_issuer_is_passed_on_with_the_right_to_apply_certificates() -> anyhow::Result<()> {
    let env_of = |objects: &[Value], name: &str| -> anyhow::Result<Option<Value>> {
        let env = &find(objects, "Deployment")?["spec"]["template"]["spec"]["containers"][0]["env"];
        Ok(env.as_array().context("env")?.iter().find(|e| e["name"] == name).map(|e| e["value"].clone()))
    };
    let certificates = json!({"apiGroups": ["cert-manager.io"], "resources": ["certificates"], "verbs": ["get", "create", "patch", "delete"]});
    let default = render(&[])?;
    assert_eq!(env_of(&default, "OMS_PKI_ISSUER_KIND")?, None, "our own CA by default");
    let issued = render(&["pki.issuer.kind=ClusterIssuer", "pki.issuer.name=corp-ca"])?;
    assert_eq!(env_of(&issued, "OMS_PKI_ISSUER_KIND")?, Some(json!("ClusterIssuer")));
    assert_eq!(env_of(&issued, "OMS_PKI_ISSUER_NAME")?, Some(json!("corp-ca")));
    let rules = find(&issued, "ClusterRole")?["rules"].as_array().context("rules")?.clone();
    assert!(rules.contains(&certificates), "{rules:?}");
    Ok(())
}

#[test]
fn pull_secrets_reach_the_operator_pod_and_the_pods_it_starts() -> anyhow::Result<()> {
    let objects = render(&["imagePullSecrets[0].name=regcred", "imagePullSecrets[1].name=mirror"])?;
    let pod = &find(&objects, "Deployment")?["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}, {"name": "mirror"}]));
    let env = pod["containers"][0]["env"].as_array().context("env")?;
    let passed = env.iter().find(|e| e["name"] == "OMS_IMAGE_PULL_SECRETS").map(|e| e["value"].clone());
    assert_eq!(passed, Some(json!("regcred,mirror")));
    let default = render(&[])?;
    let env = default
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .map(|d| d["spec"]["template"]["spec"]["containers"][0]["env"].to_string());
    assert!(!env.unwrap_or_default().contains("OMS_IMAGE_PULL_SECRETS"), "none by default");
    Ok(())
}

#[test]
fn a_half_issuer_or_an_unknown_kind_is_refused() -> anyhow::Result<()> {
    // Half an issuer, or a kind cert-manager does not have, is refused; so is a lifetime under the
    // hour cert-manager's webhook requires.
    let issuer = "pki.issuer.kind=Issuer,pki.issuer.name=corp-ca";
    for (set, named) in [
        ("pki.issuer.name=corp-ca", "issuer"),
        ("pki.issuer.kind=Vault", "issuer"),
        (&format!("{issuer},pki.certificateLifetimeSeconds=600") as &str, "certificateLifetimeSeconds"),
    ] {
        let output = run(helm().args(["template", "oms", CHART, "--set", set, "--kube-version", &kube_version()?]))?;
        assert!(!output.status.success(), "{set} must be refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{set}: {stderr}");
    }
    let ours = render(&["pki.certificateLifetimeSeconds=600"])?;
    assert!(find(&ours, "Deployment").is_ok(), "short lifetimes stay allowed with our own CA");
    Ok(())
}

#[test]
fn leader_election_off_drops_the_lease_role() -> anyhow::Result<()> {
    let objects = render(&["leaderElection.enabled=false"])?;
    assert!(objects.iter().all(|o| o["kind"] != "Role"), "no Lease Role without leader election");
    Ok(())
}

#[test]
fn bad_values_are_refused_naming_the_value() -> anyhow::Result<()> {
    let output =
        run(helm().args(["template", "oms", CHART, "--set", "log.format=xml", "--kube-version", &kube_version()?]))?;
    assert!(!output.status.success(), "log.format=xml must be refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("log.format") || stderr.contains("log/format"), "{stderr}");
    // A misspelt value is refused, not ignored: the old string form of bridge.image too.
    for (set, named) in [
        ("imge.tag=1", "imge"),
        ("bridge.image=x/oms-bridge:1", "bridge/image"),
        ("metrics.podMonitr.enabled=true", "podMonitr"),
    ] {
        let output = run(helm().args(["template", "oms", CHART, "--set", set, "--kube-version", &kube_version()?]))?;
        assert!(!output.status.success(), "{set} must be refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{set}: {stderr}");
    }
    Ok(())
}

#[test]
fn helm_install_creates_the_operator_objects_and_uninstall_removes_them() -> anyhow::Result<()> {
    let cluster = Cluster::up("cloud-a")?;
    cluster.install_crds()?;
    let ns = cluster.fresh_namespace("helm")?;
    let release = format!("oms-{}", std::process::id());
    run_ok(cluster.helm().args(["install", &release, CHART, "--namespace", &ns.name]))?;
    let fullname = format!("{release}-oms-operator");
    let objects = [
        format!("deployment/{fullname}"),
        format!("serviceaccount/{fullname}"),
        format!("service/{fullname}-metrics"),
        format!("role/{fullname}-leader-election"),
    ];
    for object in &objects {
        run_ok(cluster.kubectl().args(["get", "-n", &ns.name, object]))?;
    }
    run_ok(cluster.kubectl().args([
        "get",
        &format!("clusterrole/{fullname}"),
        &format!("clusterrolebinding/{fullname}"),
    ]))?;
    let status = run_ok(cluster.helm().args(["status", &release, "--namespace", &ns.name, "-o", "json"]))?;
    let status: Value = serde_json::from_str(&status)?;
    assert_eq!(status["info"]["status"], "deployed");

    // The chart's admission policy sees what the schema cannot: a target that is the source once
    // the Bridge's own namespace is spelled out. (The API server loads a new policy within a few
    // seconds, hence the poll.)
    let looping = format!(
        "apiVersion: openmessaging.cloud/v1alpha1\nkind: Bridge\nmetadata: {{name: loop}}\n\
         spec: {{source: {{queueRef: {{name: orders}}}}, target: {{queueRef: {{name: orders, namespace: {}}}}}}}\n",
        ns.name
    );
    let refusal = poll("the admission policy refusing a looping Bridge", DEADLINE, || {
        let output = cluster.apply_output(&ns.name, &looping, &["--dry-run=server"])?;
        Ok((!output.status.success()).then(|| String::from_utf8_lossy(&output.stderr).into_owned()))
    })?;
    println!("chart: looping Bridge refused: {}", refusal.trim());
    assert!(refusal.contains("spec.target must name a different queue than spec.source"), "{refusal}");

    run_ok(cluster.helm().args(["uninstall", &release, "--namespace", &ns.name, "--wait"]))?;
    let left = run(cluster.kubectl().args(["get", &format!("clusterrole/{fullname}")]))?;
    assert!(!left.status.success(), "ClusterRole left after uninstall");
    for object in &objects {
        let left = run(cluster.kubectl().args(["get", "-n", &ns.name, object]))?;
        assert!(!left.status.success(), "{object} left after uninstall");
    }
    let policy = run(cluster.kubectl().args(["get", &format!("validatingadmissionpolicy/{fullname}-bridges")]))?;
    assert!(!policy.status.success(), "the admission policy left after uninstall");
    // The CRDs stay: deleting them would delete every user's objects (Helm's rule for crds/).
    run_ok(cluster.kubectl().args(["get", "crd", "queues.openmessaging.cloud"]))?;
    Ok(())
}
