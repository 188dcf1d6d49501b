use std::num::NonZeroU64;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use serde::{Deserialize, Serialize};

/// The `aws.*` section of the service configuration (see `docs/configuration.md`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    /// Region for STS and S3.
    pub region: String,
    /// Role to assume; empty means the base credentials are used directly.
    pub role_arn: String,
    /// Prefix of the STS role session name.
    pub session_name_prefix: String,
    /// Requested AssumeRole session length.
    pub session_duration_secs: u64,
    /// Refresh this long before the credentials expire.
    pub refresh_lead_secs: u64,
    /// Optional AssumeRole external id; empty means none.
    pub external_id: String,
    /// Longest an AWS call (STS or S3) may take, retries included.
    pub operation_timeout_secs: NonZeroU64,
    /// Longest one attempt of an AWS call may take before it is retried; S3 also lets a
    /// transfer's body move no byte for that long.
    pub attempt_timeout_secs: NonZeroU64,
}

/// A configuration value that cannot work, with the key it belongs to.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct InvalidSetting {
    /// Full configuration key, e.g. `aws.region`.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl InvalidSetting {
    fn new(key: &'static str, problem: impl Into<String>) -> Self {
        Self {
            key,
            problem: problem.into(),
        }
    }
}

/// The session length AWS allows when a role assumes another role (role chaining).
pub const ROLE_CHAINING_MAX_SECS: u64 = 3600;

impl AwsSettings {
    /// The role to assume, if one is configured.
    pub fn role_arn(&self) -> Option<&str> {
        Some(self.role_arn.trim()).filter(|arn| !arn.is_empty())
    }

    /// The timeouts every AWS client of the service uses: a stalled STS or S3 fails the
    /// call within `operation_timeout_secs` instead of hanging it.
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(self.attempt_timeout_secs.get()))
            .operation_timeout(Duration::from_secs(self.operation_timeout_secs.get()))
            .build()
    }

    /// The external id to send with AssumeRole, if one is configured.
    pub fn external_id(&self) -> Option<&str> {
        Some(self.external_id.trim()).filter(|id| !id.is_empty())
    }

    /// Checks every `aws.*` value on its own; cross-section rules live with the caller.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.region.trim().is_empty() {
            return Err(InvalidSetting::new(
                "aws.region",
                "is required (set AWS_REGION or APP__AWS__REGION)",
            ));
        }
        if let Some(arn) = self.role_arn()
            && !(arn.starts_with("arn:") && arn.contains(":role/"))
        {
            return Err(InvalidSetting::new(
                "aws.role_arn",
                format!("`{arn}` is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
            ));
        }
        if !(900..=43200).contains(&self.session_duration_secs) {
            return Err(InvalidSetting::new(
                "aws.session_duration_secs",
                format!(
                    "{} is outside 900..=43200 seconds",
                    self.session_duration_secs
                ),
            ));
        }
        if self.refresh_lead_secs >= self.session_duration_secs {
            return Err(InvalidSetting::new(
                "aws.refresh_lead_secs",
                format!(
                    "{} must be less than aws.session_duration_secs ({})",
                    self.refresh_lead_secs, self.session_duration_secs
                ),
            ));
        }
        if self.attempt_timeout_secs > self.operation_timeout_secs {
            return Err(InvalidSetting::new(
                "aws.attempt_timeout_secs",
                format!(
                    "{} must not exceed aws.operation_timeout_secs ({})",
                    self.attempt_timeout_secs, self.operation_timeout_secs
                ),
            ));
        }
        let prefix = &self.session_name_prefix;
        if prefix.is_empty() || prefix.len() > 32 || !prefix.chars().all(is_session_name_char) {
            return Err(InvalidSetting::new(
                "aws.session_name_prefix",
                "must be 1 to 32 characters of letters, digits and +=,.@_-",
            ));
        }
        if let Some(id) = self.external_id()
            && !(2..=1224).contains(&id.len())
        {
            return Err(InvalidSetting::new(
                "aws.external_id",
                "must be 2 to 1224 characters",
            ));
        }
        Ok(())
    }
}

/// Characters STS accepts in a role session name (`[\w+=,.@-]`).
pub(crate) fn is_session_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> AwsSettings {
        AwsSettings {
            region: "eu-west-1".into(),
            role_arn: "arn:aws:iam::123456789012:role/posts-api".into(),
            session_name_prefix: "posts-api".into(),
            session_duration_secs: 3600,
            refresh_lead_secs: 300,
            external_id: String::new(),
            operation_timeout_secs: std::num::NonZeroU64::new(30).expect("non-zero"),
            attempt_timeout_secs: std::num::NonZeroU64::new(10).expect("non-zero"),
        }
    }

    fn invalid_key(settings: AwsSettings) -> &'static str {
        match settings.validate() {
            Err(error) => error.key,
            Ok(()) => panic!("expected an invalid setting"),
        }
    }

    #[test]
    fn defaults_like_settings_are_valid() {
        assert!(valid().validate().is_ok());
    }

    #[test]
    fn empty_role_arn_means_base_credentials() {
        let settings = AwsSettings {
            role_arn: "  ".into(),
            ..valid()
        };
        assert!(settings.validate().is_ok());
        assert_eq!(settings.role_arn(), None);
    }

    #[test]
    fn missing_region_is_named() {
        assert_eq!(
            invalid_key(AwsSettings {
                region: String::new(),
                ..valid()
            }),
            "aws.region"
        );
    }

    #[test]
    fn malformed_role_arn_is_rejected() {
        assert_eq!(
            invalid_key(AwsSettings {
                role_arn: "posts-api-role".into(),
                ..valid()
            }),
            "aws.role_arn"
        );
    }

    #[test]
    fn session_duration_outside_sts_bounds_is_rejected() {
        for secs in [899, 43201] {
            assert_eq!(
                invalid_key(AwsSettings {
                    session_duration_secs: secs,
                    ..valid()
                }),
                "aws.session_duration_secs"
            );
        }
    }

    #[test]
    fn refresh_lead_must_be_shorter_than_the_session() {
        assert_eq!(
            invalid_key(AwsSettings {
                refresh_lead_secs: 3600,
                ..valid()
            }),
            "aws.refresh_lead_secs"
        );
    }

    #[test]
    fn session_name_prefix_with_spaces_is_rejected() {
        assert_eq!(
            invalid_key(AwsSettings {
                session_name_prefix: "posts api".into(),
                ..valid()
            }),
            "aws.session_name_prefix"
        );
    }
}
