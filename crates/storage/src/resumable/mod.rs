//! Resumable uploads (the storage side of tus): an upload is created with its length,
//! then filled by requests that each start at the stored offset, from any instance.
//!
//! Each request streams into S3 multipart parts of `s3.part_size_bytes` at the
//! attachment's own key (no client can write there), recording each part as S3 stores
//! it; the bytes that do not fill a part when the request ends — completely, or cut off —
//! are written to a tail object and read back first by the next request. So the offset
//! always names bytes stored durably, and memory per request is bounded by the part size
//! and the parts in flight, whatever the client's chunking. A lease in the record lets
//! one request write at a time. On the last byte the multipart upload completes, the
//! object is verified as a direct upload's (size, sniffed type, SHA-256) and the
//! attachment turns ready. An upload not finished by its expiry is reaped like any
//! pending upload: its multipart upload aborted, its tail and record removed.

use std::fmt::Display;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::Stream;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, doc};
use mongodb::options::ReturnDocument;

use crate::content::essence;
use crate::error::StorageError;
use crate::model::{Attachment, AttachmentId, PostId};
use crate::mongo::documents::{AttachmentDocument, AttachmentStatus, ResumableState, now};
use crate::store::Storage;

mod writer;

use writer::PartWriter;

/// How long a request holds an upload without renewing its lease. A process killed
/// mid-request keeps the upload from other requests (423) for at most this long, which
/// stock tus clients wait out with their retries.
const LEASE: Duration = Duration::from_secs(30);

/// The type S3 records for bytes whose type is not declared (the verified type is kept
/// in MongoDB).
pub(super) const OCTET_STREAM: &str = "application/octet-stream";

/// A resumable upload as its client sees it.
#[derive(Clone, Debug)]
pub struct ResumableUpload {
    /// Its id, which is also the attachment's id once complete.
    pub id: AttachmentId,
    /// The post it belongs to.
    pub post_id: PostId,
    /// Its length in bytes.
    pub length: u64,
    /// Bytes stored so far.
    pub offset: u64,
    /// The client's `Upload-Metadata`, as sent.
    pub metadata: String,
    /// When it expires unless complete.
    pub expires_at: SystemTime,
    /// The ready attachment, once the last byte is stored and verified.
    pub attachment: Option<Attachment>,
}

/// What a client declares when it creates a resumable upload.
#[derive(Clone, Copy, Debug)]
pub struct NewResumableUpload<'a> {
    /// The file name, kept as metadata.
    pub filename: &'a str,
    /// The type the client says the bytes are; checked now, verified at the end.
    pub declared_type: Option<&'a str>,
    /// Exact length in bytes.
    pub length: u64,
    /// The client's `Upload-Metadata`, given back as sent.
    pub metadata: &'a str,
    /// The creating user's subject, for the per-user limit (`None` without
    /// authentication).
    pub owner: Option<&'a str>,
}

impl Storage {
    /// Records a new resumable upload of a post (whose author must be its owner, when
    /// given): pending, at offset 0, expiring after `uploads.resumable_ttl_secs`. An upload of length 0 is complete at once.
    pub async fn create_resumable_upload(
        &self,
        post_id: PostId,
        new: NewResumableUpload<'_>,
    ) -> Result<ResumableUpload, StorageError> {
        if new.length > self.max_file_bytes {
            return Err(StorageError::TooLarge {
                limit: self.max_file_bytes,
            });
        }
        let declared_type = new.declared_type.map(essence);
        if let Some(content_type) = &declared_type
            && !self.policy.allows(content_type)
        {
            return Err(StorageError::UnsupportedType {
                content_type: content_type.clone(),
            });
        }
        if let Some(owner) = new.owner {
            let unfinished = self
                .attachments()
                .count_documents(doc! {
                    "status": AttachmentStatus::Pending.as_str(),
                    "resumable.owner": owner,
                    "resumable.expires_at": { "$gt": now() },
                })
                .await?;
            if unfinished >= self.resumable_uploads_per_user {
                return Err(StorageError::TooManyResumableUploads {
                    limit: self.resumable_uploads_per_user,
                });
            }
        }
        let reservation = self
            .reserve(post_id, new.owner, self.resumable_ttl, Some(new.length))
            .await?;
        let content_type = declared_type.clone().unwrap_or_else(|| OCTET_STREAM.into());
        let document = AttachmentDocument {
            resumable: Some(ResumableState {
                length: i64::try_from(new.length).unwrap_or(i64::MAX),
                offset: 0,
                metadata: new.metadata.to_owned(),
                declared_content_type: declared_type,
                owner: new.owner.map(str::to_owned),
                expires_at: DateTime::from_system_time(SystemTime::now() + self.resumable_ttl),
                multipart_id: None,
                parts: Vec::new(),
                tail: 0,
                tail_lease: None,
                tail_at: None,
                lease: None,
                lease_until: None,
            }),
            ..Self::pending_document(&reservation, new.filename, content_type)
        };
        self.record_pending(reservation, &document).await?;
        if new.length == 0 {
            return self
                .append_to_resumable_upload(
                    post_id,
                    AttachmentId(document.id),
                    0,
                    futures::stream::empty::<Result<Bytes, StorageError>>(),
                )
                .await;
        }
        Ok(view(&document))
    }

