//! Where fresh credentials come from before they are cached: STS AssumeRole from the base
//! chain, or the base chain itself.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError as SdkCredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_async::time::SharedTimeSource;
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::error::CredentialsError;
use crate::settings::is_session_name_char;

pub(crate) type FetchFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Credentials, CredentialsError>> + Send + 'a>>;

/// Produces fresh credentials on every call; caching is the caller's job.
pub(crate) trait FetchCredentials: Send + Sync + Debug {
    fn fetch(&self) -> FetchFuture<'_>;
}

/// The base chain used directly (recommended on ECS when the bucket is in the task's account).
#[derive(Debug)]
pub(crate) struct BaseChain {
    pub(crate) base: SharedCredentialsProvider,
}

impl FetchCredentials for BaseChain {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            self.base
                .provide_credentials()
                .await
                .map_err(classify_base_error)
        })
    }
}

/// STS AssumeRole, signed with the base chain's credentials.
#[derive(Debug)]
pub(crate) struct AssumeRole {
    pub(crate) sts: aws_sdk_sts::Client,
    pub(crate) base: SharedCredentialsProvider,
    pub(crate) role_arn: String,
    pub(crate) session_name_prefix: String,
    pub(crate) host_id: String,
    pub(crate) duration: Duration,
    pub(crate) external_id: Option<String>,
    pub(crate) time: SharedTimeSource,
}

impl AssumeRole {
    pub(crate) fn new(
        sdk_config: &SdkConfig,
        base: SharedCredentialsProvider,
        role_arn: String,
        session_name_prefix: String,
        duration: Duration,
        external_id: Option<String>,
        interceptors: &[SharedInterceptor],
    ) -> Self {
        let mut sts_config = aws_sdk_sts::config::Builder::from(sdk_config);
        sts_config.set_credentials_provider(Some(base.clone()));
        for interceptor in interceptors {
            sts_config.push_interceptor(interceptor.clone());
        }
        let sts_config = sts_config.build();
        Self {
            sts: aws_sdk_sts::Client::from_conf(sts_config),
            base,
            role_arn,
            session_name_prefix,
            host_id: host_id(),
            duration,
            external_id,
            time: sdk_config.time_source().unwrap_or_default(),
        }
    }

    async fn assume(&self) -> Result<Credentials, CredentialsError> {
        // Resolve the base first so that "no base credentials" is reported as such, not as
        // an opaque signing failure of the STS call.
        self.base
            .provide_credentials()
            .await
            .map_err(classify_base_error)?;
        let now_ms = self
            .time
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let session_name = session_name(&self.session_name_prefix, &self.host_id, now_ms);
        let duration_secs = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let output = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&session_name)
            .duration_seconds(duration_secs)
            .set_external_id(self.external_id.clone())
            .send()
            .await;
        match output {
            Ok(output) => {
                let Some(credentials) = output.credentials else {
                    return Err(CredentialsError::Rejected {
                        role_arn: self.role_arn.clone(),
                        detail: "STS answered without credentials".into(),
                    });
                };
                let expiry = SystemTime::try_from(credentials.expiration).map_err(|error| {
                    CredentialsError::Rejected {
                        role_arn: self.role_arn.clone(),
                        detail: format!("STS answered with an unusable expiration: {error}"),
                    }
                })?;
                tracing::info!(
                    role_arn = %self.role_arn,
                    session_name = %session_name,
                    expires_in_secs = expiry
                        .duration_since(self.time.now())
                        .unwrap_or_default()
                        .as_secs(),
                    "assumed role"
                );
                Ok(Credentials::new(
                    credentials.access_key_id,
                    credentials.secret_access_key,
                    Some(credentials.session_token),
                    Some(expiry),
                    "AssumeRole",
                ))
            }
            Err(error) => Err(self.classify_assume_role_error(error).await),
        }
    }

    async fn classify_assume_role_error(
        &self,
        error: SdkError<AssumeRoleError, HttpResponse>,
    ) -> CredentialsError {
        let SdkError::ServiceError(context) = &error else {
            return CredentialsError::Unavailable {
                detail: DisplayErrorContext(&error).to_string(),
            };
        };
        let status = context.raw().status().as_u16();
        let code = context.err().code().map(str::to_owned).or_else(|| {
            // Some STS emulators answer bodies the SDK cannot parse; find the code by name.
            let body = context.raw().body().bytes().unwrap_or_default();
            let body = String::from_utf8_lossy(body);
            KNOWN_CODES
                .iter()
                .find(|code| body.contains(*code))
                .map(|code| (*code).to_owned())
        });
        let message = match (&code, context.err().message()) {
            (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
            (Some(code), None) => format!("{code} (HTTP {status})"),
            (None, _) => format!("HTTP {status}"),
        };
        match code.as_deref() {
            Some(
                "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "IncompleteSignature"
                | "ExpiredToken"
                | "InvalidAccessKeyId"
                | "UnrecognizedClientException",
            ) => CredentialsError::InvalidBaseCredentials { detail: message },
            Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded") => {
                CredentialsError::Unavailable { detail: message }
            }
            Some("AccessDenied") => self.access_denied(message).await,
            _ if status == 403 => self.access_denied(message).await,
            _ if status == 429 || status >= 500 => {
                CredentialsError::Unavailable { detail: message }
            }
            _ => CredentialsError::Rejected {
                role_arn: self.role_arn.clone(),
                detail: message,
            },
        }
    }

    async fn access_denied(&self, detail: String) -> CredentialsError {
        let caller = match self.sts.get_caller_identity().send().await {
            Ok(identity) => identity.arn.unwrap_or_else(|| "unknown".into()),
            Err(_) => "unknown".into(),
        };
        CredentialsError::AccessDenied {
            role_arn: self.role_arn.clone(),
            caller,
            detail,
        }
    }
}

