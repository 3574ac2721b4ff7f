//! Validation: a config file's types ([`crate::file`]) into the validated configs the worker and
//! the gateway run with. Every error names the field (`source.servers[1]`) and says how to fix it.
//! The operator runs the same functions on what it renders, before it deploys anything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::file::{AdminFile, Delivery, EndpointFile, GatewayFile, Ordering, Protocol, StartFrom, TlsFile, WorkerFile};
use crate::filter::Filter;

/// Largest number of messages a worker may hold unacknowledged.
const MAX_IN_FLIGHT: u32 = 100_000;
/// In-flight window when the config does not set one: enough to keep a cross-cloud link busy,
/// small enough to bound duplicates after a crash.
const DEFAULT_IN_FLIGHT: u32 = 1_000;

/// A configuration error; `field` is the path inside the file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}: {field}: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub problem: String,
}

/// TLS files of a client or server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    /// Certificate and key, both or neither.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name checked in a broker's certificate instead of the host dialled.
    pub server_name: Option<String>,
}

/// One end of a bridge, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub protocol: Protocol,
    pub servers: Vec<(String, u16)>,
    pub queue: String,
    /// `<namespace>/<name>` of the access point: the provenance that prevents loops.
    pub access_point: Option<String>,
    pub tls: Option<TlsFiles>,
    /// RocketMQ's name servers; empty for the other protocols.
    pub name_servers: Vec<(String, u16)>,
    /// Directory with `username` and `password` files.
    pub credentials_dir: Option<PathBuf>,
}

/// A worker's validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    pub name: String,
    pub namespace: String,
    pub source: Endpoint,
    pub target: Endpoint,
    pub delivery: Delivery,
    pub ordering: Ordering,
    /// Messages that do not match are acknowledged without being sent.
    pub filter: Option<Filter>,
    pub start_from: StartFrom,
    /// `startTimestamp` in milliseconds since the epoch, with `startFrom: Timestamp`.
    pub start_timestamp_ms: Option<i64>,
    pub in_flight: u32,
    /// The Lease (in `namespace`) a worker holds while it reads the source; without one, every
    /// worker reads.
    pub lease: Option<String>,
    pub admin_listen: SocketAddr,
}

/// The default admin address of both roles.
const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9090";

/// Reads and validates a worker config file.
pub fn load_worker(path: &Path) -> Result<WorkerConfig, ConfigError> {
    let text = read(path)?;
    parse_worker(&path.display().to_string(), &text)
}

/// Parses and validates a worker config; `file` names the source in errors.
pub fn parse_worker(file: &str, text: &str) -> Result<WorkerConfig, ConfigError> {
    validate_worker(file, deserialize(file, text)?)
}

