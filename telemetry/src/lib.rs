//! What `oms-operator` and `oms-bridge` share at their edges: structured logging, the admin HTTP
//! server (`/metrics`, `/healthz`, `/readyz`) and the one shutdown signal fanned out to every task.

pub mod admin;
pub mod logging;
pub mod shutdown;
