//! Prometheus metrics served at `/metrics`.

use std::time::UNIX_EPOCH;

use aws_creds::{CredentialsOrigin, TemporaryCredentials};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of one service instance.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Registers the service's metrics; credentials metrics are read from the cache at
    /// each scrape.
    pub fn new(credentials: TemporaryCredentials) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(CredentialsCollector { credentials }));
        Self { registry }
    }

    /// The text exposition.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
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
