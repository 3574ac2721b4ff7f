//! Tenant `globex` against tenant `oms` on a managed Kafka shared by both (`oms` owns it), run by
//! render_and_boot.rs inside the booted pod's network:
//!
//!   kafka-tenancy <host> <port> <admin user> <admin password> [permissive]
//!
//! First, as the operator's user, the operator's own code gives both tenants their SCRAM users and
//! ACLs (and a second pass must change nothing); `permissive` gives `globex` every name as well, the
//! control that shows the attempts can tell a way in. Then each try of `globex` is judged by its effect
//! on what `oms` sees, and both tenants' own operations must work. Prints the summary line
//! `tenancy kafka: ...` that the test reads; which try got in goes to stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use oms_bridge::connector::Durable;
use oms_operator::admin::{Endpoint, KafkaAdmin, kafka_log_in};
use oms_operator::tenancy::{self, KafkaAcl};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(5);
/// How long the tenants' own operations may take to be allowed: ACLs reach the broker's
/// authorizer through the metadata log, a moment after CreateAcls returns.
const ALLOWED_WITHIN: Duration = Duration::from_secs(30);
const SECRET: &str = "oms-secret";
/// What `oms` wrote before its access point was shared.
const LEGACY: &str = "oms-before-sharing";

struct Tenancy {
    servers: String,
}

impl Tenancy {
    /// A client config as `user` (password `<user>-password`, or `password`); none without a user.
    fn config(&self, user: Option<&str>, password: Option<&str>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.servers).set("socket.timeout.ms", "5000");
        if let Some(user) = user {
            let password = password.map_or_else(|| format!("{user}-password"), str::to_owned);
            kafka_log_in(&mut config, user, &password);
        }
        config
    }

    fn admin(&self, user: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
        Ok(self.config(Some(user), None).create()?)
    }

    fn consumer(&self, user: &str, group: &str) -> anyhow::Result<BaseConsumer> {
        Ok(self.config(Some(user), None).set("group.id", group).set("enable.auto.commit", "false").create()?)
    }

    async fn create_topic(&self, user: &str, topic: &str) -> anyhow::Result<()> {
        let options = AdminOptions::new().request_timeout(Some(TIMEOUT));
        let results =
            self.admin(user)?.create_topics(&[NewTopic::new(topic, 1, TopicReplication::Fixed(1))], &options).await?;
        for result in results {
            result.map_err(|(_, code)| anyhow::anyhow!("create {topic}: {code}"))?;
        }
        Ok(())
    }

    async fn produce(&self, user: &str, topic: &str, body: &str) -> anyhow::Result<()> {
        let producer: FutureProducer =
            self.config(Some(user), None).set("message.timeout.ms", "5000").set("acks", "all").create()?;
        producer
            .send(FutureRecord::<(), _>::to(topic).payload(body), TIMEOUT)
            .await
            .map_err(|(error, _)| anyhow::anyhow!("produce to {topic}: {error}"))?;
        Ok(())
    }

    /// The first message of partition 0 of `topic`, read as `user` in `group` (committed).
    fn read_first(&self, user: &str, group: &str, topic: &str) -> anyhow::Result<String> {
        let consumer = self.consumer(user, group)?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, 0, Offset::Beginning)?;
        consumer.assign(&assignment)?;
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(500)) {
                let message = message?;
                let body = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
                consumer.commit_message(&message, CommitMode::Sync)?;
                return Ok(body);
            }
        }
        anyhow::bail!("nothing to read in {topic}")
    }

    // What `oms` itself sees, to judge an attempt by. A look that fails stops the run: an error
    // here must not pass for a change the attempt made.

    /// Messages in partition 0 of `topic` as `oms` sees them.
    fn oms_count(&self, topic: &str) -> anyhow::Result<i64> {
        let consumer = self.consumer("oms", "oms.counter")?;
        let (low, high) =
            consumer.fetch_watermarks(topic, 0, TIMEOUT).with_context(|| format!("oms counts {topic}"))?;
        Ok(high - low)
    }

    /// Partitions of `topic` as `oms` sees them; 0 when it does not exist.
    fn oms_partitions(&self, topic: &str) -> anyhow::Result<usize> {
        let consumer = self.consumer("oms", "oms.counter")?;
        let metadata =
            consumer.fetch_metadata(Some(topic), TIMEOUT).with_context(|| format!("oms looks up {topic}"))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len()))
    }

    /// `retention.ms` of `topic` as `oms` sees it.
    async fn oms_retention(&self, topic: &str) -> anyhow::Result<Option<String>> {
        let described = self
            .admin("oms")?
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new().request_timeout(Some(TIMEOUT)))
            .await
            .with_context(|| format!("oms describes {topic}"))?;
        let mut entries = Vec::new();
        for resource in described {
            entries.extend(resource.map_err(|code| anyhow::anyhow!("oms describes {topic}: {code}"))?.entries);
        }
        Ok(entries.into_iter().find(|e| e.name == "retention.ms").and_then(|e| e.value))
    }

    /// The offset `oms.reader` committed for `oms.orders`, as `oms` sees it.
    fn oms_committed(&self) -> anyhow::Result<Option<i64>> {
        let consumer = self.consumer("oms", "oms.reader")?;
        let mut partitions = TopicPartitionList::new();
        partitions.add_partition("oms.orders", 0);
        let committed = consumer.committed_offsets(partitions, TIMEOUT).context("oms reads its committed offset")?;
        Ok(committed.find_partition("oms.orders", 0).and_then(|p| p.offset().to_raw()))
    }
}

