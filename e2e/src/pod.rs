//! `oms-bridge` run as a pod would run it: its files mounted at `/etc/oms` in a mount namespace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

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
    /// What the process sees as `/etc/oms`.
    dir: PathBuf,
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
        Ok(Self { child, log, dir })
    }

    /// The file at `path` under `/etc/oms`, as the process sees it.
    pub fn file(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        Ok(std::fs::read(self.dir.join(path))?)
    }

    /// Replaces the file at `path` under `/etc/oms` with `content` in one step, as the kubelet
    /// updates a mounted Secret.
    pub fn update_file(&self, path: &str, content: &[u8]) -> anyhow::Result<()> {
        let file = self.dir.join(path);
        let partial = file.with_extension("updating");
        std::fs::write(&partial, content)?;
        std::fs::rename(&partial, &file)?;
        Ok(())
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

/// The files the first container of Deployment `name` sees under [`POD_MOUNT_ROOT`], read from
/// the API server as the kubelet would mount them: whole ConfigMaps and Secrets, and projected
/// Secret items by their paths (optional sources skip missing keys, required ones fail).
pub async fn deployment_files(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace).get(name).await?;
    let pod = deployment.spec.and_then(|s| s.template.spec).context("a pod template")?;
    let container = pod.containers.first().context("a container")?;
    let (config_maps, secrets) =
        (Api::<ConfigMap>::namespaced(client.clone(), namespace), Api::<Secret>::namespaced(client.clone(), namespace));
    let mut files = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let dir = mount.mount_path.strip_prefix(POD_MOUNT_ROOT).context("mounted under /etc/oms")?.trim_matches('/');
        let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name).context("the mounted volume")?;
        let mut add = |path: &str, content: Vec<u8>| files.push((format!("{dir}/{path}"), content));
        if let Some(source) = &volume.config_map {
            for (key, value) in config_maps.get(&source.name).await?.data.unwrap_or_default() {
                add(&key, value.into_bytes());
            }
        } else if let Some(source) = &volume.secret {
            let secret = secrets.get(source.secret_name.as_deref().unwrap_or_default()).await?;
            for (key, value) in secret.data.unwrap_or_default() {
                add(&key, value.0);
            }
        } else if let Some(projected) = &volume.projected {
            for source in projected.sources.iter().flatten().filter_map(|s| s.secret.as_ref()) {
                let data = secrets.get(&source.name).await?.data.unwrap_or_default();
                for item in source.items.iter().flatten() {
                    match data.get(&item.key) {
                        Some(value) => add(&item.path, value.0.clone()),
                        None if source.optional == Some(true) => {}
                        None => bail!("Secret {} has no key {}: the pod would not start", source.name, item.key),
                    }
                }
            }
        }
    }
    Ok(files)
}
