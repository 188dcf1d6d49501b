//! The life of an attachment, and the only code that changes it. Every way in (a form, a
//! raw body, a direct upload, a resumable upload) reserves, stores and publishes through
//! here, and never calls another way in.
//!
//! ```text
//! reserved ──► stored ──► ready and listed ──► deleting ──► removed
//!    └────────────┴──► discarded (a refusal, a failure, a dropped request, an expiry)
//! ```
//! - **Reserved**: one conditional write on the post ([`Storage::reserve`]) checks that it
//!   is active, that the caller is its author and that listed plus reserved attachments
//!   leave room for one more, and records the reservation (the attachment's id and its
//!   expiry) in the post's `pending` list. The checks that need no database come first:
//!   the declared size, then the type. A way in that spans requests (direct, resumable)
//!   also inserts a `pending` record holding its state. A small file that arrived whole
//!   ([`SMALL_FILE_BYTES`]) is *deferred* instead ([`Storage::defer`]): nothing is written
//!   to the post before its bytes are stored, and the write that lists it makes the same
//!   checks.
//! - **Stored**: the bytes are at the attachment's key, which no client can write.
//! - **Ready and listed**: the record is inserted `ready` with its size, SHA-256 and type
//!   (or the pending record turned `ready`), then one write on the post lists it and drops
//!   its reservation, only while the reservation stands (or, deferred, only if the post
//!   admits it). The insert and the listing go as one ordered `bulkWrite` (MongoDB 8.0+),
//!   so a small file is one round trip and a larger one two, none of which grows with the
//!   post. The record is marked `reserved` with its uploader: if it is found unlisted
//!   without a reservation (the post refused it and the process died before removing it),
//!   the reaper lists it only through the same checks, and removes it if they refuse.
//! - **Discarded**: the [`Reservation`] guard removes the record and the object, then the
//!   reservation, when a way in fails or its future is dropped; the reaper does the same
//!   for reservations that expired (a killed process), taking the reservation first so
//!   that a late publish fails instead of listing what is being removed.
//! - **Deleting** and **removed**: see `removal.rs`.

mod listing;
mod removal;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{self, DateTime, Document, doc};

use crate::error::{Entity, StorageError};
use crate::model::{Attachment, AttachmentId, PostId};
use crate::mongo::documents::{AttachmentDocument, AttachmentStatus, PostStatus, now};
use crate::processing::Processed;
use crate::quota::QuotaHold;
use crate::store::Storage;

pub(crate) use listing::{Admission, Listed};

/// The largest file that is stored before its post is checked, when it arrived whole: its
/// place is taken by the write that lists it, one database round trip in all.
pub(crate) const SMALL_FILE_BYTES: usize = 1024 * 1024;

/// A place for one more attachment on a post (and its bytes against its user's quota),
/// held while its bytes move. Dropped without [`Reservation::keep`] or a publish, its
/// record, its object and itself are removed.
#[derive(Debug)]
pub(crate) struct Reservation {
    storage: Option<Storage>,
    pub(crate) post_id: PostId,
    pub(crate) id: ObjectId,
    pub(crate) created_at: DateTime,
    /// The bytes reserved against the user's quota, when there is one.
    pub(crate) quota: Option<QuotaHold>,
    /// The author the post must have, when given.
    pub(crate) author: Option<String>,
    /// Where the place on the post is.
    pub(crate) place: Place,
}

/// Where a reservation's place on its post is.
#[derive(Debug)]
pub(crate) enum Place {
    /// In the post's `pending` list, taken before any byte was stored.
    Held,
    /// Not taken yet: the write that lists the attachment checks the post (active, written
    /// by the author, with room) and takes it, if it comes before `deadline`. Until then
    /// the object has no record; the reaper removes such objects only once they are older
    /// than the pending TTL, twice the time to the deadline.
    Deferred {
        /// When the bytes may no longer be listed.
        deadline: Instant,
    },
}

