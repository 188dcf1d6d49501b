//! Operations routes: liveness, readiness and metrics. With `server.management_port` set,
//! readiness and metrics are served only there, away from the public listener.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::error::method_not_allowed;
use crate::state::AppState;

/// How long each readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a readiness answer is reused: probes from many load-balancer nodes cost one
/// round of checks a second, not one each.
const READINESS_TTL: Duration = Duration::from_secs(1);

/// Registers `/healthz`, `/readyz` and `/metrics`.
pub fn routes(config: &mut web::ServiceConfig) {
    liveness(config);
    management(config);
}

/// Registers `/healthz`, which every listener serves (the container health check).
pub fn liveness(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/healthz")
            .route(web::get().to(healthz))
            .default_service(method_not_allowed("GET")),
    );
}

/// Registers `/readyz` and `/metrics`.
pub fn management(config: &mut web::ServiceConfig) {
    for (path, handler) in [
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
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    match state.metrics.render() {
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

/// Readiness of the service and each dependency. It says which check failed, never why:
/// the causes (hosts, ARNs, bucket names) go to the log.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// Each dependency's check.
    checks: Checks,
}

/// The checks behind readiness, each `ok` or `failed`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Checks {
    /// MongoDB answers a ping.
    #[schema(pattern = "^(ok|failed)$")]
    mongodb: &'static str,
    /// AWS credentials are present and not expired.
    #[schema(pattern = "^(ok|failed)$")]
    credentials: &'static str,
    /// The bucket answers HeadBucket.
    #[schema(pattern = "^(ok|failed)$")]
    bucket: &'static str,
}

impl Readiness {
    fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

/// The last readiness answer, shared by the workers: one round of checks at a time, reused
/// for [`READINESS_TTL`].
#[derive(Debug, Default)]
pub struct ReadinessCache {
    last: tokio::sync::Mutex<Option<(Instant, Arc<Readiness>)>>,
}

impl ReadinessCache {
    async fn get(&self, state: &AppState) -> Arc<Readiness> {
        let mut last = self.last.lock().await;
        if let Some((at, readiness)) = last.as_ref()
            && at.elapsed() < READINESS_TTL
        {
            return readiness.clone();
        }
        let readiness = Arc::new(check(state).await);
        *last = Some((Instant::now(), readiness.clone()));
        readiness
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
pub async fn readyz(state: web::Data<AppState>, cache: web::Data<ReadinessCache>) -> HttpResponse {
    let readiness = cache.get(&state).await;
    if readiness.is_ready() {
        HttpResponse::Ok().json(readiness.as_ref())
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((RETRY_AFTER, "5"))
            .json(readiness.as_ref())
    }
}

/// Runs the three checks at once, logging the cause of each failure.
async fn check(state: &AppState) -> Readiness {
    let (mongodb, credentials, bucket) = tokio::join!(
        state.mongo.ping_within(CHECK_TIMEOUT),
        check_credentials(state),
        within(CHECK_TIMEOUT, state.storage.objects().check_bucket()),
    );
    let mut ready = true;
    let mut outcome = |name: &'static str, result: Result<(), String>| match result {
        Ok(()) => "ok",
        Err(cause) => {
            ready = false;
            tracing::warn!(check = name, %cause, "readiness check failed");
            "failed"
        }
    };
    let checks = Checks {
        mongodb: outcome("mongodb", mongodb.map_err(|error| error.to_string())),
        credentials: outcome("credentials", credentials),
        bucket: outcome("bucket", bucket),
    };
    Readiness {
        status: if ready { "ready" } else { "not_ready" },
        checks,
    }
}

async fn check_credentials(state: &AppState) -> Result<(), String> {
    let credentials = within(CHECK_TIMEOUT, state.credentials.credentials()).await?;
    match credentials.expiry() {
        Some(expiry) if expiry <= SystemTime::now() => Err("the credentials have expired".into()),
        _ => Ok(()),
    }
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
