//! Quotas per user: every way in reserves its bytes before they move, an upload past the
//! quota is 507 saying the quota and the usage, deleting gives bytes back, concurrent
//! uploads that together cross the quota are decided exactly, and what a killed upload
//! reserved comes back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use mongodb::bson::{DateTime, doc, oid::ObjectId};
use serde_json::{Value, json};
use test_support::{ApiClient, MIB, expect_problem, id_of};

use crate::auth::{AUDIENCE, ISSUER, SECRET, app_with_users, create_post_as, token_for};
use crate::helpers::{ServiceCommand, TestApp};

/// The quota of the tests' users.
const QUOTA: u64 = 100_000;

/// A service with a quota of [`QUOTA`] bytes, and a client of `ann` with a post of hers.
async fn ann_with_a_post(
    adjust: impl FnOnce(&mut api::config::Settings),
) -> (TestApp, ApiClient, String) {
    let (app, ann, _) = app_with_users(|settings| {
        settings.uploads.quota_bytes_per_user = QUOTA;
        adjust(settings);
    })
    .await;
    let post = create_post_as(&app, &ann).await;
    let client = ApiClient::with_bearer(app.url(""), &ann);
    (app, client, post)
}

/// Text of `n` bytes (an allowed type).
fn text(n: u64) -> Bytes {
    Bytes::from(vec![b'a'; usize::try_from(n).expect("small")])
}

async fn usage(client: &ApiClient) -> Value {
    let response = client.get("/v1/me/usage").await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

async fn assert_over_quota(response: reqwest::Response) {
    let problem = expect_problem(response, 507).await;
    assert_eq!(problem["type"], "/problems/quota-exceeded");
    assert_eq!(problem["quota_bytes"], QUOTA);
    assert!(problem["used_bytes"].is_u64(), "{problem}");
}

#[tokio::test]
async fn usage_counts_the_bytes_of_every_way_in() {
    let (_app, ann, post) = ann_with_a_post(|_| {}).await;

    let form = ann.upload(&post, &[("a.txt", &text(1_000))]).await;
    let raw = ann.upload_raw_streamed(&post, "b.txt", text(2_000)).await;
    let tus = ann.upload_resumable(&post, text(3_000)).await;
    let direct = ann
        .upload_direct(&post, "d.txt", "text/plain", text(4_000), json!({}))
        .await;

    assert_eq!(form.status(), 201);
    assert_eq!(raw.status(), 201);
    assert_eq!(tus.status(), 204);
    assert_eq!(direct.status(), 201);
    assert_eq!(
        usage(&ann).await,
        json!({ "bytes_used": 10_000, "bytes_reserved": 0, "bytes_quota": QUOTA, "attachments": 4 })
    );
}

#[tokio::test]
async fn a_form_upload_past_the_quota_is_507_as_its_bytes_arrive_and_keeps_nothing() {
    let (app, ann, post) = ann_with_a_post(|_| {}).await;

    let refused = ann.upload(&post, &[("big.txt", &text(QUOTA + 1))]).await;

    assert_over_quota(refused).await;
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
    assert_eq!(usage(&ann).await["bytes_reserved"], 0);
}

#[tokio::test]
async fn uploads_that_declare_more_than_is_left_are_refused_before_their_bytes_move() {
    let (_app, ann, post) = ann_with_a_post(|_| {}).await;
    let stored = ann.upload_raw_streamed(&post, "a.txt", text(60_000)).await;
    assert_eq!(stored.status(), 201);

    let raw = ann.upload_raw_streamed(&post, "b.txt", text(50_000)).await;
    let direct = ann
        .post_json(
            &format!("/v1/posts/{post}/attachments/uploads"),
            &json!({ "filename": "c.txt", "content_type": "text/plain", "size": 50_000 }),
        )
        .await;
    let tus = ann
        .client
        .post(ann.url(&format!("/v1/posts/{post}/attachments/tus")))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", 50_000)
        // `c.txt`, in base64.
        .header("Upload-Metadata", "filename Yy50eHQ=")
        .send()
        .await
        .expect("request");

    assert_over_quota(raw).await;
    assert_over_quota(direct).await;
    assert_over_quota(tus).await;
    let usage = usage(&ann).await;
    assert_eq!(usage["bytes_used"], 60_000);
    assert_eq!(usage["bytes_reserved"], 0);
}

#[tokio::test]
async fn concurrent_uploads_that_together_cross_the_quota_are_decided_exactly() {
    let (_app, ann, post) = ann_with_a_post(|settings| {
        settings.admission.uploads_per_user = 8.try_into().expect("not zero");
    })
    .await;

    let names: Vec<String> = (0..8).map(|n| format!("{n}.txt")).collect();
    let answers = join_all(
        names
            .iter()
            .map(|name| ann.upload_raw_streamed(&post, name, text(30_000))),
    )
    .await;

    let statuses: Vec<u16> = answers
        .iter()
        .map(|answer| answer.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|status| **status == 201).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|status| **status == 507).count(),
        5,
        "{statuses:?}"
    );
    let usage = usage(&ann).await;
    assert_eq!(usage["bytes_used"], 90_000);
    assert_eq!(usage["attachments"], 3);
    assert_eq!(usage["bytes_reserved"], 0);
}

