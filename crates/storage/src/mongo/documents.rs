//! How posts and attachments are stored in MongoDB.

use std::collections::BTreeMap;
use std::time::SystemTime;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document};
use serde::{Deserialize, Serialize};

use crate::model::{Attachment, AttachmentId, ImageInfo, Post, PostId};

pub(crate) const POSTS: &str = "posts";
pub(crate) const ATTACHMENTS: &str = "attachments";

/// A post's life: visible while `active`; `deleting` once a delete has begun.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PostStatus {
    Active,
    Deleting,
}

/// An attachment's life: `pending` while bytes move, `ready` once they are complete and
/// verified, `deleting` once a delete has begun. Readers see only `ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AttachmentStatus {
    Pending,
    Ready,
    Deleting,
}

impl PostStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deleting => "deleting",
        }
    }
}

impl AttachmentStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Deleting => "deleting",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PostDocument {
    #[serde(rename = "_id")]
    pub(crate) id: ObjectId,
    pub(crate) title: String,
    pub(crate) body: String,
    pub(crate) author: Option<String>,
    pub(crate) status: PostStatus,
    pub(crate) created_at: DateTime,
    pub(crate) updated_at: DateTime,
    pub(crate) version: i64,
    /// The ready attachments readers see, oldest first: pushed once an attachment's bytes
    /// are verified in place, pulled before its object is deleted. (Beside it, `pending`
    /// holds the reservations of uploads in flight; see `lifecycle`.)
    #[serde(default)]
    pub(crate) attachments: Vec<AttachmentSummary>,
    /// Events of this post not yet delivered, oldest first (see `events`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) outbox: Vec<Document>,
    /// When the first event of `outbox` may be tried next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) outbox_due_at: Option<DateTime>,
}

/// What a post document keeps of each of its ready attachments: all a reader is shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AttachmentSummary {
    #[serde(rename = "_id")]
    pub(crate) id: ObjectId,
    pub(crate) filename: String,
    pub(crate) content_type: String,
    pub(crate) size: i64,
    pub(crate) sha256: String,
    pub(crate) created_at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image: Option<ImageInfo>,
}

/// What a direct (presigned) upload promised.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct DirectUpload {
    pub(crate) declared_size: i64,
    pub(crate) declared_content_type: String,
    /// The client's hex SHA-256 of the bytes, verified before processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) declared_sha256: Option<String>,
    pub(crate) expires_at: DateTime,
}

/// Where a resumable (tus) upload stands. Parts go to the attachment's own key by
/// `UploadPart`; bytes short of a part wait in a tail object until the next request.
/// `offset` counts the bytes stored durably: the parts, then the tail's first `tail`
/// bytes. A request writes only while it holds the lease.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ResumableState {
    pub(crate) length: i64,
    pub(crate) offset: i64,
    /// The client's `Upload-Metadata`, given back as sent.
    pub(crate) metadata: String,
    pub(crate) declared_content_type: Option<String>,
    /// The subject that created it, for the per-user limit.
    pub(crate) owner: Option<String>,
    pub(crate) expires_at: DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) multipart_id: Option<String>,
    #[serde(default)]
    pub(crate) parts: Vec<PartRecord>,
    #[serde(default)]
    pub(crate) tail: i64,
    /// The lease of the request that wrote the tail, which names its object: each
    /// request writes a tail object of its own, so one whose lease lapsed cannot overwrite
    /// the tail the record names. (`None`: the shared key of older versions.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tail_lease: Option<String>,
    /// The offset recorded with `tail_lease`. An older version writes its tail to the
    /// shared key and moves the offset without knowing either, so a different offset
    /// means the tail is at the shared key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tail_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lease: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lease_until: Option<DateTime>,
}

/// A part of a resumable upload that S3 stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PartRecord {
    pub(crate) number: i32,
    pub(crate) etag: String,
    pub(crate) size: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AttachmentDocument {
    #[serde(rename = "_id")]
    pub(crate) id: ObjectId,
    pub(crate) post_id: ObjectId,
    pub(crate) filename: String,
    pub(crate) content_type: String,
    pub(crate) size: i64,
    pub(crate) sha256: String,
    pub(crate) status: AttachmentStatus,
    pub(crate) created_at: DateTime,
    pub(crate) updated_at: DateTime,
    /// Whether only a write that admits it (a reservation on the post, or the checks of a
    /// deferred upload) lists this record; records of an older instance have none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) reserved: bool,
    /// Who uploaded it, where a post's author is checked: the reaper checks it again before
    /// listing a `reserved` record whose reservation is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uploader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) direct_upload: Option<DirectUpload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resumable: Option<ResumableState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) image: Option<ImageInfo>,
    /// The variants of an image rendered so far, by name; each at
    /// `ObjectStore::variant_key_for`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) variants: BTreeMap<String, VariantRecord>,
}

/// A rendered variant of an image attachment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct VariantRecord {
    /// What the variant's definition was when it was rendered: another one renders again.
    pub(crate) signature: String,
    pub(crate) content_type: String,
    pub(crate) size: i64,
    pub(crate) sha256: String,
    pub(crate) width: u32,
    pub(crate) height: u32,
}

impl PostDocument {
    /// The summary of attachment `id`, if it is one of the post's ready attachments.
    pub(crate) fn attachment(&self, id: ObjectId) -> Option<Attachment> {
        self.attachments
            .iter()
            .find(|summary| summary.id == id)
            .map(|summary| summary.clone().into_attachment(self.id))
    }

    pub(crate) fn into_post(self) -> Post {
        let attachments = self
            .attachments
            .into_iter()
            .map(|summary| summary.into_attachment(self.id))
            .collect();
        Post {
            id: PostId(self.id),
            title: self.title,
            body: self.body,
            author: self.author,
            created_at: self.created_at.to_system_time(),
            updated_at: self.updated_at.to_system_time(),
            version: self.version,
            attachments,
        }
    }
}

impl AttachmentSummary {
    pub(crate) fn of(attachment: &Attachment) -> Self {
        Self {
            id: attachment.id.0,
            filename: attachment.filename.clone(),
            content_type: attachment.content_type.clone(),
            size: i64::try_from(attachment.size).unwrap_or(i64::MAX),
            sha256: attachment.sha256.clone(),
            created_at: DateTime::from_system_time(attachment.created_at),
            image: attachment.image.clone(),
        }
    }

    fn into_attachment(self, post_id: ObjectId) -> Attachment {
        Attachment {
            id: AttachmentId(self.id),
            post_id: PostId(post_id),
            filename: self.filename,
            content_type: self.content_type,
            size: u64::try_from(self.size).unwrap_or_default(),
            sha256: self.sha256,
            created_at: self.created_at.to_system_time(),
            image: self.image,
        }
    }
}

impl From<AttachmentDocument> for Attachment {
    fn from(document: AttachmentDocument) -> Self {
        Self {
            id: AttachmentId(document.id),
            post_id: PostId(document.post_id),
            filename: document.filename,
            content_type: document.content_type,
            size: u64::try_from(document.size).unwrap_or_default(),
            sha256: document.sha256,
            created_at: document.created_at.to_system_time(),
            image: document.image,
        }
    }
}

/// Now, at MongoDB's millisecond precision.
pub(crate) fn now() -> DateTime {
    DateTime::from_system_time(SystemTime::now())
}
