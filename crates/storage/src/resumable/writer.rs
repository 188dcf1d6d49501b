//! One request's writing into a resumable upload while it holds the lease: parts sent to
//! S3 as they fill (a bounded number in flight) and recorded as S3 confirms them, the tail
//! saved when the request ends, the upload assembled and verified at its last byte.

use std::fmt::Display;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};

use crate::content::{ContentDigest, SNIFF_BYTES, sniff};
use crate::error::StorageError;
use crate::mongo::documents::{
    AttachmentDocument, AttachmentStatus, PartRecord, ResumableState, now,
};
use crate::s3::PartPipeline;
use crate::store::Storage;

use super::{OCTET_STREAM, lease_deadline};

mod completion;

/// How often a request whose client is slow looks for parts S3 has finished.
const PART_CHECK: Duration = Duration::from_millis(250);

/// A request renews its lease once it is this old, also while it waits for the client
/// or for S3.
const RENEW_AFTER: Duration = Duration::from_secs(10);

/// One request's writing into a resumable upload, while it holds the lease.
pub(super) struct PartWriter {
    storage: Storage,
    id: ObjectId,
    key: String,
    /// The tail object the record names (read back by `load_tail`).
    tail_key: String,
    /// The tail object this request writes.
    own_tail_key: String,
    /// The tail object of older versions, which they read and write: kept a copy of the
    /// current tail while they may still serve the upload.
    shared_tail_key: String,
    lease: String,
    renewed: Instant,
    pub(super) length: u64,
    declared_type: Option<String>,
    multipart_id: Option<String>,
    parts: Vec<PartRecord>,
    /// Bytes stored durably (recorded parts, then the recorded tail).
    pub(super) durable: u64,
    /// Where the recorded parts end.
    recorded_end: u64,
    /// The recorded tail's length, read back by `load_tail`.
    tail: u64,
    /// Where `buffer` starts in the upload: the end of the parts sent so far.
    buffer_start: u64,
    buffer: BytesMut,
    /// The parts this request sends, once the multipart upload exists.
    pipeline: Option<PartPipeline>,
    /// Every byte of the upload, when this request started it: then the completed object
    /// need not be read back to be verified.
    digest: Option<ContentDigest>,
    sniffed: bool,
}

