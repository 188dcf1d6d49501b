//! Direct uploads: the client PUTs the bytes to a presigned URL, then the service verifies
//! the object (size, sniffed type, SHA-256) before the attachment turns ready.

use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, doc};

use crate::content::{ContentDigest, essence};
use crate::error::{Entity, StorageError};
use crate::model::{Attachment, AttachmentId, PostId};
use crate::mongo::documents::{AttachmentDocument, AttachmentStatus, DirectUpload};
use crate::processing::Upload;
use crate::s3::{PresignedUrl, StoredObject};
use crate::store::Storage;

/// The field of a direct upload's record that names the completion working on it.
const COMPLETION_CLAIM: &str = "direct_upload.completion_claim";
/// Until when that completion may work on it.
const COMPLETION_CLAIMED_UNTIL: &str = "direct_upload.completion_claimed_until";
/// How long a completion's claim holds: longer than a completion takes (a copy and one
/// read of at most `uploads.max_file_bytes`), short enough that a client's retry after an
/// instance died goes through within minutes.
const COMPLETION_CLAIM_TTL: Duration = Duration::from_secs(300);

/// A direct upload handed to a client: where to PUT the bytes.
#[derive(Clone, Debug)]
pub struct DirectUploadTicket {
    /// The upload's id (also the attachment's id once complete).
    pub upload_id: AttachmentId,
    /// The presigned PUT.
    pub url: PresignedUrl,
}

impl Storage {
    /// Reserves a place on the post (whose author must be `author` when given), presigns
    /// the PUT and records the pending direct upload. The content type must be allowed and
    /// the size within the limit; both are verified again on completion, and so is the
    /// client's `sha256` of the bytes when it gives one (before any processing).
    pub async fn begin_direct_upload(
        &self,
        post_id: PostId,
        author: Option<&str>,
        filename: &str,
        content_type: &str,
        size: u64,
        sha256: Option<[u8; 32]>,
    ) -> Result<DirectUploadTicket, StorageError> {
        if size > self.max_file_bytes {
            return Err(StorageError::TooLarge {
                limit: self.max_file_bytes,
            });
        }
        let content_type = essence(content_type);
        if !self.policy.allows(&content_type) {
            return Err(StorageError::UnsupportedType { content_type });
        }
        let reservation = self
            .reserve(post_id, author, self.pending_ttl, Some(size))
            .await?;
        let key = self.objects.staging_key_for(post_id, reservation.id);
        let url = match self
            .objects
            .presign_put(&key, self.presign_ttl, &content_type, size)
            .await
        {
            Ok(url) => url,
            Err(error) => {
                reservation.discard().await;
                return Err(error.into());
            }
        };
        let upload_id = AttachmentId(reservation.id);
        let document = AttachmentDocument {
            direct_upload: Some(DirectUpload {
                declared_size: i64::try_from(size).unwrap_or(i64::MAX),
                declared_content_type: content_type.clone(),
                declared_sha256: sha256.map(hex::encode),
                expires_at: DateTime::from_system_time(SystemTime::now() + self.pending_ttl),
            }),
            ..Self::pending_document(&reservation, filename, content_type)
        };
        self.record_pending(reservation, &document).await?;
        Ok(DirectUploadTicket { upload_id, url })
    }

    /// Verifies a direct upload and makes it a ready attachment: the staged object is
    /// copied to the attachment's key, which no client can write, and verified there (the
    /// declared size, allowed bytes); so the verified bytes are the served ones. Completing
    /// twice returns the attachment. One completion runs at a time: it claims the record
    /// first, and another one meanwhile is refused as locked, so that a second PUT and a
    /// second completion cannot overwrite what the first one verified.
    pub async fn complete_direct_upload(
        &self,
        post_id: PostId,
        upload_id: AttachmentId,
    ) -> Result<Attachment, StorageError> {
        let found = self
            .attachments()
            .find_one(doc! { "_id": upload_id.0, "post_id": post_id.0 })
            .await?;
        let Some(document) = found else {
            return Err(self.missing_upload(post_id.0, upload_id.0).await);
        };
        let declared = match (&document.status, &document.direct_upload) {
            (AttachmentStatus::Ready, Some(_)) => return Ok(document.into()),
            (AttachmentStatus::Pending, Some(declared))
                if declared.expires_at.to_system_time() > SystemTime::now() =>
            {
                declared.clone()
            }
            _ => return Err(StorageError::NotFound(Entity::Upload)),
        };
        let claim = self.claim_completion(&document).await?;
        let completed = self.verify_and_publish(&document, &declared, claim).await;
        if completed.is_err() {
            // Whatever failed, a retry may start at once.
            self.attachments()
                .update_one(
                    doc! { "_id": document.id, COMPLETION_CLAIM: claim },
                    doc! { "$unset": { COMPLETION_CLAIM: "", COMPLETION_CLAIMED_UNTIL: "" } },
                )
                .await?;
        }
        completed
    }

