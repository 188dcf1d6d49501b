//! `posts-api-bench`: measures posts-api against its S3 backend's own limit and prints a
//! Markdown table. Run through `scripts/bench`, which installs and starts the backends.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod service;
mod small_uploads;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use serde_json::Value;

use test_support::{ChaosProxy, cpu_seconds_of, rss_of, socket_address_of};

use crate::service::Service;

const MIB: usize = 1024 * 1024;
const SECRET: &str = "benchmark-secret-of-at-least-32-bytes";
const BOUNDARY: &str = "posts-api-bench-boundary";

#[derive(Debug, Parser)]
#[command(about = "posts-api benchmarks (see BENCHMARKS.md)")]
struct Args {
    /// The release posts-api binary.
    #[arg(long)]
    service: PathBuf,
    /// s3s-fs endpoint, e.g. http://127.0.0.1:9100.
    #[arg(long)]
    s3s_endpoint: String,
    /// s3s-fs access key.
    #[arg(long)]
    s3s_access_key: String,
    /// s3s-fs secret key.
    #[arg(long)]
    s3s_secret_key: String,
    /// Repetitions of each measurement (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A reduced set that finishes in a few minutes.
    #[arg(long)]
    quick: bool,
    /// The MongoDB server's process id, to report its CPU time per request.
    #[arg(long)]
    database_pid: Option<u32>,
    /// Only these measurements (all when absent).
    #[arg(long, value_enum)]
    only: Vec<Section>,
}

/// The measurements, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// Uploads and downloads against direct S3 calls.
    Transfers,
    /// `GET /v1/posts/{id}` under load.
    Reads,
    /// Many users storing small files at once.
    SmallUploads,
    /// AssumeRole calls of a burst at the refresh point.
    Refresh,
    /// Start-up time.
    Startup,
}

fn testbed(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: run through scripts/bench"))
}

/// Median, minimum and maximum.
fn summary(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = values.get(values.len() / 2).copied().unwrap_or(f64::NAN);
    let min = values.first().copied().unwrap_or(f64::NAN);
    let max = values.last().copied().unwrap_or(f64::NAN);
    (median, min, max)
}

fn row(what: &str, unit: &str, values: Vec<f64>, note: &str) {
    let (median, min, max) = summary(values);
    // Small figures (CPU per request in ms, ratios) need more digits than rates.
    let digits = if median.abs() < 10.0 { 3 } else { 1 };
    println!("| {what} | {median:.digits$} {unit} | {min:.digits$}–{max:.digits$} | {note} |");
}

