//! Admission control under load: many large uploads at once against a small memory budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use test_support::{ApiClient, BOUNDARY, closing_boundary, part_header, rss_of};

use crate::helpers::ServiceCommand;

const MIB: u64 = 1024 * 1024;
const UPLOADS: usize = 100;
const FILE_SIZE: u64 = 20 * MIB;
/// Room for two uploads at a time (each holds up to 24 MiB with the default parts).
const BUDGET: u64 = 64 * MIB;

/// How one upload of the load ended.
#[derive(Debug)]
enum Answer {
    /// A response: status, whether it had `Retry-After`, body.
    Status(u16, bool, serde_json::Value),
    /// The connection closed while the client was still sending the body: refused before
    /// the body was read, the 503 sent, the client stopped at the broken pipe.
    ClosedWhileSending,
}

/// The file every upload sends, one pseudo-random MiB repeated, and its SHA-256.
fn file_block() -> (Bytes, String) {
    let block: Bytes = (0..MIB)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add((i >> 8) as u8))
        .collect::<Vec<u8>>()
        .into();
    let mut hasher = Sha256::new();
    for _ in 0..FILE_SIZE / MIB {
        hasher.update(&block);
    }
    (block, hex::encode(hasher.finalize()))
}

/// A multipart body of the file, generated as it is sent: (length, stream).
fn upload_body(
    n: usize,
    block: Bytes,
) -> (
    u64,
    impl futures::Stream<Item = Result<Bytes, std::io::Error>>,
) {
    let head = Bytes::from(part_header(&format!("file-{n}.bin")));
    let tail = Bytes::from(format!("\r\n{}", closing_boundary()));
    let length = head.len() as u64 + FILE_SIZE + tail.len() as u64;
    let parts = std::iter::once(head)
        .chain((0..FILE_SIZE / MIB).map(move |_| block.clone()))
        .chain(std::iter::once(tail))
        .map(Ok);
    (length, futures::stream::iter(parts))
}

async fn upload(api: ApiClient, url: String, n: usize, block: Bytes) -> Answer {
    let (length, body) = upload_body(n, block);
    let sent = api
        .client
        .post(url)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .header("content-length", length.to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body = response.json().await.unwrap_or_default();
            Answer::Status(status, retry_after, body)
        }
        Err(error) if error.is_request() => Answer::ClosedWhileSending,
        Err(error) => panic!("{error}"),
    }
}

// The figures are the point of this test: it prints them.
#[allow(clippy::print_stderr)]
#[tokio::test]
async fn a_hundred_large_uploads_stay_within_the_memory_budget_and_each_is_answered() {
    let mut service = ServiceCommand::new()
        .env("APP__ADMISSION__UPLOAD_MEMORY_BYTES", BUDGET.to_string())
        .env("APP__UPLOADS__MAX_FILE_BYTES", (64 * MIB).to_string())
        .env("APP__UPLOADS__ALLOWED_CONTENT_TYPES", "*/*")
        .spawn();
    service
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;
    let api = ApiClient::new(format!("http://127.0.0.1:{}", service.port));
    let post = api.create_post().await;
    let url = api.url(&format!("/v1/posts/{post}/attachments"));
    let baseline = service.rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let running = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, running, pid) = (peak.clone(), running.clone(), service.pid());
        async move {
            while running.load(Ordering::SeqCst) {
                peak.fetch_max(rss_of(pid), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let (block, sha256) = file_block();

    let started = Instant::now();
    let answers = futures::future::join_all(
        (0..UPLOADS).map(|n| upload(api.clone(), url.clone(), n, block.clone())),
    )
    .await;
    let elapsed = started.elapsed();
    running.store(false, Ordering::SeqCst);
    sampler.await.expect("sampler");

    let accepted: Vec<&serde_json::Value> = answers
        .iter()
        .filter_map(|answer| match answer {
            Answer::Status(201, _, body) => Some(body),
            _ => None,
        })
        .collect();
    let refused = answers
        .iter()
        .filter(|answer| matches!(answer, Answer::Status(503, true, _)))
        .count();
    let closed = answers
        .iter()
        .filter(|answer| matches!(answer, Answer::ClosedWhileSending))
        .count();
    let peak = peak.load(Ordering::SeqCst);
    eprintln!(
        "admission under load: {UPLOADS} uploads of {} MiB against a {} MiB budget in \
         {elapsed:.1?}: {} accepted, {refused} refused with 503 and Retry-After, {closed} \
         refused while still sending; RSS {} MiB idle, {} MiB peak ({} MiB above idle)",
        FILE_SIZE / MIB,
        BUDGET / MIB,
        accepted.len(),
        baseline / MIB,
        peak / MIB,
        (peak - baseline) / MIB
    );
    assert_eq!(
        accepted.len() + refused + closed,
        UPLOADS,
        "every upload is accepted or refused: {answers:?}"
    );
    assert!(!accepted.is_empty() && refused > 0);
    assert!(
        peak <= baseline + BUDGET,
        "peak RSS {peak} above budget plus idle"
    );
    for body in accepted {
        let attachment = &body["items"][0];
        assert_eq!(attachment["sha256"], sha256.as_str());
        let downloaded = api
            .get(attachment["content_url"].as_str().expect("content_url"))
            .await
            .bytes()
            .await
            .expect("download");
        assert_eq!(hex::encode(Sha256::digest(&downloaded)), sha256);
    }
}
