//! `/v1/posts/{post_id}/attachments`: streamed uploads, downloads, presigned URLs.

use std::collections::BTreeMap;
use std::num::NonZero;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use test_support::{
    BOUNDARY, ChaosProxy, closing_boundary, expect_problem, multipart, part_header,
    socket_address_of, testbed,
};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, test_settings};

/// A whole 1 × 1 PNG: images are decoded before they are stored.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\x0bIDATx\x9cc`\0\x02\0\0\x05\0\x01z^\xab?\0\0\0\0IEND\xaeB`\x82";
const MIB: usize = 1024 * 1024;

async fn app_with_limits(max_file_bytes: u64, max_files: u32, allowed: &[&str]) -> TestApp {
    let mut settings = test_settings();
    settings.uploads.max_file_bytes = NonZero::new(max_file_bytes).expect("non-zero");
    settings.uploads.max_files_per_request = NonZero::new(max_files).expect("non-zero");
    settings.uploads.allowed_content_types = allowed.iter().map(|t| (*t).to_owned()).collect();
    spawn_app_with(settings).await
}

#[tokio::test]
async fn files_upload_in_order_with_sniffed_types_and_digests() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = app
        .upload(&post, &[("notes.txt", b"hello"), ("pixel.txt", PNG)])
        .await;

    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("JSON");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["filename"], "notes.txt");
    assert_eq!(items[0]["content_type"], "text/plain");
    assert_eq!(items[0]["size"], 5);
    assert_eq!(items[0]["sha256"], hex::encode(Sha256::digest(b"hello")));
    assert_eq!(
        items[1]["content_type"], "image/png",
        "sniffed, not the .txt name"
    );
    assert_eq!(items[1]["post_id"], post.as_str());
    let read: Value = app.get_json(&format!("/v1/posts/{post}")).await;
    assert_eq!(read["attachments"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn uploading_to_an_unknown_post_is_404() {
    let app = spawn_app().await;

    let response = app
        .upload("5f0000000000000000000000", &[("a.txt", b"x")])
        .await;

    expect_problem(response, 404).await;
    app.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_file_over_the_limit_is_413_and_nothing_is_stored() {
    let app = app_with_limits(1024, 10, &["*/*"]).await;
    let post = app.create_post().await;

    let response = app.upload(&post, &[("big.bin", &[7u8; 4096])]).await;

    expect_problem(response, 413).await;
    app.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_disallowed_type_is_415_and_nothing_is_stored() {
    let app = app_with_limits(1024 * 1024, 10, &["text/plain"]).await;
    let post = app.create_post().await;

    let response = app.upload(&post, &[("a.png", PNG)]).await;

    let problem = expect_problem(response, 415).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("image/png")
    );
    app.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn three_files_whose_second_is_too_large_store_nothing() {
    let app = app_with_limits(1024, 10, &["*/*"]).await;
    let post = app.create_post().await;

    let response = app
        .upload(
            &post,
            &[
                ("1.txt", b"one"),
                ("2.bin", &[1u8; 2048]),
                ("3.txt", b"three"),
            ],
        )
        .await;

    expect_problem(response, 413).await;
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn more_files_than_allowed_is_413_and_nothing_is_stored() {
    let app = app_with_limits(1024, 2, &["*/*"]).await;
    let post = app.create_post().await;

    let response = app
        .upload(&post, &[("1.txt", b"1"), ("2.txt", b"2"), ("3.txt", b"3")])
        .await;

    expect_problem(response, 413).await;
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_body_that_is_not_multipart_is_415() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = app
        .client
        .post(format!("{}/v1/posts/{post}/attachments", app.address))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");

    expect_problem(response, 415).await;
}

#[tokio::test]
async fn a_form_without_a_file_part_is_400() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = app.upload(&post, &[]).await;

    expect_problem(response, 400).await;
}

#[tokio::test]
async fn a_file_name_with_control_characters_is_400() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let response = app.upload(&post, &[("bad\u{1}name.txt", b"x")]).await;

    expect_problem(response, 400).await;
    app.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn attachments_list_and_read() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let attachment = app.upload_one(&post, "a.txt", b"abc").await;
    let id = attachment["id"].as_str().expect("id");

    let list: Value = app.get_json(&format!("/v1/posts/{post}/attachments")).await;
    let one = app.get(&format!("/v1/posts/{post}/attachments/{id}")).await;

    assert_eq!(list["items"][0]["id"], id);
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.expect("JSON"), attachment);
}

#[tokio::test]
async fn an_unknown_or_malformed_attachment_is_404() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    for id in ["5f0000000000000000000000", "nope"] {
        for suffix in ["", "/content", "/url"] {
            let response = app
                .get(&format!("/v1/posts/{post}/attachments/{id}{suffix}"))
                .await;
            assert_eq!(response.status(), 404, "{id}{suffix}");
            expect_problem(response, 404).await;
        }
    }
    let listed = app
        .get("/v1/posts/5f0000000000000000000000/attachments")
        .await;
    expect_problem(listed, 404).await;
}

#[tokio::test]
async fn a_download_streams_the_bytes_with_its_headers() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let attachment = app.upload_one(&post, "résumé.txt", b"hello, world").await;
    let id = attachment["id"].as_str().expect("id");

    let response = app
        .get(&format!("/v1/posts/{post}/attachments/{id}/content"))
        .await;

    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["content-length"], "12");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["etag"],
        format!("\"{}\"", attachment["sha256"].as_str().expect("sha")).as_str()
    );
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"r_sum_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"
    );
    assert_eq!(
        response.bytes().await.expect("body").as_ref(),
        b"hello, world"
    );
}

