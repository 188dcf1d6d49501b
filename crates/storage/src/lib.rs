//! posts-api persistence: post and attachment metadata in MongoDB, attachment bytes in S3.
//!
//! Knows nothing of HTTP. The S3 client signs with whatever credentials provider it is
//! given; the service gives it the shared, refreshing temporary credentials.
//!
//! # Data model
//! Posts and attachments are two collections. An attachment's record carries its life —
//! `pending` while bytes move, `ready`, `deleting` — which the reaper queries across all
//! posts by status and age. What readers see of a ready attachment (id, file name, type,
//! size, SHA-256, creation time) is also listed in its post's document, so that a post, a
//! page of posts or a post's attachments is one query; the list is bounded by
//! `uploads.max_attachments_per_post`, far below the 16 MiB document limit. Every change
//! to the list bumps the post's `version`, its entity tag.
//!
//! Posts list newest first on (`created_at`, `_id`) with an opaque cursor naming the last
//! item seen, so inserts never shift later pages.
//!
//! # Consistency between MongoDB and S3
//! Object keys are `{s3.key_prefix}/{post_id}/{attachment_id}`, and below it
//! `/{variant}` for an image's rendered sizes (names from the configuration): ids only,
//! never user input. The protocol guarantees that every object is covered by a
//! reservation or a record, or is younger than the pending TTL, so nothing is orphaned:
//! 1. **Upload** (see `lifecycle`): before any byte moves, one conditional write on the
//!    post reserves a place for the attachment (the post is active, the caller wrote it,
//!    it has room) and records the reservation's id and expiry in the post; an upload that
//!    spans requests (direct, resumable) also inserts a `pending` record holding its
//!    state. Bytes stream to S3 (one PutObject, or a bounded multipart upload). Only when
//!    the object is complete is the record inserted (or turned) `ready`, with size,
//!    SHA-256 and the sniffed type, and then listed in its post in the same write that
//!    drops the reservation, only while the reservation and the post stand: readers only
//!    ever see `ready` attachments. A file of at most a mebibyte that arrived whole skips
//!    the reservation: it is stored first, and the write that lists it makes the checks
//!    (within half the pending TTL of its arrival, so before the reaper could take its
//!    object for an orphan). On any failure — a too-large or disallowed file, the
//!    client going away, S3 or MongoDB failing, the request future being dropped — the
//!    multipart upload is aborted, the record and the object are removed, then the
//!    reservation. A resumable upload (`resumable.rs`) holds its reservation and stays
//!    `pending` across requests until its last byte: its parts and the tail of bytes
//!    short of a part are named by its record, and it expires at
//!    `uploads.resumable_ttl_secs` rather than the pending TTL.
//! 2. **Delete**: the post or attachment is marked `deleting`; an attachment is then
//!    taken off its post's list (a post marked `deleting` is invisible already); then
//!    objects are deleted, then records. Nothing listed ever lacks its object.
//! 3. **Reaper** (one instance at a time, by a lease document): takes reservations that
//!    expired (`uploads.pending_ttl_secs`, resumable ones at their expiry) and removes what
//!    they covered, removes `pending` records an older version left as old, finishes
//!    interrupted deletions, aborts multipart uploads under the key prefix older than
//!    that TTL that no pending resumable upload names, deletes objects that old that no
//!    record names, and lists again ready attachments of the last day, with their
//!    objects, that their post does not list (a crash between the two writes of a
//!    publish) if the post admits them as their publish would have, removing them
//!    otherwise.
//!    A process killed at any point therefore leaves nothing behind once the reaper ran.
//!
//! # Events and quotas
//! With events on (`events`), every write that changes a post or an attachment also
//! pushes its event into the post's `outbox`, so an event exists exactly when its change
//! does; a deleted post's document stays until its outbox is empty. With a quota
//! (`quota`), an upload's bytes are reserved in its user's `usage` document before they
//! move, counted when it is listed and given back when it is deleted, released or expired;
//! the reaper reconciles counts with the ready records.

mod attachments;
mod content;
mod direct_uploads;
mod error;
mod events;
mod lifecycle;
mod memory;
mod model;
mod mongo;
mod posts;
mod processing;
mod quota;
mod reaper;
mod render_flights;
mod resumable;
mod s3;
mod scanning;
mod settings;
mod store;
mod summaries;
mod variants;

pub use crate::content::{ContentPolicy, SNIFF_BYTES, essence, sniff};
pub use crate::direct_uploads::DirectUploadTicket;
pub use crate::error::{Entity, StorageError};
pub use crate::events::{DueEvent, FailedEvent, failed_events};
pub use crate::lifecycle::StagedAttachment;
pub use crate::memory::{MemoryHold, UploadMemory};
pub use crate::model::{
    Attachment, AttachmentId, ImageInfo, InvalidId, NewPost, Page, Post, PostChanges, PostId,
    Variant,
};
pub use crate::mongo::migrations::{MigrationError, run_migrations};
pub use crate::mongo::{Mongo, MongoError, MongoSettings};
pub use crate::quota::Usage;
pub use crate::reaper::ReapReport;
pub use crate::resumable::{NewResumableUpload, ResumableUpload};
pub use crate::s3::{
    ByteRange, IAM_ACTIONS, IncompleteUpload, MAX_SINGLE_PUT_BYTES, MIN_PART_SIZE, ObjectBody,
    ObjectInfo, ObjectStore, ObjectStoreError, PresignedUrl, PutError, S3Settings, StoredObject,
    UploadedPart,
};
pub use crate::settings::{
    InvalidSetting, MediaSettings, ScanSettings, VariantFit, VariantFormat, VariantSettings,
};
pub use crate::store::{Storage, UploadSettings};
