//! The broker harness: each broker kind starts as a real local process, a real client round-trips
//! a message through it, and `down` leaves none of its processes behind.

use std::process::Command;

use oms_e2e::{free_server_port, repo_root, run, run_ok};

fn broker(args: &[&str]) -> Command {
    let mut command = oms_e2e::broker_script();
    command.args(args);
    command
}

/// Processes whose command line mentions the broker's state directory.
fn leftovers(name: &str) -> anyhow::Result<String> {
    let dir = repo_root().join("e2e/.state/brokers").join(name);
    let output = run(Command::new("pgrep").arg("-af").arg(dir.to_string_lossy().as_ref()))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn round_trip(kind: &str) -> anyhow::Result<()> {
    let name = format!("t-{kind}-{}", std::process::id());
    let port = free_server_port().to_string();
    run_ok(&mut broker(&["up", kind, &name, &port]))?;
    let smoke = run(&mut broker(&["smoke", &name]));
    // Stopped whatever the smoke test said, so that a failure leaves nothing running.
    run_ok(&mut broker(&["down", &name]))?;
    let smoke = smoke?;
    assert!(
        smoke.status.success(),
        "{kind} smoke failed:\n{}\n{}",
        String::from_utf8_lossy(&smoke.stdout),
        String::from_utf8_lossy(&smoke.stderr)
    );
    let left = leftovers(&name)?;
    assert!(left.trim().is_empty(), "{kind}: processes left after down:\n{left}");
    Ok(())
}

#[test]
fn kafka_round_trips_a_message_and_stops_cleanly() -> anyhow::Result<()> {
    round_trip("kafka")
}

#[test]
fn nats_round_trips_a_message_and_stops_cleanly() -> anyhow::Result<()> {
    round_trip("nats")
}

#[test]
fn rabbitmq_round_trips_a_message_and_stops_cleanly() -> anyhow::Result<()> {
    round_trip("rabbitmq")
}

#[test]
fn mqtt_round_trips_a_message_and_stops_cleanly() -> anyhow::Result<()> {
    round_trip("mqtt")
}
