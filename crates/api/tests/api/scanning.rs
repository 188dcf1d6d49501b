//! Malware scanning against a real clamd: every way in scans a file before it becomes an
//! attachment; the EICAR test file is refused with its signature and leaves nothing;
//! an unreachable scanner refuses files (503) unless `scan.fail_open` is set.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use test_support::{
    Clamd, EICAR, EICAR_SIGNATURE, WEBHOOK_SECRET, WebhookReceiver, expect_problem, free_port,
};

use crate::helpers::{TestApp, spawn_app_with, test_settings};

/// A service that scans with `clamd`, its infected files moved to `quarantine` if named.
async fn scanning_app(clamd: &Clamd, quarantine: &str) -> TestApp {
    let mut settings = test_settings();
    settings.scan.clamd_address = clamd.address.clone();
    settings.scan.quarantine_prefix = quarantine.to_owned();
    spawn_app_with(settings).await
}

/// Asserts a 422 naming the EICAR signature.
async fn assert_refused_as_infected(response: reqwest::Response) {
    let problem = expect_problem(response, 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains(EICAR_SIGNATURE)),
        "{problem}"
    );
}

#[tokio::test]
async fn the_eicar_file_sent_as_a_form_is_refused_naming_its_signature_and_leaves_nothing() {
    let clamd = Clamd::start().await;
    let app = scanning_app(&clamd, "").await;
    let post = app.create_post().await;

    let refused = app.upload(&post, &[("eicar.txt", EICAR)]).await;

    assert_refused_as_infected(refused).await;
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("posts_api_uploads_infected_total 1"),
        "the refusal is counted"
    );
}

#[tokio::test]
async fn a_refused_file_sends_attachment_rejected_with_its_signature() {
    let clamd = Clamd::start().await;
    let receiver = WebhookReceiver::start().await;
    let mut settings = test_settings();
    settings.scan.clamd_address = clamd.address.clone();
    settings.events.webhook_url = receiver.url();
    settings.events.webhook_secret = WEBHOOK_SECRET.to_owned().into();
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;

    let refused = app.upload(&post, &[("eicar.txt", EICAR)]).await;

    assert_eq!(refused.status(), 422);
    let received = receiver.wait_for(2, Duration::from_secs(30)).await;
    let rejected = &received[1].event;
    assert_eq!(rejected["type"], "attachment.rejected");
    assert_eq!(rejected["data"]["post_id"], post.as_str());
    assert_eq!(rejected["data"]["filename"], "eicar.txt");
    assert_eq!(rejected["data"]["signature"], EICAR_SIGNATURE);
}

#[tokio::test]
async fn a_clean_file_is_stored_while_scanning_is_on() {
    let clamd = Clamd::start().await;
    let app = scanning_app(&clamd, "").await;
    let post = app.create_post().await;

    let stored = app.upload(&post, &[("notes.txt", b"clean notes")]).await;

    assert_eq!(stored.status(), 201);
}