const KNOWN_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "AccessDenied",
    "Throttling",
];

impl FetchCredentials for AssumeRole {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(self.assume())
    }
}

fn classify_base_error(error: SdkCredentialsError) -> CredentialsError {
    let detail = DisplayErrorContext(&error).to_string();
    match error {
        SdkCredentialsError::CredentialsNotLoaded(_) => {
            CredentialsError::NoBaseCredentials { detail }
        }
        SdkCredentialsError::InvalidConfiguration(_) => {
            CredentialsError::InvalidBaseCredentials { detail }
        }
        _ => CredentialsError::Unavailable { detail },
    }
}

/// `{prefix}-{host or task id}-{unix ms}`, at most 64 characters of STS's charset.
pub(crate) fn session_name(prefix: &str, host_id: &str, unix_ms: u128) -> String {
    let millis = unix_ms.to_string();
    let room = 64usize.saturating_sub(prefix.len() + millis.len() + 2);
    let host: String = host_id
        .chars()
        .map(|c| if is_session_name_char(c) { c } else { '-' })
        .take(room)
        .collect();
    if host.is_empty() {
        format!("{prefix}-{millis}")
    } else {
        format!("{prefix}-{host}-{millis}")
    }
}

/// The ECS task id when running as a task, else the host name.
fn host_id() -> String {
    let ecs_task = std::env::var("ECS_CONTAINER_METADATA_URI_V4")
        .ok()
        .and_then(|uri| {
            uri.trim_end_matches('/')
                .rsplit('/')
                .next()
                .and_then(|segment| segment.split('-').next())
                .map(str::to_owned)
        })
        .filter(|id| !id.is_empty());
    ecs_task
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_name_has_prefix_host_and_millis() {
        assert_eq!(
            session_name("posts-api", "ip-10-0-0-1", 1_700_000_000_123),
            "posts-api-ip-10-0-0-1-1700000000123"
        );
    }

    #[test]
    fn session_name_replaces_characters_sts_rejects() {
        assert_eq!(session_name("p", "host name/ü", 1), "p-host-name---1");
    }

    #[test]
    fn session_name_never_exceeds_64_characters() {
        let name = session_name(&"p".repeat(32), &"h".repeat(100), 1_700_000_000_123);
        assert_eq!(name.len(), 64);
        assert!(name.ends_with("-1700000000123"));
    }

    #[test]
    fn session_name_without_host_skips_it() {
        assert_eq!(session_name("posts-api", "", 5), "posts-api-5");
    }
}
