//! The end of an attachment's life: a delete marks its record `deleting`, hides it from
//! readers, then removes its object and whatever its way in left (a multipart upload, a
//! tail, a staged object), then its record. A failed or expired upload is discarded the
//! same way, its reservation last. Interrupted, the reaper carries either on.

use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};

use crate::IncompleteUpload;
use crate::error::{Entity, StorageError};
use crate::events::{EventKind, attachment_data};
use crate::model::{Attachment, AttachmentId, PostId};
use crate::mongo::documents::{AttachmentDocument, AttachmentStatus, PostStatus, now};
use crate::store::Storage;
use crate::summaries::HiddenFrom;

/// Posts with expired reservations one reaper pass reads at a time.
const EXPIRY_BATCH: u32 = 500;

/// The waits before each new attempt to discard a failed upload.
const DISCARD_RETRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(25),
];

impl Storage {
    /// Deletes an attachment: its user's count is held, its record is marked `deleting`,
    /// it is hidden from readers and uncounted, then its object and its record are
    /// removed. Once this returns `Ok` no reader sees it; if the removal stops half-way the
    /// reaper finishes it. Asked again while a deletion is unfinished, it carries the
    /// deletion on.
    pub async fn delete_attachment(
        &self,
        post_id: PostId,
        attachment_id: AttachmentId,
    ) -> Result<(), StorageError> {
        let post = self.active_post(post_id).await?;
        let Some(attachment) = post.attachment(attachment_id.0) else {
            return Err(StorageError::NotFound(Entity::Attachment));
        };
        let author = post.author.as_deref();
        self.hold_quota(author, attachment_id.0).await?;
        let hidden = self.mark_and_hide(post_id, &attachment).await;
        let (attachments, bytes) = match &hidden {
            Ok((_, Some(from))) if from.counted() => (1, attachment.size),
            _ => (0, 0),
        };
        if let Err(error) = self
            .uncount_quota(author, attachment_id.0, attachments, bytes)
            .await
        {
            tracing::warn!(%attachment_id, %error, "could not give a deleted attachment's bytes back to the quota; the reaper will");
        }
        let (marked, _) = hidden?;
        if !marked {
            return Ok(());
        }
        if let Err(error) = self
            .remove_deleting_attachments(doc! { "_id": attachment_id.0 })
            .await
        {
            tracing::warn!(%attachment_id, %error, "attachment deletion interrupted; the reaper will finish it");
        }
        Ok(())
    }

    /// Marks the record of `attachment` `deleting` and hides it, with its event; whether
    /// a record was marked, and the post as it was if this hid it.
    async fn mark_and_hide(
        &self,
        post_id: PostId,
        attachment: &Attachment,
    ) -> Result<(bool, Option<HiddenFrom>), StorageError> {
        let marked = self
            .attachments()
            .update_one(
                doc! {
                    "_id": attachment.id.0,
                    "post_id": post_id.0,
                    "status": { "$in": [AttachmentStatus::Ready.as_str(), AttachmentStatus::Deleting.as_str()] },
                },
                doc! { "$set": { "status": AttachmentStatus::Deleting.as_str(), "updated_at": now() } },
            )
            .await?;
        // Listed without a record of its own (lost to a crash or an operator): unlisted,
        // it is gone as asked.
        let deleted = self.outbox_entries(
            now(),
            [(EventKind::AttachmentDeleted, attachment_data(attachment))],
        );
        let hidden = self
            .hide_attachments(post_id.0, &[attachment.id.0], deleted)
            .await?;
        Ok((marked.matched_count > 0, hidden))
    }

    /// Ends an unfinished upload that spans requests (its record matching `condition`)
    /// and removes what it stored;
    /// `NotFound(Upload)` if there is none (a completed upload is an attachment, deleted
    /// as one).
    pub(crate) async fn end_pending_upload(
        &self,
        post_id: PostId,
        upload_id: AttachmentId,
        condition: Document,
    ) -> Result<(), StorageError> {
        let mut filter = doc! {
            "_id": upload_id.0,
            "post_id": post_id.0,
            "status": AttachmentStatus::Pending.as_str(),
        };
        filter.extend(condition);
        let marked = self
            .attachments()
            .update_one(
                filter,
                doc! { "$set": { "status": AttachmentStatus::Deleting.as_str(), "updated_at": now() } },
            )
            .await?;
        if marked.matched_count == 0 {
            return Err(StorageError::NotFound(Entity::Upload));
        }
        if let Err(error) = self
            .remove_deleting_attachments(doc! { "_id": upload_id.0 })
            .await
        {
            tracing::warn!(%upload_id, %error, "upload removal interrupted; the reaper will finish it");
        }
        self.release(post_id.0, &[upload_id.0]).await?;
        self.release_quota(upload_id.0).await
    }

