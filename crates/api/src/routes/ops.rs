//! Operations routes: liveness and readiness.

use std::time::{Duration, SystemTime};

use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::method_not_allowed;
use crate::metrics::Metrics;
use crate::state::AppState;

/// How long each readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Registers `/healthz`, `/readyz` and `/metrics`.
pub fn routes(config: &mut web::ServiceConfig) {
    for (path, handler) in [
        ("/healthz", web::get().to(healthz)),
        ("/readyz", web::get().to(readyz)),
        ("/metrics", web::get().to(metrics)),
    ] {
        config.service(
            web::resource(path)
                .route(handler)
                .default_service(method_not_allowed("GET")),
        );
    }
}

/// Prometheus metrics.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "application/openmetrics-text", body = String))
)]
pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    match metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type(crate::metrics::CONTENT_TYPE)
            .body(text),
        Err(error) => {
            tracing::error!(%error, "cannot render metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// Liveness: 200 while the process is alive.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Object))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Readiness of the service and each dependency.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// Each dependency's check.
    checks: Checks,
}

/// The checks behind readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checks {
    /// MongoDB answers a ping.
    mongodb: Check,
    /// AWS credentials are present and not expired.
    credentials: Check,
    /// The bucket answers HeadBucket.
    bucket: Check,
}

/// One check.
#[derive(Debug, Serialize, ToSchema)]
pub struct Check {
    /// `ok` or `failed`.
    status: &'static str,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    error: Option<String>,
    /// When the credentials expire (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    expires_at: Option<String>,
}

impl Check {
    fn from_result<E: std::fmt::Display>(result: Result<(), E>) -> Self {
        match result {
            Ok(()) => Self {
                status: "ok",
                error: None,
                expires_at: None,
            },
            Err(error) => Self {
                status: "failed",
                error: Some(error.to_string()),
                expires_at: None,
            },
        }
    }

    fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// Readiness: 200 when MongoDB answers, the credentials are valid and the bucket is
/// reachable; otherwise 503 naming what failed.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; see which check failed", body = Readiness,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (mongodb, credentials, bucket) = tokio::join!(
        state.mongo.ping_within(CHECK_TIMEOUT),
        check_credentials(&state),
        within(CHECK_TIMEOUT, state.storage.objects().check_bucket()),
    );
    let checks = Checks {
        mongodb: Check::from_result(mongodb),
        credentials,
        bucket: Check::from_result(bucket),
    };
    let ready = checks.mongodb.is_ok() && checks.credentials.is_ok() && checks.bucket.is_ok();
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks,
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((RETRY_AFTER, "5"))
            .json(body)
    }
}

async fn check_credentials(state: &AppState) -> Check {
    let result = within(CHECK_TIMEOUT, state.credentials.credentials()).await;
    let expiry = match result {
        Ok(credentials) => credentials.expiry(),
        Err(error) => return Check::from_result(Err(error)),
    };
    let mut check = match expiry {
        Some(expiry) if expiry <= SystemTime::now() => {
            Check::from_result(Err("the credentials have expired"))
        }
        _ => Check::from_result(Ok::<(), String>(())),
    };
    check.expires_at = expiry.map(|at| humantime::format_rfc3339_seconds(at).to_string());
    check
}

/// Runs `check` with a deadline; a timeout is reported as a failure.
async fn within<T, E: std::fmt::Display>(
    timeout: Duration,
    check: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result.map_err(|error| error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
