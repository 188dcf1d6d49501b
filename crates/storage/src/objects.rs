//! Attachment bytes in S3, through a client that signs with the shared temporary
//! credentials: streamed uploads (single PutObject or bounded multipart), ranged
//! downloads, presigned URLs, and the clean-up of incomplete multipart uploads.

use std::fmt::Display;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    IdentityCache, ProvideCredentials, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

/// Every IAM action the object store needs, and the S3 operations that need it. The
/// deployment's least-privilege policy (`deploy/ecs/iam/task-role-s3-policy.json`) must
/// grant exactly these; a test keeps the two equal.
pub const IAM_ACTIONS: &[(&str, &[&str])] = &[
    (
        "s3:PutObject",
        &[
            "PutObject",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "presigned PUT",
        ],
    ),
    (
        "s3:GetObject",
        &["GetObject", "HeadObject", "presigned GET"],
    ),
    ("s3:DeleteObject", &["DeleteObject"]),
    ("s3:AbortMultipartUpload", &["AbortMultipartUpload"]),
    ("s3:ListBucket", &["HeadBucket"]),
    ("s3:ListBucketMultipartUploads", &["ListMultipartUploads"]),
];

/// S3 rejects multipart parts smaller than this (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// Presigned URLs stop this long before the signing credentials expire.
const PRESIGN_EXPIRY_MARGIN: Duration = Duration::from_secs(5);

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
    /// The object does not exist.
    #[error("object not found")]
    NotFound,
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

/// Size and digest of stored bytes, computed while they streamed through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
}

/// A byte range of an object, as HTTP `Range` expresses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `start..=end`
    Inclusive(u64, u64),
    /// `start..`
    From(u64),
    /// The last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    fn header(self) -> String {
        match self {
            Self::Inclusive(start, end) => format!("bytes={start}-{end}"),
            Self::From(start) => format!("bytes={start}-"),
            Self::Suffix(length) => format!("bytes=-{length}"),
        }
    }
}

/// A download in progress.
pub struct ObjectBody {
    /// Bytes in this response (the range's length for a ranged read).
    pub content_length: u64,
    /// `(start, end inclusive, total size)` for a ranged read.
    pub content_range: Option<(u64, u64, u64)>,
    /// The bytes.
    pub stream: futures::stream::BoxStream<'static, Result<Bytes, ObjectStoreError>>,
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBody")
            .field("content_length", &self.content_length)
            .field("content_range", &self.content_range)
            .finish_non_exhaustive()
    }
}

/// What S3 knows of a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
}

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

/// A multipart upload that was started and never completed.
#[derive(Clone, Debug)]
pub struct IncompleteUpload {
    /// Object key.
    pub key: String,
    /// S3's upload id.
    pub upload_id: String,
    /// When it was started.
    pub initiated: Option<SystemTime>,
}

