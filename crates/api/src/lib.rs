//! posts-api: the HTTP service. Owns routes, the error → HTTP mapping, configuration and
//! start-up wiring; persistence is the `storage` crate's, credentials the `aws-creds` crate's.

pub mod configuration;
pub mod metrics;
mod ops;
pub mod problem;
pub mod request_id;
pub mod startup;
pub mod telemetry;

pub use crate::configuration::Settings;
pub use crate::startup::{Application, StartupError};