/// Pseudo-random bytes (sniffed as application/octet-stream).
fn data(len: usize) -> Bytes {
    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ len as u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

/// CPU-seconds per GiB moved.
fn cpu_per_gib(cpu_seconds: f64, bytes: usize) -> f64 {
    cpu_seconds * (1024 * MIB) as f64 / bytes as f64
}

const CPU_NOTE: &str = "user + system time of the service process, in 10 ms ticks";

#[derive(Clone)]
struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn new(
        service: &Service,
        binary: &PathBuf,
        env: &[(String, String)],
        subject: &str,
    ) -> anyhow::Result<Self> {
        let mut command = std::process::Command::new(binary);
        command.args(["token", "--sub", subject, "--ttl", "86400"]);
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output()?;
        if !output.status.success() {
            bail!(
                "minting a token failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(Self {
            base: service.base.clone(),
            token: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            client: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    async fn create_post(&self) -> anyhow::Result<String> {
        let post: Value = self
            .client
            .post(format!("{}/v1/posts", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "title": "benchmark" }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(post["id"].as_str().context("post id")?.to_owned())
    }

    /// Uploads `bytes` as one multipart file; returns the attachment id.
    async fn upload(&self, post: &str, bytes: Bytes) -> anyhow::Result<String> {
        let head = Bytes::from(format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.bin\"\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{BOUNDARY}--\r\n"));
        let length = head.len() + bytes.len() + tail.len();
        let chunks: Vec<Bytes> = std::iter::once(head)
            .chain(
                (0..bytes.len())
                    .step_by(MIB)
                    .map(|start| bytes.slice(start..(start + MIB).min(bytes.len()))),
            )
            .chain(std::iter::once(tail))
            .collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(
            chunks.into_iter().map(Ok::<_, std::io::Error>),
        ));
        let response: Value = self
            .client
            .post(format!("{}/v1/posts/{post}/attachments", self.base))
            .bearer_auth(&self.token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .header("content-length", length)
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(response["items"][0]["id"]
            .as_str()
            .context("attachment id")?
            .to_owned())
    }

    /// Uploads `bytes` as the raw body, with its length; returns the attachment id.
    async fn upload_raw(&self, post: &str, bytes: Bytes) -> anyhow::Result<String> {
        let length = bytes.len();
        let chunks: Vec<Bytes> = (0..length)
            .step_by(MIB)
            .map(|start| bytes.slice(start..(start + MIB).min(length)))
            .collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(
            chunks.into_iter().map(Ok::<_, std::io::Error>),
        ));
        let response: Value = self
            .client
            .post(format!(
                "{}/v1/posts/{post}/attachments/raw?filename=bench.bin",
                self.base
            ))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .header("content-length", length)
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(response["items"][0]["id"]
            .as_str()
            .context("attachment id")?
            .to_owned())
    }

    /// Deletes an attachment and its object, so a run's bytes do not pile up on disk.
    async fn delete(&self, post: &str, attachment: &str) -> anyhow::Result<()> {
        self.client
            .delete(format!(
                "{}/v1/posts/{post}/attachments/{attachment}",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Downloads an attachment, discarding the bytes; returns their count.
    async fn download(&self, post: &str, attachment: &str) -> anyhow::Result<usize> {
        let mut stream = self
            .client
            .get(format!(
                "{}/v1/posts/{post}/attachments/{attachment}/content",
                self.base
            ))
            .send()
            .await?
            .error_for_status()?
            .bytes_stream();
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            total += chunk?.len();
        }
        Ok(total)
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?)
    }
}

fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|value| value.trim().parse().ok())
}

async fn direct_put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    bytes: Bytes,
) -> anyhow::Result<()> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_length(bytes.len() as i64)
        .body(ByteStream::from(bytes))
        .send()
        .await?;
    Ok(())
}

/// The same bytes as a multipart upload with the service's default part size and parts in
/// flight: the backend's own limit for the way the service writes large objects.
/// A multipart upload of 8 MiB parts, `in_flight` at a time (boto3 sends 10).
async fn direct_multipart(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    bytes: Bytes,
    in_flight: usize,
) -> anyhow::Result<()> {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    const PART: usize = 8 * MIB;
    let upload_id = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await?
        .upload_id
        .context("upload id")?;
    let uploads = (0..bytes.len())
        .step_by(PART)
        .enumerate()
        .map(|(index, start)| {
            let part = bytes.slice(start..(start + PART).min(bytes.len()));
            let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
            let upload_id = upload_id.clone();
            async move {
                let output = s3
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_length(part.len() as i64)
                    .body(ByteStream::from(part))
                    .send()
                    .await?;
                Ok::<_, anyhow::Error>(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(output.e_tag)
                        .build(),
                )
            }
        });
    let mut parts: Vec<CompletedPart> = futures::stream::iter(uploads)
        .buffer_unordered(in_flight)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    parts.sort_by_key(|part| part.part_number);
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}

/// Deletes objects the bench wrote straight to the backend.
async fn direct_delete(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    keys: &[String],
) -> anyhow::Result<()> {
    for key in keys {
        s3.delete_object().bucket(bucket).key(key).send().await?;
    }
    Ok(())
}

async fn direct_get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> anyhow::Result<usize> {
    let mut body = s3.get_object().bucket(bucket).key(key).send().await?.body;
    let mut total = 0;
    while let Some(chunk) = body.next().await {
        total += chunk?.len();
    }
    Ok(total)
}

