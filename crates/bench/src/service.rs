//! A posts-api process for one benchmark.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A running service; killed when dropped.
#[derive(Debug)]
pub struct Service {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// How long it took to answer `/healthz` after spawning.
    pub time_to_ready: Duration,
}

impl Service {
    /// Starts `binary serve` with the given environment on a free port and waits for it.
    pub async fn start(binary: &Path, env: &[(String, String)]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let started = Instant::now();
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env("PORT", port.to_string())
            .env("APP__SERVER__HOST", "127.0.0.1")
            .env("APP__LOG__LEVEL", "warn")
            // As the image runs it (Dockerfile): freed part buffers go back to the system.
            .env("MALLOC_MMAP_THRESHOLD_", "1048576")
            .env("MALLOC_TRIM_THRESHOLD_", "16777216")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().context("spawning posts-api")?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("posts-api exited during start-up with {status}");
            }
            if client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("posts-api not ready after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Self {
            time_to_ready: started.elapsed(),
            child,
            base,
        })
    }

    /// The process id, for `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}