#[tokio::test]
async fn deleting_an_attachment_or_a_post_gives_its_bytes_back() {
    let (_app, ann, post) = ann_with_a_post(|_| {}).await;
    let first = ann.upload_one(&post, "a.txt", &text(10_000)).await;
    ann.upload_one(&post, "b.txt", &text(20_000)).await;

    let deleted = ann.delete_attachment(&post, &id_of(&first)).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(usage(&ann).await["bytes_used"], 20_000);

    let deleted = ann
        .request(reqwest::Method::DELETE, &format!("/v1/posts/{post}"))
        .await;
    assert_eq!(deleted.status(), 204);
    let usage = usage(&ann).await;
    assert_eq!(usage["bytes_used"], 0);
    assert_eq!(usage["attachments"], 0);
}

#[tokio::test]
async fn the_reaper_drops_expired_reservations_and_sets_a_wrong_count_right() {
    let (app, ann, post) = ann_with_a_post(|settings| {
        settings.uploads.reaper_interval_secs = 1.try_into().expect("not zero");
    })
    .await;
    ann.upload_one(&post, "a.txt", &text(10_000)).await;
    // What a process killed mid-upload leaves: a reservation nobody will release; and a
    // count a crash left wrong.
    let expired = DateTime::from_millis(DateTime::now().timestamp_millis() - 1_000);
    app.stored
        .database
        .collection::<mongodb::bson::Document>("usage")
        .update_one(
            doc! { "_id": "ann" },
            doc! {
                "$push": { "reservations": { "_id": ObjectId::new(), "upload": ObjectId::new(), "bytes": 50_000_i64, "expires_at": expired } },
                "$set": { "used_bytes": 77_i64 },
            },
        )
        .await
        .expect("usage written");

    let started = Instant::now();
    loop {
        let usage = usage(&ann).await;
        if usage["bytes_reserved"] == 0 && usage["bytes_used"] == 10_000 {
            assert_eq!(usage["attachments"], 1);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "still {usage}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn usage_needs_a_token() {
    let (app, _ann, _post) = ann_with_a_post(|_| {}).await;

    expect_problem(app.get("/v1/me/usage").await, 401).await;
}

#[tokio::test]
async fn what_an_upload_killed_with_its_process_reserved_comes_back() {
    let database = format!("test_{}", uuid::Uuid::new_v4().simple());
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    // Reservations expire 3 s after they are made, so that a dead instance's are soon
    // due; the reaper of the next instance looks every second.
    let instance = || {
        ServiceCommand::new()
            .env("APP__MONGO__DATABASE", &database)
            .env("APP__S3__KEY_PREFIX", &prefix)
            .env("APP__AUTH__JWT_HS256_SECRET", SECRET)
            .env("APP__AUTH__ISSUER", ISSUER)
            .env("APP__AUTH__AUDIENCE", AUDIENCE)
            .env("APP__UPLOADS__QUOTA_BYTES_PER_USER", (10 * MIB).to_string())
            .env("APP__UPLOADS__PENDING_TTL_SECS", "3")
            .env("APP__S3__PRESIGN_TTL_SECS", "1")
            .env("APP__UPLOADS__REAPER_INTERVAL_SECS", "1")
            .spawn()
    };
    let token = token_for("ann");
    let mut doomed = instance();
    doomed
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;
    let ann = ApiClient::with_bearer(format!("http://127.0.0.1:{}", doomed.port), &token);
    let post = ann.create_post().await;
    ann.upload_one(&post, "kept.txt", &text(10_000)).await;
    // A raw upload that declares 5 MiB, sends 1.5 MiB (more than a file stored before its
    // post is checked, so its bytes are reserved first) and never the rest.
    let (sender, body) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let stalled = ann
        .client
        .post(ann.url(&format!(
            "/v1/posts/{post}/attachments/raw?filename=cut.txt"
        )))
        .header("content-type", "text/plain")
        .header("content-length", 5 * MIB)
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let stalled = tokio::spawn(stalled);
    let mut sender = sender;
    futures::SinkExt::send(&mut sender, Ok(text(3 * MIB / 2)))
        .await
        .expect("body open");
    let started = Instant::now();
    while usage(&ann).await["bytes_reserved"] != 5 * MIB {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never reserved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    doomed.kill();
    let _ = stalled.await;
    let mut survivor = instance();
    survivor
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;
    let ann = ApiClient::with_bearer(format!("http://127.0.0.1:{}", survivor.port), &token);

    let started = Instant::now();
    loop {
        let usage = usage(&ann).await;
        if usage["bytes_reserved"] == 0 {
            assert_eq!(usage["bytes_used"], 10_000);
            assert_eq!(usage["attachments"], 1);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "still {usage}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
