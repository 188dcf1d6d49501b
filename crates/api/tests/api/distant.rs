//! Uploads to an S3 at a distance (a proxy adding latency and capping each connection's
//! bandwidth): an upload sends more parts at once than it was admitted with while S3 takes
//! them faster, for a form and for a resumable upload alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{Either, select};
use test_support::{ApiClient, ChaosProxy, socket_address_of, testbed};

use crate::helpers::{ServiceCommand, ServiceProcess};

const MIB: usize = 1024 * 1024;
/// The part size the tests run with: S3's smallest.
const PART: usize = 5 * MIB;
/// Parts an upload is admitted with (`s3.max_parts_in_flight`'s default).
const ADMITTED_PARTS: u64 = 2;

/// `length` bytes of text, of a type every configuration allows.
fn text(length: usize) -> Vec<u8> {
    b"a line of text sent far away\n"
        .iter()
        .copied()
        .cycle()
        .take(length)
        .collect()
}

/// The service, its S3 10 ms away each way and 2 MB/s a connection: a part takes over two
/// seconds, so S3 is what an upload waits for even on a busy machine, and two parts at
/// once fill a fraction of what S3 takes.
async fn service_at_a_distance() -> (ServiceProcess, ApiClient, Arc<ChaosProxy>) {
    let s3 = ChaosProxy::at_a_distance(
        socket_address_of(&testbed("AWS_ENDPOINT_URL")),
        Duration::from_millis(10),
        2_000_000,
    )
    .await;
    let mut service = ServiceCommand::new()
        .env("AWS_ENDPOINT_URL", s3.url("http", ""))
        .env("APP__S3__PART_SIZE_BYTES", PART.to_string())
        .env("APP__S3__MAX_PARTS_IN_FLIGHT", ADMITTED_PARTS.to_string())
        .spawn();
    service
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;
    let api = ApiClient::new(format!("http://127.0.0.1:{}", service.port));
    (service, api, s3)
}

/// The most parts in flight the service reported while `upload` ran, and its outcome.
async fn most_parts_in_flight_during<T>(
    api: &ApiClient,
    upload: impl std::future::Future<Output = T>,
) -> (u64, T) {
    let mut most = 0;
    let mut upload = std::pin::pin!(upload);
    loop {
        let sample = std::pin::pin!(async {
            let metrics = api.get_text("/metrics").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            metrics
        });
        match select(upload.as_mut(), sample).await {
            Either::Left((outcome, _)) => return (most, outcome),
            Either::Right((metrics, _)) => most = most.max(parts_in_flight(&metrics)),
        }
    }
}

fn parts_in_flight(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("posts_api_s3_parts_in_flight "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_form_upload_to_a_distant_s3_sends_more_parts_at_once_than_it_was_admitted_with() {
    let (_service, api, _s3) = service_at_a_distance().await;
    let post = api.create_post().await;
    let bytes = Bytes::from(text(6 * PART));

    let (most, uploaded) =
        most_parts_in_flight_during(&api, api.upload_streamed(&post, "far.bin", bytes.clone()))
            .await;

    let status = uploaded.status();
    let stored = uploaded.json::<serde_json::Value>().await.expect("json");
    assert_eq!(status, 201, "{stored}");
    assert!(most > ADMITTED_PARTS, "at most {most} parts in flight");
    assert_eq!(stored["items"][0]["size"], bytes.len());
}

#[tokio::test]
async fn a_resumable_upload_to_a_distant_s3_sends_more_parts_at_once_than_it_was_admitted_with() {
    let (_service, api, _s3) = service_at_a_distance().await;
    let post = api.create_post().await;
    let length = 6 * PART;

    let (most, appended) =
        most_parts_in_flight_during(&api, api.upload_resumable(&post, Bytes::from(text(length))))
            .await;

    assert_eq!(appended.status(), 204);
    assert_eq!(
        appended.headers()["upload-offset"],
        length.to_string().as_str()
    );
    assert!(most > ADMITTED_PARTS, "at most {most} parts in flight");
}
