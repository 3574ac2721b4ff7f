//! `oms-bridge`: the data plane. One binary, two roles:
//! - `worker` consumes a source queue, writes to the target, and only then acknowledges the source;
//! - `gateway` is the mTLS endpoint that fronts local brokers for bridges in other clouds.
//!
//! Configuration flows raw YAML -> `config` (parsed once into validated types, errors name the
//! field) -> the role's runtime.

pub mod config;
pub mod connector;
pub mod filter;
pub mod gateway;
pub mod message;
pub mod metrics;
pub mod pipeline;
pub mod worker;
