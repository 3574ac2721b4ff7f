//! The OMS operator's API contract: the custom resources of group `openmessaging.cloud`,
//! version `v1alpha1`, and the pure parsers their string fields are validated with.
//!
//! Types here are what users write in YAML. Every field's `///` doc becomes its OpenAPI
//! description (the `kubectl explain` text), and admission-time checks live next to the field
//! they guard, as schema bounds or CEL rules, so that kubectl refuses a bad object with a message
//! that names the field. Controllers parse these raw types into validated ones; they never read
//! a spec string twice.

pub mod access_point;
pub mod access_point_url;
pub mod bridge;
pub mod common;
pub mod generate;
pub mod quantity;
pub mod queue;

pub use access_point::{MessagingAccessPoint, MessagingAccessPointSpec, MessagingAccessPointStatus};
pub use bridge::{Bridge, BridgeSpec, BridgeStatus};
pub use queue::{Queue, QueueSpec, QueueStatus};

/// The API group of every kind here.
pub const GROUP: &str = "openmessaging.cloud";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// The category that makes `kubectl get oms` list all three kinds.
pub const CATEGORY: &str = "oms";
