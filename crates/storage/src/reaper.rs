//! The reaper: finishes what crashed or cancelled work left behind.

use std::time::{Duration, SystemTime};

use std::collections::HashSet;

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};

use crate::error::StorageError;
use crate::mongo::documents::{AttachmentDocument, AttachmentStatus, PostStatus, now};
use crate::mongo::lease;
use crate::store::Storage;

const LEASE: &str = "reaper";

/// What one reaper pass cleaned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Pending uploads older than `uploads.pending_ttl_secs` that were expired.
    pub expired_uploads: u64,
    /// Attachments whose object and record were removed.
    pub removed_attachments: usize,
    /// Posts whose deletion was finished.
    pub removed_posts: usize,
    /// Incomplete multipart uploads that were aborted.
    pub aborted_multipart_uploads: usize,
    /// Staged direct uploads no completion will copy (PUT again after completion, or
    /// after their upload was removed) that were deleted.
    pub removed_staged_objects: usize,
    /// Objects under the key prefix that no record names, deleted.
    pub removed_orphan_objects: usize,
    /// Ready records whose object is missing, newly marked `object_missing_since`.
    pub records_missing_objects: usize,
    /// Recorded variants whose object is missing, forgotten so they render again.
    pub forgotten_variants: usize,
    /// Ready attachments their post did not list (a crash between the two writes that
    /// publish one, or an older instance during a rolling deploy), listed again.
    pub restored_attachments: usize,
    /// Users whose quota usage differed from their ready attachments (a crash between a
    /// change and its count), set right.
    pub corrected_usage: u64,
}

/// The collection that keeps where the reconciliation goes on from, across passes.
const PROGRESS: &str = "_reaper";
/// Its document for the reconciliation.
const RECONCILE: &str = "reconcile";
/// Its document for the reconciliation of quota usage.
const RECONCILE_USAGE: &str = "usage";
/// Users whose quota usage one pass reconciles; the next pass goes on from there.
const USAGE_PER_PASS: i64 = 200;

/// Staged objects one pass deletes at most; the next pass takes the rest.
const STAGING_SWEEP_LIMIT: usize = 1000;

impl Storage {
    /// One reaper pass, if this instance gets the reaper lease (held for `lease_ttl`);
    /// `None` when another instance holds it.
    pub async fn reap_exclusively(
        &self,
        holder: &str,
        lease_ttl: Duration,
    ) -> Result<Option<ReapReport>, StorageError> {
        if !lease::acquire(&self.database, LEASE, holder, lease_ttl).await? {
            return Ok(None);
        }
        self.reap().await.map(Some)
    }

