//! A webhook receiver of a test's own: `fixtures/webhook_receiver.py`, which verifies every
//! request with the Standard Webhooks Python library (`scripts/test-tools webhooks`, named
//! by `TESTBED_WEBHOOKS_PYTHON`), and records what it accepted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{free_port, repository_root, testbed_tool};

/// The signing secret the receivers verify with: `whsec_` and the base64 of 32 bytes.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";

/// A receiver's port and record, whether it runs or not: events sent while it is stopped
/// fail, as they would at a receiver that is down.
#[derive(Debug)]
pub struct WebhookReceiver {
    child: Option<Child>,
    log: PathBuf,
    slow_answers: u32,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// One request the receiver verified: the `webhook-id` and the event.
#[derive(Clone, Debug)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// The body: `{"type", "timestamp", "data"}`.
    pub event: Value,
}

impl Received {
    /// The event's `type`.
    pub fn kind(&self) -> &str {
        self.event["type"].as_str().unwrap_or_default()
    }
}

impl WebhookReceiver {
    /// A receiver on a free port, not started yet.
    pub fn stopped() -> Self {
        static RECEIVERS: AtomicU64 = AtomicU64::new(0);
        let port = free_port();
        let number = RECEIVERS.fetch_add(1, Ordering::Relaxed);
        Self {
            child: None,
            log: std::env::temp_dir().join(format!(
                "posts-api-webhooks-{}-{number}.jsonl",
                std::process::id()
            )),
            slow_answers: 0,
            port,
        }
    }

    /// A receiver that listens now and answers its first `count` requests only after 3
    /// seconds (having accepted them), as if those answers were lost.
    pub async fn answering_late(count: u32) -> Self {
        let mut receiver = Self::stopped();
        receiver.slow_answers = count;
        receiver.resume().await;
        receiver
    }

    /// A receiver that listens now.
    pub async fn start() -> Self {
        let mut receiver = Self::stopped();
        receiver.resume().await;
        receiver
    }

    /// Where it takes events.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    /// Starts listening (again), and waits until it does.
    pub async fn resume(&mut self) {
        let python = testbed_tool("TESTBED_WEBHOOKS_PYTHON", "webhooks");
        let script = repository_root().join("crates/test-support/fixtures/webhook_receiver.py");
        self.child = Some(
            Command::new(python)
                .arg(script)
                .arg(self.port.to_string())
                .arg(WEBHOOK_SECRET)
                .arg(&self.log)
                .arg(self.slow_answers.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("the webhook receiver starts"),
        );
        let address = format!("127.0.0.1:{}", self.port);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the webhook receiver did not listen on {address} within 10 s");
    }

    /// What it verified and accepted so far, in arrival order; panics if any request
    /// failed verification.
    pub fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
            .map(|entry| {
                assert!(
                    entry.get("invalid").is_none(),
                    "a request failed verification: {entry}"
                );
                Received {
                    id: entry["id"].as_str().unwrap_or_default().to_owned(),
                    event: entry["event"].clone(),
                }
            })
            .collect()
    }

    /// Waits until it has accepted `count` requests (or more), for at most `limit`.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                started.elapsed() < limit,
                "{} of {count} events arrived within {limit:?}: {:?}",
                received.len(),
                received.iter().map(Received::kind).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