/// The environment of a service whose backend is s3s-fs with static credentials.
fn s3s_env(args: &Args, bucket: &str) -> anyhow::Result<Vec<(String, String)>> {
    Ok([
        ("MONGODB_URI", testbed("MONGODB_URI")?),
        (
            "APP__MONGO__DATABASE",
            format!("bench_{}", uuid::Uuid::new_v4().simple()),
        ),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ENDPOINT_URL", args.s3s_endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", args.s3s_access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", args.s3s_secret_key.clone()),
        ("AWS_IAM_ROLE_ARN", String::new()),
        ("AWS_S3_BUCKET_NAME", bucket.to_owned()),
        ("APP__S3__FORCE_PATH_STYLE", "true".to_owned()),
        ("APP__UPLOADS__ALLOWED_CONTENT_TYPES", "*/*".to_owned()),
        ("APP__UPLOADS__MAX_FILE_BYTES", (2 * 1024 * MIB).to_string()),
        ("APP__UPLOADS__REAPER_INTERVAL_SECS", "3600".to_owned()),
        ("APP__AUTH__JWT_HS256_SECRET", SECRET.to_owned()),
        // The concurrent case sends 8 uploads as one user.
        ("APP__ADMISSION__UPLOADS_PER_USER", "8".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect())
}

/// The environment of a service on the moto testbed, assuming the role.
fn moto_env(extra: &[(&str, &str)]) -> anyhow::Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = [
        "MONGODB_URI",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_IAM_ROLE_ARN",
        "AWS_S3_BUCKET_NAME",
    ]
    .iter()
    .map(|name| Ok(((*name).to_owned(), testbed(name)?)))
    .collect::<anyhow::Result<_>>()?;
    env.extend(
        [
            (
                "APP__MONGO__DATABASE",
                format!("bench_{}", uuid::Uuid::new_v4().simple()),
            ),
            ("APP__S3__FORCE_PATH_STYLE", "true".to_owned()),
            ("APP__UPLOADS__ALLOWED_CONTENT_TYPES", "*/*".to_owned()),
            ("APP__UPLOADS__REAPER_INTERVAL_SECS", "3600".to_owned()),
            ("APP__AUTH__JWT_HS256_SECRET", SECRET.to_owned()),
            ("APP__ADMISSION__UPLOADS_PER_USER", "8".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Ok(env)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runs = |section| args.only.is_empty() || args.only.contains(&section);
    let bucket = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let s3s = if runs(Section::Transfers) || runs(Section::Reads) {
        let s3 = s3_client(
            &args.s3s_endpoint,
            &args.s3s_access_key,
            &args.s3s_secret_key,
        )
        .await;
        s3.create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .context("creating the s3s-fs bucket")?;
        Some(Backend {
            name: "s3s-fs",
            s3,
            env: s3s_env(&args, &bucket)?,
            bucket: bucket.clone(),
        })
    } else {
        None
    };
    println!("| measurement | median | min–max | note |");
    println!("| --- | --- | --- | --- |");
    if let (true, Some(s3s)) = (runs(Section::Transfers), &s3s) {
        throughput(&args, s3s).await?;
        let moto = Backend {
            name: "moto",
            s3: s3_client(
                &testbed("AWS_ENDPOINT_URL")?,
                &testbed("AWS_ACCESS_KEY_ID")?,
                &testbed("AWS_SECRET_ACCESS_KEY")?,
            )
            .await,
            bucket: testbed("AWS_S3_BUCKET_NAME")?,
            env: moto_env(&[("APP__UPLOADS__MAX_FILE_BYTES", "2147483648")])?,
        };
        throughput(&args, &moto).await?;
    }
    if runs(Section::Reads) {
        get_latency(&args, &bucket).await?;
    }
    if runs(Section::SmallUploads) {
        small_uploads::small_uploads(&args).await?;
    }
    if runs(Section::Refresh) {
        refresh_burst(&args).await?;
    }
    if runs(Section::Startup) {
        startup(&args).await?;
    }
    Ok(())
}

/// An S3 backend: a client of its own for the direct baselines, a bucket, and the
/// environment of a service using it.
struct Backend {
    name: &'static str,
    s3: aws_sdk_s3::Client,
    bucket: String,
    env: Vec<(String, String)>,
}

/// An S3 client of `endpoint` with a static key, as the direct baselines use it.
async fn s3_client(endpoint: &str, key: &str, secret: &str) -> aws_sdk_s3::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            key, secret, None, None, "bench",
        ))
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build(),
    )
}

