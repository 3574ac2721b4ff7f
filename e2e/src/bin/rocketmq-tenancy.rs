//! The operator's RocketMQ user code against a real broker, run by render_and_boot.rs inside the
//! booted pod's network, before and after RocketmqClient's `tenancy` attempts:
//!
//!   rocketmq-tenancy grant <name server> <admin user> <admin password> [permissive]
//!   rocketmq-tenancy remove-globex <name server> <admin user> <admin password>
//!
//! `grant` gives tenants `oms` (the owner) and `globex` of an access point they share their users
//! (password `<tenant>-password`) and ACLs as the operator does, and a second pass must change
//! nothing; `permissive` gives `globex` every topic and group as well, the control that shows the
//! attempts can tell a way in. `remove-globex` takes `globex` off as the operator does when the
//! access point stops sharing with it: its user goes, `oms` keeps its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use oms_operator::admin::{Endpoint, RocketAdmin};
use oms_operator::tenancy;

fn users(tenants: &[&str]) -> BTreeMap<String, String> {
    tenants.iter().map(|t| ((*t).to_owned(), format!("{t}-password"))).collect()
}

/// The broker registers with its name server a moment after the name server opens its port.
async fn connect(endpoint: &Endpoint) -> anyhow::Result<RocketAdmin> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match RocketAdmin::connect(endpoint).await {
            Ok(admin) => return Ok(admin),
            Err(error) if Instant::now() < deadline => {
                eprintln!("waiting for the broker: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error).context("the broker never registered"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, name_server, admin_user, admin_password, rest @ ..] = args.as_slice() else {
        anyhow::bail!(
            "usage: rocketmq-tenancy <grant|remove-globex> <name server> <admin user> <admin password> [permissive]"
        );
    };
    let endpoint = Endpoint {
        name_servers: vec![name_server.clone()],
        username: Some(admin_user.clone()),
        password: Some(admin_password.clone()),
        ..Endpoint::default()
    };
    let admin = connect(&endpoint).await?;
    match command.as_str() {
        "grant" => {
            let tenants = ["globex".to_owned(), "oms".to_owned()];
            let mut grants = tenancy::rocketmq_grants("oms", &tenants, true, false, &[]);
            if rest.first().map(String::as_str) == Some("permissive") {
                grants.insert("globex".into(), vec!["Group:*".into(), "Topic:*".into()]);
            }
            let first = admin.apply_tenants(&users(&["globex", "oms"]), &grants, admin_user).await?;
            anyhow::ensure!(first.users_set == ["globex", "oms"], "both users made: {first:?}");
            let again = admin.apply_tenants(&users(&["globex", "oms"]), &grants, admin_user).await?;
            anyhow::ensure!(again.is_empty(), "a second pass changes nothing: {again:?}");
            println!(
                "rocketmq users: {} set, {} grants made; a second pass changed nothing",
                first.users_set.len(),
                first.acls_created
            );
        }
        "remove-globex" => {
            let grants = tenancy::rocketmq_grants("oms", &["oms".to_owned()], true, false, &[]);
            let changes = admin.apply_tenants(&users(&["oms"]), &grants, admin_user).await?;
            anyhow::ensure!(
                changes.users_removed == ["globex"] && changes.users_set.is_empty() && changes.acls_deleted == 0,
                "removing globex: {changes:?}"
            );
            println!("rocketmq users: globex removed, oms kept");
        }
        other => anyhow::bail!("unknown command {other}"),
    }
    Ok(())
}
