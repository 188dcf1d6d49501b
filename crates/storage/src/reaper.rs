//! The reaper: finishes what crashed or cancelled work left behind.

use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use mongodb::bson::{DateTime, doc};

use crate::error::StorageError;
use crate::mongo::documents::{AttachmentStatus, PostStatus, now};
use crate::mongo::lease;
use crate::store::Storage;

const LEASE: &str = "reaper";

/// What one reaper pass cleaned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Pending uploads older than `uploads.pending_ttl_secs` that were expired.
    pub expired_uploads: u64,
    /// Attachments whose object and record were removed.
    pub removed_attachments: usize,
    /// Posts whose deletion was finished.
    pub removed_posts: usize,
    /// Incomplete multipart uploads that were aborted.
    pub aborted_multipart_uploads: usize,
    /// Staged direct uploads no completion will copy (PUT again after completion, or
    /// after their upload was removed) that were deleted.
    pub removed_staged_objects: usize,
}

/// Staged objects one pass deletes at most; the next pass takes the rest.
const STAGING_SWEEP_LIMIT: usize = 1000;

impl Storage {
    /// One reaper pass, if this instance gets the reaper lease (held for `lease_ttl`);
    /// `None` when another instance holds it.
    pub async fn reap_exclusively(
        &self,
        holder: &str,
        lease_ttl: Duration,
    ) -> Result<Option<ReapReport>, StorageError> {
        if !lease::acquire(&self.database, LEASE, holder, lease_ttl).await? {
            return Ok(None);
        }
        self.reap().await.map(Some)
    }

    /// One reaper pass:
    /// 1. pending uploads older than the pending TTL become `deleting`;
    /// 2. posts left `deleting` get their attachments removed, then themselves;
    /// 3. attachments left `deleting` lose their object, then their record;
    /// 4. multipart uploads under the key prefix older than the pending TTL are aborted;
    /// 5. staged direct-upload objects older than the pending TTL are deleted: by then no
    ///    completion can copy them (a PUT after completion or after a delete lands there).
    pub async fn reap(&self) -> Result<ReapReport, StorageError> {
        let cutoff = SystemTime::now()
            .checked_sub(self.pending_ttl)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let expired_uploads = self
            .attachments()
            .update_many(
                doc! {
                    "status": AttachmentStatus::Pending.as_str(),
                    "created_at": { "$lt": DateTime::from_system_time(cutoff) },
                },
                doc! { "$set": { "status": AttachmentStatus::Deleting.as_str(), "updated_at": now() } },
            )
            .await?
            .modified_count;
        let mut report = ReapReport {
            expired_uploads,
            ..ReapReport::default()
        };

        let deleting_posts: Vec<_> = self
            .posts()
            .find(doc! { "status": PostStatus::Deleting.as_str() })
            .await?
            .try_collect()
            .await?;
        for post in deleting_posts {
            self.finish_post_deletion(post.id).await?;
            report.removed_posts += 1;
        }

        report.removed_attachments = self.remove_deleting_attachments(doc! {}).await?;

        for upload in self.objects.incomplete_uploads(cutoff).await? {
            self.objects.abort_upload(&upload).await?;
            report.aborted_multipart_uploads += 1;
        }

        let staged = self
            .objects
            .keys_older_than(&self.objects.staging_prefix(), cutoff, STAGING_SWEEP_LIMIT)
            .await?;
        for key in staged {
            self.objects.delete(&key).await?;
            report.removed_staged_objects += 1;
        }
        Ok(report)
    }

    /// A holder name for this process's reaper lease.
    pub fn reaper_holder() -> String {
        lease::holder_name(LEASE)
    }
}
