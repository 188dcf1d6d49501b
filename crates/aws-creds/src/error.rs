use std::time::SystemTime;

/// Why temporary credentials could not be had. Each variant's message tells an operator
/// what to change.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CredentialsError {
    /// STS refused the AssumeRole call for this caller.
    #[error(
        "STS AssumeRole of {role_arn} was denied for caller {caller}: {detail}. \
         Fix one of: (1) the caller lacks permission: allow `sts:AssumeRole` on {role_arn} \
         in the caller's IAM policy (locally: the IAM user whose keys you use); \
         (2) the role's trust policy does not name the caller: add it as a Principal \
         (on ECS: the task role's ARN, and set taskRoleArn in the task definition)"
    )]
    AccessDenied {
        /// The role that could not be assumed.
        role_arn: String,
        /// The ARN of the base identity, or `unknown`.
        caller: String,
        /// STS's own message.
        detail: String,
    },
    /// The base credentials were rejected (unknown key, wrong secret, expired token).
    #[error(
        "the base AWS credentials were rejected ({detail}); check AWS_ACCESS_KEY_ID / \
         AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or the profile in use"
    )]
    InvalidBaseCredentials {
        /// STS's own message.
        detail: String,
    },
    /// No provider in the default chain produced credentials.
    #[error(
        "no base AWS credentials found ({detail}); provide them through the environment, \
         a profile, web identity, the ECS task role or instance metadata"
    )]
    NoBaseCredentials {
        /// What the chain reported.
        detail: String,
    },
    /// STS could not be reached or kept failing transiently after the SDK's retries.
    #[error("STS is unavailable: {detail}")]
    Unavailable {
        /// Transport or throttling detail.
        detail: String,
    },
    /// STS rejected the request for another reason.
    #[error("STS rejected AssumeRole of {role_arn}: {detail}")]
    Rejected {
        /// The role that could not be assumed.
        role_arn: String,
        /// Status, code and message.
        detail: String,
    },
    /// The cached credentials expired and every refresh since has failed.
    #[error("temporary credentials expired at {expired_at:?} and could not be refreshed: {cause}")]
    Expired {
        /// When the last good credentials expired.
        expired_at: SystemTime,
        /// The last refresh failure.
        cause: Box<CredentialsError>,
    },
}

impl CredentialsError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Expired { cause, .. } => cause.is_transient(),
            _ => false,
        }
    }
}
