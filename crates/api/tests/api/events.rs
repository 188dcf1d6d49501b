//! Webhooks: every change to a post or its attachments is delivered, signed as Standard
//! Webhooks and verified by the standard library's Python receiver, at least once and in
//! order, across a receiver outage and a SIGKILL of the service; events out of attempts
//! are kept for operators.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use test_support::{Received, WEBHOOK_SECRET, WebhookReceiver, id_of};

use crate::helpers::{ServiceCommand, TestApp, spawn_app_with, test_settings};

/// Long enough for a few retries on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// A service sending its events to `receiver`, retrying after 100 ms doubling to 1 s.
async fn app_sending_to(receiver: &WebhookReceiver, max_attempts: u32) -> TestApp {
    let mut settings = test_settings();
    settings.events.webhook_url = receiver.url();
    settings.events.webhook_secret = WEBHOOK_SECRET.to_owned().into();
    settings.events.first_retry_ms = 100.try_into().expect("not zero");
    settings.events.max_retry_secs = 1.try_into().expect("not zero");
    settings.events.timeout_secs = 1.try_into().expect("not zero");
    settings.events.max_attempts = max_attempts.try_into().expect("not zero");
    spawn_app_with(settings).await
}

/// Waits until the number of documents in `collection` is `done`, failing with `what`.
async fn wait_for_documents(
    app: &TestApp,
    collection: &str,
    done: impl Fn(u64) -> bool,
    what: &str,
) {
    let collection = app
        .stored
        .database
        .collection::<mongodb::bson::Document>(collection);
    let started = std::time::Instant::now();
    while !done(
        collection
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count"),
    ) {
        assert!(started.elapsed() < PATIENCE, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kinds(received: &[Received]) -> Vec<&str> {
    received.iter().map(Received::kind).collect()
}

#[tokio::test]
async fn every_change_of_a_posts_life_arrives_verified_once_and_in_order() {
    let receiver = WebhookReceiver::start().await;
    let app = app_sending_to(&receiver, 5).await;
    let post = app.create_post().await;
    let path = format!("/v1/posts/{post}");

    let updated = app.patch_json(&path, &json!({ "title": "renamed" })).await;
    assert_eq!(updated.status(), 200);
    let attachment = app.upload_one_id(&post, "notes.txt", b"some notes").await;
    let deleted = app.delete_attachment(&post, &attachment).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.request(Method::DELETE, &path).await.status(), 204);

    let received = receiver.wait_for(5, PATIENCE).await;
    assert_eq!(
        kinds(&received),
        [
            "post.created",
            "post.updated",
            "attachment.ready",
            "attachment.deleted",
            "post.deleted"
        ]
    );
    let mut ids: Vec<&str> = received.iter().map(|event| event.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each event has an id of its own");
    assert_eq!(received[1].event["data"]["title"], "renamed");
    assert_eq!(received[1].event["data"]["version"], 2);
    assert_eq!(received[2].event["data"]["id"], attachment.as_str());
    assert_eq!(received[2].event["data"]["post_id"], post.as_str());
    assert!(received[0].event["timestamp"].is_string());
}

#[tokio::test]
async fn a_deleted_post_is_removed_once_its_last_event_is_delivered() {
    let receiver = WebhookReceiver::start().await;
    let app = app_sending_to(&receiver, 5).await;
    let post = app.create_post().await;

    app.request(Method::DELETE, &format!("/v1/posts/{post}"))
        .await;

    receiver.wait_for(2, PATIENCE).await;
    wait_for_documents(&app, "posts", |count| count == 0, "the post document stays").await;
}

#[tokio::test]
async fn a_receiver_down_for_a_while_gets_every_event_once_it_is_back() {
    let mut receiver = WebhookReceiver::stopped();
    let app = app_sending_to(&receiver, 50).await;
    let post = app.create_post().await;
    app.patch_json(&format!("/v1/posts/{post}"), &json!({ "body": "more" }))
        .await;

    tokio::time::sleep(Duration::from_secs(2)).await;
    receiver.resume().await;

    let received = receiver.wait_for(2, PATIENCE).await;
    assert_eq!(kinds(&received), ["post.created", "post.updated"]);
    let metrics = app.get_text("/metrics").await;
    assert!(
        !metrics.contains("posts_api_events_retried_total 0"),
        "the failed attempts are counted: {metrics}"
    );
}

#[tokio::test]
async fn an_event_whose_answer_is_lost_is_sent_again_with_the_same_id() {
    let receiver = WebhookReceiver::answering_late(1).await;
    let app = app_sending_to(&receiver, 5).await;

    app.create_post().await;

    let received = receiver.wait_for(2, PATIENCE).await;
    assert_eq!(kinds(&received), ["post.created", "post.created"]);
    assert_eq!(received[0].id, received[1].id);
}

#[tokio::test]
async fn a_sigkill_between_a_change_and_its_delivery_loses_no_event() {
    let mut receiver = WebhookReceiver::stopped();
    let database = format!("test_{}", uuid::Uuid::new_v4().simple());
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let url = receiver.url();
    let instance = || {
        ServiceCommand::new()
            .env("APP__MONGO__DATABASE", &database)
            .env("APP__S3__KEY_PREFIX", &prefix)
            .env("APP__EVENTS__WEBHOOK_URL", &url)
            .env("APP__EVENTS__WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("APP__EVENTS__FIRST_RETRY_MS", "100")
            .env("APP__EVENTS__MAX_RETRY_SECS", "1")
            .spawn()
    };
    let mut doomed = instance();
    doomed
        .ready_within(std::time::Instant::now(), PATIENCE)
        .await;
    let api = test_support::ApiClient::new(format!("http://127.0.0.1:{}", doomed.port));
    let post = api.create_post().await;
    let attachment = api.upload_one(&post, "notes.txt", b"some notes").await;

    doomed.kill();
    receiver.resume().await;
    let mut survivor = instance();
    survivor
        .ready_within(std::time::Instant::now(), PATIENCE)
        .await;

    let received = receiver.wait_for(2, PATIENCE).await;
    assert_eq!(kinds(&received), ["post.created", "attachment.ready"]);
    assert_eq!(received[1].event["data"]["id"], id_of(&attachment).as_str());
}

#[tokio::test]
async fn an_event_out_of_attempts_is_kept_as_failed_and_listed_for_operators() {
    let receiver = WebhookReceiver::stopped();
    let app = app_sending_to(&receiver, 2).await;
    let post = app.create_post().await;

    wait_for_documents(
        &app,
        "failed_events",
        |count| count > 0,
        "the event is never given up",
    )
    .await;

    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_posts-api"))
        .arg("failed-events")
        .current_dir(test_support::repository_root())
        .env("APP__MONGO__DATABASE", app.stored.database.name())
        .env("APP__AUTH__DISABLED", "true")
        .env("APP__LOG__LEVEL", "error")
        .output()
        .expect("posts-api failed-events runs");
    assert!(listed.status.success(), "{listed:?}");
    let line: serde_json::Value = serde_json::from_slice(
        listed
            .stdout
            .split(|byte| *byte == b'\n')
            .next()
            .expect("one line"),
    )
    .expect("a JSON line");
    assert_eq!(line["event"]["type"], "post.created");
    assert_eq!(line["event"]["data"]["id"], post.as_str());
    assert_eq!(line["attempts"], 2);
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("posts_api_events_failed_total 1"),
        "{metrics}"
    );
}
