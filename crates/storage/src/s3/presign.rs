//! Presigned URLs: a GET that downloads as an attachment, a PUT of an exact size. Neither
//! outlives the credentials that sign it.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::ProvideCredentials;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;

use super::{ObjectStore, ObjectStoreError};

/// Presigned URLs stop this long before the signing credentials expire.
const PRESIGN_EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// A presigned request: the client must use this method and send these headers.
#[derive(Clone, Debug)]
pub struct PresignedUrl {
    /// The URL.
    pub url: String,
    /// The HTTP method.
    pub method: String,
    /// Headers the request must carry, as signed.
    pub headers: Vec<(String, String)>,
    /// When the URL stops working.
    pub expires_at: SystemTime,
}

impl ObjectStore {
    /// A presigned GET that downloads as an attachment named `filename` of `content_type`.
    pub async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
        content_disposition: &str,
        content_type: &str,
    ) -> Result<PresignedUrl, ObjectStoreError> {
        let (config, expires_at) = self.presigning(ttl).await?;
        let request = self
            .presigner
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(content_disposition)
            .response_content_type(content_type)
            .presigned(config)
            .await
            .map_err(|error| self.classify(error))?;
        Ok(presigned(&request, expires_at))
    }

    /// A presigned PUT of exactly `size` bytes of `content_type` at `key`.
    pub async fn presign_put(
        &self,
        key: &str,
        ttl: Duration,
        content_type: &str,
        size: u64,
    ) -> Result<PresignedUrl, ObjectStoreError> {
        let (config, expires_at) = self.presigning(ttl).await?;
        let request = self
            .presigner
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .presigned(config)
            .await
            .map_err(|error| self.classify(error))?;
        Ok(presigned(&request, expires_at))
    }

    /// The presigning configuration for `ttl`, cut so that the URL never outlives the
    /// credentials that sign it.
    async fn presigning(
        &self,
        ttl: Duration,
    ) -> Result<(PresigningConfig, SystemTime), ObjectStoreError> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|error| ObjectStoreError::Unavailable {
                detail: format!(
                    "no credentials to sign with: {}",
                    DisplayErrorContext(&error)
                ),
            })?;
        let now = SystemTime::now();
        let ttl = match credentials.expiry() {
            Some(expiry) => ttl.min(
                expiry
                    .duration_since(now)
                    .unwrap_or_default()
                    .saturating_sub(PRESIGN_EXPIRY_MARGIN),
            ),
            None => ttl,
        };
        if ttl.is_zero() {
            return Err(ObjectStoreError::Unavailable {
                detail: "the signing credentials are about to expire".into(),
            });
        }
        let config = PresigningConfig::builder()
            .start_time(now)
            .expires_in(ttl)
            .build()
            .map_err(|error| ObjectStoreError::Unavailable {
                detail: format!("cannot presign: {error}"),
            })?;
        Ok((config, now + ttl))
    }
}

fn presigned(
    request: &aws_sdk_s3::presigning::PresignedRequest,
    expires_at: SystemTime,
) -> PresignedUrl {
    PresignedUrl {
        url: request.uri().to_owned(),
        method: request.method().to_owned(),
        headers: request
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
        expires_at,
    }
}
