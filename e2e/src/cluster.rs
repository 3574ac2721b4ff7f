//! Local control planes (`e2e/harness/cluster.sh`), fresh namespaces, the operator as a
//! subprocess, and [`Scenario`]: all three for one test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::admin::http_get;
use crate::process::{DEADLINE, free_server_port, poll, repo_root, run, run_ok, tool, workspace_binary};

/// Serializes cluster start-up: tests of one binary run on several threads.
static CLUSTER_UP: Mutex<()> = Mutex::new(());

/// A local control plane started by `e2e/harness/cluster.sh`.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    pub kubeconfig: PathBuf,
}

impl Cluster {
    /// Starts the named cluster unless it already runs.
    pub fn up(name: &str) -> anyhow::Result<Self> {
        let _guard = CLUSTER_UP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        run_ok(Command::new(repo_root().join("e2e/harness/cluster.sh")).args(["up", name]))?;
        Ok(Self { name: name.to_owned(), kubeconfig: repo_root().join("e2e/.state").join(name).join("kubeconfig") })
    }

    /// A Kubernetes client for this cluster, as the cluster admin.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A kubeconfig that acts as ServiceAccount `namespace/name`, with a one-hour token.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> anyhow::Result<PathBuf> {
        let token = run_ok(self.kubectl().args(["-n", namespace, "create", "token", name, "--duration", "1h"]))?;
        let admin = std::fs::read_to_string(&self.kubeconfig)?;
        let server = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .context("server in the admin kubeconfig")?
            .to_owned();
        let state = self.kubeconfig.parent().context("state dir")?;
        let path = state.join(format!("sa-{namespace}-{name}.kubeconfig"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: '{server}', certificate-authority: '{ca}'}}}}]\n\
                 users: [{{name: sa, user: {{token: '{token}'}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: sa}}}}]\n\
                 current-context: c\n",
                ca = state.join("pki/ca.crt").display(),
                token = token.trim(),
            ),
        )?;
        Ok(path)
    }

    /// A `kubectl` command bound to this cluster.
    #[must_use]
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(tool("kubectl"));
        command.arg("--kubeconfig").arg(&self.kubeconfig).current_dir(repo_root());
        command
    }

    /// A `helm` command bound to this cluster, with its caches inside the cluster's state.
    #[must_use]
    pub fn helm(&self) -> Command {
        let state = self.kubeconfig.parent().expect("state dir").join("helm");
        let mut command = Command::new(tool("helm"));
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HELM_CACHE_HOME", state.join("cache"))
            .env("HELM_CONFIG_HOME", state.join("config"))
            .env("HELM_DATA_HOME", state.join("data"))
            .current_dir(repo_root());
        command
    }

    /// `kubectl apply -f -` of `yaml` into `namespace` with extra arguments; returns the output.
    pub fn apply_output(&self, namespace: &str, yaml: &str, extra_args: &[&str]) -> anyhow::Result<Output> {
        use std::io::Write;
        let mut child = self
            .kubectl()
            .args(["apply", "-n", namespace, "-f", "-"])
            .args(extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().context("kubectl stdin")?.write_all(yaml.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// `kubectl apply` of `yaml` into `namespace`, which must succeed.
    pub fn apply(&self, namespace: &str, yaml: &str) -> anyhow::Result<()> {
        let output = self.apply_output(namespace, yaml, &[])?;
        if !output.status.success() {
            bail!(
                "kubectl apply failed: {}
{yaml}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Applies `crds/` and waits until `kubectl get oms` answers.
    pub fn install_crds(&self) -> anyhow::Result<()> {
        run_ok(self.kubectl().args(["apply", "--server-side", "--force-conflicts", "-f", "crds/"]))?;
        run_ok(self.kubectl().args(["wait", "--for", "condition=established", "--timeout=60s"]).args(CRD_NAMES))?;
        // Discovery catches up with a newly established CRD a moment later.
        poll("kubectl get oms", Duration::from_secs(30), || {
            Ok(run(self.kubectl().args(["get", "oms", "--all-namespaces"]))?.status.success().then_some(()))
        })
    }

    /// The namespace `name` (a tenant present in several clusters); deleted when the guard drops.
    pub fn namespace(&self, name: &str) -> anyhow::Result<Namespace> {
        run_ok(self.kubectl().args(["create", "namespace", name]))?;
        Ok(Namespace { name: name.to_owned(), cluster: self.clone() })
    }

    /// A new namespace with a unique name; deleted when the guard drops.
    pub fn fresh_namespace(&self, prefix: &str) -> anyhow::Result<Namespace> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        run_ok(self.kubectl().args(["create", "namespace", &name]))?;
        Ok(Namespace { name, cluster: self.clone() })
    }
}

/// The CRDs of this project, by name.
pub const CRD_NAMES: [&str; 3] = [
    "crd/messagingaccesspoints.openmessaging.cloud",
    "crd/queues.openmessaging.cloud",
    "crd/bridges.openmessaging.cloud",
];

/// A namespace that is deleted (without waiting) when dropped.
#[derive(Debug)]
pub struct Namespace {
    pub name: String,
    cluster: Cluster,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.cluster.kubectl().args(["delete", "namespace", &self.name, "--wait=false"]).output();
    }
}

/// `oms-operator` running as a subprocess; SIGTERM on [`Operator::stop`], SIGKILL on drop.
/// Its log goes to a file (a pipe nobody reads would block it once full).
pub struct Operator {
    child: Child,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator against `cluster` as the cluster admin, admin server on a free port.
    pub fn start(cluster: &Cluster, extra_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_kubeconfig(&cluster.kubeconfig, extra_args)
    }

    /// Starts the operator with the identity of `kubeconfig`.
    pub fn start_with_kubeconfig(kubeconfig: &Path, extra_args: &[&str]) -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin: SocketAddr = format!("127.0.0.1:{}", free_server_port()).parse()?;
        let log = std::env::temp_dir().join(format!(
            "oms-operator-{}-{}.log",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let child = Command::new(workspace_binary("oms-operator"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--admin-addr")
            .arg(admin.to_string())
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start oms-operator")?;
        let mut operator = Self { child, admin, log };
        // Started means serving /healthz; an early exit (a bad flag, no CRDs) fails here, with its log.
        poll("oms-operator serves /healthz", Duration::from_secs(30), || {
            if let Some(status) = operator.child.try_wait()? {
                let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
                bail!("oms-operator exited at start ({status}):\n{log}");
            }
            Ok(http_get(operator.admin, "/healthz").ok().filter(|(code, _)| *code == 200).map(|_| ()))
        })?;
        Ok(operator)
    }

    /// The process id (part of the operator's leader-election identity outside a pod).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL, as a node failure would, and reaps it.
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code and what it wrote to stderr.
    pub fn stop(mut self, deadline: Duration) -> anyhow::Result<(Option<i32>, String)> {
        let pid = self.child.id().to_string();
        run_ok(Command::new("kill").args(["-TERM", &pid]))?;
        let status = poll("oms-operator exits after SIGTERM", deadline, || Ok(self.child.try_wait()?))?;
        Ok((status.code(), std::fs::read_to_string(&self.log)?))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A fresh namespace on `cloud-a` with the CRDs, and an operator that watches only it.
pub struct Scenario {
    pub cluster: Cluster,
    pub ns: Namespace,
    pub operator: Operator,
}

impl Scenario {
    /// Starts the scenario; `operator_args` add to `--namespace <ns> --leader-election=false`.
    pub fn start(prefix: &str, operator_args: &[&str]) -> anyhow::Result<Self> {
        let cluster = Cluster::up("cloud-a")?;
        cluster.install_crds()?;
        let ns = cluster.fresh_namespace(prefix)?;
        let mut args = vec!["--namespace", ns.name.as_str(), "--leader-election=false"];
        args.extend_from_slice(operator_args);
        let operator = Operator::start(&cluster, &args)?;
        Ok(Self { cluster, ns, operator })
    }

    /// kubectl in the scenario's namespace; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        run_ok(self.cluster.kubectl().args(["-n", &self.ns.name]).args(args))
    }

    /// Applies YAML in the namespace.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        self.cluster.apply(&self.ns.name, yaml)
    }

    /// An object as JSON.
    pub fn json(&self, object: &str) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.kubectl(&["get", object, "-o", "json"])?)?)
    }

    /// Polls `object` until `check` holds; returns the object.
    pub fn wait_for(
        &self,
        object: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        poll(&format!("{object}: {what}"), DEADLINE, || {
            let output = run(self.cluster.kubectl().args(["-n", &self.ns.name, "get", object, "-o", "json"]))?;
            if !output.status.success() {
                return Ok(None);
            }
            let value: serde_json::Value = serde_json::from_slice(&output.stdout)?;
            Ok(check(&value).then_some(value))
        })
    }

    /// Polls until `object` no longer exists.
    pub fn wait_gone(&self, object: &str) -> anyhow::Result<()> {
        poll(&format!("{object} is deleted"), Duration::from_mins(1), || {
            let output = run(self.cluster.kubectl().args(["-n", &self.ns.name, "get", object]))?;
            Ok((!output.status.success()).then_some(()))
        })
    }
}

/// The condition of `type_` in an object's status.
#[must_use]
pub fn condition<'a>(object: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}
