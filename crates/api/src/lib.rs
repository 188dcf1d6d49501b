//! posts-api: the HTTP service. Owns routes, the error → HTTP mapping, configuration and
//! start-up wiring; persistence is the `storage` crate's, credentials the `aws-creds` crate's.

mod attachments;
pub mod auth;
pub mod configuration;
mod domain;
mod download;
pub mod error;
pub mod healthcheck;
pub mod metrics;
pub mod openapi;
mod ops;
mod posts;
pub mod problem;
mod representation;
pub mod request_id;
pub mod startup;
pub mod telemetry;
mod uploads;

pub use crate::configuration::Settings;
pub use crate::startup::{Application, StartupError};
