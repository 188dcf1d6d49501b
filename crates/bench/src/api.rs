//! The bench's client of the service: a token of its own, posts, uploads as a form or a
//! raw body, downloads, deletes and metrics.

use std::path::PathBuf;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use crate::service::Service;
use crate::{BOUNDARY, MIB};

#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) client: reqwest::Client,
}

impl Api {
    pub(crate) async fn new(
        service: &Service,
        binary: &PathBuf,
        env: &[(String, String)],
        subject: &str,
    ) -> anyhow::Result<Self> {
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
        Ok(Self {
            base: service.base.clone(),
            token: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            client: reqwest::Client::builder().no_proxy().build()?,
        })
    }

    pub(crate) async fn create_post(&self) -> anyhow::Result<String> {
        let post: Value = self
            .client
            .post(format!("{}/v1/posts", self.base))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "title": "benchmark" }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(post["id"].as_str().context("post id")?.to_owned())
    }

    /// Uploads `bytes` as one multipart file; returns the attachment id.
    pub(crate) async fn upload(&self, post: &str, bytes: Bytes) -> anyhow::Result<String> {
        let head = Bytes::from(format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.bin\"\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{BOUNDARY}--\r\n"));
        let length = head.len() + bytes.len() + tail.len();
        let chunks: Vec<Bytes> = std::iter::once(head)
            .chain(
                (0..bytes.len())
                    .step_by(MIB)
                    .map(|start| bytes.slice(start..(start + MIB).min(bytes.len()))),
            )
            .chain(std::iter::once(tail))
            .collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(
            chunks.into_iter().map(Ok::<_, std::io::Error>),
        ));
        let response: Value = self
            .client
            .post(format!("{}/v1/posts/{post}/attachments", self.base))
            .bearer_auth(&self.token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .header("content-length", length)
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(response["items"][0]["id"]
            .as_str()
            .context("attachment id")?
            .to_owned())
    }

    /// Uploads `bytes` as the raw body, with its length; returns the attachment id.
    pub(crate) async fn upload_raw(&self, post: &str, bytes: Bytes) -> anyhow::Result<String> {
        let length = bytes.len();
        let chunks: Vec<Bytes> = (0..length)
            .step_by(MIB)
            .map(|start| bytes.slice(start..(start + MIB).min(length)))
            .collect();
        let body = reqwest::Body::wrap_stream(futures::stream::iter(
            chunks.into_iter().map(Ok::<_, std::io::Error>),
        ));
        let response: Value = self
            .client
            .post(format!(
                "{}/v1/posts/{post}/attachments/raw?filename=bench.bin",
                self.base
            ))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream")
            .header("content-length", length)
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(response["items"][0]["id"]
            .as_str()
            .context("attachment id")?
            .to_owned())
    }

    /// Deletes an attachment and its object, so a run's bytes do not pile up on disk.
    pub(crate) async fn delete(&self, post: &str, attachment: &str) -> anyhow::Result<()> {
        self.client
            .delete(format!(
                "{}/v1/posts/{post}/attachments/{attachment}",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Downloads an attachment, discarding the bytes; returns their count.
    pub(crate) async fn download(&self, post: &str, attachment: &str) -> anyhow::Result<usize> {
        let mut stream = self
            .client
            .get(format!(
                "{}/v1/posts/{post}/attachments/{attachment}/content",
                self.base
            ))
            .send()
            .await?
            .error_for_status()?
            .bytes_stream();
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            total += chunk?.len();
        }
        Ok(total)
    }

    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?)
    }
}

pub(crate) fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(prefix))
        .and_then(|value| value.trim().parse().ok())
}
