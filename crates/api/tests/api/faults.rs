//! Faults: dependencies that stall fail each request within its budget instead of hanging
//! it, and several instances keep MongoDB and S3 consistent through kills, stalls and cuts.

use std::num::NonZero;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use test_support::{
    ApiClient, ChaosProxy, Inspector, expect_problem, multipart, part_header, socket_address_of,
    testbed,
};

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

/// Three instances behind a round-robin balancer, on one database and one bucket prefix,
/// MongoDB and S3 behind proxies that the test stalls and cuts, one instance killed
/// mid-upload. After recovery and the
/// reaper's passes: no object without a ready record, no ready record without its object,
/// nothing pending, no open multipart upload, and every upload answered 201 downloads with
/// its digest.
// The figures are the point of this test: it prints them.
#[allow(clippy::print_stderr)]
#[tokio::test]
async fn several_instances_keep_mongodb_and_s3_consistent_through_kills_stalls_and_cuts() {
    use sha2::{Digest, Sha256};

    let mongo = ChaosProxy::start(socket_address_of(&testbed("MONGODB_URI"))).await;
    let s3 = ChaosProxy::start(socket_address_of(&testbed("AWS_ENDPOINT_URL"))).await;
    let database = format!("fault_{}", uuid::Uuid::new_v4().simple());
    let prefix = format!("fault-{}", uuid::Uuid::new_v4().simple());
    let spawn = || {
        ServiceCommand::new()
            .env(
                "MONGODB_URI",
                mongo.url("mongodb", "/?directConnection=true"),
            )
            .env("APP__MONGO__DATABASE", database.clone())
            .env("AWS_ENDPOINT_URL", s3.url("http", ""))
            .env("APP__S3__KEY_PREFIX", prefix.clone())
            .env("APP__S3__PRESIGN_TTL_SECS", "2")
            .env("APP__UPLOADS__PENDING_TTL_SECS", "3")
            .env("APP__UPLOADS__REAPER_INTERVAL_SECS", "1")
            .env("APP__UPLOADS__ALLOWED_CONTENT_TYPES", "*/*")
            .env("APP__AWS__OPERATION_TIMEOUT_SECS", "4")
            .env("APP__AWS__ATTEMPT_TIMEOUT_SECS", "2")
            .env("APP__SERVER__STORAGE_TIMEOUT_SECS", "3")
            .spawn()
    };
    let mut instances = vec![spawn(), spawn(), spawn()];
    for instance in &mut instances {
        instance
            .ready_within(Instant::now(), Duration::from_secs(30))
            .await;
    }
    // Clients reach the instances through a round-robin balancer; the victim directly.
    let balancer = ChaosProxy::round_robin(
        instances
            .iter()
            .map(|instance| std::net::SocketAddr::from(([127, 0, 0, 1], instance.port)))
            .collect(),
    )
    .await;
    let through_balancer = || {
        let mut client = ApiClient::new(balancer.url("http", ""));
        // A connection per request, so each one is balanced.
        client.client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        client
    };
    let clients = [through_balancer(), through_balancer()];
    let victim = ApiClient::new(format!("http://127.0.0.1:{}", instances[2].port));
    let mut posts = Vec::new();
    for n in 0..6 {
        posts.push(clients[n % 2].create_post().await);
    }

    // A slow upload to instance 2, which is killed in the middle of it.
    let victim_post = posts[2].clone();
    let slow = tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; 256 * 1024]);
        let head = Bytes::from(part_header("killed.bin"));
        let body = futures::stream::iter((0..64).map(move |n| {
            Ok::<_, std::io::Error>(if n == 0 { head.clone() } else { chunk.clone() })
        }))
        .then(|chunk| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            chunk
        });
        let (content_type, _) = multipart(&[]);
        let _ = victim
            .client
            .post(victim.url(&format!("/v1/posts/{victim_post}/attachments")))
            .header("content-type", content_type)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await;
    });

    // Concurrent uploads, downloads and deletes through the others, with faults between.
    let mut stored: Vec<(ApiClient, serde_json::Value, String)> = Vec::new();
    let (mut refused, mut deleted) = (0, 0);
    for round in 0..6 {
        match round {
            1 => {
                tokio::time::sleep(Duration::from_millis(800)).await;
                instances[2].kill();
            }
            2 => s3.stall(),
            3 => {
                s3.restore();
                mongo.cut();
            }
            4 => mongo.restore(),
            _ => {}
        }
        let uploads = futures::future::join_all((0..4).map(|n| {
            let client = clients[n % 2].clone();
            let post = posts[(round * 4 + n) % posts.len()].clone();
            async move {
                let bytes: Vec<u8> = (0..(512 * 1024 + round * 4096 + n))
                    .map(|i| (i * 7 + round + n) as u8)
                    .collect();
                let digest = hex::encode(Sha256::digest(&bytes));
                let response = client.upload(&post, &[("f.bin", &bytes)]).await;
                (client, response, digest)
            }
        }))
        .await;
        for (client, response, digest) in uploads {
            if response.status() == 201 {
                let mut body: serde_json::Value = response.json().await.expect("JSON");
                stored.push((client, body["items"][0].take(), digest));
            } else {
                refused += 1;
            }
        }
        // Delete one stored attachment a round, through the other instance.
        if round % 2 == 0
            && let Some((_, attachment, _)) = stored.pop()
        {
            let path = attachment["url"].as_str().expect("url").to_owned();
            if clients[1]
                .request(reqwest::Method::DELETE, &path)
                .await
                .status()
                == 204
            {
                deleted += 1;
            } else {
                stored.push((clients[1].clone(), attachment, String::new()));
            }
        }
    }
    mongo.restore();
    s3.restore();
    let _ = slow.await;

    // Recovery: the pending TTL passes and the survivors' reapers run.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stored_ok = stored
        .iter()
        .filter(|(_, _, digest)| !digest.is_empty())
        .count();
    for (client, attachment, digest) in &stored {
        if digest.is_empty() {
            continue;
        }
        let content = client
            .get(attachment["content_url"].as_str().expect("content_url"))
            .await;
        assert_eq!(content.status(), 200, "{attachment}");
        let bytes = content.bytes().await.expect("bytes");
        assert_eq!(&hex::encode(Sha256::digest(&bytes)), digest);
    }
    let database = mongodb::Client::with_uri_str(testbed("MONGODB_URI"))
        .await
        .expect("MongoDB")
        .database(&database);
    let inspector = Inspector::new(&testbed("AWS_S3_BUCKET_NAME"), &prefix, database.clone()).await;
    let records: Vec<mongodb::bson::Document> = database
        .collection::<mongodb::bson::Document>("attachments")
        .find(mongodb::bson::doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("records");
    let ready_keys: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|record| record.get_str("status") == Ok("ready"))
        .map(|record| {
            format!(
                "{prefix}/{}/{}",
                record.get_object_id("post_id").expect("post_id").to_hex(),
                record.get_object_id("_id").expect("_id").to_hex()
            )
        })
        .collect();
    let objects: std::collections::BTreeSet<String> =
        inspector.object_keys().await.into_iter().collect();
    let orphans = objects.difference(&ready_keys).count();
    let dangling = ready_keys.difference(&objects).count();
    let not_ready = records.len() - ready_keys.len();
    let multipart_uploads = inspector.multipart_uploads().await.len();
    eprintln!(
        "fault suite: 3 instances behind a balancer, 1 killed mid-upload, S3 stalled, MongoDB cut: \
         {stored_ok} uploads answered 201 and verified, {refused} refused, {deleted} deleted; \
         after recovery: {orphans} objects without a ready record, {dangling} ready records \
         without an object, {not_ready} records not ready, {multipart_uploads} open multipart \
         uploads"
    );
    assert!(stored_ok > 0);
    assert_eq!(
        (orphans, dangling, not_ready, multipart_uploads),
        (0, 0, 0, 0)
    );
}
