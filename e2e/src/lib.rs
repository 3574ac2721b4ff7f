//! Test harness over the real parts: local control planes started by `e2e/harness/cluster.sh`,
//! the pinned tools in `.bin/`, and our own binaries run as subprocesses.
//!
//! A test asks for a cluster by name ([`Cluster::up`], idempotent), makes a fresh namespace
//! ([`Cluster::fresh_namespace`], deleted on drop), and drives it with the real kubectl and helm.

// A test harness: a missing tool or path should stop the test loudly, not be handled.
#![allow(clippy::missing_panics_doc, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The repository root. cargo runs tests from the package directory (e2e/); a path baked in at
/// compile time could name another checkout that shares the target directory.
#[must_use]
pub fn repo_root() -> PathBuf {
    let here = std::env::current_dir().expect("current directory");
    here.parent().expect("e2e/ has a parent").to_path_buf()
}

/// `e2e/.state/<name>`, created if missing: where a test or bench keeps its files (gitignored,
/// removed by `make clean-state`).
pub fn state_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = repo_root().join("e2e/.state").join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A pinned tool linked into `.bin/` by `make tools`.
#[must_use]
pub fn tool(name: &str) -> PathBuf {
    let path = repo_root().join(".bin").join(name);
    assert!(path.exists(), "{} is missing: run `make tools` (or `make test`, which does)", path.display());
    path
}

/// One of our own binaries, built by `cargo build --workspace` into the same target directory
/// as this test.
#[must_use]
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe.parent().and_then(Path::parent).expect("target/<profile>").join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

