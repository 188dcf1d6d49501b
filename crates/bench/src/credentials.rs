//! Credentials at the refresh point, and start-up against slow dependencies.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use test_support::{ChaosProxy, socket_address_of};

use crate::api::{client_of, metric, upload};
use crate::service::Service;
use crate::{Args, moto_env, row, testbed};

/// 500 requests that need credentials, sent together right at the refresh point: how
/// many AssumeRole calls they cause (moto; sessions of 900 s refreshed 885 s early).
pub(crate) async fn refresh_burst(args: &Args) -> anyhow::Result<()> {
    let env = moto_env(&[
        ("APP__AWS__SESSION_DURATION_SECS", "900"),
        ("APP__AWS__REFRESH_LEAD_SECS", "885"),
        ("APP__S3__PRESIGN_TTL_SECS", "60"),
    ])?;
    let service = Service::start(&args.service, &env).await?;
    let api = client_of(&service, &args.service, &env, "bench")?;
    let post = api.create_post().await;
    let attachment = upload(&api, &post, Bytes::from_static(b"credentials burst")).await?;
    let url = format!(
        "{}/v1/posts/{post}/attachments/{attachment}/content",
        api.address
    );
    let sts = "posts_api_sts_assume_role_total{result=\"success\"} ";
    let mut calls = Vec::new();
    for _ in 0..args.runs {
        let text = api.get_text("/metrics").await;
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
        let after = metric(&api.get_text("/metrics").await, sts).context("STS metric")?;
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
pub(crate) async fn startup(args: &Args) -> anyhow::Result<()> {
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