    /// One reaper pass:
    /// 1. uploads whose reservation expired are discarded, and pending records without a
    ///    reservation (an older instance's) older than the pending TTL become `deleting`
    ///    (resumable ones once they expire);
    /// 2. posts left `deleting` get their attachments removed, then themselves;
    /// 3. attachments left `deleting` lose their object, then their record;
    /// 4. multipart uploads under the key prefix older than the pending TTL are aborted,
    ///    but for those of pending resumable uploads;
    /// 5. staged direct-upload objects older than the pending TTL are deleted: by then no
    ///    completion can copy them (a PUT after completion or after a delete lands there);
    ///    so are resumable uploads' tails as old whose upload is no longer pending;
    /// 6. reconciliation of the next `uploads.reconcile_keys_per_pass` keys: objects
    ///    older than the pending TTL that no record names are deleted (a variant's object
    ///    is named by its attachment's record of it), ready records whose object is
    ///    missing among those keys are marked and reported, and recorded variants whose
    ///    object is missing are forgotten, to render again;
    /// 7. ready attachments published in about the last day, older than the pending TTL,
    ///    that their active post does not list are listed again, but for those whose
    ///    listing write refused them, which are removed;
    /// 8. with a quota, expired quota reservations are dropped (step 1) and the usage of
    ///    the next users without uploads in flight (a page a pass, going on from where the
    ///    last pass stopped) is set to what their ready attachments hold.
    pub async fn reap(&self) -> Result<ReapReport, StorageError> {
        let cutoff = SystemTime::now()
            .checked_sub(self.pending_ttl)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let expired_uploads =
            self.expire_unreserved_records(cutoff).await? + self.expire_reservations().await?;
        self.expire_quota_reservations().await?;
        let mut report = ReapReport {
            expired_uploads,
            ..ReapReport::default()
        };

        let deleting_posts: Vec<_> = self
            .posts()
            .find(doc! { "status": PostStatus::Deleting.as_str() })
            .await?
            .try_collect()
            .await?;
        for post in deleting_posts {
            self.finish_post_deletion(post.id).await?;
            report.removed_posts += 1;
        }

        report.removed_attachments = self.remove_deleting_attachments(doc! {}).await?.len();

        let stale = self.objects.incomplete_uploads(cutoff).await?;
        let resuming = self
            .resuming(stale.iter().map(|upload| &upload.upload_id))
            .await?;
        for upload in stale {
            if !resuming.contains(&upload.upload_id) {
                self.objects.abort_upload(&upload).await?;
                report.aborted_multipart_uploads += 1;
            }
        }

        let staged = self
            .objects
            .list(&self.objects.staging_prefix(), STAGING_SWEEP_LIMIT)
            .await?;
        for (key, written) in staged {
            if written < cutoff {
                self.objects.delete(&key).await?;
                report.removed_staged_objects += 1;
            }
        }
        report.removed_staged_objects += self.sweep_resumable_tails(cutoff).await?;

        self.reconcile(cutoff, &mut report).await?;
        let (restored, refused) = self.restore_missing_summaries(cutoff).await?;
        report.restored_attachments = restored;
        report.removed_attachments += refused;
        if self.quota().is_some() {
            let after = self.progress(RECONCILE_USAGE).await?;
            let (corrected, next) = self
                .reconcile_usage(after.as_deref(), USAGE_PER_PASS)
                .await?;
            report.corrected_usage = corrected;
            self.record_progress(RECONCILE_USAGE, next).await?;
        }
        Ok(report)
    }

