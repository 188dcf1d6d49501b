//! Bearer JWT authentication and per-post ownership.
//!
//! HS256 tokens are checked against `auth.jwt_hs256_secret` (local development); RS256 and
//! ES256 tokens against the keys of `auth.jwks_url` (production), fetched at start,
//! refreshed periodically and when a token names an unknown key. With neither configured
//! the service runs open — refused in production.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::AuthSettings;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// How long a JWKS fetch may take.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Unknown key ids refetch the JWKS at most this often.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(5);
/// The JWKS is refetched this often regardless.
pub const JWKS_REFRESH: Duration = Duration::from_secs(600);

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// Production without any way to check tokens.
    #[error(
        "set auth.jwt_hs256_secret or auth.jwks_url: the production environment refuses to run without authentication"
    )]
    NotConfigured,
    /// The JWKS could not be fetched or read.
    #[error("cannot load the JWKS from {url}: {detail}")]
    Jwks {
        /// The configured URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The HS256 secret is unusable.
    #[error("auth.jwt_hs256_secret is unusable: {0}")]
    Secret(String),
}

/// The claims the service reads.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The caller; becomes a post's `author`.
    pub sub: String,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Issued at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Verifies bearer tokens; shared by every worker.
#[derive(Debug, Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<String>,
    public_reads: bool,
}

#[derive(Debug)]
struct Jwks {
    url: String,
    client: reqwest::Client,
    keys: RwLock<JwkSet>,
    last_fetch: tokio::sync::Mutex<Instant>,
}

impl Authenticator {
    /// Builds the verifier; fetches the JWKS when one is configured.
    pub async fn from_settings(
        settings: &AuthSettings,
        production: bool,
    ) -> Result<Self, AuthSetupError> {
        let secret = settings.jwt_hs256_secret.expose_secret();
        let hs256 = if secret.is_empty() {
            None
        } else {
            Some(
                DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|error| AuthSetupError::Secret(error.to_string()))?,
            )
        };
        let jwks = match settings.jwks_url.trim() {
            "" => None,
            url => Some(Jwks::load(url).await?),
        };
        if hs256.is_none() && jwks.is_none() {
            if production {
                return Err(AuthSetupError::NotConfigured);
            }
            tracing::warn!(
                "AUTHENTICATION IS OFF: no auth.jwt_hs256_secret or auth.jwks_url; anyone may \
                 create, change and delete anything. Never run like this outside development."
            );
        }
        let non_empty = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        Ok(Self {
            inner: Arc::new(Inner {
                hs256,
                jwks,
                issuer: non_empty(&settings.issuer),
                audience: non_empty(&settings.audience),
                public_reads: settings.public_reads,
            }),
        })
    }

    /// Whether reads need no token (`auth.public_reads`).
    pub fn public_reads(&self) -> bool {
        self.inner.public_reads
    }

    /// Whether tokens are checked at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.hs256.is_some() || self.inner.jwks.is_some()
    }

    /// Refetches the JWKS, if one is configured; failures keep the old keys.
    pub async fn refresh_jwks(&self) {
        if let Some(jwks) = &self.inner.jwks
            && let Err(error) = jwks.refetch().await
        {
            tracing::warn!(%error, "JWKS refresh failed; keeping the current keys");
        }
    }

    /// The subject of a valid token.
    pub async fn verify(&self, token: &str) -> Result<String, TokenRejected> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid("the token is malformed"))?;
        let (key, algorithm) = match header.alg {
            Algorithm::HS256 => (
                self.inner
                    .hs256
                    .clone()
                    .ok_or_else(|| invalid("HS256 tokens are not accepted"))?,
                Algorithm::HS256,
            ),
            algorithm @ (Algorithm::RS256 | Algorithm::ES256) => {
                let jwks = self
                    .inner
                    .jwks
                    .as_ref()
                    .ok_or_else(|| invalid("RS256/ES256 tokens are not accepted"))?;
                let kid = header
                    .kid
                    .ok_or_else(|| invalid("the token names no key (kid)"))?;
                (jwks.key(&kid).await?, algorithm)
            }
            _ => return Err(invalid("the token's algorithm is not accepted")),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &self.inner.issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match &self.inner.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|error| {
            invalid(match error.kind() {
                ErrorKind::ExpiredSignature => "the token has expired",
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                ErrorKind::InvalidSignature => "the token's signature is invalid",
                ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
                ErrorKind::InvalidAudience => "the token's audience is not accepted",
                ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim",
                _ => "the token is invalid",
            })
        })?;
        Ok(data.claims.sub)
    }
}

/// Why a bearer token was refused, in words fit for `WWW-Authenticate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenRejected(pub &'static str);

fn invalid(description: &'static str) -> TokenRejected {
    TokenRejected(description)
}

impl Jwks {
    async fn load(url: &str) -> Result<Self, AuthSetupError> {
        let client = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .build()
            .map_err(|error| AuthSetupError::Jwks {
                url: url.to_owned(),
                detail: error.to_string(),
            })?;
        let keys = fetch(&client, url).await?;
        tracing::info!(url, keys = keys.keys.len(), "loaded JWKS");
        Ok(Self {
            url: url.to_owned(),
            client,
            keys: RwLock::new(keys),
            last_fetch: tokio::sync::Mutex::new(Instant::now()),
        })
    }

    async fn refetch(&self) -> Result<(), AuthSetupError> {
        let mut last_fetch = self.last_fetch.lock().await;
        let keys = fetch(&self.client, &self.url).await?;
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        *last_fetch = Instant::now();
        Ok(())
    }

    fn find(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.find(kid)
            .and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
    }

    /// The key `kid`; an unknown one refetches the set (rate-limited), as after a rotation.
    async fn key(&self, kid: &str) -> Result<DecodingKey, TokenRejected> {
        if let Some(key) = self.find(kid) {
            return Ok(key);
        }
        let due = self.last_fetch.lock().await.elapsed() >= JWKS_MIN_REFETCH;
        if due && let Err(error) = self.refetch().await {
            tracing::warn!(%error, "JWKS refetch for an unknown key failed");
        }
        self.find(kid)
            .ok_or_else(|| invalid("the token's signing key is unknown"))
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<JwkSet, AuthSetupError> {
    let failed = |detail: String| AuthSetupError::Jwks {
        url: url.to_owned(),
        detail,
    };
    let response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|error| failed(error.to_string()))?;
    response
        .json::<JwkSet>()
        .await
        .map_err(|error| failed(format!("not a JWKS: {error}")))
}

/// Mints an HS256 token for local use (`posts-api token`).
pub fn mint_hs256(
    settings: &AuthSettings,
    subject: &str,
    ttl: Duration,
) -> Result<String, AuthSetupError> {
    let secret = settings.jwt_hs256_secret.expose_secret();
    if secret.is_empty() {
        return Err(AuthSetupError::Secret("it is empty".into()));
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: subject.to_owned(),
        exp: now + ttl.as_secs(),
        iat: Some(now),
        iss: Some(settings.issuer.clone()).filter(|v| !v.is_empty()),
        aud: Some(settings.audience.clone()).filter(|v| !v.is_empty()),
    };
    let key = EncodingKey::from_secret(secret.as_bytes())
        .map_err(|error| AuthSetupError::Secret(error.to_string()))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|error| AuthSetupError::Secret(error.to_string()))
}
