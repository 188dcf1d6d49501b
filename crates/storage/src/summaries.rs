//! The readers' view of attachments: a summary of each ready attachment kept in its post's
//! document, so that one post, a page of posts or a post's attachments is one query.
//!
//! A summary is pushed (by `lifecycle`) only after the attachment's record turned `ready`
//! (its bytes are complete and verified at their final key), and pulled before its object
//! is deleted: a reader never sees an attachment without its bytes. Both bump the post's
//! `version`, the post's entity tag. A ready record whose summary is missing (a crash
//! between the two writes, or an older instance during a rolling deploy) is restored by
//! the reaper if its object is there and its post admits it as its publish would have;
//! one the post does not admit (a refused upload the process died before removing) is
//! removed.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};
use serde::Deserialize;

use crate::error::StorageError;
use crate::lifecycle::{Admission, Listed};
use crate::model::{Attachment, PostId};
use crate::mongo::documents::{AttachmentDocument, AttachmentStatus, PostStatus, now};
use crate::s3::ObjectStoreError;
use crate::store::Storage;

/// The post that attachments were hidden from, as it was before.
#[derive(Debug, Deserialize)]
pub(crate) struct HiddenFrom {
    #[serde(default)]
    pub(crate) author: Option<String>,
    pub(crate) status: PostStatus,
}

impl HiddenFrom {
    /// Whether the attachments hidden still counted against their author's quota: a
    /// deleting post's were uncounted when it was marked.
    pub(crate) fn counted(&self) -> bool {
        self.status == PostStatus::Active
    }
}

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
    /// done before their objects are deleted. The post as this call found it, if this call
    /// hid any.
    pub(crate) async fn hide_attachments(
        &self,
        post_id: ObjectId,
        ids: &[ObjectId],
        events: Vec<Document>,
    ) -> Result<Option<HiddenFrom>, StorageError> {
        let mut update = doc! {
            "$pull": { "attachments": { "_id": { "$in": ids } } },
            "$inc": { "version": 1 },
        };
        Self::push_to_outbox(&mut update, events, now());
        let hidden = self
            .posts()
            .clone_with_type::<HiddenFrom>()
            .find_one_and_update(
                doc! { "_id": post_id, "attachments._id": { "$in": ids } },
                update,
            )
            .projection(doc! { "author": 1, "status": 1 })
            .await?;
        self.events_written();
        Ok(hidden)
    }

    /// Shows again the ready attachments created in the [`RESTORE_WINDOW`] before `cutoff`
    /// whose active post does not list them, if it admits them as their publish would
    /// have; removes those marked `reserved` that it does not admit (their publish was
    /// refused, and the process died before removing them). Returns how many of each.
    pub(crate) async fn restore_missing_summaries(
        &self,
        cutoff: SystemTime,
    ) -> Result<(usize, usize), StorageError> {
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
            .try_chunks(RESTORE_BATCH);
        let (mut restored, mut removed) = (0, 0);
        while let Some(batch) = batches.try_next().await.map_err(|failed| failed.1)? {
            let (listed, refused) = self.restore_batch(batch).await?;
            restored += listed;
            removed += refused;
        }
        Ok((restored, removed))
    }

    async fn restore_batch(
        &self,
        records: Vec<AttachmentDocument>,
    ) -> Result<(usize, usize), StorageError> {
        let post_ids: HashSet<ObjectId> = records.iter().map(|record| record.post_id).collect();
        let post_ids: Vec<ObjectId> = post_ids.into_iter().collect();
        let posts: Vec<Document> = self
            .posts()
            .clone_with_type::<Document>()
            .find(doc! { "_id": { "$in": post_ids }, "status": PostStatus::Active.as_str() })
            .projection(doc! { "attachments._id": 1, "pending._id": 1 })
            .await?
            .try_collect()
            .await?;
        let active: HashSet<ObjectId> = posts
            .iter()
            .filter_map(|post| post.get_object_id("_id").ok())
            .collect();
        let listed = ids_in(&posts, "attachments");
        let held = ids_in(&posts, "pending");
        let (mut restored, mut removed) = (0, 0);
        for record in records {
            if !active.contains(&record.post_id) || listed.contains(&record.id) {
                continue;
            }
            // Never list what has no bytes (the reconciliation reports those).
            let key = self.objects.key_for(record.post_id, record.id);
            match self.objects.head(&key).await {
                Ok(_) => {}
                Err(ObjectStoreError::NotFound) => continue,
                Err(error) => return Err(error.into()),
            }
            // Listed as the write that should have listed it would have: through its
            // reservation, through the checks of a deferred upload if its reservation is
            // gone, or (an older instance's record) as it is.
            let uploader = record.uploader.clone();
            let admission = if held.contains(&record.id) {
                Admission::held(vec![record.id])
            } else if record.reserved {
                Admission {
                    deferred: 1,
                    author: uploader.as_deref(),
                    ..Admission::default()
                }
            } else {
                Admission::default()
            };
            let (post_id, id) = (PostId(record.post_id), record.id);
            match self
                .list(post_id, &[Attachment::from(record)], &admission)
                .await?
            {
                Listed::Yes => {}
                Listed::NoRoom | Listed::NoPost if admission.deferred > 0 => {
                    tracing::warn!(attachment_id = %id, "removing an upload its post does not admit");
                    self.remove_unpublished(post_id.0, id).await?;
                    removed += 1;
                    continue;
                }
                Listed::NoRoom | Listed::NoPost => continue,
            }
            // A delete may have marked it meanwhile and hidden it before it was listed
            // again: hide it once more, so no summary outlives its record.
            let still_ready = self
                .attachments()
                .find_one(doc! { "_id": id, "status": AttachmentStatus::Ready.as_str() })
                .await?
                .is_some();
            if still_ready {
                tracing::warn!(%post_id, attachment_id = %id, "restored an attachment missing from its post");
                restored += 1;
            } else {
                self.hide_attachments(post_id.0, &[id], Vec::new()).await?;
            }
        }
        Ok((restored, removed))
    }
}

/// The ids of the entries of array `field` in `posts`.
fn ids_in(posts: &[Document], field: &str) -> HashSet<ObjectId> {
    posts
        .iter()
        .filter_map(|post| post.get_array(field).ok())
        .flatten()
        .filter_map(|entry| entry.as_document()?.get_object_id("_id").ok())
        .collect()
}
