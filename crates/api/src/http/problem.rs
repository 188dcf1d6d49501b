//! RFC 9457 problem details: the one body of every error response.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde::Serialize;
use utoipa::ToSchema;

/// Content type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A field that failed validation.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FieldError {
    /// The JSON field or query parameter.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// `field` is invalid because of `message`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// An `application/problem+json` error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary, the same for every occurrence of the type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// Field errors, for 422 validation failures.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// The caller's quota in bytes, for 507 `quota-exceeded`.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
    /// What the caller uses of it, uploads in flight included, for 507 `quota-exceeded`.
    #[schema(nullable = false)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
}

impl Problem {
    /// A problem of status `status` whose type is `/problems/{slug}`.
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: None,
            quota_bytes: None,
            used_bytes: None,
        }
    }

    /// The same problem with the caller's quota and usage.
    pub fn with_quota(mut self, quota: u64, used: u64) -> Self {
        self.quota_bytes = Some(quota);
        self.used_bytes = Some(used);
        self
    }

    /// The same problem with field errors.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = Some(errors);
        self
    }

    /// A response builder with the status and content type set, for extra headers.
    pub fn builder(&self) -> HttpResponseBuilder {
        let mut builder = HttpResponse::build(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        );
        builder.content_type(PROBLEM_JSON);
        builder
    }

    /// The response carrying this problem.
    pub fn response(&self) -> HttpResponse {
        self.builder().json(self)
    }
}

/// The answer for a path no route serves.
pub async fn not_found() -> HttpResponse {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "no resource at this path",
    )
    .response()
}
