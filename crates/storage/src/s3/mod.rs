//! Attachment bytes in S3, through a client that signs with the shared temporary
//! credentials: streamed uploads (single PutObject or bounded multipart) in `upload`,
//! reads in `objects`, presigned URLs in `presign`, and the clean-up of incomplete
//! multipart uploads in `cleanup`. `error` maps the SDK's errors to ours.

use std::fmt::Display;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use aws_sdk_s3::config::timeout::TimeoutConfig;

use aws_config::SdkConfig;
use aws_sdk_s3::config::SharedHttpClient;
use aws_sdk_s3::config::{
    IdentityCache, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider, SharedInterceptor, StalledStreamProtectionConfig,
};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::{ConnectorBuilder, tls};
use serde::{Deserialize, Serialize};

use crate::memory::UploadMemory;
use crate::settings::InvalidSetting;

mod cleanup;
mod error;
mod objects;
mod parts;
mod pipeline;
mod presign;
mod upload;

pub use self::cleanup::IncompleteUpload;
pub use self::error::{ObjectStoreError, PutError};
pub use self::objects::{ByteRange, ObjectBody, ObjectInfo};
pub use self::parts::UploadedPart;
pub(crate) use self::pipeline::PartPipeline;
pub use self::presign::PresignedUrl;
pub use self::upload::StoredObject;

/// Every IAM action the object store needs, and the S3 operations that need it. The
/// deployment's least-privilege policy (`S3AccessPolicy` in `deploy/ecs/stack.yaml`) must
/// grant exactly these; a test keeps the two equal.
pub const IAM_ACTIONS: &[(&str, &[&str])] = &[
    (
        "s3:PutObject",
        &[
            "PutObject",
            "CreateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "CopyObject (destination)",
            "presigned PUT",
        ],
    ),
    (
        "s3:GetObject",
        &[
            "GetObject",
            "HeadObject",
            "CopyObject (source)",
            "presigned GET",
        ],
    ),
    ("s3:DeleteObject", &["DeleteObject"]),
    ("s3:AbortMultipartUpload", &["AbortMultipartUpload"]),
    (
        "s3:ListBucket",
        &["HeadBucket", "ListObjectsV2 (staging sweep)"],
    ),
    ("s3:ListBucketMultipartUploads", &["ListMultipartUploads"]),
];

/// The folder of direct uploads not yet verified, under the key prefix.
const STAGING: &str = "staging";

/// The folder of resumable uploads' tails, under the key prefix.
const RESUMABLE: &str = "resumable";

/// S3 rejects multipart parts smaller than this (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// The largest object one PutObject may store (5 GiB).
pub const MAX_SINGLE_PUT_BYTES: u64 = 5 * 1024 * 1024 * 1024;

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
    /// Parts of one upload sent at once, to begin with: with the part size, what an
    /// upload is admitted with.
    pub max_parts_in_flight: NonZeroU32,
    /// The most parts one upload may send at once once it has grown, while S3 takes them
    /// faster and spare upload memory allows.
    pub parts_in_flight_ceiling: NonZeroU32,
    /// Lifetime of presigned URLs.
    pub presign_ttl_secs: NonZeroU64,
    /// The S3 endpoint presigned URLs name, where clients reach S3 by another address
    /// than the service does (compose: the host's published port); empty: the service's.
    pub presign_endpoint: String,
}

impl S3Settings {
    /// Checks the `s3.*` values on their own.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.bucket.trim().is_empty() {
            return Err(InvalidSetting::new(
                "s3.bucket",
                "is required (set AWS_S3_BUCKET_NAME or APP__S3__BUCKET)",
            ));
        }
        if self.key_prefix.is_empty()
            || !self
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c))
        {
            return Err(InvalidSetting::new(
                "s3.key_prefix",
                "must be letters, digits, '-', '_' or '/'",
            ));
        }
        let endpoint = self.presign_endpoint.trim();
        let is_url = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !(endpoint.is_empty() || is_url) {
            return Err(InvalidSetting::new(
                "s3.presign_endpoint",
                "must be an http:// or https:// URL, or empty",
            ));
        }
        if self.part_size_bytes < MIN_PART_SIZE {
            return Err(InvalidSetting::new(
                "s3.part_size_bytes",
                format!(
                    "{} is below S3's minimum part size of 5 MiB",
                    self.part_size_bytes
                ),
            ));
        }
        if self.parts_in_flight_ceiling < self.max_parts_in_flight {
            return Err(InvalidSetting::new(
                "s3.parts_in_flight_ceiling",
                format!(
                    "{} is below s3.max_parts_in_flight ({})",
                    self.parts_in_flight_ceiling, self.max_parts_in_flight
                ),
            ));
        }
        Ok(())
    }
}

