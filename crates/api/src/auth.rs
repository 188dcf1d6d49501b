//! Bearer JWT authentication and per-post ownership.
//!
//! HS256 tokens are checked against `auth.jwt_hs256_secret` (local development); RS256 and
//! ES256 tokens against the keys of `auth.jwks_url` (production), fetched at start,
//! refreshed periodically and when a token names an unknown key. The configuration refuses
//! to load without one of them unless `auth.disabled` is set (see `AuthSettings::validate`).

use std::collections::{HashMap, HashSet};
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
/// The largest JWKS accepted; real ones are a few kilobytes.
const JWKS_MAX_BYTES: usize = 256 * 1024;
/// Unknown key ids remembered between fetches.
const JWKS_MAX_MISSES: usize = 4096;
/// The JWKS is refetched this often regardless.
pub const JWKS_REFRESH: Duration = Duration::from_secs(600);

/// Why authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
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

/// The claims of a token `posts-api token` mints.
#[derive(Debug, Serialize)]
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
    /// The set's keys by id, decoded once per fetch. The first key of an id wins, as in
    /// [`JwkSet::find`]; `None` where it cannot be decoded.
    keys: RwLock<HashMap<String, Option<DecodingKey>>>,
    /// Key ids that the current set lacks: a token naming one is refused without a fetch.
    misses: RwLock<HashSet<String>>,
    /// When the last fetch was tried, whether it worked or not. Held during a fetch, so
    /// concurrent callers wait for that one instead of starting their own.
    last_attempt: tokio::sync::Mutex<Instant>,
}

impl Authenticator {
    /// Builds the verifier; fetches the JWKS when one is configured.
    /// The settings were validated with the configuration (`AuthSettings::validate`): here
    /// they are only put to use.
    pub async fn from_settings(settings: &AuthSettings) -> Result<Self, AuthSetupError> {
        if settings.disabled {
            tracing::warn!(
                "AUTHENTICATION IS OFF (auth.disabled = true): anyone may create, change and \
                 delete anything. Never run like this outside tests and demos."
            );
            return Ok(Self {
                inner: Arc::new(Inner {
                    hs256: None,
                    jwks: None,
                    issuer: None,
                    audience: None,
                    public_reads: true,
                }),
            });
        }
        let hs256 = settings
            .hs256_secret()
            .map(|secret| {
                DecodingKey::from_secret(secret.as_bytes())
                    .map_err(|error| AuthSetupError::Secret(error.to_string()))
            })
            .transpose()?;
        let jwks = match settings.jwks_url() {
            None => None,
            Some(url) => Some(Jwks::load(url).await?),
        };
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
        let data = jsonwebtoken::decode::<Subject>(token, &key, &validation).map_err(|error| {
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

/// What the service reads of a verified token. `aud`, a string or an array (RFC 7519), and
/// the other registered claims are checked by the validation, not read here.
#[derive(Deserialize)]
struct Subject {
    sub: String,
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
            .connect_timeout(JWKS_TIMEOUT)
            .timeout(JWKS_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
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
            keys: RwLock::new(decode_keys(&keys)),
            misses: RwLock::default(),
            last_attempt: tokio::sync::Mutex::new(Instant::now()),
        })
    }

    /// Fetches the set again (the periodic refresh). Failures keep the current keys.
    async fn refetch(&self) -> Result<(), AuthSetupError> {
        let mut last_attempt = self.last_attempt.lock().await;
        *last_attempt = Instant::now();
        self.replace_keys(fetch(&self.client, &self.url).await?);
        Ok(())
    }

    fn replace_keys(&self, keys: JwkSet) {
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = decode_keys(&keys);
        self.misses
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    fn find(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(kid)
            .cloned()
            .flatten()
    }

    fn is_known_miss(&self, kid: &str) -> bool {
        self.misses
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(kid)
    }

    fn remember_miss(&self, kid: &str) {
        let mut misses = self
            .misses
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Random ids must not grow it without bound; forgetting them only costs a lookup.
        if misses.len() >= JWKS_MAX_MISSES {
            misses.clear();
        }
        misses.insert(kid.to_owned());
    }

    /// The key `kid`. An unknown one refetches the set, as after a rotation, but at most
    /// once per [`JWKS_MIN_REFETCH`] whether fetches work or fail, one fetch at a time;
    /// ids that a fetch just showed the set lacks are refused without another until the
    /// next one. An id refused without a fetch, or after a failed one, is not remembered:
    /// it is looked up again once a fetch is due.
    async fn key(&self, kid: &str) -> Result<DecodingKey, TokenRejected> {
        let unknown = || invalid("the token's signing key is unknown");
        if let Some(key) = self.find(kid) {
            return Ok(key);
        }
        if self.is_known_miss(kid) {
            return Err(unknown());
        }
        let mut last_attempt = self.last_attempt.lock().await;
        // Another caller may have fetched while this one waited.
        if let Some(key) = self.find(kid) {
            return Ok(key);
        }
        if last_attempt.elapsed() < JWKS_MIN_REFETCH {
            return Err(unknown());
        }
        *last_attempt = Instant::now();
        match fetch(&self.client, &self.url).await {
            Ok(keys) => self.replace_keys(keys),
            Err(error) => {
                tracing::warn!(%error, "JWKS refetch for an unknown key failed");
                return Err(unknown());
            }
        }
        drop(last_attempt);
        let key = self.find(kid);
        if key.is_none() {
            self.remember_miss(kid);
        }
        key.ok_or_else(unknown)
    }
}

/// The keys of `set` that have an id, decoded.
fn decode_keys(set: &JwkSet) -> HashMap<String, Option<DecodingKey>> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        if let Some(kid) = &jwk.common.key_id {
            keys.entry(kid.clone())
                .or_insert_with(|| DecodingKey::from_jwk(jwk).ok());
        }
    }
    keys
}

/// Fetches and parses a JWKS, refusing one larger than [`JWKS_MAX_BYTES`].
async fn fetch(client: &reqwest::Client, url: &str) -> Result<JwkSet, AuthSetupError> {
    let failed = |detail: String| AuthSetupError::Jwks {
        url: url.to_owned(),
        detail,
    };
    let mut response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|error| failed(error.to_string()))?;
    let too_large = || {
        failed(format!(
            "the response is larger than {JWKS_MAX_BYTES} bytes"
        ))
    };
    if response
        .content_length()
        .is_some_and(|length| length > JWKS_MAX_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| failed(error.to_string()))?
    {
        if body.len() + chunk.len() > JWKS_MAX_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|error| failed(format!("not a JWKS: {error}")))
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
