//! The sections the `api` crate owns (`server`, `auth`, `log`), each validating itself.

use std::num::NonZeroU64;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use super::SettingsError;

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
}

impl ServerSettings {
    /// Checks the `server.*` values on their own.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.host.trim().is_empty() {
            return Err(SettingsError::new("server.host", "must not be empty"));
        }
        Ok(())
    }
}

/// `auth.*`: bearer token validation.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
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

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (local development).
    Pretty,
    /// One JSON object per line (production).
    Json,
}

fn serialize_redacted<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if secret.expose_secret().is_empty() {
        ""
    } else {
        "[redacted]"
    })
}