impl Reservation {
    /// Leaves the reservation to the pending record that now holds the upload's state
    /// (the reaper removes both at their expiry).
    pub(crate) fn keep(mut self) {
        self.storage = None;
    }

    /// Removes what was stored, then the reservation, now rather than soon after a drop.
    pub(crate) async fn discard(mut self) {
        if let Some(storage) = self.storage.take() {
            storage.discard(self.post_id, self.id).await;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(storage) = self.storage.take() else {
            return;
        };
        let (post_id, id) = (self.post_id, self.id);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // Give a cancelled part upload a moment to stop before deleting.
                runtime.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    storage.discard(post_id, id).await;
                });
            }
            Err(_) => {
                tracing::warn!(attachment_id = %id, "no runtime to clean up a cancelled upload; the reaper will")
            }
        }
    }
}

/// An attachment whose bytes are stored, not yet ready. Publish it with
/// [`Storage::publish`]; dropped unpublished, its object and reservation are removed.
#[derive(Debug)]
pub struct StagedAttachment {
    attachment: Attachment,
    reservation: Reservation,
}

impl StagedAttachment {
    /// The attachment `reservation` holds a place for, once its bytes are stored and
    /// `processed`.
    pub(crate) fn new(
        reservation: Reservation,
        processed: Processed,
        content_type: String,
        filename: &str,
    ) -> Self {
        let stored = processed.stored;
        Self {
            attachment: Attachment {
                id: AttachmentId(reservation.id),
                post_id: reservation.post_id,
                filename: filename.to_owned(),
                content_type,
                size: stored.size,
                sha256: hex::encode(stored.sha256),
                created_at: reservation.created_at.to_system_time(),
                image: processed.image,
            },
            reservation,
        }
    }

    /// What the attachment will be once published.
    pub fn attachment(&self) -> &Attachment {
        &self.attachment
    }

    /// Removes the object and the reservation now, rather than soon after a drop.
    pub async fn discard(self) {
        self.reservation.discard().await;
    }
}

impl Storage {
    /// Reserves a place for one more attachment on `post_id`, for `ttl`: one write that
    /// succeeds only if the post is active, `author` (when given) wrote it, and its listed
    /// and reserved attachments are fewer than `uploads.max_attachments_per_post`. Whether
    /// concurrent uploads fit is decided by that write, so the cap holds exactly.
    pub(crate) async fn reserve(
        &self,
        post_id: PostId,
        author: Option<&str>,
        ttl: Duration,
        bytes: Option<u64>,
    ) -> Result<Reservation, StorageError> {
        let id = ObjectId::new();
        let created_at = now();
        let expires_at = DateTime::from_system_time(SystemTime::now() + ttl);
        // The quota first: a refusal there leaves nothing to undo.
        let quota = self
            .reserve_quota(author, id, bytes.unwrap_or(0), expires_at)
            .await?;
        let mut filter = doc! { "_id": post_id.0, "status": PostStatus::Active.as_str() };
        if let Some(author) = author {
            filter.insert("author", author);
        }
        let reservation = doc! { "_id": id, "expires_at": expires_at };
        let reserved = self
            .posts()
            .update_one(
                filter,
                vec![doc! { "$set": { "pending": { "$cond": [
                    self.room_for(1),
                    { "$concatArrays": [
                        { "$ifNull": ["$pending", []] },
                        [{ "$literal": reservation }],
                    ] },
                    "$pending",
                ] } } }],
            )
            .await?;
        if reserved.modified_count == 1 {
            return Ok(Reservation {
                storage: Some(self.clone()),
                post_id,
                id,
                created_at,
                quota,
                author: author.map(str::to_owned),
                place: Place::Held,
            });
        }
        if quota.is_some()
            && let Err(error) = self.release_quota(id).await
        {
            tracing::warn!(%error, "could not release a refused upload's quota; the reaper will");
        }
        Err(self
            .refusal(post_id, author)
            .await
            .unwrap_or(StorageError::TooManyAttachments {
                limit: self.max_attachments_per_post,
            }))
    }

