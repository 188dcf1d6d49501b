//! Why S3 calls fail, in our words: the SDK's errors classified once.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::ObjectStore;

/// Why an S3 call failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectStoreError {
    /// The bucket does not exist.
    #[error(
        "bucket `{bucket}` does not exist (check AWS_S3_BUCKET_NAME / s3.bucket and the region)"
    )]
    BucketNotFound {
        /// The configured bucket.
        bucket: String,
    },
    /// The object does not exist.
    #[error("object not found")]
    NotFound,
    /// A multipart upload cannot be completed from the parts named: one of them is missing
    /// or was uploaded again with other bytes since it was recorded.
    #[error("the parts of the multipart upload changed: {detail}")]
    PartsChanged {
        /// What S3 said.
        detail: String,
    },
    /// The requested range lies outside the object.
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
    /// S3 refused the credentials or the action.
    #[error("access to bucket `{bucket}` was denied: {detail}")]
    AccessDenied {
        /// The configured bucket.
        bucket: String,
        /// What S3 said.
        detail: String,
    },
    /// S3 could not be reached, or no credentials could be had to sign the request.
    #[error("S3 is unavailable: {detail}")]
    Unavailable {
        /// Transport, credentials or service detail.
        detail: String,
    },
}

/// Why a streamed upload stopped. Nothing is left in the bucket in any case.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The stream carried more than the allowed bytes.
    #[error("the upload exceeds {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The source stream failed (for example the client went away).
    #[error("the upload stream failed: {0}")]
    Client(String),
    /// S3 failed.
    #[error(transparent)]
    Backend(#[from] ObjectStoreError),
}

impl ObjectStore {
    /// Classifies a bucket-level failure.
    pub(super) fn classify<E>(&self, error: SdkError<E, HttpResponse>) -> ObjectStoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let detail = describe(&error);
        match error
            .raw_response()
            .map(|response| response.status().as_u16())
        {
            Some(404) => ObjectStoreError::BucketNotFound {
                bucket: self.bucket.clone(),
            },
            Some(401 | 403) => ObjectStoreError::AccessDenied {
                bucket: self.bucket.clone(),
                detail,
            },
            _ => ObjectStoreError::Unavailable { detail },
        }
    }

    /// Like `classify`, for calls on an object: 404 means the object (or upload) is
    /// missing, unless S3 says the bucket is.
    pub(super) fn classify_object<E>(&self, error: SdkError<E, HttpResponse>) -> ObjectStoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = error
            .raw_response()
            .map(|response| response.status().as_u16());
        let code = error.code().map(str::to_owned);
        match (status, code.as_deref()) {
            (Some(404), Some("NoSuchBucket")) => ObjectStoreError::BucketNotFound {
                bucket: self.bucket.clone(),
            },
            (Some(404), _) => ObjectStoreError::NotFound,
            (Some(416), _) => ObjectStoreError::RangeNotSatisfiable,
            (Some(400), Some("InvalidPart")) => ObjectStoreError::PartsChanged {
                detail: describe(&error),
            },
            _ => self.classify(error),
        }
    }
}

/// One line about an SDK error: S3's code and message, or the transport failure.
pub(super) fn describe<E>(error: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            match (context.err().code(), context.err().message()) {
                (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                _ => format!("HTTP {status}"),
            }
        }
        other => DisplayErrorContext(other).to_string(),
    }
}