    /// Which of these multipart upload ids belong to resumable uploads still pending: a
    /// resumable upload may take longer than the pending TTL.
    async fn resuming<'a>(
        &self,
        upload_ids: impl Iterator<Item = &'a String>,
    ) -> Result<HashSet<String>, StorageError> {
        let upload_ids: Vec<&String> = upload_ids.collect();
        if upload_ids.is_empty() {
            return Ok(HashSet::new());
        }
        self.attachments()
            .find(doc! {
                "status": AttachmentStatus::Pending.as_str(),
                "resumable.multipart_id": { "$in": upload_ids },
            })
            .await?
            .map_ok(|document| {
                document
                    .resumable
                    .and_then(|state| state.multipart_id)
                    .unwrap_or_default()
            })
            .try_collect()
            .await
            .map_err(StorageError::from)
    }

    /// Deletes tails of resumable uploads older than `cutoff` that their record does not
    /// name: the upload is no longer pending (completed uploads delete theirs; this
    /// catches a crash in between), or a later request's tail took its place. The shared
    /// tail of a pending upload stays, for older versions.
    async fn sweep_resumable_tails(&self, cutoff: SystemTime) -> Result<usize, StorageError> {
        let tails = self
            .objects
            .list(&self.objects.resumable_prefix(), STAGING_SWEEP_LIMIT)
            .await?;
        let old: Vec<(String, ObjectId)> = tails
            .into_iter()
            .filter(|(_, written)| *written < cutoff)
            .filter_map(|(key, _)| upload_id_of_tail(&key).map(|id| (key, id)))
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let ids: Vec<ObjectId> = old.iter().map(|(_, id)| *id).collect();
        // A pending upload keeps its named tail and the shared one (older versions').
        let pending: Vec<AttachmentDocument> = self
            .attachments()
            .find(doc! { "_id": { "$in": &ids }, "status": AttachmentStatus::Pending.as_str() })
            .await?
            .try_collect()
            .await?;
        let mut named: HashSet<String> = HashSet::new();
        for document in pending {
            let lease = document.resumable.and_then(|state| state.tail_lease);
            named.insert(self.objects.resumable_tail_key_of(
                document.post_id,
                document.id,
                lease.as_deref(),
            ));
            named.insert(
                self.objects
                    .resumable_tail_key_for(document.post_id, document.id),
            );
        }
        let mut removed = 0;
        for (key, _) in old {
            if !named.contains(&key) {
                self.objects.delete(&key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Objects without a record and records without an object, as the consistency
    /// protocol should never leave them (a bug, an operator's hand, a restored backup).
    /// Each pass compares `uploads.reconcile_keys_per_pass` keys, in S3's order, going on
    /// from where the last pass (of any instance) stopped, and starting again after the
    /// last key: every object and every record is judged within a round of passes,
    /// however large the bucket prefix.
    async fn reconcile(
        &self,
        cutoff: SystemTime,
        report: &mut ReapReport,
    ) -> Result<(), StorageError> {
        let after = self.progress(RECONCILE).await?;
        let staging = self.objects.staging_prefix();
        let resumable = self.objects.resumable_prefix();
        // Only records ready before the listing began are judged by it: a resumable
        // upload that completes meanwhile writes its object after the listing.
        let listing_began = DateTime::from_system_time(SystemTime::now());
        let prefix = self.objects.key_prefix();
        let (listed, more) = self
            .objects
            .list_after(&prefix, after.as_deref(), self.reconcile_keys_per_pass)
            .await?;
        let last = listed.last().map(|(key, _)| key.clone());
        let listed: Vec<(String, SystemTime)> = listed
            .into_iter()
            .filter(|(key, _)| !key.starts_with(&staging) && !key.starts_with(&resumable))
            .collect();
        let old: Vec<String> = listed
            .iter()
            .filter(|(_, written)| *written < cutoff)
            .map(|(key, _)| key.clone())
            .collect();
        self.remove_orphans(&prefix, &old, report).await?;
        let present: HashSet<&str> = listed.iter().map(|(key, _)| key.as_str()).collect();
        // The keys this pass saw: after `after`, up to the last listed, or to the end.
        let upper = if more { last.as_deref() } else { None };
        let mut filter = doc! {
            "status": AttachmentStatus::Ready.as_str(),
            "created_at": { "$lt": DateTime::from_system_time(cutoff) },
            "updated_at": { "$lt": listing_began },
            "object_missing_since": { "$exists": false },
        };
        let mut post_range = Document::new();
        if let Some(lower) = after.as_deref().and_then(|key| post_id_of(&prefix, key)) {
            post_range.insert("$gte", lower);
        }
        if let Some(upper) = upper.and_then(|key| post_id_of(&prefix, key)) {
            post_range.insert("$lte", upper);
        }
        if !post_range.is_empty() {
            filter.insert("post_id", post_range);
        }
        let mut ready = self.attachments().find(filter).await?;
        while let Some(document) = ready.try_next().await? {
            let key = self
                .objects
                .key_for(document.post_id.to_hex(), document.id.to_hex());
            let seen = |key: &str| {
                after.as_deref().is_none_or(|after| key > after)
                    && upper.is_none_or(|upper| key <= upper)
            };
            for name in document.variants.keys() {
                let variant = self
                    .objects
                    .variant_key_for(document.post_id, document.id, name);
                if seen(&variant) && !present.contains(variant.as_str()) {
                    tracing::warn!(key = %variant, "a recorded variant's object is missing; it renders again");
                    self.attachments()
                        .update_one(
                            doc! { "_id": document.id },
                            doc! { "$unset": { format!("variants.{name}"): "" } },
                        )
                        .await?;
                    report.forgotten_variants += 1;
                }
            }
            if seen(&key) && !present.contains(key.as_str()) {
                tracing::error!(
                    %key,
                    attachment_id = %document.id,
                    "a ready attachment's object is missing; marked object_missing_since"
                );
                self.attachments()
                    .update_one(
                        doc! { "_id": document.id },
                        doc! { "$set": { "object_missing_since": now() } },
                    )
                    .await?;
                report.records_missing_objects += 1;
            }
        }
        self.record_progress(RECONCILE, if more { last } else { None })
            .await
    }

    /// Where the reconciliation `of` goes on from (`None`: the start).
    async fn progress(&self, of: &str) -> Result<Option<String>, StorageError> {
        Ok(self
            .database
            .collection::<Document>(PROGRESS)
            .find_one(doc! { "_id": of })
            .await?
            .and_then(|state| state.get_str("after").ok().map(str::to_owned)))
    }

    /// Records where the reconciliation `of` goes on from next pass.
    async fn record_progress(&self, of: &str, next: Option<String>) -> Result<(), StorageError> {
        self.database
            .collection::<Document>(PROGRESS)
            .update_one(doc! { "_id": of }, doc! { "$set": { "after": next } })
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Deletes the objects among `keys` (under `prefix`) that no record names.
    async fn remove_orphans(
        &self,
        prefix: &str,
        keys: &[String],
        report: &mut ReapReport,
    ) -> Result<(), StorageError> {
        for chunk in keys.chunks(500) {
            let ids: Vec<ObjectId> = chunk
                .iter()
                .filter_map(|key| ObjectKey::parse(prefix, key).map(|found| found.attachment_id))
                .collect();
            let mut known: HashSet<(ObjectId, Option<String>)> = HashSet::new();
            let mut records = self
                .attachments()
                .find(doc! { "_id": { "$in": &ids } })
                .await?;
            while let Some(document) = records.try_next().await? {
                known.insert((document.id, None));
                known.extend(
                    document
                        .variants
                        .into_keys()
                        .map(|name| (document.id, Some(name))),
                );
            }
            for key in chunk {
                let named = ObjectKey::parse(prefix, key)
                    .is_some_and(|found| known.contains(&(found.attachment_id, found.variant)));
                if !named {
                    tracing::warn!(%key, "deleting an object no attachment record names");
                    self.objects.delete(key).await?;
                    report.removed_orphan_objects += 1;
                }
            }
        }
        Ok(())
    }

    /// A holder name for this process's reaper lease.
    pub fn reaper_holder() -> String {
        lease::holder_name(LEASE)
    }
}

/// What an object key under the prefix names: `{post_id}/{attachment_id}` an attachment's
/// bytes, `{post_id}/{attachment_id}/{name}` one of its variants.
#[derive(Debug, PartialEq, Eq)]
struct ObjectKey {
    post_id: ObjectId,
    attachment_id: ObjectId,
    variant: Option<String>,
}

impl ObjectKey {
    /// `None` for any other key under the prefix (a staged upload, a tail, a stranger).
    fn parse(prefix: &str, key: &str) -> Option<Self> {
        let mut segments = key.strip_prefix(prefix)?.split('/');
        let post_id = ObjectId::parse_str(segments.next()?).ok()?;
        let attachment_id = ObjectId::parse_str(segments.next()?).ok()?;
        let variant = segments.next().map(str::to_owned);
        if segments.next().is_some() || variant.as_deref() == Some("") {
            return None;
        }
        Some(Self {
            post_id,
            attachment_id,
            variant,
        })
    }
}

/// The post id of an attachment's or a variant's object key.
fn post_id_of(prefix: &str, key: &str) -> Option<ObjectId> {
    ObjectKey::parse(prefix, key).map(|found| found.post_id)
}

/// The upload id of a tail's key, `…/{upload_id}` or `…/{upload_id}.{lease}`.
fn upload_id_of_tail(key: &str) -> Option<ObjectId> {
    let name = key.rsplit('/').next()?;
    let id = name.split_once('.').map_or(name, |(id, _)| id);
    ObjectId::parse_str(id).ok()
}
