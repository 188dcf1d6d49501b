//! The reaper: what a killed process leaves behind is gone after one pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use mongodb::bson::doc;

use test_support::{MIB, pseudo_random};

use storage::{Attachment, PostId};

use crate::support::{Chunk, Harness, Options, harness_with, stream_of};

#[tokio::test]
async fn the_reaper_removes_a_pending_record_its_object_and_stale_multipart_uploads() {
    let h = harness_with(Options {
        pending_ttl_secs: 0,
        ..Options::default()
    })
    .await;
    let post = h.post().await;

    // A process killed mid-upload: 11 MiB sent (two parts started), then nothing, and
    // the upload future is never dropped, so no clean-up code runs.
    let (chunks, _) = pseudo_random(11 * MIB);
    let stalled = stream_of(chunks).chain(futures::stream::pending::<Chunk>());
    let mut killed = Box::pin(
        h.storage
            .upload_attachment(post, None, "killed.bin", None, stalled),
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut killed)
            .await
            .is_err()
    );
    std::mem::forget(killed);

    // A process killed between storing the bytes and marking them ready.
    let ticket = h
        .storage
        .begin_direct_upload(post, None, "orphan.txt", "text/plain", 5, None)
        .await
        .expect("begin");
    h.stored
        .s3
        .put_object()
        .bucket(&h.stored.bucket)
        .key(h.storage.objects().staging_key_for(post, ticket.upload_id))
        .body(aws_sdk_s3::primitives::ByteStream::from(
            Bytes::from_static(b"bytes"),
        ))
        .send()
        .await
        .expect("put");

    // A multipart upload nobody remembers.
    h.stored
        .s3
        .create_multipart_upload()
        .bucket(&h.stored.bucket)
        .key(format!("{}/{post}/stray", h.stored.prefix))
        .send()
        .await
        .expect("create multipart upload");

    // The direct upload's record; the streamed upload has only its reservation.
    assert_eq!(h.stored.attachment_records().await, 1);
    assert!(!h.stored.multipart_uploads().await.is_empty());

    let report = h.storage.reap().await.expect("reaper pass");

    assert_eq!(report.expired_uploads, 2);
    assert!(report.aborted_multipart_uploads >= 1);
    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn only_one_instance_reaps_at_a_time() {
    let h = harness_with(Options::default()).await;

    let first = h
        .storage
        .reap_exclusively("instance-a", Duration::from_secs(60))
        .await
        .expect("first");
    let second = h
        .storage
        .reap_exclusively("instance-b", Duration::from_secs(60))
        .await
        .expect("second");

    assert!(first.is_some());
    assert!(second.is_none());
}

#[tokio::test]
async fn an_object_no_record_names_is_deleted_once_older_than_the_pending_ttl() {
    // Three seconds: the first pass must end within them, on a busy machine too.
    let h = harness_with(Options {
        pending_ttl_secs: 3,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    put_stray_object(&h, post).await;
    let young = h.storage.reap().await.expect("reap");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;

    let old = h.storage.reap().await.expect("reap");

    assert_eq!(
        young.removed_orphan_objects, 0,
        "within the grace, it is left alone"
    );
    assert_eq!(old.removed_orphan_objects, 1);
    h.stored.assert_nothing_stored().await;
}

/// A service whose pending TTL is a second, with one ready attachment, older than that,
/// whose object was deleted behind its back.
/// The reports of `passes` reaper passes, one after the other.
async fn reap_passes(h: &crate::support::Harness, passes: usize) -> Vec<storage::ReapReport> {
    let mut reports = Vec::with_capacity(passes);
    for _ in 0..passes {
        reports.push(h.storage.reap().await.expect("reap"));
    }
    reports
}

/// Puts an object under the post's keys that no record names.
async fn put_stray_object(h: &crate::support::Harness, post: storage::PostId) {
    let stray = h
        .storage
        .objects()
        .key_for(post, mongodb::bson::oid::ObjectId::new().to_hex());
    h.stored
        .s3
        .put_object()
        .bucket(&h.stored.bucket)
        .key(&stray)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"nobody's"))
        .send()
        .await
        .expect("put");
}

