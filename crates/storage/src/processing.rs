//! The processing stage of the attachment lifecycle: after an attachment's bytes are
//! stored and verified, before it becomes ready, on every way in. The bytes are scanned
//! for malware (`scanning`, when configured); then an image (JPEG, PNG, WebP, GIF) is read
//! back, refused if it is over the `media.*` limits or does not decode, stored again
//! without its metadata (`media.strip_metadata`), and described (displayed size and
//! blurhash), the memory its decoding needs taken from the upload memory while it is held.
//! Other types pass as they are.

use std::time::Duration;

use bytes::BytesMut;
use media::Format;
use sha2::{Digest, Sha256};

use mongodb::bson::doc;
use mongodb::bson::oid::ObjectId;

use crate::error::StorageError;
use crate::events::EventKind;
use crate::memory::MemoryHold;
use crate::model::ImageInfo;
use crate::s3::StoredObject;
use crate::store::Storage;

/// The upload whose bytes are processed, as a refusal's event names it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Upload<'a> {
    pub(crate) post_id: ObjectId,
    pub(crate) id: ObjectId,
    pub(crate) filename: &'a str,
}

/// What the processing stage made of stored bytes.
#[derive(Debug)]
pub(crate) struct Processed {
    /// What is stored now.
    pub(crate) stored: StoredObject,
    /// The image, if it is one.
    pub(crate) image: Option<ImageInfo>,
}

impl Storage {
    /// Records that the scanner refused an upload (`rejections`, where its id then answers
    /// with the signature) and sends `attachment.rejected`. The upload is removed whatever
    /// happens here, so a failure to record is only logged.
    async fn record_rejection(
        &self,
        upload: Upload<'_>,
        content_type: &str,
        stored: &StoredObject,
        signature: &str,
    ) {
        let data = doc! {
            "id": upload.id,
            "post_id": upload.post_id,
            "filename": upload.filename,
            "content_type": content_type,
            "size": i64::try_from(stored.size).unwrap_or(i64::MAX),
            "sha256": hex::encode(stored.sha256),
            "reason": "malware",
            "signature": signature,
        };
        let recorded = async {
            self.remember_rejection(upload.post_id, upload.id, signature)
                .await?;
            self.record_event(upload.post_id, EventKind::AttachmentRejected, data)
                .await
        };
        if let Err(error) = recorded.await {
            tracing::warn!(attachment_id = %upload.id, %error, "could not record the rejection");
        }
    }

    /// Takes the memory an image's decoding needs from the upload memory, waiting up to
    /// `media.wait_secs` for it: `AtCapacity` if it stays taken, `ImageRefused` if it is
    /// more than all of it.
    async fn take_decoding_memory(&self, bytes: u64) -> Result<MemoryHold, StorageError> {
        let memory = self.objects.upload_memory();
        if bytes > memory.total_bytes() {
            return Err(StorageError::ImageRefused(format!(
                "decoding the image needs {bytes} bytes, over admission.upload_memory_bytes ({})",
                memory.total_bytes()
            )));
        }
        memory
            .take_within(bytes, Duration::from_secs(self.media.wait_secs))
            .await
            .ok_or(StorageError::AtCapacity)
    }

    /// Runs the processing stage on the `stored` bytes of type `content_type` at `key`,
    /// which no reader sees yet. `Infected` if the scan finds malware, `ImageRefused` if an
    /// image is over the limits or does not decode; the caller removes what was stored.
    pub(crate) async fn process(
        &self,
        key: &str,
        upload: Upload<'_>,
        content_type: &str,
        stored: StoredObject,
    ) -> Result<Processed, StorageError> {
        if let Err(refusal) = self.scan(key).await {
            if let StorageError::Infected { signature } = &refusal {
                self.record_rejection(upload, content_type, &stored, signature)
                    .await;
            }
            return Err(refusal);
        }
        let Some(format) = Format::of(content_type) else {
            return Ok(Processed {
                stored,
                image: None,
            });
        };
        let media = &self.media;
        if stored.size > media.max_image_bytes.get() {
            return Err(StorageError::ImageRefused(format!(
                "the image is {} bytes, over media.max_image_bytes ({})",
                stored.size, media.max_image_bytes
            )));
        }
        // The file and its pixels are held in memory only while this turn is held.
        let _turn = self
            .processing
            .acquire()
            .await
            .map_err(|_| StorageError::ImageRefused("processing has stopped".into()))?;
        let mut bytes = BytesMut::new();
        self.objects
            .read_prefix(key, stored.size, &mut bytes)
            .await?;
        let (limits, strip) = (media.limits(), media.strip_metadata);
        let bytes = bytes.freeze();
        let decoding = media::decoding_bytes(&bytes, format, &limits)
            .map_err(|error| StorageError::ImageRefused(error.to_string()))?;
        let _pixels = self.take_decoding_memory(decoding).await?;
        let processed =
            tokio::task::spawn_blocking(move || media::process(bytes, format, &limits, strip))
                .await
                .map_err(|error| StorageError::ImageRefused(format!("processing failed: {error}")))?
                .map_err(|error| StorageError::ImageRefused(error.to_string()))?;
        let stored = if processed.changed {
            let stored = StoredObject {
                size: processed.bytes.len() as u64,
                sha256: Sha256::digest(&processed.bytes).into(),
            };
            self.objects
                .put_bytes(key, content_type, processed.bytes)
                .await?;
            stored
        } else {
            stored
        };
        Ok(Processed {
            stored,
            image: Some(ImageInfo {
                width: processed.image.width,
                height: processed.image.height,
                blurhash: processed.image.blurhash,
            }),
        })
    }
}