/// Uploads and downloads through the API against the best direct S3 client of the same
/// bytes on the same backend, and the service's peak RSS during each upload.
async fn throughput(args: &Args, backend: &Backend) -> anyhow::Result<()> {
    let (name, s3, bucket) = (backend.name, &backend.s3, backend.bucket.as_str());
    let service = Service::start(&args.service, &backend.env).await?;
    let api = Api::new(&service, &args.service, &backend.env, "bench").await?;
    let post = api.create_post().await?;
    let pid = service.pid().context("service pid")?;
    let fresh = rss_of(pid);
    let sizes: &[usize] = if args.quick {
        &[256 * MIB]
    } else {
        &[256 * MIB, 1024 * MIB]
    };
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_of(pid)));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_of(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Memory an upload adds: the peak during it over the resident size just before it,
    // the idle service with what the allocator kept from earlier transfers.
    let start_peak = || {
        let idle = rss_of(pid);
        peak.store(idle, std::sync::atomic::Ordering::Relaxed);
        idle
    };
    // Also the peak over the fresh service: an upper bound, with all the allocator kept.
    let peak_above = |idle: u64| {
        let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
        let mib = |bytes: u64| bytes as f64 / MIB as f64;
        (
            mib(peak.saturating_sub(idle)),
            mib(peak.saturating_sub(fresh)),
        )
    };

    for &size in sizes {
        let bytes = data(size);
        let label = format!("{name}, {} MiB", size / MIB);
        let mut m = Measured::default();
        for run in 0..args.runs {
            let key = format!("direct/{}", uuid::Uuid::new_v4().simple());
            let started = Instant::now();
            direct_put(s3, bucket, &key, bytes.clone()).await?;
            m.direct_put.push(mb_per_s(size, started.elapsed()));
            let started = Instant::now();
            let multipart_key = format!("direct/{}", uuid::Uuid::new_v4().simple());
            direct_multipart(s3, bucket, &multipart_key, bytes.clone(), 10).await?;
            m.direct_multipart.push(mb_per_s(size, started.elapsed()));

            let idle = start_peak();
            let cpu = cpu_seconds_of(pid);
            let started = Instant::now();
            let attachment = api.upload_raw(&post, bytes.clone()).await?;
            m.raw.push(mb_per_s(size, started.elapsed()));
            m.raw_cpu.push(cpu_per_gib(cpu_seconds_of(pid) - cpu, size));
            let (added, over_fresh) = peak_above(idle);
            m.raw_rss.push(added);
            m.raw_rss_over_fresh.push(over_fresh);
            let idle = start_peak();
            let cpu = cpu_seconds_of(pid);
            let started = Instant::now();
            let form_attachment = api.upload(&post, bytes.clone()).await?;
            m.form.push(mb_per_s(size, started.elapsed()));
            m.form_cpu
                .push(cpu_per_gib(cpu_seconds_of(pid) - cpu, size));
            let (added, over_fresh) = peak_above(idle);
            m.form_rss.push(added);
            m.form_rss_over_fresh.push(over_fresh);

            let started = Instant::now();
            let got = direct_get(s3, bucket, &key).await?;
            m.direct_get.push(mb_per_s(got, started.elapsed()));
            let cpu = cpu_seconds_of(pid);
            let started = Instant::now();
            let got = api.download(&post, &attachment).await?;
            m.download.push(mb_per_s(got, started.elapsed()));
            m.download_cpu
                .push(cpu_per_gib(cpu_seconds_of(pid) - cpu, got));
            // A full run would otherwise keep about 16 GB per backend.
            direct_delete(s3, bucket, &[key, multipart_key]).await?;
            api.delete(&post, &attachment).await?;
            api.delete(&post, &form_attachment).await?;
            eprintln!("bench: {label} run {} done", run + 1);
        }
        m.report(&label);
    }
    sampler.abort();

    let count = 8;
    let each = 32 * MIB;
    let bytes = data(each);
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let started = Instant::now();
        let keys: Vec<String> = (0..count)
            .map(|_| format!("direct/{}", uuid::Uuid::new_v4().simple()))
            .collect();
        let puts = keys
            .iter()
            .map(|key| direct_put(s3, bucket, key, bytes.clone()));
        for result in futures::future::join_all(puts).await {
            result?;
        }
        direct.push(mb_per_s(count * each, started.elapsed()));
        let started = Instant::now();
        let uploads = (0..count).map(|_| api.upload_raw(&post, bytes.clone()));
        let attachments = futures::future::join_all(uploads)
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
        through.push(mb_per_s(count * each, started.elapsed()));
        direct_delete(s3, bucket, &keys).await?;
        for attachment in &attachments {
            api.delete(&post, attachment).await?;
        }
    }
    let ratio: Vec<f64> = through.iter().zip(&direct).map(|(a, d)| a / d).collect();
    row(
        &format!("{name}, upload 8 × 32 MiB concurrently, direct PutObject"),
        "MB/s",
        direct,
        "",
    );
    row(
        &format!("{name}, upload 8 × 32 MiB concurrently, through the API, raw bodies"),
        "MB/s",
        through,
        "",
    );
    row(
        &format!("{name}, upload 8 × 32 MiB concurrently, API / direct"),
        "",
        ratio,
        "target ≥ 0.9",
    );
    Ok(())
}

