//! A storage of the test's own: a fresh database and a fresh key prefix, so tests in
//! parallel never see each other's records, objects or multipart uploads.

use std::num::NonZero;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_creds::{AwsSettings, TemporaryCredentials};
use bytes::Bytes;
use futures::Stream;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use storage::{
    MediaSettings, Mongo, MongoSettings, ObjectStore, S3Settings, ScanSettings, Storage,
    UploadMemory, UploadSettings, VariantFit, VariantFormat, VariantSettings,
};
use test_support::{Inspector, MIB, testbed};

pub const PART: u64 = 5 * 1024 * 1024;

/// Everything a test needs to drive and inspect storage.
pub struct Harness {
    pub storage: Storage,
    pub mongo: Mongo,
    /// This test's key prefix and database, seen directly.
    pub stored: Inspector,
}

pub struct Options {
    pub max_file_bytes: u64,
    pub pending_ttl_secs: u64,
    pub allowed: Vec<String>,
    pub endpoint: Option<String>,
    pub max_attachments_per_post: u32,
    /// The SDK's attempt timeout (the operation timeout is twice it); none by default.
    pub attempt_timeout: Option<Duration>,
    pub reconcile_keys_per_pass: u32,
    /// Bytes each user may store; 0: no quota.
    pub quota_bytes_per_user: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_file_bytes: 100 * MIB,
            pending_ttl_secs: 3600,
            allowed: vec!["*/*".into()],
            endpoint: None,
            max_attachments_per_post: 1000,
            attempt_timeout: None,
            reconcile_keys_per_pass: 10_000,
            quota_bytes_per_user: 0,
        }
    }
}

pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(testbed("AWS_REGION")))
        .endpoint_url(endpoint)
        .load()
        .await
}

pub async fn harness() -> Harness {
    harness_with(Options::default()).await
}

pub async fn harness_with(options: Options) -> Harness {
    let endpoint = options
        .endpoint
        .unwrap_or_else(|| testbed("AWS_ENDPOINT_URL"));
    let mut config = sdk_config(&endpoint).await;
    if let Some(attempt) = options.attempt_timeout {
        config = config
            .into_builder()
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(attempt)
                    .operation_timeout(attempt * 2)
                    .build(),
            )
            .build();
    }
    let mongo = Mongo::connect(&MongoSettings {
        uri: SecretString::from(testbed("MONGODB_URI")),
        database: format!("test_{}", uuid::Uuid::new_v4().simple()),
        server_selection_timeout_ms: 5000,
    })
    .await
    .expect("MongoDB answers");
    storage::run_migrations(mongo.database())
        .await
        .expect("migrations apply");

    // Base credentials used directly: the no-AssumeRole mode of aws-creds.
    let credentials = TemporaryCredentials::from_settings(
        &AwsSettings {
            region: testbed("AWS_REGION"),
            role_arn: String::new(),
            session_name_prefix: "test".into(),
            session_duration_secs: 3600,
            refresh_lead_secs: 300,
            external_id: String::new(),
            operation_timeout_secs: std::num::NonZeroU64::new(30).expect("non-zero"),
            attempt_timeout_secs: std::num::NonZeroU64::new(10).expect("non-zero"),
        },
        &config,
    )
    .expect("credentials");
    let bucket = testbed("AWS_S3_BUCKET_NAME");
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let objects = ObjectStore::new(
        &config,
        credentials.shared_provider(),
        &S3Settings {
            bucket: bucket.clone(),
            key_prefix: prefix.clone(),
            force_path_style: true,
            part_size_bytes: PART,
            max_parts_in_flight: NonZero::new(2).expect("non-zero"),
            parts_in_flight_ceiling: NonZero::new(2).expect("non-zero"),
            presign_ttl_secs: NonZero::new(300).expect("non-zero"),
            presign_endpoint: String::new(),
        },
    );
    let storage = Storage::new(
        &mongo,
        objects.with_upload_memory(UploadMemory::new(256 * MIB)),
        &UploadSettings {
            max_file_bytes: NonZero::new(options.max_file_bytes).expect("non-zero"),
            max_files_per_request: NonZero::new(10).expect("non-zero"),
            max_attachments_per_post: NonZero::new(options.max_attachments_per_post)
                .expect("non-zero"),
            allowed_content_types: options.allowed,
            pending_ttl_secs: options.pending_ttl_secs,
            reaper_interval_secs: NonZero::new(60).expect("non-zero"),
            resumable_ttl_secs: NonZero::new(86_400).expect("non-zero"),
            resumable_uploads_per_user: NonZero::new(10).expect("non-zero"),
            reconcile_keys_per_pass: NonZero::new(options.reconcile_keys_per_pass)
                .expect("non-zero"),
            quota_bytes_per_user: options.quota_bytes_per_user,
        },
        &MediaSettings {
            strip_metadata: true,
            max_pixels: NonZero::new(50_000_000).expect("non-zero"),
            max_dimension: NonZero::new(20_000).expect("non-zero"),
            max_image_bytes: NonZero::new(50 << 20).expect("non-zero"),
            max_concurrent_processing: NonZero::new(2).expect("non-zero"),
            variants: [(
                "thumb".to_owned(),
                VariantSettings {
                    width: NonZero::new(16).expect("non-zero"),
                    height: NonZero::new(16),
                    fit: VariantFit::Cover,
                    format: VariantFormat::Jpeg,
                    quality: 80,
                },
            )]
            .into(),
            max_concurrent_renders: NonZero::new(2).expect("non-zero"),
            wait_secs: 10,
            eager_variants: Vec::new(),
        },
        &ScanSettings {
            clamd_address: String::new(),
            timeout_secs: NonZero::new(30).expect("non-zero"),
            fail_open: false,
            quarantine_prefix: String::new(),
        },
        Duration::from_secs(300),
    );
    // Inspection goes straight to moto, not through any proxy under test.
    let stored = Inspector::new(&bucket, &prefix, mongo.database().clone()).await;
    Harness {
        storage,
        mongo,
        stored,
    }
}

