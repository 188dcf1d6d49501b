//! The meter of an upload of unknown length: it reserves quota a step at a time, ahead
//! of the bytes as they arrive.

use std::fmt::{self, Display};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::{QUOTA_STEP_BYTES, QuotaHold};
use crate::error::StorageError;
use crate::store::Storage;

/// Reserves quota ahead of the bytes of an upload of unknown length, a step at a time.
#[derive(Debug)]
pub(crate) struct QuotaMeter {
    storage: Storage,
    hold: QuotaHold,
    quota: u64,
    seen: u64,
    /// The refusal that stopped the stream, for the caller to answer with.
    refusal: Arc<Mutex<Option<StorageError>>>,
}

/// A stream's error, or the quota's refusal of its next bytes.
#[derive(Debug)]
pub(crate) enum Metered<E> {
    Source(E),
    OverQuota,
}

impl<E: Display> Display for Metered<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Source(error) => error.fmt(f),
            Self::OverQuota => f.write_str("the upload went over its user's quota"),
        }
    }
}

impl QuotaMeter {
    /// A meter for `hold`, when there is a quota.
    pub(crate) fn new(storage: &Storage, hold: Option<&QuotaHold>) -> Option<Self> {
        Some(Self {
            storage: storage.clone(),
            hold: hold?.clone(),
            quota: storage.quota()?,
            seen: 0,
            refusal: Arc::default(),
        })
    }

    /// Where the refusal that stopped the stream (if any) will be.
    pub(crate) fn refusal(&self) -> Arc<Mutex<Option<StorageError>>> {
        self.refusal.clone()
    }

    /// Reserves what `bytes` more need, a [`QUOTA_STEP_BYTES`] step at a time (or
    /// exactly what they need, near the quota).
    async fn admit(&mut self, bytes: u64) -> Result<(), StorageError> {
        self.seen += bytes;
        if self.seen <= self.hold.reserved {
            return Ok(());
        }
        let needed = self.seen - self.hold.reserved;
        match self.grow(needed.max(QUOTA_STEP_BYTES)).await {
            Err(StorageError::QuotaExceeded { .. }) if needed < QUOTA_STEP_BYTES => {
                self.grow(needed).await
            }
            outcome => outcome,
        }
    }

    /// Reserves `step` bytes more. Spawned: a MongoDB call must not be dropped half-way
    /// if the upload is.
    async fn grow(&mut self, step: u64) -> Result<(), StorageError> {
        let (storage, mut hold, quota) = (self.storage.clone(), self.hold.clone(), self.quota);
        let (hold, outcome) = tokio::spawn(async move {
            let outcome = storage.grow_quota(&mut hold, step, quota).await;
            (hold, outcome)
        })
        .await
        .map_err(|_| StorageError::Client("the quota reservation was interrupted".into()))?;
        self.hold = hold;
        outcome
    }

    /// `stream`, each chunk admitted before it passes.
    pub(crate) fn meter<S, E>(
        self,
        stream: S,
    ) -> impl Stream<Item = Result<Bytes, Metered<E>>> + Unpin
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        Box::pin(futures::stream::unfold(
            (stream, self, false),
            |(mut stream, mut meter, stopped)| async move {
                if stopped {
                    return None;
                }
                match stream.next().await? {
                    Ok(bytes) => match meter.admit(bytes.len() as u64).await {
                        Ok(()) => Some((Ok(bytes), (stream, meter, false))),
                        Err(refusal) => {
                            if let Ok(mut slot) = meter.refusal.lock() {
                                *slot = Some(refusal);
                            }
                            Some((Err(Metered::OverQuota), (stream, meter, true)))
                        }
                    },
                    Err(error) => Some((Err(Metered::Source(error)), (stream, meter, false))),
                }
            },
        ))
    }
}
