//! A stock tus client, tuspy (`tests/tus/upload.py`), against two instances of the
//! service: a 1 GiB upload cut off midway, then resumed on the other instance.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use test_support::{
    ApiClient, ChaosProxy, Inspector, MIB, pseudo_random, rss_of, socket_address_of, testbed,
    testbed_tool,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{ServiceCommand, ServiceProcess};

const GIB: u64 = 1024 * MIB;

/// The tuspy script, run by the testbed's Python that has tuspy.
fn upload_script() -> Command {
    let mut command = Command::new(testbed_tool("TESTBED_TUS_PYTHON", "tus"));
    command.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tus/upload.py"));
    command
}

/// tuspy uploading the script's generated file of `length` bytes to `endpoint`, or
/// resuming the upload at `resume`.
fn tuspy(endpoint: &str, length: u64, resume: Option<&str>) -> Child {
    let mut command = upload_script();
    command
        .arg(endpoint)
        .arg(length.to_string())
        .args(["--chunk-size", &(256 * MIB).to_string(), "--retries", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(url) = resume {
        command.arg("--resume").arg(url);
    }
    command.spawn().expect("tuspy runs")
}

/// The first line tuspy prints: the upload's URL.
async fn upload_url(child: &mut Child) -> String {
    let stdout = child.stdout.as_mut().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .expect("tuspy prints the upload URL");
    line.trim().to_owned()
}

async fn offset(api: &ApiClient, path: &str) -> u64 {
    api.client
        .head(api.url(path))
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .expect("HEAD")
        .headers()
        .get("upload-offset")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or_default()
}

/// Keeps the largest resident memory of `pid` until stopped.
fn sample_peak_rss(pid: u32) -> (Arc<AtomicU64>, Arc<AtomicBool>) {
    let peak = Arc::new(AtomicU64::new(rss_of(pid)));
    let stop = Arc::new(AtomicBool::new(false));
    let (peak_, stop_) = (peak.clone(), stop.clone());
    tokio::spawn(async move {
        while !stop_.load(Ordering::Relaxed) {
            peak_.fetch_max(rss_of(pid), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (peak, stop)
}

/// The SHA-256 of the script's generated file of `length` bytes, worked out beside the
/// upload.
async fn generated_sha256(length: u64) -> String {
    let output = upload_script()
        .arg("--sha256")
        .arg(length.to_string())
        .output()
        .await
        .expect("the script runs");
    assert!(output.status.success(), "the script hashes its file");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Two instances of the service on one database and key prefix, started and ready.
struct TwoInstances {
    first: ServiceProcess,
    second: ServiceProcess,
    on_first: ApiClient,
    on_second: ApiClient,
    database: String,
    prefix: String,
}

async fn two_instances() -> TwoInstances {
    let database = format!("test_{}", uuid::Uuid::new_v4().simple());
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let start = || {
        ServiceCommand::new()
            .env("APP__MONGO__DATABASE", &database)
            .env("APP__S3__KEY_PREFIX", &prefix)
            .env("APP__UPLOADS__MAX_FILE_BYTES", (2 * GIB).to_string())
            .env("APP__UPLOADS__ALLOWED_CONTENT_TYPES", "*/*")
            // An upload's parts in flight stay at what it was admitted with, so that its
            // memory is the configuration's bound below.
            .env("APP__S3__PARTS_IN_FLIGHT_CEILING", "2")
            // As the image runs it (Dockerfile): freed part buffers go back to the system.
            .env("MALLOC_MMAP_THRESHOLD_", "1048576")
            .env("MALLOC_TRIM_THRESHOLD_", "16777216")
            .spawn()
    };
    let (mut first, mut second) = (start(), start());
    first
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;
    second
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;
    TwoInstances {
        on_first: ApiClient::new(format!("http://127.0.0.1:{}", first.port)),
        on_second: ApiClient::new(format!("http://127.0.0.1:{}", second.port)),
        first,
        second,
        database,
        prefix,
    }
}

/// Prints its figures (time, memory) for the record.
#[allow(clippy::print_stderr)]
#[tokio::test]
async fn tuspy_resumes_a_1_gib_upload_cut_midway_on_another_instance() {
    let TwoInstances {
        first,
        second,
        on_first,
        on_second,
        database,
        prefix,
    } = two_instances().await;
    let post = on_first.create_post().await;
    let sha256 = tokio::spawn(generated_sha256(GIB));
    let proxy = ChaosProxy::start(socket_address_of(&on_first.address)).await;

    // First instance, through a proxy that will cut the connection midway.
    let idle_first = first.rss_bytes();
    let (peak_first, stop_first) = sample_peak_rss(first.pid());
    let started = Instant::now();
    let endpoint = proxy.url("http", &format!("/v1/posts/{post}/attachments/tus"));
    let mut client = tuspy(&endpoint, GIB, None);
    let url = upload_url(&mut client).await;
    let path = url
        .split_once("/v1/")
        .map(|(_, rest)| format!("/v1/{rest}"))
        .expect("an upload path");
    while offset(&on_first, &path).await < GIB / 2 {
        assert!(started.elapsed() < Duration::from_secs(300), "no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.cut();
    let cut = client.wait_with_output().await.expect("tuspy exits");
    assert!(!cut.status.success(), "the cut upload failed");
    let interrupted = started.elapsed();
    stop_first.store(true, Ordering::Relaxed);

    // Second instance: tuspy asks it for the offset and sends the rest.
    let idle_second = second.rss_bytes();
    let (peak_second, stop_second) = sample_peak_rss(second.pid());
    let resumed_at = Instant::now();
    let mut resumed = tuspy(
        &on_second.url(&format!("/v1/posts/{post}/attachments/tus")),
        GIB,
        Some(&on_second.url(&path)),
    );
    upload_url(&mut resumed).await;
    let finished = resumed.wait_with_output().await.expect("tuspy exits");
    let resumed_for = resumed_at.elapsed();
    stop_second.store(true, Ordering::Relaxed);
    assert!(
        finished.status.success(),
        "the resumed upload completed: {}\n{}",
        String::from_utf8_lossy(&finished.stderr),
        second.output()
    );

    let attachments = on_second
        .get_json(&format!("/v1/posts/{post}/attachments"))
        .await;
    let attachment = &attachments["items"][0];
    let sha256 = sha256.await.expect("the hash is worked out");
    assert_eq!(attachment["size"], GIB);
    assert_eq!(attachment["sha256"], sha256.as_str());
    let mut download = on_second
        .get(attachment["content_url"].as_str().expect("content_url"))
        .await;
    let mut hasher = Sha256::new();
    while let Some(chunk) = download.chunk().await.expect("download") {
        hasher.update(&chunk);
    }
    assert_eq!(
        hex::encode(hasher.finalize()),
        sha256,
        "the bytes served are the file's"
    );
    let stored = Inspector::new(&testbed("AWS_S3_BUCKET_NAME"), &prefix, {
        mongodb::Client::with_uri_str(testbed("MONGODB_URI"))
            .await
            .expect("MongoDB")
            .database(&database)
    })
    .await;
    assert!(stored.multipart_uploads().await.is_empty());
    assert_eq!(stored.object_keys().await.len(), 1, "no tail is left");
    // The testbed keeps objects on disk: give the gibibyte back.
    let deleted = on_second
        .request(reqwest::Method::DELETE, &format!("/v1/posts/{post}"))
        .await;
    assert_eq!(deleted.status(), 204);

    let mib = |bytes: u64| bytes as f64 / MIB as f64;
    // Per request: 8 MiB parts, 2 in flight (the ceiling here) and 1 filling, whatever the
    // client's chunks.
    let bound = 48 * MIB;
    for (instance, peak, idle) in [
        ("first", &peak_first, idle_first),
        ("second", &peak_second, idle_second),
    ] {
        let added = peak.load(Ordering::Relaxed).saturating_sub(idle);
        assert!(
            added < bound,
            "the {instance} instance grew by {:.1} MiB",
            mib(added)
        );
    }
    eprintln!(
        "tus 1 GiB: cut after {:.1} s; resumed on the other instance and verified in {:.1} s; \
         memory over idle: first instance {:.1} MiB, second {:.1} MiB",
        interrupted.as_secs_f64(),
        resumed_for.as_secs_f64(),
        mib(peak_first
            .load(Ordering::Relaxed)
            .saturating_sub(idle_first)),
        mib(peak_second
            .load(Ordering::Relaxed)
            .saturating_sub(idle_second)),
    );
}

#[tokio::test]
async fn an_upload_whose_instance_is_killed_mid_patch_goes_on_elsewhere_once_its_lease_lapses() {
    let TwoInstances {
        first: mut doomed,
        second: _survivor,
        on_first: on_doomed,
        on_second: on_survivor,
        ..
    } = two_instances().await;
    let post = on_doomed.create_post().await;
    let (chunks, sha256) = pseudo_random(40 * MIB);
    let created = on_doomed
        .client
        .post(on_doomed.url(&format!("/v1/posts/{post}/attachments/tus")))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", (40 * MIB).to_string())
        .header("Upload-Metadata", "filename ZGF0YS5iaW4=")
        .send()
        .await
        .expect("creation");
    let path = created.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    // A PATCH that sends 20 MiB and then stalls, on the instance that is killed.
    let (sender, mut receiver) =
        tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let body = futures::stream::poll_fn(move |context| receiver.poll_recv(context));
    let patch = on_doomed
        .client
        .patch(on_doomed.url(&path))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let stalled = tokio::spawn(patch);
    for chunk in chunks.iter().take(20 * MIB as usize / chunks[0].len()) {
        sender.send(Ok(chunk.clone())).await.expect("body open");
    }
    let started = Instant::now();
    while offset(&on_survivor, &path).await < 16 * MIB {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "two parts were never stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    doomed.kill();
    let _ = stalled.await;

    // The survivor reports the parts stored; once the dead instance's lease lapses, it
    // takes the rest from there.
    let stored = offset(&on_survivor, &path).await;
    assert_eq!(
        stored % (8 * MIB),
        0,
        "the offset is at a part boundary: {stored}"
    );
    let rest: Vec<u8> = chunks.concat()[usize::try_from(stored).expect("offset")..].to_vec();
    let send = |bytes: Vec<u8>| {
        on_survivor
            .client
            .patch(on_survivor.url(&path))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", stored.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .body(bytes)
            .send()
    };
    let started = Instant::now();
    // An empty PATCH probes the lock: 423 while the lease holds, 204 once it lapsed.
    while send(Vec::new()).await.expect("PATCH").status() == 423 {
        assert!(started.elapsed() < Duration::from_secs(45), "still locked");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let answer = send(rest).await.expect("PATCH");
    assert_eq!(answer.status(), 204);
    let attachments = on_survivor
        .get_json(&format!("/v1/posts/{post}/attachments"))
        .await;
    assert_eq!(attachments["items"][0]["sha256"], sha256.as_str());
}
