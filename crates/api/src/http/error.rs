//! Every error response: `ApiError` and its one mapping to HTTP status and problem details.

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, CONTENT_RANGE, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use storage::StorageError;

use crate::http::problem::{FieldError, Problem};

/// Why a request failed, as the client should learn it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid bearer token; `description` says what is wrong with the one sent.
    #[error("{}", description.unwrap_or("a bearer token is required"))]
    Unauthorized {
        /// Why the token was refused; `None` when none was sent.
        description: Option<&'static str>,
    },
    /// 403: authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource (also for a malformed id).
    #[error("{0}")]
    NotFound(&'static str),
    /// 405: the resource exists but not this method; `allow` lists the methods it has.
    #[error("this resource allows only {allow}")]
    MethodNotAllowed {
        /// The value of the `Allow` header.
        allow: &'static str,
    },
    /// 409: the change conflicts with the stored state.
    #[error("{0}")]
    Conflict(String),
    /// 412: the resource is no longer at the version `If-Match` names.
    #[error("the post changed since the version If-Match names; read it again")]
    PreconditionFailed,
    /// 410: the resource existed and expired.
    #[error("{0}")]
    Gone(String),
    /// 412: a tus request without `Tus-Resumable: 1.0.0`.
    #[error("send `Tus-Resumable: 1.0.0`: this server speaks tus 1.0.0")]
    TusVersion,
    /// 413: the body or a file is too large, or there are too many files.
    #[error("{0}")]
    TooLarge(String),
    /// 415: the content type is not allowed.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 416: the range lies outside the content of `size` bytes.
    #[error("the requested range is not satisfiable")]
    RangeNotSatisfiable {
        /// The full size, for `Content-Range: bytes */size`.
        size: Option<u64>,
    },
    /// 422: well-formed but invalid fields.
    #[error("invalid fields")]
    Validation(Vec<FieldError>),
    /// 422: well-formed but not acceptable.
    #[error("{0}")]
    Unprocessable(String),
    /// 423: another request is writing to the resource.
    #[error("{0}")]
    Locked(String),
    /// 429: this caller has as many unfinished resumable uploads as one may.
    #[error("{0}")]
    UploadQuota(String),
    /// 507: the upload would take the caller past their quota.
    #[error("{detail}")]
    QuotaExceeded {
        /// What the upload needed and what the caller has.
        detail: String,
        /// The quota in bytes.
        quota: u64,
        /// What the caller uses of it, uploads in flight included.
        used: u64,
    },
    /// 429: this caller already has as many uploads in flight as one may.
    #[error("you have as many uploads in flight as one may; retry when one is done")]
    TooManyUploads,
    /// 503: the service is at its configured upload capacity.
    #[error("the service is at its upload capacity; retry shortly")]
    AtCapacity,
    /// 503: every render turn stayed taken (`media.max_concurrent_renders`).
    #[error("every render turn is taken; retry shortly")]
    RendersBusy,
    /// 503: a dependency is down; the cause goes to the logs only.
    #[error("a dependency is unavailable")]
    Unavailable(#[source] StorageError),
    /// 500: a bug; the cause goes to the logs only.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ApiError {
    /// A single invalid field.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed { .. } => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::PreconditionFailed => "precondition-failed",
            Self::Gone(_) => "gone",
            Self::TusVersion => "tus-version",
            Self::Locked(_) => "locked",
            Self::UploadQuota(_) => "too-many-uploads",
            Self::TooLarge(_) => "too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::RangeNotSatisfiable { .. } => "range-not-satisfiable",
            Self::Validation(_) => "validation",
            Self::Unprocessable(_) => "unprocessable",
            Self::TooManyUploads => "too-many-uploads",
            Self::QuotaExceeded { .. } => "quota-exceeded",
            Self::AtCapacity => "at-capacity",
            Self::RendersBusy => "renders-busy",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::NotFound(what) => format!("{what} not found"),
            Self::Validation(_) => "some fields are invalid; see `errors`".into(),
            Self::Unavailable(_) => "a dependency is unavailable; retry later".into(),
            Self::Internal(_) => "an internal error occurred".into(),
            other => other.to_string(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed | Self::TusVersion => StatusCode::PRECONDITION_FAILED,
            Self::Gone(_) => StatusCode::GONE,
            Self::Locked(_) => StatusCode::LOCKED,
            Self::UploadQuota(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Validation(_) | Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyUploads => StatusCode::TOO_MANY_REQUESTS,
            Self::QuotaExceeded { .. } => StatusCode::INSUFFICIENT_STORAGE,
            Self::AtCapacity | Self::RendersBusy | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unavailable(cause) => {
                tracing::warn!(cause = %ErrorChain(cause), "dependency unavailable");
            }
            Self::Internal(cause) => tracing::error!(cause, "internal error"),
            _ => {}
        }
        let mut problem = Problem::new(self.status_code(), self.slug(), self.detail());
        if let Self::Validation(errors) = self {
            problem = problem.with_errors(errors.clone());
        }
        if let Self::QuotaExceeded { quota, used, .. } = self {
            problem = problem.with_quota(*quota, *used);
        }
        let mut response = problem.builder();
        match self {
            Self::Unavailable(_) | Self::TooManyUploads | Self::AtCapacity => {
                response.insert_header((RETRY_AFTER, "5"));
            }
            Self::RendersBusy => {
                response.insert_header((RETRY_AFTER, "1"));
            }
            Self::Unauthorized { description } => {
                // RFC 6750: no error code when no token was sent.
                let challenge = match description {
                    None => r#"Bearer realm="posts-api""#.to_owned(),
                    Some(description) => format!(
                        r#"Bearer realm="posts-api", error="invalid_token", error_description="{description}""#
                    ),
                };
                response.insert_header((WWW_AUTHENTICATE, challenge));
            }
            Self::MethodNotAllowed { allow } => {
                response.insert_header((ALLOW, *allow));
            }
            Self::TusVersion => {
                response.insert_header(("Tus-Version", "1.0.0"));
            }
            Self::RangeNotSatisfiable { size: Some(size) } => {
                response.insert_header((CONTENT_RANGE, format!("bytes */{size}")));
            }
            _ => {}
        }
        response.json(problem)
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::NotFound(entity) => Self::NotFound(entity.as_str()),
            StorageError::InvalidCursor => Self::BadRequest("the cursor is not valid".into()),
            StorageError::Conflict(detail) => Self::Conflict(detail),
            StorageError::StaleVersion => Self::PreconditionFailed,
            error @ StorageError::NotAuthor => Self::Forbidden(error.to_string()),
            error @ (StorageError::TooManyAttachments { .. } | StorageError::NotAnImage) => {
                Self::Conflict(error.to_string())
            }
            StorageError::RenderBusy => Self::RendersBusy,
            StorageError::AtCapacity => Self::AtCapacity,
            StorageError::TooLarge { limit } => {
                Self::TooLarge(format!("a file exceeds the limit of {limit} bytes"))
            }
            StorageError::UnsupportedType { content_type } => {
                Self::UnsupportedMediaType(format!("files of type {content_type} are not allowed"))
            }
            StorageError::UploadMismatch(detail) | StorageError::ImageRefused(detail) => {
                Self::Unprocessable(detail)
            }
            error @ StorageError::Infected { .. } => Self::Unprocessable(error.to_string()),
            error @ StorageError::QuotaExceeded { quota, used, .. } => Self::QuotaExceeded {
                detail: error.to_string(),
                quota,
                used,
            },
            StorageError::Client(detail) => {
                Self::BadRequest(format!("the request body could not be read: {detail}"))
            }
            StorageError::RangeNotSatisfiable => Self::RangeNotSatisfiable { size: None },
            error @ StorageError::OffsetMismatch { .. } => Self::Conflict(error.to_string()),
            error @ StorageError::BeyondLength { .. } => Self::TooLarge(error.to_string()),
            error @ StorageError::UploadExpired => Self::Gone(error.to_string()),
            error @ StorageError::UploadLocked => Self::Locked(error.to_string()),
            error @ StorageError::TooManyResumableUploads { .. } => {
                Self::UploadQuota(error.to_string())
            }
            error @ (StorageError::Database(_)
            | StorageError::Objects(_)
            | StorageError::TimedOut(_)
            | StorageError::ScannerUnavailable(_)) => Self::Unavailable(error),
        }
    }
}

/// An error with its causes, `outer: inner: innermost`, for one log field.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Bad JSON bodies as problem details: 415 wrong type, 413 too large, 400 malformed.
pub fn json_error(error: JsonPayloadError, _request: &HttpRequest) -> actix_web::Error {
    let api_error = match &error {
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("the body must be application/json".into())
        }
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::TooLarge("the JSON body is too large".into())
        }
        other => ApiError::BadRequest(format!("the JSON body is malformed: {other}")),
    };
    api_error.into()
}

/// Bad query strings as problem details (400).
pub fn query_error(error: QueryPayloadError, _request: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("the query string is malformed: {error}")).into()
}

/// The default service of a resource: 405 with `Allow: allow`.
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    actix_web::web::to(move || async move {
        Err::<HttpResponse, _>(ApiError::MethodNotAllowed { allow })
    })
}
