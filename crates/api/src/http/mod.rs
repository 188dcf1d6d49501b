//! HTTP concerns shared by the routes: errors and their problem details, extractors of the
//! caller, response views, conditional and ranged requests, request ids, CORS.

pub mod conditional;
pub mod cors;
pub mod error;
pub mod extractors;
pub mod json;
pub mod problem;
pub mod request_id;
pub mod request_metrics;
pub mod views;
