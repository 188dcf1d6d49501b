//! Resumable uploads with tus 1.0.0 at `/v1/posts/{post_id}/attachments/tus`: the
//! protocol spoken by hand here, and by a stock client (tuspy) in `tus_client.rs`.

use std::num::NonZero;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use test_support::expect_problem;

use crate::helpers::{TestApp, spawn_app_with, test_settings};

const MIB: usize = 1024 * 1024;
/// The part size the tests run with: S3's smallest.
const PART: usize = 5 * MIB;

async fn tus_app() -> TestApp {
    let mut settings = test_settings();
    settings.s3.part_size_bytes = PART as u64;
    spawn_app_with(settings).await
}

fn text(len: usize) -> Vec<u8> {
    b"a resumable line of text\n"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

fn metadata(filename: &str, filetype: &str) -> String {
    format!(
        "filename {},filetype {}",
        STANDARD.encode(filename),
        STANDARD.encode(filetype)
    )
}

async fn tus(app: &TestApp, method: Method, path: &str) -> reqwest::RequestBuilder {
    app.client
        .request(method, app.url(path))
        .header("Tus-Resumable", "1.0.0")
}

/// Creates an upload of `length` bytes; its path.
async fn create(app: &TestApp, post: &str, length: usize) -> String {
    let response = tus(
        app,
        Method::POST,
        &format!("/v1/posts/{post}/attachments/tus"),
    )
    .await
    .header("Upload-Length", length.to_string())
    .header("Upload-Metadata", metadata("notes.txt", "text/plain"))
    .send()
    .await
    .expect("creation");
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    assert_eq!(header(&response, "tus-resumable"), "1.0.0");
    assert_eq!(header(&response, "upload-offset"), "0");
    assert!(!header(&response, "upload-expires").is_empty());
    header(&response, "location")
}

async fn patch(app: &TestApp, upload: &str, offset: usize, bytes: &[u8]) -> Response {
    tus(app, Method::PATCH, upload)
        .await
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("PATCH")
}

async fn offset_of(app: &TestApp, upload: &str) -> Response {
    tus(app, Method::HEAD, upload)
        .await
        .send()
        .await
        .expect("HEAD")
}

/// The post's first attachment is `bytes`, by its SHA-256.
/// Puts a completed upload back as a crash after its bytes were stored leaves it: the
/// record pending with its lease run out, the post listing nothing and holding the
/// upload's reservation.
async fn unfinish(app: &TestApp, upload: &str) {
    let upload_id = mongodb::bson::oid::ObjectId::parse_str(
        upload
            .rsplit('/')
            .next()
            .expect("an upload URL ends with its id"),
    )
    .expect("an upload id");
    let later = mongodb::bson::DateTime::from_system_time(
        std::time::SystemTime::now() + Duration::from_secs(3600),
    );
    app.stored
        .update_every(
            "attachments",
            mongodb::bson::doc! {
                "$set": { "status": "pending" },
                "$unset": { "resumable.lease": "", "resumable.lease_until": "" },
            },
        )
        .await;
    app.stored
        .update_every(
            "posts",
            mongodb::bson::doc! { "$set": {
                "attachments": [],
                "pending": [{ "_id": upload_id, "expires_at": later }],
            } },
        )
        .await;
}

async fn assert_attachment_holds(app: &TestApp, post: &str, bytes: &[u8]) {
    let attachments = app.get_json(&format!("/v1/posts/{post}/attachments")).await;
    assert_eq!(
        attachments["items"][0]["sha256"],
        hex::encode(Sha256::digest(bytes))
    );
}

fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn options_name_the_version_extensions_and_largest_upload() {
    let app = tus_app().await;
    let post = app.create_post().await;

    let response = app
        .client
        .request(
            Method::OPTIONS,
            app.url(&format!("/v1/posts/{post}/attachments/tus")),
        )
        .send()
        .await
        .expect("OPTIONS");

    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "tus-version"), "1.0.0");
    assert_eq!(
        header(&response, "tus-extension"),
        "creation,creation-with-upload,termination,expiration"
    );
    assert_eq!(header(&response, "tus-max-size"), "104857600");
}