/// The S3 bucket holding attachment bytes.
#[derive(Clone, Debug)]
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
    credentials: SharedCredentialsProvider,
    bucket: String,
    key_prefix: String,
    part_size: usize,
    max_parts_in_flight: usize,
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
            .credentials_provider(credentials.clone())
            // The provider is the cache; a second cache in front would hold credentials
            // past our refresh point.
            .identity_cache(IdentityCache::no_cache())
            .force_path_style(settings.force_path_style)
            // Since early 2025 the SDK adds CRC checksums to every request by default. A
            // presigned PUT then requires the uploader to send the same checksum header,
            // and several S3-compatible stores reject the trailers (aws-sdk-rust #1240).
            // Compute checksums only where an operation requires them; integrity is ours
            // (SHA-256 of every stored byte).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(config),
            credentials,
            bucket: settings.bucket.clone(),
            key_prefix: settings.key_prefix.trim_end_matches('/').to_owned(),
            part_size: usize::try_from(settings.part_size_bytes.max(MIN_PART_SIZE))
                .unwrap_or(usize::MAX),
            max_parts_in_flight: usize::try_from(settings.max_parts_in_flight.max(1)).unwrap_or(1),
        }
    }

    /// The configured bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key of an attachment's bytes: built from ids only, never from user input.
    pub fn key_for(&self, post_id: impl Display, attachment_id: impl Display) -> String {
        format!("{}/{post_id}/{attachment_id}", self.key_prefix)
    }

    /// Proves the bucket exists and the credentials may use it (`HeadBucket`).
    pub async fn check_bucket(&self) -> Result<(), ObjectStoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.classify(error)),
        }
    }

    /// Stores `stream` at `key`, failing with `TooLarge` past `max_bytes`.
    ///
    /// An object smaller than a part is one PutObject; a larger one is a multipart upload
    /// with at most `max_parts_in_flight` parts uploading while the next one fills, so
    /// memory stays within (in flight + 1) × part size whatever the size. On any failure,
    /// and if the returned future is dropped, the multipart upload is aborted.
    ///
    /// Bodies are sent with `UNSIGNED-PAYLOAD`, as the AWS SDKs for Java and JavaScript do
    /// by default: SigV4 payload signing hashed every byte a second time (a profile showed
    /// the two SHA-256 passes at 41% of the service's CPU during uploads), while TLS
    /// already protects S3 traffic in transit and the service records its own SHA-256.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        content_type: &str,
        mut stream: S,
        max_bytes: u64,
    ) -> Result<StoredObject, PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut buffer = PartBuffer::new(self.part_size);
        let mut multipart: Option<MultipartUpload> = None;

        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    return Err(self
                        .fail(multipart, PutError::Client(error.to_string()))
                        .await);
                }
            };
            size += chunk.len() as u64;
            if size > max_bytes {
                return Err(self
                    .fail(multipart, PutError::TooLarge { limit: max_bytes })
                    .await);
            }
            hasher.update(&chunk);
            let mut data = &chunk[..];
            while let Some(part) = buffer.fill(&mut data) {
                let upload = match multipart.as_mut() {
                    Some(upload) => upload,
                    None => match self.start_multipart(key, content_type).await {
                        Ok(upload) => multipart.insert(upload),
                        Err(error) => return Err(error.into()),
                    },
                };
                if let Err(error) = upload.send_part(part, self.max_parts_in_flight).await {
                    return Err(self.fail(multipart, error.into()).await);
                }
            }
        }

        let stored = StoredObject {
            size,
            sha256: hasher.finalize().into(),
        };
        match multipart {
            None => {
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .content_type(content_type)
                    .content_length(i64::try_from(size).unwrap_or(i64::MAX))
                    .body(ByteStream::from(buffer.finish()))
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|error| self.classify(error))?;
            }
            Some(mut upload) => {
                let last = buffer.finish();
                let last_part = if last.is_empty() {
                    Ok(())
                } else {
                    upload.send_part(last, self.max_parts_in_flight).await
                };
                let completed = match last_part {
                    Ok(()) => upload.complete(self).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = completed {
                    return Err(self.fail(Some(upload), error.into()).await);
                }
            }
        }
        Ok(stored)
    }

    async fn start_multipart(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<MultipartUpload, ObjectStoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|error| self.classify(error))?;
        let upload_id = created
            .upload_id
            .ok_or_else(|| ObjectStoreError::Unavailable {
                detail: "CreateMultipartUpload answered without an upload id".into(),
            })?;
        Ok(MultipartUpload {
            guard: AbortGuard {
                client: self.client.clone(),
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                upload_id: Some(upload_id),
            },
            in_flight: JoinSet::new(),
            completed: Vec::new(),
            next_part: 1,
            store: self.clone(),
        })
    }

    /// Aborts the multipart upload, if any, and returns the error to report.
    async fn fail(&self, multipart: Option<MultipartUpload>, error: PutError) -> PutError {
        if let Some(mut upload) = multipart {
            upload.in_flight.abort_all();
            upload.guard.abort_now().await;
        }
        error
    }

    /// Streams an object, or the given range of it.
    pub async fn get_stream(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectBody, ObjectStoreError> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(ByteRange::header))
            .send()
            .await
            .map_err(|error| self.classify_object(error))?;
        let content_length = output
            .content_length
            .and_then(|length| u64::try_from(length).ok())
            .unwrap_or_default();
        let content_range = output
            .content_range
            .as_deref()
            .and_then(parse_content_range);
        let bucket = self.bucket.clone();
        let stream = futures::stream::unfold(output.body, move |mut body| {
            let bucket = bucket.clone();
            async move {
                body.next().await.map(|chunk| {
                    let chunk = chunk.map_err(|error| ObjectStoreError::Unavailable {
                        detail: format!("reading from bucket `{bucket}`: {error}"),
                    });
                    (chunk, body)
                })
            }
        });
        Ok(ObjectBody {
            content_length,
            content_range,
            stream: stream.boxed(),
        })
    }

    /// Size of the object at `key`.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectStoreError> {
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| self.classify_object(error))?;
        Ok(ObjectInfo {
            size: output
                .content_length
                .and_then(|length| u64::try_from(length).ok())
                .unwrap_or_default(),
        })
    }

    /// Deletes the object at `key`; deleting a missing object succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(drop)
            .map_err(|error| self.classify_object(error))
            .or_else(|error| match error {
                ObjectStoreError::NotFound => Ok(()),
                other => Err(other),
            })
    }

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
            .client
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
            .client
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

    /// Multipart uploads under the key prefix started before `older_than`.
    pub async fn incomplete_uploads(
        &self,
        older_than: SystemTime,
    ) -> Result<Vec<IncompleteUpload>, ObjectStoreError> {
        let mut found = Vec::new();
        let mut key_marker = None;
        let mut upload_id_marker = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(format!("{}/", self.key_prefix))
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .send()
                .await
                .map_err(|error| self.classify(error))?;
            for upload in page.uploads.unwrap_or_default() {
                let initiated = upload
                    .initiated
                    .and_then(|at| SystemTime::try_from(at).ok());
                if initiated.is_none_or(|at| at < older_than)
                    && let (Some(key), Some(upload_id)) = (upload.key, upload.upload_id)
                {
                    found.push(IncompleteUpload {
                        key,
                        upload_id,
                        initiated,
                    });
                }
            }
            if page.is_truncated != Some(true) {
                return Ok(found);
            }
            key_marker = page.next_key_marker;
            upload_id_marker = page.next_upload_id_marker;
            if key_marker.is_none() && upload_id_marker.is_none() {
                return Ok(found);
            }
        }
    }

    /// Aborts one multipart upload; an upload that no longer exists counts as aborted.
    pub async fn abort_upload(&self, upload: &IncompleteUpload) -> Result<(), ObjectStoreError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => match self.classify_object(error) {
                ObjectStoreError::NotFound => Ok(()),
                other => Err(other),
            },
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

    /// Like `classify`, for calls on an object: 404 means the object (or upload) is
    /// missing, unless S3 says the bucket is.
    fn classify_object<E>(&self, error: SdkError<E, HttpResponse>) -> ObjectStoreError
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
            _ => self.classify(error),
        }
    }
}

