//! Real brokers started by `e2e/harness/broker.sh`: a test's own, or one that the tests of a
//! test binary share.

use std::ops::Deref;
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use crate::process::{free_server_port, repo_root, run_ok, workspace_binary};

/// `e2e/harness/broker.sh`, run from the repository root, with the readiness handshake it
/// waits on (the operator's own, `broker-probe`) built with the tests.
#[must_use]
pub fn broker_script() -> Command {
    let mut command = Command::new(repo_root().join("e2e/harness/broker.sh"));
    command.current_dir(repo_root()).env("BROKER_PROBE", workspace_binary("broker-probe"));
    command
}

/// A real broker started by `e2e/harness/broker.sh` on a free port; stopped on drop.
pub struct Broker {
    pub kind: String,
    pub name: String,
    pub port: u16,
}

impl Broker {
    /// Starts a broker of `kind` (kafka, nats, rabbitmq, mqtt); `name` gets the test's pid.
    pub fn up(kind: &str, name: &str) -> anyhow::Result<Self> {
        Self::up_with(kind, name, &[])
    }

    /// [`Broker::up`] with environment variables for broker.sh (e.g. `KAFKA_SASL_SSL_PORT`).
    pub fn up_with(kind: &str, name: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let broker =
            Self { kind: kind.to_owned(), name: format!("{name}-{}", std::process::id()), port: free_server_port() };
        run_ok(
            broker_script()
                .args(["up", kind, &broker.name, &broker.port.to_string()])
                .envs(env.iter().map(|(k, v)| (*k, v.as_str()))),
        )?;
        Ok(broker)
    }

    /// The broker of `kind` that this test binary's tests share: started by the first test that
    /// asks, stopped by broker.sh once the binary has exited. For tests that neither restart nor
    /// reconfigure it, each with queues and names of its own: a broker start is seconds of CPU
    /// that every test would otherwise pay.
    pub fn shared(kind: &str) -> anyhow::Result<&'static Broker> {
        static SHARED: Mutex<Vec<&'static Broker>> = Mutex::new(Vec::new());
        // Held while a broker starts: a test that asks meanwhile waits for that one.
        let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(broker) = shared.iter().find(|broker| broker.kind == kind) {
            return Ok(broker);
        }
        let broker = Self {
            kind: kind.to_owned(),
            name: format!("shared-{kind}-{}", std::process::id()),
            port: free_server_port(),
        };
        run_ok(
            broker_script()
                .args(["up", kind, &broker.name, &broker.port.to_string()])
                .env("BROKER_OWNER_PID", std::process::id().to_string()),
        )?;
        // Never dropped: broker.sh takes it down when this process is gone.
        let broker = Box::leak(Box::new(broker));
        shared.push(broker);
        Ok(broker)
    }

    /// Stops the broker (its data goes with it).
    pub fn down(&self) -> anyhow::Result<()> {
        run_ok(broker_script().args(["down", &self.name]))?;
        Ok(())
    }

    /// Starts the broker again on the same port after `down`, with empty storage.
    pub fn up_again(&self) -> anyhow::Result<()> {
        run_ok(broker_script().args(["up", &self.kind, &self.name, &self.port.to_string()]))?;
        Ok(())
    }

    /// Stops the broker gracefully and starts it again on the same port, keeping its data.
    pub fn restart(&self) -> anyhow::Result<()> {
        run_ok(broker_script().args(["restart", &self.name]))?;
        Ok(())
    }

    /// `127.0.0.1:<port>`.
    #[must_use]
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Another port broker.sh picked for it, by its name in the broker's `ports.env` (e.g.
    /// `NAMESRV_PORT`, RocketMQ's name server).
    pub fn port_of(&self, key: &str) -> anyhow::Result<u16> {
        let value = self.recorded(key)?.ok_or_else(|| anyhow::anyhow!("no {key} in {}'s ports.env", self.name))?;
        Ok(value.trim().parse()?)
    }

    /// A value broker.sh recorded in the broker's `ports.env` (e.g. RocketMQ's `TLS_DIR`).
    pub fn recorded(&self, key: &str) -> anyhow::Result<Option<String>> {
        let file = repo_root().join("e2e/.state/brokers").join(&self.name).join("ports.env");
        let text = std::fs::read_to_string(&file)?;
        Ok(text.lines().find_map(|line| Some(line.strip_prefix(key)?.strip_prefix('=')?.to_owned())))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// A test's broker: its own, stopped when the test drops it, or the binary's shared one.
pub enum TestBroker {
    Own(Broker),
    Shared(&'static Broker),
}

impl Deref for TestBroker {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        match self {
            TestBroker::Own(broker) => broker,
            TestBroker::Shared(broker) => broker,
        }
    }
}