/// Validates a worker config file's contents; `file` names the source in errors.
pub fn validate_worker(file: &str, raw: WorkerFile) -> Result<WorkerConfig, ConfigError> {
    let err = |field: &str, problem: String| ConfigError { file: file.to_owned(), field: field.to_owned(), problem };
    let name = non_empty(&raw.bridge.name).ok_or_else(|| err("bridge.name", "must not be empty".into()))?;
    let namespace =
        non_empty(&raw.bridge.namespace).ok_or_else(|| err("bridge.namespace", "must not be empty".into()))?;
    let source = endpoint(file, "source", raw.source)?;
    let target = endpoint(file, "target", raw.target)?;
    if source.protocol == target.protocol && source.servers == target.servers && source.queue == target.queue {
        return Err(err("target", "is the same queue as source; a bridge into its own source would loop".into()));
    }
    let start_timestamp_ms = match (raw.start_from, &raw.start_timestamp) {
        (StartFrom::Timestamp, None) => {
            return Err(err("startTimestamp", "is required when startFrom is Timestamp (RFC 3339)".into()));
        }
        (StartFrom::Earliest | StartFrom::Latest, Some(_)) => {
            return Err(err("startTimestamp", "is only allowed with startFrom: Timestamp".into()));
        }
        (_, Some(text)) => Some(rfc3339_ms(text).ok_or_else(|| {
            err("startTimestamp", format!("{text:?} is not an RFC 3339 time; write e.g. 2026-01-31T08:00:00Z"))
        })?),
        (_, None) => None,
    };
    // AMQP queues and MQTT sessions hand out what they hold and forget it: there is no position
    // to start from, only the messages waiting.
    if raw.start_from != StartFrom::Earliest && matches!(source.protocol, Protocol::Amqp | Protocol::Mqtt) {
        return Err(err(
            "startFrom",
            format!(
                "{:?} sources have no replayable log; remove startFrom (the bridge takes what the queue holds) \
                 or bridge from a Kafka or NATS source",
                source.protocol
            ),
        ));
    }
    // A simple consumer gets a message again, after its invisible time, behind later ones of its
    // key; FIFO consumer groups, which would hold the later ones back, are not built yet.
    if source.protocol == Protocol::Rocketmq && raw.ordering != Ordering::None {
        return Err(err(
            "ordering",
            format!(
                "{:?} is unsupported from a RocketMQ source: a message delivered again arrives after later ones of \
                 its key; set ordering: None",
                raw.ordering
            ),
        ));
    }
    if raw.delivery == Delivery::ExactlyOnce
        && let Some(why) = exactly_once_unsupported(source.protocol, target.protocol)
    {
        return Err(err(
            "delivery",
            format!(
                "ExactlyOnce is unsupported from {} to {}: {why}; use delivery: AtLeastOnce (repeats are counted)",
                source.protocol.name(),
                target.protocol.name()
            ),
        ));
    }
    let filter = match raw.filter.as_deref().map(str::trim) {
        None => None,
        Some("") => return Err(err("filter", "is empty; remove it to forward every message".into())),
        Some(text) => Some(Filter::parse(text).map_err(|e| err("filter", format!("{e} in {text:?}")))?),
    };
    let in_flight = raw.in_flight.unwrap_or(DEFAULT_IN_FLIGHT);
    if !(1..=MAX_IN_FLIGHT).contains(&in_flight) {
        return Err(err("inFlight", format!("{in_flight} is out of range; use 1 to {MAX_IN_FLIGHT}")));
    }
    if let Some(lease) = &raw.lease
        && !is_object_name(lease)
    {
        return Err(err(
            "lease",
            format!("{lease:?} is not a Kubernetes object name; use lowercase letters, digits, '-' and '.'"),
        ));
    }
    let admin_listen = admin_address(file, raw.admin)?;
    Ok(WorkerConfig {
        name,
        namespace,
        source,
        target,
        delivery: raw.delivery,
        ordering: raw.ordering,
        filter,
        start_from: raw.start_from,
        start_timestamp_ms,
        in_flight,
        lease: raw.lease,
        admin_listen,
    })
}

/// A DNS subdomain name, as Kubernetes names most objects (a Lease among them).
fn is_object_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A local broker the gateway fronts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub namespace: String,
    pub access_point: String,
    pub protocol: Protocol,
    pub servers: Vec<(String, u16)>,
    pub tls: Option<TlsFiles>,
    pub credentials_dir: Option<PathBuf>,
    /// Where each tenant's own broker user is (`<dir>/<tenant>/username`, `password`): a peer then
    /// reaches the broker as its tenant, never as the access point's owner.
    pub tenant_credentials_dir: Option<PathBuf>,
    /// Other namespaces (tenants) whose bridges may use this access point; `*` for all.
    pub shared_with: Vec<String>,
}

