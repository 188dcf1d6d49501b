//! posts-api: the HTTP service. Owns routes, the error → HTTP mapping, configuration and
//! start-up wiring; persistence is the `storage` crate's, credentials the `aws-creds` crate's.
//!
//! Layers, each importing only those below it: `cli` and `startup` wire everything;
//! `routes` hold the handlers; `http` the HTTP vocabulary they share (errors, problem
//! details, extractors, views, conditional requests); `state`, `auth`, `domain`,
//! `metrics` and `config` below them. `ARCHITECTURE.md` draws the whole picture.

pub mod admission;
pub mod auth;
pub mod background;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod uploads;
pub mod webhooks;

pub use crate::config::{Environment, Settings};
pub use crate::startup::{Application, StartupError};
