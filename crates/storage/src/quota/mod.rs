//! Quotas per user (`uploads.quota_bytes_per_user`): the bytes of a user's attachments,
//! counted in one `usage` document per user (the author's subject):
//!
//! ```text
//! { _id: subject, used_bytes, attachments, reservations: [{ _id, upload, bytes, expires_at }] }
//! ```
//! - An upload **reserves** its bytes before they move, in one conditional write that adds
//!   a reservation only while `used_bytes` plus every reservation plus these bytes stay
//!   within the quota: the declared length where there is one, else a step at a time as the
//!   bytes arrive (`QuotaMeter`). Concurrent uploads that together cross the quota are
//!   decided by that write: exactly those that fit get in.
//! - A published upload **commits**: its reservations go and its stored size is counted,
//!   in one write found by the reservations. A failed or abandoned one releases them; the
//!   reaper drops those that expired (a killed process).
//! - A deletion **holds** its user's count first (a reservation of no bytes, found by the
//!   id of the attachment or post), and **uncounts** what it hid in the write that drops
//!   the hold: the reconciliation never reads a deletion between the two.
//! - The reaper **reconciles** each user without uploads or deletions in flight with the
//!   ready records of their active posts (a page of users a pass), so a crash between a
//!   change and its count costs nothing for long.

mod meter;

use std::time::SystemTime;

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};
use serde::Deserialize;

use crate::error::StorageError;
use crate::mongo::documents::{ATTACHMENTS, AttachmentStatus, POSTS, PostStatus};
use crate::store::Storage;

pub(crate) use meter::QuotaMeter;

/// The collection of usage documents.
pub(crate) const USAGE: &str = "usage";

/// How much an upload of unknown length reserves at a time as its bytes arrive.
pub(crate) const QUOTA_STEP_BYTES: u64 = 8 * 1024 * 1024;

/// What a user stores, against their quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of the user's attachments.
    pub bytes_used: u64,
    /// Bytes reserved by the user's uploads in flight.
    pub bytes_reserved: u64,
    /// The quota; `None`: none.
    pub bytes_quota: Option<u64>,
    /// How many attachments the user has.
    pub attachments: u64,
}

#[derive(Debug, Default, Deserialize)]
struct UsageDocument {
    #[serde(default)]
    used_bytes: i64,
    #[serde(default)]
    attachments: i64,
    #[serde(default)]
    reservations: Vec<QuotaReservation>,
}

#[derive(Debug, Deserialize)]
struct QuotaReservation {
    bytes: i64,
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The bytes of an upload, reserved against its user's quota while they move.
#[derive(Clone, Debug)]
pub(crate) struct QuotaHold {
    pub(crate) user: String,
    pub(crate) upload: ObjectId,
    pub(crate) expires_at: DateTime,
    /// Bytes reserved so far.
    pub(crate) reserved: u64,
}

impl Storage {
    /// The quota, if there is one.
    pub(crate) fn quota(&self) -> Option<u64> {
        self.quota_bytes_per_user
    }

    /// What `user` stores against the quota.
    pub async fn usage(&self, user: &str) -> Result<Usage, StorageError> {
        let document = self
            .database
            .collection::<UsageDocument>(USAGE)
            .find_one(doc! { "_id": user })
            .await?
            .unwrap_or_default();
        Ok(Usage {
            bytes_used: to_u64(document.used_bytes),
            bytes_reserved: document
                .reservations
                .iter()
                .map(|reservation| to_u64(reservation.bytes))
                .sum(),
            bytes_quota: self.quota(),
            attachments: to_u64(document.attachments),
        })
    }

    /// Reserves `bytes` more for `upload` of `user` until `expires_at`, if they fit the
    /// quota; `QuotaExceeded` otherwise. Without a quota, or a user, nothing is reserved.
    pub(crate) async fn reserve_quota(
        &self,
        user: Option<&str>,
        upload: ObjectId,
        bytes: u64,
        expires_at: DateTime,
    ) -> Result<Option<QuotaHold>, StorageError> {
        let (Some(quota), Some(user)) = (self.quota(), user) else {
            return Ok(None);
        };
        let mut hold = QuotaHold {
            user: user.to_owned(),
            upload,
            expires_at,
            reserved: 0,
        };
        self.grow_quota(&mut hold, bytes, quota).await?;
        Ok(Some(hold))
    }

