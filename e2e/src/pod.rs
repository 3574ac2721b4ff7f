//! `oms-bridge` run as a pod would run it: its files mounted at `/etc/oms` in a mount namespace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::admin::http_get;
use crate::process::{poll, repo_root, workspace_binary};

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
