//! Attachments: streamed uploads, reads, downloads, deletes — each keeping MongoDB and S3
//! consistent (see the crate docs for the protocol). Direct uploads are in
//! `direct_uploads.rs`.

use std::fmt::Display;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};

use crate::content::{SNIFF_BYTES, sniff};
use crate::error::{Entity, StorageError};
use crate::model::{Attachment, AttachmentId, PostId};
use crate::mongo::documents::{AttachmentDocument, AttachmentStatus, now};
use crate::s3::{ByteRange, ObjectBody, PresignedUrl, StoredObject};
use crate::store::Storage;

impl Storage {
    /// Streams one file into a new attachment of `post_id`.
    ///
    /// The first bytes are sniffed and checked against the allow-list before anything is
    /// stored. The record is `pending` while bytes move and `ready` once they are complete;
    /// on any failure — including this future being dropped — the object and the record
    /// are removed.
    pub async fn upload_attachment<S, E>(
        &self,
        post_id: PostId,
        filename: &str,
        declared_type: Option<&str>,
        stream: S,
    ) -> Result<Attachment, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        self.active_post(post_id).await?;
        // Fused: the stream is read again after the sniffing window, possibly at its end.
        let mut stream = stream.fuse();
        let (head, ended) = read_head(&mut stream, self.max_file_bytes).await?;
        let content_type = sniff(&head, declared_type, ended);
        if !self.policy.allows(&content_type) {
            return Err(StorageError::UnsupportedType { content_type });
        }

        let created_at = now();
        let document = AttachmentDocument {
            id: ObjectId::new(),
            post_id: post_id.0,
            filename: filename.to_owned(),
            content_type,
            size: 0,
            sha256: String::new(),
            status: AttachmentStatus::Pending,
            created_at,
            updated_at: created_at,
            direct_upload: None,
        };
        self.attachments().insert_one(&document).await?;
        let mut guard = PendingGuard::new(self.clone(), post_id, document.id);

