//! The application state every handler reads: the backing services, the settings, the
//! upload admission and the metrics, shared by every worker. Handlers import it from here,
//! and start-up builds it, so neither depends on the other.

use std::sync::Arc;
use std::time::Duration;

use storage::{Attachment, Mongo, Post, PostId, Storage, StorageError};

use crate::admission::{Admission, Refusal, Ticket};
use crate::config::Settings;
use crate::http::error::ApiError;
use crate::http::extractors::Writer;
use crate::http::views::{AttachmentView, PostView};
use crate::metrics::Metrics;

/// What the routes need, shared by every worker.
#[derive(Clone, Debug)]
pub struct AppState {
    /// MongoDB client and database.
    pub mongo: Mongo,
    /// Posts and attachments.
    pub storage: Storage,
    /// The temporary credentials every AWS client signs with.
    pub credentials: aws_creds::TemporaryCredentials,
    /// Longest a request's metadata work may take (`server.storage_timeout_secs`).
    pub storage_timeout: Duration,
    /// The configuration, loaded once.
    pub settings: Arc<Settings>,
    /// The upload memory and the per-user limit.
    pub admission: Arc<Admission>,
    /// The service's metrics.
    pub metrics: Arc<Metrics>,
    /// The names of `media.variants`, which image views link to.
    pub variant_names: Arc<[String]>,
}

impl AppState {
    /// The state for one HTTP worker: the same, over a MongoDB client and S3 connections
    /// of the worker's own runtime, so that its queries and transfers never cross threads.
    /// Falls back to the shared MongoDB client.
    pub fn for_this_worker(&self) -> Self {
        let storage = self.storage.with_own_s3_connections();
        match self.mongo.on_this_runtime() {
            Ok(mongo) => Self {
                storage: storage.with_mongo(&mongo),
                mongo,
                ..self.clone()
            },
            Err(error) => {
                tracing::warn!(%error, "no MongoDB client of its own for an HTTP worker; sharing one");
                Self {
                    storage,
                    ..self.clone()
                }
            }
        }
    }

    /// Admits an upload of `writer` that holds at most `holds_at_most` bytes (`None`:
    /// unknown), or the answer that refuses it: 429 when the user has their share of
    /// uploads in flight, 503 when the service's upload memory is taken.
    pub fn admit(&self, writer: &Writer, holds_at_most: Option<u64>) -> Result<Ticket, ApiError> {
        self.admission
            .admit(writer.subject(), holds_at_most)
            .map_err(|refusal| match refusal {
                Refusal::UserBusy => ApiError::TooManyUploads,
                Refusal::ServiceBusy => ApiError::AtCapacity,
            })
    }

    /// The view of `attachment`.
    pub fn attachment_view(&self, attachment: Attachment) -> AttachmentView {
        AttachmentView::new(attachment, &self.variant_names)
    }

    /// The view of `post`.
    pub fn post_view(&self, post: Post) -> PostView {
        PostView::new(post, &self.variant_names)
    }

    /// Checks that the post exists and the writer is its author.
    pub async fn authorize(&self, writer: &Writer, post_id: PostId) -> Result<(), ApiError> {
        let author = self.bounded(self.storage.post_author(post_id)).await?;
        writer.ensure_author(author.as_deref())
    }

    /// Runs storage work within `storage_timeout`: a stalled MongoDB fails the request with
    /// 503 instead of hanging it. (The driver closes a connection whose operation is
    /// abandoned, rather than reusing it.) Transfers are bounded by their own limits.
    pub async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.storage_timeout, work).await {
            Ok(result) => result.map_err(ApiError::from),
            Err(_) => Err(ApiError::from(StorageError::TimedOut(self.storage_timeout))),
        }
    }
}