/// Throughputs (MB/s), the service's CPU-seconds per GiB and peak RSS above idle (MiB) of
/// one size, one value per run.
#[derive(Default)]
struct Measured {
    direct_put: Vec<f64>,
    direct_multipart: Vec<f64>,
    raw: Vec<f64>,
    raw_cpu: Vec<f64>,
    raw_rss: Vec<f64>,
    raw_rss_over_fresh: Vec<f64>,
    form: Vec<f64>,
    form_cpu: Vec<f64>,
    form_rss: Vec<f64>,
    form_rss_over_fresh: Vec<f64>,
    direct_get: Vec<f64>,
    download: Vec<f64>,
    download_cpu: Vec<f64>,
}

impl Measured {
    fn report(self, label: &str) {
        let best: Vec<f64> = self
            .direct_put
            .iter()
            .zip(&self.direct_multipart)
            .map(|(put, multipart)| put.max(*multipart))
            .collect();
        let ratio = |api: &[f64], direct: &[f64]| -> Vec<f64> {
            api.iter().zip(direct).map(|(a, d)| a / d).collect()
        };
        let rows: [(&str, &str, Vec<f64>, &str); 16] = [
            (
                "upload, direct PutObject",
                "MB/s",
                self.direct_put.clone(),
                "",
            ),
            (
                "upload, direct multipart (8 MiB parts, 10 in flight, as boto3)",
                "MB/s",
                self.direct_multipart.clone(),
                "",
            ),
            (
                "upload, through the API, raw body",
                "MB/s",
                self.raw.clone(),
                "",
            ),
            (
                "upload, API raw body / best direct",
                "",
                ratio(&self.raw, &best),
                "target ≥ 0.9 (within 1.1× the time)",
            ),
            (
                "upload, through the API, multipart form",
                "MB/s",
                self.form.clone(),
                "",
            ),
            (
                "upload, API form / best direct",
                "",
                ratio(&self.form, &best),
                "a form's file has no known size: multipart to S3",
            ),
            (
                "download, direct GetObject",
                "MB/s",
                self.direct_get.clone(),
                "",
            ),
            (
                "download, through the API",
                "MB/s",
                self.download.clone(),
                "",
            ),
            (
                "download, API / direct",
                "",
                ratio(&self.download, &self.direct_get),
                "target ≥ 0.9 (within 1.1× the time)",
            ),
            (
                "service CPU per GiB, raw upload",
                "s",
                self.raw_cpu,
                CPU_NOTE,
            ),
            (
                "service CPU per GiB, form upload",
                "s",
                self.form_cpu,
                CPU_NOTE,
            ),
            (
                "service CPU per GiB, download",
                "s",
                self.download_cpu,
                CPU_NOTE,
            ),
            (
                "peak RSS added by a raw upload",
                "MiB",
                self.raw_rss,
                "over the RSS just before it; target ≤ 64 MiB (1 GiB)",
            ),
            (
                "peak RSS over the fresh service, raw upload",
                "MiB",
                self.raw_rss_over_fresh,
                "includes what the allocator kept from earlier transfers",
            ),
            (
                "peak RSS added by a form upload",
                "MiB",
                self.form_rss,
                "over the RSS just before it; target ≤ 64 MiB (1 GiB)",
            ),
            (
                "peak RSS over the fresh service, form upload",
                "MiB",
                self.form_rss_over_fresh,
                "includes what the allocator kept from earlier transfers",
            ),
        ];
        for (what, unit, values, note) in rows {
            if !values.is_empty() {
                row(&format!("{label}, {what}"), unit, values, note);
            }
        }
    }
}