#[tokio::test]
async fn the_eicar_file_sent_as_a_raw_body_is_refused() {
    let clamd = Clamd::start().await;
    let app = scanning_app(&clamd, "").await;
    let post = app.create_post().await;

    let refused = app
        .upload_raw_streamed(&post, "eicar.txt", Bytes::from_static(EICAR))
        .await;

    assert_refused_as_infected(refused).await;
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn the_eicar_file_sent_by_presigned_put_is_refused_and_its_objects_removed() {
    let clamd = Clamd::start().await;
    let app = scanning_app(&clamd, "").await;
    let post = app.create_post().await;

    let refused = app
        .upload_direct(
            &post,
            "eicar.txt",
            "text/plain",
            Bytes::from_static(EICAR),
            json!({}),
        )
        .await;

    assert_refused_as_infected(refused).await;
    assert_eq!(app.stored.object_keys().await, Vec::<String>::new());
}

#[tokio::test]
async fn the_eicar_file_sent_as_a_resumable_upload_is_refused_and_the_upload_ended() {
    let clamd = Clamd::start().await;
    let app = scanning_app(&clamd, "").await;
    let post = app.create_post().await;

    let refused = app.upload_resumable(&post, Bytes::from_static(EICAR)).await;

    assert_refused_as_infected(refused).await;
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_resumable_upload_refused_as_infected_answers_with_its_signature_when_asked_again() {
    let clamd = Clamd::start().await;
    let app = scanning_app(&clamd, "").await;
    let post = app.create_post().await;
    let created = app
        .client
        .post(app.url(&format!("/v1/posts/{post}/attachments/tus")))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", EICAR.len())
        // `eicar.txt`, in base64.
        .header("Upload-Metadata", "filename ZWljYXIudHh0")
        .send()
        .await
        .expect("request");
    assert_eq!(created.status(), 201);
    let upload = created.headers()["location"]
        .to_str()
        .expect("a Location")
        .to_owned();
    let tus = |method: reqwest::Method| {
        app.client
            .request(method, app.url(&upload))
            .header("Tus-Resumable", "1.0.0")
    };
    let refused = tus(reqwest::Method::PATCH)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(EICAR)
        .send()
        .await
        .expect("request");
    assert_refused_as_infected(refused).await;

    let asked_again = tus(reqwest::Method::PATCH)
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(EICAR)
        .send()
        .await
        .expect("request");
    let head = tus(reqwest::Method::HEAD).send().await.expect("request");

    assert_refused_as_infected(asked_again).await;
    assert_eq!(head.status(), 422);
}

#[tokio::test]
async fn a_direct_upload_refused_as_infected_answers_with_its_signature_when_completed_again() {
    let clamd = Clamd::start().await;
    let app = scanning_app(&clamd, "").await;
    let post = app.create_post().await;
    let ticket = app
        .stage_direct(
            &post,
            "eicar.txt",
            "text/plain",
            Bytes::from_static(EICAR),
            json!({}),
        )
        .await;
    assert_refused_as_infected(app.complete_direct(&ticket).await).await;

    let completed_again = app.complete_direct(&ticket).await;

    assert_refused_as_infected(completed_again).await;
}

#[tokio::test]
async fn an_infected_file_is_moved_to_the_quarantine_prefix() {
    let clamd = Clamd::start().await;
    let quarantine = format!("quarantine-{}", uuid::Uuid::new_v4().simple());
    let app = scanning_app(&clamd, &quarantine).await;
    let post = app.create_post().await;

    let refused = app.upload(&post, &[("eicar.txt", EICAR)]).await;

    assert_refused_as_infected(refused).await;
    let kept = app
        .stored
        .s3
        .list_objects_v2()
        .bucket(&app.stored.bucket)
        .prefix(format!("{quarantine}/{post}/"))
        .send()
        .await
        .expect("S3 answers");
    assert_eq!(kept.contents().len(), 1, "the infected file is kept aside");
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn with_the_scanner_unreachable_a_file_is_refused_with_503_and_leaves_nothing() {
    let mut settings = test_settings();
    settings.scan.clamd_address = format!("127.0.0.1:{}", free_port());
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;

    let refused = app.upload(&post, &[("notes.txt", b"clean notes")]).await;

    let problem = expect_problem(refused, 503).await;
    assert_eq!(
        problem["type"].as_str().map(|t| t.ends_with("unavailable")),
        Some(true),
        "{problem}"
    );
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn with_the_scanner_unreachable_and_fail_open_a_file_is_stored() {
    let mut settings = test_settings();
    settings.scan.clamd_address = format!("127.0.0.1:{}", free_port());
    settings.scan.fail_open = true;
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;

    let stored = app.upload(&post, &[("notes.txt", b"clean notes")]).await;

    assert_eq!(stored.status(), 201);
}
