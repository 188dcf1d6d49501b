//! `/v1/me/usage`: what the caller stores against their quota.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::{ApiError, method_not_allowed};
use crate::http::extractors::Writer;
use crate::http::problem::Problem;
use crate::state::AppState;

/// Registers the route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/v1/me/usage")
            .route(web::get().to(get_usage))
            .default_service(method_not_allowed("GET")),
    );
}

/// What the caller stores.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// Bytes of the caller's attachments.
    bytes_used: u64,
    /// Bytes the caller's uploads in flight hold against the quota.
    bytes_reserved: u64,
    /// The quota (`uploads.quota_bytes_per_user`); `null`: none.
    bytes_quota: Option<u64>,
    /// How many attachments the caller has.
    attachments: u64,
}

/// The caller's usage and quota.
#[utoipa::path(
    get, path = "/v1/me/usage", tag = "posts",
    responses(
        (status = 200, description = "What the caller stores against their quota", body = UsageView),
        (status = 404, description = "No caller: the service runs without authentication", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_usage(
    state: web::Data<AppState>,
    writer: Writer,
) -> Result<HttpResponse, ApiError> {
    let Some(user) = writer.subject() else {
        return Err(ApiError::NotFound("usage of an authenticated caller"));
    };
    let usage = state.bounded(state.storage.usage(user)).await?;
    Ok(HttpResponse::Ok().json(UsageView {
        bytes_used: usage.bytes_used,
        bytes_reserved: usage.bytes_reserved,
        bytes_quota: usage.bytes_quota,
        attachments: usage.attachments,
    }))
}
