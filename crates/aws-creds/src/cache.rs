//! The credentials cache every AWS client of the service shares.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError as SdkCredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_smithy_async::time::SharedTimeSource;
use serde::Serialize;

use crate::error::CredentialsError;
use crate::source::FetchCredentials;

/// Where the cached credentials come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CredentialsOrigin {
    /// STS AssumeRole of `role_arn`, signed by the base chain.
    AssumeRole {
        /// The assumed role.
        role_arn: String,
    },
    /// The base chain itself; `provider` names the link expected to answer.
    BaseChain {
        /// `environment`, `profile`, `web-identity`, `ecs-container` or `instance-metadata`.
        provider: &'static str,
    },
}

/// A snapshot of the cache for readiness checks and metrics.
#[derive(Clone, Debug, Serialize)]
pub struct CredentialsStatus {
    /// Where credentials come from.
    pub origin: CredentialsOrigin,
    /// Expiry of the cached credentials; `None` when none are cached or they never expire.
    pub expires_at: Option<SystemTime>,
    /// When the cache last obtained fresh credentials.
    pub last_refresh: Option<SystemTime>,
    /// Successful fetches since start.
    pub refresh_count: u64,
    /// Failed fetches since start.
    pub refresh_failures: u64,
    /// Failed fetches since the last success.
    pub consecutive_failures: u32,
    /// Message of the last failure since the last success.
    pub last_error: Option<String>,
}

/// Bounded exponential backoff with jitter between failed refreshes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Delay before the next attempt after `failures` consecutive failures: exponential up
    /// to `max`, then scaled by a random factor in [0.5, 1) so instances do not align.
    pub(crate) fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let exponent = failures.saturating_sub(1).min(16);
        let ceiling = self.initial.saturating_mul(1 << exponent).min(self.max);
        ceiling.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    }
}

#[derive(Debug, Default)]
struct State {
    current: Option<Credentials>,
    last_refresh: Option<SystemTime>,
    refresh_count: u64,
    refresh_failures: u64,
    consecutive_failures: u32,
    last_error: Option<CredentialsError>,
    retry_not_before: Option<SystemTime>,
}

#[derive(Debug)]
struct Shared {
    source: Box<dyn FetchCredentials>,
    origin: CredentialsOrigin,
    time: SharedTimeSource,
    refresh_lead: Duration,
    backoff: Backoff,
    state: RwLock<State>,
    refreshing: tokio::sync::Mutex<()>,
}

/// Temporary credentials that are refreshed `refresh_lead` before they expire.
///
/// Clones share one cache. Build every SDK client with it as the credentials provider
/// (and the SDK's identity cache turned off), never from a `Credentials` snapshot.
#[derive(Clone, Debug)]
pub struct TemporaryCredentials {
    shared: Arc<Shared>,
}

enum Cached {
    Fresh(Credentials),
    /// Valid but inside the refresh lead window.
    Stale(Credentials, Option<SystemTime>),
    Expired(Option<SystemTime>),
    Missing(Option<SystemTime>),
}

impl TemporaryCredentials {
    pub(crate) fn new(
        source: Box<dyn FetchCredentials>,
        origin: CredentialsOrigin,
        time: SharedTimeSource,
        refresh_lead: Duration,
        backoff: Backoff,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                source,
                origin,
                time,
                refresh_lead,
                backoff,
                state: RwLock::default(),
                refreshing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Valid credentials: cached ones while they are outside the refresh lead window,
    /// otherwise fresh ones from one fetch shared by all concurrent callers.
    ///
    /// While a refresh fails and the cached credentials are still valid, those are served
    /// and the refresh is retried after a backoff; once they have expired the failure is
    /// returned.
    pub async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let now = self.shared.time.now();
        match self.cached(now) {
            Cached::Fresh(credentials) => return Ok(credentials),
            Cached::Stale(credentials, retry_not_before) => {
                if retry_not_before.is_some_and(|at| now < at) {
                    return Ok(credentials);
                }
                // Someone else is refreshing: keep serving what is still valid.
                match self.shared.refreshing.try_lock() {
                    Ok(guard) => return self.refresh(guard).await,
                    Err(_) => return Ok(credentials),
                }
            }
            Cached::Expired(retry_not_before) | Cached::Missing(retry_not_before) => {
                if retry_not_before.is_some_and(|at| now < at) {
                    return Err(self.failure_while_backing_off());
                }
            }
        }
        let guard = self.shared.refreshing.lock().await;
        self.refresh(guard).await
    }

