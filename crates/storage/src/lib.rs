//! posts-api persistence: post and attachment metadata in MongoDB, attachment bytes in S3.
//!
//! Knows nothing of HTTP. The S3 client signs with whatever credentials provider it is
//! given; the service gives it the shared, refreshing temporary credentials.
//!
//! # Data model
//! Posts and attachments are two collections. Attachments are not embedded in their post
//! because they have a life of their own — `pending` while bytes move, `ready`, `deleting`
//! — that the reaper queries across all posts by status and age; because concurrent
//! uploads to one post would otherwise contend on one document; and because a post with
//! many attachments would approach the 16 MiB document limit. Reading a post costs one more
//! indexed query (`post_id`, `status`), batched for a whole page of posts.
//!
//! Posts list newest first on (`created_at`, `_id`) with an opaque cursor naming the last
//! item seen, so inserts never shift later pages.
//!
//! # Consistency between MongoDB and S3
//! Object keys are `{s3.key_prefix}/{post_id}/{attachment_id}`: ids only, never user
//! input. The protocol guarantees that every object has a record, so nothing is orphaned:
//! 1. **Upload**: the attachment record is inserted `pending` before any byte moves. Bytes
//!    stream to S3 (one PutObject, or a bounded multipart upload). Only when the object is
//!    complete does the record become `ready`, with size, SHA-256 and the sniffed type. On
//!    any failure — a too-large or disallowed file, the client going away, S3 or MongoDB
//!    failing, the request future being dropped — the multipart upload is aborted and the
//!    object and the record are removed. Readers only ever see `ready` records.
//! 2. **Delete**: the post or attachment is marked `deleting` (invisible from then on),
//!    then objects are deleted, then records.
//! 3. **Reaper** (one instance at a time, by a lease document): removes `pending` records
//!    older than `uploads.pending_ttl_secs` with their objects, finishes interrupted
//!    deletions, and aborts multipart uploads under the key prefix older than that TTL.
//!    A process killed at any point therefore leaves nothing behind once the reaper ran.

mod attachments;
mod content;
mod direct_uploads;
mod error;
mod model;
mod mongo;
mod posts;
mod reaper;
mod s3;
mod settings;
mod store;

pub use crate::attachments::StagedAttachment;
pub use crate::content::{ContentPolicy, SNIFF_BYTES, essence, sniff};
pub use crate::direct_uploads::DirectUploadTicket;
pub use crate::error::{Entity, StorageError};
pub use crate::model::{
    Attachment, AttachmentId, InvalidId, NewPost, Page, Post, PostChanges, PostId,
};
pub use crate::mongo::migrations::{MigrationError, run_migrations};
pub use crate::mongo::{Mongo, MongoError, MongoSettings};
pub use crate::reaper::ReapReport;
pub use crate::s3::{
    ByteRange, IAM_ACTIONS, IncompleteUpload, MIN_PART_SIZE, ObjectBody, ObjectInfo, ObjectStore,
    ObjectStoreError, PresignedUrl, PutError, S3Settings, StoredObject,
};
pub use crate::settings::InvalidSetting;
pub use crate::store::{Storage, UploadSettings};