async fn ready_attachment_whose_object_is_gone() -> crate::support::Harness {
    let h = harness_with(Options {
        pending_ttl_secs: 1,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    let attachment = h.attach(post, "lost.txt", None, b"lost").await;
    h.stored
        .s3
        .delete_object()
        .bucket(&h.stored.bucket)
        .key(h.storage.objects().key_for(post, attachment.id))
        .send()
        .await
        .expect("delete behind the service's back");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    h
}

#[tokio::test]
async fn a_ready_record_whose_object_is_missing_is_reported_once() {
    let h = ready_attachment_whose_object_is_gone().await;

    let first = h.storage.reap().await.expect("reap");
    let second = h.storage.reap().await.expect("reap");

    assert_eq!(first.records_missing_objects, 1);
    assert_eq!(
        second.records_missing_objects, 0,
        "marked, so reported once"
    );
}

#[tokio::test]
async fn a_record_that_turned_ready_after_the_listing_is_not_called_missing() {
    let h = ready_attachment_whose_object_is_gone().await;
    // As a resumable upload created long ago that completes while the pass runs: its
    // object is written after the pass listed the bucket, its record is ready after that.
    let later = mongodb::bson::DateTime::from_system_time(
        std::time::SystemTime::now() + std::time::Duration::from_secs(60),
    );
    h.stored
        .update_every("attachments", doc! { "$set": { "updated_at": later } })
        .await;

    let report = h.storage.reap().await.expect("reap");

    assert_eq!(report.records_missing_objects, 0);
}

#[tokio::test]
async fn a_ready_attachment_its_post_does_not_list_is_listed_again() {
    let h = harness_with(Options {
        pending_ttl_secs: 1,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    let attachment = h.attach(post, "kept.txt", None, b"kept").await;
    // A crash between the record turning ready and the post listing it.
    h.stored
        .update_every("posts", doc! { "$set": { "attachments": [] } })
        .await;
    assert!(h.listed(post).await.is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    let first = h.storage.reap().await.expect("reap");
    let second = h.storage.reap().await.expect("reap");

    assert_eq!(first.restored_attachments, 1);
    assert_eq!(second.restored_attachments, 0);
    assert_eq!(h.listed(post).await, vec![attachment]);
}

#[tokio::test]
async fn an_upload_its_post_refused_left_by_a_dead_process_is_removed_not_listed() {
    let h = harness_with(Options {
        pending_ttl_secs: 1,
        ..Options::default()
    })
    .await;
    let post = h.post_by("ann").await;
    h.storage
        .upload_attachment(
            post,
            Some("ann"),
            "refused.txt",
            None,
            stream_of(vec![Bytes::from_static(b"not ann's")]),
        )
        .await
        .expect("upload");
    // Mallory's upload: the write that would list it refused it, and the process died
    // before removing its record and object.
    h.stored
        .update_every("posts", doc! { "$set": { "attachments": [] } })
        .await;
    h.stored
        .update_every("attachments", doc! { "$set": { "uploader": "mallory" } })
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let report = h.storage.reap().await.expect("reap");

    assert_eq!(report.restored_attachments, 0);
    assert_eq!(report.removed_attachments, 1);
    assert!(h.listed(post).await.is_empty());
    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn only_attachments_published_in_the_last_day_are_checked_for_a_listing() {
    let h = harness_with(Options {
        pending_ttl_secs: 1,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    h.attach(post, "old.txt", None, b"old").await;
    h.stored
        .update_every("posts", doc! { "$set": { "attachments": [] } })
        .await;
    let two_days_ago = mongodb::bson::DateTime::from_millis(
        mongodb::bson::DateTime::now().timestamp_millis() - 2 * 24 * 3600 * 1000,
    );
    h.stored
        .update_every(
            "attachments",
            doc! { "$set": { "created_at": two_days_ago } },
        )
        .await;

    let report = h.storage.reap().await.expect("reap");

    assert_eq!(
        report.restored_attachments, 0,
        "older records were listed by the migration; the pass stays bounded"
    );
}

#[tokio::test]
async fn orphans_beyond_one_pass_are_found_by_the_passes_after_it() {
    let h = harness_with(Options {
        pending_ttl_secs: 1,
        reconcile_keys_per_pass: 2,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    for _ in 0..5 {
        put_stray_object(&h, post).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let removed: Vec<usize> = reap_passes(&h, 3)
        .await
        .iter()
        .map(|report| report.removed_orphan_objects)
        .collect();

    assert_eq!(removed, vec![2, 2, 1], "two keys a pass, in key order");
    assert!(h.stored.object_keys().await.is_empty());
}

#[tokio::test]
async fn a_missing_object_beyond_one_pass_is_reported_by_a_later_pass() {
    let h = harness_with(Options {
        pending_ttl_secs: 1,
        reconcile_keys_per_pass: 2,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    let mut attachments = Vec::new();
    for name in ["1.txt", "2.txt", "3.txt", "4.txt", "5.txt"] {
        attachments.push(h.attach(post, name, None, b"kept").await);
    }
    let last = attachments.last().expect("five");
    h.stored
        .s3
        .delete_object()
        .bucket(&h.stored.bucket)
        .key(h.storage.objects().key_for(post, last.id))
        .send()
        .await
        .expect("delete behind the service's back");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let reported: Vec<usize> = reap_passes(&h, 4)
        .await
        .iter()
        .map(|report| report.records_missing_objects)
        .collect();

    assert_eq!(
        reported.iter().sum::<usize>(),
        1,
        "found once, when its part of the prefix was listed: {reported:?}"
    );
    assert_eq!(reported[0], 0, "not by a pass that saw only the first keys");
}

/// How many counts the reaper set right while it passed as often as it could until
/// `deletions` were done; each of them counted by the request that made it, none needed.
async fn corrections_during(h: &Harness, deletions: impl Future<Output = ()>) -> u64 {
    let done = AtomicBool::new(false);
    let deletions = async {
        deletions.await;
        done.store(true, Ordering::Relaxed);
    };
    let reconciliations = async {
        let mut corrected = 0;
        while !done.load(Ordering::Relaxed) {
            corrected += h.storage.reap().await.expect("reap").corrected_usage;
        }
        corrected
    };
    tokio::join!(deletions, reconciliations).1
}

/// Stores `bytes` as an attachment that `ann` uploads to `post`.
async fn upload_by_ann(h: &Harness, post: PostId, bytes: &'static [u8]) -> Attachment {
    h.storage
        .upload_attachment(
            post,
            Some("ann"),
            "file.txt",
            None,
            stream_of(vec![Bytes::from_static(bytes)]),
        )
        .await
        .expect("upload")
}

fn with_a_quota() -> Options {
    Options {
        quota_bytes_per_user: 100 * MIB,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_leaves_the_count_of_a_user_whose_attachment_deletion_is_in_flight() {
    let h = harness_with(with_a_quota()).await;
    let post = h.post_by("ann").await;
    upload_by_ann(&h, post, b"kept bytes").await;

    let corrected = corrections_during(&h, async {
        for _ in 0..40 {
            let attachment = upload_by_ann(&h, post, b"soon gone").await;
            h.storage
                .delete_attachment(post, attachment.id)
                .await
                .expect("delete");
        }
    })
    .await;

    assert_eq!(corrected, 0, "the reaper rewrote a count that was exact");
    let usage = h.storage.usage("ann").await.expect("usage");
    assert_eq!((usage.bytes_used, usage.attachments), (10, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_leaves_the_count_of_a_user_whose_post_deletion_is_in_flight() {
    let h = harness_with(with_a_quota()).await;
    let kept = h.post_by("ann").await;
    upload_by_ann(&h, kept, b"kept bytes").await;

    let corrected = corrections_during(&h, async {
        for _ in 0..40 {
            let post = h.post_by("ann").await;
            upload_by_ann(&h, post, b"soon gone").await;
            h.storage.delete_post(post).await.expect("delete");
        }
    })
    .await;

    assert_eq!(corrected, 0, "the reaper rewrote a count that was exact");
    let usage = h.storage.usage("ann").await.expect("usage");
    assert_eq!((usage.bytes_used, usage.attachments), (10, 1));
}
