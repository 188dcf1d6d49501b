//! Multipart uploads that were started and never completed: listed and aborted by the
//! reaper (a killed process leaves them behind; S3 bills their parts).

use std::time::SystemTime;

use super::{ObjectStore, ObjectStoreError};

/// A multipart upload that was started and never completed.
#[derive(Clone, Debug)]
pub struct IncompleteUpload {
    /// Object key.
    pub key: String,
    /// S3's upload id.
    pub upload_id: String,
    /// When it was started.
    pub initiated: Option<SystemTime>,
}

impl ObjectStore {
    /// Multipart uploads under the key prefix started before `older_than`.
    pub async fn incomplete_uploads(
        &self,
        older_than: SystemTime,
    ) -> Result<Vec<IncompleteUpload>, ObjectStoreError> {
        let mut found = Vec::new();
        let mut key_marker = None;
        let mut upload_id_marker = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(format!("{}/", self.key_prefix))
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .send()
                .await
                .map_err(|error| self.classify(error))?;
            for upload in page.uploads.unwrap_or_default() {
                let initiated = upload
                    .initiated
                    .and_then(|at| SystemTime::try_from(at).ok());
                if initiated.is_none_or(|at| at < older_than)
                    && let (Some(key), Some(upload_id)) = (upload.key, upload.upload_id)
                {
                    found.push(IncompleteUpload {
                        key,
                        upload_id,
                        initiated,
                    });
                }
            }
            if page.is_truncated != Some(true) {
                return Ok(found);
            }
            key_marker = page.next_key_marker;
            upload_id_marker = page.next_upload_id_marker;
            if key_marker.is_none() && upload_id_marker.is_none() {
                return Ok(found);
            }
        }
    }

    /// Aborts one multipart upload; an upload that no longer exists counts as aborted.
    pub async fn abort_upload(&self, upload: &IncompleteUpload) -> Result<(), ObjectStoreError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => match self.classify_object(error) {
                ObjectStoreError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }
}
