//! The sections the `api` crate owns (`server`, `auth`, `events`, `log`, `traces`), each
//! validating itself.

use std::num::{NonZeroU32, NonZeroU64};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Environment, SettingsError};

/// `server.*`: where to listen and how long shutdown may take.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub host: String,
    /// Listen port; 0 picks a free one.
    pub port: u16,
    /// Time in-flight requests get after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// An upload whose body sends nothing for this long fails.
    pub request_body_timeout_secs: NonZeroU64,
    /// A client that takes no byte of a response for this long is disconnected.
    pub response_body_timeout_secs: NonZeroU64,
    /// Longest a request's metadata work (MongoDB, and the S3 calls beside it) may take.
    pub storage_timeout_secs: NonZeroU64,
    /// Serve `/readyz` and `/metrics` on this port only, not on `port`; 0 keeps them on
    /// `port`.
    pub management_port: u16,
    /// Origins of web pages that may call the API from a browser (CORS); empty: none.
    #[serde(deserialize_with = "non_blank_items")]
    pub cors_allowed_origins: Vec<String>,
}

impl ServerSettings {
    /// Checks the `server.*` values on their own.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.host.trim().is_empty() {
            return Err(SettingsError::new("server.host", "must not be empty"));
        }
        if self.management_port != 0 && self.management_port == self.port {
            return Err(SettingsError::new(
                "server.management_port",
                "must differ from server.port (0 serves readiness and metrics on server.port)",
            ));
        }
        if let Some(origin) = self
            .cors_allowed_origins
            .iter()
            .find(|origin| !crate::http::cors::is_origin(origin))
        {
            return Err(SettingsError::new(
                "server.cors_allowed_origins",
                format!(
                    "`{origin}` is not an origin: write scheme://host[:port] in lower case, \
                     without a path or a wildcard"
                ),
            ));
        }
        Ok(())
    }
}

/// `auth.*`: bearer token validation. It fails closed: without a way to check tokens the
/// service refuses to start, unless `disabled` says, explicitly, to run without.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Run without authentication: anyone may write anything. For tests and demos only.
    pub disabled: bool,
    /// HS256 secret for local development.
    #[serde(serialize_with = "serialize_redacted")]
    pub jwt_hs256_secret: SecretString,
    /// JWKS for RS256/ES256 tokens.
    pub jwks_url: String,
    /// Required `iss` when set.
    pub issuer: String,
    /// Required `aud` when set.
    pub audience: String,
    /// Whether GET routes need no token.
    pub public_reads: bool,
}

/// The shortest HS256 secret accepted: 256 bits, the hash's size (RFC 7518, section 3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

impl AuthSettings {
    /// The HS256 secret, if one is set.
    pub fn hs256_secret(&self) -> Option<&str> {
        Some(self.jwt_hs256_secret.expose_secret()).filter(|secret| !secret.is_empty())
    }

    /// The JWKS URL, if one is set.
    pub fn jwks_url(&self) -> Option<&str> {
        Some(self.jwks_url.trim()).filter(|url| !url.is_empty())
    }

