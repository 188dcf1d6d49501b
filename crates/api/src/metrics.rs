//! Prometheus metrics served at `/metrics`.

use std::time::{Duration, UNIX_EPOCH};

use aws_creds::{CredentialsOrigin, TemporaryCredentials};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of a served request. Every value comes from a bounded set, whatever clients
/// send: the route templates the service registers (or `unmatched`), the standard methods
/// (or `OTHER`), and the statuses the service answers with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

/// Labels of a route's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

/// The method as a label: one of the standard methods, or `OTHER` for anything a client
/// made up (which would otherwise add a series per request).
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric of one service instance.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    bytes_uploaded: Counter,
    bytes_downloaded: Counter,
    uploads_in_flight: Gauge,
    orphan_objects_removed: Counter,
    records_missing_objects: Counter,
    attachments_restored: Counter,
    events: EventMetrics,
}

/// What the event dispatcher counts.
#[derive(Clone, Debug, Default)]
pub struct EventMetrics {
    delivered: Counter,
    retried: Counter,
    failed: Counter,
    lag: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl EventMetrics {
    /// An event the receiver took, `recorded_at` being when its change happened.
    pub fn delivered(&self, recorded_at: std::time::SystemTime) {
        self.delivered.inc();
        self.lag
            .set(recorded_at.elapsed().map_or(0.0, |lag| lag.as_secs_f64()));
    }

    /// An attempt that failed and will be made again.
    pub fn retried(&self) {
        self.retried.inc();
    }

    /// An event out of attempts.
    pub fn failed(&self) {
        self.failed.inc();
    }
}

impl Metrics {
    /// Registers the service's metrics; credentials metrics are read from the cache,
    /// MongoDB commands from the client, and upload memory from its budget, at each
    /// scrape.
    pub fn new(
        credentials: TemporaryCredentials,
        mongo: storage::Mongo,
        upload_memory: storage::UploadMemory,
        storage: storage::Storage,
    ) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "posts_api_http_requests",
            "HTTP requests by route template, method and status",
            requests.clone(),
        );
        let latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "posts_api_http_request_duration_seconds",
            "Time to the response head, by route template and method",
            latency.clone(),
        );
        let bytes_uploaded = Counter::default();
        registry.register(
            "posts_api_uploaded_bytes",
            "Attachment bytes stored",
            bytes_uploaded.clone(),
        );
        let bytes_downloaded = Counter::default();
        registry.register(
            "posts_api_downloaded_bytes",
            "Attachment bytes sent to clients",
            bytes_downloaded.clone(),
        );
        let uploads_in_flight = Gauge::default();
        registry.register(
            "posts_api_uploads_in_flight",
            "Attachment uploads streaming right now",
            uploads_in_flight.clone(),
        );
        let orphan_objects_removed = Counter::default();
        registry.register(
            "posts_api_reaper_orphan_objects_removed",
            "Objects under the key prefix that no record named, deleted by the reaper",
            orphan_objects_removed.clone(),
        );
        let records_missing_objects = Counter::default();
        registry.register(
            "posts_api_reaper_records_missing_objects",
            "Ready attachment records found without their object (marked, not removed)",
            records_missing_objects.clone(),
        );
        let attachments_restored = Counter::default();
        registry.register(
            "posts_api_reaper_attachments_restored",
            "Ready attachments their post did not list, listed again by the reaper",
            attachments_restored.clone(),
        );
        let events = EventMetrics::default();
        registry.register(
            "posts_api_events_delivered",
            "Webhook events a receiver took",
            events.delivered.clone(),
        );
        registry.register(
            "posts_api_events_retried",
            "Webhook attempts that failed and will be made again",
            events.retried.clone(),
        );
        registry.register(
            "posts_api_events_failed",
            "Webhook events out of attempts, kept in failed_events",
            events.failed.clone(),
        );
        registry.register(
            "posts_api_events_lag_seconds",
            "Time from a change to the delivery of its event, for the last event delivered",
            events.lag.clone(),
        );
        registry.register_collector(Box::new(CredentialsCollector { credentials }));
        registry.register_collector(Box::new(MongoCollector { mongo }));
        registry.register_collector(Box::new(UploadMemoryCollector { upload_memory }));
        registry.register_collector(Box::new(ProcessingCollector { storage }));
        Self {
            registry,
            requests,
            latency,
            bytes_uploaded,
            bytes_downloaded,
            uploads_in_flight,
            orphan_objects_removed,
            records_missing_objects,
            attachments_restored,
            events,
        }
    }

    /// The dispatcher's counters.
    pub fn events(&self) -> EventMetrics {
        self.events.clone()
    }

    /// Counts what a reaper pass found out of place.
    pub fn add_reconciled(&self, report: &storage::ReapReport) {
        self.orphan_objects_removed
            .inc_by(report.removed_orphan_objects as u64);
        self.records_missing_objects
            .inc_by(report.records_missing_objects as u64);
        self.attachments_restored
            .inc_by(report.restored_attachments as u64);
    }

    /// Counts a served request.
    pub fn observe_request(
        &self,
        route: String,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.latency
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// Counts stored attachment bytes.
    pub fn add_uploaded(&self, bytes: u64) {
        self.bytes_uploaded.inc_by(bytes);
    }

    /// Counts attachment bytes sent.
    pub fn add_downloaded(&self, bytes: u64) {
        self.bytes_downloaded.inc_by(bytes);
    }

    /// Marks an upload in flight until the returned guard drops.
    pub fn upload_started(&self) -> InFlight {
        self.uploads_in_flight.inc();
        InFlight(self.uploads_in_flight.clone())
    }

    /// The text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// An upload in flight; decrements the gauge when dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Exposes the MongoDB commands sent, by command name, at scrape time.
#[derive(Debug)]
struct MongoCollector {
    mongo: storage::Mongo,
}

impl Collector for MongoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "posts_api_mongodb_commands",
            "Commands sent to MongoDB (each one round trip), by command name",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (command, count) in self.mongo.commands_sent() {
            ConstCounter::new(count)
                .encode(family.encode_family(&[("command", command.as_str())])?)?;
        }
        Ok(())
    }
}