    /// Marks every attachment of a `deleting` post `deleting`, removes them, and then
    /// the post, unless an upload still holds a reservation on it (its own failure, or
    /// the reaper at its expiry, releases it; a later pass removes the post) or its events
    /// are not all delivered (the dispatcher removes it after the last one).
    pub(crate) async fn finish_post_deletion(&self, post_id: ObjectId) -> Result<(), StorageError> {
        self.attachments()
            .update_many(
                doc! { "post_id": post_id },
                doc! { "$set": { "status": AttachmentStatus::Deleting.as_str(), "updated_at": now() } },
            )
            .await?;
        let removed = self
            .remove_deleting_attachments(doc! { "post_id": post_id })
            .await?;
        self.release(post_id, &removed).await?;
        self.posts()
            .delete_one(doc! {
                "_id": post_id,
                "status": PostStatus::Deleting.as_str(),
                "pending.0": { "$exists": false },
                "outbox.0": { "$exists": false },
            })
            .await?;
        Ok(())
    }

    /// Hides, then removes the objects (variants first) and leftovers, then the records, of
    /// `deleting` attachments matching `filter`; the ids removed.
    pub(crate) async fn remove_deleting_attachments(
        &self,
        mut filter: Document,
    ) -> Result<Vec<ObjectId>, StorageError> {
        filter.insert("status", AttachmentStatus::Deleting.as_str());
        let mut removed = Vec::new();
        let mut cursor = self.attachments().find(filter).await?;
        while let Some(document) = cursor.try_next().await? {
            let hidden = self
                .hide_attachments(document.post_id, &[document.id], Vec::new())
                .await?;
            // Hidden here, not by the delete that marked it (which died, or was overtaken):
            // its bytes are given back here.
            if let Some(from) = hidden.filter(HiddenFrom::counted) {
                let size = u64::try_from(document.size).unwrap_or(0);
                if let Err(error) = self
                    .uncount_quota(from.author.as_deref(), document.id, 1, size)
                    .await
                {
                    tracing::warn!(attachment_id = %document.id, %error, "could not give a removed attachment's bytes back to the quota; the reaper will");
                }
            }
            self.remove_leftovers(&document).await?;
            for name in document.variants.keys() {
                let variant = self
                    .objects
                    .variant_key_for(document.post_id, document.id, name);
                self.objects.delete(&variant).await?;
            }
            let key = self.objects.key_for(document.post_id, document.id);
            self.objects.delete(&key).await?;
            self.attachments()
                .delete_one(
                    doc! { "_id": document.id, "status": AttachmentStatus::Deleting.as_str() },
                )
                .await?;
            removed.push(document.id);
        }
        Ok(removed)
    }

    /// Removes what an upload wrote besides its object: a resumable upload's multipart
    /// upload and tail, a direct upload's staged object.
    async fn remove_leftovers(&self, document: &AttachmentDocument) -> Result<(), StorageError> {
        if document.direct_upload.is_some() {
            let staging = self.objects.staging_key_for(document.post_id, document.id);
            self.objects.delete(&staging).await?;
        }
        let Some(state) = &document.resumable else {
            return Ok(());
        };
        if let Some(multipart_id) = &state.multipart_id {
            self.objects
                .abort_upload(&IncompleteUpload {
                    key: self.objects.key_for(document.post_id, document.id),
                    upload_id: multipart_id.clone(),
                    initiated: None,
                })
                .await?;
        }
        if let Some(lease) = state.tail_lease.as_deref() {
            let named =
                self.objects
                    .resumable_tail_key_of(document.post_id, document.id, Some(lease));
            self.objects.delete(&named).await?;
        }
        let shared = self
            .objects
            .resumable_tail_key_for(document.post_id, document.id);
        self.objects.delete(&shared).await?;
        Ok(())
    }