#[tokio::test]
async fn ranges_answer_206_with_content_range() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let id = app.upload_one(&post, "digits.txt", b"0123456789").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let url = format!("{}/v1/posts/{post}/attachments/{id}/content", app.address);

    for (range, body, content_range) in [
        ("bytes=0-0", "0", "bytes 0-0/10"),
        ("bytes=9-", "9", "bytes 9-9/10"),
        ("bytes=3-5", "345", "bytes 3-5/10"),
        ("bytes=-4", "6789", "bytes 6-9/10"),
    ] {
        let response = app
            .client
            .get(&url)
            .header("range", range)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 206, "{range}");
        assert_eq!(response.headers()["content-range"], content_range);
        assert_eq!(response.text().await.expect("text"), body, "{range}");
    }
}

#[tokio::test]
async fn a_range_past_the_end_is_416() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let id = app.upload_one(&post, "d.txt", b"0123456789").await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let response = app
        .client
        .get(format!(
            "{}/v1/posts/{post}/attachments/{id}/content",
            app.address
        ))
        .header("range", "bytes=10-")
        .send()
        .await
        .expect("request");

    assert_eq!(response.headers()["content-range"], "bytes */10");
    expect_problem(response, 416).await;
}

#[tokio::test]
async fn a_matching_if_none_match_is_304() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let attachment = app.upload_one(&post, "d.txt", b"cached").await;
    let etag = format!("\"{}\"", attachment["sha256"].as_str().expect("sha"));

    let response = app
        .client
        .get(format!(
            "{}/v1/posts/{post}/attachments/{}/content",
            app.address,
            attachment["id"].as_str().expect("id")
        ))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), 304);
    assert_eq!(response.headers()["etag"], etag.as_str());
}