        let key = self.objects.key_for(post_id, document.id.to_hex());
        let bytes = futures::stream::iter([Ok(head.freeze())]).chain(stream);
        let stored = match self
            .objects
            .put_stream(&key, &document.content_type, bytes, self.max_file_bytes)
            .await
        {
            Ok(stored) => stored,
            Err(error) => {
                guard.discard().await;
                return Err(error.into());
            }
        };
        match self
            .mark_ready(&document, &stored, &document.content_type, Entity::Post)
            .await
        {
            Ok(attachment) => {
                guard.disarm();
                Ok(attachment)
            }
            Err(error) => {
                guard.discard().await;
                Err(error)
            }
        }
    }
    /// Flips a pending record to ready with what was stored; `NotFound(missing)` if it is
    /// no longer pending (its post was deleted, or the reaper expired it).
    pub(crate) async fn mark_ready(
        &self,
        document: &AttachmentDocument,
        stored: &StoredObject,
        content_type: &str,
        missing: Entity,
    ) -> Result<Attachment, StorageError> {
        let size = i64::try_from(stored.size).unwrap_or(i64::MAX);
        let sha256 = hex::encode(stored.sha256);
        let result = self
            .attachments()
            .update_one(
                doc! { "_id": document.id, "status": AttachmentStatus::Pending.as_str() },
                doc! { "$set": {
                    "status": AttachmentStatus::Ready.as_str(),
                    "size": size,
                    "sha256": &sha256,
                    "content_type": content_type,
                    "updated_at": now(),
                } },
            )
            .await?;
        if result.matched_count == 0 {
            return Err(StorageError::NotFound(missing));
        }
        Ok(Attachment {
            id: AttachmentId(document.id),
            post_id: PostId(document.post_id),
            filename: document.filename.clone(),
            content_type: content_type.to_owned(),
            size: stored.size,
            sha256,
            created_at: document.created_at.to_system_time(),
        })
    }

    /// The ready attachments of a post, oldest first.
    pub async fn list_attachments(&self, post_id: PostId) -> Result<Vec<Attachment>, StorageError> {
        self.active_post(post_id).await?;
        let mut grouped = self.ready_attachments_of(&[post_id.0]).await?;
        Ok(grouped.remove(&post_id.0).unwrap_or_default())
    }

    /// One ready attachment of a post.
    pub async fn attachment(
        &self,
        post_id: PostId,
        attachment_id: AttachmentId,
    ) -> Result<Attachment, StorageError> {
        self.active_post(post_id).await?;
        self.attachments()
            .find_one(doc! {
                "_id": attachment_id.0,
                "post_id": post_id.0,
                "status": AttachmentStatus::Ready.as_str(),
            })
            .await?
            .map(Attachment::from)
            .ok_or(StorageError::NotFound(Entity::Attachment))
    }

    /// Streams an attachment's bytes, or a range of them.
    pub async fn open_attachment(
        &self,
        attachment: &Attachment,
        range: Option<ByteRange>,
    ) -> Result<ObjectBody, StorageError> {
        let key = self.objects.key_for(attachment.post_id, attachment.id);
        Ok(self.objects.get_stream(&key, range).await?)
    }

    /// A presigned GET of an attachment, served with `content_disposition` and its type.
    pub async fn presign_download(
        &self,
        attachment: &Attachment,
        content_disposition: &str,
    ) -> Result<PresignedUrl, StorageError> {
        let key = self.objects.key_for(attachment.post_id, attachment.id);
        Ok(self
            .objects
            .presign_get(
                &key,
                self.presign_ttl,
                content_disposition,
                &attachment.content_type,
            )
            .await?)
    }

    /// Deletes an attachment: marked `deleting` (invisible from then on), then its object,
    /// then its record. If that stops half-way the reaper finishes it.
    pub async fn delete_attachment(
        &self,
        post_id: PostId,
        attachment_id: AttachmentId,
    ) -> Result<(), StorageError> {
        self.active_post(post_id).await?;
        let marked = self
            .attachments()
            .update_one(
                doc! {
                    "_id": attachment_id.0,
                    "post_id": post_id.0,
                    "status": AttachmentStatus::Ready.as_str(),
                },
                doc! { "$set": { "status": AttachmentStatus::Deleting.as_str(), "updated_at": now() } },
            )
            .await?;
        if marked.matched_count == 0 {
            return Err(StorageError::NotFound(Entity::Attachment));
        }
        if let Err(error) = self
            .remove_deleting_attachments(doc! { "_id": attachment_id.0 })
            .await
        {
            tracing::warn!(%attachment_id, %error, "attachment deletion interrupted; the reaper will finish it");
        }
        Ok(())
    }

    /// Removes the objects, then the records, of `deleting` attachments matching `filter`.
    pub(crate) async fn remove_deleting_attachments(
        &self,
        mut filter: Document,
    ) -> Result<usize, StorageError> {
        filter.insert("status", AttachmentStatus::Deleting.as_str());
        let mut removed = 0;
        let mut cursor = self.attachments().find(filter).await?;
        while let Some(document) = cursor.try_next().await? {
            let key = self
                .objects
                .key_for(PostId(document.post_id), document.id.to_hex());
            self.objects.delete(&key).await?;
            self.attachments()
                .delete_one(
                    doc! { "_id": document.id, "status": AttachmentStatus::Deleting.as_str() },
                )
                .await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes a pending upload's object (if any was written) and its record.
    async fn discard_pending(&self, post_id: PostId, attachment_id: ObjectId) {
        let key = self.objects.key_for(post_id, attachment_id.to_hex());
        if let Err(error) = self.objects.delete(&key).await {
            tracing::warn!(%key, %error, "could not delete the object of a failed upload; the reaper will");
        }
        if let Err(error) = self
            .attachments()
            .delete_one(doc! { "_id": attachment_id, "status": { "$ne": AttachmentStatus::Ready.as_str() } })
            .await
        {
            tracing::warn!(%attachment_id, %error, "could not delete the record of a failed upload; the reaper will");
        }
    }
}

/// Reads up to `SNIFF_BYTES` (and at least one chunk) from the stream; whether it ended.
async fn read_head<S, E>(stream: &mut S, max_bytes: u64) -> Result<(BytesMut, bool), StorageError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let mut head = BytesMut::new();
    while head.len() < SNIFF_BYTES {
        match stream.next().await {
            Some(Ok(chunk)) => {
                head.extend_from_slice(&chunk);
                if head.len() as u64 > max_bytes {
                    return Err(StorageError::TooLarge { limit: max_bytes });
                }
            }
            Some(Err(error)) => return Err(StorageError::Client(error.to_string())),
            None => return Ok((head, true)),
        }
    }
    Ok((head, false))
}

/// Removes a pending upload unless disarmed: also when the upload future is dropped (the
/// client went away, the request was cancelled), by spawning the clean-up.
struct PendingGuard {
    storage: Option<Storage>,
    post_id: PostId,
    attachment_id: ObjectId,
}

impl PendingGuard {
    fn new(storage: Storage, post_id: PostId, attachment_id: ObjectId) -> Self {
        Self {
            storage: Some(storage),
            post_id,
            attachment_id,
        }
    }

    async fn discard(&mut self) {
        if let Some(storage) = self.storage.take() {
            storage
                .discard_pending(self.post_id, self.attachment_id)
                .await;
        }
    }

    fn disarm(&mut self) {
        self.storage = None;
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let Some(storage) = self.storage.take() else {
            return;
        };
        let (post_id, attachment_id) = (self.post_id, self.attachment_id);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // Give a cancelled part upload a moment to stop before deleting.
                runtime.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    storage.discard_pending(post_id, attachment_id).await;
                });
            }
            Err(_) => {
                tracing::warn!(%attachment_id, "no runtime to clean up a cancelled upload; the reaper will")
            }
        }
    }
}