    /// A provider for SDK client builders that shares this cache.
    pub fn shared_provider(&self) -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(self.clone())
    }

    /// What the cache holds now, for readiness checks and metrics.
    pub fn status(&self) -> CredentialsStatus {
        let state = self.read_state();
        CredentialsStatus {
            origin: self.shared.origin.clone(),
            expires_at: state.current.as_ref().and_then(Credentials::expiry),
            last_refresh: state.last_refresh,
            refresh_count: state.refresh_count,
            refresh_failures: state.refresh_failures,
            consecutive_failures: state.consecutive_failures,
            last_error: state.last_error.as_ref().map(ToString::to_string),
        }
    }

    fn cached(&self, now: SystemTime) -> Cached {
        let state = self.read_state();
        let Some(credentials) = &state.current else {
            return Cached::Missing(state.retry_not_before);
        };
        let Some(expiry) = credentials.expiry() else {
            return Cached::Fresh(credentials.clone());
        };
        if now >= expiry {
            Cached::Expired(state.retry_not_before)
        } else if now + self.shared.refresh_lead < expiry {
            Cached::Fresh(credentials.clone())
        } else {
            Cached::Stale(credentials.clone(), state.retry_not_before)
        }
    }

    /// Runs one fetch while holding the refresh lock, unless a caller that held it before
    /// us already did the work or failed recently.
    async fn refresh(
        &self,
        _guard: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<Credentials, CredentialsError> {
        let now = self.shared.time.now();
        match self.cached(now) {
            Cached::Fresh(credentials) => return Ok(credentials),
            Cached::Stale(credentials, Some(at)) if now < at => return Ok(credentials),
            Cached::Expired(Some(at)) | Cached::Missing(Some(at)) if now < at => {
                return Err(self.failure_while_backing_off());
            }
            _ => {}
        }

        let fetched = self.shared.source.fetch().await;
        let now = self.shared.time.now();
        let mut state = self
            .shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match fetched {
            Ok(credentials) => {
                state.current = Some(credentials.clone());
                state.last_refresh = Some(now);
                state.refresh_count += 1;
                state.consecutive_failures = 0;
                state.last_error = None;
                state.retry_not_before = None;
                Ok(credentials)
            }
            Err(error) => {
                state.refresh_failures += 1;
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let delay = self
                    .shared
                    .backoff
                    .delay(state.consecutive_failures, fastrand::f64());
                state.retry_not_before = Some(now + delay);
                state.last_error = Some(error.clone());
                let still_valid = state
                    .current
                    .as_ref()
                    .filter(|c| c.expiry().is_none_or(|expiry| now < expiry));
                match (still_valid, &state.current) {
                    (Some(credentials), _) => {
                        tracing::warn!(
                            error = %error,
                            failures = state.consecutive_failures,
                            retry_in = ?delay,
                            "credentials refresh failed; serving the current ones until they expire"
                        );
                        Ok(credentials.clone())
                    }
                    (None, Some(expired)) => {
                        tracing::error!(error = %error, "credentials expired and refresh failed");
                        Err(CredentialsError::Expired {
                            expired_at: expired.expiry().unwrap_or(now),
                            cause: Box::new(error),
                        })
                    }
                    (None, None) => Err(error),
                }
            }
        }
    }

    fn failure_while_backing_off(&self) -> CredentialsError {
        let state = self.read_state();
        let cause = state
            .last_error
            .clone()
            .unwrap_or(CredentialsError::Unavailable {
                detail: "refresh is backing off".into(),
            });
        match state.current.as_ref().and_then(Credentials::expiry) {
            Some(expired_at) => CredentialsError::Expired {
                expired_at,
                cause: Box::new(cause),
            },
            None => cause,
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl ProvideCredentials for TemporaryCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(SdkCredentialsError::provider_error)
        })
    }
}

#[cfg(test)]
mod tests;