#[tokio::test]
async fn head_answers_the_headers_without_the_body() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let id = app.upload_one(&post, "d.txt", b"0123456789").await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let response = app
        .request(
            Method::HEAD,
            &format!("/v1/posts/{post}/attachments/{id}/content"),
        )
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "10");
    assert_eq!(response.headers()["accept-ranges"], "bytes");
    assert!(response.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn a_presigned_url_downloads_the_same_bytes() {
    let app = app_with_limits(MIB as u64, 1, &["*/*"]).await;
    let post = app.create_post().await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let id = app.upload_one(&post, "data.bin", &bytes).await["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let response = app
        .get(&format!("/v1/posts/{post}/attachments/{id}/url"))
        .await;
    assert_eq!(response.status(), 200);
    let presigned: Value = response.json().await.expect("JSON");
    let fetched = reqwest::get(presigned["url"].as_str().expect("url"))
        .await
        .expect("GET presigned");

    assert_eq!(fetched.status(), 200);
    assert_eq!(
        fetched.bytes().await.expect("body").as_ref(),
        bytes.as_slice()
    );
    assert!(
        presigned["expires_at"]
            .as_str()
            .expect("expiry")
            .ends_with('Z')
    );
}

#[tokio::test]
async fn a_presigned_url_names_the_presign_endpoint_when_clients_reach_s3_elsewhere() {
    // Another address of the same S3, as the host's published port is in compose.
    let elsewhere = ChaosProxy::start(socket_address_of(&testbed("AWS_ENDPOINT_URL"))).await;
    let endpoint = elsewhere.url("http", "");
    let mut settings = test_settings();
    settings.s3.presign_endpoint = endpoint.clone();
    let app = spawn_app_with(settings).await;
    let (post, attachment) = app
        .post_with_attachment("note.txt", b"reached elsewhere")
        .await;
    let id = attachment["id"].as_str().expect("id");

    let presigned = app
        .get_json(&format!("/v1/posts/{post}/attachments/{id}/url"))
        .await;

    let url = presigned["url"].as_str().expect("url");
    assert!(url.starts_with(&format!("{endpoint}/")), "{url}");
    let fetched = reqwest::get(url).await.expect("GET presigned");
    assert_eq!(fetched.status(), 200);
    assert_eq!(
        fetched.bytes().await.expect("body").as_ref(),
        b"reached elsewhere"
    );
}

#[tokio::test]
async fn deleting_an_attachment_removes_its_object() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let id = app.upload_one(&post, "d.txt", b"bye").await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/v1/posts/{post}/attachments/{id}");

    assert_eq!(app.request(Method::DELETE, &path).await.status(), 204);

    app.stored.assert_nothing_stored().await;
    expect_problem(app.request(Method::DELETE, &path).await, 404).await;
}

#[tokio::test]
async fn concurrent_uploads_to_one_post_all_land() {
    let app = spawn_app().await;
    let post = app.create_post().await;

    let uploads = (0..8).map(|i| {
        let app = &app;
        let post = post.clone();
        async move {
            let content = format!("file number {i}");
            app.upload(&post, &[(&format!("{i}.txt"), content.as_bytes())])
                .await
                .status()
        }
    });
    let statuses = futures::future::join_all(uploads).await;

    assert!(statuses.iter().all(|status| *status == 201), "{statuses:?}");
    let list: Value = app.get_json(&format!("/v1/posts/{post}/attachments")).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(8));
}