/// Collects bytes into parts of exactly `part_size`, each in an allocation of its own
/// that is freed as soon as its upload is done, so memory per upload stays at
/// (parts in flight + 1) × part size.
struct PartBuffer {
    part_size: usize,
    current: Vec<u8>,
}

impl PartBuffer {
    /// The first allocation; small objects never grow past what they need.
    const INITIAL: usize = 64 * 1024;

    fn new(part_size: usize) -> Self {
        Self {
            part_size,
            current: Vec::new(),
        }
    }

    /// Takes bytes from `data`; returns a full part once more bytes follow it (an object
    /// of exactly one part stays a single PutObject). Call again while it returns parts.
    fn fill(&mut self, data: &mut &[u8]) -> Option<Bytes> {
        if data.is_empty() {
            return None;
        }
        if self.current.len() == self.part_size {
            let part = std::mem::replace(&mut self.current, Vec::with_capacity(self.part_size));
            return Some(Bytes::from(part));
        }
        let take = data.len().min(self.part_size - self.current.len());
        let needed = self.current.len() + take;
        if needed > self.current.capacity() {
            let grown = needed
                .max(self.current.capacity() * 2)
                .max(Self::INITIAL)
                .min(self.part_size);
            self.current.reserve_exact(grown - self.current.len());
        }
        self.current.extend_from_slice(&data[..take]);
        *data = &data[take..];
        self.fill(data)
    }

    /// What is left: the whole object if it never filled a part, else the last part.
    fn finish(self) -> Bytes {
        Bytes::from(self.current)
    }
}

/// A multipart upload being written: parts in flight, parts done, and the guard that
/// aborts it unless it completes.
struct MultipartUpload {
    guard: AbortGuard,
    in_flight: JoinSet<Result<CompletedPart, ObjectStoreError>>,
    completed: Vec<CompletedPart>,
    next_part: i32,
    store: ObjectStore,
}

