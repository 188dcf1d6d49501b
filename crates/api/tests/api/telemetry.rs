//! Traces: spans for the request, MongoDB, S3 and STS reach an OTLP collector, and the
//! request's log lines carry its trace.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use test_support::ApiClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::ServiceCommand;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const AMZN_TRACE_ID: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";

/// An OTLP/HTTP collector on 127.0.0.1 that keeps every request body it receives.
async fn collector() -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let received = Arc::new(Mutex::new(Vec::new()));
    let bodies = received.clone();
    tokio::spawn(async move {
        while let Ok((mut connection, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    // One request at a time: the head, then content-length bytes of body.
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match connection.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|value| value.trim().parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < end + 4 + length {
                        match connection.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    }
                    let body: Vec<u8> = buffer.drain(..end + 4 + length).skip(end + 4).collect();
                    bodies.lock().expect("lock").extend_from_slice(&body);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if connection.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{address}"), received)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn spans_of_the_request_mongodb_s3_and_sts_reach_the_collector_and_logs_carry_the_trace() {
    let (endpoint, received) = collector().await;
    let mut service = ServiceCommand::new()
        .env("APP__TRACES__OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .spawn();
    service
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;
    let api = ApiClient::new(format!("http://127.0.0.1:{}", service.port));

    let created = api
        .client
        .post(api.url("/v1/posts"))
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .header("x-amzn-trace-id", AMZN_TRACE_ID)
        .json(&serde_json::json!({ "title": "traced" }))
        .send()
        .await
        .expect("request reaches the service");
    assert_eq!(created.status(), 201);
    let post: serde_json::Value = created.json().await.expect("JSON");
    api.upload_one(post["id"].as_str().expect("id"), "a.txt", b"traced bytes")
        .await;

    let expected = [
        "POST /v1/posts",
        "POST /v1/posts/{post_id}/attachments",
        "insert posts",
        "S3.PutObject",
        "STS.AssumeRole",
    ];
    let started = Instant::now();
    loop {
        let missing: Vec<&str> = {
            let bytes = received.lock().expect("lock");
            expected
                .iter()
                .copied()
                .filter(|name| !contains(&bytes, name))
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "spans never exported: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logged = service
        .output()
        .lines()
        .find(|line| line.contains("request completed") && line.contains("\"status\":201"))
        .map(str::to_owned)
        .expect("the request's log line");
    assert!(
        logged.contains(&format!("\"trace_id\":\"{TRACE_ID}\"")),
        "{logged}"
    );
    assert!(logged.contains(AMZN_TRACE_ID), "{logged}");
}
