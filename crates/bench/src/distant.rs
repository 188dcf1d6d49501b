//! Uploads to an S3 at a distance: moto behind a proxy that adds a one-way latency and
//! caps each connection's bandwidth, as a real S3 region is tens of milliseconds and a
//! per-connection throughput away. The best direct client there is a parallel multipart
//! upload, as boto3 does it.

use std::time::{Duration, Instant};

use test_support::{ChaosProxy, socket_address_of};

use crate::api::{client_of, delete, upload, upload_raw, upload_resumable};
use crate::service::Service;
use crate::transfers::{direct_delete, direct_multipart, s3_client};
use crate::{Args, MIB, data, mb_per_s, moto_env, row, testbed};

/// Added to every chunk, each way.
const ONE_WAY: Duration = Duration::from_millis(10);
/// What one connection carries each way.
const BYTES_PER_SEC: u64 = 40_000_000;
/// Parts a direct client keeps in flight (boto3's default).
const DIRECT_IN_FLIGHT: usize = 10;

/// 256 MiB (64 MiB quick) as a form, as a resumable upload in one `PATCH` and as a raw
/// body through the API, against a direct multipart upload, all through the same distant
/// link.
pub(crate) async fn distant(args: &Args) -> anyhow::Result<()> {
    let moto = socket_address_of(&testbed("AWS_ENDPOINT_URL")?);
    let proxy = ChaosProxy::at_a_distance(moto, ONE_WAY, BYTES_PER_SEC).await;
    let endpoint = proxy.url("http", "");
    let mut env = moto_env(&[("APP__UPLOADS__MAX_FILE_BYTES", "2147483648")])?;
    for (name, value) in &mut env {
        if name == "AWS_ENDPOINT_URL" {
            value.clone_from(&endpoint);
        }
    }
    let service = Service::start(&args.service, &env).await?;
    let api = client_of(&service, &args.service, &env, "bench")?;
    let post = api.create_post().await;
    let s3 = s3_client(
        &endpoint,
        &testbed("AWS_ACCESS_KEY_ID")?,
        &testbed("AWS_SECRET_ACCESS_KEY")?,
    )
    .await;
    let bucket = testbed("AWS_S3_BUCKET_NAME")?;
    let size = if args.quick { 64 * MIB } else { 256 * MIB };
    let bytes = data(size);
    let (mut direct, mut form, mut tus, mut raw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        let key = format!("bench-distant/{run}");
        let started = Instant::now();
        direct_multipart(&s3, &bucket, &key, bytes.clone(), DIRECT_IN_FLIGHT).await?;
        direct.push(mb_per_s(size, started.elapsed()));
        direct_delete(&s3, &bucket, &[key]).await?;

        let started = Instant::now();
        let attachment = upload(&api, &post, bytes.clone()).await?;
        form.push(mb_per_s(size, started.elapsed()));
        delete(&api, &post, &attachment).await?;

        let started = Instant::now();
        let attachment = upload_resumable(&api, &post, bytes.clone()).await?;
        tus.push(mb_per_s(size, started.elapsed()));
        delete(&api, &post, &attachment).await?;

        let started = Instant::now();
        let attachment = upload_raw(&api, &post, bytes.clone()).await?;
        raw.push(mb_per_s(size, started.elapsed()));
        delete(&api, &post, &attachment).await?;
    }
    let what = format!(
        "upload {} MiB to S3 at {} ms and {} MB/s a connection",
        size / MIB,
        ONE_WAY.as_millis() * 2,
        BYTES_PER_SEC / 1_000_000
    );
    let ratio = |api: &[f64]| -> Vec<f64> { api.iter().zip(&direct).map(|(a, d)| a / d).collect() };
    row(
        &format!("{what}, direct ({DIRECT_IN_FLIGHT} parts in flight)"),
        "MB/s",
        direct.clone(),
        "the best direct client",
    );
    row(&format!("{what}, form"), "MB/s", form.clone(), "");
    row(
        &format!("{what}, form / direct"),
        "",
        ratio(&form),
        "target ≥ 0.9",
    );
    row(&format!("{what}, tus"), "MB/s", tus.clone(), "one PATCH");
    row(
        &format!("{what}, tus / direct"),
        "",
        ratio(&tus),
        "target ≥ 0.9",
    );
    row(
        &format!("{what}, raw body"),
        "MB/s",
        raw.clone(),
        "one PutObject: one connection",
    );
    row(&format!("{what}, raw body / direct"), "", ratio(&raw), "");
    Ok(())
}