    /// Reserves `bytes` more for `hold`.
    pub(crate) async fn grow_quota(
        &self,
        hold: &mut QuotaHold,
        bytes: u64,
        quota: u64,
    ) -> Result<(), StorageError> {
        if bytes > quota {
            return Err(self.quota_exceeded(&hold.user, bytes).await);
        }
        let reservation = doc! {
            "_id": ObjectId::new(),
            "upload": hold.upload,
            "bytes": to_i64(bytes),
            "expires_at": hold.expires_at,
        };
        let reserved = doc! { "$reduce": {
            "input": { "$ifNull": ["$reservations", []] },
            "initialValue": 0,
            "in": { "$add": ["$$value", "$$this.bytes"] },
        } };
        let written = self
            .database
            .collection::<Document>(USAGE)
            .update_one(
                doc! { "_id": &hold.user },
                vec![doc! { "$set": {
                    "used_bytes": { "$ifNull": ["$used_bytes", 0_i64] },
                    "attachments": { "$ifNull": ["$attachments", 0_i64] },
                    "reservations": { "$cond": [
                        { "$lte": [
                            { "$add": [{ "$ifNull": ["$used_bytes", 0] }, reserved, to_i64(bytes)] },
                            to_i64(quota),
                        ] },
                        { "$concatArrays": [
                            { "$ifNull": ["$reservations", []] },
                            [{ "$literal": reservation }],
                        ] },
                        { "$ifNull": ["$reservations", []] },
                    ] },
                } }],
            )
            .upsert(true)
            .await?;
        if written.modified_count == 1 || written.upserted_id.is_some() {
            hold.reserved += bytes;
            Ok(())
        } else {
            Err(self.quota_exceeded(&hold.user, bytes).await)
        }
    }

    /// The refusal of `bytes` more for `user`, saying the quota and the usage.
    async fn quota_exceeded(&self, user: &str, bytes: u64) -> StorageError {
        let usage = self.usage(user).await.ok();
        StorageError::QuotaExceeded {
            needed: bytes,
            quota: self.quota().unwrap_or(0),
            used: usage.map_or(0, |usage| usage.bytes_used + usage.bytes_reserved),
        }
    }

    /// Drops what `upload` reserved (it failed or was abandoned).
    pub(crate) async fn release_quota(&self, upload: ObjectId) -> Result<(), StorageError> {
        if self.quota().is_none() {
            return Ok(());
        }
        self.database
            .collection::<Document>(USAGE)
            .update_one(
                doc! { "reservations.upload": upload },
                doc! { "$pull": { "reservations": { "upload": upload } } },
            )
            .await?;
        Ok(())
    }

    /// Counts the published `uploads` (id and stored size) against the user whose
    /// reservations they hold, dropping those, in one write. An upload whose reservation
    /// is gone (expired, or listed again by the reaper) is counted by the reconciliation.
    pub(crate) async fn commit_quota(
        &self,
        uploads: &[(ObjectId, u64)],
    ) -> Result<(), StorageError> {
        if self.quota().is_none() || uploads.is_empty() {
            return Ok(());
        }
        let ids: Vec<ObjectId> = uploads.iter().map(|(id, _)| *id).collect();
        let bytes: u64 = uploads.iter().map(|(_, size)| size).sum();
        self.database
            .collection::<Document>(USAGE)
            .update_one(
                doc! { "reservations.upload": { "$in": &ids } },
                doc! {
                    "$pull": { "reservations": { "upload": { "$in": &ids } } },
                    "$inc": { "used_bytes": to_i64(bytes), "attachments": to_i64(uploads.len() as u64) },
                },
            )
            .await?;
        Ok(())
    }

