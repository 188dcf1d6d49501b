//! A storage of the test's own: a fresh database and a fresh key prefix, so tests in
//! parallel never see each other's records, objects or multipart uploads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_creds::{AwsSettings, TemporaryCredentials};
use bytes::Bytes;
use futures::Stream;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use storage::{Mongo, MongoSettings, ObjectStore, S3Settings, Storage, UploadSettings};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const PART: u64 = 5 * 1024 * 1024;
pub const MIB: u64 = 1024 * 1024;

pub fn testbed(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run through scripts/test"))
}

/// Everything a test needs to drive and inspect storage.
pub struct Harness {
    pub storage: Storage,
    pub mongo: Mongo,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub prefix: String,
}

pub struct Options {
    pub max_file_bytes: u64,
    pub pending_ttl_secs: u64,
    pub allowed: Vec<String>,
    pub endpoint: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_file_bytes: 100 * MIB,
            pending_ttl_secs: 3600,
            allowed: vec!["*/*".into()],
            endpoint: None,
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
    let config = sdk_config(&endpoint).await;
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
            max_parts_in_flight: 2,
            presign_ttl_secs: 300,
        },
    );
    let storage = Storage::new(
        &mongo,
        objects,
        &UploadSettings {
            max_file_bytes: options.max_file_bytes,
            max_files_per_request: 10,
            allowed_content_types: options.allowed,
            pending_ttl_secs: options.pending_ttl_secs,
            reaper_interval_secs: 60,
        },
        Duration::from_secs(300),
    );
    // Inspection goes straight to moto, not through any proxy under test.
    let direct = sdk_config(&testbed("AWS_ENDPOINT_URL")).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&direct)
            .force_path_style(true)
            .build(),
    );
    Harness {
        storage,
        mongo,
        s3,
        bucket,
        prefix,
    }
}

impl Harness {
    /// Keys of the objects under this test's prefix.
    pub async fn object_keys(&self) -> Vec<String> {
        let listed = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}/", self.prefix))
            .send()
            .await
            .expect("ListObjectsV2");
        listed
            .contents
            .unwrap_or_default()
            .into_iter()
            .filter_map(|object| object.key)
            .collect()
    }

    /// Keys of incomplete multipart uploads under this test's prefix.
    pub async fn multipart_uploads(&self) -> Vec<String> {
        let listed = self
            .s3
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(format!("{}/", self.prefix))
            .send()
            .await
            .expect("ListMultipartUploads");
        listed
            .uploads
            .unwrap_or_default()
            .into_iter()
            .filter_map(|upload| upload.key)
            .collect()
    }

    /// Attachment records of any status.
    pub async fn attachment_records(&self) -> u64 {
        self.mongo
            .database()
            .collection::<mongodb::bson::Document>("attachments")
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count attachments")
    }

    /// Asserts that no record, object or multipart upload is left.
    pub async fn assert_nothing_left(&self) {
        assert_eq!(
            self.attachment_records().await,
            0,
            "attachment records left"
        );
        assert!(self.object_keys().await.is_empty(), "objects left");
        assert!(
            self.multipart_uploads().await.is_empty(),
            "multipart uploads left"
        );
    }

    pub async fn post(&self) -> storage::PostId {
        self.storage
            .create_post(storage::NewPost {
                title: "a post".into(),
                body: String::new(),
                author: None,
            })
            .await
            .expect("create post")
            .id
    }
}

/// `len` deterministic pseudo-random bytes in chunks of 64 KiB, and their SHA-256.
pub fn content(len: u64) -> (Vec<Bytes>, String) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ len;
    let mut remaining = len;
    let mut chunks = Vec::new();
    let mut hasher = Sha256::new();
    while remaining > 0 {
        let size = remaining.min(64 * 1024);
        let chunk: Vec<u8> = (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        hasher.update(&chunk);
        chunks.push(Bytes::from(chunk));
        remaining -= size;
    }
    (chunks, hex::encode(hasher.finalize()))
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

/// A TCP proxy that can be cut (every connection closed, new ones refused) and restored.
pub struct Switch {
    pub address: SocketAddr,
    up: watch::Sender<bool>,
}

impl Switch {
    pub async fn start(upstream: SocketAddr) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (up, watcher) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut watcher = watcher.clone();
                if !*watcher.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watcher.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Arc::new(Self { address, up })
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

pub fn socket_address_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?'])
        .next()
        .unwrap_or(rest)
        .parse()
        .expect("127.0.0.1:PORT")
}
