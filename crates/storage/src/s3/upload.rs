//! Streamed uploads: one PutObject for a small object, a bounded multipart upload for a
//! larger one, aborted on failure or when the request future is dropped.

use std::fmt::Display;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::channel::Channel;
use sha2::{Digest, Sha256};

use super::error::describe;
use super::parts::UploadedPart;
use super::pipeline::PartPipeline;
use super::{ObjectStore, ObjectStoreError, PutError};

/// Size and digest of stored bytes, computed while they streamed through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
}

impl ObjectStore {
    /// Stores `stream` at `key`, failing with `TooLarge` past `max_bytes`.
    ///
    /// An object smaller than a part is one PutObject; a larger one is a multipart upload
    /// whose parts go through a [`PartPipeline`] while the next one fills, so memory stays
    /// within (parts in flight + 1) × part size whatever the size. On any failure,
    /// and if the returned future is dropped, the multipart upload is aborted.
    ///
    /// Bodies are sent with `UNSIGNED-PAYLOAD`, as the AWS SDKs for Java and JavaScript do
    /// by default: SigV4 payload signing hashed every byte a second time (a profile showed
    /// the two SHA-256 passes at 41% of the service's CPU during uploads), while TLS
    /// already protects S3 traffic in transit and the service records its own SHA-256.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        content_type: &str,
        mut stream: S,
        max_bytes: u64,
    ) -> Result<StoredObject, PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut buffer = PartBuffer::new(self.part_size);
        let mut multipart: Option<MultipartUpload> = None;

        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    return Err(self
                        .fail(multipart, PutError::Client(error.to_string()))
                        .await);
                }
            };
            size += chunk.len() as u64;
            if size > max_bytes {
                return Err(self
                    .fail(multipart, PutError::TooLarge { limit: max_bytes })
                    .await);
            }
            hasher.update(&chunk);
            let mut data = &chunk[..];
            while let Some(part) = buffer.fill(&mut data) {
                let upload = match multipart.as_mut() {
                    Some(upload) => upload,
                    None => match self.start_multipart(key, content_type).await {
                        Ok(upload) => multipart.insert(upload),
                        Err(error) => return Err(error.into()),
                    },
                };
                if let Err(error) = upload.send_part(part).await {
                    return Err(self.fail(multipart, error.into()).await);
                }
                if let Some(spare) = upload.pipeline.take_spare() {
                    buffer.recycle(Vec::from(spare));
                }
            }
        }

        let stored = StoredObject {
            size,
            sha256: hasher.finalize().into(),
        };
        match multipart {
            None => {
                self.put_bytes(key, content_type, buffer.finish()).await?;
            }
            Some(mut upload) => {
                let last = buffer.finish();
                let last_part = if last.is_empty() {
                    Ok(())
                } else {
                    upload.send_part(last).await
                };
                let completed = match last_part {
                    Ok(()) => upload.complete(self).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = completed {
                    return Err(self.fail(Some(upload), error.into()).await);
                }
            }
        }
        Ok(stored)
    }

    /// Stores exactly `length` bytes of `stream` at `key` in one PutObject (at most
    /// `MAX_SINGLE_PUT_BYTES`), the bytes going to S3 as they arrive through a channel of
    /// a few chunks: nothing is buffered into parts, and the backend writes the object
    /// once. A stream that fails or holds another number of bytes fails with `Client`,
    /// and the PutObject with it, so S3 stores nothing.
    ///
    /// The PutObject lasts as long as the client takes to send (the caller bounds the
    /// client's pace), so the SDK's operation and attempt timeouts do not apply to it;
    /// instead S3 must take each chunk, and answer once the last is sent, within the
    /// attempt timeout.
    pub async fn put_sized_stream<S, E>(
        &self,
        key: &str,
        content_type: &str,
        mut stream: S,
        length: u64,
    ) -> Result<StoredObject, PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
        let stall = self.stall_timeout;
        let (mut sender, body) = Channel::<Bytes, std::io::Error>::new(CHUNKS_IN_FLIGHT);
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(length).unwrap_or(i64::MAX))
            .body(ByteStream::from_body_1_x(body))
            .customize()
            .disable_payload_signing()
            .config_override(
                aws_sdk_s3::config::Builder::new().timeout_config(self.streaming_timeouts.clone()),
            )
            .send();
        let feed = async move {
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            while let Some(chunk) = stream.next().await {
                let failure = match chunk {
                    Err(error) => PutError::Client(error.to_string()),
                    Ok(chunk) => {
                        size += chunk.len() as u64;
                        hasher.update(&chunk);
                        if size > length {
                            PutError::Client(format!(
                                "the body holds more than the {length} bytes declared"
                            ))
                        } else {
                            match tokio::time::timeout(stall, sender.send_data(chunk)).await {
                                Ok(Ok(())) => continue,
                                // The PutObject ended early; its outcome says why.
                                Ok(Err(_)) => return Fed::Stopped,
                                Err(_) => PutError::Backend(ObjectStoreError::Unavailable {
                                    detail: format!("S3 took no bytes for {stall:?}"),
                                }),
                            }
                        }
                    }
                };
                sender.abort(std::io::Error::other(failure.to_string()));
                return Fed::Failed(failure);
            }
            if size < length {
                let failure = format!("the body ended after {size} of the {length} bytes declared");
                sender.abort(std::io::Error::other(failure.clone()));
                return Fed::Failed(PutError::Client(failure));
            }
            Fed::Complete(StoredObject {
                size,
                sha256: hasher.finalize().into(),
            })
        };
        let mut put = std::pin::pin!(put);
        let mut feed = std::pin::pin!(feed);
        let (fed, answer) = tokio::select! {
            fed = &mut feed => {
                let answer = match fed {
                    // Every byte is sent: S3 answers within the attempt timeout.
                    Fed::Complete(_) => tokio::time::timeout(stall, &mut put).await.ok(),
                    // The body was aborted: the PutObject fails at once.
                    _ => Some(put.await),
                };
                (fed, answer)
            }
            answer = &mut put => (Fed::Stopped, Some(answer)),
        };
        match (fed, answer) {
            (Fed::Failed(error), _) => Err(error),
            (_, Some(Err(error))) => Err(self.classify(error).into()),
            (_, None) => Err(PutError::Backend(ObjectStoreError::Unavailable {
                detail: format!("S3 did not answer PutObject within {stall:?}"),
            })),
            (Fed::Complete(stored), Some(Ok(_))) => Ok(stored),
            (Fed::Stopped, Some(Ok(_))) => Err(PutError::Backend(ObjectStoreError::Unavailable {
                detail: "S3 answered PutObject before the body was sent".into(),
            })),
        }
    }

    async fn start_multipart(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<MultipartUpload, ObjectStoreError> {
        let upload_id = self.create_multipart_upload(key, content_type).await?;
        Ok(MultipartUpload {
            pipeline: PartPipeline::new(self, key, &upload_id),
            guard: AbortGuard {
                client: self.client.clone(),
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                upload_id: Some(upload_id),
            },
            completed: Vec::new(),
            next_part: 1,
        })
    }

    /// Aborts the multipart upload, if any, and returns the error to report.
    async fn fail(&self, multipart: Option<MultipartUpload>, error: PutError) -> PutError {
        if let Some(mut upload) = multipart {
            upload.pipeline.abort();
            upload.guard.abort_now().await;
        }
        error
    }
}