    /// Holds the count of `user` while the deletion `id` (of an attachment or a post)
    /// changes what they store: a reservation of no bytes, so that the reconciliation,
    /// which leaves users with reservations alone, never sees the change before its count.
    /// [`Storage::uncount_quota`] drops it; left by a killed process, it expires.
    pub(crate) async fn hold_quota(
        &self,
        user: Option<&str>,
        id: ObjectId,
    ) -> Result<(), StorageError> {
        let (Some(_), Some(user)) = (self.quota(), user) else {
            return Ok(());
        };
        let expires_at = DateTime::from_system_time(SystemTime::now() + self.pending_ttl);
        self.database
            .collection::<Document>(USAGE)
            .update_one(
                doc! { "_id": user },
                doc! { "$push": { "reservations": {
                    "_id": ObjectId::new(),
                    "upload": id,
                    "bytes": 0_i64,
                    "expires_at": expires_at,
                } } },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Uncounts deleted attachments of `user` (`bytes` in all) and drops the hold of the
    /// deletion `id`, in one write.
    pub(crate) async fn uncount_quota(
        &self,
        user: Option<&str>,
        id: ObjectId,
        attachments: u64,
        bytes: u64,
    ) -> Result<(), StorageError> {
        let (Some(_), Some(user)) = (self.quota(), user) else {
            return Ok(());
        };
        self.database
            .collection::<Document>(USAGE)
            .update_one(
                doc! { "_id": user },
                doc! {
                    "$inc": { "used_bytes": -to_i64(bytes), "attachments": -to_i64(attachments) },
                    "$pull": { "reservations": { "upload": id } },
                },
            )
            .await?;
        Ok(())
    }

    /// Drops the quota reservations that expired (their uploads died with their process);
    /// returns how many users had some.
    pub(crate) async fn expire_quota_reservations(&self) -> Result<u64, StorageError> {
        let now = DateTime::from_system_time(SystemTime::now());
        Ok(self
            .database
            .collection::<Document>(USAGE)
            .update_many(
                doc! { "reservations.expires_at": { "$lt": now } },
                doc! { "$pull": { "reservations": { "expires_at": { "$lt": now } } } },
            )
            .await?
            .modified_count)
    }

    /// Sets the usage of the next `limit` users after `after` (by id) without uploads in
    /// flight to what the ready records of their posts say, where it differs; returns how
    /// many were corrected, and the last user looked at if there may be more.
    pub(crate) async fn reconcile_usage(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<(u64, Option<String>), StorageError> {
        let usage = self.database.collection::<Document>(USAGE);
        let mut filter = doc! { "reservations.0": { "$exists": false } };
        if let Some(after) = after {
            filter.insert("_id", doc! { "$gt": after });
        }
        let idle: Vec<Document> = usage
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        let next = idle
            .last()
            .filter(|_| idle.len() as i64 >= limit)
            .and_then(|last| last.get_str("_id").ok().map(str::to_owned));
        let mut corrected = 0;
        for document in idle {
            let Ok(user) = document.get_str("_id") else {
                continue;
            };
            let (bytes, attachments) = self.stored_by(user).await?;
            let counted = (
                number(document.get("used_bytes")),
                number(document.get("attachments")),
            );
            if counted == (bytes, attachments) {
                continue;
            }
            // Only if nothing changed meanwhile: an upload in flight reserves first.
            let fixed = usage
                .update_one(
                    doc! {
                        "_id": user,
                        "used_bytes": counted.0,
                        "attachments": counted.1,
                        "reservations.0": { "$exists": false },
                    },
                    doc! { "$set": { "used_bytes": bytes, "attachments": attachments } },
                )
                .await?;
            corrected += fixed.modified_count;
        }
        Ok((corrected, next))
    }

    /// The bytes and count of the ready attachments of `user`'s active posts (a deleting
    /// post's were uncounted when it was marked).
    async fn stored_by(&self, user: &str) -> Result<(i64, i64), StorageError> {
        let posts: Vec<Document> = self
            .database
            .collection::<Document>(POSTS)
            .find(doc! { "author": user, "status": PostStatus::Active.as_str() })
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        let ids: Vec<ObjectId> = posts
            .iter()
            .filter_map(|post| post.get_object_id("_id").ok())
            .collect();
        let totals: Vec<Document> = self
            .database
            .collection::<Document>(ATTACHMENTS)
            .aggregate(vec![
                doc! { "$match": {
                    "post_id": { "$in": ids },
                    "status": AttachmentStatus::Ready.as_str(),
                } },
                doc! { "$group": {
                    "_id": null,
                    "bytes": { "$sum": "$size" },
                    "attachments": { "$sum": 1 },
                } },
            ])
            .await?
            .try_collect()
            .await?;
        Ok(totals.first().map_or((0, 0), |total| {
            (number(total.get("bytes")), number(total.get("attachments")))
        }))
    }
}

/// An integer however the server summed it.
fn number(value: Option<&mongodb::bson::Bson>) -> i64 {
    match value {
        Some(mongodb::bson::Bson::Int32(n)) => i64::from(*n),
        Some(mongodb::bson::Bson::Int64(n)) => *n,
        Some(mongodb::bson::Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}
