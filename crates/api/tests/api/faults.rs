//! Dependencies that stall: each request fails within its budget instead of hanging.

use std::num::NonZero;
use std::time::{Duration, Instant};

use test_support::{ApiClient, ChaosProxy, expect_problem, socket_address_of, testbed};

use crate::helpers::{ServiceCommand, spawn_app_with, test_settings};

#[tokio::test]
async fn a_stalled_s3_fails_the_request_with_503_within_the_operation_timeout() {
    let s3 = ChaosProxy::start(socket_address_of(&testbed("AWS_ENDPOINT_URL"))).await;
    let mut service = ServiceCommand::new()
        .env("AWS_ENDPOINT_URL", s3.url("http", ""))
        .env("APP__AWS__OPERATION_TIMEOUT_SECS", "2")
        .env("APP__AWS__ATTEMPT_TIMEOUT_SECS", "1")
        .spawn();
    service
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;
    let api = ApiClient::new(format!("http://127.0.0.1:{}", service.port));
    let (_, attachment) = api.post_with_attachment("a.txt", b"stalled later").await;

    s3.stall();
    let started = Instant::now();
    let download = api
        .get(attachment["content_url"].as_str().expect("content_url"))
        .await;
    let waited = started.elapsed();
    s3.restore();

    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    let retry_after = download.headers().get("retry-after").cloned();
    expect_problem(download, 503).await;
    assert!(retry_after.is_some());
}

#[tokio::test]
async fn a_stalled_mongodb_fails_the_request_with_503_within_the_storage_timeout() {
    let mongo = ChaosProxy::start(socket_address_of(&testbed("MONGODB_URI"))).await;
    let mut settings = test_settings();
    settings.mongo.uri = mongo.url("mongodb", "/?directConnection=true").into();
    settings.server.storage_timeout_secs = NonZero::<u64>::MIN;
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;

    mongo.stall();
    let started = Instant::now();
    let read = app.get(&format!("/v1/posts/{post}")).await;
    let waited = started.elapsed();
    mongo.restore();

    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    expect_problem(read, 503).await;
}