    /// Checks that tokens can be verified, as strictly as `environment` requires: in
    /// production only JWKS, with the issuer and audience every token must name.
    pub fn validate(&self, environment: &Environment) -> Result<(), SettingsError> {
        if self.disabled {
            return Ok(());
        }
        let (secret, jwks) = (self.hs256_secret(), self.jwks_url());
        if secret.is_none() && jwks.is_none() {
            return Err(SettingsError::new(
                "auth",
                "no way to verify tokens: set auth.jwks_url (or auth.jwt_hs256_secret in local \
                 development), or auth.disabled = true to run without authentication",
            ));
        }
        let production = *environment == Environment::Production;
        if let Some(secret) = secret {
            if production {
                return Err(SettingsError::new(
                    "auth.jwt_hs256_secret",
                    "HS256 is refused in production: anyone who reads the shared secret can \
                     mint tokens for any user; use auth.jwks_url",
                ));
            }
            if secret.len() < MIN_HS256_SECRET_BYTES {
                return Err(SettingsError::new(
                    "auth.jwt_hs256_secret",
                    format!(
                        "is {} bytes; HS256 needs at least {MIN_HS256_SECRET_BYTES} (256 bits) \
                         to resist guessing",
                        secret.len()
                    ),
                ));
            }
        }
        if let Some(url) = jwks {
            let local_http = *environment == Environment::Local && url.starts_with("http://");
            if !(url.starts_with("https://") || local_http) {
                return Err(SettingsError::new(
                    "auth.jwks_url",
                    "must be an https:// URL (http:// only in local development): keys fetched \
                     in the clear can be replaced on the way",
                ));
            }
            if production {
                for (key, value) in [
                    ("auth.issuer", &self.issuer),
                    ("auth.audience", &self.audience),
                ] {
                    if value.trim().is_empty() {
                        return Err(SettingsError::new(
                            key,
                            "is required with auth.jwks_url in production: an identity provider \
                             shared with other applications issues tokens for them too",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `log.*`: log output.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Human-readable or JSON lines.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,storage=debug`.
    pub level: String,
}

impl LogSettings {
    /// Checks that the level is a valid tracing filter.
    pub fn validate(&self) -> Result<(), SettingsError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(|_| ())
            .map_err(|error| SettingsError::new("log.level", error.to_string()))
    }
}

/// `admission.*`: how much upload work the service takes on at once, so a burst is refused
/// with 503 or 429 and `Retry-After` instead of exhausting the task's memory.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSettings {
    /// Memory all streamed uploads may hold at once. Each holds up to
    /// (`s3.max_parts_in_flight` + 1) × `s3.part_size_bytes`.
    pub upload_memory_bytes: NonZeroU64,
    /// Streamed uploads one user may have in flight at once.
    pub uploads_per_user: NonZeroU32,
    /// After its first 10 s, an upload body slower than this (bytes a second) is cut off.
    pub min_upload_bytes_per_sec: u64,
    /// No upload body may take longer than this.
    pub upload_deadline_secs: NonZeroU64,
}

/// `traces.*`: OpenTelemetry traces, off unless an endpoint is set.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSettings {
    /// Base URL of an OTLP/HTTP collector, e.g. `http://127.0.0.1:4318`; empty sends none.
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Share of new traces recorded, 0 to 1; a request that arrives inside a sampled trace
    /// (`traceparent`) is recorded as its parent decided.
    pub sample_ratio: f64,
}

impl TraceSettings {
    /// Whether traces are sent.
    pub fn is_on(&self) -> bool {
        self.traces_endpoint().is_some()
    }

    /// Where spans are sent (`{otlp_endpoint}/v1/traces`), if anywhere.
    pub fn traces_endpoint(&self) -> Option<String> {
        let base = self.otlp_endpoint.trim().trim_end_matches('/');
        (!base.is_empty()).then(|| format!("{base}/v1/traces"))
    }

    /// Checks the `traces.*` values on their own.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let endpoint = self.otlp_endpoint.trim();
        if !(endpoint.is_empty()
            || endpoint.starts_with("http://")
            || endpoint.starts_with("https://"))
        {
            return Err(SettingsError::new(
                "traces.otlp_endpoint",
                "must be an http:// or https:// URL, or empty",
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(SettingsError::new(
                "traces.sample_ratio",
                format!("{} is outside 0 to 1", self.sample_ratio),
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(SettingsError::new(
                "traces.service_name",
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (local development).
    Pretty,
    /// One JSON object per line (production).
    Json,
}

/// `events.*`: webhooks of a post's life, off unless a URL is set.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Where events are POSTed; empty: none are recorded or sent.
    pub webhook_url: String,
    /// The signing secret in its Standard Webhooks form, `whsec_` + base64 of 24 to 64
    /// bytes.
    #[serde(serialize_with = "serialize_redacted")]
    pub webhook_secret: SecretString,
    /// Attempts per event before it is kept as failed.
    pub max_attempts: NonZeroU32,
    /// Longest a receiver may take to answer one attempt.
    pub timeout_secs: NonZeroU64,
    /// Wait before the second attempt; each later one doubles it, with jitter...
    pub first_retry_ms: NonZeroU64,
    /// ...up to this.
    pub max_retry_secs: NonZeroU64,
    /// Events this instance delivers at once (one per post at a time).
    pub max_concurrent_deliveries: NonZeroU32,
}

impl EventSettings {
    /// Whether events are recorded and sent.
    pub fn is_on(&self) -> bool {
        !self.webhook_url.trim().is_empty()
    }

    /// The signing key: the secret's bytes without its `whsec_` prefix.
    pub fn signing_key(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let secret = self.webhook_secret.expose_secret();
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .filter(|key| (24..=64).contains(&key.len()))
    }

    /// Checks the `events.*` values on their own.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !self.is_on() {
            return Ok(());
        }
        let url = self.webhook_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(SettingsError::new(
                "events.webhook_url",
                format!("`{url}` is not an http:// or https:// URL"),
            ));
        }
        if self.signing_key().is_none() {
            return Err(SettingsError::new(
                "events.webhook_secret",
                "must be whsec_ followed by the base64 of 24 to 64 random bytes (e.g. \
                 `echo whsec_$(head -c 32 /dev/urandom | base64)`)",
            ));
        }
        Ok(())
    }
}

fn serialize_redacted<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if secret.expose_secret().is_empty() {
        ""
    } else {
        "[redacted]"
    })
}

/// A list without its blank items, each trimmed: an empty variable is an empty list, and
/// `a, b` is `a` and `b`.
fn non_blank_items<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let items = Vec::<String>::deserialize(deserializer)?;
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}
