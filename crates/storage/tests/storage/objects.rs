//! Streamed uploads and downloads through `Storage`: sizes around the part size, ranges,
//! limits and failures in the middle.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sha2::Digest;
use storage::{ByteRange, StorageError};
use test_support::{ChaosProxy, MIB, pseudo_random, socket_address_of, testbed};

use crate::support::{Chunk, Options, PART, digest, harness, harness_with, stream_of};

/// Stores `len` pseudo-random bytes and opens them for reading; returns the attachment,
/// the body and the bytes' SHA-256.
async fn stored_and_opened(
    h: &crate::support::Harness,
    post: storage::PostId,
    len: u64,
) -> (storage::Attachment, storage::ObjectBody, String) {
    let (chunks, sha256) = pseudo_random(len);
    let attachment = h
        .storage
        .upload_attachment(post, None, "data.bin", None, stream_of(chunks))
        .await
        .expect("upload");
    let body = h
        .storage
        .open_attachment(&attachment, None)
        .await
        .expect("download");
    (attachment, body, sha256)
}

async fn round_trip(len: u64) {
    let h = harness().await;
    let post = h.post().await;

    let (attachment, body, sha256) = stored_and_opened(&h, post, len).await;

    assert_eq!(attachment.size, len);
    assert_eq!(attachment.sha256, sha256);
    assert_eq!(body.content_length, len);
    assert_eq!(digest(body).await, (len, sha256));
    assert!(h.stored.multipart_uploads().await.is_empty());
}

#[tokio::test]
async fn storage_with_its_own_s3_connections_serves_what_the_shared_client_stored() {
    let h = harness().await;
    let post = h.post().await;
    let (chunks, sha256) = pseudo_random(3 * MIB);
    let attachment = h
        .storage
        .upload_attachment(post, None, "data.bin", None, stream_of(chunks))
        .await
        .expect("upload");

    let own = h.storage.with_own_s3_connections();
    let body = own
        .open_attachment(&attachment, None)
        .await
        .expect("download");

    assert_eq!(digest(body).await, (3 * MIB, sha256));
}

#[tokio::test]
async fn an_empty_file_round_trips() {
    round_trip(0).await;
}

#[tokio::test]
async fn a_one_byte_file_round_trips() {
    round_trip(1).await;
}

#[tokio::test]
async fn a_file_one_byte_short_of_a_part_round_trips() {
    round_trip(PART - 1).await;
}

#[tokio::test]
async fn a_file_of_exactly_one_part_round_trips() {
    round_trip(PART).await;
}

#[tokio::test]
async fn a_file_one_byte_over_a_part_round_trips_as_multipart() {
    round_trip(PART + 1).await;
}

#[tokio::test]
async fn a_fifty_mebibyte_file_round_trips() {
    round_trip(50 * MIB).await;
}