/// Chunks of a sized upload between the request and the PutObject: a few, so that the
/// request is read only as fast as S3 takes the bytes.
const CHUNKS_IN_FLIGHT: usize = 8;

/// How feeding a sized PutObject ended.
enum Fed {
    /// Every declared byte was sent.
    Complete(StoredObject),
    /// The client's stream failed or held another number of bytes.
    Failed(PutError),
    /// The PutObject stopped taking bytes.
    Stopped,
}

/// Collects bytes into parts of exactly `part_size`, so memory per upload stays at
/// (parts in flight + 1) × part size. A part's allocation is filled again once S3 has
/// it (see [`PartBuffer::recycle`]): a new one would fault its pages in again, which
/// cost about a sixth of a form upload's CPU. All are freed when the upload ends.
struct PartBuffer {
    part_size: usize,
    current: Vec<u8>,
    spare: Option<Vec<u8>>,
    /// Whether a full part was handed out: the next ones are full-sized from the start.
    split: bool,
}

impl PartBuffer {
    /// The first allocation; small objects never grow past what they need.
    const INITIAL: usize = 64 * 1024;

    fn new(part_size: usize) -> Self {
        Self {
            part_size,
            current: Vec::new(),
            spare: None,
            split: false,
        }
    }

    /// Keeps a sent part's allocation to fill with the next part.
    fn recycle(&mut self, mut spare: Vec<u8>) {
        if spare.capacity() == self.part_size {
            spare.clear();
            self.spare = Some(spare);
        }
    }