/// `GET /v1/posts/{id}` of a post with one attachment from 64 concurrent connections: the
/// rate, latency, the service's and the database's CPU time per request, and the database
/// operations per request (MongoDB's `opcounters`, which include the driver's heartbeats).
async fn get_latency(args: &Args, bucket: &str) -> anyhow::Result<()> {
    let env = s3s_env(args, bucket)?;
    let service = Service::start(&args.service, &env).await?;
    let service_pid = service.pid().context("service pid")?;
    let api = Api::new(&service, &args.service, &env, "bench").await?;
    let post = api.create_post().await?;
    api.upload(&post, data(4096)).await?;
    let database = mongodb::Client::with_uri_str(testbed("MONGODB_URI")?).await?;
    let url = format!("{}/v1/posts/{post}", api.base);
    let duration = Duration::from_secs(if args.quick { 5 } else { 20 });
    let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    let (mut service_cpu, mut database_cpu, mut operations) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        let operations_before = database_operations(&database).await?;
        let service_before = cpu_seconds_of(service_pid);
        let database_before = args.database_pid.map(cpu_seconds_of);
        let started = Instant::now();
        let workers = (0..64).map(|_| {
            let client = api.client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < duration {
                    let sent = Instant::now();
                    if client
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                    {
                        latencies.push(sent.elapsed());
                    }
                }
                latencies
            })
        });
        let mut latencies: Vec<Duration> = Vec::new();
        for worker in futures::future::join_all(workers).await {
            latencies.extend(worker?);
        }
        let elapsed = started.elapsed();
        let count = latencies.len().max(1) as f64;
        service_cpu.push((cpu_seconds_of(service_pid) - service_before) * 1e3 / count);
        if let (Some(pid), Some(before)) = (args.database_pid, database_before) {
            database_cpu.push((cpu_seconds_of(pid) - before) * 1e3 / count);
        }
        // One operation is the serverStatus that reads the counters.
        let operations_after = database_operations(&database).await? - 1.0;
        operations.push((operations_after - operations_before) / count);
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        rates.push(latencies.len() as f64 / elapsed.as_secs_f64());
        p50s.push(at(0.50).as_secs_f64() * 1e3);
        p99s.push(at(0.99).as_secs_f64() * 1e3);
    }
    row(
        "GET /v1/posts/{id}, 64 connections",
        "req/s",
        rates,
        "target ≥ 2,800 (the Express service on this testbed)",
    );
    row("GET /v1/posts/{id}, p50", "ms", p50s, "");
    row("GET /v1/posts/{id}, p99", "ms", p99s, "target ≤ 60 ms");
    row(
        "GET /v1/posts/{id}, service CPU per request",
        "ms",
        service_cpu,
        "target ≤ 0.1 ms",
    );
    if !database_cpu.is_empty() {
        row(
            "GET /v1/posts/{id}, database CPU per request",
            "ms",
            database_cpu,
            "the Express service: 0.25 ms",
        );
    }
    row(
        "GET /v1/posts/{id}, database operations per request",
        "",
        operations,
        "target 1",
    );
    Ok(())
}

