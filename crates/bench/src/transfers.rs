//! Uploads and downloads through the API against the best direct S3 client of the same
//! bytes on the same backend.

use std::time::{Duration, Instant};

use anyhow::Context;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::StreamExt;
use test_support::{cpu_seconds_of, rss_of};

use crate::api::{client_of, delete, upload, upload_raw};
use crate::service::Service;
use crate::{Args, CPU_NOTE, MIB, cpu_per_gib, data, mb_per_s, row};

pub(crate) async fn direct_put(
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
pub(crate) async fn direct_multipart(
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
pub(crate) async fn direct_delete(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    keys: &[String],
) -> anyhow::Result<()> {
    for key in keys {
        s3.delete_object().bucket(bucket).key(key).send().await?;
    }
    Ok(())
}

pub(crate) async fn direct_get(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> anyhow::Result<usize> {
    let mut body = s3.get_object().bucket(bucket).key(key).send().await?.body;
    let mut total = 0;
    while let Some(chunk) = body.next().await {
        total += chunk?.len();
    }
    Ok(total)
}

/// An S3 backend: a client of its own for the direct baselines, a bucket, and the
/// environment of a service using it.
pub(crate) struct Backend {
    pub(crate) name: &'static str,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    pub(crate) env: Vec<(String, String)>,
}

/// An S3 client of `endpoint` with a static key, as the direct baselines use it.
pub(crate) async fn s3_client(endpoint: &str, key: &str, secret: &str) -> aws_sdk_s3::Client {
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
pub(crate) async fn throughput(args: &Args, backend: &Backend) -> anyhow::Result<()> {
    let (name, s3, bucket) = (backend.name, &backend.s3, backend.bucket.as_str());
    let service = Service::start(&args.service, &backend.env).await?;
    let api = client_of(&service, &args.service, &backend.env, "bench")?;
    let post = api.create_post().await;
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
            let attachment = upload_raw(&api, &post, bytes.clone()).await?;
            m.raw.push(mb_per_s(size, started.elapsed()));
            m.raw_cpu.push(cpu_per_gib(cpu_seconds_of(pid) - cpu, size));
            let (added, over_fresh) = peak_above(idle);
            m.raw_rss.push(added);
            m.raw_rss_over_fresh.push(over_fresh);
            let idle = start_peak();
            let cpu = cpu_seconds_of(pid);
            let started = Instant::now();
            let form_attachment = upload(&api, &post, bytes.clone()).await?;
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
            let got = api.download_length(&post, &attachment).await as usize;
            m.download.push(mb_per_s(got, started.elapsed()));
            m.download_cpu
                .push(cpu_per_gib(cpu_seconds_of(pid) - cpu, got));
            // A full run would otherwise keep about 16 GB per backend.
            direct_delete(s3, bucket, &[key, multipart_key]).await?;
            delete(&api, &post, &attachment).await?;
            delete(&api, &post, &form_attachment).await?;
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
        let uploads = (0..count).map(|_| upload_raw(&api, &post, bytes.clone()));
        let attachments = futures::future::join_all(uploads)
            .await
            .into_iter()
            .collect::<anyhow::Result<Vec<_>>>()?;
        through.push(mb_per_s(count * each, started.elapsed()));
        direct_delete(s3, bucket, &keys).await?;
        for attachment in &attachments {
            delete(&api, &post, attachment).await?;
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
pub(crate) struct Measured {
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