/// The S3 bucket holding attachment bytes.
#[derive(Clone, Debug)]
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
    /// The client that signs presigned URLs: `client`, or one naming `presign_endpoint`.
    presigner: aws_sdk_s3::Client,
    credentials: SharedCredentialsProvider,
    bucket: String,
    key_prefix: String,
    part_size: usize,
    max_parts_in_flight: usize,
    parts_in_flight_ceiling: usize,
    /// The memory uploads share, from which an upload takes more parts in flight.
    memory: UploadMemory,
    /// The parts in flight the last upload's window settled at: where the next starts.
    learned_parts_in_flight: Arc<AtomicUsize>,
    /// How long S3 may take to accept a chunk of a streamed PutObject, or to answer it
    /// (the SDK's attempt timeout, which that call does not use); also how long any
    /// body may move no byte (the SDK's stalled-stream grace period).
    stall_timeout: Duration,
    /// The SDK's timeouts without the operation and attempt ones, for a PutObject that
    /// lasts as long as its client takes to send.
    streaming_timeouts: TimeoutConfig,
}

/// A new HTTPS client as the SDK builds its default one: rustls with aws-lc, the
/// connector settings and sleep of the calling client, and the proxy variables of the
/// environment (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`).
fn sdk_https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// The stall timeout when the SDK configuration sets no attempt timeout.
const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(20);

impl ObjectStore {
    /// Builds the S3 client from aws-config's `SdkConfig` (region, endpoint, retries) and
    /// the shared credentials provider, which does its own caching and refreshing.
    pub fn new(
        sdk_config: &SdkConfig,
        credentials: SharedCredentialsProvider,
        settings: &S3Settings,
    ) -> Self {
        Self::with_interceptors(sdk_config, credentials, settings, &[])
    }

