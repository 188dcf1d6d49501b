//! What every posts-api test shares, written once: the testbed that `scripts/test` starts
//! (`testbed`), one proxy for every fault (`ChaosProxy`), inspection of the bucket and the
//! database behind the service's back (`Inspector`), an HTTP client for the API with
//! multipart builders and problem assertions (`ApiClient`), and deterministic content.
//!
//! It is a dev-dependency only; nothing in it runs in production.
// Test helpers fail the test that called them, loudly, rather than return errors.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod api_client;
mod clamd;
mod content;
pub mod images;
mod inspect;
mod multipart;
mod proxy;
mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use crate::api_client::{ApiClient, expect_problem, id_of};
pub use crate::clamd::{Clamd, EICAR, EICAR_SIGNATURE};
pub use crate::content::pseudo_random;
pub use crate::inspect::{Inspector, s3_client};
pub use crate::multipart::{BOUNDARY, closing_boundary, form_content_type, multipart, part_header};
pub use crate::proxy::ChaosProxy;
pub use crate::webhooks::{Received, WEBHOOK_SECRET, WebhookReceiver};

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// A testbed variable that `scripts/test` exports; tests cannot run without it.
pub fn testbed(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through scripts/test, or source .local/services.env"
        )
    })
}

/// A program a test drives, from the testbed variable `name`; `tool` is its name for
/// `scripts/test-tools`, which installs it.
pub fn testbed_tool(name: &str, tool: &str) -> String {
    let path = testbed(name);
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} ({name}) is not installed: run scripts/test-tools {tool}"
    );
    path
}

/// The repository root, where `config/`, `docs/` and `deploy/` live.
pub fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `host:port` of a testbed URL such as `http://127.0.0.1:5000` or a MongoDB URI.
pub fn socket_address_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.parse().expect("a 127.0.0.1:PORT address")
}

/// A free local port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The CPU time process `pid` has used, user and system, in seconds (Linux's /proc, at
/// the usual 100 ticks per second; 0 if unreadable).
pub fn cpu_seconds_of(pid: u32) -> f64 {
    const TICKS_PER_SECOND: f64 = 100.0;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces:
            // utime and stime are the 12th and 13th.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
            Some((ticks(11)? + ticks(12)?) as f64 / TICKS_PER_SECOND)
        })
        .unwrap_or(0.0)
}

/// The resident memory of process `pid`, in bytes (Linux's /proc; 0 if unreadable).
pub fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