/// Exposes the upload memory taken and the parts in flight at scrape time.
#[derive(Debug)]
struct UploadMemoryCollector {
    upload_memory: storage::UploadMemory,
}

impl Collector for UploadMemoryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let held =
            ConstGauge::new(i64::try_from(self.upload_memory.held_bytes()).unwrap_or(i64::MAX));
        held.encode(encoder.encode_descriptor(
            "posts_api_upload_memory_held_bytes",
            "Upload memory taken by uploads in flight, of admission.upload_memory_bytes",
            None,
            held.metric_type(),
        )?)?;
        let parts = ConstGauge::new(
            i64::try_from(self.upload_memory.parts_in_flight()).unwrap_or(i64::MAX),
        );
        parts.encode(encoder.encode_descriptor(
            "posts_api_s3_parts_in_flight",
            "Multipart parts being sent to S3 by every upload",
            None,
            parts.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Exposes what the processing stage did (variants rendered, files refused as infected),
/// at scrape time.
#[derive(Debug)]
struct ProcessingCollector {
    storage: storage::Storage,
}

impl Collector for ProcessingCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rendered = ConstCounter::new(self.storage.variants_rendered());
        rendered.encode(encoder.encode_descriptor(
            "posts_api_variants_rendered",
            "Image variants rendered and stored in S3 (each is then served from there)",
            None,
            rendered.metric_type(),
        )?)?;
        let infected = ConstCounter::new(self.storage.infected_refused());
        infected.encode(encoder.encode_descriptor(
            "posts_api_uploads_infected",
            "Files refused because the malware scanner found a signature in them",
            None,
            infected.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Exposes [`aws_creds::CredentialsStatus`] at scrape time.
#[derive(Debug)]
struct CredentialsCollector {
    credentials: TemporaryCredentials,
}

impl Collector for CredentialsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.credentials.status();
        if let CredentialsOrigin::AssumeRole { .. } = status.origin {
            let calls = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(
                "posts_api_sts_assume_role",
                "STS AssumeRole calls by result",
                None,
                calls.metric_type(),
            )?;
            for (result, count) in [
                ("success", status.refresh_count),
                ("failure", status.refresh_failures),
            ] {
                ConstCounter::new(count).encode(family.encode_family(&[("result", result)])?)?;
            }
        }

        let failures = ConstCounter::new(status.refresh_failures);
        failures.encode(encoder.encode_descriptor(
            "posts_api_credentials_refresh_failures",
            "Failed attempts to obtain fresh AWS credentials",
            None,
            failures.metric_type(),
        )?)?;

        if let Some(expires_at) = status.expires_at {
            let seconds = expires_at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64());
            let expiry = ConstGauge::new(seconds);
            expiry.encode(encoder.encode_descriptor(
                "posts_api_credentials_expiry_timestamp_seconds",
                "When the AWS credentials in use expire (Unix time)",
                None,
                expiry.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
