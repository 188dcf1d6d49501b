//! The write that lists ready attachments in their post, with what it checks of the post.

use std::sync::atomic::Ordering;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::{UpdateOneModel, WriteModel};

use crate::error::{Entity, StorageError, bulk_write_unsupported};
use crate::events::{EventKind, attachment_data};
use crate::model::{Attachment, PostId};
use crate::mongo::documents::{AttachmentDocument, AttachmentSummary, PostStatus, now};
use crate::store::Storage;

/// What the listing write checks of the post beyond its being active.
#[derive(Debug, Default)]
pub(crate) struct Admission<'a> {
    /// Reservations in the post's `pending` list that must all stand; the write drops them.
    pub(crate) held: Vec<ObjectId>,
    /// How many of the attachments hold no reservation: the write lists them only if the
    /// post has room for them beside those listed and reserved, and `author` wrote it.
    pub(crate) deferred: usize,
    /// The author the write requires when `deferred` is not zero.
    pub(crate) author: Option<&'a str>,
}

impl Admission<'_> {
    /// Lists attachments whose reservations `held` must stand.
    pub(crate) fn held(held: Vec<ObjectId>) -> Self {
        Self {
            held,
            ..Self::default()
        }
    }
}

/// How the listing write went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Listed {
    /// The attachments are listed.
    Yes,
    /// No active post matched (or a reservation, or the author, did not).
    NoPost,
    /// The post had no room for the attachments without a reservation.
    NoRoom,
}