/// Runs a command and returns its output, with the command line in the error.
pub fn run(command: &mut Command) -> anyhow::Result<Output> {
    command.output().with_context(|| format!("cannot run {command:?}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(command: &mut Command) -> anyhow::Result<String> {
    let output = run(command)?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Polls `check` until it returns `Some`, or fails after `deadline` with the last error.
pub fn poll<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => None,
            Err(error) => Some(error),
        };
        if start.elapsed() > deadline {
            match last {
                Some(error) => bail!("{what}: not reached after {deadline:?}: {error:#}"),
                None => bail!("{what}: not reached after {deadline:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A free port for a server, below the kernel's ephemeral range (32768 and up): a port the kernel
/// hands out can be taken by any outgoing connection (other tests connect a lot) before the
/// server binds it. broker.sh keeps 30000-32767 for brokers' extra ports, so this draws from
/// 20000-29999, at random, and checks that the port is free now.
#[must_use]
pub fn free_server_port() -> u16 {
    let mut seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::from(d.subsec_nanos()));
    loop {
        // xorshift: no dependency needed for a port number.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = 20_000 + u16::try_from(seed % 10_000).unwrap_or(0);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

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

/// A plain HTTP/1.1 GET; returns (status, body). Enough for the admin endpoints.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).context("no status line")?.parse()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// A real broker started by `e2e/harness/broker.sh` on a free port; stopped on drop.
pub struct Broker {
    pub kind: String,
    pub name: String,
    pub port: u16,
}

impl Broker {
    fn script() -> Command {
        let mut command = Command::new(repo_root().join("e2e/harness/broker.sh"));
        command.current_dir(repo_root());
        command
    }

    /// Starts a broker of `kind` (kafka, nats, rabbitmq, mqtt); `name` gets the test's pid.
    pub fn up(kind: &str, name: &str) -> anyhow::Result<Self> {
        let broker =
            Self { kind: kind.to_owned(), name: format!("{name}-{}", std::process::id()), port: free_server_port() };
        broker.up_again()?;
        Ok(broker)
    }

    /// Stops the broker (its data goes with it).
    pub fn down(&self) -> anyhow::Result<()> {
        run_ok(Self::script().args(["down", &self.name]))?;
        Ok(())
    }

    /// Starts the broker again on the same port after `down`, with empty storage.
    pub fn up_again(&self) -> anyhow::Result<()> {
        run_ok(Self::script().args(["up", &self.kind, &self.name, &self.port.to_string()]))?;
        Ok(())
    }

    /// Stops the broker gracefully and starts it again on the same port, keeping its data.
    pub fn restart(&self) -> anyhow::Result<()> {
        run_ok(Self::script().args(["restart", &self.name]))?;
        Ok(())
    }

    /// `127.0.0.1:<port>`.
    #[must_use]
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// How long a test waits for the operator to act on a change.
pub const DEADLINE: Duration = Duration::from_secs(30);

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

/// A real TCP fault proxy (toxiproxy) between the worker and a broker; stopped on drop.
pub struct FaultProxy {
    server: Child,
    api: String,
    /// The port clients dial instead of the upstream.
    pub listen: u16,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> anyhow::Result<Self> {
        let status = Command::new(repo_root().join("e2e/harness/tools.sh")).arg("toxiproxy").status()?;
        anyhow::ensure!(status.success(), "cannot build toxiproxy");
        let api_port = free_server_port();
        let server = Command::new(tool("toxiproxy-server"))
            .args(["-host", "127.0.0.1", "-port", &api_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let api = format!("http://127.0.0.1:{api_port}");
        let listen = free_server_port();
        let proxy = Self { server, api, listen };
        poll("toxiproxy answers", Duration::from_secs(20), || {
            Ok(proxy.call("GET", "/version", None).is_ok().then_some(()))
        })?;
        proxy.call(
            "POST",
            "/proxies",
            Some(&format!(r#"{{"name":"link","listen":"127.0.0.1:{listen}","upstream":"{upstream}","enabled":true}}"#)),
        )?;
        Ok(proxy)
    }

    /// One call of toxiproxy's HTTP API with curl; fails on an HTTP error.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<String> {
        let mut command = Command::new("curl");
        command.args(["-sSf", "-X", method, &format!("{}{path}", self.api)]);
        if let Some(body) = body {
            command.args(["-H", "Content-Type: application/json", "-d", body]);
        }
        run_ok(&mut command)
    }

    pub fn set_enabled(&self, enabled: bool) -> anyhow::Result<()> {
        self.call("POST", "/proxies/link", Some(&format!(r#"{{"enabled":{enabled}}}"#)))?;
        Ok(())
    }

    pub fn add_latency(&self, ms: u32) -> anyhow::Result<()> {
        self.call(
            "POST",
            "/proxies/link/toxics",
            Some(&format!(r#"{{"name":"slow","type":"latency","attributes":{{"latency":{ms}}}}}"#)),
        )?;
        Ok(())
    }

    pub fn remove_latency(&self) -> anyhow::Result<()> {
        self.call("DELETE", "/proxies/link/toxics/slow", None)?;
        Ok(())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// An integer counter or gauge of an admin endpoint (worker, gateway), optionally the series with
/// a label of value `label` (e.g. `reason="loop"`, `operation="publish"`); 0 while it does not answer.
#[must_use]
pub fn metric(admin: std::net::SocketAddr, name: &str, label: Option<&str>) -> u64 {
    let Ok((_, body)) = http_get(admin, "/metrics") else { return 0 };
    let label = label.map(|value| format!(r#"="{value}""#));
    body.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| label.as_ref().is_none_or(|label| l.contains(label.as_str())))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A free loopback address for a worker's admin endpoint, so the test can read its metrics.
pub fn admin_address() -> anyhow::Result<std::net::SocketAddr> {
    Ok(format!("127.0.0.1:{}", free_server_port()).parse()?)
}

/// Polls a worker's metric until it reaches `goal` or `deadline` passes; returns the last value.
pub async fn wait_metric(admin: std::net::SocketAddr, name: &str, goal: u64, deadline: Duration) -> u64 {
    let started = Instant::now();
    loop {
        let value = metric(admin, name, None);
        if value >= goal || started.elapsed() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmRSS:` (resident now) or `VmHWM:` (peak).
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/{pid}/status"))
}

/// The CPU model and total memory (KiB) of this machine, for the description beside benchmark
/// figures.
#[must_use]
pub fn cpu_model_and_memory_kib() -> (Option<String>, Option<u64>) {
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
    });
    let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        info.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    });
    (model, memory)
}

/// Where `oms-bridge` pods mount their config, certificate and credentials (`/etc/oms/...`).
pub const POD_MOUNT_ROOT: &str = "/etc/oms";

/// An `oms-bridge` process that sees `files` (paths under `/etc/oms`, contents) exactly where a
/// pod would have its ConfigMap and Secret volumes: it runs in a mount namespace of its own with a
/// directory bind-mounted on `/etc/oms`, so two such processes on one host do not see each
/// other's files. Killed on drop.
pub struct PodProcess {
    child: Child,
    pub log: PathBuf,
}

impl PodProcess {
    pub fn start(name: &str, files: &[(String, Vec<u8>)], args: &[&str]) -> anyhow::Result<Self> {
        let dir = repo_root().join("e2e/.state/pods").join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, content) in files {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().context("file in a directory")?)?;
            std::fs::write(&file, content)?;
        }
        std::fs::create_dir_all(POD_MOUNT_ROOT)?;
        let log = dir.with_extension("log");
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", r#"mount --bind "$0" /etc/oms && exec "$@""#])
            .arg(&dir)
            .arg(workspace_binary("oms-bridge"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start oms-bridge in a mount namespace")?;
        Ok(Self { child, log })
    }

    /// Polls `admin`'s `/readyz` until it answers 200; fails at once, with the log, if the
    /// process exited (a port taken, a bad file).
    pub fn wait_ready(&mut self, admin: SocketAddr) -> anyhow::Result<()> {
        poll("the process is ready", Duration::from_secs(30), || {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                bail!("it exited ({status}):\n{log}");
            }
            Ok(http_get(admin, "/readyz").ok().filter(|(code, _)| *code == 200).map(|_| ()))
        })
        .with_context(|| format!("log: {}", self.log.display()))
    }

    /// Stops the process with SIGKILL, as a node failure would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The files of a client identity towards a gateway: the CA bundle that verifies the gateway, the
/// client's certificate and its key.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsPaths {
    /// As a worker config's `tls` field.
    #[must_use]
    pub fn yaml(&self) -> String {
        format!(
            "{{caFile: '{}', certFile: '{}', keyFile: '{}'}}",
            self.ca.display(),
            self.cert.display(),
            self.key.display()
        )
    }
}

/// A worker config end for `queue` of `access_point` behind the gateway at `server` (host:port).
#[must_use]
pub fn gateway_end(server: &str, access_point: &str, queue: &str, tls: &TlsPaths) -> String {
    format!(
        "{{driver: gateway, servers: ['{server}'], accessPoint: {access_point}, queue: {queue}, tls: {}}}",
        tls.yaml()
    )
}

/// One attempt to write a message through a gateway with the worker's own sink: true only if the
/// gateway stored it.
pub async fn gateway_publish_attempt(server: &str, access_point: &str, queue: &str, tls: &TlsPaths) -> bool {
    let yaml = format!(
        "bridge: {{name: probe, namespace: probe}}\nsource: {{driver: nats, servers: ['127.0.0.1:1'], queue: x}}\ntarget: {}\n",
        gateway_end(server, access_point, queue, tls)
    );
    let Ok(config) = oms_bridge_config::parse_worker("probe.yaml", &yaml) else { return false };
    let Ok(sink) = oms_bridge::connector::Sink::connect(&config.target, "probe").await else { return false };
    let message =
        oms_bridge::message::Message { id: "probe-1".into(), payload: b"probe".to_vec(), ..Default::default() };
    let Ok(confirm) = sink.send(&message).await else { return false };
    matches!(tokio::time::timeout(Duration::from_secs(10), confirm).await, Ok(Ok(_)))
}

/// One attempt to read through a gateway with the worker's own source: true only if the gateway
/// opened the stream.
pub async fn gateway_consume_attempt(server: &str, access_point: &str, queue: &str, tls: &TlsPaths) -> bool {
    let yaml = format!(
        "bridge: {{name: probe, namespace: probe}}\nsource: {}\ntarget: {{driver: nats, servers: ['127.0.0.1:1'], queue: x}}\n",
        gateway_end(server, access_point, queue, tls)
    );
    let Ok(config) = oms_bridge_config::parse_worker("probe.yaml", &yaml) else { return false };
    let start = oms_bridge::connector::Start::Earliest;
    oms_bridge::connector::Source::connect(
        &config.source,
        &oms_bridge::connector::Durable::bridge("e2e", "probe"),
        start,
        8,
    )
    .await
    .is_ok()
}