    /// A reservation whose place on `post_id` the listing write takes (see
    /// [`Place::Deferred`]); only the quota, if any, is reserved now.
    pub(crate) async fn defer(
        &self,
        post_id: PostId,
        author: Option<&str>,
        bytes: u64,
    ) -> Result<Reservation, StorageError> {
        let id = ObjectId::new();
        let expires_at = DateTime::from_system_time(SystemTime::now() + self.pending_ttl);
        let quota = self.reserve_quota(author, id, bytes, expires_at).await?;
        Ok(Reservation {
            storage: Some(self.clone()),
            post_id,
            id,
            created_at: now(),
            quota,
            author: author.map(str::to_owned),
            place: Place::Deferred {
                deadline: Instant::now() + self.pending_ttl / 2,
            },
        })
    }

    /// Whether `post_id` refuses attachments of `author` for what one read shows: it is
    /// gone or no longer active, or `author` did not write it; `None` if neither.
    async fn refusal(&self, post_id: PostId, author: Option<&str>) -> Option<StorageError> {
        let post = match self.active_post(post_id).await {
            Ok(post) => post,
            Err(error) => return Some(error),
        };
        author
            .is_some_and(|author| post.author.as_deref() != Some(author))
            .then_some(StorageError::NotAuthor)
    }

    /// Records the state of an upload that spans requests (direct, resumable) as a
    /// `pending` record under its reservation, which the record then holds.
    pub(crate) async fn record_pending(
        &self,
        reservation: Reservation,
        document: &AttachmentDocument,
    ) -> Result<(), StorageError> {
        match self.attachments().insert_one(document).await {
            Ok(_) => {
                reservation.keep();
                Ok(())
            }
            Err(error) => {
                reservation.discard().await;
                Err(error.into())
            }
        }
    }

    /// The pending record an upload that spans requests starts from, under `reservation`.
    pub(crate) fn pending_document(
        reservation: &Reservation,
        filename: &str,
        content_type: String,
    ) -> AttachmentDocument {
        AttachmentDocument {
            id: reservation.id,
            post_id: reservation.post_id.0,
            filename: filename.to_owned(),
            content_type,
            size: 0,
            sha256: String::new(),
            status: AttachmentStatus::Pending,
            created_at: reservation.created_at,
            updated_at: reservation.created_at,
            reserved: true,
            uploader: reservation.author.clone(),
            direct_upload: None,
            resumable: None,
            image: None,
            variants: BTreeMap::new(),
        }
    }

    /// Makes staged attachments of one post ready together: their records are inserted
    /// `ready`, then one write lists them all, dropping their reservations and admitting
    /// the deferred ones. Readers see all of them or none; if the post is no longer
    /// active, a reservation was reaped or the post does not admit the deferred ones,
    /// none is published and all are removed.
    pub async fn publish(
        &self,
        staged: Vec<StagedAttachment>,
    ) -> Result<Vec<Attachment>, StorageError> {
        let Some(first) = staged.first() else {
            return Ok(Vec::new());
        };
        let post_id = first.attachment.post_id;
        if staged.iter().any(|file| file.attachment.post_id != post_id) {
            return Err(StorageError::Conflict(
                "the files of one publish belong to one post".into(),
            ));
        }
        let mut admission = Admission::default();
        let mut late = false;
        for file in &staged {
            match &file.reservation.place {
                Place::Held => admission.held.push(file.reservation.id),
                Place::Deferred { deadline } => {
                    admission.deferred += 1;
                    admission.author = file.reservation.author.as_deref();
                    late |= Instant::now() >= *deadline;
                }
            }
        }
        let records: Vec<AttachmentDocument> = staged
            .iter()
            .map(|file| ready_document(&file.attachment, file.reservation.author.clone()))
            .collect();
        let attachments: Vec<Attachment> =
            staged.iter().map(|file| file.attachment.clone()).collect();
        let listed = if late {
            Err(StorageError::TimedOut(self.pending_ttl / 2))
        } else {
            self.insert_and_list(&records, post_id, &attachments, &admission)
                .await
        };
        let refused = match listed {
            Ok(Listed::Yes) => None,
            Ok(Listed::NoRoom) => Some(StorageError::TooManyAttachments {
                limit: self.max_attachments_per_post,
            }),
            // Deferred files say why with one read; otherwise a reservation went (the
            // reaper took it) or the post.
            Ok(Listed::NoPost) if admission.deferred > 0 => Some(
                self.refusal(post_id, admission.author)
                    .await
                    .unwrap_or(StorageError::NotFound(Entity::Post)),
            ),
            Ok(Listed::NoPost) => Some(StorageError::NotFound(Entity::Post)),
            Err(error) => Some(error),
        };
        if let Some(error) = refused {
            for file in staged {
                file.discard().await;
            }
            return Err(error);
        }
        for file in staged {
            file.reservation.keep();
        }
        self.render_eagerly(&attachments);
        Ok(attachments)
    }