    /// Takes bytes from `data`; returns a full part once more bytes follow it (an object
    /// of exactly one part stays a single PutObject). Call again while it returns parts.
    fn fill(&mut self, data: &mut &[u8]) -> Option<Bytes> {
        if data.is_empty() {
            return None;
        }
        if self.current.len() == self.part_size {
            self.split = true;
            return Some(Bytes::from(std::mem::take(&mut self.current)));
        }
        let take = data.len().min(self.part_size - self.current.len());
        let needed = self.current.len() + take;
        if self.split && self.current.capacity() == 0 {
            self.current = self
                .spare
                .take()
                .unwrap_or_else(|| Vec::with_capacity(self.part_size));
        } else if needed > self.current.capacity() {
            let grown = needed
                .max(self.current.capacity() * 2)
                .max(Self::INITIAL)
                .min(self.part_size);
            self.current.reserve_exact(grown - self.current.len());
        }
        self.current.extend_from_slice(&data[..take]);
        *data = &data[take..];
        self.fill(data)
    }

    /// What is left: the whole object if it never filled a part, else the last part.
    fn finish(self) -> Bytes {
        Bytes::from(self.current)
    }
}

/// A multipart upload being written: its parts through a [`PartPipeline`], the parts
/// confirmed, and the guard that aborts it unless it completes.
struct MultipartUpload {
    guard: AbortGuard,
    pipeline: PartPipeline,
    completed: Vec<UploadedPart>,
    next_part: i32,
}

impl MultipartUpload {
    /// Starts uploading `part`, first waiting for room among the parts in flight.
    async fn send_part(&mut self, part: Bytes) -> Result<(), ObjectStoreError> {
        while self.pipeline.is_full() {
            self.confirm_oldest().await?;
        }
        self.pipeline.send(self.next_part, part);
        self.next_part += 1;
        Ok(())
    }

    async fn confirm_oldest(&mut self) -> Result<(), ObjectStoreError> {
        if let Some(confirmed) = self.pipeline.confirm_oldest().await? {
            self.completed.push(confirmed.part);
        }
        Ok(())
    }

    async fn complete(&mut self, store: &ObjectStore) -> Result<(), ObjectStoreError> {
        while !self.pipeline.is_empty() {
            self.confirm_oldest().await?;
        }
        store
            .complete_multipart_upload(&self.guard.key, self.pipeline.upload_id(), &self.completed)
            .await?;
        self.guard.upload_id = None;
        Ok(())
    }
}

/// Aborts an unfinished multipart upload when dropped (a cancelled request, a panic), so
/// that S3 keeps no invisible, billed parts. The reaper catches what this misses (a
/// killed process).
struct AbortGuard {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl AbortGuard {
    async fn abort_now(&mut self) {
        if let Some(upload_id) = self.upload_id.take() {
            abort(&self.client, &self.bucket, &self.key, &upload_id).await;
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, "cannot abort multipart upload: no runtime; the reaper will");
            return;
        };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        runtime.spawn(async move { abort(&client, &bucket, &key, &upload_id).await });
    }
}

async fn abort(client: &aws_sdk_s3::Client, bucket: &str, key: &str, upload_id: &str) {
    let result = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    match result {
        Ok(_) => tracing::info!(%key, "aborted multipart upload"),
        Err(error) => {
            tracing::warn!(%key, error = %describe(&error), "abort of multipart upload failed; the reaper will retry")
        }
    }
}

#[cfg(test)]
mod tests;
