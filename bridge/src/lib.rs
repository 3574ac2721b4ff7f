//! `oms-bridge`: the data plane. One binary, two roles:
//! - `worker` consumes a source queue, writes to the target, and only then acknowledges the source;
//! - `gateway` is the mTLS endpoint that fronts local brokers for bridges in other clouds.
//!
//! Configuration flows raw YAML -> `oms_bridge_config` (the file types the operator renders,
//! parsed once into validated types, errors name the field) -> the role's runtime.

pub mod connector;
pub mod gateway;
pub mod message;
pub mod metrics;
pub mod pipeline;
pub mod transactional;
pub mod worker;
