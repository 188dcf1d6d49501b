//! Attachments: the streamed ways in (a form's files, a raw body), reads and downloads.
//! Each way in reserves, stores and publishes through `lifecycle`.

use std::fmt::Display;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use crate::content::{SNIFF_BYTES, sniff};
use crate::error::{Entity, StorageError};
use crate::lifecycle::{SMALL_FILE_BYTES, StagedAttachment};
use crate::model::{Attachment, AttachmentId, PostId};
use crate::processing::Upload;
use crate::quota::QuotaMeter;
use crate::s3::{ByteRange, MAX_SINGLE_PUT_BYTES, ObjectBody, PresignedUrl};
use crate::store::Storage;

impl Storage {
    /// Streams one file into a new, ready attachment of `post_id`, whose author must be
    /// `author` when given: [`Storage::stage_attachment`]
    /// then [`Storage::publish`].
    pub async fn upload_attachment<S, E>(
        &self,
        post_id: PostId,
        author: Option<&str>,
        filename: &str,
        declared_type: Option<&str>,
        stream: S,
    ) -> Result<Attachment, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let staged = self
            .stage_attachment(post_id, author, filename, declared_type, stream)
            .await?;
        let mut published = self.publish(vec![staged]).await?;
        published.pop().ok_or(StorageError::NotFound(Entity::Post))
    }

    /// Streams one file into a new attachment of `post_id` that stays invisible to readers
    /// until [`Storage::publish`] turns it ready with the others of its
    /// request.
    ///
    /// The first bytes are sniffed and checked against the allow-list, then the post is
    /// reserved (active, written by `author`, with room), before anything is stored; a
    /// file that arrived whole within a mebibyte is stored first instead, and the write
    /// that publishes it checks the post. On any failure, and if the returned
    /// [`StagedAttachment`] is dropped unpublished (including this future being dropped),
    /// the object and the reservation are removed.
    pub async fn stage_attachment<S, E>(
        &self,
        post_id: PostId,
        author: Option<&str>,
        filename: &str,
        declared_type: Option<&str>,
        stream: S,
    ) -> Result<StagedAttachment, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        self.stage(post_id, author, filename, declared_type, None, stream)
            .await
    }

    /// Like [`Storage::stage_attachment`] for a stream of exactly `size` bytes (a body
    /// with a `Content-Length`): up to the largest single PutObject, the bytes go to S3 as
    /// they arrive, in one PutObject, without filling parts; a stream of another length
    /// fails and stores nothing.
    pub async fn stage_sized_attachment<S, E>(
        &self,
        post_id: PostId,
        author: Option<&str>,
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
        self.stage(post_id, author, filename, declared_type, Some(size), stream)
            .await
    }

    async fn stage<S, E>(
        &self,
        post_id: PostId,
        author: Option<&str>,
        filename: &str,
        declared_type: Option<&str>,
        size: Option<u64>,
        stream: S,
    ) -> Result<StagedAttachment, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        // Fused: the stream is read again after the sniffing window, possibly at its end.
        let mut stream = stream.fuse();
        let (head, ended) = read_head(
            &mut stream,
            BytesMut::new(),
            SNIFF_BYTES,
            self.max_file_bytes,
        )
        .await?;
        let content_type = sniff(&head, declared_type, ended);
        if !self.policy.allows(&content_type) {
            return Err(StorageError::UnsupportedType { content_type });
        }
        let (head, whole) = if ended {
            (head, true)
        } else {
            read_head(&mut stream, head, SMALL_FILE_BYTES + 1, self.max_file_bytes).await?
        };
        let read = head.len() as u64;
        let reservation = if whole {
            self.defer(post_id, author, read).await?
        } else {
            self.reserve(post_id, author, self.pending_ttl, size)
                .await?
        };
        let key = self.objects.key_for(post_id, reservation.id);
        let bytes = futures::stream::iter([Ok(head.freeze())]).chain(stream);
        let meter = QuotaMeter::new(self, reservation.quota.as_ref()).filter(|_| size.is_none());
        let put = match (size, meter) {
            // All of it is here: a stream of another declared length fails.
            _ if whole => {
                self.objects
                    .put_sized_stream(&key, &content_type, bytes, size.unwrap_or(read))
                    .await
            }
            (Some(size), _) if size <= MAX_SINGLE_PUT_BYTES => {
                self.objects
                    .put_sized_stream(&key, &content_type, bytes, size)
                    .await
            }
            // Of unknown length: its quota is reserved as its bytes arrive.
            (_, Some(meter)) => {
                let refusal = meter.refusal();
                let put = self
                    .objects
                    .put_stream(&key, &content_type, meter.meter(bytes), self.max_file_bytes)
                    .await;
                match refusal.lock().ok().and_then(|mut refusal| refusal.take()) {
                    Some(refusal) => {
                        reservation.discard().await;
                        return Err(refusal);
                    }
                    None => put,
                }
            }
            _ => {
                self.objects
                    .put_stream(&key, &content_type, bytes, self.max_file_bytes)
                    .await
            }
        };
        let processed = match put {
            Ok(stored) => {
                let upload = Upload {
                    post_id: post_id.0,
                    id: reservation.id,
                    filename,
                };
                self.process(&key, upload, &content_type, stored).await
            }
            Err(error) => Err(error.into()),
        };
        match processed {
            Ok(processed) => Ok(StagedAttachment::new(
                reservation,
                processed,
                content_type,
                filename,
            )),
            Err(error) => {
                reservation.discard().await;
                Err(error)
            }
        }
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
        self.presign_object(&key, content_disposition, &attachment.content_type)
            .await
    }

    /// A presigned GET of the object at `key`, for `s3.presign_ttl_secs`, served with
    /// `content_disposition` and `content_type`.
    pub(crate) async fn presign_object(
        &self,
        key: &str,
        content_disposition: &str,
        content_type: &str,
    ) -> Result<PresignedUrl, StorageError> {
        Ok(self
            .objects
            .presign_get(key, self.presign_ttl, content_disposition, content_type)
            .await?)
    }
}

/// Reads from the stream onto `head` until it holds `up_to` bytes (at least one chunk
/// more) or the stream ends; whether it ended.
async fn read_head<S, E>(
    stream: &mut S,
    mut head: BytesMut,
    up_to: usize,
    max_bytes: u64,
) -> Result<(BytesMut, bool), StorageError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    while head.len() < up_to {
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
