//! Variants: rendered once on first request, recorded on their attachment, deleted with
//! it, and reconciled by the reaper.

use std::time::Duration;

use storage::{AttachmentId, Entity, PostId, StorageError};
use test_support::images::photo_jpeg;

use crate::support::{Harness, Options, harness, harness_with, stream_of};

/// Stores a 64 × 48 photo as a ready attachment of `post`.
async fn attach_photo(h: &Harness, post: PostId) -> AttachmentId {
    h.storage
        .upload_attachment(
            post,
            None,
            "photo.jpg",
            None,
            stream_of(vec![photo_jpeg(64, 48)]),
        )
        .await
        .expect("upload")
        .id
}

/// A harness whose pending TTL is a second, with a photo and its rendered thumb.
async fn photo_with_a_thumb_for_the_reaper() -> (Harness, PostId, AttachmentId) {
    let h = harness_with(Options {
        pending_ttl_secs: 1,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    let photo = attach_photo(&h, post).await;
    h.storage
        .variant(post, photo, "thumb")
        .await
        .expect("thumb");
    (h, post, photo)
}

#[tokio::test]
async fn a_variant_is_rendered_on_first_request_then_read_from_its_record() {
    let h = harness().await;
    let post = h.post().await;
    let photo = attach_photo(&h, post).await;

    let first = h
        .storage
        .variant(post, photo, "thumb")
        .await
        .expect("thumb");
    let again = h
        .storage
        .variant(post, photo, "thumb")
        .await
        .expect("thumb");

    assert_eq!((first.width, first.height), (16, 16));
    assert_eq!(first.content_type, "image/jpeg");
    assert_eq!(first, again);
    assert_eq!(h.storage.variants_rendered(), 1);
    let key = h.storage.objects().variant_key_for(post, photo, "thumb");
    assert!(h.stored.object_keys().await.contains(&key));
}

#[tokio::test]
async fn concurrent_first_requests_render_a_variant_once() {
    let h = harness().await;
    let post = h.post().await;
    let photo = attach_photo(&h, post).await;

    let requests = (0..8).map(|_| h.storage.variant(post, photo, "thumb"));
    let variants = futures::future::try_join_all(requests)
        .await
        .expect("thumbs");

    assert!(variants.iter().all(|variant| *variant == variants[0]));
    assert_eq!(h.storage.variants_rendered(), 1);
}

#[tokio::test]
async fn a_name_that_is_not_configured_is_not_found() {
    let h = harness().await;
    let post = h.post().await;
    let photo = attach_photo(&h, post).await;

    let unknown = h.storage.variant(post, photo, "huge").await;

    assert!(matches!(
        unknown,
        Err(StorageError::NotFound(Entity::Variant))
    ));
}

#[tokio::test]
async fn a_file_that_is_not_an_image_has_no_variants() {
    let h = harness().await;
    let post = h.post().await;
    let text = h.attach(post, "notes.txt", None, b"plain text").await;

    let refused = h.storage.variant(post, text.id, "thumb").await;

    assert!(matches!(refused, Err(StorageError::NotAnImage)));
}

#[tokio::test]
async fn deleting_an_attachment_deletes_its_variants() {
    let h = harness().await;
    let post = h.post().await;
    let photo = attach_photo(&h, post).await;
    h.storage
        .variant(post, photo, "thumb")
        .await
        .expect("thumb");

    h.storage
        .delete_attachment(post, photo)
        .await
        .expect("delete");

    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn the_reaper_removes_a_variant_object_no_record_names() {
    let (h, post, photo) = photo_with_a_thumb_for_the_reaper().await;
    // A render whose process died between storing the object and recording it.
    let stray = h.storage.objects().variant_key_for(post, photo, "retired");
    h.stored
        .s3
        .put_object()
        .bucket(&h.stored.bucket)
        .key(&stray)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"pixels"))
        .send()
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let report = h.storage.reap().await.expect("reap");

    assert_eq!(report.removed_orphan_objects, 1);
    let keys = h.stored.object_keys().await;
    assert!(!keys.contains(&stray));
    assert_eq!(
        keys.len(),
        2,
        "the photo and its recorded thumb stay: {keys:?}"
    );
}

#[tokio::test]
async fn the_reaper_forgets_a_recorded_variant_whose_object_is_gone_so_it_renders_again() {
    let (h, post, photo) = photo_with_a_thumb_for_the_reaper().await;
    let key = h.storage.objects().variant_key_for(post, photo, "thumb");
    h.stored
        .s3
        .delete_object()
        .bucket(&h.stored.bucket)
        .key(&key)
        .send()
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let report = h.storage.reap().await.expect("reap");
    h.storage
        .variant(post, photo, "thumb")
        .await
        .expect("thumb");

    assert_eq!(report.forgotten_variants, 1);
    assert_eq!(report.records_missing_objects, 0);
    assert_eq!(h.storage.variants_rendered(), 2);
    assert!(h.stored.object_keys().await.contains(&key));
}