    /// Where a resumable upload stands. An expired one is `UploadExpired` until the
    /// reaper removes it, then `NotFound`.
    pub async fn resumable_upload(
        &self,
        post_id: PostId,
        upload_id: AttachmentId,
    ) -> Result<ResumableUpload, StorageError> {
        let document = self.resumable_document(post_id, upload_id).await?;
        Ok(view(&document))
    }

    /// Appends `stream` to a resumable upload that stands at `offset`: full parts go to
    /// S3 as they fill, and what is left when the stream ends or fails is kept for the
    /// next request, so the upload's new offset counts every byte received. With the last
    /// byte the upload completes and is verified; the answer then carries the attachment.
    ///
    /// `OffsetMismatch` if the upload is elsewhere, `UploadLocked` while another request
    /// writes to it, `BeyondLength` if the stream goes past its end (the bytes before
    /// that are kept), and the stream's own failure once its bytes are saved.
    pub async fn append_to_resumable_upload<S, E>(
        &self,
        post_id: PostId,
        upload_id: AttachmentId,
        offset: u64,
        stream: S,
    ) -> Result<ResumableUpload, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let (document, state, lease) = match self.take_lease(post_id, upload_id, offset).await? {
            Leased::Writable(leased, lease) => {
                let (document, state) = *leased;
                (document, state, lease)
            }
            Leased::Complete(upload) => return Ok(upload),
        };
        let mut writer = PartWriter::new(self.clone(), &document, state, lease);
        if let Err(error) = writer.load_tail().await {
            writer.release().await;
            return Err(error);
        }
        let received = writer.receive(stream).await;
        if let Err(error @ StorageError::UnsupportedType { .. }) = received {
            writer.abort_parts();
            return self.finished(&mut writer, &document, Err(error)).await;
        }
        let flushed = writer.flush_parts().await;
        // Every byte is here (even if the client then failed): finish the upload.
        if flushed.is_ok() && writer.is_complete() {
            let verified = match writer.assemble().await {
                Ok(()) => writer.verify(&document).await,
                Err(error) => Err(error),
            };
            return self.finished(&mut writer, &document, verified).await;
        }
        let outcome = match flushed {
            Err(error) => Err(error),
            Ok(()) => writer.save_tail().await.and(received),
        };
        writer.release().await;
        let offset = writer.durable;
        outcome.map(|()| ResumableUpload {
            offset,
            ..view(&document)
        })
    }

    /// The answer once an upload's object is assembled and verified (or not): ready, its
    /// tail is deleted; of a type not allowed, or bytes that cannot make the file, the
    /// upload is ended; else the lease is
    /// given back for the next request to finish it.
    async fn finished(
        &self,
        writer: &mut PartWriter,
        document: &AttachmentDocument,
        verified: Result<Attachment, StorageError>,
    ) -> Result<ResumableUpload, StorageError> {
        match verified {
            Ok(attachment) => {
                writer.delete_tail().await;
                Ok(ResumableUpload {
                    offset: writer.length,
                    attachment: Some(attachment),
                    ..view(document)
                })
            }
            // Bytes that can never make the file: the upload ends.
            Err(
                error @ (StorageError::UnsupportedType { .. }
                | StorageError::UploadMismatch(_)
                | StorageError::ImageRefused(_)
                | StorageError::Infected { .. }),
            ) => {
                self.terminate_resumable_upload(
                    PostId(document.post_id),
                    AttachmentId(document.id),
                )
                .await?;
                Err(error)
            }
            Err(error) => {
                writer.release().await;
                Err(error)
            }
        }
    }

    /// Ends a resumable upload and removes what it stored; `NotFound` if there is none
    /// (a completed upload is an attachment, deleted as one).
    pub async fn terminate_resumable_upload(
        &self,
        post_id: PostId,
        upload_id: AttachmentId,
    ) -> Result<(), StorageError> {
        self.end_pending_upload(
            post_id,
            upload_id,
            doc! { "resumable": { "$exists": true } },
        )
        .await
    }

    /// The upload's record, pending or ready; `UploadExpired` past its expiry.
    async fn resumable_document(
        &self,
        post_id: PostId,
        upload_id: AttachmentId,
    ) -> Result<AttachmentDocument, StorageError> {
        let found = self
            .attachments()
            .find_one(doc! {
                "_id": upload_id.0,
                "post_id": post_id.0,
                "resumable": { "$exists": true },
                "status": { "$in": [AttachmentStatus::Pending.as_str(), AttachmentStatus::Ready.as_str()] },
            })
            .await?;
        let Some(document) = found else {
            return Err(self.missing_upload(post_id.0, upload_id.0).await);
        };
        let expired = document.status == AttachmentStatus::Pending
            && document
                .resumable
                .as_ref()
                .is_some_and(|state| state.expires_at.to_system_time() <= SystemTime::now());
        if expired {
            return Err(StorageError::UploadExpired);
        }
        Ok(document)
    }

    /// Takes the lease of an upload standing at `offset`, or says why not.
    async fn take_lease(
        &self,
        post_id: PostId,
        upload_id: AttachmentId,
        offset: u64,
    ) -> Result<Leased, StorageError> {
        let lease = ObjectId::new().to_hex();
        let at = now();
        let taken = self
            .attachments()
            .find_one_and_update(
                doc! {
                    "_id": upload_id.0,
                    "post_id": post_id.0,
                    "status": AttachmentStatus::Pending.as_str(),
                    "resumable.offset": i64::try_from(offset).unwrap_or(i64::MAX),
                    "resumable.expires_at": { "$gt": at },
                    // No lease, or one that ran out.
                    "resumable.lease_until": { "$not": { "$gte": at } },
                },
                doc! { "$set": {
                    "resumable.lease": &lease,
                    "resumable.lease_until": lease_deadline(),
                } },
            )
            .return_document(ReturnDocument::After)
            .await?;
        if let Some(document) = taken
            && let Some(state) = document.resumable.clone()
        {
            return Ok(Leased::Writable(Box::new((document, state)), lease));
        }
        // Why not: each answer from the record as it is now.
        let document = self.resumable_document(post_id, upload_id).await?;
        let upload = view(&document);
        if upload.offset != offset {
            return Err(StorageError::OffsetMismatch {
                offset: upload.offset,
            });
        }
        if upload.attachment.is_some() {
            return Ok(Leased::Complete(upload));
        }
        Err(StorageError::UploadLocked)
    }
}

