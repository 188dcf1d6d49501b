//! Variants over HTTP: an image's configured sizes, rendered once on first request, served
//! from S3 with entity tags, ranges and immutable caching, deleted with their image.

use std::time::Duration;

use serde_json::Value;
use test_support::expect_problem;
use test_support::images::photo_jpeg;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, test_settings};

/// A post with one 800 × 600 photo: (post id, attachment JSON).
async fn post_with_photo(app: &TestApp) -> (String, Value) {
    app.post_with_attachment("photo.jpg", &photo_jpeg(800, 600))
        .await
}

/// The variant link `name` of an attachment's JSON.
fn variant_link(attachment: &Value, name: &str) -> String {
    attachment["image"]["variants"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} link in {attachment}"))
        .to_owned()
}

/// Variants the service has rendered, from its metrics.
async fn variants_rendered(app: &TestApp) -> u64 {
    app.get_text("/metrics")
        .await
        .lines()
        .find_map(|line| line.strip_prefix("posts_api_variants_rendered_total "))
        .and_then(|count| count.parse().ok())
        .expect("the render counter")
}

#[tokio::test]
async fn an_image_links_to_each_configured_size() {
    let app = spawn_app().await;

    let (post, attachment) = post_with_photo(&app).await;

    let thumb = variant_link(&attachment, "thumb");
    assert!(thumb.starts_with(&format!("/v1/posts/{post}/attachments/")));
    assert!(thumb.ends_with("/variants/thumb"));
    assert!(variant_link(&attachment, "medium").ends_with("/variants/medium"));
}

#[tokio::test]
async fn the_thumb_is_rendered_on_first_request_to_its_box_then_served_from_s3() {
    let app = spawn_app().await;
    let (_, attachment) = post_with_photo(&app).await;
    let thumb = variant_link(&attachment, "thumb");

    let first = app.get(&thumb).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "image/jpeg");
    let cache = first.headers()["cache-control"].to_str().expect("ASCII");
    assert!(
        cache.contains("immutable") && cache.contains("max-age=31536000"),
        "{cache}"
    );
    let etag = first.headers()["etag"].clone();
    let bytes = first.bytes().await.expect("thumb");
    let image = image::load_from_memory(&bytes).expect("a JPEG");
    assert_eq!((image.width(), image.height()), (320, 320));

    let second = app.get(&thumb).await;
    assert_eq!(second.headers()["etag"], etag);
    assert_eq!(second.bytes().await.expect("thumb"), bytes);
    assert_eq!(variants_rendered(&app).await, 1);
    let keys = app.stored.object_keys().await;
    assert!(keys.iter().any(|key| key.ends_with("/thumb")), "{keys:?}");
}

#[tokio::test]
async fn the_medium_size_fits_the_width_and_keeps_the_proportions() {
    let mut settings = test_settings();
    let medium = settings.media.variants.get_mut("medium").expect("medium");
    medium.width = std::num::NonZero::new(400).expect("non-zero");
    let app = spawn_app_with(settings).await;
    let (_, attachment) = post_with_photo(&app).await;

    let medium = app.get(&variant_link(&attachment, "medium")).await;

    let image = image::load_from_memory(&medium.bytes().await.expect("medium")).expect("JPEG");
    assert_eq!((image.width(), image.height()), (400, 300));
}

#[tokio::test]
async fn concurrent_first_requests_render_once_and_get_the_same_bytes() {
    let app = spawn_app().await;
    let (_, attachment) = post_with_photo(&app).await;
    let thumb = variant_link(&attachment, "thumb");

    let answers = futures::future::join_all((0..6).map(|_| app.get(&thumb))).await;

    let mut bodies = Vec::new();
    for answer in answers {
        assert_eq!(answer.status(), 200);
        bodies.push(answer.bytes().await.expect("thumb"));
    }
    assert!(bodies.iter().all(|body| *body == bodies[0]));
    assert_eq!(variants_rendered(&app).await, 1);
}

#[tokio::test]
async fn a_variant_answers_304_to_its_etag_and_206_to_a_range() {
    let app = spawn_app().await;
    let (_, attachment) = post_with_photo(&app).await;
    let thumb = app.url(&variant_link(&attachment, "thumb"));
    let client = reqwest::Client::new();
    let etag = app.get(&variant_link(&attachment, "thumb")).await.headers()["etag"].clone();

    let current = client
        .get(&thumb)
        .header("if-none-match", etag)
        .send()
        .await
        .expect("answer");
    let range = client
        .get(&thumb)
        .header("range", "bytes=0-9")
        .send()
        .await
        .expect("answer");

    assert_eq!(current.status(), 304);
    assert_eq!(range.status(), 206);
    assert_eq!(range.bytes().await.expect("range").len(), 10);
}

