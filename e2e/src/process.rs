//! Running things: the repository's paths, pinned tools and our binaries, commands whose failure
//! shows their output, polls with a deadline, free ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
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
        std::thread::sleep(poll_interval(start.elapsed()));
    }
}

/// How long [`poll`] waits before looking again: often at first, where most checks pass, then
/// less. Each look is often a `kubectl` run (about 50 ms of CPU, and the API server's share); with
/// several tests polling side by side on two cores, looking five times a second for the whole wait
/// took CPU the brokers and the operator under test needed.
#[must_use]
pub fn poll_interval(waited: Duration) -> Duration {
    if waited < Duration::from_secs(2) {
        Duration::from_millis(200)
    } else if waited < Duration::from_secs(15) {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(1)
    }
}

/// A free port for a server, below the kernel's ephemeral range (32768 and up): a port the kernel
/// hands out can be taken by any outgoing connection (other tests connect a lot) before the
/// server binds it. broker.sh keeps 30000-32767 for brokers' extra ports, so this draws from
/// 20000-29999, at random, and checks that the port is free now.
#[must_use]
pub fn free_server_port() -> u16 {
    // A count of the calls in the seed too: two calls within one tick of a coarse clock had the
    // same seed and drew the same port (a gateway and its admin endpoint then shared one).
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut seed = (u64::from(std::process::id()) << 32)
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::from(d.subsec_nanos()))
        ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1;
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

/// How long a test waits for the operator to act on a change.
pub const DEADLINE: Duration = Duration::from_secs(30);