#[tokio::test]
async fn a_rejected_200_mib_upload_is_answered_promptly_and_the_next_request_succeeds() {
    let app = app_with_limits(MIB as u64, 1, &["*/*"]).await;
    let post = app.create_post().await;
    let total = 200 * MIB;
    let chunk = bytes::Bytes::from(vec![0u8; MIB]);
    let body = futures::stream::iter(
        (0..total / MIB).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let (content_type, _) = multipart(&[]);

    let started = Instant::now();
    let response = app
        .client
        .post(format!("{}/v1/posts/{post}/attachments", app.address))
        .header("content-type", content_type)
        .header("content-length", total.to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;

    let elapsed = started.elapsed();
    let response = response.expect("the client gets an answer, not a broken connection");
    assert_eq!(response.status(), 413);
    assert!(
        elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_upload_leaves_nothing_behind() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let file_size = 50 * MIB;
    let head = part_header("big.bin");
    let tail = format!("\r\n{}", closing_boundary());
    let length = head.len() + file_size + tail.len();

    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let request_head = format!(
        "POST /v1/posts/{post}/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n{head}"
    );
    socket
        .write_all(request_head.as_bytes())
        .await
        .expect("send head");
    let chunk = vec![42u8; MIB];
    for _ in 0..20 {
        socket
            .write_all(&chunk)
            .await
            .expect("send part of the file");
    }
    // Let the service start the multipart upload, then vanish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(socket);

    app.stored
        .assert_nothing_stored_within(Duration::from_secs(15))
        .await;
}

#[tokio::test]
async fn a_stalled_upload_is_timed_out_and_leaves_nothing() {
    let mut settings = test_settings();
    settings.server.request_body_timeout_secs = NonZero::<u64>::MIN;
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;
    let head = part_header("slow.txt");

    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let request_head = format!(
        "POST /v1/posts/{post}/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 100000\r\n\r\n{head}first bytes"
    );
    socket
        .write_all(request_head.as_bytes())
        .await
        .expect("send head");

    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        socket.read(&mut answer).await
    })
    .await
    .expect("answered before the client gave up")
    .expect("read the answer");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn a_download_whose_client_stops_reading_is_disconnected() {
    const LENGTH: usize = 24 * 1024 * 1024;
    let mut settings = test_settings();
    settings.server.response_body_timeout_secs = NonZero::<u64>::MIN;
    settings.uploads.max_file_bytes = NonZero::new(LENGTH as u64).expect("non-zero");
    settings.uploads.allowed_content_types = vec!["*/*".into()];
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;
    let bytes: Vec<u8> = (0..LENGTH).map(|index| (index % 251) as u8).collect();
    let attachment = app.upload_one_id(&post, "large.bin", &bytes).await;

    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    let mut client = socket
        .connect(([127, 0, 0, 1], app.port).into())
        .await
        .expect("connect");
    let request = format!(
        "GET /v1/posts/{post}/attachments/{attachment}/content HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    );
    client
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    // The client takes nothing for five times the timeout, then reads what is left.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut received = 0;
    let mut buffer = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        while let Ok(read @ 1..) = client.read(&mut buffer).await {
            received += read;
        }
    })
    .await;

    assert!(closed.is_ok(), "the connection is still open");
    assert!(received < LENGTH, "the whole download arrived");
}

#[tokio::test]
async fn the_links_in_responses_lead_to_the_post_its_attachments_and_the_bytes() {
    let app = spawn_app().await;
    let (post, attachment) = app.post_with_attachment("a.txt", b"linked").await;
    let post: Value = app.get_json(&format!("/v1/posts/{post}")).await;

    let read_post: Value = app.get_json(post["url"].as_str().expect("url")).await;
    let listed: Value = app
        .get_json(post["attachments_url"].as_str().expect("attachments_url"))
        .await;
    let read_attachment: Value = app.get_json(attachment["url"].as_str().expect("url")).await;
    let content = app
        .get(attachment["content_url"].as_str().expect("content_url"))
        .await;

    assert_eq!(read_post["id"], post["id"]);
    assert_eq!(listed["items"][0]["id"], attachment["id"]);
    assert_eq!(read_attachment["id"], attachment["id"]);
    assert_eq!(content.bytes().await.expect("bytes").as_ref(), b"linked");
}

#[tokio::test]
async fn the_files_of_a_request_become_visible_together_when_the_last_is_stored() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let first = format!("{}first file\r\n", part_header("one.txt"));
    let second_head = part_header("two.txt");
    let second_rest = format!("second file\r\n{}", closing_boundary());
    let length = first.len() + second_head.len() + second_rest.len();
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let request_head = format!(
        "POST /v1/posts/{post}/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n"
    );
    socket
        .write_all(format!("{request_head}{first}{second_head}").as_bytes())
        .await
        .expect("send the first file");
    // The first file is stored while the second has not arrived.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let while_in_flight: Value = app.get_json(&format!("/v1/posts/{post}/attachments")).await;
    socket
        .write_all(second_rest.as_bytes())
        .await
        .expect("send the second file");
    let mut answer = vec![0u8; 4096];
    let read = tokio::io::AsyncReadExt::read(&mut socket, &mut answer)
        .await
        .expect("the answer");
    let after: Value = app.get_json(&format!("/v1/posts/{post}/attachments")).await;

    assert_eq!(while_in_flight["items"], serde_json::json!([]));
    assert!(
        String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 201"),
        "{}",
        String::from_utf8_lossy(&answer[..read])
    );
    assert_eq!(after["items"].as_array().map(Vec::len), Some(2));
}