impl MultipartUpload {
    /// Starts uploading `part`, first waiting for a slot when `max_in_flight` are busy.
    async fn send_part(
        &mut self,
        part: Bytes,
        max_in_flight: usize,
    ) -> Result<(), ObjectStoreError> {
        while self.in_flight.len() >= max_in_flight {
            self.collect_one().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let store = self.store.clone();
        let key = self.guard.key.clone();
        let upload_id = self.guard.upload_id.clone().unwrap_or_default();
        self.in_flight.spawn(async move {
            let length = i64::try_from(part.len()).unwrap_or(i64::MAX);
            let output = store
                .client
                .upload_part()
                .bucket(&store.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .part_number(number)
                .content_length(length)
                .body(ByteStream::from(part))
                // See `put_stream`: the payload is hashed by us, not again by SigV4.
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|error| store.classify(error))?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(output.e_tag)
                .build())
        });
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<(), ObjectStoreError> {
        match self.in_flight.join_next().await {
            Some(Ok(part)) => {
                self.completed.push(part?);
                Ok(())
            }
            Some(Err(join_error)) => Err(ObjectStoreError::Unavailable {
                detail: format!("part upload task failed: {join_error}"),
            }),
            None => Ok(()),
        }
    }

    async fn complete(&mut self, store: &ObjectStore) -> Result<(), ObjectStoreError> {
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        self.completed.sort_by_key(|part| part.part_number);
        let upload_id = self.guard.upload_id.clone().unwrap_or_default();
        store
            .client
            .complete_multipart_upload()
            .bucket(&store.bucket)
            .key(&self.guard.key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.completed)))
                    .build(),
            )
            .send()
            .await
            .map_err(|error| store.classify(error))?;
        self.guard.upload_id = None;
        Ok(())
    }
}

/// Aborts an unfinished multipart upload when dropped (a cancelled request, a panic), so
/// that S3 keeps no invisible, billed parts. The reaper catches what this misses (a
/// killed process).
struct AbortGuard {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl AbortGuard {
    async fn abort_now(&mut self) {
        if let Some(upload_id) = self.upload_id.take() {
            abort(&self.client, &self.bucket, &self.key, &upload_id).await;
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, "cannot abort multipart upload: no runtime; the reaper will");
            return;
        };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        runtime.spawn(async move { abort(&client, &bucket, &key, &upload_id).await });
    }
}

async fn abort(client: &aws_sdk_s3::Client, bucket: &str, key: &str, upload_id: &str) {
    let result = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    match result {
        Ok(_) => tracing::info!(%key, "aborted multipart upload"),
        Err(error) => {
            tracing::warn!(%key, error = %describe(&error), "abort of multipart upload failed; the reaper will retry")
        }
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

/// `bytes START-END/TOTAL` → `(START, END, TOTAL)`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts_of(part_size: usize, chunks: &[usize]) -> (Vec<usize>, usize) {
        let mut buffer = PartBuffer::new(part_size);
        let mut parts = Vec::new();
        for &length in chunks {
            let chunk = vec![0u8; length];
            let mut data = &chunk[..];
            while let Some(part) = buffer.fill(&mut data) {
                parts.push(part.len());
            }
        }
        (parts, buffer.finish().len())
    }

    #[test]
    fn bytes_fill_parts_of_exactly_the_part_size() {
        assert_eq!(parts_of(10, &[7, 7, 7, 7]), (vec![10, 10], 8));
    }

    #[test]
    fn exactly_one_part_of_bytes_stays_a_single_object() {
        assert_eq!(parts_of(10, &[4, 6]), (vec![], 10));
    }

    #[test]
    fn one_byte_over_a_part_makes_two() {
        assert_eq!(parts_of(10, &[11]), (vec![10], 1));
    }

    #[test]
    fn a_chunk_larger_than_several_parts_is_split() {
        assert_eq!(parts_of(10, &[35]), (vec![10, 10, 10], 5));
    }

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
    }

    #[test]
    fn range_headers_follow_rfc_9110() {
        assert_eq!(ByteRange::Inclusive(0, 0).header(), "bytes=0-0");
        assert_eq!(ByteRange::From(5).header(), "bytes=5-");
        assert_eq!(ByteRange::Suffix(3).header(), "bytes=-3");
    }
}
