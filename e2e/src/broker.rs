//! Real brokers started by `e2e/harness/broker.sh`.

use std::process::Command;

use crate::process::{free_server_port, repo_root, run_ok};

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
