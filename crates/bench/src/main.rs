//! `posts-api-bench`: measures posts-api against its S3 backend's own limit and prints a
//! Markdown table. Run through `scripts/bench`, which installs and starts the backends.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod api;
mod credentials;
mod distant;
mod reads;
mod service;
mod small_uploads;
mod transfers;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;

use crate::credentials::{refresh_burst, startup};
use crate::reads::get_latency;
use crate::transfers::{Backend, s3_client, throughput};

const MIB: usize = 1024 * 1024;
const SECRET: &str = "benchmark-secret-of-at-least-32-bytes";

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
    /// Uploads to an S3 tens of milliseconds and a per-connection bandwidth away.
    Distant,
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
    if runs(Section::Distant) {
        distant::distant(&args).await?;
    }
    if runs(Section::Refresh) {
        refresh_burst(&args).await?;
    }
    if runs(Section::Startup) {
        startup(&args).await?;
    }
    Ok(())
}
