//! The end of a resumable upload: the last bytes stored, the object assembled by S3 and
//! verified, the tail deleted.

use bytes::Bytes;
use mongodb::bson::doc;

use crate::error::{Entity, StorageError};
use crate::model::Attachment;
use crate::mongo::documents::AttachmentDocument;
use crate::processing::Upload;
use crate::resumable::OCTET_STREAM;
use crate::s3::{ObjectStoreError, UploadedPart};

use super::PartWriter;

impl PartWriter {
    /// Stores the last bytes and has S3 assemble the object.
    pub(in crate::resumable) async fn assemble(&mut self) -> Result<(), StorageError> {
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
    pub(in crate::resumable) async fn delete_tail(&self) {
        self.delete_object(&self.tail_key).await;
        if self.tail_key != self.shared_tail_key {
            self.delete_object(&self.shared_tail_key).await;
        }
    }

    /// Sends the last part and completes the multipart upload. If that fails because an
    /// earlier completion went through (a crash, or MongoDB failing, before the record
    /// turned ready), the object is already whole: that counts as done.
    pub(in crate::resumable) async fn complete_parts(
        &mut self,
        upload_id: &str,
        last: Bytes,
    ) -> Result<(), StorageError> {
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
        if let ObjectStoreError::PartsChanged { .. } = error {
            return Err(StorageError::UploadMismatch(
                "a part of the upload was sent again with other bytes (by a request that had \
                 lost the upload's lease); the upload is ended, start it again"
                    .into(),
            ));
        }
        match objects.head(&self.key).await {
            Ok(info) if info.size == self.length => Ok(()),
            // The multipart upload is gone and no object was made of it: aborted, as the
            // reaper does to expired uploads.
            _ if matches!(error, ObjectStoreError::NotFound) => Err(StorageError::UploadExpired),
            _ => Err(error.into()),
        }
    }

    /// Verifies the stored object as every upload is, then turns the record ready. An
    /// upload that this request sent whole was digested as its bytes passed; one sent over
    /// several requests is read back.
    pub(in crate::resumable) async fn verify(
        &mut self,
        document: &AttachmentDocument,
    ) -> Result<Attachment, StorageError> {
        let storage = &self.storage;
        let declared = self.declared_type.as_deref().unwrap_or(OCTET_STREAM);
        let (stored, content_type) = match self.digest.take() {
            Some(digest) if digest.size() == self.length => digest.finish(declared),
            _ => storage.digest_object(&self.key, declared).await?,
        };
        if stored.size != self.length {
            return Err(StorageError::UploadMismatch(format!(
                "{} bytes were stored where {} were expected",
                stored.size, self.length
            )));
        }
        if !storage.policy.allows(&content_type) {
            return Err(StorageError::UnsupportedType { content_type });
        }
        let upload = Upload {
            post_id: document.post_id,
            id: document.id,
            filename: &document.filename,
        };
        let processed = storage
            .process(&self.key, upload, &content_type, stored)
            .await?;
        storage
            .mark_ready(document, processed, &content_type, Entity::Upload, doc! {})
            .await
    }
}