/// The outcome of asking for an upload's lease.
enum Leased {
    /// The lease is ours: the record, its state, and the lease's token.
    Writable(Box<(AttachmentDocument, ResumableState)>, String),
    /// The upload is already complete at that offset.
    Complete(ResumableUpload),
}

/// When a lease taken or renewed now runs out.
pub(super) fn lease_deadline() -> DateTime {
    DateTime::from_system_time(SystemTime::now() + LEASE)
}

/// The client's view of a record.
fn view(document: &AttachmentDocument) -> ResumableUpload {
    let state = document.resumable.as_ref();
    let length = state
        .map(|state| u64::try_from(state.length).unwrap_or_default())
        .unwrap_or_default();
    let ready = document.status == AttachmentStatus::Ready;
    ResumableUpload {
        id: AttachmentId(document.id),
        post_id: PostId(document.post_id),
        length,
        offset: if ready {
            length
        } else {
            state
                .map(|state| u64::try_from(state.offset).unwrap_or_default())
                .unwrap_or_default()
        },
        metadata: state
            .map(|state| state.metadata.clone())
            .unwrap_or_default(),
        expires_at: state
            .map(|state| state.expires_at.to_system_time())
            .unwrap_or(SystemTime::UNIX_EPOCH),
        attachment: ready.then(|| document.clone().into()),
    }
}
