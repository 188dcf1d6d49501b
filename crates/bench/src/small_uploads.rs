//! Small uploads: many users storing 8 KiB files at once, the load where the database, not
//! the bytes, sets the pace.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use test_support::{ApiClient, cpu_seconds_of};

use crate::api::{client_of, upload};
use crate::reads::database_operations;
use crate::service::Service;
use crate::{Args, data, moto_env, row, testbed};

/// Clients at once, each a user of its own uploading to a post of its own.
const CLIENTS: usize = 16;
/// The size of each file.
const FILE_BYTES: usize = 8 * 1024;

/// [`CLIENTS`] users each sending [`FILE_BYTES`] form uploads to their own post, one after
/// another, with the default upload settings on moto and SecantusDB (where the Express
/// service stored 153–163 a second): uploads a second, refusals, and what each upload
/// costs the service and the database.
pub async fn small_uploads(args: &Args) -> anyhow::Result<()> {
    let env = moto_env(&[])?;
    let service = Service::start(&args.service, &env).await?;
    let service_pid = service.pid().context("service pid")?;
    let mut clients = Vec::with_capacity(CLIENTS);
    for n in 0..CLIENTS {
        clients.push(client_of(
            &service,
            &args.service,
            &env,
            &format!("user-{n}"),
        )?);
    }
    let database = mongodb::Client::with_uri_str(testbed("MONGODB_URI")?).await?;
    let duration = Duration::from_secs(if args.quick { 5 } else { 10 });
    let file = data(FILE_BYTES);
    let (mut rates, mut refusals) = (Vec::new(), Vec::new());
    let (mut service_cpu, mut database_cpu, mut operations) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        // Fresh posts each run, so that no post fills up.
        let mut posts = Vec::with_capacity(CLIENTS);
        for client in &clients {
            posts.push(client.create_post().await);
        }
        let operations_before = database_operations(&database).await?;
        let service_before = cpu_seconds_of(service_pid);
        let database_before = args.database_pid.map(cpu_seconds_of);
        let started = Instant::now();
        let workers = clients.iter().zip(&posts).map(|(client, post)| {
            let (client, post, file) = (client.clone(), post.clone(), file.clone());
            tokio::spawn(
                async move { upload_until(&client, &post, file, started + duration).await },
            )
        });
        let (mut stored, mut refused) = (0u64, 0u64);
        for worker in futures::future::join_all(workers).await {
            let (ok, failed) = worker?;
            stored += ok;
            refused += failed;
        }
        let elapsed = started.elapsed();
        let count = stored.max(1) as f64;
        service_cpu.push((cpu_seconds_of(service_pid) - service_before) * 1e3 / count);
        if let (Some(pid), Some(before)) = (args.database_pid, database_before) {
            database_cpu.push((cpu_seconds_of(pid) - before) * 1e3 / count);
        }
        // One operation is the serverStatus that reads the counters.
        let operations_after = database_operations(&database).await? - 1.0;
        operations.push((operations_after - operations_before) / count);
        rates.push(stored as f64 / elapsed.as_secs_f64());
        refusals.push(refused as f64);
    }
    let what = format!(
        "small uploads: {CLIENTS} users, {} KiB forms",
        FILE_BYTES / 1024
    );
    row(
        &what,
        "uploads/s",
        rates,
        "target ≥ 125 (0.8× the Express service's 153–163 on this testbed)",
    );
    row(&format!("{what}, refused"), "", refusals, "target 0");
    row(
        &format!("{what}, service CPU per upload"),
        "ms",
        service_cpu,
        "the Express service: 4.1 ms",
    );
    if !database_cpu.is_empty() {
        row(
            &format!("{what}, database CPU per upload"),
            "ms",
            database_cpu,
            "the Express service: 3.2 ms",
        );
    }
    row(
        &format!("{what}, database operations per upload"),
        "",
        operations,
        "target ≤ 3",
    );
    Ok(())
}

/// Uploads `file` to `post` again and again until `deadline`: (stored, refused).
async fn upload_until(api: &ApiClient, post: &str, file: Bytes, deadline: Instant) -> (u64, u64) {
    let (mut stored, mut refused) = (0, 0);
    while Instant::now() < deadline {
        match upload(api, post, file.clone()).await {
            Ok(_) => stored += 1,
            Err(_) => refused += 1,
        }
    }
    (stored, refused)
}
