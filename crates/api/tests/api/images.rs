//! Images through every way in: stored without their metadata, described as displayed,
//! refused with 422 when over the limits, with nothing left behind.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use test_support::expect_problem;
use test_support::images::{contains, phone_photo, png_claiming};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, test_settings};

/// What a stored phone photo must no longer hold: the GPS directory's pointer tag, the
/// XMP packet and the comment that name the camera.
const GIVEAWAYS: [&[u8]; 3] = [&[0x88, 0x25, 0, 4], b"xmpmeta", b"camera serial"];

/// Checks that `attachment` is the photo as displayed, and that its stored bytes are
/// what it says and hold none of the photo's metadata.
async fn assert_stripped_and_described(app: &TestApp, attachment: &Value) {
    assert_eq!(attachment["image"]["width"], 20, "{attachment}");
    assert_eq!(attachment["image"]["height"], 40);
    assert!(
        attachment["image"]["blurhash"]
            .as_str()
            .is_some_and(|hash| hash.len() >= 6)
    );
    let content = app
        .get(attachment["content_url"].as_str().expect("content_url"))
        .await
        .bytes()
        .await
        .expect("content");
    for giveaway in GIVEAWAYS {
        assert!(
            !contains(&content, giveaway),
            "{giveaway:?} is still stored"
        );
    }
    assert!(content.len() < phone_photo().len());
    assert_eq!(attachment["size"], content.len());
    assert_eq!(
        attachment["sha256"],
        hex::encode(Sha256::digest(&content)).as_str()
    );
}

#[tokio::test]
async fn a_phone_photo_sent_as_a_form_is_stored_without_its_metadata_and_described_upright() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let attachment = app.upload_one(&post, "photo.jpg", &phone_photo()).await;

    assert_stripped_and_described(&app, &attachment).await;
}

#[tokio::test]
async fn a_post_lists_its_images_with_their_size_and_placeholder() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    app.upload_one(&post, "photo.jpg", &phone_photo()).await;

    let read = app.get_json(&format!("/v1/posts/{post}")).await;

    assert_eq!(read["attachments"][0]["image"]["width"], 20, "{read}");
    assert_eq!(read["attachments"][0]["image"]["height"], 40);
}

#[tokio::test]
async fn a_phone_photo_sent_as_a_resumable_upload_is_stored_without_its_metadata() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let finished = app.upload_resumable(&post, phone_photo()).await;

    assert_eq!(finished.status(), 204);
    let location = finished.headers()["content-location"]
        .to_str()
        .expect("Content-Location")
        .to_owned();
    let attachment = app.get_json(&location).await;
    assert_stripped_and_described(&app, &attachment).await;
}

#[tokio::test]
async fn a_phone_photo_sent_by_presigned_put_is_stored_without_its_metadata() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let completed = app
        .upload_direct(&post, "photo.jpg", "image/jpeg", phone_photo(), json!({}))
        .await;

    assert_eq!(completed.status(), 201);
    let attachment: Value = completed.json().await.expect("JSON");
    assert_stripped_and_described(&app, &attachment).await;
}

#[tokio::test]
async fn an_image_whose_header_claims_too_many_pixels_is_refused_with_422_and_leaves_nothing() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let refused = app
        .upload_raw_streamed(&post, "bomb.png", png_claiming(100_000, 100_000))
        .await;

    let problem = expect_problem(refused, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("media.max_dimension")),
        "{problem}"
    );
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_truncated_image_is_refused_with_422_and_leaves_nothing() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let photo = phone_photo();

    let refused = app
        .upload(&post, &[("cut.jpg", &photo[..photo.len() / 2])])
        .await;

    expect_problem(refused, 422).await;
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn bytes_that_are_an_image_are_processed_whatever_type_was_declared() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let stored = app
        .upload_raw_streamed(&post, "notes.txt", phone_photo())
        .await;

    assert_eq!(stored.status(), 201);
    let list: Value = stored.json().await.expect("JSON");
    assert_eq!(list["items"][0]["content_type"], "image/jpeg");
    assert_stripped_and_described(&app, &list["items"][0]).await;
}

#[tokio::test]
async fn images_beyond_the_processing_turns_wait_for_one_rather_than_fail() {
    let mut settings = test_settings();
    settings.media.max_concurrent_processing = std::num::NonZero::<u32>::MIN;
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;
    let photo = phone_photo();
    let files: [(&str, &[u8]); 1] = [("photo.jpg", &photo)];

    let uploads = (0..4).map(|_| app.upload(&post, &files));
    let answers = futures::future::join_all(uploads).await;

    for answer in answers {
        assert_eq!(answer.status(), 201);
    }
}

#[tokio::test]
async fn a_zero_byte_file_named_as_an_image_is_an_empty_file_not_an_image() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let attachment = app.upload_one(&post, "empty.png", b"").await;

    assert_eq!(attachment["size"], 0, "{attachment}");
    assert!(attachment["image"].is_null(), "{attachment}");
    assert_ne!(attachment["content_type"], "image/png");
}

#[tokio::test]
async fn an_image_whose_decoding_needs_more_than_the_upload_memory_is_refused_naming_it() {
    let mut settings = test_settings();
    settings.admission.upload_memory_bytes = std::num::NonZero::new(24 << 20).expect("non-zero");
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;
    // 3,000 × 3,000 RGBA: 36 MB of pixels in a few kilobytes of PNG.
    let canvas = image::DynamicImage::ImageRgba8(image::RgbaImage::new(3000, 3000));
    let png = test_support::images::encoded(&canvas, image::ImageFormat::Png);

    let refused = app.upload(&post, &[("canvas.png", &png)]).await;

    let problem = expect_problem(refused, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("admission.upload_memory_bytes")),
        "{problem}"
    );
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}