#[tokio::test]
async fn a_variant_url_is_a_presigned_get_of_the_rendered_size() {
    let app = spawn_app().await;
    let (_, attachment) = post_with_photo(&app).await;
    let thumb = variant_link(&attachment, "thumb");

    let presigned = app.get_json(&format!("{thumb}/url")).await;
    let fetched = reqwest::get(presigned["url"].as_str().expect("url"))
        .await
        .expect("S3 answers");

    assert_eq!(fetched.status(), 200);
    let served = app.get(&thumb).await.bytes().await.expect("thumb");
    assert_eq!(fetched.bytes().await.expect("bytes"), served);
}

#[tokio::test]
async fn an_unknown_size_is_404_and_a_file_that_is_not_an_image_is_409() {
    let app = spawn_app().await;
    let (post, photo) = post_with_photo(&app).await;
    let text = app.upload_one_id(&post, "notes.txt", b"plain text").await;

    let unknown = app
        .get(&format!(
            "{}/variants/huge",
            photo["url"].as_str().expect("url")
        ))
        .await;
    let not_an_image = app
        .get(&format!(
            "/v1/posts/{post}/attachments/{text}/variants/thumb"
        ))
        .await;

    expect_problem(unknown, 404).await;
    expect_problem(not_an_image, 409).await;
}

#[tokio::test]
async fn deleting_an_image_deletes_its_rendered_sizes() {
    let app = spawn_app().await;
    let (post, attachment) = post_with_photo(&app).await;
    app.get(&variant_link(&attachment, "thumb")).await;
    app.get(&variant_link(&attachment, "medium")).await;

    let deleted = app
        .delete_attachment(&post, attachment["id"].as_str().expect("id"))
        .await;

    assert_eq!(deleted.status(), 204);
    app.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn eager_sizes_are_rendered_as_soon_as_the_image_is_ready() {
    let mut settings = test_settings();
    settings.media.eager_variants = vec!["thumb".into()];
    let app = spawn_app_with(settings).await;

    post_with_photo(&app).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while variants_rendered(&app).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no eager render");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys = app.stored.object_keys().await;
    assert!(keys.iter().any(|key| key.ends_with("/thumb")), "{keys:?}");
}

#[tokio::test]
async fn with_every_render_turn_taken_a_request_is_told_to_retry() {
    let mut settings = test_settings();
    settings.media.max_concurrent_renders = std::num::NonZero::<u32>::MIN;
    settings.media.wait_secs = 0;
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;
    let photo = photo_jpeg(2400, 1800);
    let mut links = Vec::new();
    for _ in 0..4 {
        let attachment = app.upload_one(&post, "photo.jpg", &photo).await;
        links.push(variant_link(&attachment, "medium"));
    }

    let answers = futures::future::join_all(links.iter().map(|link| app.get(link))).await;

    let statuses: Vec<u16> = answers
        .iter()
        .map(|answer| answer.status().as_u16())
        .collect();
    assert!(statuses.contains(&200), "{statuses:?}");
    let busy = answers
        .into_iter()
        .find(|answer| answer.status() == 503)
        .unwrap_or_else(|| panic!("no render was turned away: {statuses:?}"));
    assert_eq!(busy.headers()["retry-after"], "1");
}

#[tokio::test]
async fn head_of_a_size_answers_its_headers_without_a_body() {
    let app = spawn_app().await;
    let (_, attachment) = post_with_photo(&app).await;
    let thumb = variant_link(&attachment, "thumb");
    let served = app.get(&thumb).await.bytes().await.expect("thumb");

    let head = app.request(reqwest::Method::HEAD, &thumb).await;

    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        served.len().to_string().as_str()
    );
    assert_eq!(head.headers()["content-type"], "image/jpeg");
    assert!(head.bytes().await.expect("no body").is_empty());
}

#[tokio::test]
async fn deleting_a_post_deletes_the_rendered_sizes_of_its_images() {
    let app = spawn_app().await;
    let (post, attachment) = post_with_photo(&app).await;
    app.get(&variant_link(&attachment, "thumb")).await;

    let deleted = app
        .request(reqwest::Method::DELETE, &format!("/v1/posts/{post}"))
        .await;

    assert_eq!(deleted.status(), 204);
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_gif_of_many_frames_is_rendered_from_its_first() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
        let frames = (0..30u8).map(|n| {
            image::Frame::new(image::RgbaImage::from_pixel(
                64,
                32,
                image::Rgba([200, n, 0, 255]),
            ))
        });
        encoder.encode_frames(frames).expect("a GIF");
    }
    let attachment = app.upload_one(&post, "moving.gif", &gif).await;

    let thumb = app.get(&variant_link(&attachment, "thumb")).await;

    assert_eq!(thumb.status(), 200);
    let image = image::load_from_memory(&thumb.bytes().await.expect("thumb")).expect("JPEG");
    assert_eq!((image.width(), image.height()), (32, 32));
    assert!(image.to_rgb8().get_pixel(16, 16).0[0] > 150);
}
