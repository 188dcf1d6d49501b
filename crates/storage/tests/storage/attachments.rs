//! Attachment life cycle: sniffing, the allow-list, deletes, and direct uploads.

use bytes::Bytes;
use storage::StorageError;

use test_support::{ChaosProxy, socket_address_of, testbed};

use crate::support::{Options, harness, harness_with, stream_of};

/// A whole 1 × 1 PNG: images are decoded before they are stored.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\x0bIDATx\x9cc`\0\x02\0\0\x05\0\x01z^\xab?\0\0\0\0IEND\xaeB`\x82";

#[tokio::test]
async fn the_stored_type_is_sniffed_not_declared() {
    let h = harness().await;
    let post = h.post().await;

    let attachment = h.attach(post, "image.txt", Some("text/plain"), PNG).await;

    assert_eq!(attachment.content_type, "image/png");
    assert_eq!(attachment.filename, "image.txt");
}

#[tokio::test]
async fn a_disallowed_type_is_rejected_before_anything_is_stored() {
    let h = harness_with(Options {
        allowed: vec!["text/plain".into()],
        ..Options::default()
    })
    .await;
    let post = h.post().await;

    let result = h
        .storage
        .upload_attachment(
            post,
            None,
            "a.png",
            Some("text/plain"),
            stream_of(vec![Bytes::from_static(PNG)]),
        )
        .await;

    assert!(
        matches!(&result, Err(StorageError::UnsupportedType { content_type }) if content_type == "image/png"),
        "{result:?}"
    );
    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn an_upload_to_an_unknown_post_is_not_found() {
    let h = harness().await;

    let result = h
        .storage
        .upload_attachment(
            storage::PostId::new(),
            None,
            "a.txt",
            None,
            stream_of(vec![Bytes::from_static(b"x")]),
        )
        .await;

    assert!(
        matches!(result, Err(StorageError::NotFound(_))),
        "{result:?}"
    );
    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn deleting_an_attachment_removes_its_object_and_record() {
    let h = harness().await;
    let post = h.post().await;
    let attachment = h.attach(post, "a.txt", None, b"bye").await;

    h.storage
        .delete_attachment(post, attachment.id)
        .await
        .expect("delete");

    h.stored.assert_nothing_stored().await;
    let again = h.storage.attachment(post, attachment.id).await;
    assert!(matches!(again, Err(StorageError::NotFound(_))));
}

/// PUTs `bytes` to a direct upload's presigned URL, as a client does.
async fn put_presigned(ticket: &storage::DirectUploadTicket, bytes: &'static [u8]) {
    let mut request = reqwest::Client::new().put(&ticket.url.url);
    for (name, value) in &ticket.url.headers {
        request = request.header(name, value);
    }
    let response = request.body(bytes).send().await.expect("PUT presigned");
    assert!(response.status().is_success(), "{}", response.status());
}

/// A direct upload of `PNG`, begun and PUT, not completed yet.
async fn put_direct_upload(
    h: &crate::support::Harness,
    post: storage::PostId,
) -> storage::DirectUploadTicket {
    let ticket = h
        .storage
        .begin_direct_upload(
            post,
            None,
            "direct.png",
            "image/png",
            PNG.len() as u64,
            None,
        )
        .await
        .expect("begin");
    put_presigned(&ticket, PNG).await;
    ticket
}

/// A completed direct upload of `PNG`.
async fn completed_direct_upload(
    h: &crate::support::Harness,
    post: storage::PostId,
) -> (storage::DirectUploadTicket, storage::Attachment) {
    let ticket = put_direct_upload(h, post).await;
    let attachment = h
        .storage
        .complete_direct_upload(post, ticket.upload_id)
        .await
        .expect("complete");
    (ticket, attachment)
}

/// The bytes and digest a download of `attachment` serves.
async fn served(h: &crate::support::Harness, attachment: &storage::Attachment) -> Vec<u8> {
    use futures::TryStreamExt;
    let body = h
        .storage
        .open_attachment(attachment, None)
        .await
        .expect("open");
    let chunks: Vec<Bytes> = body.stream.try_collect().await.expect("download");
    chunks.concat()
}

/// A direct upload of `PNG`, PUT and not completed yet, with S3 behind a proxy.
async fn uploaded_behind_a_proxy() -> (
    std::sync::Arc<ChaosProxy>,
    crate::support::Harness,
    storage::PostId,
    storage::DirectUploadTicket,
) {
    let proxy = ChaosProxy::start(socket_address_of(&testbed("AWS_ENDPOINT_URL"))).await;
    let h = harness_with(Options {
        endpoint: Some(format!("http://{}", proxy.address)),
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    let ticket = put_direct_upload(&h, post).await;
    (proxy, h, post, ticket)
}

#[tokio::test]
async fn a_direct_upload_whose_completion_failed_midway_completes_when_retried() {
    let (proxy, h, post, ticket) = uploaded_behind_a_proxy().await;
    // S3 answers the staged object's HEAD, its copy and one more request, then goes away:
    // moto closes its connection after every response, so each request is a connection.
    proxy.cut_after_connections(3);

    let first = h
        .storage
        .complete_direct_upload(post, ticket.upload_id)
        .await;
    proxy.restore();
    let attachment = match first {
        Ok(attachment) => attachment,
        Err(error) => {
            assert!(error.is_unavailable(), "{error:?}");
            h.storage
                .complete_direct_upload(post, ticket.upload_id)
                .await
                .expect("the retry completes")
        }
    };

    assert_eq!(served(&h, &attachment).await, PNG);
}

#[tokio::test]
async fn a_second_completion_while_one_is_running_is_refused_as_locked() {
    let (proxy, h, post, ticket) = uploaded_behind_a_proxy().await;
    // The first completion waits on S3 while the second one asks.
    proxy.stall();
    let storage = h.storage.clone();
    let first =
        tokio::spawn(async move { storage.complete_direct_upload(post, ticket.upload_id).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let second = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        h.storage.complete_direct_upload(post, ticket.upload_id),
    )
    .await;
    proxy.restore();

    assert!(
        matches!(second, Ok(Err(StorageError::UploadLocked))),
        "{second:?}"
    );
    let attachment = first.await.expect("join").expect("the first completes");
    assert_eq!(served(&h, &attachment).await, PNG);
}

/// Bytes of `PNG`'s length that are not a PNG.
const NOT_A_PNG: &[u8] = b"<html><body><p>not a png, as long as the png above</p></body></html>";

#[tokio::test]
async fn a_put_after_completion_cannot_change_the_served_bytes() {
    let h = harness().await;
    let post = h.post().await;
    let (ticket, attachment) = completed_direct_upload(&h, post).await;
    assert_eq!(NOT_A_PNG.len(), PNG.len());

    put_presigned(&ticket, NOT_A_PNG).await;

    assert_eq!(served(&h, &attachment).await, PNG);
    let again = h
        .storage
        .complete_direct_upload(post, ticket.upload_id)
        .await
        .expect("completing twice returns the attachment");
    assert_eq!(again.sha256, attachment.sha256);
    assert_eq!(served(&h, &again).await, PNG);
}

#[tokio::test]
async fn a_put_after_the_attachment_was_deleted_is_swept_by_the_reaper() {
    let h = harness_with(Options {
        pending_ttl_secs: 1,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    let (ticket, attachment) = completed_direct_upload(&h, post).await;
    h.storage
        .delete_attachment(post, attachment.id)
        .await
        .expect("delete");

    put_presigned(&ticket, NOT_A_PNG).await;
    assert_eq!(
        h.stored.object_keys().await.len(),
        1,
        "the PUT landed in staging"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = h.storage.reap().await.expect("reap");

    assert_eq!(report.removed_staged_objects, 1);
    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_direct_upload_becomes_ready_after_verification() {
    let h = harness().await;
    let post = h.post().await;
    let ticket = h
        .storage
        .begin_direct_upload(
            post,
            None,
            "direct.png",
            "image/png",
            PNG.len() as u64,
            None,
        )
        .await
        .expect("begin");
    assert_eq!(ticket.url.method, "PUT");

    let mut request = reqwest::Client::new().put(&ticket.url.url);
    for (name, value) in &ticket.url.headers {
        request = request.header(name, value);
    }
    let response = request.body(PNG).send().await.expect("PUT presigned");
    assert!(response.status().is_success(), "{}", response.status());

    let attachment = h
        .storage
        .complete_direct_upload(post, ticket.upload_id)
        .await
        .expect("complete");
    assert_eq!(attachment.content_type, "image/png");
    assert_eq!(attachment.size, PNG.len() as u64);
    assert_eq!(h.listed(post).await.len(), 1);
}

#[tokio::test]
async fn completing_a_direct_upload_without_bytes_is_a_mismatch() {
    let h = harness().await;
    let post = h.post().await;
    let ticket = h
        .storage
        .begin_direct_upload(post, None, "never.png", "image/png", 10, None)
        .await
        .expect("begin");

    let result = h
        .storage
        .complete_direct_upload(post, ticket.upload_id)
        .await;

    assert!(
        matches!(result, Err(StorageError::UploadMismatch(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_direct_upload_of_the_wrong_size_is_a_mismatch_and_its_object_is_deleted() {
    let h = harness().await;
    let post = h.post().await;
    let ticket = h
        .storage
        .begin_direct_upload(post, None, "short.png", "image/png", 1000, None)
        .await
        .expect("begin");
    let key = h.storage.objects().staging_key_for(post, ticket.upload_id);
    h.stored
        .s3
        .put_object()
        .bucket(&h.stored.bucket)
        .key(&key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(PNG))
        .send()
        .await
        .expect("put behind the service's back");

    let result = h
        .storage
        .complete_direct_upload(post, ticket.upload_id)
        .await;

    assert!(
        matches!(result, Err(StorageError::UploadMismatch(_))),
        "{result:?}"
    );
    assert!(h.stored.object_keys().await.is_empty());
}

#[tokio::test]
async fn an_unknown_upload_id_is_not_found() {
    let h = harness().await;
    let post = h.post().await;

    let result = h
        .storage
        .complete_direct_upload(post, storage::AttachmentId::new())
        .await;

    assert!(
        matches!(result, Err(StorageError::NotFound(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_post_with_as_many_attachments_as_allowed_takes_no_more() {
    let h = harness_with(Options {
        max_attachments_per_post: 2,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    h.attach(post, "1.txt", None, b"one").await;
    h.attach(post, "2.txt", None, b"two").await;

    let streamed = h
        .storage
        .upload_attachment(
            post,
            None,
            "3.txt",
            None,
            stream_of(vec![Bytes::from_static(b"3")]),
        )
        .await;
    let direct = h
        .storage
        .begin_direct_upload(post, None, "3.txt", "text/plain", 1, None)
        .await;

    assert!(
        matches!(streamed, Err(StorageError::TooManyAttachments { limit: 2 })),
        "{streamed:?}"
    );
    assert!(matches!(
        direct,
        Err(StorageError::TooManyAttachments { limit: 2 })
    ));
}

#[tokio::test]
async fn concurrent_uploads_fill_a_post_exactly_to_its_cap() {
    let h = harness_with(Options {
        max_attachments_per_post: 3,
        ..Options::default()
    })
    .await;
    let post = h.post().await;

    let uploads = futures::future::join_all((0..10).map(|n| {
        h.storage.upload_attachment(
            post,
            None,
            "racing.txt",
            None,
            stream_of(vec![Bytes::from(format!("upload {n}"))]),
        )
    }))
    .await;

    let stored = uploads.iter().filter(|upload| upload.is_ok()).count();
    let refused = uploads
        .iter()
        .filter(|upload| matches!(upload, Err(StorageError::TooManyAttachments { limit: 3 })))
        .count();
    assert_eq!((stored, refused), (3, 7), "{uploads:?}");
    assert_eq!(h.listed(post).await.len(), 3);
    assert_eq!(h.stored.reservations().await, 0);
}

#[tokio::test]
async fn only_the_author_of_a_post_may_add_to_it_and_a_refusal_stores_nothing() {
    let h = harness().await;
    let post = h.post_by("ann").await;

    let by_bob = h
        .storage
        .upload_attachment(
            post,
            Some("bob"),
            "b.txt",
            None,
            stream_of(vec![Bytes::from_static(b"bob")]),
        )
        .await;
    let direct_by_bob = h
        .storage
        .begin_direct_upload(post, Some("bob"), "b.txt", "text/plain", 3, None)
        .await;

    assert!(matches!(by_bob, Err(StorageError::NotAuthor)), "{by_bob:?}");
    assert!(matches!(direct_by_bob, Err(StorageError::NotAuthor)));
    h.stored.assert_nothing_stored().await;
    let by_ann = h
        .storage
        .upload_attachment(
            post,
            Some("ann"),
            "a.txt",
            None,
            stream_of(vec![Bytes::from_static(b"ann")]),
        )
        .await;
    assert!(by_ann.is_ok(), "{by_ann:?}");
}

/// Post documents in any state, behind the service's back.
async fn post_documents(h: &crate::support::Harness) -> u64 {
    h.stored
        .database
        .collection::<mongodb::bson::Document>("posts")
        .count_documents(mongodb::bson::doc! {})
        .await
        .expect("count")
}

#[tokio::test]
async fn a_post_deleted_during_an_upload_is_removed_once_the_upload_gives_up() {
    let h = harness().await;
    let post = h.post().await;
    let staged = h.stage_reserved(post, "late.txt").await;

    h.storage.delete_post(post).await.expect("delete");
    let kept_for_the_upload = post_documents(&h).await;
    let published = h.storage.publish(vec![staged]).await;
    h.storage.reap().await.expect("reap");

    assert_eq!(
        kept_for_the_upload, 1,
        "the deleting post waits for its upload"
    );
    assert!(
        matches!(published, Err(StorageError::NotFound(_))),
        "{published:?}"
    );
    h.stored.assert_nothing_stored().await;
    assert!(matches!(
        h.storage.post(post).await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(post_documents(&h).await, 0);
}

#[tokio::test]
async fn a_small_upload_to_a_post_deleted_meanwhile_is_refused_and_removed() {
    let h = harness().await;
    let post = h.post().await;
    let staged = h.stage(post, "late.txt", b"late").await;

    h.storage.delete_post(post).await.expect("delete");
    let published = h.storage.publish(vec![staged]).await;
    h.storage.reap().await.expect("reap");

    assert!(
        matches!(published, Err(StorageError::NotFound(_))),
        "{published:?}"
    );
    h.stored.assert_nothing_stored().await;
    assert_eq!(post_documents(&h).await, 0);
}

#[tokio::test]
async fn a_small_file_not_listed_within_half_the_pending_ttl_is_refused_and_removed() {
    // Past that, the reaper may already have taken its object, which has no record yet,
    // for an orphan.
    let h = harness_with(Options {
        pending_ttl_secs: 0,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    let staged = h.stage(post, "slow.txt", b"too late").await;

    let published = h.storage.publish(vec![staged]).await;

    assert!(
        matches!(published, Err(StorageError::TimedOut(_))),
        "{published:?}"
    );
    h.stored.assert_nothing_stored().await;
    assert!(h.listed(post).await.is_empty());
}

#[tokio::test]
async fn deleting_an_attachment_whose_record_is_gone_unlists_it() {
    let h = harness().await;
    let post = h.post().await;
    let attachment = h.attach(post, "ghost.txt", None, b"boo").await;
    // A summary that outlived its record (a restore racing a delete, an operator).
    h.stored
        .database
        .collection::<mongodb::bson::Document>("attachments")
        .delete_many(mongodb::bson::doc! {})
        .await
        .expect("remove the record behind the service's back");

    let deleted = h.storage.delete_attachment(post, attachment.id).await;

    assert!(deleted.is_ok(), "{deleted:?}");
    assert!(h.listed(post).await.is_empty());
}

#[tokio::test]
async fn files_staged_while_their_post_was_deleted_are_not_published() {
    let h = harness().await;
    let post = h.post().await;
    let staged = h.stage(post, "late.txt", b"late").await;
    // A deletion that started before the record existed: the post is marked deleting,
    // and its attachments were marked before this one was inserted.
    h.stored
        .database
        .collection::<mongodb::bson::Document>("posts")
        .update_one(
            mongodb::bson::doc! { "_id": mongodb::bson::oid::ObjectId::parse_str(post.to_string()).expect("id") },
            mongodb::bson::doc! { "$set": { "status": "deleting" } },
        )
        .await
        .expect("mark the post deleting");

    let published = h.storage.publish(vec![staged]).await;

    assert!(
        matches!(published, Err(StorageError::NotFound(_))),
        "{published:?}"
    );
    assert_eq!(h.stored.attachment_records().await, 0);
    assert!(h.stored.object_keys().await.is_empty());
}

#[tokio::test]
async fn adding_or_deleting_an_attachment_changes_the_post_version() {
    let h = harness().await;
    let post = h.post().await;
    let created = h.storage.post(post).await.expect("read").version;

    let attachment = h.attach(post, "a.txt", None, b"a").await;
    let with_attachment = h.storage.post(post).await.expect("read").version;
    h.storage
        .delete_attachment(post, attachment.id)
        .await
        .expect("delete");
    let without = h.storage.post(post).await.expect("read").version;

    assert!(with_attachment > created);
    assert!(without > with_attachment);
}

#[tokio::test]
async fn attachments_list_oldest_first_whatever_order_they_are_published_in() {
    let h = harness().await;
    let post = h.post().await;
    let older = h.stage(post, "older.txt", b"x").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let newer = h.stage(post, "newer.txt", b"x").await;

    h.storage.publish(vec![newer]).await.expect("publish");
    h.storage.publish(vec![older]).await.expect("publish");

    let names: Vec<String> = h
        .listed(post)
        .await
        .into_iter()
        .map(|attachment| attachment.filename)
        .collect();
    assert_eq!(names, ["older.txt", "newer.txt"]);
}

#[tokio::test]
async fn a_deleted_attachment_is_not_listed_even_when_its_removal_is_left_to_the_reaper() {
    let h = harness().await;
    let post = h.post().await;
    let attachment = h.attach(post, "gone.txt", None, b"gone").await;
    // A deletion interrupted after marking the record: the object is still there.
    h.stored
        .update_every(
            "attachments",
            mongodb::bson::doc! { "$set": { "status": "deleting" } },
        )
        .await;

    let again = h.storage.delete_attachment(post, attachment.id).await;

    assert!(again.is_ok(), "{again:?}");
    assert!(h.listed(post).await.is_empty());
    h.stored.assert_nothing_stored().await;
}