    /// Like [`ObjectStore::new`], with `interceptors` on every S3 call (the service's trace
    /// spans).
    pub fn with_interceptors(
        sdk_config: &SdkConfig,
        credentials: SharedCredentialsProvider,
        settings: &S3Settings,
        interceptors: &[SharedInterceptor],
    ) -> Self {
        let mut config = aws_sdk_s3::config::Builder::from(sdk_config);
        for interceptor in interceptors {
            config.push_interceptor(interceptor.clone());
        }
        let stall_timeout = sdk_config
            .timeout_config()
            .and_then(|timeouts| timeouts.operation_attempt_timeout())
            .unwrap_or(DEFAULT_STALL_TIMEOUT);
        let config = config
            // The SDK fails a body that moves no byte for 5 s by default, sooner than
            // the attempt timeout that is our one measure of a stalled S3: a backend
            // that paused mid-transfer for longer (moto, on 1 GiB uploads here) failed
            // uploads the configuration allowed.
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(stall_timeout)
                    .build(),
            )
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
        let client = aws_sdk_s3::Client::from_conf(config);
        let presigner = match settings.presign_endpoint.trim() {
            "" => client.clone(),
            endpoint => aws_sdk_s3::Client::from_conf(
                client.config().to_builder().endpoint_url(endpoint).build(),
            ),
        };
        Self {
            client,
            presigner,
            credentials,
            bucket: settings.bucket.clone(),
            key_prefix: settings.key_prefix.trim_end_matches('/').to_owned(),
            part_size: usize::try_from(settings.part_size_bytes.max(MIN_PART_SIZE))
                .unwrap_or(usize::MAX),
            max_parts_in_flight: usize::try_from(settings.max_parts_in_flight.get()).unwrap_or(1),
            parts_in_flight_ceiling: usize::try_from(settings.parts_in_flight_ceiling.get())
                .unwrap_or(1),
            memory: UploadMemory::none(),
            learned_parts_in_flight: Arc::default(),
            stall_timeout,
            streaming_timeouts: sdk_config
                .timeout_config()
                .map(TimeoutConfig::to_builder)
                .unwrap_or_default()
                .disable_operation_timeout()
                .disable_operation_attempt_timeout()
                .build(),
        }
    }

    /// The same bucket through an S3 client with a connection pool of its own, whose
    /// connections are driven by the runtime that opens them. An HTTP worker's requests
    /// then move their bytes on the worker's thread: through a shared pool, a connection
    /// opened on another runtime woke that runtime's threads for every chunk.
    pub fn with_own_connections(&self) -> Self {
        let config = self
            .client
            .config()
            .to_builder()
            .http_client(sdk_https_client())
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(config),
            ..self.clone()
        }
    }

    /// The same bucket, its uploads growing their parts in flight with memory from
    /// `memory` (without, they keep `s3.max_parts_in_flight`).
    pub fn with_upload_memory(&self, memory: UploadMemory) -> Self {
        Self {
            memory,
            ..self.clone()
        }
    }

    /// The memory uploads share.
    pub(crate) fn upload_memory(&self) -> &UploadMemory {
        &self.memory
    }

    /// The configured bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key of an attachment's bytes: built from ids only, never from user input.
    pub fn key_for(&self, post_id: impl Display, attachment_id: impl Display) -> String {
        format!("{}/{post_id}/{attachment_id}", self.key_prefix)
    }

    /// Where the variant `name` of an attachment is stored: below the attachment's own key,
    /// so a listing in key order finds it beside its image. `name` is one of
    /// `media.variants`, checked before it gets here, never a client's text.
    pub fn variant_key_for(
        &self,
        post_id: impl Display,
        attachment_id: impl Display,
        name: &str,
    ) -> String {
        format!("{}/{name}", self.key_for(post_id, attachment_id))
    }

    /// Where a direct upload's client PUTs the bytes. Completion copies them, verified, to
    /// [`ObjectStore::key_for`], so a PUT after completion (or after a delete) can never
    /// change what is served; `staging` cannot be a post id.
    pub fn staging_key_for(&self, post_id: impl Display, upload_id: impl Display) -> String {
        format!("{}/{STAGING}/{post_id}/{upload_id}", self.key_prefix)
    }

    /// Where a resumable upload keeps the bytes that do not fill a part yet, between its
    /// requests; `resumable` cannot be a post id.
    pub fn resumable_tail_key_for(&self, post_id: impl Display, upload_id: impl Display) -> String {
        format!("{}/{RESUMABLE}/{post_id}/{upload_id}", self.key_prefix)
    }

    /// The tail object one request (holding `lease`) writes for a resumable upload:
    /// [`ObjectStore::resumable_tail_key_for`] and `.{lease}`.
    pub fn resumable_tail_key_of(
        &self,
        post_id: impl Display,
        upload_id: impl Display,
        lease: Option<&str>,
    ) -> String {
        let shared = self.resumable_tail_key_for(post_id, upload_id);
        match lease {
            Some(lease) => format!("{shared}.{lease}"),
            None => shared,
        }
    }

    /// The prefix of every resumable upload's tail, with its trailing `/`.
    pub fn resumable_prefix(&self) -> String {
        format!("{}/{RESUMABLE}/", self.key_prefix)
    }

    /// The size of a multipart part.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// The prefix of every key, with its trailing `/`.
    pub fn key_prefix(&self) -> String {
        format!("{}/", self.key_prefix)
    }

    /// The prefix of every staging key, with its trailing `/`.
    pub fn staging_prefix(&self) -> String {
        format!("{}/{STAGING}/", self.key_prefix)
    }
}
