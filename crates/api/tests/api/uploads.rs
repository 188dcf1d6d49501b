//! Direct uploads: presigned PUT, then completion.

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use test_support::expect_problem;
use test_support::images::phone_photo;

use crate::helpers::{TestApp, spawn_app};

/// A whole 1 × 1 PNG: images are decoded before they are stored.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\x0bIDATx\x9cc`\0\x02\0\0\x05\0\x01z^\xab?\0\0\0\0IEND\xaeB`\x82";

async fn begin(app: &TestApp, post: &str, body: Value) -> reqwest::Response {
    app.post_json(&format!("/v1/posts/{post}/attachments/uploads"), &body)
        .await
}

#[tokio::test]
async fn a_direct_upload_completes_into_an_attachment() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = begin(
        &app,
        &post,
        json!({ "filename": "photo.png", "content_type": "image/png", "size": PNG.len() }),
    )
    .await;
    assert_eq!(response.status(), 201);
    let ticket: Value = response.json().await.expect("JSON");
    assert_eq!(ticket["method"], "PUT");
    let mut put = reqwest::Client::new().put(ticket["url"].as_str().expect("url"));
    for (name, value) in ticket["headers"].as_object().expect("headers") {
        put = put.header(name, value.as_str().expect("header value"));
    }
    let stored = put.body(PNG).send().await.expect("PUT");
    assert!(stored.status().is_success(), "{}", stored.status());

    let upload_id = ticket["upload_id"].as_str().expect("upload id");
    let completed = app
        .post_json(
            ticket["complete_url"].as_str().expect("complete_url"),
            &json!({}),
        )
        .await;

    assert_eq!(completed.status(), 201);
    let attachment: Value = completed.json().await.expect("JSON");
    assert_eq!(attachment["id"], upload_id);
    assert_eq!(attachment["content_type"], "image/png");
    assert_eq!(attachment["size"], PNG.len());
    let content = app
        .get(&format!("/v1/posts/{post}/attachments/{upload_id}/content"))
        .await;
    assert_eq!(content.bytes().await.expect("body").as_ref(), PNG);
}

#[tokio::test]
async fn starting_an_upload_for_an_unknown_post_is_404() {
    let app = spawn_app().await;

    let response = begin(
        &app,
        "5f0000000000000000000000",
        json!({ "filename": "a.png", "content_type": "image/png", "size": 10 }),
    )
    .await;

    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn starting_an_upload_over_the_limit_is_413() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = begin(
        &app,
        &post,
        json!({ "filename": "a.png", "content_type": "image/png", "size": 1u64 << 40 }),
    )
    .await;

    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn starting_an_upload_of_a_disallowed_type_is_415() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = begin(
        &app,
        &post,
        json!({ "filename": "a.exe", "content_type": "application/x-msdownload", "size": 10 }),
    )
    .await;

    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn starting_an_upload_with_an_invalid_content_type_is_422() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = begin(
        &app,
        &post,
        json!({ "filename": "a.png", "content_type": "png", "size": 10 }),
    )
    .await;

    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn completing_an_unknown_upload_is_404() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = app
        .post_json(
            &format!("/v1/posts/{post}/attachments/uploads/5f0000000000000000000000/complete"),
            &json!({}),
        )
        .await;

    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn completing_before_the_bytes_were_put_is_422() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let ticket: Value = begin(
        &app,
        &post,
        json!({ "filename": "a.png", "content_type": "image/png", "size": 10 }),
    )
    .await
    .json()
    .await
    .expect("JSON");

    let response = app
        .post_json(
            &format!(
                "/v1/posts/{post}/attachments/uploads/{}/complete",
                ticket["upload_id"].as_str().expect("id")
            ),
            &json!({}),
        )
        .await;

    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn bytes_other_than_the_declared_sha256_are_refused_with_422_and_no_object_is_kept() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let other = hex::encode(Sha256::digest(b"other bytes"));

    let completed = app
        .upload_direct(
            &post,
            "photo.png",
            "image/png",
            Bytes::from_static(PNG),
            json!({ "sha256": other }),
        )
        .await;

    let problem = expect_problem(completed, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("SHA-256")),
        "{problem}"
    );
    // The upload stays pending until it expires, so the right bytes can be PUT again.
    assert_eq!(app.stored.object_keys().await, Vec::<String>::new());
}

#[tokio::test]
async fn a_photo_is_verified_against_the_declared_sha256_before_its_metadata_is_stripped() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let photo = phone_photo();
    let sent = hex::encode(Sha256::digest(&photo));

    let completed = app
        .upload_direct(
            &post,
            "photo.jpg",
            "image/jpeg",
            photo,
            json!({ "sha256": sent }),
        )
        .await;

    assert_eq!(completed.status(), 201);
    let attachment: Value = completed.json().await.expect("JSON");
    assert_ne!(
        attachment["sha256"],
        sent.as_str(),
        "it is the digest of what is stored"
    );
}

#[tokio::test]
async fn a_declared_sha256_that_is_not_64_hex_digits_is_422_naming_the_field() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = begin(
        &app,
        &post,
        json!({ "filename": "a.png", "content_type": "image/png", "size": 3, "sha256": "xyz" }),
    )
    .await;

    let problem = expect_problem(response, 422).await;
    assert_eq!(problem["errors"][0]["field"], "sha256", "{problem}");
}