#[tokio::test]
async fn patches_of_any_size_make_one_verified_attachment() {
    let app = tus_app().await;
    let post = app.create_post().await;
    // Three parts and a bit, in requests that end inside parts and across them.
    let bytes = text(3 * PART + 12_345);
    let upload = create(&app, &post, bytes.len()).await;

    let mut offset = 0;
    for size in [MIB + 7, 3 * MIB, 6 * MIB, 5, bytes.len()] {
        let end = (offset + size).min(bytes.len());
        let response = patch(&app, &upload, offset, &bytes[offset..end]).await;
        assert_eq!(response.status(), 204, "{:?}", response.text().await);
        assert_eq!(header(&response, "upload-offset"), end.to_string());
        assert_eq!(
            offset_of(&app, &upload).await.headers()["upload-offset"],
            end.to_string().as_str()
        );
        offset = end;
        if offset == bytes.len() {
            let attachment = header(&response, "content-location");
            let id = upload.rsplit('/').next().expect("upload id");
            assert_eq!(attachment, format!("/v1/posts/{post}/attachments/{id}"));
            break;
        }
    }

    let attachment: Value = app.get_json(&format!("/v1/posts/{post}/attachments")).await;
    let attachment = &attachment["items"][0];
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
    assert_eq!(
        app.stored.object_keys().await.len(),
        1,
        "only the attachment's object is left, no tail"
    );
}

#[tokio::test]
async fn creation_with_upload_stores_the_first_bytes() {
    let app = tus_app().await;
    let post = app.create_post().await;
    let bytes = text(2 * MIB);

    let response = tus(
        &app,
        Method::POST,
        &format!("/v1/posts/{post}/attachments/tus"),
    )
    .await
    .header("Upload-Length", bytes.len().to_string())
    .header("Upload-Metadata", metadata("notes.txt", "text/plain"))
    .header("Content-Type", "application/offset+octet-stream")
    .body(bytes[..MIB].to_vec())
    .send()
    .await
    .expect("creation with upload");

    assert_eq!(response.status(), 201);
    assert_eq!(header(&response, "upload-offset"), MIB.to_string());
    let upload = header(&response, "location");
    let done = patch(&app, &upload, MIB, &bytes[MIB..]).await;
    assert_eq!(done.status(), 204);
    assert!(!header(&done, "content-location").is_empty());
}

#[tokio::test]
async fn an_empty_file_is_complete_at_creation() {
    let app = tus_app().await;
    let post = app.create_post().await;

    let upload = tus(
        &app,
        Method::POST,
        &format!("/v1/posts/{post}/attachments/tus"),
    )
    .await
    .header("Upload-Length", "0")
    .header("Upload-Metadata", metadata("empty.txt", "text/plain"))
    .send()
    .await
    .expect("creation");

    assert_eq!(upload.status(), 201);
    assert!(!header(&upload, "content-location").is_empty());
    let attachments = app.get_json(&format!("/v1/posts/{post}/attachments")).await;
    assert_eq!(attachments["items"][0]["size"], 0);
}

#[tokio::test]
async fn a_patch_at_the_wrong_offset_gets_409_and_changes_nothing() {
    let app = tus_app().await;
    let post = app.create_post().await;
    let bytes = text(MIB);
    let upload = create(&app, &post, bytes.len()).await;
    assert_eq!(patch(&app, &upload, 0, &bytes[..1000]).await.status(), 204);

    let response = patch(&app, &upload, 500, &bytes[500..2000]).await;

    let problem = expect_problem(response, 409).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("offset 1000"))
    );
    assert_eq!(
        offset_of(&app, &upload).await.headers()["upload-offset"],
        "1000"
    );
}

