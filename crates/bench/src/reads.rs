//! Reads of a post under load, and what each costs the service and the database.

use std::time::{Duration, Instant};

use anyhow::Context;
use test_support::cpu_seconds_of;

use crate::api::{client_of, upload};
use crate::service::Service;
use crate::{Args, data, row, s3s_env, testbed};

/// `GET /v1/posts/{id}` of a post with one attachment from 64 concurrent connections: the
/// rate, latency, the service's and the database's CPU time per request, and the database
/// operations per request (MongoDB's `opcounters`, which include the driver's heartbeats).
pub(crate) async fn get_latency(args: &Args, bucket: &str) -> anyhow::Result<()> {
    let env = s3s_env(args, bucket)?;
    let service = Service::start(&args.service, &env).await?;
    let service_pid = service.pid().context("service pid")?;
    let api = client_of(&service, &args.service, &env, "bench")?;
    let post = api.create_post().await;
    upload(&api, &post, data(4096)).await?;
    let database = mongodb::Client::with_uri_str(testbed("MONGODB_URI")?).await?;
    let url = format!("{}/v1/posts/{post}", api.address);
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
pub(crate) async fn database_operations(client: &mongodb::Client) -> anyhow::Result<f64> {
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
