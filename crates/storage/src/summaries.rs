//! The readers' view of attachments: a summary of each ready attachment kept in its post's
//! document, so that one post, a page of posts or a post's attachments is one query.
//!
//! A summary is pushed (by `lifecycle`) only after the attachment's record turned `ready`
//! (its bytes are complete and verified at their final key), and pulled before its object
//! is deleted: a reader never sees an attachment without its bytes. Both bump the post's
//! `version`, the post's entity tag. A ready record whose summary is missing (a crash
//! between the two writes, or an older instance during a rolling deploy) is restored by
//! the reaper if its object is there.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};

use crate::error::StorageError;
use crate::model::{Attachment, PostId};
use crate::mongo::documents::{AttachmentStatus, PostStatus, now};
use crate::s3::ObjectStoreError;
use crate::store::Storage;

/// Ready records one reaper pass checks against their posts' summaries at a time.
const RESTORE_BATCH: usize = 500;

/// How far back the reaper looks for unlisted attachments: those created in this window
/// before the pending TTL's cutoff, i.e. published in about the last day (a publish comes
/// within the pending TTL of its creation). Passes run every few minutes, so a crash's
/// leftover is seen many times; older data was listed by migration 0004. Bounded by a
/// day's uploads, the scan stays cheap however large the collection grows.
const RESTORE_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl Storage {
    /// Hides attachments of a post from readers, recording `events` in the same write;
    /// done before their objects are deleted. Whether this call hid any.
    pub(crate) async fn hide_attachments(
        &self,
        post_id: ObjectId,
        ids: &[ObjectId],
        events: Vec<Document>,
    ) -> Result<bool, StorageError> {
        let mut update = doc! {
            "$pull": { "attachments": { "_id": { "$in": ids } } },
            "$inc": { "version": 1 },
        };
        Self::push_to_outbox(&mut update, events, now());
        let hidden = self
            .posts()
            .update_one(
                doc! { "_id": post_id, "attachments._id": { "$in": ids } },
                update,
            )
            .await?;
        self.events_written();
        Ok(hidden.modified_count > 0)
    }

    /// Shows again the ready attachments created in the [`RESTORE_WINDOW`] before `cutoff`
    /// whose active post does not list them; returns how many.
    pub(crate) async fn restore_missing_summaries(
        &self,
        cutoff: SystemTime,
    ) -> Result<usize, StorageError> {
        let since = cutoff
            .checked_sub(RESTORE_WINDOW)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut batches = self
            .attachments()
            .find(doc! {
                "status": AttachmentStatus::Ready.as_str(),
                "created_at": {
                    "$gte": DateTime::from_system_time(since),
                    "$lt": DateTime::from_system_time(cutoff),
                },
            })
            .await?
            .map_ok(Attachment::from)
            .try_chunks(RESTORE_BATCH);
        let mut restored = 0;
        while let Some(batch) = batches.try_next().await.map_err(|failed| failed.1)? {
            restored += self.restore_batch(batch).await?;
        }
        Ok(restored)
    }

    async fn restore_batch(&self, attachments: Vec<Attachment>) -> Result<usize, StorageError> {
        let post_ids: HashSet<ObjectId> = attachments.iter().map(|a| a.post_id.0).collect();
        let post_ids: Vec<ObjectId> = post_ids.into_iter().collect();
        let listed: HashSet<ObjectId> = self
            .posts()
            .clone_with_type::<Document>()
            .find(doc! { "_id": { "$in": post_ids }, "status": PostStatus::Active.as_str() })
            .projection(doc! { "attachments._id": 1 })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .filter_map(|post| post.get_array("attachments").ok())
            .flatten()
            .filter_map(|summary| summary.as_document()?.get_object_id("_id").ok())
            .collect();
        let mut missing: HashMap<PostId, Vec<Attachment>> = HashMap::new();
        for attachment in attachments {
            if !listed.contains(&attachment.id.0) {
                missing
                    .entry(attachment.post_id)
                    .or_default()
                    .push(attachment);
            }
        }
        let mut restored = 0;
        for (post_id, attachments) in missing {
            let mut present = Vec::with_capacity(attachments.len());
            for attachment in attachments {
                // Never list what has no bytes (the reconciliation reports those).
                let key = self.objects.key_for(post_id, attachment.id);
                match self.objects.head(&key).await {
                    Ok(_) => present.push(attachment),
                    Err(ObjectStoreError::NotFound) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            if present.is_empty() {
                continue;
            }
            match self.list(post_id, &present, false).await {
                Ok(()) => {}
                Err(StorageError::NotFound(_)) => continue,
                Err(error) => return Err(error),
            }
            // A delete may have marked one of them meanwhile and hidden it before it was
            // listed again: hide those once more, so no summary outlives its record.
            let ids: Vec<ObjectId> = present.iter().map(|attachment| attachment.id.0).collect();
            let still_ready: HashSet<ObjectId> = self
                .attachments()
                .find(doc! { "_id": { "$in": &ids }, "status": AttachmentStatus::Ready.as_str() })
                .await?
                .map_ok(|document| document.id)
                .try_collect()
                .await?;
            let gone: Vec<ObjectId> = ids
                .iter()
                .copied()
                .filter(|id| !still_ready.contains(id))
                .collect();
            if !gone.is_empty() {
                self.hide_attachments(post_id.0, &gone, Vec::new()).await?;
            }
            let listed = ids.len() - gone.len();
            tracing::warn!(%post_id, count = listed, "restored attachments missing from their post");
            restored += listed;
        }
        Ok(restored)
    }
}