impl Backend {
    /// The endpoint for one of this backend's queues, reached as `tenant` where tenants have
    /// users of their own.
    #[must_use]
    pub fn endpoint(&self, queue: &str, tenant: &str) -> Endpoint {
        Endpoint {
            protocol: self.protocol,
            servers: self.servers.clone(),
            queue: queue.to_owned(),
            access_point: Some(format!("{}/{}", self.namespace, self.access_point)),
            tls: self.tls.clone(),
            name_servers: Vec::new(),
            credentials_dir: match &self.tenant_credentials_dir {
                Some(dir) => Some(dir.join(tenant)),
                None => self.credentials_dir.clone(),
            },
        }
    }

    /// How queue names of a tenant start on this backend when it is shared (the operator's
    /// broker names: `<tenant>.`, `<tenant>_` on NATS, `<tenant>/` on MQTT).
    #[must_use]
    pub fn tenant_prefix(&self, tenant: &str) -> String {
        let separator = match self.protocol {
            Protocol::Nats => "_",
            Protocol::Mqtt => "/",
            _ => ".",
        };
        format!("{tenant}{separator}")
    }
}

/// A gateway's validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    pub trust_domain: String,
    /// Trust domains of other clouds whose bridges this gateway accepts (their CAs are in the CA
    /// bundle); its own is always accepted.
    pub peer_trust_domains: Vec<String>,
    pub tls: TlsFiles,
    pub backends: Vec<Backend>,
    pub admin_listen: SocketAddr,
}

/// Reads and validates a gateway config file.
pub fn load_gateway(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let text = read(path)?;
    parse_gateway(&path.display().to_string(), &text)
}

/// Parses and validates a gateway config; `file` names the source in errors.
pub fn parse_gateway(file: &str, text: &str) -> Result<GatewayConfig, ConfigError> {
    validate_gateway(file, deserialize(file, text)?)
}

/// Validates a gateway config file's contents; `file` names the source in errors.
pub fn validate_gateway(file: &str, raw: GatewayFile) -> Result<GatewayConfig, ConfigError> {
    let err = |field: &str, problem: String| ConfigError { file: file.to_owned(), field: field.to_owned(), problem };
    let listen = raw
        .listen
        .parse()
        .map_err(|_| err("listen", format!("{:?} is not ip:port; write e.g. 0.0.0.0:7443", raw.listen)))?;
    let trust_domain = non_empty(&raw.trust_domain)
        .filter(|d| !d.contains('/'))
        .ok_or_else(|| err("trustDomain", "must be a DNS-like name without slashes, e.g. cloud-b.oms".into()))?;
    let tls = tls_files(file, "tls", raw.tls)?;
    if tls.identity.is_none() {
        return Err(err("tls", "a gateway needs certFile and keyFile (its server certificate)".into()));
    }
    if tls.server_name.is_some() {
        return Err(err("tls.serverName", "is for connections to brokers; a gateway serves its own name".into()));
    }
    let mut backends = Vec::with_capacity(raw.backends.len());
    for (i, backend) in raw.backends.into_iter().enumerate() {
        let field = format!("backends[{i}]");
        let (namespace, access_point) = backend
            .access_point
            .split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
            .ok_or_else(|| err(&format!("{field}.accessPoint"), "must be <namespace>/<name>".into()))?;
        if backend.driver == Protocol::Gateway {
            return Err(err(&format!("{field}.driver"), "a gateway cannot front another gateway".into()));
        }
        if backend.driver == Protocol::Rocketmq {
            return Err(err(&format!("{field}.driver"), "a gateway cannot front RocketMQ yet".into()));
        }
        let backend_tls = backend.tls.map(|tls| tls_files(file, &format!("{field}.tls"), tls)).transpose()?;
        if let Some(problem) = backend_tls.as_ref().and_then(|tls| broker_tls_unsupported(backend.driver, tls)) {
            return Err(err(&format!("{field}.tls"), problem));
        }
        backends.push(Backend {
            namespace: namespace.to_owned(),
            access_point: access_point.to_owned(),
            protocol: backend.driver,
            servers: servers(file, &format!("{field}.servers"), &backend.servers)?,
            tls: backend_tls,
            credentials_dir: backend.credentials_dir,
            tenant_credentials_dir: backend.tenant_credentials_dir,
            shared_with: backend.shared_with,
        });
    }
    for (i, domain) in raw.peer_trust_domains.iter().enumerate() {
        if domain.is_empty() || domain.contains('/') {
            return Err(err(&format!("peerTrustDomains[{i}]"), "must be a DNS-like name without slashes".into()));
        }
    }
    let admin_listen = admin_address(file, raw.admin)?;
    Ok(GatewayConfig { listen, trust_domain, peer_trust_domains: raw.peer_trust_domains, tls, backends, admin_listen })
}

