//! Variants: the sizes of an image that `media.variants` names, rendered on first request
//! (or at ready, `media.eager_variants`), stored in S3 below the image's key and recorded
//! on its attachment; later requests are served from S3.
//!
//! One render of a variant runs at a time on an instance (single flight: the others wait
//! for it, then read what it recorded), at most `media.max_concurrent_renders` renders at
//! once (a request waits `media.wait_secs` for a turn, then `RenderBusy`). A variant
//! is recorded only while its attachment is ready, so one rendered while the attachment is
//! deleted is deleted again; a crash between the object and the record leaves an object
//! that the reaper removes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use media::Format;
use mongodb::bson::{self, Document, doc};
use sha2::{Digest, Sha256};

use crate::error::{Entity, StorageError};
use crate::model::{Attachment, AttachmentId, PostId, Variant};
use crate::mongo::documents::{ATTACHMENTS, AttachmentStatus, VariantRecord, now};
use crate::s3::{ByteRange, ObjectBody, PresignedUrl};
use crate::settings::VariantSettings;
use crate::store::Storage;

impl Storage {
    /// The variant `name` of a ready image attachment, rendered first if it has not been
    /// (or was rendered to another definition). `NotFound(Variant)` for a name
    /// `media.variants` does not hold, `NotAnImage` for an attachment that is not one.
    pub async fn variant(
        &self,
        post_id: PostId,
        attachment_id: AttachmentId,
        name: &str,
    ) -> Result<Variant, StorageError> {
        let settings = self
            .media
            .variants
            .get(name)
            .ok_or(StorageError::NotFound(Entity::Variant))?;
        let attachment = self.attachment(post_id, attachment_id).await?;
        if attachment.image.is_none() {
            return Err(StorageError::NotAnImage);
        }
        if let Some(variant) = self.recorded_variant(&attachment, name, settings).await? {
            return Ok(variant);
        }
        let flight = self.render_flights.lock_for(attachment.id.0, name);
        let _flight = flight.lock().await;
        // A render that held the lock before may have recorded it.
        if let Some(variant) = self.recorded_variant(&attachment, name, settings).await? {
            return Ok(variant);
        }
        self.render_variant(&attachment, name, settings).await
    }

    /// Streams a variant's bytes, or a range of them.
    pub async fn open_variant(
        &self,
        variant: &Variant,
        range: Option<ByteRange>,
    ) -> Result<ObjectBody, StorageError> {
        Ok(self
            .objects
            .get_stream(&self.key_of(variant), range)
            .await?)
    }

    /// A presigned GET of a variant, served with `content_disposition` and its type.
    pub async fn presign_variant(
        &self,
        variant: &Variant,
        content_disposition: &str,
    ) -> Result<PresignedUrl, StorageError> {
        self.presign_object(
            &self.key_of(variant),
            content_disposition,
            &variant.content_type,
        )
        .await
    }

    /// Where `variant` is stored.
    fn key_of(&self, variant: &Variant) -> String {
        self.objects
            .variant_key_for(variant.post_id, variant.attachment_id, &variant.name)
    }

    /// Renders `media.eager_variants` of the images among `attachments` in the background.
    pub(crate) fn render_eagerly(&self, attachments: &[Attachment]) {
        if self.media.eager_variants.is_empty() {
            return;
        }
        for attachment in attachments.iter().filter(|found| found.image.is_some()) {
            let storage = self.clone();
            let (post_id, id) = (attachment.post_id, attachment.id);
            tokio::spawn(async move {
                for name in &storage.media.eager_variants {
                    if let Err(error) = storage.variant(post_id, id, name).await {
                        tracing::warn!(attachment_id = %id, variant = %name, %error, "eager render failed; it renders on first request");
                    }
                }
            });
        }
    }

    /// The variant as recorded, if it was rendered to the definition `settings` holds now.
    async fn recorded_variant(
        &self,
        attachment: &Attachment,
        name: &str,
        settings: &VariantSettings,
    ) -> Result<Option<Variant>, StorageError> {
        let field = format!("variants.{name}");
        let document = self
            .database
            .collection::<Document>(ATTACHMENTS)
            .find_one(doc! {
                "_id": attachment.id.0,
                "status": AttachmentStatus::Ready.as_str(),
            })
            .projection(doc! { &field: 1 })
            .await?
            .ok_or(StorageError::NotFound(Entity::Attachment))?;
        let Ok(recorded) = document
            .get_document("variants")
            .and_then(|variants| variants.get_document(name))
        else {
            return Ok(None);
        };
        let record: VariantRecord =
            bson::from_document(recorded.clone()).map_err(mongodb::error::Error::from)?;
        Ok((record.signature == settings.signature())
            .then(|| variant_of(attachment, name, &record)))
    }

    /// Renders the variant `name` of `attachment`, stores it, and records it while the
    /// attachment is ready; if it no longer is, the object is deleted again.
    async fn render_variant(
        &self,
        attachment: &Attachment,
        name: &str,
        settings: &VariantSettings,
    ) -> Result<Variant, StorageError> {
        let Some(format) = Format::of(&attachment.content_type) else {
            return Err(StorageError::NotAnImage);
        };
        let wait = Duration::from_secs(self.media.wait_secs);
        let _turn = tokio::time::timeout(wait, self.renders.acquire())
            .await
            .map_err(|_| StorageError::RenderBusy)?
            .map_err(|_| StorageError::RenderBusy)?;
        let key = self.objects.key_for(attachment.post_id, attachment.id);
        let mut original = BytesMut::new();
        self.objects
            .read_prefix(&key, attachment.size, &mut original)
            .await?;
        let (original, limits, spec) = (original.freeze(), self.media.limits(), settings.spec());
        let rendered =
            tokio::task::spawn_blocking(move || media::render(&original, format, &limits, &spec))
                .await
                .map_err(|error| StorageError::ImageRefused(format!("rendering failed: {error}")))?
                .map_err(|error| StorageError::ImageRefused(error.to_string()))?;
        let record = VariantRecord {
            signature: settings.signature(),
            content_type: settings.spec().encoding.content_type().to_owned(),
            size: i64::try_from(rendered.bytes.len()).unwrap_or(i64::MAX),
            sha256: hex::encode(Sha256::digest(&rendered.bytes)),
            width: rendered.width,
            height: rendered.height,
        };
        let variant_key = self
            .objects
            .variant_key_for(attachment.post_id, attachment.id, name);
        self.objects
            .put_bytes(&variant_key, &record.content_type, rendered.bytes)
            .await?;
        let recorded = self
            .attachments()
            .update_one(
                doc! { "_id": attachment.id.0, "status": AttachmentStatus::Ready.as_str() },
                doc! { "$set": {
                    format!("variants.{name}"): bson::to_bson(&record).map_err(mongodb::error::Error::from)?,
                    "updated_at": now(),
                } },
            )
            .await?;
        if recorded.matched_count == 0 {
            self.objects.delete(&variant_key).await?;
            return Err(StorageError::NotFound(Entity::Attachment));
        }
        self.variants_rendered.fetch_add(1, Ordering::Relaxed);
        Ok(variant_of(attachment, name, &record))
    }
}

/// The public form of a recorded variant.
fn variant_of(attachment: &Attachment, name: &str, record: &VariantRecord) -> Variant {
    Variant {
        name: name.to_owned(),
        attachment_id: attachment.id,
        post_id: attachment.post_id,
        content_type: record.content_type.clone(),
        size: u64::try_from(record.size).unwrap_or_default(),
        sha256: record.sha256.clone(),
        width: record.width,
        height: record.height,
    }
}
