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
use crate::s3::{ByteRange, MAX_SINGLE_PUT_BYTES, ObjectBody, PresignedUrl, StoredObject};
use crate::store::Storage;

/// An attachment whose bytes are stored and whose record is still `pending`. Publish it
/// with [`Storage::publish`]; dropped unpublished, its object and record are removed.
#[derive(Debug)]
pub struct StagedAttachment {
    attachment: Attachment,
    guard: PendingGuard,
}

impl StagedAttachment {
    /// What the attachment will be once published.
    pub fn attachment(&self) -> &Attachment {
        &self.attachment
    }

    /// Removes the object and the record now, rather than soon after a drop.
    pub async fn discard(mut self) {
        self.guard.discard().await;
    }
}

impl Storage {
    /// Streams one file into a new, ready attachment of `post_id`: [`Storage::stage_attachment`]
    /// then [`Storage::publish`].
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
        let staged = self
            .stage_attachment(post_id, filename, declared_type, stream)
            .await?;
        let mut published = self.publish(vec![staged]).await?;
        published.pop().ok_or(StorageError::NotFound(Entity::Post))
    }

    /// Streams one file into a new attachment of `post_id` that stays `pending`, invisible
    /// to readers, until [`Storage::publish`] turns it ready with the others of its
    /// request.
    ///
    /// The first bytes are sniffed and checked against the allow-list before anything is
    /// stored. On any failure, and if the returned [`StagedAttachment`] is dropped
    /// unpublished (including this future being dropped), the object and the record are
    /// removed.
    pub async fn stage_attachment<S, E>(
        &self,
        post_id: PostId,
        filename: &str,
        declared_type: Option<&str>,
        stream: S,
    ) -> Result<StagedAttachment, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        self.stage(post_id, filename, declared_type, None, stream)
            .await
    }

    /// Like [`Storage::stage_attachment`] for a stream of exactly `size` bytes (a body
    /// with a `Content-Length`): up to the largest single PutObject, the bytes go to S3 as
    /// they arrive, in one PutObject, without filling parts; a stream of another length
    /// fails and stores nothing.
    pub async fn stage_sized_attachment<S, E>(
        &self,
        post_id: PostId,
        filename: &str,
        declared_type: Option<&str>,
        size: u64,
        stream: S,
    ) -> Result<StagedAttachment, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        if size > self.max_file_bytes {
            return Err(StorageError::TooLarge {
                limit: self.max_file_bytes,
            });
        }
        self.stage(post_id, filename, declared_type, Some(size), stream)
            .await
    }

    async fn stage<S, E>(
        &self,
        post_id: PostId,
        filename: &str,
        declared_type: Option<&str>,
        size: Option<u64>,
        stream: S,
    ) -> Result<StagedAttachment, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        self.active_post(post_id).await?;
        self.ensure_room_for_an_attachment(post_id).await?;
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
            resumable: None,
        };
        self.attachments().insert_one(&document).await?;
        let mut guard = PendingGuard::new(self.clone(), post_id, document.id);

        let key = self.objects.key_for(post_id, document.id.to_hex());
        let bytes = futures::stream::iter([Ok(head.freeze())]).chain(stream);
        let put = match size {
            Some(size) if size <= MAX_SINGLE_PUT_BYTES => {
                self.objects
                    .put_sized_stream(&key, &document.content_type, bytes, size)
                    .await
            }
            _ => {
                self.objects
                    .put_stream(&key, &document.content_type, bytes, self.max_file_bytes)
                    .await
            }
        };
        let stored = match put {
            Ok(stored) => stored,
            Err(error) => {
                guard.discard().await;
                return Err(error.into());
            }
        };
        let size = i64::try_from(stored.size).unwrap_or(i64::MAX);
        let sha256 = hex::encode(stored.sha256);
        let recorded = self
            .attachments()
            .update_one(
                doc! { "_id": document.id, "status": AttachmentStatus::Pending.as_str() },
                doc! { "$set": { "size": size, "sha256": &sha256, "updated_at": now() } },
            )
            .await;
        match recorded {
            Ok(result) if result.matched_count == 1 => {}
            Ok(_) => {
                guard.discard().await;
                return Err(StorageError::NotFound(Entity::Post));
            }
            Err(error) => {
                guard.discard().await;
                return Err(error.into());
            }
        }
        Ok(StagedAttachment {
            attachment: Attachment {
                id: AttachmentId(document.id),
                post_id,
                filename: document.filename,
                content_type: document.content_type,
                size: stored.size,
                sha256,
                created_at: created_at.to_system_time(),
            },
            guard,
        })
    }

    /// Turns staged attachments ready together, in one update: readers see all of them or
    /// none. If any is no longer pending (its post was deleted, or the reaper expired it),
    /// none is published and all are removed.
    pub async fn publish(
        &self,
        staged: Vec<StagedAttachment>,
    ) -> Result<Vec<Attachment>, StorageError> {
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<ObjectId> = staged.iter().map(|s| s.attachment.id.0).collect();
        let published = self
            .attachments()
            .update_many(
                doc! { "_id": { "$in": &ids }, "status": AttachmentStatus::Pending.as_str() },
                doc! { "$set": { "status": AttachmentStatus::Ready.as_str(), "updated_at": now() } },
            )
            .await?;
        // A post deleted while its files were staged (its deletion marked its attachments
        // before these records existed) must not end up with ready attachments: the
        // summaries are pushed only onto an active post, after the records went ready, so
        // a deletion that starts later removes them as usual.
        let mut refusal = (published.modified_count != ids.len() as u64)
            .then_some(StorageError::NotFound(Entity::Post));
        let mut by_post: Vec<(PostId, Vec<Attachment>)> = Vec::new();
        for file in &staged {
            let post_id = file.attachment.post_id;
            match by_post.iter_mut().find(|(post, _)| *post == post_id) {
                Some((_, files)) => files.push(file.attachment.clone()),
                None => by_post.push((post_id, vec![file.attachment.clone()])),
            }
        }
        for (post_id, attachments) in &by_post {
            if refusal.is_some() {
                break;
            }
            refusal = self.show_attachments(*post_id, attachments).await.err();
        }
        if let Some(error) = refusal {
            // Take back what went ready before the staged files are discarded, which
            // hides and removes them all. A failed write (MongoDB down) is reported as
            // itself, not as a missing post.
            self.attachments()
                .update_many(
                    doc! { "_id": { "$in": &ids }, "status": AttachmentStatus::Ready.as_str() },
                    doc! { "$set": { "status": AttachmentStatus::Pending.as_str() } },
                )
                .await?;
            for file in staged {
                file.discard().await;
            }
            return Err(error);
        }
        Ok(staged
            .into_iter()
            .map(|mut staged| {
                staged.guard.disarm();
                staged.attachment
            })
            .collect())
    }

    /// Flips a pending record to ready with what was stored, then shows it to readers;
    /// `NotFound(missing)` if it is no longer pending (its post was deleted, or the reaper
    /// expired it), `NotFound(Post)` if its post is no longer active.
    pub(crate) async fn mark_ready(
        &self,
        document: &AttachmentDocument,
        stored: &StoredObject,
        content_type: &str,
        missing: Entity,
        condition: Document,
    ) -> Result<Attachment, StorageError> {
        let size = i64::try_from(stored.size).unwrap_or(i64::MAX);
        let sha256 = hex::encode(stored.sha256);
        let mut filter = doc! { "_id": document.id, "status": AttachmentStatus::Pending.as_str() };
        filter.extend(condition);
        let result = self
            .attachments()
            .update_one(
                filter,
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
        let attachment = Attachment {
            id: AttachmentId(document.id),
            post_id: PostId(document.post_id),
            filename: document.filename.clone(),
            content_type: content_type.to_owned(),
            size: stored.size,
            sha256,
            created_at: document.created_at.to_system_time(),
        };
        // A post no longer active is being deleted, which removes this record too.
        self.show_attachments(attachment.post_id, std::slice::from_ref(&attachment))
            .await?;
        Ok(attachment)
    }

    /// Refuses one more attachment of a post that has `uploads.max_attachments_per_post`,
    /// counting pending ones. Concurrent uploads can pass the same count, so a post may
    /// exceed the cap by the uploads in flight at that moment, never by more.
    pub(crate) async fn ensure_room_for_an_attachment(
        &self,
        post_id: PostId,
    ) -> Result<(), StorageError> {
        let count = self
            .attachments()
            .count_documents(doc! {
                "post_id": post_id.0,
                "status": { "$in": [AttachmentStatus::Pending.as_str(), AttachmentStatus::Ready.as_str()] },
            })
            .await?;
        if count >= self.max_attachments_per_post {
            return Err(StorageError::TooManyAttachments {
                limit: self.max_attachments_per_post,
            });
        }
        Ok(())
    }

    /// One ready attachment of a post.
    pub async fn attachment(
        &self,
        post_id: PostId,
        attachment_id: AttachmentId,
    ) -> Result<Attachment, StorageError> {
        self.active_post(post_id)
            .await?
            .attachment(attachment_id.0)
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

    /// Deletes an attachment: its record is marked `deleting`, then it is hidden from
    /// readers, then its object and its record are removed. Once this returns `Ok` no
    /// reader sees it; if the removal stops half-way the reaper finishes it. Asked again
    /// while a deletion is unfinished, it carries the deletion on.
    pub async fn delete_attachment(
        &self,
        post_id: PostId,
        attachment_id: AttachmentId,
    ) -> Result<(), StorageError> {
        if self
            .active_post(post_id)
            .await?
            .attachment(attachment_id.0)
            .is_none()
        {
            return Err(StorageError::NotFound(Entity::Attachment));
        }
        let marked = self
            .attachments()
            .update_one(
                doc! {
                    "_id": attachment_id.0,
                    "post_id": post_id.0,
                    "status": { "$in": [AttachmentStatus::Ready.as_str(), AttachmentStatus::Deleting.as_str()] },
                },
                doc! { "$set": { "status": AttachmentStatus::Deleting.as_str(), "updated_at": now() } },
            )
            .await?;
        if marked.matched_count == 0 {
            return Err(StorageError::NotFound(Entity::Attachment));
        }
        self.hide_attachments(post_id.0, &[attachment_id.0]).await?;
        if let Err(error) = self
            .remove_deleting_attachments(doc! { "_id": attachment_id.0 })
            .await
        {
            tracing::warn!(%attachment_id, %error, "attachment deletion interrupted; the reaper will finish it");
        }
        Ok(())
    }

    /// Hides, then removes the objects, then the records, of `deleting` attachments
    /// matching `filter`.
    pub(crate) async fn remove_deleting_attachments(
        &self,
        mut filter: Document,
    ) -> Result<usize, StorageError> {
        filter.insert("status", AttachmentStatus::Deleting.as_str());
        let mut removed = 0;
        let mut cursor = self.attachments().find(filter).await?;
        while let Some(document) = cursor.try_next().await? {
            self.hide_attachments(document.post_id, &[document.id])
                .await?;
            let post_id = PostId(document.post_id);
            self.remove_resumable_leftovers(&document).await?;
            let key = self.objects.key_for(post_id, document.id.to_hex());
            self.objects.delete(&key).await?;
            if document.direct_upload.is_some() {
                let staging = self.objects.staging_key_for(post_id, document.id.to_hex());
                self.objects.delete(&staging).await?;
            }
            self.attachments()
                .delete_one(
                    doc! { "_id": document.id, "status": AttachmentStatus::Deleting.as_str() },
                )
                .await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Hides a failed upload (a publish may have shown it before failing), then removes
    /// its object (if any was written) and its record.
    async fn discard_pending(&self, post_id: PostId, attachment_id: ObjectId) {
        if let Err(error) = self.hide_attachments(post_id.0, &[attachment_id]).await {
            tracing::warn!(%attachment_id, %error, "could not hide a failed upload; the reaper will remove it");
            return;
        }
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
#[derive(Debug)]
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