#[tokio::test]
async fn bytes_past_the_upload_length_get_413_and_the_bytes_before_are_kept() {
    let app = tus_app().await;
    let post = app.create_post().await;
    let upload = create(&app, &post, 1000).await;

    let response = patch(&app, &upload, 0, &text(1500)).await;

    expect_problem(response, 413).await;
    let head = offset_of(&app, &upload).await;
    let offset: usize = header(&head, "upload-offset").parse().expect("offset");
    assert!(offset <= 1000, "{offset}");
}

#[tokio::test]
async fn requests_without_tus_resumable_get_412_with_the_version() {
    let app = tus_app().await;
    let post = app.create_post().await;

    let response = app
        .client
        .post(app.url(&format!("/v1/posts/{post}/attachments/tus")))
        .header("Upload-Length", "10")
        .header("Upload-Metadata", metadata("a.txt", "text/plain"))
        .send()
        .await
        .expect("creation");

    assert_eq!(header(&response, "tus-version"), "1.0.0");
    expect_problem(response, 412).await;
    app.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_patch_with_another_content_type_gets_415() {
    let app = tus_app().await;
    let post = app.create_post().await;
    let upload = create(&app, &post, 10).await;

    let response = tus(&app, Method::PATCH, &upload)
        .await
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/octet-stream")
        .body(text(10))
        .send()
        .await
        .expect("PATCH");

    expect_problem(response, 415).await;
}

#[tokio::test]
async fn a_disallowed_type_is_refused_from_the_first_bytes_and_the_upload_ended() {
    let mut settings = test_settings();
    settings.s3.part_size_bytes = PART as u64;
    settings.uploads.allowed_content_types = vec!["image/png".into()];
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;
    let response = tus(
        &app,
        Method::POST,
        &format!("/v1/posts/{post}/attachments/tus"),
    )
    .await
    .header("Upload-Length", (8 * MIB).to_string())
    .header(
        "Upload-Metadata",
        format!("filename {}", STANDARD.encode("a.png")),
    )
    .send()
    .await
    .expect("creation");
    let upload = header(&response, "location");

    let refused = patch(&app, &upload, 0, &text(MIB)).await;

    expect_problem(refused, 415).await;
    assert_eq!(offset_of(&app, &upload).await.status(), 404);
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn termination_removes_every_part_and_the_tail() {
    let app = tus_app().await;
    let post = app.create_post().await;
    let bytes = text(3 * PART);
    let upload = create(&app, &post, bytes.len()).await;
    // One part stored and a tail waiting (with its copy where older versions read it).
    assert_eq!(
        patch(&app, &upload, 0, &bytes[..PART + MIB]).await.status(),
        204
    );
    assert_eq!(app.stored.multipart_uploads().await.len(), 1);
    assert_eq!(app.stored.object_keys().await.len(), 2);

    let response = tus(&app, Method::DELETE, &upload)
        .await
        .send()
        .await
        .expect("DELETE");

    assert_eq!(response.status(), 204);
    assert_eq!(offset_of(&app, &upload).await.status(), 404);
    app.stored.assert_nothing_stored().await;
    let again = patch(&app, &upload, PART + MIB, &bytes[PART + MIB..]).await;
    expect_problem(again, 404).await;
}

#[tokio::test]
async fn an_expired_upload_answers_410_and_the_reaper_removes_it() {
    let mut settings = test_settings();
    settings.s3.part_size_bytes = PART as u64;
    settings.uploads.resumable_ttl_secs = NonZero::new(2).expect("non-zero");
    settings.uploads.reaper_interval_secs = NonZero::new(1).expect("non-zero");
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;
    let bytes = text(2 * PART);
    let upload = create(&app, &post, bytes.len()).await;
    assert_eq!(
        patch(&app, &upload, 0, &bytes[..PART + 10]).await.status(),
        204
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;

    let head = offset_of(&app, &upload).await;
    assert!(
        [404, 410].contains(&head.status().as_u16()),
        "{}",
        head.status()
    );
    let late = patch(&app, &upload, PART + 10, &bytes[PART + 10..]).await;
    assert!(
        [404, 410].contains(&late.status().as_u16()),
        "{}",
        late.status()
    );
    // The reaper aborts its multipart upload and removes its tail and record.
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn a_users_unfinished_uploads_are_limited_and_others_may_not_touch_them() {
    let (app, ann, bob) = crate::auth::app_with_users(|settings| {
        settings.uploads.resumable_uploads_per_user = NonZero::new(2).expect("non-zero");
    })
    .await;
    let post = crate::auth::create_post_as(&app, &ann).await;
    let create = |token: String| {
        let request = app
            .client
            .post(app.url(&format!("/v1/posts/{post}/attachments/tus")))
            .header("Tus-Resumable", "1.0.0")
            .bearer_auth(token)
            .header("Upload-Length", "100")
            .header("Upload-Metadata", metadata("a.txt", "text/plain"));
        async move { request.send().await.expect("creation") }
    };

    let first = create(ann.clone()).await;
    assert_eq!(first.status(), 201);
    assert_eq!(create(ann.clone()).await.status(), 201);
    expect_problem(create(ann.clone()).await, 429).await;
    expect_problem(create(bob.clone()).await, 403).await;
    let upload = header(&first, "location");
    let head = tus(&app, Method::HEAD, &upload)
        .await
        .bearer_auth(&bob)
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 403);
    let without_token = offset_of(&app, &upload).await;
    assert_eq!(without_token.status(), 401);
}

/// A PATCH whose body arrives through `sender`, until it is dropped (the body ends) or
/// sends an error (the client breaks the connection).
fn streamed_patch(
    app: &TestApp,
    upload: &str,
    offset: usize,
) -> (
    tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    tokio::task::JoinHandle<reqwest::Result<Response>>,
) {
    let (sender, mut receiver) = tokio::sync::mpsc::channel(4);
    let body = futures::stream::poll_fn(move |context| receiver.poll_recv(context));
    let request = app
        .client
        .patch(app.url(upload))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", offset.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(reqwest::Body::wrap_stream(body));
    (sender, tokio::spawn(request.send()))
}

async fn wait_for_offset(app: &TestApp, upload: &str, expected: usize) {
    let started = std::time::Instant::now();
    loop {
        let offset = header(&offset_of(app, upload).await, "upload-offset");
        if offset == expected.to_string() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the offset stayed at {offset}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_cut_patch_keeps_every_byte_that_arrived_and_the_upload_goes_on_from_there() {
    let app = tus_app().await;
    let post = app.create_post().await;
    let bytes = text(3 * PART);
    let upload = create(&app, &post, bytes.len()).await;
    // A part and a half arrive, then the client breaks the connection.
    let sent = PART + PART / 2;
    let (sender, request) = streamed_patch(&app, &upload, 0);
    for chunk in bytes[..sent].chunks(MIB) {
        sender
            .send(Ok(bytes::Bytes::copy_from_slice(chunk)))
            .await
            .expect("body open");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    sender
        .send(Err(std::io::Error::other("connection lost")))
        .await
        .expect("body open");
    assert!(
        request.await.expect("request task").is_err(),
        "the client saw its request fail"
    );

    wait_for_offset(&app, &upload, sent).await;
    let rest = patch(&app, &upload, sent, &bytes[sent..]).await;

    assert_eq!(rest.status(), 204, "{:?}", rest.text().await);
    assert_attachment_holds(&app, &post, &bytes).await;
}

#[tokio::test]
async fn a_patch_while_another_writes_the_same_upload_gets_423() {
    let app = tus_app().await;
    let post = app.create_post().await;
    let bytes = text(2 * MIB);
    let upload = create(&app, &post, bytes.len()).await;
    let (sender, first) = streamed_patch(&app, &upload, 0);
    sender
        .send(Ok(bytes::Bytes::copy_from_slice(&bytes[..MIB])))
        .await
        .expect("body open");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let second = patch(&app, &upload, 0, &bytes).await;

    expect_problem(second, 423).await;
    sender
        .send(Ok(bytes::Bytes::copy_from_slice(&bytes[MIB..])))
        .await
        .expect("body open");
    drop(sender);
    let first = first.await.expect("request task").expect("answered");
    assert_eq!(first.status(), 204);
    assert!(!header(&first, "content-location").is_empty());
}

#[tokio::test]
async fn a_post_overridden_as_patch_appends_as_a_patch_does() {
    let app = tus_app().await;
    let post = app.create_post().await;
    let bytes = text(1000);
    let upload = create(&app, &post, bytes.len()).await;

    let response = tus(&app, Method::POST, &upload)
        .await
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("POST as PATCH");

    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "upload-offset"), "1000");
}

#[tokio::test]
async fn an_upload_longer_than_the_pending_ttl_keeps_its_parts_and_tail_until_it_expires() {
    let mut settings = test_settings();
    settings.s3.part_size_bytes = PART as u64;
    settings.s3.presign_ttl_secs = NonZero::new(1).expect("non-zero");
    settings.uploads.pending_ttl_secs = 1;
    settings.uploads.reaper_interval_secs = NonZero::new(1).expect("non-zero");
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;
    let bytes = text(2 * PART);
    let upload = create(&app, &post, bytes.len()).await;
    let sent = PART + MIB;
    assert_eq!(patch(&app, &upload, 0, &bytes[..sent]).await.status(), 204);

    // Several reaper passes, each past the pending TTL of the parts and the tail.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let rest = patch(&app, &upload, sent, &bytes[sent..]).await;
    assert_eq!(rest.status(), 204, "{:?}", rest.text().await);
    assert_attachment_holds(&app, &post, &bytes).await;
}

#[tokio::test]
async fn a_completion_cut_short_after_s3_assembled_the_object_is_finished_by_the_next_patch() {
    let app = tus_app().await;
    let post = app.create_post().await;
    let bytes = text(2 * PART + 100);
    let upload = create(&app, &post, bytes.len()).await;
    assert_eq!(
        patch(&app, &upload, 0, &bytes[..PART + MIB]).await.status(),
        204
    );
    assert_eq!(
        patch(&app, &upload, PART + MIB, &bytes[PART + MIB..])
            .await
            .status(),
        204
    );
    // As if the process died after CompleteMultipartUpload, before the record turned
    // ready: the record is pending at the last offset it stored.
    unfinish(&app, &upload).await;
    assert_eq!(
        header(&offset_of(&app, &upload).await, "upload-offset"),
        (2 * PART).to_string()
    );

    let resent = patch(&app, &upload, 2 * PART, &bytes[2 * PART..]).await;

    assert_eq!(resent.status(), 204, "{:?}", resent.text().await);
    assert_eq!(header(&resent, "upload-offset"), bytes.len().to_string());
    assert_attachment_holds(&app, &post, &bytes).await;
}

#[tokio::test]
async fn an_upload_whose_bytes_are_all_stored_but_not_yet_an_attachment_is_finished_by_a_head() {
    let app = tus_app().await;
    let post = app.create_post().await;
    // A length that parts fill exactly: every byte is recorded before the object is
    // assembled and verified.
    let bytes = text(2 * PART);
    let upload = create(&app, &post, bytes.len()).await;
    assert_eq!(patch(&app, &upload, 0, &bytes).await.status(), 204);
    // As if the instance died after recording the last part, before the attachment was
    // ready: the record is pending at the full length.
    unfinish(&app, &upload).await;

    // A stock client asks where the upload stands; the full offset means done to it.
    let head = offset_of(&app, &upload).await;

    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "upload-offset"), bytes.len().to_string());
    assert_attachment_holds(&app, &post, &bytes).await;
}
