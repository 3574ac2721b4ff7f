//! A TCP fault proxy (toxiproxy) between a bridge and a broker.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{free_server_port, poll, repo_root, run_ok, tool};

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

    /// Adds `ms` of round trip: half on the way to the upstream, half on the way back.
    pub fn add_round_trip(&self, ms: u32) -> anyhow::Result<()> {
        for stream in ["upstream", "downstream"] {
            let body = format!(
                r#"{{"name":"rtt-{stream}","type":"latency","stream":"{stream}","attributes":{{"latency":{}}}}}"#,
                ms / 2
            );
            self.call("POST", "/proxies/link/toxics", Some(&body))?;
        }
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
