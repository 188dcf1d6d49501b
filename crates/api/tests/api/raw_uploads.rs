//! One file as the raw request body: `POST /v1/posts/{post_id}/attachments/raw?filename=`.

use std::num::NonZero;

use serde_json::Value;
use sha2::{Digest, Sha256};

use test_support::expect_problem;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, test_settings};

const MIB: usize = 1024 * 1024;

async fn post_raw(
    app: &TestApp,
    post: &str,
    query: &str,
    body: reqwest::Body,
) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/posts/{post}/attachments/raw{query}")))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .expect("request")
}

fn text(len: usize) -> Vec<u8> {
    b"lorem ipsum ".iter().copied().cycle().take(len).collect()
}

#[tokio::test]
async fn a_raw_body_with_a_filename_is_stored_as_one_attachment() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let bytes = text(3 * MIB + 5);

    let response = post_raw(&app, &post, "?filename=notes.txt", bytes.clone().into()).await;

    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("JSON");
    let attachment = &body["items"][0];
    assert_eq!(attachment["filename"], "notes.txt");
    assert_eq!(attachment["content_type"], "text/plain");
    assert_eq!(attachment["size"], bytes.len());
    assert_eq!(attachment["sha256"], hex::encode(Sha256::digest(&bytes)));
    let downloaded = app
        .get(attachment["content_url"].as_str().expect("content_url"))
        .await
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(downloaded.as_ref(), bytes.as_slice());
    assert!(app.stored.multipart_uploads().await.is_empty());
}

#[tokio::test]
async fn a_raw_body_without_a_content_length_is_stored_too() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(text(MIB)), Ok(text(7))];
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));

    let response = post_raw(&app, &post, "?filename=chunked.txt", streamed).await;

    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["items"][0]["size"], MIB + 7);
}

#[tokio::test]
async fn a_raw_body_over_the_file_limit_is_413_and_stores_nothing() {
    let mut settings = test_settings();
    settings.uploads.max_file_bytes = NonZero::new(MIB as u64).expect("non-zero");
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;

    let response = post_raw(&app, &post, "?filename=big.txt", text(MIB + 1).into()).await;

    expect_problem(response, 413).await;
    app.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_raw_body_with_a_bad_filename_is_400() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = post_raw(&app, &post, "?filename=", text(10).into()).await;

    expect_problem(response, 400).await;
    app.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_raw_body_without_a_filename_is_400() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = post_raw(&app, &post, "", text(10).into()).await;

    expect_problem(response, 400).await;
}

#[tokio::test]
async fn a_raw_body_to_a_missing_post_is_404() {
    let app = spawn_app().await;

    let response = post_raw(
        &app,
        "65f000000000000000000000",
        "?filename=a.txt",
        text(10).into(),
    )
    .await;

    expect_problem(response, 404).await;
}
