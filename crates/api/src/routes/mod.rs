//! The HTTP routes, one file per route family. Each handler reads top to bottom: extract,
//! validate, call storage, respond.

use actix_web::web;

use crate::http::error::{json_error, query_error};
use crate::http::problem;

pub mod attachments;
pub mod content;
pub mod direct_uploads;
pub mod multipart;
pub mod openapi;
pub mod ops;
pub mod page;
pub mod posts;
pub mod tus;
pub mod usage;
pub mod variants;

/// Largest JSON request body: a post body of 100,000 characters each written as a
/// twelve-byte surrogate pair of `\uXXXX` escapes, with room to spare.
const JSON_LIMIT: usize = 2 * 1024 * 1024;

/// Registers every route on one listener.
pub fn configure(config: &mut web::ServiceConfig) {
    public(config);
    ops::management(config);
}

/// Registers what clients use (the API, its document and reference, the web page,
/// `/healthz`), the
/// extractors' error handlers and the 404 for the rest: everything but readiness and
/// metrics, which [`management`] serves on a port of its own when one is configured.
pub fn public(config: &mut web::ServiceConfig) {
    config
        .app_data(
            web::JsonConfig::default()
                .limit(JSON_LIMIT)
                .error_handler(json_error),
        )
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .configure(ops::liveness)
        .configure(openapi::routes)
        .configure(posts::routes)
        .configure(direct_uploads::routes)
        .configure(tus::routes)
        .configure(attachments::routes)
        .configure(content::routes)
        .configure(variants::routes)
        .configure(usage::routes)
        .configure(page::routes)
        .default_service(web::to(problem::not_found));
}

/// Registers the management listener's routes: `/healthz`, `/readyz`, `/metrics`.
pub fn management(config: &mut web::ServiceConfig) {
    config
        .configure(ops::liveness)
        .configure(ops::management)
        .default_service(web::to(problem::not_found));
}