    /// Turns a pending record (of an upload that spans requests) ready with what was
    /// stored, where `condition` still holds, then lists it; `NotFound(missing)` if it is
    /// no longer pending (its post was deleted, or the reaper expired it), `NotFound(Post)`
    /// if its post is no longer active or its reservation expired.
    pub(crate) async fn mark_ready(
        &self,
        document: &AttachmentDocument,
        processed: Processed,
        content_type: &str,
        missing: Entity,
        condition: Document,
    ) -> Result<Attachment, StorageError> {
        let stored = processed.stored;
        let size = i64::try_from(stored.size).unwrap_or(i64::MAX);
        let sha256 = hex::encode(stored.sha256);
        let mut filter = doc! { "_id": document.id, "status": AttachmentStatus::Pending.as_str() };
        filter.extend(condition);
        let mut ready = doc! {
            "status": AttachmentStatus::Ready.as_str(),
            "size": size,
            "sha256": &sha256,
            "content_type": content_type,
            "updated_at": now(),
        };
        if let Some(image) = &processed.image {
            ready.insert(
                "image",
                bson::to_bson(image).map_err(mongodb::error::Error::from)?,
            );
        }
        let result = self
            .attachments()
            .update_one(filter, doc! { "$set": ready })
            .await?;
        if result.matched_count == 0 {
            return Err(StorageError::NotFound(missing));
        }
        let attachment = Attachment {
            id: AttachmentId(document.id),
            post_id: PostId(document.post_id),
            filename: document.filename.clone(),
            content_type: content_type.to_owned(),
            size: stored.size,
            sha256,
            created_at: document.created_at.to_system_time(),
            image: processed.image,
        };
        // A record from before reservations (an older instance) lists without one. A post
        // no longer active is being deleted, which removes this record too.
        let admission = if document.reserved {
            Admission::held(vec![document.id])
        } else {
            Admission::default()
        };
        self.list(
            attachment.post_id,
            std::slice::from_ref(&attachment),
            &admission,
        )
        .await?
        .or_not_found()?;
        self.render_eagerly(std::slice::from_ref(&attachment));
        Ok(attachment)
    }
}

/// The `ready` record of a stored attachment by `uploader`, marked `reserved`: only a
/// write that admits it lists it.
fn ready_document(attachment: &Attachment, uploader: Option<String>) -> AttachmentDocument {
    let created_at = DateTime::from_system_time(attachment.created_at);
    AttachmentDocument {
        id: attachment.id.0,
        post_id: attachment.post_id.0,
        filename: attachment.filename.clone(),
        content_type: attachment.content_type.clone(),
        size: i64::try_from(attachment.size).unwrap_or(i64::MAX),
        sha256: attachment.sha256.clone(),
        status: AttachmentStatus::Ready,
        created_at,
        updated_at: now(),
        reserved: true,
        uploader,
        direct_upload: None,
        resumable: None,
        image: attachment.image.clone(),
        variants: BTreeMap::new(),
    }
}
