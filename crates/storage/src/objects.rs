//! Attachment bytes in S3, through a client that signs with the shared temporary
//! credentials.

use aws_config::SdkConfig;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    IdentityCache, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use serde::{Deserialize, Serialize};

/// The `s3.*` section of the service configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// Bucket for attachment bytes.
    pub bucket: String,
    /// Object keys are `{key_prefix}/{post_id}/{attachment_id}`.
    pub key_prefix: String,
    /// Path-style addressing, for emulators.
    pub force_path_style: bool,
    /// Multipart part size.
    pub part_size_bytes: u64,
    /// Concurrent part uploads per upload.
    pub max_parts_in_flight: u32,
    /// Lifetime of presigned URLs.
    pub presign_ttl_secs: u64,
}

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

/// The S3 bucket holding attachment bytes.
#[derive(Clone, Debug)]
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl ObjectStore {
    /// Builds the S3 client from aws-config's `SdkConfig` (region, endpoint, retries) and
    /// the shared credentials provider, which does its own caching and refreshing.
    pub fn new(
        sdk_config: &SdkConfig,
        credentials: SharedCredentialsProvider,
        settings: &S3Settings,
    ) -> Self {
        let config = aws_sdk_s3::config::Builder::from(sdk_config)
            .credentials_provider(credentials)
            // The provider is the cache; a second cache in front would hold credentials
            // past our refresh point.
            .identity_cache(IdentityCache::no_cache())
            .force_path_style(settings.force_path_style)
            // Since early 2025 the SDK adds CRC checksums to every request by default. A
            // presigned PUT then requires the uploader to send the same checksum header,
            // and several S3-compatible stores reject the trailers (aws-sdk-rust #1240).
            // Compute checksums only where an operation requires them.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket: settings.bucket.clone(),
        }
    }

    /// The configured bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Proves the bucket exists and the credentials may use it (`HeadBucket`).
    pub async fn check_bucket(&self) -> Result<(), ObjectStoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.classify(error)),
        }
    }

    fn classify<E>(&self, error: SdkError<E, HttpResponse>) -> ObjectStoreError
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
}

/// One line about an SDK error: S3's code and message, or the transport failure.
fn describe<E>(error: &SdkError<E, HttpResponse>) -> String
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
