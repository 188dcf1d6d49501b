//! The malware scan of the processing stage: with `scan.clamd_address` set, every
//! attachment's stored bytes are streamed from S3 to clamd (`INSTREAM`) before it can
//! become ready, on every way in. An infected file is refused (`Infected`, with the
//! signature) and moved to `scan.quarantine_prefix` when one is set; the caller removes
//! what was stored. clamd unreachable or slower than `scan.timeout_secs` refuses the file
//! (`ScannerUnavailable`, a 503 to retry) unless `scan.fail_open` lets it through.

use std::sync::atomic::Ordering;
use std::time::Duration;

use clamav_client::tokio::Tcp;
use futures::StreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, doc};

use crate::error::{Entity, StorageError};
use crate::mongo::documents::now;
use crate::settings::ScanSettings;
use crate::store::Storage;

/// What clamd said of a file.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Clean,
    Infected(String),
}

/// Why a scan gave no verdict.
#[derive(Debug)]
enum ScanFailure {
    /// The object could not be read from S3.
    Objects(StorageError),
    /// clamd could not be reached, or answered with an error.
    Scanner(String),
}

/// Uploads the scanner refused, by id, for a day (a TTL index removes them): asked for
/// again, a resumable or direct upload answers with the signature rather than "not found".
pub(crate) const REJECTIONS: &str = "rejections";

impl Storage {
    /// Remembers that upload `id` of `post_id` was refused as infected with `signature`.
    pub(crate) async fn remember_rejection(
        &self,
        post_id: ObjectId,
        id: ObjectId,
        signature: &str,
    ) -> Result<(), StorageError> {
        self.database
            .collection::<Document>(REJECTIONS)
            .update_one(
                doc! { "_id": id },
                doc! { "$set": {
                    "post_id": post_id,
                    "reason": "malware",
                    "signature": signature,
                    "rejected_at": now(),
                } },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Why upload `id` of `post_id` is not there: `Infected` with its signature if the
    /// scanner refused it, else `NotFound`.
    pub(crate) async fn missing_upload(&self, post_id: ObjectId, id: ObjectId) -> StorageError {
        let rejection = self
            .database
            .collection::<Document>(REJECTIONS)
            .find_one(doc! { "_id": id, "post_id": post_id })
            .await;
        match rejection {
            Ok(Some(rejection)) => StorageError::Infected {
                signature: rejection
                    .get_str("signature")
                    .unwrap_or_default()
                    .to_owned(),
            },
            Ok(None) => StorageError::NotFound(Entity::Upload),
            Err(error) => error.into(),
        }
    }

    /// Scans the object at `key`, if scanning is configured.
    pub(crate) async fn scan(&self, key: &str) -> Result<(), StorageError> {
        let settings = &self.scan;
        if settings.clamd_address.is_empty() {
            return Ok(());
        }
        let timeout = Duration::from_secs(settings.timeout_secs.get());
        let verdict = match tokio::time::timeout(timeout, self.ask_clamd(key, settings)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ScanFailure::Scanner(format!(
                "no verdict within {timeout:?}"
            ))),
        };
        match verdict {
            Ok(Verdict::Clean) => Ok(()),
            Ok(Verdict::Infected(signature)) => {
                tracing::warn!(%key, %signature, "malware found in an upload; refused");
                self.infected_refused.fetch_add(1, Ordering::Relaxed);
                self.quarantine(key).await?;
                Err(StorageError::Infected { signature })
            }
            Err(ScanFailure::Objects(error)) => Err(error),
            Err(ScanFailure::Scanner(problem)) if settings.fail_open => {
                tracing::warn!(%key, %problem, "the malware scanner is unavailable; stored unscanned (scan.fail_open)");
                Ok(())
            }
            Err(ScanFailure::Scanner(problem)) => Err(StorageError::ScannerUnavailable(problem)),
        }
    }

    /// Streams the object to clamd and reads its verdict.
    async fn ask_clamd(&self, key: &str, settings: &ScanSettings) -> Result<Verdict, ScanFailure> {
        let body = self
            .objects
            .get_stream(key, None)
            .await
            .map_err(|error| ScanFailure::Objects(error.into()))?;
        let bytes = body
            .stream
            .map(|chunk| chunk.map_err(std::io::Error::other));
        let connection = Tcp {
            host_address: settings.clamd_address.as_str(),
        };
        let response = clamav_client::tokio::scan_stream(bytes, connection, None)
            .await
            .map_err(|error| ScanFailure::Scanner(error.to_string()))?;
        verdict(&response).map_err(ScanFailure::Scanner)
    }

    /// Copies an infected object to the quarantine prefix, if one is set.
    async fn quarantine(&self, key: &str) -> Result<(), StorageError> {
        let prefix = &self.scan.quarantine_prefix;
        if prefix.is_empty() {
            return Ok(());
        }
        let own = self.objects.key_prefix();
        let name = key.strip_prefix(own.as_str()).unwrap_or(key);
        self.objects.copy(key, &format!("{prefix}/{name}")).await?;
        Ok(())
    }
}

/// clamd's answer to `INSTREAM`: `stream: OK`, `stream: NAME FOUND`, or `… ERROR`.
fn verdict(response: &[u8]) -> Result<Verdict, String> {
    let text = String::from_utf8_lossy(response);
    let answer = text.trim_end_matches(['\0', '\n']).trim();
    let answer = answer.strip_prefix("stream:").map_or(answer, str::trim);
    if answer == "OK" {
        return Ok(Verdict::Clean);
    }
    match answer.strip_suffix(" FOUND") {
        Some(signature) => Ok(Verdict::Infected(signature.to_owned())),
        None => Err(format!("clamd answered `{answer}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamd_answers_are_read_as_verdicts() {
        assert_eq!(verdict(b"stream: OK\0"), Ok(Verdict::Clean));
        assert_eq!(
            verdict(b"stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0"),
            Ok(Verdict::Infected("Eicar-Test-Signature.UNOFFICIAL".into()))
        );
        assert!(verdict(b"INSTREAM size limit exceeded. ERROR\0").is_err());
    }
}
