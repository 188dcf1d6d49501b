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

use std::collections::VecDeque;
use std::fmt::Display;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::ReturnDocument;
use tokio::task::JoinHandle;

use crate::content::{SNIFF_BYTES, essence, sniff};
use crate::error::{Entity, StorageError};
use crate::model::{Attachment, AttachmentId, PostId};
use crate::mongo::documents::{
    AttachmentDocument, AttachmentStatus, PartRecord, ResumableState, now,
};
use crate::s3::{ObjectStoreError, UploadedPart};
use crate::store::Storage;

/// How long a request holds an upload without renewing its lease. A process killed
/// mid-request keeps the upload from other requests (423) for at most this long, which
/// stock tus clients wait out with their retries.
const LEASE: Duration = Duration::from_secs(30);

/// How often a request whose client is slow looks for parts S3 has finished.
const PART_CHECK: Duration = Duration::from_millis(250);

/// A request renews its lease once it is this old, also while it waits for the client
/// or for S3.
const RENEW_AFTER: Duration = Duration::from_secs(10);

/// The type S3 records for bytes whose type is not declared (the verified type is kept
/// in MongoDB).
const OCTET_STREAM: &str = "application/octet-stream";

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
        let reservation = self.reserve(post_id, new.owner, self.resumable_ttl).await?;
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
    /// tail is deleted; of a type not allowed, the upload is ended; else the lease is
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
            Err(error @ StorageError::UnsupportedType { .. }) => {
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
        let document = self
            .attachments()
            .find_one(doc! {
                "_id": upload_id.0,
                "post_id": post_id.0,
                "resumable": { "$exists": true },
                "status": { "$in": [AttachmentStatus::Pending.as_str(), AttachmentStatus::Ready.as_str()] },
            })
            .await?
            .ok_or(StorageError::NotFound(Entity::Upload))?;
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
                    "$or": [
                        { "resumable.lease_until": { "$exists": false } },
                        { "resumable.lease_until": { "$lt": at } },
                    ],
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
fn lease_deadline() -> DateTime {
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

/// A part's upload: S3's record of it, and the part's bytes to fill again.
type PartUpload = JoinHandle<Result<(UploadedPart, Option<BytesMut>), ObjectStoreError>>;

/// One request's writing into a resumable upload, while it holds the lease.
struct PartWriter {
    storage: Storage,
    id: ObjectId,
    key: String,
    tail_key: String,
    lease: String,
    renewed: Instant,
    length: u64,
    declared_type: Option<String>,
    multipart_id: Option<String>,
    parts: Vec<PartRecord>,
    /// Bytes stored durably (recorded parts, then the recorded tail).
    durable: u64,
    /// Where the recorded parts end.
    recorded_end: u64,
    /// The recorded tail's length, read back by `load_tail`.
    tail: u64,
    /// Where `buffer` starts in the upload: the end of the parts sent so far.
    buffer_start: u64,
    buffer: BytesMut,
    /// Parts being uploaded, oldest first, with their sizes.
    in_flight: VecDeque<(PartUpload, u64)>,
    /// The allocation of a part S3 has taken, when nothing else holds it any more: the
    /// next part is filled into it rather than into pages faulted in anew.
    spare: Option<BytesMut>,
    sniffed: bool,
}

impl PartWriter {
    fn new(
        storage: Storage,
        document: &AttachmentDocument,
        state: ResumableState,
        lease: String,
    ) -> Self {
        let post_id = document.post_id;
        let parts_end: u64 = state
            .parts
            .iter()
            .map(|part| u64::try_from(part.size).unwrap_or_default())
            .sum();
        Self {
            key: storage.objects.key_for(post_id, document.id),
            tail_key: storage.objects.resumable_tail_key_for(post_id, document.id),
            storage,
            id: document.id,
            lease,
            renewed: Instant::now(),
            length: u64::try_from(state.length).unwrap_or_default(),
            declared_type: state.declared_content_type,
            multipart_id: state.multipart_id,
            parts: state.parts,
            durable: u64::try_from(state.offset).unwrap_or_default(),
            tail: u64::try_from(state.tail).unwrap_or_default(),
            recorded_end: parts_end,
            buffer_start: parts_end,
            buffer: BytesMut::new(),
            in_flight: VecDeque::new(),
            spare: None,
            sniffed: false,
        }
    }

    /// This writer's record, while it holds the lease and the upload is pending.
    fn own_record(&self) -> Document {
        doc! {
            "_id": self.id,
            "status": AttachmentStatus::Pending.as_str(),
            "resumable.lease": &self.lease,
        }
    }

    /// Reads the tail of the previous request back, to go in front of this one's bytes.
    async fn load_tail(&mut self) -> Result<(), StorageError> {
        self.buffer = BytesMut::with_capacity(self.next_part_capacity());
        Ok(self
            .storage
            .objects
            .read_prefix(&self.tail_key, self.tail, &mut self.buffer)
            .await?)
    }

    /// The buffer of the part that starts at `buffer_start`: the spare allocation of a part
    /// S3 has taken, else one of [`PartWriter::next_part_capacity`].
    fn next_part_buffer(&mut self) -> BytesMut {
        let capacity = self.next_part_capacity();
        match self.spare.take() {
            Some(mut spare) if spare.capacity() >= capacity => {
                spare.clear();
                spare
            }
            _ => BytesMut::with_capacity(capacity),
        }
    }

    /// The size of the part that starts at `buffer_start`: a whole part, or what is left.
    /// Each part is one allocation of at least this size, freed once S3 has it, or when
    /// the request ends if the next part is filled into it.
    fn next_part_capacity(&self) -> usize {
        let left =
            usize::try_from(self.length.saturating_sub(self.buffer_start)).unwrap_or(usize::MAX);
        self.storage.objects.part_size().min(left)
    }

    fn end(&self) -> u64 {
        self.buffer_start + self.buffer.len() as u64
    }

    fn is_complete(&self) -> bool {
        self.end() == self.length
    }

    /// Takes the stream's bytes into parts until it ends, fails or goes past the end.
    async fn receive<S, E>(&mut self, mut stream: S) -> Result<(), StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let part_size = self.storage.objects.part_size();
        loop {
            // While the client is slow, parts S3 has finished are recorded (the offset
            // moves on) and the lease stays renewed.
            let wait = if self.in_flight.is_empty() {
                RENEW_AFTER
            } else {
                PART_CHECK
            };
            let Ok(next) = tokio::time::timeout(wait, stream.next()).await else {
                self.record_finished_parts().await?;
                if self.renewed.elapsed() > RENEW_AFTER {
                    self.renew().await?;
                }
                continue;
            };
            let Some(chunk) = next else {
                return Ok(());
            };
            let chunk = chunk.map_err(|error| StorageError::Client(error.to_string()))?;
            if self.end() + chunk.len() as u64 > self.length {
                return Err(StorageError::BeyondLength {
                    length: self.length,
                });
            }
            let mut data = &chunk[..];
            while !data.is_empty() {
                let take = data.len().min(part_size - self.buffer.len());
                self.buffer.extend_from_slice(&data[..take]);
                data = &data[take..];
                self.check_type()?;
                if self.buffer.len() == part_size {
                    let full = std::mem::take(&mut self.buffer).freeze();
                    self.send_part(full).await?;
                    self.buffer = self.next_part_buffer();
                }
            }
            self.record_finished_parts().await?;
            if self.renewed.elapsed() > RENEW_AFTER {
                self.renew().await?;
            }
        }
    }

    /// Records the parts in flight that S3 has finished, oldest first.
    async fn record_finished_parts(&mut self) -> Result<(), StorageError> {
        while self
            .in_flight
            .front()
            .is_some_and(|(task, _)| task.is_finished())
        {
            self.record_oldest_part().await?;
        }
        Ok(())
    }

    /// Refuses a disallowed type as soon as the first bytes are here, rather than after
    /// gigabytes; the completed object is sniffed again.
    fn check_type(&mut self) -> Result<(), StorageError> {
        if self.sniffed || self.buffer_start != 0 {
            return Ok(());
        }
        let whole = self.length <= SNIFF_BYTES as u64;
        if self.buffer.len() < SNIFF_BYTES && !(whole && self.is_complete()) {
            return Ok(());
        }
        self.sniffed = true;
        let head = &self.buffer[..self.buffer.len().min(SNIFF_BYTES)];
        let content_type = sniff(head, self.declared_type.as_deref(), whole);
        if self.storage.policy.allows(&content_type) {
            Ok(())
        } else {
            Err(StorageError::UnsupportedType { content_type })
        }
    }

    /// Sends a full part, first making room among the parts in flight.
    async fn send_part(&mut self, part: Bytes) -> Result<(), StorageError> {
        while self.in_flight.len() >= self.storage.objects.max_parts_in_flight() {
            self.record_oldest_part().await?;
        }
        let upload_id = self.multipart_upload().await?;
        let number = i32::try_from(self.parts.len() + self.in_flight.len() + 1).unwrap_or(i32::MAX);
        let size = part.len() as u64;
        self.buffer_start += size;
        let objects = self.storage.objects.clone();
        let key = self.key.clone();
        let task = tokio::spawn(async move {
            objects
                .upload_part_reclaiming(&key, &upload_id, number, part)
                .await
        });
        self.in_flight.push_back((task, size));
        Ok(())
    }

    /// The multipart upload's id, created and recorded with the first part.
    async fn multipart_upload(&mut self) -> Result<String, StorageError> {
        if let Some(id) = &self.multipart_id {
            return Ok(id.clone());
        }
        let content_type = self.declared_type.as_deref().unwrap_or(OCTET_STREAM);
        let id = self
            .storage
            .objects
            .create_multipart_upload(&self.key, content_type)
            .await?;
        self.write_record(doc! { "$set": { "resumable.multipart_id": &id } })
            .await?;
        self.multipart_id = Some(id.clone());
        Ok(id)
    }

    /// Waits for the oldest part in flight and records it: the offset moves past it.
    async fn record_oldest_part(&mut self) -> Result<(), StorageError> {
        let Some((mut task, size)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let joined = loop {
            match tokio::time::timeout(RENEW_AFTER, &mut task).await {
                Ok(joined) => break joined,
                Err(_) => self.renew().await?,
            }
        };
        let part = match joined {
            Ok(result) => {
                let (part, reclaimed) = result?;
                self.spare = reclaimed;
                part
            }
            Err(join_error) => {
                return Err(StorageError::Objects(ObjectStoreError::Unavailable {
                    detail: format!("part upload task failed: {join_error}"),
                }));
            }
        };
        let record = PartRecord {
            number: part.number,
            etag: part.etag,
            size: i64::try_from(size).unwrap_or(i64::MAX),
        };
        let parts_end = self.recorded_end + size;
        self.write_record(doc! {
            "$push": { "resumable.parts": {
                "number": record.number,
                "etag": &record.etag,
                "size": record.size,
            } },
            "$set": {
                "resumable.offset": i64::try_from(parts_end).unwrap_or(i64::MAX),
                "resumable.tail": 0_i64,
            },
        })
        .await?;
        self.parts.push(record);
        self.recorded_end = parts_end;
        self.durable = parts_end;
        Ok(())
    }

    /// Waits for every part in flight, recording each.
    async fn flush_parts(&mut self) -> Result<(), StorageError> {
        while !self.in_flight.is_empty() {
            if let Err(error) = self.record_oldest_part().await {
                self.abort_parts();
                return Err(error);
            }
        }
        Ok(())
    }

    /// Stops the parts in flight; none of them is recorded.
    fn abort_parts(&mut self) {
        for (task, _) in self.in_flight.drain(..) {
            task.abort();
        }
    }

    /// Keeps the bytes after the last part for the next request: written whole to the
    /// tail object, then recorded. Whatever happens between the two, the record's tail
    /// length names bytes the object starts with.
    async fn save_tail(&mut self) -> Result<(), StorageError> {
        let offset = self.end();
        if offset <= self.durable {
            return Ok(());
        }
        let tail = std::mem::take(&mut self.buffer).freeze();
        let length = tail.len() as u64;
        self.storage
            .objects
            .put_bytes(&self.tail_key, OCTET_STREAM, tail)
            .await?;
        self.write_record(doc! { "$set": {
            "resumable.offset": i64::try_from(offset).unwrap_or(i64::MAX),
            "resumable.tail": i64::try_from(length).unwrap_or(i64::MAX),
        } })
        .await?;
        self.durable = offset;
        Ok(())
    }

    /// Stores the last bytes and has S3 assemble the object.
    async fn assemble(&mut self) -> Result<(), StorageError> {
        let last = std::mem::take(&mut self.buffer).freeze();
        match self.multipart_id.clone() {
            None => {
                let content_type = self.declared_type.as_deref().unwrap_or(OCTET_STREAM);
                Ok(self
                    .storage
                    .objects
                    .put_bytes(&self.key, content_type, last)
                    .await?)
            }
            Some(upload_id) => self.complete_parts(&upload_id, last).await,
        }
    }

    /// Deletes the tail of a completed upload.
    async fn delete_tail(&self) {
        if let Err(error) = self.storage.objects.delete(&self.tail_key).await {
            tracing::warn!(key = %self.tail_key, %error, "could not delete a completed upload's tail; the reaper will");
        }
    }

    /// Sends the last part and completes the multipart upload. If that fails because an
    /// earlier completion went through (a crash, or MongoDB failing, before the record
    /// turned ready), the object is already whole: that counts as done.
    async fn complete_parts(&mut self, upload_id: &str, last: Bytes) -> Result<(), StorageError> {
        let objects = self.storage.objects.clone();
        let mut parts: Vec<UploadedPart> = self
            .parts
            .iter()
            .map(|part| UploadedPart {
                number: part.number,
                etag: part.etag.clone(),
            })
            .collect();
        let mut sent = Ok(());
        if !last.is_empty() || parts.is_empty() {
            let number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
            match objects
                .upload_part(&self.key, upload_id, number, last)
                .await
            {
                Ok(part) => parts.push(part),
                Err(error) => sent = Err(error),
            }
        }
        let completed = match sent {
            Ok(()) => {
                objects
                    .complete_multipart_upload(&self.key, upload_id, &parts)
                    .await
            }
            Err(error) => Err(error),
        };
        let Err(error) = completed else {
            return Ok(());
        };
        match objects.head(&self.key).await {
            Ok(info) if info.size == self.length => Ok(()),
            // The multipart upload is gone and no object was made of it: aborted, as the
            // reaper does to expired uploads.
            _ if matches!(error, ObjectStoreError::NotFound) => Err(StorageError::UploadExpired),
            _ => Err(error.into()),
        }
    }

    /// Verifies the stored object as every upload is, then turns the record ready.
    async fn verify(&self, document: &AttachmentDocument) -> Result<Attachment, StorageError> {
        let storage = &self.storage;
        let declared = self.declared_type.as_deref().unwrap_or(OCTET_STREAM);
        let (stored, content_type) = storage.digest_object(&self.key, declared).await?;
        if stored.size != self.length {
            return Err(StorageError::UploadMismatch(format!(
                "{} bytes were stored where {} were expected",
                stored.size, self.length
            )));
        }
        if !storage.policy.allows(&content_type) {
            return Err(StorageError::UnsupportedType { content_type });
        }
        storage
            .mark_ready(document, &stored, &content_type, Entity::Upload, doc! {})
            .await
    }

    /// Extends the lease; fails if it was lost (the upload was terminated or expired, or
    /// the lease ran out and another request took it).
    async fn renew(&mut self) -> Result<(), StorageError> {
        self.write_record(doc! { "$set": {} }).await
    }

    /// Updates this writer's record with `update`, renewing the lease.
    async fn write_record(&mut self, mut update: Document) -> Result<(), StorageError> {
        let set = update
            .entry("$set".to_owned())
            .or_insert_with(|| Document::new().into());
        if let Some(set) = set.as_document_mut() {
            set.insert("resumable.lease_until", lease_deadline());
            set.insert("updated_at", now());
        }
        let written = self
            .storage
            .attachments()
            .update_one(self.own_record(), update)
            .await?;
        if written.matched_count == 0 {
            return Err(StorageError::UploadLocked);
        }
        self.renewed = Instant::now();
        Ok(())
    }

    /// Gives the lease back, so the next request need not wait for it to run out.
    async fn release(&self) {
        let released = self
            .storage
            .attachments()
            .update_one(
                self.own_record(),
                doc! { "$unset": { "resumable.lease": "", "resumable.lease_until": "" } },
            )
            .await;
        if let Err(error) = released {
            tracing::warn!(upload_id = %self.id, %error, "could not release an upload's lease; it runs out by itself");
        }
    }
}