/// Why a bridge from `source` to `target` cannot deliver each message exactly once, if it cannot.
/// Exactly once here means one of two things. Kafka to Kafka: the records and the source offsets
/// after them commit in one Kafka transaction. Into JetStream: the source's ids are stable (a
/// redelivery has the id of its first delivery: Kafka offsets, JetStream sequences) and the
/// target drops a repeat by id in a window that outlives the worker's recovery (JetStream's
/// duplicate window, 2 minutes by default). Every other pair is at least once, and says so.
#[must_use]
pub fn exactly_once_unsupported(source: Protocol, target: Protocol) -> Option<&'static str> {
    if in_kafka_transactions(source, target) {
        return None;
    }
    let source_gap = match source {
        Protocol::Kafka | Protocol::Nats => None,
        Protocol::Amqp | Protocol::Mqtt => {
            Some("the source gives a redelivered message a new id, so no target can tell it from a new one")
        }
        Protocol::Gateway => Some(
            "ids from behind another cloud's gateway are only as stable as its source, which this cloud cannot see",
        ),
        // Its ids are stable (RocketMQ's message id); what a deduplicating target makes of them
        // is not proved yet.
        Protocol::Rocketmq => Some("exactly once from RocketMQ is not built yet"),
    };
    let target_gap = match target {
        Protocol::Nats => None,
        Protocol::Kafka => {
            Some("a Kafka target keeps every write; only a Kafka source commits in the same transaction")
        }
        Protocol::Amqp | Protocol::Mqtt | Protocol::Rocketmq => Some("the target cannot drop a repeat by id"),
        Protocol::Gateway => {
            Some("the gateway's window of recent ids lives in its memory and is gone when it restarts")
        }
    };
    source_gap.or(target_gap)
}

/// Whether the pair forwards in Kafka transactions under `ExactlyOnce`: Kafka to Kafka.
#[must_use]
pub fn in_kafka_transactions(source: Protocol, target: Protocol) -> bool {
    source == Protocol::Kafka && target == Protocol::Kafka
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError {
        file: path.display().to_string(),
        field: "(file)".into(),
        problem: format!("cannot read: {error}"),
    })
}

fn deserialize<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, ConfigError> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        ConfigError {
            file: file.to_owned(),
            // A document that is not YAML at all has no path: blame the whole file.
            field: if path == "." || path.is_empty() { "(top level)".into() } else { path },
            problem: error.into_inner().to_string(),
        }
    })
}

