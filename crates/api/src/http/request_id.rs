//! A request id per request: echoed from `x-request-id` when the client sent a sane one,
//! otherwise generated; set on the response and on every log line of the request, with
//! the trace the request belongs to.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{TraceContextExt, TraceId};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::method_label;

/// The header carrying the request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The trace header an AWS load balancer adds.
const X_AMZN_TRACE_ID: HeaderName = HeaderName::from_static("x-amzn-trace-id");

/// The id of the current request, in the request's extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Middleware: assigns the id, logs one line per completed request.
pub async fn assign(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_acceptable(value))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    request.extensions_mut().insert(RequestId(id.clone()));
    // The route template, not the path, names the span: a bounded set of names.
    let route = request.match_pattern();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!(
            "{} {}",
            method_label(request.method()),
            route.as_deref().unwrap_or("unmatched")
        ),
        otel.kind = "server",
        request_id = %id,
        method = %request.method(),
        path = %request.path(),
        trace_id = tracing::field::Empty,
        amzn_trace_id = tracing::field::Empty,
    );
    trace(&span, request.headers());
    let started = Instant::now();
    let mut response = next.call(request).instrument(span.clone()).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }

    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1e3,
            "request completed"
        );
    });
    Ok(response)
}

/// Ties the request's span to its trace: continues a W3C `traceparent` when one came
/// (while traces are on), and records on the span, so on every log line of the request,
/// the trace id and the ALB's `X-Amzn-Trace-Id`.
fn trace(span: &tracing::Span, headers: &HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        // Fails only when traces are off; the span then has no trace to join.
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != TraceId::INVALID {
        span.record("trace_id", trace_id.to_string());
    }
    if let Some(amzn) = headers
        .get(&X_AMZN_TRACE_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|value| is_acceptable(value))
    {
        span.record("amzn_trace_id", amzn);
    }
}

/// Request headers as OpenTelemetry's propagators read them.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Short and printable, so a client cannot inject log lines or huge headers.
fn is_acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ids_are_echoed() {
        assert!(is_acceptable("req-123_abc"));
    }

    #[test]
    fn ids_with_spaces_or_control_characters_are_replaced() {
        assert!(!is_acceptable("a b"));
        assert!(!is_acceptable("a\u{7}"));
        assert!(!is_acceptable(""));
    }

    #[test]
    fn overlong_ids_are_replaced() {
        assert!(!is_acceptable(&"a".repeat(129)));
    }
}
