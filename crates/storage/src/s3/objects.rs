//! Reading and removing objects: existence of the bucket, ranged streams, sizes, deletes.

use std::time::SystemTime;

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use futures::StreamExt;

use super::{ObjectStore, ObjectStoreError};

/// A byte range of an object, as HTTP `Range` expresses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `start..=end`
    Inclusive(u64, u64),
    /// `start..`
    From(u64),
    /// The last `n` bytes.
    Suffix(u64),
}

impl ByteRange {
    fn header(self) -> String {
        match self {
            Self::Inclusive(start, end) => format!("bytes={start}-{end}"),
            Self::From(start) => format!("bytes={start}-"),
            Self::Suffix(length) => format!("bytes=-{length}"),
        }
    }
}

/// A download in progress.
pub struct ObjectBody {
    /// Bytes in this response (the range's length for a ranged read).
    pub content_length: u64,
    /// `(start, end inclusive, total size)` for a ranged read.
    pub content_range: Option<(u64, u64, u64)>,
    /// The bytes.
    pub stream: futures::stream::BoxStream<'static, Result<Bytes, ObjectStoreError>>,
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBody")
            .field("content_length", &self.content_length)
            .field("content_range", &self.content_range)
            .finish_non_exhaustive()
    }
}

/// What S3 knows of a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
}

impl ObjectStore {
    /// Proves the bucket exists and the credentials may use it (`HeadBucket`).
    pub async fn check_bucket(&self) -> Result<(), ObjectStoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.classify(error)),
        }
    }

    /// Streams an object, or the given range of it.
    ///
    /// A connection to S3 that breaks midway is resumed where it stopped, with a ranged
    /// GetObject of the same object (`If-Match` its ETag), a few times at most: the reader
    /// sees one unbroken stream.
    pub async fn get_stream(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<ObjectBody, ObjectStoreError> {
        let output = self
            .get_object(key, range.map(ByteRange::header), None)
            .await?;
        let content_length = output
            .content_length
            .and_then(|length| u64::try_from(length).ok())
            .unwrap_or_default();
        let content_range = output
            .content_range
            .as_deref()
            .and_then(parse_content_range);
        let first = content_range.map_or(0, |(start, _, _)| start);
        let download = Download {
            store: self.clone(),
            key: key.to_owned(),
            etag: output.e_tag,
            next: first,
            end: first.saturating_add(content_length),
            body: output.body,
            resumes_left: RESUMES_PER_DOWNLOAD,
        };
        Ok(ObjectBody {
            content_length,
            content_range,
            stream: futures::stream::unfold(download, Download::next_chunk).boxed(),
        })
    }

    /// One GetObject of `key`, with an optional `Range` and `If-Match`.
    async fn get_object(
        &self,
        key: &str,
        range: Option<String>,
        if_match: Option<String>,
    ) -> Result<GetObjectOutput, ObjectStoreError> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .set_if_match(if_match)
            .send()
            .await
            .map_err(|error| self.classify_object(error))
    }

    /// Size of the object at `key`.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectStoreError> {
        let output = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|error| self.classify_object(error))?;
        Ok(ObjectInfo {
            size: output
                .content_length
                .and_then(|length| u64::try_from(length).ok())
                .unwrap_or_default(),
        })
    }

    /// Deletes the object at `key`; deleting a missing object succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectStoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(drop)
            .map_err(|error| self.classify_object(error))
            .or_else(|error| match error {
                ObjectStoreError::NotFound => Ok(()),
                other => Err(other),
            })
    }
}

impl ObjectStore {
    /// Copies `source` to `destination` within the bucket.
    pub async fn copy(&self, source: &str, destination: &str) -> Result<(), ObjectStoreError> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .copy_source(format!("{}/{source}", self.bucket))
            .key(destination)
            .send()
            .await
            .map(drop)
            .map_err(|error| self.classify_object(error))
    }

    /// Keys under `prefix` with when they were last written, at most `limit` of them.
    pub async fn list(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, SystemTime)>, ObjectStoreError> {
        Ok(self.list_after(prefix, None, limit).await?.0)
    }

    /// Keys under `prefix` after `start_after` (in S3's order), at most `limit` of them,
    /// with when they were last written; and whether more follow.
    pub async fn list_after(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, SystemTime)>, bool), ObjectStoreError> {
        let mut listed = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(start_after.map(str::to_owned))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| self.classify(error))?;
            let truncated = page.is_truncated.unwrap_or(false);
            let mut contents = page.contents.unwrap_or_default().into_iter().peekable();
            while let Some(object) = contents.next() {
                let written = object
                    .last_modified
                    .and_then(|at| SystemTime::try_from(at).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                if let Some(key) = object.key {
                    listed.push((key, written));
                    if listed.len() >= limit {
                        return Ok((listed, contents.peek().is_some() || truncated));
                    }
                }
            }
        }
        Ok((listed, false))
    }
}

/// How many times one download may resume after its S3 connection broke. Each resume is
/// one GetObject within the operation timeout, so a dead S3 fails the download within
/// the stall grace period and this many operation timeouts.
const RESUMES_PER_DOWNLOAD: u32 = 2;

/// A download in progress: the bytes `next..end` of `key` are still to come.
struct Download {
    store: ObjectStore,
    key: String,
    etag: Option<String>,
    next: u64,
    end: u64,
    body: ByteStream,
    resumes_left: u32,
}

impl Download {
    /// The next chunk, resuming the download once a broken connection has failed it.
    async fn next_chunk(mut self) -> Option<(Result<Bytes, ObjectStoreError>, Self)> {
        loop {
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    self.next += chunk.len() as u64;
                    return Some((Ok(chunk), self));
                }
                None => return None,
                Some(Err(error)) => {
                    let broken = ObjectStoreError::Unavailable {
                        detail: format!("reading from bucket `{}`: {error}", self.store.bucket),
                    };
                    if self.resumes_left == 0 || self.next >= self.end {
                        return Some((Err(broken), self.finished()));
                    }
                    self.resumes_left -= 1;
                    tracing::warn!(%error, offset = self.next, "S3 download broke; resuming");
                    match self.resume().await {
                        Ok(body) => self.body = body,
                        Err(error) => return Some((Err(error), self.finished())),
                    }
                }
            }
        }
    }

    /// The rest of the object from S3, provided it is still the object that was started
    /// and S3 answers with the range asked for.
    async fn resume(&self) -> Result<ByteStream, ObjectStoreError> {
        let range = ByteRange::Inclusive(self.next, self.end - 1).header();
        let output = self
            .store
            .get_object(&self.key, Some(range), self.etag.clone())
            .await?;
        match output
            .content_range
            .as_deref()
            .and_then(parse_content_range)
        {
            Some((start, _, _)) if start == self.next => Ok(output.body),
            _ => Err(ObjectStoreError::Unavailable {
                detail: format!(
                    "resuming `{}` at byte {}, S3 answered another range",
                    self.key, self.next
                ),
            }),
        }
    }

    /// The state after a failure: nothing more comes.
    fn finished(mut self) -> Self {
        self.body = ByteStream::default();
        self.resumes_left = 0;
        self.next = self.end;
        self
    }
}

/// `bytes START-END/TOTAL` → `(START, END, TOTAL)`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
    }

    #[test]
    fn range_headers_follow_rfc_9110() {
        assert_eq!(ByteRange::Inclusive(0, 0).header(), "bytes=0-0");
        assert_eq!(ByteRange::From(5).header(), "bytes=5-");
        assert_eq!(ByteRange::Suffix(3).header(), "bytes=-3");
    }
}