fn endpoint(file: &str, field: &str, raw: EndpointFile) -> Result<Endpoint, ConfigError> {
    let err =
        |sub: &str, problem: String| ConfigError { file: file.to_owned(), field: format!("{field}.{sub}"), problem };
    let queue = non_empty(&raw.queue).ok_or_else(|| err("queue", "must name the broker-side queue".into()))?;
    let tls = raw.tls.map(|tls| tls_files(file, &format!("{field}.tls"), tls)).transpose()?;
    if let Some(problem) = tls.as_ref().and_then(|tls| broker_tls_unsupported(raw.driver, tls)) {
        return Err(err("tls", problem));
    }
    if raw.driver == Protocol::Gateway && tls.as_ref().is_none_or(|t| t.identity.is_none()) {
        return Err(err("tls", "a gateway end needs mTLS: set caFile, certFile and keyFile".into()));
    }
    if raw.driver == Protocol::Gateway && tls.as_ref().is_some_and(|t| t.server_name.is_some()) {
        return Err(err(
            "tls.serverName",
            "is for connections to brokers; a gateway is reached by its own name".into(),
        ));
    }
    if raw.driver == Protocol::Gateway && raw.access_point.is_none() {
        return Err(err(
            "accessPoint",
            "a gateway end must name the access point behind the gateway (<namespace>/<name>)".into(),
        ));
    }
    if let Some(ap) = &raw.access_point
        && (ap.contains(',') || ap.split_once('/').is_none_or(|(ns, name)| ns.is_empty() || name.is_empty()))
    {
        return Err(err("accessPoint", format!("{ap:?} must be <namespace>/<name>")));
    }
    let name_servers = match (raw.driver, raw.name_servers.is_empty()) {
        (Protocol::Rocketmq, true) => {
            return Err(err("nameServers", "a RocketMQ end needs its name servers (host:port)".into()));
        }
        (Protocol::Rocketmq, false) => servers(file, &format!("{field}.nameServers"), &raw.name_servers)?,
        (_, true) => Vec::new(),
        (driver, false) => {
            return Err(err("nameServers", format!("is for RocketMQ ends; a {} end has none", driver.name())));
        }
    };
    Ok(Endpoint {
        protocol: raw.driver,
        servers: servers(file, &format!("{field}.servers"), &raw.servers)?,
        queue,
        access_point: raw.access_point,
        tls,
        name_servers,
        credentials_dir: raw.credentials_dir,
    })
}

/// Why `tls` towards a `driver` broker is refused, if it is: a `serverName` the Kafka and AMQP
/// clients would ignore (they check the host they dial; for Kafka, the one each broker advertises).
fn broker_tls_unsupported(driver: Protocol, tls: &TlsFiles) -> Option<String> {
    (matches!(driver, Protocol::Kafka | Protocol::Amqp) && tls.server_name.is_some()).then(|| {
        format!(
            "serverName is not supported for {}: each broker's certificate is checked against the host dialled",
            driver.name()
        )
    })
}

fn tls_files(file: &str, field: &str, raw: TlsFile) -> Result<TlsFiles, ConfigError> {
    let identity = match (raw.cert_file, raw.key_file) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(ConfigError {
                file: file.to_owned(),
                field: field.to_owned(),
                problem: "set both certFile and keyFile, or neither".into(),
            });
        }
    };
    Ok(TlsFiles { ca_file: raw.ca_file, identity, server_name: raw.server_name })
}

fn servers(file: &str, field: &str, raw: &[String]) -> Result<Vec<(String, u16)>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError {
            file: file.to_owned(),
            field: field.to_owned(),
            problem: "needs at least one host:port".into(),
        });
    }
    raw.iter()
        .enumerate()
        .map(|(i, server)| {
            parse_host_port(server).ok_or_else(|| ConfigError {
                file: file.to_owned(),
                field: format!("{field}[{i}]"),
                problem: format!("{server:?} is not host:port; write it like kafka-0.kafka:9092"),
            })
        })
        .collect()
}

fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_owned(), port))
}

fn admin_address(file: &str, raw: Option<AdminFile>) -> Result<SocketAddr, ConfigError> {
    let text = raw.map_or_else(|| DEFAULT_ADMIN_LISTEN.to_owned(), |a| a.listen);
    text.parse().map_err(|_| ConfigError {
        file: file.to_owned(),
        field: "admin.listen".into(),
        problem: format!("{text:?} is not ip:port; write e.g. 0.0.0.0:9090"),
    })
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn rfc3339_ms(text: &str) -> Option<i64> {
    let time = time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).ok()
}