/// Operations MongoDB has counted since it started, of every kind.
async fn database_operations(client: &mongodb::Client) -> anyhow::Result<f64> {
    let status = client
        .database("admin")
        .run_command(mongodb::bson::doc! { "serverStatus": 1 })
        .await?;
    let counters = status.get_document("opcounters")?;
    Ok(counters
        .values()
        .filter_map(|count| match count {
            mongodb::bson::Bson::Int32(n) => Some(f64::from(*n)),
            mongodb::bson::Bson::Int64(n) => Some(*n as f64),
            mongodb::bson::Bson::Double(n) => Some(*n),
            _ => None,
        })
        .sum())
}

/// 500 requests that need credentials, sent together right at the refresh point: how
/// many AssumeRole calls they cause (moto; sessions of 900 s refreshed 885 s early).
async fn refresh_burst(args: &Args) -> anyhow::Result<()> {
    let env = moto_env(&[
        ("APP__AWS__SESSION_DURATION_SECS", "900"),
        ("APP__AWS__REFRESH_LEAD_SECS", "885"),
        ("APP__S3__PRESIGN_TTL_SECS", "60"),
    ])?;
    let service = Service::start(&args.service, &env).await?;
    let api = Api::new(&service, &args.service, &env, "bench").await?;
    let post = api.create_post().await?;
    let attachment = api
        .upload(&post, Bytes::from_static(b"credentials burst"))
        .await?;
    let url = format!(
        "{}/v1/posts/{post}/attachments/{attachment}/content",
        api.base
    );
    let sts = "posts_api_sts_assume_role_total{result=\"success\"} ";
    let mut calls = Vec::new();
    for _ in 0..args.runs {
        let text = api.metrics().await?;
        let before = metric(&text, sts).context("STS metric")?;
        let expiry = metric(&text, "posts_api_credentials_expiry_timestamp_seconds ")
            .context("expiry metric")?;
        let boundary = UNIX_EPOCH + Duration::from_secs_f64(expiry - 885.0);
        if let Ok(wait) = boundary.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait + Duration::from_millis(20)).await;
        }
        let requests = (0..500).map(|_| api.client.get(&url).send());
        let ok = futures::future::join_all(requests)
            .await
            .into_iter()
            .filter(|r| r.as_ref().is_ok_and(|r| r.status().is_success()))
            .count();
        if ok != 500 {
            bail!("only {ok} of 500 requests at the refresh point succeeded");
        }
        let after = metric(&api.metrics().await?, sts).context("STS metric")?;
        calls.push(after - before);
    }
    row(
        "STS calls caused by 500 concurrent requests at a refresh point",
        "",
        calls,
        "target 1",
    );
    Ok(())
}

/// Time to ready with 300 ms injected in front of MongoDB and STS, against none.
async fn startup(args: &Args) -> anyhow::Result<()> {
    let delay = Duration::from_millis(300);
    let (mut plain, mut delayed) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        plain.push(
            Service::start(&args.service, &moto_env(&[])?)
                .await?
                .time_to_ready
                .as_secs_f64()
                * 1e3,
        );
        let mongo = ChaosProxy::with_first_connect_delay(
            socket_address_of(&testbed("MONGODB_URI")?),
            delay,
        )
        .await;
        let sts = ChaosProxy::with_first_connect_delay(
            socket_address_of(&testbed("AWS_ENDPOINT_URL")?),
            delay,
        )
        .await;
        let uri = format!("mongodb://{}/?directConnection=true", mongo.address);
        let endpoint = format!("http://{}", sts.address);
        let env = moto_env(&[("MONGODB_URI", &uri), ("AWS_ENDPOINT_URL_STS", &endpoint)])?;
        delayed.push(
            Service::start(&args.service, &env)
                .await?
                .time_to_ready
                .as_secs_f64()
                * 1e3,
        );
    }
    let difference: Vec<f64> = delayed.iter().zip(&plain).map(|(d, p)| d - p).collect();
    row("start-up, no injected latency", "ms", plain, "");
    row(
        "start-up, 300 ms to reach MongoDB and 300 ms to reach STS",
        "ms",
        delayed,
        "",
    );
    row(
        "start-up difference",
        "ms",
        difference,
        "target ≈ 300 ms (concurrent), not 600 (sequential)",
    );
    Ok(())
}
