//! [`Storage`]: the one entry point for posts and attachments, keeping MongoDB and S3
//! consistent with each other.

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

use crate::content::ContentPolicy;
use crate::mongo::Mongo;
use crate::mongo::documents::{ATTACHMENTS, AttachmentDocument, POSTS, PostDocument};
use crate::render_flights::RenderFlights;
use crate::s3::ObjectStore;
use crate::settings::InvalidSetting;
use crate::settings::{MediaSettings, ScanSettings};

/// The `uploads.*` section of the service configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UploadSettings {
    /// Per-file limit.
    pub max_file_bytes: NonZeroU64,
    /// Parts named `file` per request.
    pub max_files_per_request: NonZeroU32,
    /// Attachments one post may have, pending ones included.
    pub max_attachments_per_post: NonZeroU32,
    /// Sniffed types that may be stored; `*/*` allows all.
    pub allowed_content_types: Vec<String>,
    /// Age after which a pending upload is reaped.
    pub pending_ttl_secs: u64,
    /// How often the reaper runs.
    pub reaper_interval_secs: NonZeroU64,
    /// How long a resumable upload may take from its creation; then it expires and is
    /// reaped.
    pub resumable_ttl_secs: NonZeroU64,
    /// Unfinished resumable uploads one user may have.
    pub resumable_uploads_per_user: NonZeroU32,
    /// Object keys one reaper pass reconciles with the records; the next pass goes on
    /// from there, and after the last key starts again.
    pub reconcile_keys_per_pass: NonZeroU32,
    /// Bytes of attachments one user may store; 0: no quota.
    pub quota_bytes_per_user: u64,
}

impl UploadSettings {
    /// Checks the `uploads.*` values on their own.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if let Some(bad) = self.allowed_content_types.iter().find(|t| {
            t.split_once('/')
                .is_none_or(|(a, b)| a.is_empty() || b.is_empty())
        }) {
            return Err(InvalidSetting::new(
                "uploads.allowed_content_types",
                format!("`{bad}` is not a media type like image/png"),
            ));
        }
        Ok(())
    }
}

/// Posts and attachments: metadata in MongoDB, bytes in S3.
#[derive(Clone, Debug)]
pub struct Storage {
    pub(crate) database: Database,
    pub(crate) objects: ObjectStore,
    pub(crate) policy: ContentPolicy,
    pub(crate) max_file_bytes: u64,
    pub(crate) max_attachments_per_post: u64,
    pub(crate) pending_ttl: Duration,
    pub(crate) presign_ttl: Duration,
    pub(crate) resumable_ttl: Duration,
    pub(crate) resumable_uploads_per_user: u64,
    pub(crate) reconcile_keys_per_pass: usize,
    pub(crate) quota_bytes_per_user: Option<u64>,
    pub(crate) media: MediaSettings,
    pub(crate) scan: ScanSettings,
    /// Turns to process an image: each holds a file and its decoded pixels in memory.
    pub(crate) processing: Arc<Semaphore>,
    /// Turns to render a variant.
    pub(crate) renders: Arc<Semaphore>,
    /// The variants being rendered on this instance.
    pub(crate) render_flights: Arc<RenderFlights>,
    /// Variants this instance rendered and stored.
    pub(crate) variants_rendered: Arc<AtomicU64>,
    /// Files this instance refused because the scanner found malware in them.
    pub(crate) infected_refused: Arc<AtomicU64>,
    /// With events on (see `events`), wakes this instance's dispatcher.
    pub(crate) events: Option<Arc<Notify>>,
    /// Whether the server takes a write to several collections as one command
    /// (`bulkWrite`, MongoDB 8.0+); turned off at the first refusal.
    pub(crate) bulk_writes: Arc<AtomicBool>,
}

impl Storage {
    /// Storage over a connected MongoDB and the attachments bucket, processing images as
    /// `media` says and scanning files as `scan` says.
    pub fn new(
        mongo: &Mongo,
        objects: ObjectStore,
        uploads: &UploadSettings,
        media: &MediaSettings,
        scan: &ScanSettings,
        presign_ttl: Duration,
    ) -> Self {
        Self {
            database: mongo.database().clone(),
            objects,
            policy: ContentPolicy::new(&uploads.allowed_content_types),
            max_file_bytes: uploads.max_file_bytes.get(),
            max_attachments_per_post: u64::from(uploads.max_attachments_per_post.get()),
            pending_ttl: Duration::from_secs(uploads.pending_ttl_secs),
            presign_ttl,
            resumable_ttl: Duration::from_secs(uploads.resumable_ttl_secs.get()),
            resumable_uploads_per_user: u64::from(uploads.resumable_uploads_per_user.get()),
            reconcile_keys_per_pass: usize::try_from(uploads.reconcile_keys_per_pass.get())
                .unwrap_or(usize::MAX),
            quota_bytes_per_user: Some(uploads.quota_bytes_per_user).filter(|quota| *quota > 0),
            media: media.clone(),
            scan: scan.clone(),
            processing: Arc::new(Semaphore::new(
                usize::try_from(media.max_concurrent_processing.get()).unwrap_or(1),
            )),
            renders: Arc::new(Semaphore::new(
                usize::try_from(media.max_concurrent_renders.get()).unwrap_or(1),
            )),
            render_flights: Arc::default(),
            variants_rendered: Arc::default(),
            infected_refused: Arc::default(),
            events: None,
            bulk_writes: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The same storage over another MongoDB client of the same database (see
    /// [`Mongo::on_this_runtime`]).
    pub fn with_mongo(&self, mongo: &Mongo) -> Self {
        Self {
            database: mongo.database().clone(),
            ..self.clone()
        }
    }

    /// The same storage with S3 connections of its own (see
    /// [`ObjectStore::with_own_connections`]).
    pub fn with_own_s3_connections(&self) -> Self {
        Self {
            objects: self.objects.with_own_connections(),
            ..self.clone()
        }
    }

    /// The attachments bucket.
    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// How many variants this instance rendered and stored since it started.
    pub fn variants_rendered(&self) -> u64 {
        self.variants_rendered.load(Ordering::Relaxed)
    }

    /// How many files this instance refused as infected since it started.
    pub fn infected_refused(&self) -> u64 {
        self.infected_refused.load(Ordering::Relaxed)
    }

    /// The per-file limit in bytes.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    pub(crate) fn posts(&self) -> Collection<PostDocument> {
        self.database.collection(POSTS)
    }

    pub(crate) fn attachments(&self) -> Collection<AttachmentDocument> {
        self.database.collection(ATTACHMENTS)
    }
}
