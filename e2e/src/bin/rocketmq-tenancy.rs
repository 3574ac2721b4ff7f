//! The operator's RocketMQ user code against a real broker, run by render_and_boot.rs inside the
//! booted pod's network, before and after RocketmqClient's `tenancy` attempts:
//!
//!   rocketmq-tenancy grant <name server> <admin user> <admin password>
//!   rocketmq-tenancy remove-globex <name server> <admin user> <admin password>
//!
//! `grant` gives tenants `oms` (the owner) and `globex` their users (password `<tenant>-password`)
//! and grants as the operator would on an access point they share, and a second pass must change
//! nothing. `remove-globex` takes `globex` off as the operator does when a tenant goes: its user
//! goes, `oms` keeps its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::net::ToSocketAddrs as _;

use anyhow::Context as _;
use oms_operator::admin::{Endpoint, RocketAdmin};
use oms_operator::tenancy;
use oms_probe::rocketmq::{RemotingConnection, answer, code};

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
    let [command, name_server, admin_user, admin_password] = args.as_slice() else {
        anyhow::bail!("usage: rocketmq-tenancy <grant|remove-globex> <name server> <admin user> <admin password>");
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
            let grants = tenancy::rocketmq_grants("oms", &tenants, true, false, &[]);
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
            // Its login no longer reaches even its own topic.
            let masters = oms_operator::admin::rocketmq_masters(&endpoint).await?;
            let broker = masters.values().next().context("a master")?;
            let addr = broker.to_socket_addrs()?.next().context("the master's address")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let login = Some(("globex".to_owned(), "globex-password".to_owned()));
            let mut connection = RemotingConnection::open(addr, None, login, deadline).map_err(anyhow::Error::msg)?;
            let fields = [("topic", "globex%orders"), ("queueId", "0")];
            let answer = connection.call(code::GET_MAX_OFFSET, &fields, &[]).map_err(anyhow::Error::msg)?;
            anyhow::ensure!(answer.code != answer::SUCCESS, "globex still reads its topic after removal");
            println!("rocketmq users: globex removed ({}), oms kept", answer.describe());
        }
        other => anyhow::bail!("unknown command {other}"),
    }
    Ok(())
}