#[tokio::test]
async fn ranges_return_exactly_the_requested_bytes() {
    let h = harness().await;
    let post = h.post().await;
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let attachment = h
        .storage
        .upload_attachment(
            post,
            None,
            "r.bin",
            None,
            stream_of(vec![Bytes::from(data.clone())]),
        )
        .await
        .expect("upload");

    for (range, expected, content_range) in [
        (ByteRange::Inclusive(0, 0), &data[..1], (0, 0, 1000)),
        (
            ByteRange::Inclusive(999, 999),
            &data[999..],
            (999, 999, 1000),
        ),
        (
            ByteRange::Inclusive(100, 199),
            &data[100..200],
            (100, 199, 1000),
        ),
        (ByteRange::From(990), &data[990..], (990, 999, 1000)),
        (ByteRange::Suffix(10), &data[990..], (990, 999, 1000)),
    ] {
        let mut body = h
            .storage
            .open_attachment(&attachment, Some(range))
            .await
            .expect("ranged download");
        assert_eq!(body.content_range, Some(content_range), "{range:?}");
        let mut got = Vec::new();
        while let Some(chunk) = body.stream.next().await {
            got.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(got, expected, "{range:?}");
    }
}

#[tokio::test]
async fn a_range_past_the_end_is_not_satisfiable() {
    let h = harness().await;
    let post = h.post().await;
    let attachment = h.attach(post, "r.bin", None, b"tiny").await;

    let result = h
        .storage
        .open_attachment(&attachment, Some(ByteRange::From(100)))
        .await;

    assert!(
        matches!(result, Err(StorageError::RangeNotSatisfiable)),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_upload_over_the_limit_is_too_large_and_leaves_nothing() {
    let h = harness_with(Options {
        max_file_bytes: 12 * MIB,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    let (chunks, _) = pseudo_random(20 * MIB);

    let result = h
        .storage
        .upload_attachment(post, None, "big.bin", None, stream_of(chunks))
        .await;

    assert!(
        matches!(result, Err(StorageError::TooLarge { limit }) if limit == 12 * MIB),
        "{result:?}"
    );
    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_source_stream_failing_midway_leaves_nothing() {
    let h = harness().await;
    let post = h.post().await;
    let (chunks, _) = pseudo_random(12 * MIB);
    let failing = stream_of(chunks).chain(futures::stream::iter([Err::<Bytes, _>(
        std::io::Error::other("client went away"),
    )]));

    let result = h
        .storage
        .upload_attachment(post, None, "cut.bin", None, Box::pin(failing))
        .await;

    assert!(matches!(result, Err(StorageError::Client(_))), "{result:?}");
    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn s3_stopping_midway_leaves_nothing_after_recovery() {
    let proxy = ChaosProxy::start(socket_address_of(&testbed("AWS_ENDPOINT_URL"))).await;
    let h = harness_with(Options {
        endpoint: Some(format!("http://{}", proxy.address)),
        pending_ttl_secs: 0,
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    let (chunks, _) = pseudo_random(30 * MIB);
    // S3 goes away after about 12 MiB have been read from the client.
    let cut_at = chunks.len() * 2 / 5;
    let proxy_in_stream = proxy.clone();
    let stream = stream_of(chunks)
        .enumerate()
        .map(move |(index, chunk): (usize, Chunk)| {
            if index == cut_at {
                proxy_in_stream.cut();
            }
            chunk
        });

    let result = h
        .storage
        .upload_attachment(post, None, "s3-down.bin", None, Box::pin(stream))
        .await;
    assert!(
        matches!(result, Err(StorageError::Objects(_))),
        "{result:?}"
    );

    proxy.restore();
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.storage.reap().await.expect("reaper pass");
    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_presigned_get_downloads_the_bytes_with_a_plain_http_client() {
    let h = harness().await;
    let post = h.post().await;
    let attachment = h
        .attach(post, "hello.txt", Some("text/plain"), b"hello, presigned")
        .await;

    let url = h
        .storage
        .presign_download(&attachment, "attachment; filename=\"hello.txt\"")
        .await
        .expect("presign");
    let response = reqwest::get(&url.url).await.expect("GET presigned");

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain");
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"hello.txt\""
    );
    assert_eq!(
        response.bytes().await.expect("body").as_ref(),
        b"hello, presigned"
    );
}

/// Stages `chunks` declared as `declared` bytes, then publishes them.
async fn upload_sized(
    h: &crate::support::Harness,
    post: storage::PostId,
    declared: u64,
    chunks: impl futures::Stream<Item = Chunk> + Unpin,
) -> Result<storage::Attachment, StorageError> {
    let staged = h
        .storage
        .stage_sized_attachment(post, None, "sized.bin", None, declared, chunks)
        .await?;
    Ok(h.storage.publish(vec![staged]).await?.remove(0))
}

#[tokio::test]
async fn a_sized_upload_larger_than_a_part_is_one_put_object_that_round_trips() {
    let h = harness().await;
    let post = h.post().await;
    let len = 2 * PART + 3;
    let (chunks, sha256) = pseudo_random(len);

    let attachment = upload_sized(&h, post, len, stream_of(chunks))
        .await
        .expect("upload");

    assert_eq!(
        (attachment.size, attachment.sha256.as_str()),
        (len, sha256.as_str())
    );
    let body = h
        .storage
        .open_attachment(&attachment, None)
        .await
        .expect("download");
    assert_eq!(digest(body).await, (len, sha256));
    assert!(h.stored.multipart_uploads().await.is_empty());
}

#[tokio::test]
async fn a_sized_upload_whose_body_is_shorter_than_declared_stores_nothing() {
    let h = harness().await;
    let post = h.post().await;
    let (chunks, _) = pseudo_random(MIB);

    let result = upload_sized(&h, post, MIB + 1, stream_of(chunks)).await;

    assert!(matches!(result, Err(StorageError::Client(_))), "{result:?}");
    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_sized_upload_whose_body_is_longer_than_declared_stores_nothing() {
    let h = harness().await;
    let post = h.post().await;
    let (chunks, _) = pseudo_random(MIB);

    let result = upload_sized(&h, post, MIB - 1, stream_of(chunks)).await;

    assert!(matches!(result, Err(StorageError::Client(_))), "{result:?}");
    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_sized_upload_declared_over_the_limit_is_too_large_before_any_byte_moves() {
    let h = harness_with(Options {
        max_file_bytes: MIB,
        ..Options::default()
    })
    .await;
    let post = h.post().await;

    let result = upload_sized(&h, post, MIB + 1, stream_of(Vec::new())).await;

    assert!(
        matches!(result, Err(StorageError::TooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(h.stored.attachment_records().await, 0);
}

#[tokio::test]
async fn a_sized_upload_whose_stream_fails_midway_stores_nothing() {
    let h = harness().await;
    let post = h.post().await;
    let (chunks, _) = pseudo_random(4 * MIB);
    let failing = stream_of(chunks).chain(futures::stream::iter([Err::<Bytes, _>(
        std::io::Error::other("client went away"),
    )]));

    let result = upload_sized(&h, post, 8 * MIB, Box::pin(failing)).await;

    assert!(matches!(result, Err(StorageError::Client(_))), "{result:?}");
    h.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_sized_upload_slower_than_the_sdk_timeouts_completes() {
    let h = harness_with(Options {
        attempt_timeout: Some(Duration::from_millis(500)),
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    let (chunks, sha256) = pseudo_random(2 * MIB);
    let count = chunks.len();
    // A slow client: the whole body takes about three times the operation timeout.
    let pause = Duration::from_millis(3000 / count as u64);
    let slow = stream_of(chunks).then(move |chunk| async move {
        tokio::time::sleep(pause).await;
        chunk
    });

    let attachment = upload_sized(&h, post, 2 * MIB, Box::pin(slow))
        .await
        .expect("upload");

    assert_eq!(attachment.sha256, sha256);
}

/// A storage whose S3 traffic passes through a proxy the test controls, with
/// `attempt_timeout`, and a post to store under.
async fn behind_a_proxy(
    attempt_timeout: Duration,
) -> (Arc<ChaosProxy>, crate::support::Harness, storage::PostId) {
    let proxy = ChaosProxy::start(socket_address_of(&testbed("AWS_ENDPOINT_URL"))).await;
    let h = harness_with(Options {
        endpoint: Some(format!("http://{}", proxy.address)),
        attempt_timeout: Some(attempt_timeout),
        ..Options::default()
    })
    .await;
    let post = h.post().await;
    (proxy, h, post)
}

/// `chunks` as a stream that calls `act` when its first quarter has been read.
fn acting_after_a_quarter(
    chunks: Vec<Bytes>,
    mut act: impl FnMut() + Unpin,
) -> impl futures::Stream<Item = Chunk> + Unpin {
    let quarter = chunks.len() / 4;
    stream_of(chunks)
        .enumerate()
        .map(move |(index, chunk): (usize, Chunk)| {
            if index == quarter {
                act();
            }
            chunk
        })
}

/// Lets traffic through `proxy` again after `pause`.
fn restore_after(proxy: &Arc<ChaosProxy>, pause: Duration) {
    let proxy = proxy.clone();
    tokio::spawn(async move {
        tokio::time::sleep(pause).await;
        proxy.restore();
    });
}

/// S3 held still for 7 s: past the SDK's default 5 s stalled-stream grace period, within
/// the 10 s attempt timeout that is the service's one measure of a stalled S3.
const PAUSE_WITHIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(7);

#[tokio::test]
async fn s3_stalling_during_a_sized_upload_fails_it_within_the_attempt_timeout() {
    let (proxy, h, post) = behind_a_proxy(Duration::from_secs(1)).await;
    let (chunks, _) = pseudo_random(30 * MIB);
    let stalling = proxy.clone();
    let stream = acting_after_a_quarter(chunks, move || stalling.stall());
    let started = std::time::Instant::now();

    let result = upload_sized(&h, post, 30 * MIB, stream).await;

    assert!(
        matches!(result, Err(StorageError::Objects(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed after {:?}",
        started.elapsed()
    );
    proxy.restore();
    h.stored
        .assert_nothing_stored_within(Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn s3_pausing_within_the_attempt_timeout_during_a_sized_upload_does_not_fail_it() {
    let (proxy, h, post) = behind_a_proxy(Duration::from_secs(10)).await;
    let (chunks, sha256) = pseudo_random(30 * MIB);
    let stream = acting_after_a_quarter(chunks, move || {
        proxy.stall();
        restore_after(&proxy, PAUSE_WITHIN_ATTEMPT_TIMEOUT);
    });

    let attachment = upload_sized(&h, post, 30 * MIB, stream)
        .await
        .expect("upload");

    assert_eq!(attachment.sha256, sha256);
}

#[tokio::test]
async fn s3_pausing_within_the_attempt_timeout_during_a_download_does_not_fail_it() {
    let (proxy, h, post) = behind_a_proxy(Duration::from_secs(10)).await;
    let (_, body, sha256) = stored_and_opened(&h, post, 30 * MIB).await;

    proxy.stall();
    restore_after(&proxy, PAUSE_WITHIN_ATTEMPT_TIMEOUT);

    assert_eq!(digest(body).await, (30 * MIB, sha256));
}

#[tokio::test]
async fn s3_stalling_during_a_download_fails_it_within_the_attempt_timeout() {
    let (proxy, h, post) = behind_a_proxy(Duration::from_secs(1)).await;
    let (_, mut body, _) = stored_and_opened(&h, post, 30 * MIB).await;
    proxy.stall();
    let started = std::time::Instant::now();

    let mut outcome = Ok(());
    while let Some(chunk) = body.stream.next().await {
        if let Err(error) = chunk {
            outcome = Err(error);
            break;
        }
    }

    assert!(outcome.is_err(), "the download completed through a stall");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed after {:?}",
        started.elapsed()
    );
    proxy.restore();
}

/// Reads `body` to its end, breaking every connection open through `proxy` after the
/// first chunk; new connections get through.
async fn read_across_a_cut(proxy: &Arc<ChaosProxy>, mut body: storage::ObjectBody) -> Vec<u8> {
    let mut received = body
        .stream
        .next()
        .await
        .expect("a chunk")
        .expect("bytes")
        .to_vec();
    proxy.sever();
    while let Some(chunk) = body.stream.next().await {
        received.extend_from_slice(&chunk.expect("the download resumes"));
    }
    received
}

#[tokio::test]
async fn a_download_whose_s3_connection_breaks_midway_resumes_where_it_stopped() {
    let (proxy, h, post) = behind_a_proxy(Duration::from_secs(10)).await;
    let (_, body, sha256) = stored_and_opened(&h, post, 30 * MIB).await;

    let received = read_across_a_cut(&proxy, body).await;

    assert_eq!(
        (
            received.len() as u64,
            hex::encode(sha2::Sha256::digest(&received))
        ),
        (30 * MIB, sha256)
    );
}

#[tokio::test]
async fn a_ranged_download_whose_s3_connection_breaks_resumes_within_its_range() {
    let (proxy, h, post) = behind_a_proxy(Duration::from_secs(10)).await;
    let (chunks, _) = pseudo_random(30 * MIB);
    let all: Vec<u8> = chunks.iter().flatten().copied().collect();
    let attachment = h
        .storage
        .upload_attachment(post, None, "data.bin", None, stream_of(chunks))
        .await
        .expect("upload");
    let (start, end) = (MIB + 7, 25 * MIB);
    let body = h
        .storage
        .open_attachment(&attachment, Some(ByteRange::Inclusive(start, end)))
        .await
        .expect("ranged download");

    let received = read_across_a_cut(&proxy, body).await;

    let expected =
        &all[usize::try_from(start).expect("fits")..=usize::try_from(end).expect("fits")];
    assert!(received == expected, "the resumed range differs");
}