impl Storage {
    /// Inserts the ready `records` of `attachments` and lists them as `admission` allows:
    /// one command where the server writes to several collections at once (MongoDB 8.0+;
    /// ordered, so the listing runs only once the records are in), two otherwise.
    pub(super) async fn insert_and_list(
        &self,
        records: &[AttachmentDocument],
        post_id: PostId,
        attachments: &[Attachment],
        admission: &Admission<'_>,
    ) -> Result<Listed, StorageError> {
        if self.bulk_writes.load(Ordering::Relaxed) {
            let (filter, update) = self.listing(post_id, attachments, admission)?;
            let mut writes = records
                .iter()
                .map(|record| {
                    self.attachments()
                        .insert_one_model(record)
                        .map(WriteModel::from)
                })
                .collect::<Result<Vec<_>, _>>()?;
            writes.push(
                UpdateOneModel::builder()
                    .namespace(self.posts().namespace())
                    .filter(filter)
                    .update(update)
                    .build()
                    .into(),
            );
            match self
                .database
                .client()
                .bulk_write(writes)
                .ordered(true)
                .await
            {
                Ok(result) => {
                    let matched = u64::try_from(result.matched_count).unwrap_or(0);
                    let modified = u64::try_from(result.modified_count).unwrap_or(0);
                    return Ok(self.listed(attachments, matched, modified).await);
                }
                Err(error) if bulk_write_unsupported(&error) => {
                    if self.bulk_writes.swap(false, Ordering::Relaxed) {
                        tracing::info!(%error, "the server has no bulkWrite (MongoDB before 8.0): uploads are published in two writes");
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        self.attachments().insert_many(records).await?;
        self.list(post_id, attachments, admission).await
    }

    /// Lists ready attachments in their active post, in creation order among the others,
    /// in one write that bumps the post's version and drops the reservations `admission`
    /// holds, only while they stand and the post admits the others.
    pub(crate) async fn list(
        &self,
        post_id: PostId,
        attachments: &[Attachment],
        admission: &Admission<'_>,
    ) -> Result<Listed, StorageError> {
        let (filter, update) = self.listing(post_id, attachments, admission)?;
        let result = self.posts().update_one(filter, update).await?;
        Ok(self
            .listed(attachments, result.matched_count, result.modified_count)
            .await)
    }

    /// The filter and update (a pipeline) of the write that lists `attachments`.
    fn listing(
        &self,
        post_id: PostId,
        attachments: &[Attachment],
        admission: &Admission<'_>,
    ) -> Result<(Document, Vec<Document>), StorageError> {
        let mut summaries: Vec<AttachmentSummary> =
            attachments.iter().map(AttachmentSummary::of).collect();
        summaries.sort_by_key(|summary| (summary.created_at, summary.id));
        let ids: Vec<ObjectId> = summaries.iter().map(|summary| summary.id).collect();
        let earliest = summaries.first().map(|summary| summary.created_at);
        let summaries = bson::to_bson(&summaries).map_err(mongodb::error::Error::from)?;
        let mut filter = doc! { "_id": post_id.0, "status": PostStatus::Active.as_str() };
        if !admission.held.is_empty() {
            // The reservations go in the same write, so an attachment listed once can
            // never match again.
            let each: Vec<Document> = admission
                .held
                .iter()
                .map(|id| doc! { "$elemMatch": { "_id": id } })
                .collect();
            filter.insert("pending", doc! { "$all": each });
        } else if admission.deferred == 0 {
            filter.insert("attachments._id", doc! { "$nin": &ids });
        }
        let room = if admission.deferred > 0 {
            if let Some(author) = admission.author {
                filter.insert("author", author);
            }
            Some(self.room_for(admission.deferred))
        } else {
            None
        };
        // Appended as they are when they are all newer than the last one listed, as
        // almost every upload is; sorted in among the others otherwise.
        let listed = doc! { "$ifNull": ["$attachments", []] };
        let merged = doc! { "$concatArrays": [&listed, { "$literal": summaries }] };
        let mut changes = doc! {
            "attachments": { "$let": {
                "vars": { "last": { "$arrayElemAt": [&listed, -1] } },
                "in": { "$cond": [
                    { "$lt": ["$$last.created_at", earliest] },
                    &merged,
                    { "$sortArray": { "input": &merged, "sortBy": { "created_at": 1, "_id": 1 } } },
                ] },
            } },
            "version": { "$add": ["$version", 1] },
        };
        if !admission.held.is_empty() {
            changes.insert(
                "pending",
                doc! { "$filter": {
                    "input": "$pending",
                    "cond": { "$not": [{ "$in": ["$$this._id", &admission.held] }] },
                } },
            );
        }
        let at = now();
        let ready = self.outbox_entries(
            at,
            attachments
                .iter()
                .map(|attachment| (EventKind::AttachmentReady, attachment_data(attachment))),
        );
        if !ready.is_empty() {
            changes.insert(
                "outbox",
                doc! { "$concatArrays": [{ "$ifNull": ["$outbox", []] }, { "$literal": ready }] },
            );
            changes.insert("outbox_due_at", doc! { "$max": ["$outbox_due_at", at] });
        }
        // Each change only if the post has room: otherwise the document is left as it
        // was, and the write reports it unmodified. One stage, the room checked in each
        // field: each stage more costs a copy of the post on some servers.
        let changes: Document = match room {
            Some(room) => changes
                .into_iter()
                .map(|(field, changed)| {
                    let unchanged = format!("${field}");
                    let guarded = doc! { "$cond": [room.clone(), changed, unchanged] };
                    (field, Bson::from(guarded))
                })
                .collect(),
            None => changes,
        };
        Ok((filter, vec![doc! { "$set": changes }]))
    }

    /// Whether a post has room for `count` more attachments beside those listed and
    /// reserved: an expression for an update pipeline. The room is checked inside the
    /// update, on the one document the filter found by `_id` (a top-level `$expr` makes
    /// some planners scan the collection): a post without room is matched and left
    /// unchanged.
    pub(super) fn room_for(&self, count: usize) -> Document {
        let limit = i64::try_from(self.max_attachments_per_post).unwrap_or(i64::MAX);
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        doc! { "$lte": [
            { "$add": [
                { "$size": { "$ifNull": ["$attachments", []] } },
                { "$size": { "$ifNull": ["$pending", []] } },
                count,
            ] },
            limit,
        ] }
    }

    /// What follows a listing write that `matched` and `modified` so many posts: for a
    /// listing, the dispatcher woken for its events and the stored bytes counted against
    /// the quota.
    async fn listed(&self, attachments: &[Attachment], matched: u64, modified: u64) -> Listed {
        if matched == 0 {
            return Listed::NoPost;
        }
        if modified == 0 {
            return Listed::NoRoom;
        }
        self.events_written();
        let stored: Vec<(ObjectId, u64)> = attachments
            .iter()
            .map(|attachment| (attachment.id.0, attachment.size))
            .collect();
        if let Err(error) = self.commit_quota(&stored).await {
            tracing::warn!(%error, "could not count published attachments against the quota; the reaper will");
        }
        Listed::Yes
    }
}

impl Listed {
    /// `Ok` if listed; `NotFound(Post)` otherwise, for a caller that needs no reason.
    pub(crate) fn or_not_found(self) -> Result<(), StorageError> {
        match self {
            Self::Yes => Ok(()),
            Self::NoPost | Self::NoRoom => Err(StorageError::NotFound(Entity::Post)),
        }
    }
}