/// An upload whose body is sent only in part, holding its admission until dropped.
/// A form upload that declares 32 MiB, more than one upload may hold, and sends a few
/// bytes of it: admitted, it holds its whole share of the memory until the socket goes.
async fn upload_in_flight(app: &TestApp, post: &str, token: Option<&str>) -> tokio::net::TcpStream {
    let head = part_header("slow.txt");
    let length = head.len() + 32 * 1024 * 1024 + closing_boundary().len() + 2;
    let authorization = token.map_or(String::new(), |token| {
        format!("Authorization: Bearer {token}\r\n")
    });
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let request = format!(
        "POST /v1/posts/{post}/attachments HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}\
         Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n{head}some text"
    );
    socket
        .write_all(request.as_bytes())
        .await
        .expect("send the start");
    // Let the service admit it and start reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket
}

#[tokio::test]
async fn uploads_beyond_the_memory_budget_are_refused_with_503_and_retry_after() {
    let mut settings = test_settings();
    settings.admission.upload_memory_bytes =
        NonZero::new(settings.upload_memory_per_request()).expect("non-zero");
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;
    let in_flight = upload_in_flight(&app, &post, None).await;

    let refused = app.upload(&post, &[("a.txt", b"hello")]).await;
    let retry_after = refused.headers().get("retry-after").cloned();
    expect_problem(refused, 503).await;
    drop(in_flight);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admitted = app.upload(&post, &[("a.txt", b"hello")]).await;

    assert!(retry_after.is_some());
    assert_eq!(
        admitted.status(),
        201,
        "the memory came back when the first upload ended"
    );
}

#[tokio::test]
async fn small_uploads_reserve_what_they_can_hold_so_many_fit_at_once() {
    let (app, _, _) = crate::auth::app_with_users(|_| {}).await;
    let users: Vec<String> = (0..16)
        .map(|n| crate::auth::token_for(&format!("user-{n}")))
        .collect();
    let mut posts = Vec::new();
    for token in &users {
        posts.push(crate::auth::create_post_as(&app, token).await);
    }
    let (content_type, body) = multipart(&[("small.txt", &[b'x'; 8 * 1024])]);

    // Four at once per user (admission.uploads_per_user), 64 in all, with the defaults.
    let uploads = (0..64).map(|n| {
        let request = app
            .client
            .post(app.url(&format!("/v1/posts/{}/attachments", posts[n % 16])))
            .bearer_auth(&users[n % 16])
            .header("content-type", content_type.clone())
            .body(body.clone());
        async move { request.send().await.expect("upload").status().as_u16() }
    });
    let statuses = futures::future::join_all(uploads).await;

    assert!(statuses.iter().all(|status| *status == 201), "{statuses:?}");
}

#[tokio::test]
async fn a_user_beyond_their_share_of_uploads_is_refused_with_429_and_others_are_not() {
    let (app, ann, bob) = crate::auth::app_with_users(|settings| {
        settings.admission.uploads_per_user = NonZero::<u32>::MIN;
    })
    .await;
    let post = crate::auth::create_post_as(&app, &ann).await;
    let bobs_post = crate::auth::create_post_as(&app, &bob).await;
    let _in_flight = upload_in_flight(&app, &post, Some(&ann)).await;

    let (content_type, body) = multipart(&[("a.txt", b"hello")]);
    let send_as = |token: &str, post: &str| {
        app.client
            .post(app.url(&format!("/v1/posts/{post}/attachments")))
            .bearer_auth(token)
            .header("content-type", content_type.clone())
            .body(body.clone())
            .send()
    };
    let anns_second = send_as(&ann, &post).await.expect("request");
    let retry_after = anns_second.headers().get("retry-after").cloned();
    let bobs_first = send_as(&bob, &bobs_post).await.expect("request");

    expect_problem(anns_second, 429).await;
    assert!(retry_after.is_some());
    assert_eq!(bobs_first.status(), 201);
}

#[tokio::test]
async fn an_upload_body_past_its_deadline_is_cut_and_leaves_nothing() {
    let mut settings = test_settings();
    settings.admission.upload_deadline_secs = NonZero::<u64>::MIN;
    let app = spawn_app_with(settings).await;
    let post = app.create_post().await;
    let mut socket = upload_in_flight(&app, &post, None).await;

    // A byte every 200 ms: never a stall, but never done either.
    let started = Instant::now();
    let mut answer = Vec::new();
    while started.elapsed() < Duration::from_secs(10) {
        if socket.write_all(b"x").await.is_err() {
            break;
        }
        let mut buffer = [0u8; 1024];
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::io::AsyncReadExt::read(&mut socket, &mut buffer),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(read)) => {
                answer.extend_from_slice(&buffer[..read]);
                break;
            }
            Err(_) => {}
        }
    }

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut after about a second"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    app.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

