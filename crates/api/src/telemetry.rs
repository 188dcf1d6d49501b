//! Logs and traces, set up once. Logs: human-readable lines locally, JSON lines in
//! production. Traces (off unless `traces.otlp_endpoint` is set): OpenTelemetry spans for
//! each request and each MongoDB, S3 and STS call, exported over OTLP/HTTP to a collector
//! such as the ADOT sidecar of an ECS task, which forwards them to X-Ray.

use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings, TraceSettings};

/// What was set up; [`Telemetry::shutdown`] sends the spans still buffered.
#[derive(Debug)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the trace exporter, if there is one.
    pub fn shutdown(self) {
        if let Some(provider) = self.traces
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not flush the last traces");
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level` for logs;
/// traces take every span at `info` and above, whatever the log level.
pub fn init(log: &LogSettings, traces: &TraceSettings) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stdout().is_terminal();
    let logs = match log.format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_ansi(ansi).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
    .with_filter(filter);
    let (provider, exporter_error) = match trace_provider(traces) {
        Ok(provider) => (provider, None),
        Err(error) => (None, Some(error)),
    };
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("posts-api"))
            .with_filter(LevelFilter::INFO)
    });
    // A second call (tests start many apps in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    if let Some(error) = exporter_error {
        tracing::warn!(%error, "traces are off: the OTLP exporter could not be set up");
    }
    Telemetry { traces: provider }
}

/// The tracer provider for `traces`, or `None` when tracing is off.
fn trace_provider(traces: &TraceSettings) -> Result<Option<SdkTracerProvider>, String> {
    let Some(endpoint) = traces.traces_endpoint() else {
        return Ok(None);
    };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| error.to_string())?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                traces.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(traces.service_name.clone())
                    .build(),
            )
            .build(),
    ))
}

/// Opens a span for each AWS operation (`S3.PutObject`, `STS.AssumeRole`) in the task that
/// awaits it, so the span is a child of the caller's, and closes it when the operation
/// ends, retries included. It opens before serialization, the first hook that sees the
/// operation's name.
#[derive(Debug)]
pub struct AwsCallSpans;

impl AwsCallSpans {
    /// The interceptor, as the SDK clients take it.
    pub fn shared() -> SharedInterceptor {
        SharedInterceptor::new(Self)
    }
}

/// The open span of one operation, kept in the operation's configuration bag.
#[derive(Debug)]
struct OperationSpan(Mutex<Option<tracing::Span>>);

impl Storable for OperationSpan {
    type Storer = StoreReplace<Self>;
}

impl Intercept for AwsCallSpans {
    fn name(&self) -> &'static str {
        "AwsCallSpans"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map_or(("AWS", "unknown"), |metadata| {
                (metadata.service(), metadata.name())
            });
        let span = tracing::info_span!(
            "aws",
            otel.name = %format_args!("{service}.{operation}"),
            otel.kind = "client",
            rpc.system = "aws-api",
            rpc.service = %service,
            rpc.method = %operation,
            otel.status_code = tracing::field::Empty,
        );
        cfg.interceptor_state()
            .store_put(OperationSpan(Mutex::new(Some(span))));
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let span = cfg
            .load::<OperationSpan>()
            .and_then(|open| open.0.lock().unwrap_or_else(PoisonError::into_inner).take());
        if let Some(span) = span
            && matches!(context.output_or_error(), Some(Err(_)))
        {
            span.record("otel.status_code", "ERROR");
        }
        Ok(())
    }
}