#[derive(Default)]
struct Tally {
    own: u32,
    own_ok: u32,
    tries: u32,
    got_in: u32,
}

impl Tally {
    /// A tenant's own operation: it must succeed once its ACLs apply.
    async fn mine<F, Fut>(&mut self, what: &str, mut operation: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        self.own += 1;
        let deadline = Instant::now() + ALLOWED_WITHIN;
        loop {
            match operation().await {
                Ok(()) => {
                    self.own_ok += 1;
                    return;
                }
                Err(error) if Instant::now() >= deadline => {
                    eprintln!("own operation failed: {what}: {error:#}");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// An attempt on the other tenant's queues, judged `succeeded` by its effect.
    fn attempt(&mut self, what: &str, succeeded: bool) {
        self.tries += 1;
        if succeeded {
            self.got_in += 1;
            eprintln!("got in: {what}");
        }
    }
}

/// The Queues on the access point as the operator reads them: oms's `orders`, named before sharing.
fn recorded() -> [(String, String); 1] {
    [("oms".to_owned(), "orders".to_owned())]
}

fn users(tenants: &[String]) -> BTreeMap<String, String> {
    tenants.iter().map(|t| (t.clone(), format!("{t}-password"))).collect()
}

/// Gives `oms` and `globex` their users and `acls` as the operator does; a second pass must change
/// nothing. `before` are the ACLs the cluster had (those of the access point before it was shared).
async fn apply_users(
    admin: &KafkaAdmin,
    admin_user: &str,
    acls: &[KafkaAcl],
    before: &[KafkaAcl],
) -> anyhow::Result<String> {
    let tenants = users(&["globex".to_owned(), "oms".to_owned()]);
    let none = BTreeSet::new();
    let first = admin.apply_tenants(&tenants, acls, admin_user, &none).await.context("first apply")?;
    let applied: BTreeSet<String> = tenants.keys().cloned().collect();
    // A broker lists a new SCRAM user a little after the controller took it: until this broker's
    // metadata shows the first apply, an apply sets the users it does not see again (the same
    // passwords). Applies must settle to changing nothing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut runs = 1;
    let second = loop {
        runs += 1;
        let again = admin.apply_tenants(&tenants, acls, admin_user, &applied).await.context("another apply")?;
        let only_users_again = again.acls_created == 0 && again.acls_deleted == 0 && again.users_removed.is_empty();
        if again.is_empty() || !only_users_again || Instant::now() > deadline {
            break again;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let new = acls.iter().filter(|a| !before.contains(a)).count();
    let gone = before.iter().filter(|a| !acls.contains(a)).count();
    anyhow::ensure!(
        first.users_set.len() == 2 && first.acls_created == new && first.acls_deleted == gone,
        "first apply: {first:?}"
    );
    anyhow::ensure!(second.is_empty(), "applies must settle to changing nothing: {second:?}");
    Ok(format!(
        "kafka users: the first apply set 2 users, made {new} ACLs and removed {gone}, apply {runs} changed nothing"
    ))
}

/// The access point before it is shared: `oms` alone, with every name. `oms` makes `orders` (a
/// name without its prefix, as an unshared access point gives), writes to it and reads it in a
/// group of its own; returns the ACLs this left on the cluster.
async fn before_sharing(admin: &KafkaAdmin, admin_user: &str, k: &Tenancy) -> anyhow::Result<Vec<KafkaAcl>> {
    let oms = ["oms".to_owned()];
    let acls = tenancy::kafka_acls("oms", &oms, false, false, &[]);
    admin.apply_tenants(&users(&oms), &acls, admin_user, &BTreeSet::new()).await.context("unshared apply")?;
    let mut tally = Tally::default();
    tally.mine("oms creates orders before sharing", || k.create_topic("oms", "orders")).await;
    tally.mine("oms writes orders before sharing", || k.produce("oms", "orders", LEGACY)).await;
    tally
        .mine("oms reads orders before sharing", || async {
            anyhow::ensure!(k.read_first("oms", "reader", "orders")? == LEGACY, "not its message");
            Ok(())
        })
        .await;
    anyhow::ensure!(tally.own_ok == tally.own, "oms works on its unshared access point");
    Ok(acls)
}

/// Waits for the broker to answer the operator's user: the pod's port opens before Kafka serves
/// requests, and boot.sh only waits for the port.
async fn wait_until_answering(admin: &KafkaAdmin) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while let Err(error) = admin.observe("oms.orders").await {
        anyhow::ensure!(Instant::now() < deadline, "the broker does not answer the operator's user: {error}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Takes `globex` off the access point as the operator does: its user and its `acls` go.
async fn remove_globex(admin: &KafkaAdmin, admin_user: &str, acls: usize) -> anyhow::Result<()> {
    let tenants = ["oms".to_owned()];
    let oms_only = tenancy::kafka_acls("oms", &tenants, true, false, &recorded());
    let applied: BTreeSet<String> = tenants.iter().cloned().collect();
    let changes = admin.apply_tenants(&users(&tenants), &oms_only, admin_user, &applied).await?;
    anyhow::ensure!(
        changes.users_removed == ["globex"] && changes.acls_deleted == acls && changes.users_set.is_empty(),
        "removing globex: {changes:?}"
    );
    Ok(())
}

/// What `oms` made before sharing stays its own: it reads `orders` in its unprefixed group and
/// writes to it; `globex` cannot read it.
async fn after_sharing(k: &Tenancy, tally: &mut Tally) {
    tally
        .mine("oms reads orders, written before sharing, in its own group", || async {
            anyhow::ensure!(k.read_first("oms", "reader2", "orders")? == LEGACY, "not its message");
            Ok(())
        })
        .await;
    tally.mine("oms writes orders after sharing", || k.produce("oms", "orders", LEGACY)).await;
    let legacy = k.read_first("globex", "globex.legacy", "orders");
    tally.attempt("read orders, oms's from before sharing", legacy.is_ok_and(|body| body == LEGACY));
}

/// After every attempt, each tenant still reads what it wrote, and `oms.orders` holds `before`.
async fn both_still_have_their_own(k: &Tenancy, tally: &mut Tally, before: i64) {
    tally
        .mine("oms reads oms.orders back", || async {
            anyhow::ensure!(k.read_first("oms", "oms.reader2", "oms.orders")? == SECRET, "not its message");
            anyhow::ensure!(k.oms_count("oms.orders")? == before, "oms.orders changed");
            Ok(())
        })
        .await;
    tally
        .mine("globex reads globex.orders", || async {
            anyhow::ensure!(k.read_first("globex", "globex.reader", "globex.orders")? == "theirs", "not its message");
            Ok(())
        })
        .await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (host, port, admin_user, admin_password, permissive) = match &args[..] {
        [_, host, port, user, password] => (host, port, user, password, false),
        [_, host, port, user, password, mode] if mode == "permissive" => (host, port, user, password, true),
        _ => anyhow::bail!("usage: kafka-tenancy <host> <port> <admin user> <admin password> [permissive]"),
    };
    let servers = format!("{host}:{port}");
    let admin = KafkaAdmin::connect(&Endpoint {
        servers: vec![servers.clone()],
        username: Some(admin_user.clone()),
        password: Some(admin_password.clone()),
        ..Endpoint::default()
    })?;
    let tenants = ["globex".to_owned(), "oms".to_owned()];
    let mut acls = tenancy::kafka_acls("oms", &tenants, true, false, &recorded());
    if permissive {
        acls.extend(tenancy::kafka_acls("globex", &["globex".to_owned()], false, false, &[]));
    }
    let globex_acls = acls.iter().filter(|a| a.principal == "User:globex").count();
    wait_until_answering(&admin).await?;
    let k = Tenancy { servers };
    let unshared_acls = before_sharing(&admin, admin_user, &k).await?;
    // Now shared with globex, as the operator does it: oms's Queue `orders` keeps its name.
    eprintln!("{}", apply_users(&admin, admin_user, &acls, &unshared_acls).await?);
    let mut tally = Tally::default();
    after_sharing(&k, &mut tally).await;

    tally.mine("oms creates oms.orders", || k.create_topic("oms", "oms.orders")).await;
    tally.mine("oms writes oms.orders", || k.produce("oms", "oms.orders", SECRET)).await;
    tally.mine("globex creates globex.orders", || k.create_topic("globex", "globex.orders")).await;
    tally.mine("globex writes globex.orders", || k.produce("globex", "globex.orders", "theirs")).await;
    tally
        .mine("oms reads oms.orders", || async {
            anyhow::ensure!(k.read_first("oms", "oms.reader", "oms.orders")? == SECRET, "not its message");
            Ok(())
        })
        .await;
    // The groups bridge workers and gateways keep a tenant's positions in are the tenant's.
    for group in
        [Durable::bridge("globex", "orders-out").kafka_group(), Durable::gateway("globex", "peer").kafka_group()]
    {
        let what = format!("globex reads globex.orders in group {group}");
        tally
            .mine(&what, || async {
                anyhow::ensure!(k.read_first("globex", &group, "globex.orders")? == "theirs", "not its message");
                Ok(())
            })
            .await;
    }
    let before = k.oms_count("oms.orders")?;
    let committed = k.oms_committed()?;
    let retention = k.oms_retention("oms.orders").await?;

    let read = k.read_first("globex", "globex.reader", "oms.orders");
    tally.attempt("read oms.orders", read.is_ok_and(|body| body == SECRET));
    let sneaky = k.read_first("globex", "oms.reader", "oms.orders");
    tally.attempt("read oms.orders in oms's consumer group", sneaky.is_ok_and(|body| body == SECRET));
    let oms_bridge = Durable::bridge("oms", "orders-out").kafka_group();
    let in_oms_group = k.read_first("globex", &oms_bridge, "globex.orders");
    tally.attempt("keep positions in oms's bridge group", in_oms_group.is_ok());
    let _ = k.produce("globex", "oms.orders", "intruder").await;
    tally.attempt("write oms.orders", k.oms_count("oms.orders")? != before);
    let created = k.create_topic("globex", "oms.new").await;
    tally.attempt("create oms.new", created.is_ok() || k.oms_partitions("oms.new")? > 0);
    let grow = NewPartitions::new("oms.orders", 2);
    let options = AdminOptions::new().request_timeout(Some(TIMEOUT));
    let _ = k.admin("globex")?.create_partitions(&[grow], &options).await;
    tally.attempt("add partitions to oms.orders", k.oms_partitions("oms.orders")? != 1);
    let alter = AlterConfig::new(ResourceSpecifier::Topic("oms.orders")).set("retention.ms", "1000");
    let _ = k.admin("globex")?.alter_configs(&[alter], &options).await;
    tally.attempt("change oms.orders' retention", k.oms_retention("oms.orders").await? != retention);
    let _ = k.admin("globex")?.delete_groups(&["oms.reader"], &options).await;
    tally.attempt("delete oms's consumer group", k.oms_committed()? != committed);
    let _ = k.admin("globex")?.delete_topics(&["oms.orders"], &options).await;
    tally.attempt("delete oms.orders", k.oms_partitions("oms.orders")? == 0);
    let listed = k.consumer("globex", "globex.lister")?.fetch_metadata(None, TIMEOUT);
    tally.attempt("see oms.orders listed", listed.is_ok_and(|m| m.topics().iter().any(|t| t.name() == "oms.orders")));
    let wrong: anyhow::Result<BaseConsumer> =
        k.config(Some("oms"), Some("wrong")).set("group.id", "oms.x").create().map_err(Into::into);
    let wrong_read = wrong.and_then(|c| Ok(c.fetch_metadata(Some("oms.orders"), TIMEOUT)?));
    tally.attempt("connect as oms with a wrong password", wrong_read.is_ok());
    let anonymous: anyhow::Result<BaseConsumer> =
        k.config(None, None).set("group.id", "x").create().map_err(Into::into);
    let anonymous_read = anonymous.and_then(|c| Ok(c.fetch_metadata(Some("oms.orders"), TIMEOUT)?));
    tally.attempt("connect without a password", anonymous_read.is_ok());

    both_still_have_their_own(&k, &mut tally, before).await;
    tally.mine("taking globex off removes its user and ACLs", || remove_globex(&admin, admin_user, globex_acls)).await;
    let removed = k.read_first("globex", "globex.reader3", "globex.orders");
    tally.attempt("read globex.orders after globex's grant was removed", removed.is_ok());
    println!(
        "tenancy kafka: tenant globex: {} attempts on tenant oms's queues, {} succeeded; own operations: {} of {} succeeded",
        tally.tries, tally.got_in, tally.own_ok, tally.own
    );
    Ok(())
}
