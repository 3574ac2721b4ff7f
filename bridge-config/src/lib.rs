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