    /// Removes an upload that will not be published: unlisted (a publish whose answer was
    /// lost may have listed it), its record and object removed, then its reservation
    /// released. A failure (S3 or MongoDB unavailable) is retried in the background a few
    /// times, then left to the reaper.
    pub(crate) async fn discard(&self, post_id: PostId, id: ObjectId) {
        let Err(error) = self.try_discard(post_id.0, id).await else {
            return;
        };
        tracing::warn!(attachment_id = %id, %error, "could not remove a failed upload yet; retrying");
        let storage = self.clone();
        tokio::spawn(async move {
            for wait in DISCARD_RETRIES {
                tokio::time::sleep(wait).await;
                match storage.try_discard(post_id.0, id).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(attachment_id = %id, %error, "could not remove a failed upload yet");
                    }
                }
            }
            tracing::warn!(attachment_id = %id, "leaving a failed upload to the reaper");
        });
    }

    async fn try_discard(&self, post_id: ObjectId, id: ObjectId) -> Result<(), StorageError> {
        self.remove_unpublished(post_id, id).await?;
        self.release(post_id, &[id]).await?;
        self.release_quota(id).await
    }

    /// Hides an attachment, marks its record (if any) `deleting` and removes it with its
    /// object; without a record, removes the object.
    pub(crate) async fn remove_unpublished(
        &self,
        post_id: ObjectId,
        id: ObjectId,
    ) -> Result<(), StorageError> {
        self.hide_attachments(post_id, &[id], Vec::new()).await?;
        let marked = self
            .attachments()
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "status": AttachmentStatus::Deleting.as_str(), "updated_at": now() } },
            )
            .await?;
        if marked.matched_count == 1 {
            self.remove_deleting_attachments(doc! { "_id": id }).await?;
        } else {
            self.objects
                .delete(&self.objects.key_for(post_id, id))
                .await?;
        }
        Ok(())
    }

    /// Drops reservations from a post (in any state).
    async fn release(&self, post_id: ObjectId, ids: &[ObjectId]) -> Result<(), StorageError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.posts()
            .update_one(
                doc! { "_id": post_id, "pending._id": { "$in": ids } },
                doc! { "$pull": { "pending": { "_id": { "$in": ids } } } },
            )
            .await?;
        Ok(())
    }

    /// Marks `deleting` the pending records that an older version left without a
    /// reservation once they are older than `cutoff` (resumable ones once they expire);
    /// returns how many.
    pub(crate) async fn expire_unreserved_records(
        &self,
        cutoff: SystemTime,
    ) -> Result<u64, StorageError> {
        Ok(self
            .attachments()
            .update_many(
                doc! {
                    "status": AttachmentStatus::Pending.as_str(),
                    // Reserved records expire with their reservation.
                    "reserved": { "$ne": true },
                    "$or": [
                        {
                            "created_at": { "$lt": DateTime::from_system_time(cutoff) },
                            "resumable": { "$exists": false },
                        },
                        { "resumable.expires_at": { "$lt": now() } },
                    ],
                },
                doc! { "$set": { "status": AttachmentStatus::Deleting.as_str(), "updated_at": now() } },
            )
            .await?
            .modified_count)
    }

    /// Discards the uploads whose reservations expired (their process died, or they took
    /// longer than allowed): each reservation is taken first, by a write that matches only
    /// while it stands expired, so that a publish racing it fails; then what the upload
    /// stored is removed. Returns how many.
    pub(crate) async fn expire_reservations(&self) -> Result<u64, StorageError> {
        let now = now();
        let posts: Vec<Document> = self
            .posts()
            .clone_with_type::<Document>()
            .find(doc! { "pending.expires_at": { "$lt": now } })
            .projection(doc! { "pending": 1 })
            .limit(i64::from(EXPIRY_BATCH))
            .await?
            .try_collect()
            .await?;
        let mut expired = 0;
        for post in posts {
            let Ok(post_id) = post.get_object_id("_id") else {
                continue;
            };
            let entries = post
                .get_array("pending")
                .map(Vec::as_slice)
                .unwrap_or_default();
            for entry in entries.iter().filter_map(|entry| entry.as_document()) {
                let (Ok(id), Ok(expires_at)) =
                    (entry.get_object_id("_id"), entry.get_datetime("expires_at"))
                else {
                    continue;
                };
                if *expires_at >= now {
                    continue;
                }
                let taken = self
                    .posts()
                    .update_one(
                        doc! { "_id": post_id, "pending": { "$elemMatch": { "_id": id, "expires_at": { "$lt": now } } } },
                        doc! { "$pull": { "pending": { "_id": id } } },
                    )
                    .await?;
                if taken.modified_count == 1 {
                    self.remove_unpublished(post_id, id).await?;
                    expired += 1;
                }
            }
        }
        Ok(expired)
    }
}