/// MongoDB commands the service has sent, by name, from its metrics.
async fn database_commands(app: &TestApp) -> BTreeMap<String, u64> {
    let text = app.get_text("/metrics").await;
    text.lines()
        .filter_map(|line| line.strip_prefix("posts_api_mongodb_commands_total{command=\""))
        .filter_map(|line| {
            let (name, rest) = line.split_once('"')?;
            Some((name.to_owned(), rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// A file stored before its post is checked.
const SMALL: usize = 8192;
/// A file too large for that: its place on the post is reserved first.
const LARGER: usize = 2 * 1024 * 1024;

/// The commands of one upload of `size` bytes to a post that already has one attachment:
/// the fewest of three tries, so that a reaper pass in between does not count.
async fn commands_of_an_upload(app: &TestApp, size: usize) -> BTreeMap<String, u64> {
    let post = app.create_post().await;
    app.upload_one(&post, "warm-up.txt", b"warm").await;
    let mut fewest: Option<BTreeMap<String, u64>> = None;
    for _ in 0..3 {
        let before = database_commands(app).await;
        let response = app.upload(&post, &[("file.txt", &vec![b'x'; size])]).await;
        assert_eq!(response.status(), 201);
        let sent: BTreeMap<String, u64> = database_commands(app)
            .await
            .into_iter()
            .map(|(name, count)| (name.clone(), count - before.get(&name).unwrap_or(&0)))
            .filter(|(_, count)| *count > 0)
            .collect();
        let total = |commands: &BTreeMap<String, u64>| commands.values().sum::<u64>();
        if fewest
            .as_ref()
            .is_none_or(|fewest| total(&sent) < total(fewest))
        {
            fewest = Some(sent);
        }
    }
    let uploaded = app.get_json(&format!("/v1/posts/{post}")).await;
    assert_eq!(uploaded["attachments"].as_array().map(Vec::len), Some(4));
    fewest.unwrap_or_default()
}

#[tokio::test]
async fn a_small_upload_takes_one_database_round_trip() {
    let app = spawn_app().await;

    let commands = commands_of_an_upload(&app, SMALL).await;

    assert_eq!(
        commands,
        BTreeMap::from([("bulkWrite".to_owned(), 1)]),
        "insert the record and list it in the post if it admits it, in one command"
    );
}

#[tokio::test]
async fn a_larger_upload_reserves_its_place_before_its_bytes_in_two_database_round_trips() {
    let app = spawn_app().await;

    let commands = commands_of_an_upload(&app, LARGER).await;

    assert_eq!(
        commands,
        BTreeMap::from([("bulkWrite".to_owned(), 1), ("update".to_owned(), 1)]),
        "reserve on the post; then insert the record and list it in the post, in one command"
    );
}

#[tokio::test]
async fn a_small_upload_on_a_mongodb_before_8_takes_two_database_round_trips() {
    let mongo =
        ChaosProxy::editing_replies(socket_address_of(&testbed("MONGODB_URI")), report_mongodb_7)
            .await;
    let mut settings = test_settings();
    settings.mongo.uri = mongo.url("mongodb", "/?directConnection=true").into();
    let app = spawn_app_with(settings).await;

    let commands = commands_of_an_upload(&app, SMALL).await;

    assert_eq!(
        commands,
        BTreeMap::from([("insert".to_owned(), 1), ("update".to_owned(), 1)]),
        "insert the record, then list it in the post if it admits it"
    );
}

/// Makes a `hello` reply say MongoDB 7.0 (wire version 21), which has no `bulkWrite`.
fn report_mongodb_7(reply: &mut [u8]) {
    const FIELD: &[u8] = b"\x10maxWireVersion\x00";
    if let Some(at) = reply
        .windows(FIELD.len())
        .position(|window| window == FIELD)
        && let Some(version) = reply.get_mut(at + FIELD.len()..at + FIELD.len() + 4)
    {
        version.copy_from_slice(&21_i32.to_le_bytes());
    }
}
