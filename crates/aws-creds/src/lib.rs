//! Temporary AWS credentials for posts-api that never expire under the service.
//!
//! Every AWS client of the service is built with one shared [`TemporaryCredentials`] as its
//! credentials provider. It holds either credentials from STS `AssumeRole` of
//! `aws.role_arn`, signed by the base chain, or (with no role configured) the base chain's
//! own credentials — on ECS the task role, the recommended set-up when the bucket is in the
//! task's account.
//!
//! What is the SDK's and what is ours:
//! - The SDK's: the base credentials chain (environment, profile, web identity, ECS
//!   container endpoint, instance metadata), the STS client with its signing, retries of
//!   throttling and network errors, and timeouts.
//! - Ours: the cache. The SDK's lazy identity cache refreshes a fixed buffer before expiry
//!   and, when a refresh fails, fails the request even though the old credentials are still
//!   valid. We need a configurable lead (`aws.refresh_lead_secs`, which also bounds how
//!   long a presigned URL may live), serving still-valid credentials while a refresh fails
//!   with bounded backoff, callers never waiting on a refresh while valid credentials exist,
//!   a status for `/readyz` and `/metrics`, and typed errors that tell an operator what to
//!   fix. Clients must therefore be built with the SDK's identity cache turned off.
//! - Ours too: the AssumeRole call itself, rather than aws-config's `AssumeRoleProvider`,
//!   because that provider fixes the role session name once at build time and hides the
//!   STS error we classify.

mod cache;
mod error;
mod settings;
mod source;

use std::time::Duration;

use aws_config::SdkConfig;

pub use crate::cache::{CredentialsOrigin, CredentialsStatus, TemporaryCredentials};
pub use crate::error::CredentialsError;
pub use crate::settings::{AwsSettings, InvalidSetting, ROLE_CHAINING_MAX_SECS};

use crate::cache::Backoff;
use crate::source::{AssumeRole, BaseChain};
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;

impl TemporaryCredentials {
    /// Builds the shared credentials from the `aws.*` settings and an `SdkConfig` loaded by
    /// aws-config (whose credentials provider is the base chain). Nothing is fetched yet;
    /// call [`TemporaryCredentials::credentials`] to prove the set-up works.
    pub fn from_settings(
        settings: &AwsSettings,
        sdk_config: &SdkConfig,
    ) -> Result<Self, CredentialsError> {
        Self::with_interceptors(settings, sdk_config, &[])
    }

    /// Like [`TemporaryCredentials::from_settings`], with `interceptors` on every STS call
    /// (the service's trace spans).
    pub fn with_interceptors(
        settings: &AwsSettings,
        sdk_config: &SdkConfig,
        interceptors: &[SharedInterceptor],
    ) -> Result<Self, CredentialsError> {
        let base = sdk_config.credentials_provider().ok_or_else(|| {
            CredentialsError::NoBaseCredentials {
                detail: "the AWS SDK configuration has no credentials provider".into(),
            }
        })?;
        let time = sdk_config.time_source().unwrap_or_default();
        let lead = Duration::from_secs(settings.refresh_lead_secs);
        let credentials = match settings.role_arn() {
            Some(role_arn) => {
                if settings.session_duration_secs > ROLE_CHAINING_MAX_SECS {
                    tracing::warn!(
                        session_duration_secs = settings.session_duration_secs,
                        "AssumeRole sessions longer than 3600 s fail when the base \
                         credentials are themselves a role (role chaining, e.g. an ECS task role)"
                    );
                }
                let source = AssumeRole::new(
                    sdk_config,
                    base,
                    role_arn.to_owned(),
                    settings.session_name_prefix.clone(),
                    Duration::from_secs(settings.session_duration_secs),
                    settings.external_id().map(str::to_owned),
                    interceptors,
                );
                Self::new(
                    Box::new(source),
                    CredentialsOrigin::AssumeRole {
                        role_arn: role_arn.to_owned(),
                    },
                    time,
                    lead,
                    Backoff::default(),
                )
            }
            None => Self::new(
                Box::new(BaseChain { base }),
                CredentialsOrigin::BaseChain {
                    provider: expected_base_provider(),
                },
                time,
                lead,
                Backoff::default(),
            ),
        };
        Ok(credentials)
    }
}

/// The first link of the SDK's default chain that the environment configures.
fn expected_base_provider() -> &'static str {
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    if set("AWS_ACCESS_KEY_ID") {
        "environment"
    } else if set("AWS_PROFILE") || set("AWS_CONFIG_FILE") || set("AWS_SHARED_CREDENTIALS_FILE") {
        "profile"
    } else if set("AWS_WEB_IDENTITY_TOKEN_FILE") {
        "web-identity"
    } else if set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    {
        "ecs-container"
    } else {
        "instance-metadata"
    }
}
