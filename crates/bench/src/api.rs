//! The bench's use of the service's API: `test-support`'s client with a token of its own,
//! and the few calls the measurements make, as results rather than assertions.

use std::path::Path;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use serde_json::Value;
use test_support::ApiClient;

use crate::service::Service;

/// A client of `service` for the user `subject`, with a token the service's own
/// `token` command mints from `env`.
pub(crate) fn client_of(
    service: &Service,
    binary: &Path,
    env: &[(String, String)],
    subject: &str,
) -> anyhow::Result<ApiClient> {
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
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    Ok(ApiClient::with_bearer(service.base.clone(), &token))
}

/// The id of the one attachment a successful upload answers with.
async fn stored(response: reqwest::Response) -> anyhow::Result<String> {
    ensure!(
        response.status() == 201,
        "the upload was answered {}",
        response.status()
    );
    let body: Value = response.json().await?;
    Ok(body["items"][0]["id"]
        .as_str()
        .context("attachment id")?
        .to_owned())
}

/// Uploads `bytes` as the one file of a form; returns the attachment id.
pub(crate) async fn upload(api: &ApiClient, post: &str, bytes: Bytes) -> anyhow::Result<String> {
    stored(api.upload_streamed(post, "bench.bin", bytes).await).await
}

/// Uploads `bytes` as the raw body, with its length; returns the attachment id.
pub(crate) async fn upload_raw(
    api: &ApiClient,
    post: &str,
    bytes: Bytes,
) -> anyhow::Result<String> {
    stored(api.upload_raw_streamed(post, "bench.bin", bytes).await).await
}

/// Uploads `bytes` as a resumable upload sent in one `PATCH`; returns the attachment id.
pub(crate) async fn upload_resumable(
    api: &ApiClient,
    post: &str,
    bytes: Bytes,
) -> anyhow::Result<String> {
    let response = api.upload_resumable(post, bytes).await;
    ensure!(
        response.status() == 204,
        "the PATCH was answered {}",
        response.status()
    );
    let location = response
        .headers()
        .get("content-location")
        .context("the completed upload names its attachment")?
        .to_str()?;
    Ok(location
        .rsplit('/')
        .next()
        .context("attachment id")?
        .to_owned())
}

/// Deletes an attachment and its object, so a run's bytes do not pile up on disk.
pub(crate) async fn delete(api: &ApiClient, post: &str, attachment: &str) -> anyhow::Result<()> {
    let response = api.delete_attachment(post, attachment).await;
    ensure!(
        response.status().is_success(),
        "the delete was answered {}",
        response.status()
    );
    Ok(())
}

/// One value of the service's metrics text: the line that starts with `prefix`.
pub(crate) fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|value| value.trim().parse().ok())
}