    /// Claims a pending direct upload for one completion, until
    /// [`COMPLETION_CLAIM_TTL`] from now; an earlier claim that ran out (its instance
    /// died) is taken over.
    async fn claim_completion(
        &self,
        document: &AttachmentDocument,
    ) -> Result<ObjectId, StorageError> {
        let claim = ObjectId::new();
        let now = SystemTime::now();
        let claimed = self
            .attachments()
            .update_one(
                doc! {
                    "_id": document.id,
                    "status": AttachmentStatus::Pending.as_str(),
                    // Unclaimed, or claimed until before now.
                    COMPLETION_CLAIMED_UNTIL: { "$not": { "$gte": DateTime::from_system_time(now) } },
                },
                doc! { "$set": {
                    COMPLETION_CLAIM: claim,
                    COMPLETION_CLAIMED_UNTIL: DateTime::from_system_time(now + COMPLETION_CLAIM_TTL),
                } },
            )
            .await?;
        if claimed.matched_count == 1 {
            Ok(claim)
        } else {
            Err(StorageError::UploadLocked)
        }
    }

    /// Copies the staged object to the attachment's key, verifies it there and makes the
    /// attachment ready while `claim` holds.
    async fn verify_and_publish(
        &self,
        document: &AttachmentDocument,
        declared: &DirectUpload,
        claim: ObjectId,
    ) -> Result<Attachment, StorageError> {
        let post_id = PostId(document.post_id);
        self.active_post(post_id).await?;
        let staging = self.objects.staging_key_for(post_id, document.id.to_hex());
        let info = match self.objects.head(&staging).await {
            Ok(info) => info,
            Err(crate::ObjectStoreError::NotFound) => {
                return Err(StorageError::UploadMismatch(
                    "no object was uploaded to the presigned URL".into(),
                ));
            }
            Err(error) => return Err(error.into()),
        };
        let declared_size = u64::try_from(declared.declared_size).unwrap_or_default();
        if info.size != declared_size {
            self.objects.delete(&staging).await?;
            return Err(StorageError::UploadMismatch(format!(
                "{} bytes were uploaded but {declared_size} were declared",
                info.size
            )));
        }
        // The bytes are copied to a key no client can write, then verified there: what is
        // verified is exactly what will be served, whatever is PUT to the staging key later.
        // The staged object stays until the attachment is ready, so that a completion that
        // fails on the way (S3 or MongoDB unavailable) can be retried as it is.
        let key = self.objects.key_for(post_id, document.id.to_hex());
        self.objects.copy(&staging, &key).await?;
        let (stored, content_type) = self
            .digest_object(&key, &declared.declared_content_type)
            .await?;
        let digest = hex::encode(stored.sha256);
        let refused = if stored.size != declared_size {
            Some(StorageError::UploadMismatch(
                "the object changed before it was verified".into(),
            ))
        } else if let Some(declared) = declared
            .declared_sha256
            .as_deref()
            .filter(|declared| *declared != digest)
        {
            Some(StorageError::UploadMismatch(format!(
                "the uploaded bytes' SHA-256 is {digest}, not the declared {declared}"
            )))
        } else if !self.policy.allows(&content_type) {
            Some(StorageError::UnsupportedType {
                content_type: content_type.clone(),
            })
        } else {
            None
        };
        // Checked as sent, then processed: an image is stored again without its metadata.
        let processed = match refused {
            Some(refusal) => Err(refusal),
            None => {
                let upload = Upload {
                    post_id: document.post_id,
                    id: document.id,
                    filename: &document.filename,
                };
                self.process(&key, upload, &content_type, stored).await
            }
        };
        let processed = match processed {
            Ok(processed) => processed,
            // Malware ends the upload: asked again, its id answers with the signature.
            Err(refusal @ StorageError::Infected { .. }) => {
                self.objects.delete(&staging).await?;
                self.end_pending_upload(
                    PostId(document.post_id),
                    AttachmentId(document.id),
                    doc! { COMPLETION_CLAIM: claim },
                )
                .await?;
                return Err(refusal);
            }
            Err(
                refusal @ (StorageError::UploadMismatch(_)
                | StorageError::UnsupportedType { .. }
                | StorageError::ImageRefused(_)),
            ) => {
                self.objects.delete(&key).await?;
                self.objects.delete(&staging).await?;
                return Err(refusal);
            }
            Err(error) => return Err(error),
        };
        let attachment = self
            .mark_ready(
                document,
                processed,
                &content_type,
                Entity::Upload,
                doc! { COMPLETION_CLAIM: claim },
            )
            .await?;
        if let Err(error) = self.objects.delete(&staging).await {
            tracing::warn!(%staging, %error, "could not delete a staged upload; the reaper will");
        }
        Ok(attachment)
    }

    /// Reads a stored object once: its size, SHA-256 and sniffed type.
    pub(crate) async fn digest_object(
        &self,
        key: &str,
        declared_type: &str,
    ) -> Result<(StoredObject, String), StorageError> {
        let mut body = self.objects.get_stream(key, None).await?;
        let mut digest = ContentDigest::default();
        while let Some(chunk) = body.stream.try_next().await? {
            digest.update(&chunk);
        }
        Ok(digest.finish(declared_type))
    }
}