impl Harness {
    /// Stores `bytes` as a ready attachment of `post`.
    pub async fn attach(
        &self,
        post: storage::PostId,
        filename: &str,
        declared_type: Option<&str>,
        bytes: &'static [u8],
    ) -> storage::Attachment {
        self.storage
            .upload_attachment(
                post,
                None,
                filename,
                declared_type,
                stream_of(vec![Bytes::from_static(bytes)]),
            )
            .await
            .expect("upload")
    }

    /// Stores `bytes` as file `name` of `post`, staged: not yet published.
    pub async fn stage(
        &self,
        post: storage::PostId,
        name: &str,
        bytes: &'static [u8],
    ) -> storage::StagedAttachment {
        self.storage
            .stage_attachment(
                post,
                None,
                name,
                None,
                stream_of(vec![Bytes::from_static(bytes)]),
            )
            .await
            .expect("stage")
    }

    /// Stores a file of two mebibytes as `name` of `post`, staged: too large to be stored
    /// before its post is checked, so its place on the post is reserved first.
    pub async fn stage_reserved(
        &self,
        post: storage::PostId,
        name: &str,
    ) -> storage::StagedAttachment {
        let chunks = vec![Bytes::from(vec![b'x'; 1024 * 1024]); 2];
        self.storage
            .stage_attachment(post, None, name, None, stream_of(chunks))
            .await
            .expect("stage")
    }

    pub async fn post(&self) -> storage::PostId {
        self.post_of(None).await
    }

    /// A new post written by `author`.
    pub async fn post_by(&self, author: &str) -> storage::PostId {
        self.post_of(Some(author.to_owned())).await
    }

    /// The attachments `post` lists, as a reader sees them.
    pub async fn listed(&self, post: storage::PostId) -> Vec<storage::Attachment> {
        self.storage.post(post).await.expect("read").attachments
    }

    async fn post_of(&self, author: Option<String>) -> storage::PostId {
        self.storage
            .create_post(storage::NewPost {
                title: "a post".into(),
                body: String::new(),
                author,
            })
            .await
            .expect("create post")
            .id
    }
}

pub type Chunk = Result<Bytes, std::io::Error>;

pub fn stream_of(chunks: Vec<Bytes>) -> impl Stream<Item = Chunk> + Unpin {
    futures::stream::iter(chunks.into_iter().map(Ok))
}

/// SHA-256 and length of a download.
pub async fn digest(mut body: storage::ObjectBody) -> (u64, String) {
    use futures::TryStreamExt;
    let mut hasher = Sha256::new();
    let mut size = 0;
    while let Some(chunk) = body.stream.try_next().await.expect("download chunk") {
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (size, hex::encode(hasher.finalize()))
}