fn non_empty(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const WORKER: &str = "
bridge: {name: orders-to-eu, namespace: acme}
source: {driver: kafka, servers: ['kafka-0.kafka:9092'], queue: orders}
target: {driver: nats, servers: ['nats:4222'], queue: orders-eu}
";

    fn worker_error(text: &str) -> ConfigError {
        parse_worker("w.yaml", text).expect_err("config must be refused")
    }

    #[test]
    fn a_rocketmq_end_needs_name_servers_and_as_a_source_ordering_none() {
        let rocket = "{driver: rocketmq, servers: ['proxy:8081'], nameServers: ['ns:9876'], queue: orders}";
        let source = WORKER.replace("{driver: kafka, servers: ['kafka-0.kafka:9092'], queue: orders}", rocket);
        let config = parse_worker("w.yaml", &format!("{source}ordering: None\n")).unwrap();
        assert_eq!(config.source.name_servers, [("ns".to_owned(), 9876)]);
        let error = worker_error(&source);
        assert_eq!(error.field, "ordering", "PerKey, the default, is refused: {error}");
        let error = worker_error(&format!("{}ordering: None\n", source.replace("nameServers: ['ns:9876'], ", "")));
        assert_eq!(error.field, "source.nameServers");
        let error =
            worker_error(&WORKER.replace("servers: ['nats:4222']", "servers: ['nats:4222'], nameServers: ['ns:9876']"));
        assert_eq!((error.field.as_str(), error.problem.contains("nats")), ("target.nameServers", true));
        let target = WORKER.replace("{driver: nats, servers: ['nats:4222'], queue: orders-eu}", rocket);
        assert_eq!(parse_worker("w.yaml", &target).unwrap().target.protocol, Protocol::Rocketmq, "any order into it");
        let tls = parse_worker("w.yaml", &target.replace("queue: orders}", "queue: orders, tls: {caFile: /ca.pem}}"));
        assert!(tls.unwrap().target.tls.is_some(), "TLS towards the proxy and the name servers");
    }

    #[test]
    fn minimal_worker_config_gets_defaults() {
        let config = parse_worker("w.yaml", WORKER).expect("valid");
        assert_eq!(config.source.servers, vec![("kafka-0.kafka".to_owned(), 9092)]);
        assert_eq!(config.delivery, Delivery::AtLeastOnce);
        assert_eq!(config.in_flight, DEFAULT_IN_FLIGHT);
        assert_eq!(config.admin_listen, "0.0.0.0:9090".parse().expect("addr"));
    }

    #[test]
    fn unknown_driver_is_reported_at_its_path() {
        let error = worker_error(&WORKER.replace("driver: nats", "driver: pulsar"));
        assert_eq!(error.field, "target.driver");
        assert!(error.problem.contains("unknown variant `pulsar`"), "{error}");
    }

    #[test]
    fn unknown_field_is_reported_with_its_parent_path() {
        let error = worker_error(&format!("{WORKER}admin: {{listen: '0.0.0.0:1', port: 3}}\n"));
        assert!(error.field.starts_with("admin"), "{error}");
        assert!(error.problem.contains("unknown field `port`"), "{error}");
    }

    #[test]
    fn malformed_server_is_named_by_index() {
        let error = worker_error(&WORKER.replace("['nats:4222']", "['nats:4222', 'nats-1']"));
        assert_eq!(error.field, "target.servers[1]");
        assert!(error.to_string().contains("host:port"), "{error}");
    }

    #[test]
    fn bridge_into_its_own_source_is_refused() {
        let text = WORKER.replace(
            "{driver: nats, servers: ['nats:4222'], queue: orders-eu}",
            "{driver: kafka, servers: ['kafka-0.kafka:9092'], queue: orders}",
        );
        assert_eq!(worker_error(&text).field, "target");
    }

    #[test]
    fn timestamp_start_needs_a_timestamp() {
        assert_eq!(worker_error(&format!("{WORKER}startFrom: Timestamp\n")).field, "startTimestamp");
    }

    #[test]
    fn start_timestamp_is_rfc3339_in_milliseconds() {
        let config = parse_worker(
            "w.yaml",
            &format!("{WORKER}startFrom: Timestamp\nstartTimestamp: '2026-01-31T08:00:00.5Z'\n"),
        )
        .expect("valid");
        assert_eq!(config.start_timestamp_ms, Some(1_769_846_400_500));
        let error = worker_error(&format!("{WORKER}startFrom: Timestamp\nstartTimestamp: yesterday\n"));
        assert_eq!(error.field, "startTimestamp");
        assert!(error.problem.contains("RFC 3339"), "{error}");
    }

    #[test]
    fn queues_without_a_log_cannot_start_elsewhere() {
        let amqp =
            WORKER.replace("driver: kafka, servers: ['kafka-0.kafka:9092']", "driver: amqp, servers: ['rabbit:5672']");
        let error = worker_error(&format!("{amqp}startFrom: Latest\n"));
        assert_eq!(error.field, "startFrom");
        assert!(error.problem.contains("no replayable log"), "{error}");
    }

    #[test]
    fn a_filter_is_parsed_at_load_and_its_errors_name_the_column() {
        let config =
            parse_worker("w.yaml", &format!("{WORKER}filter: \"headers['region'] == 'eu'\"\n")).expect("valid");
        assert!(config.filter.is_some());
        let error = worker_error(&format!("{WORKER}filter: \"headers['region'] = 'eu'\"\n"));
        assert_eq!(error.field, "filter");
        assert!(error.problem.starts_with("at column 19"), "{error}");
    }

    #[test]
    fn gateway_target_needs_mutual_tls() {
        let text = WORKER.replace("driver: nats", "driver: gateway");
        assert_eq!(worker_error(&text).field, "target.tls");
    }

    #[test]
    fn exactly_once_needs_stable_ids_at_the_source_and_a_deduplicating_target() {
        use Protocol::{Amqp, Gateway, Kafka, Mqtt, Nats};
        let supported: Vec<(Protocol, Protocol)> = [Kafka, Nats, Amqp, Mqtt, Gateway]
            .into_iter()
            .flat_map(|source| [Kafka, Nats, Amqp, Mqtt, Gateway].map(|target| (source, target)))
            .filter(|(source, target)| exactly_once_unsupported(*source, *target).is_none())
            .collect();
        assert_eq!(supported, [(Kafka, Kafka), (Kafka, Nats), (Nats, Nats)]);
        let nats_to_kafka = "bridge: {name: b, namespace: acme}\n\
            source: {driver: nats, servers: ['nats:4222'], queue: orders}\n\
            target: {driver: kafka, servers: ['kafka:9092'], queue: orders}\n\
            delivery: ExactlyOnce\n";
        let error = worker_error(nats_to_kafka);
        assert_eq!(error.field, "delivery");
        assert!(error.problem.starts_with("ExactlyOnce is unsupported from nats to kafka: a Kafka target"), "{error}");
        let config = parse_worker("w.yaml", &format!("{WORKER}delivery: ExactlyOnce\n")).expect("kafka -> nats");
        assert_eq!(config.delivery, Delivery::ExactlyOnce);
    }

    #[test]
    fn in_flight_is_bounded() {
        assert_eq!(worker_error(&format!("{WORKER}inFlight: 0\n")).field, "inFlight");
    }

    #[test]
    fn tls_to_a_broker_is_taken_where_the_connector_speaks_it_and_refused_elsewhere() {
        let kafka = WORKER.replace("queue: orders}", "queue: orders, tls: {caFile: /ca.crt}}");
        assert!(parse_worker("w.yaml", &kafka).expect("Kafka speaks TLS").source.tls.is_some());
        let named = WORKER.replace("queue: orders}", "queue: orders, tls: {caFile: /ca.crt, serverName: k.example}}");
        let error = worker_error(&named);
        assert_eq!(error.field, "source.tls");
        assert!(error.problem.starts_with("serverName is not supported for kafka"), "{error}");
        let amqp = kafka.replace("driver: kafka", "driver: amqp");
        assert!(parse_worker("w.yaml", &amqp).expect("AMQP speaks TLS").source.tls.is_some());
        let error = worker_error(&named.replace("driver: kafka", "driver: amqp"));
        assert!(error.problem.starts_with("serverName is not supported for amqp"), "{error}");
        let nats = WORKER.replace("queue: orders-eu}", "queue: orders-eu, tls: {caFile: /ca.crt}}");
        let config = parse_worker("w.yaml", &nats).expect("NATS speaks TLS");
        assert_eq!(config.target.tls.map(|t| t.ca_file), Some("/ca.crt".into()));
    }

    #[test]
    fn a_lease_is_named_like_a_kubernetes_object() {
        let config = parse_worker("w.yaml", &format!("{WORKER}lease: orders-oms-bridge\n")).expect("valid");
        assert_eq!(config.lease.as_deref(), Some("orders-oms-bridge"));
        assert_eq!(parse_worker("w.yaml", WORKER).expect("valid").lease, None, "no lease: every worker reads");
        for bad in ["Orders", "-orders", "orders_1", "a..b", "''"] {
            let error = worker_error(&format!("{WORKER}lease: {bad}\n"));
            assert_eq!(error.field, "lease", "{bad}");
            assert!(error.problem.contains("not a Kubernetes object name"), "{bad}: {error}");
        }
    }

    const GATEWAY: &str = "
listen: 0.0.0.0:7443
trustDomain: cloud-b.oms
tls: {caFile: /tls/ca.crt, certFile: /tls/tls.crt, keyFile: /tls/tls.key}
backends:
  - {accessPoint: acme/orders-nats, driver: nats, servers: ['nats:4222']}
";

    #[test]
    fn gateway_config_parses_backends() {
        let config = parse_gateway("g.yaml", GATEWAY).expect("valid");
        assert_eq!(config.backends[0].namespace, "acme");
        assert_eq!(config.backends[0].access_point, "orders-nats");
    }

    #[test]
    fn gateway_errors_name_the_field() {
        let no_key = GATEWAY.replace(", keyFile: /tls/tls.key", "");
        assert_eq!(parse_gateway("g.yaml", &no_key).expect_err("refused").field, "tls");
        let bad_ap = GATEWAY.replace("acme/orders-nats", "orders-nats");
        assert_eq!(parse_gateway("g.yaml", &bad_ap).expect_err("refused").field, "backends[0].accessPoint");
        let bad_listen = GATEWAY.replace("0.0.0.0:7443", "gateway:7443");
        assert_eq!(parse_gateway("g.yaml", &bad_listen).expect_err("refused").field, "listen");
    }

    proptest! {
        // Fuzz: any text is a config or an error naming a field; never a panic.
        #[test]
        fn any_text_is_a_config_or_an_error_with_a_field(text in "(?s).{0,200}") {
            if let Err(error) = parse_worker("w.yaml", &text) {
                prop_assert!(!error.field.is_empty());
            }
        }

        // Fuzz from the valid config: replacing one value with arbitrary text is accepted or
        // refused with that value's field (or an enclosing one), never something unrelated.
        #[test]
        fn a_mangled_value_is_blamed_on_its_field(value in "[ -~]{0,24}", which in 0usize..4) {
            let (original, field) = [
                ("'kafka-0.kafka:9092'", "source"),
                ("orders-eu", "target"),
                ("orders-to-eu", "bridge"),
                ("acme", "bridge"),
            ][which];
            let text = WORKER.replacen(original, &format!("{value:?}"), 1);
            if let Err(error) = parse_worker("w.yaml", &text) {
                prop_assert!(
                    error.field.starts_with(field) || error.field == "(top level)" || error.field == "target",
                    "{error}"
                );
            }
        }
    }
}
