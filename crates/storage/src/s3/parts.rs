//! The single steps of a multipart upload, for uploads whose parts arrive over several
//! requests (resumable uploads) and for the streamed upload in `upload`: create, send one
//! part, complete; and small whole objects written and read back in one call.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;

use super::{ByteRange, ObjectStore, ObjectStoreError};

/// A part stored by `UploadPart`: what `CompleteMultipartUpload` needs of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedPart {
    /// Its number, from 1.
    pub number: i32,
    /// The entity tag S3 gave it.
    pub etag: String,
}

impl ObjectStore {
    /// Starts a multipart upload at `key`; its upload id.
    pub async fn create_multipart_upload(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<String, ObjectStoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|error| self.classify(error))?;
        created
            .upload_id
            .ok_or_else(|| ObjectStoreError::Unavailable {
                detail: "CreateMultipartUpload answered without an upload id".into(),
            })
    }

    /// Stores part `number` of a multipart upload; `NotFound` if the upload is gone
    /// (completed or aborted). Sent with `UNSIGNED-PAYLOAD` (see `put_stream`).
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        bytes: Bytes,
    ) -> Result<UploadedPart, ObjectStoreError> {
        let output = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
            .body(ByteStream::from(bytes))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|error| self.classify_object(error))?;
        Ok(UploadedPart {
            number,
            etag: output.e_tag.unwrap_or_default(),
        })
    }

    /// [`ObjectStore::upload_part`], then the part's allocation back once S3 has it, when
    /// nothing else holds it any more: the caller fills the next part into it rather than
    /// into a new allocation whose pages fault in again.
    pub async fn upload_part_reclaiming(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        bytes: Bytes,
    ) -> Result<(UploadedPart, Option<BytesMut>), ObjectStoreError> {
        let uploaded = self
            .upload_part(key, upload_id, number, bytes.clone())
            .await?;
        Ok((uploaded, bytes.try_into_mut().ok()))
    }

    /// Completes a multipart upload from its parts in ascending order; `NotFound` if the
    /// upload is gone.
    pub async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
    ) -> Result<(), ObjectStoreError> {
        let parts = parts
            .iter()
            .map(|part| {
                CompletedPart::builder()
                    .part_number(part.number)
                    .e_tag(&part.etag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(drop)
            .map_err(|error| self.classify_object(error))
    }

    /// Stores `bytes`, held in memory, at `key` in one PutObject.
    pub async fn put_bytes(
        &self,
        key: &str,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<(), ObjectStoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(bytes.len()).unwrap_or(i64::MAX))
            .body(ByteStream::from(bytes))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map(drop)
            .map_err(|error| self.classify(error))
    }

    /// The first `length` bytes of the object at `key`, read into `into`.
    pub async fn read_prefix(
        &self,
        key: &str,
        length: u64,
        into: &mut BytesMut,
    ) -> Result<(), ObjectStoreError> {
        if length == 0 {
            return Ok(());
        }
        let mut body = self
            .get_stream(key, Some(ByteRange::Inclusive(0, length - 1)))
            .await?;
        let start = into.len();
        while let Some(chunk) = body.stream.try_next().await? {
            into.extend_from_slice(&chunk);
        }
        let read = (into.len() - start) as u64;
        if read != length {
            return Err(ObjectStoreError::Unavailable {
                detail: format!("`{key}` held {read} bytes where {length} were expected"),
            });
        }
        Ok(())
    }
}
