//! `oms-bridge-config`: the contract between the operator and the `oms-bridge` binary.
//!
//! The operator renders a Bridge into a [`WorkerFile`] and a gateway into a [`GatewayFile`],
//! checks them with [`validate_worker`] and [`validate_gateway`] (a bad filter is the Bridge's
//! `InvalidSpec`, not a crash-looping pod), and writes them as YAML into ConfigMaps; the worker and
//! the gateway read the same types and run the same validation ([`load_worker`], [`load_gateway`]).
//!
//! The enums here are the file's own, not the CRD's: the operator maps the API's values onto them
//! with exhaustive matches, so an API version can rename a value without changing the file format
//! running workers read.

pub mod file;
pub mod filter;
mod validate;

pub use file::{
    AdminFile, BackendFile, BridgeName, Delivery, EndpointFile, GatewayFile, Ordering, Protocol, StartFrom, TlsFile,
    WorkerFile,
};
pub use validate::{
    Backend, ConfigError, Endpoint, GatewayConfig, TlsFiles, WorkerConfig, exactly_once_unsupported,
    in_kafka_transactions, load_gateway, load_worker, parse_gateway, parse_worker, validate_gateway, validate_worker,
};

/// Whether a NATS server of `version` is 2.14 or later: it resets consumers to their ack floor and
/// takes fast batches, which the operator allows on the streams it makes and the worker publishes
/// with.
#[must_use]
pub fn nats_2_14_or_later(version: &str) -> bool {
    let mut parts = version.split(['.', '-']).map(|part| part.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 14)
}

#[cfg(test)]
mod tests {
    #[test]
    fn nats_versions_from_2_14_on_reset_consumers_and_take_fast_batches() {
        use super::nats_2_14_or_later;
        assert!(nats_2_14_or_later("2.15.2"));
        assert!(nats_2_14_or_later("2.14.0-RC.1"));
        assert!(nats_2_14_or_later("3.0.0"));
        assert!(!nats_2_14_or_later("2.13.9"));
        assert!(!nats_2_14_or_later("2.9.25"));
        assert!(!nats_2_14_or_later(""));
    }
}