impl PartWriter {
    pub(super) fn new(
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
            tail_key: storage.objects.resumable_tail_key_of(
                post_id,
                document.id,
                state
                    .tail_lease
                    .as_deref()
                    .filter(|_| state.tail_at == Some(state.offset)),
            ),
            shared_tail_key: storage.objects.resumable_tail_key_for(post_id, document.id),
            own_tail_key: storage
                .objects
                .resumable_tail_key_of(post_id, document.id, Some(&lease)),
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
            pipeline: None,
            digest: (state.offset == 0).then(ContentDigest::default),
            sniffed: false,
        }
    }

    /// This writer's record, while it holds the lease and the upload is pending.
    pub(super) fn own_record(&self) -> Document {
        doc! {
            "_id": self.id,
            "status": AttachmentStatus::Pending.as_str(),
            "resumable.lease": &self.lease,
        }
    }

    /// Reads the tail of the previous request back, to go in front of this one's bytes.
    pub(super) async fn load_tail(&mut self) -> Result<(), StorageError> {
        self.buffer = BytesMut::with_capacity(self.next_part_capacity());
        Ok(self
            .storage
            .objects
            .read_prefix(&self.tail_key, self.tail, &mut self.buffer)
            .await?)
    }

    /// The buffer of the part that starts at `buffer_start`: the spare allocation of a part
    /// S3 has taken, else one of [`PartWriter::next_part_capacity`].
    pub(super) fn next_part_buffer(&mut self) -> BytesMut {
        let capacity = self.next_part_capacity();
        match self.pipeline.as_mut().and_then(PartPipeline::take_spare) {
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
    pub(super) fn next_part_capacity(&self) -> usize {
        let left =
            usize::try_from(self.length.saturating_sub(self.buffer_start)).unwrap_or(usize::MAX);
        self.storage.objects.part_size().min(left)
    }

    pub(super) fn end(&self) -> u64 {
        self.buffer_start + self.buffer.len() as u64
    }

    pub(super) fn is_complete(&self) -> bool {
        self.end() == self.length
    }

    /// Takes the stream's bytes into parts until it ends, fails or goes past the end.
    pub(super) async fn receive<S, E>(&mut self, mut stream: S) -> Result<(), StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let part_size = self.storage.objects.part_size();
        loop {
            // While the client is slow, parts S3 has finished are recorded (the offset
            // moves on) and the lease stays renewed.
            let wait = if self.parts_in_flight() == 0 {
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
            if let Some(digest) = self.digest.as_mut() {
                digest.update(&chunk);
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
    pub(super) async fn record_finished_parts(&mut self) -> Result<(), StorageError> {
        while self
            .pipeline
            .as_ref()
            .is_some_and(PartPipeline::oldest_is_answered)
        {
            self.record_oldest_part().await?;
        }
        Ok(())
    }

    /// Refuses a disallowed type as soon as the first bytes are here, rather than after
    /// gigabytes; the completed object is sniffed again.
    pub(super) fn check_type(&mut self) -> Result<(), StorageError> {
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

    /// Parts sent and not yet recorded.
    fn parts_in_flight(&self) -> usize {
        self.pipeline.as_ref().map_or(0, PartPipeline::len)
    }

    /// Sends a full part, first making room among the parts in flight.
    pub(super) async fn send_part(&mut self, part: Bytes) -> Result<(), StorageError> {
        self.start_pipeline().await?;
        while self.pipeline.as_mut().is_some_and(PartPipeline::is_full) {
            self.record_oldest_part().await?;
        }
        let number =
            i32::try_from(self.parts.len() + self.parts_in_flight() + 1).unwrap_or(i32::MAX);
        self.buffer_start += part.len() as u64;
        if let Some(pipeline) = self.pipeline.as_mut() {
            pipeline.send(number, part);
        }
        Ok(())
    }

    /// The parts' pipeline, into the multipart upload created and recorded with the first
    /// part.
    async fn start_pipeline(&mut self) -> Result<(), StorageError> {
        if self.pipeline.is_some() {
            return Ok(());
        }
        let id = match &self.multipart_id {
            Some(id) => id.clone(),
            None => {
                let content_type = self.declared_type.as_deref().unwrap_or(OCTET_STREAM);
                let id = self
                    .storage
                    .objects
                    .create_multipart_upload(&self.key, content_type)
                    .await?;
                self.write_record(doc! { "$set": { "resumable.multipart_id": &id } })
                    .await?;
                self.multipart_id = Some(id.clone());
                id
            }
        };
        self.pipeline = Some(PartPipeline::new(&self.storage.objects, &self.key, &id));
        Ok(())
    }

    /// Waits for the oldest part in flight and records it: the offset moves past it.
    pub(super) async fn record_oldest_part(&mut self) -> Result<(), StorageError> {
        let confirmed = loop {
            let Some(pipeline) = self.pipeline.as_mut() else {
                return Ok(());
            };
            let waited = tokio::time::timeout(RENEW_AFTER, pipeline.confirm_oldest()).await;
            match waited {
                Ok(confirmed) => break confirmed?,
                Err(_) => self.renew().await?,
            }
        };
        let Some(confirmed) = confirmed else {
            return Ok(());
        };
        let size = confirmed.size;
        let record = PartRecord {
            number: confirmed.part.number,
            etag: confirmed.part.etag,
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
    pub(super) async fn flush_parts(&mut self) -> Result<(), StorageError> {
        while self.parts_in_flight() > 0 {
            if let Err(error) = self.record_oldest_part().await {
                self.abort_parts();
                return Err(error);
            }
        }
        Ok(())
    }

    /// Stops the parts in flight; none of them is recorded.
    pub(super) fn abort_parts(&mut self) {
        if let Some(pipeline) = self.pipeline.as_mut() {
            pipeline.abort();
        }
    }

    /// Keeps the bytes after the last part for the next request: written whole to the
    /// tail object, then recorded. Whatever happens between the two, the record's tail
    /// length names bytes the object starts with.
    pub(super) async fn save_tail(&mut self) -> Result<(), StorageError> {
        let offset = self.end();
        if offset <= self.durable {
            return Ok(());
        }
        let tail = std::mem::take(&mut self.buffer).freeze();
        let length = tail.len() as u64;
        // This request's own object: if its lease has lapsed, the record write below
        // fails and the tail the record names stays as it was.
        self.storage
            .objects
            .put_bytes(&self.own_tail_key, OCTET_STREAM, tail)
            .await?;
        let recorded = self
            .write_record(doc! { "$set": {
                "resumable.offset": i64::try_from(offset).unwrap_or(i64::MAX),
                "resumable.tail": i64::try_from(length).unwrap_or(i64::MAX),
                "resumable.tail_lease": &self.lease,
                "resumable.tail_at": i64::try_from(offset).unwrap_or(i64::MAX),
            } })
            .await;
        if let Err(error) = recorded {
            self.delete_object(&self.own_tail_key.clone()).await;
            return Err(error);
        }
        self.durable = offset;
        // For an older version serving the next request during a rolling deploy.
        if let Err(error) = self
            .storage
            .objects
            .copy(&self.own_tail_key, &self.shared_tail_key)
            .await
        {
            tracing::warn!(key = %self.shared_tail_key, %error, "could not copy a tail where an older version reads it");
        }
        if self.tail_key != self.own_tail_key {
            let previous = std::mem::replace(&mut self.tail_key, self.own_tail_key.clone());
            if previous != self.shared_tail_key {
                self.delete_object(&previous).await;
            }
        }
        Ok(())
    }

    /// Deletes an object the upload no longer needs; the reaper sweeps it if this fails.
    async fn delete_object(&self, key: &str) {
        if let Err(error) = self.storage.objects.delete(key).await {
            tracing::warn!(%key, %error, "could not delete an upload's old tail; the reaper will");
        }
    }

    /// Extends the lease; fails if it was lost (the upload was terminated or expired, or
    /// the lease ran out and another request took it).
    pub(super) async fn renew(&mut self) -> Result<(), StorageError> {
        self.write_record(doc! { "$set": {} }).await
    }

    /// Updates this writer's record with `update`, renewing the lease.
    pub(super) async fn write_record(&mut self, mut update: Document) -> Result<(), StorageError> {
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
    pub(super) async fn release(&self) {
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
