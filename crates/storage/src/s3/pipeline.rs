//! [`PartPipeline`]: the parts of one multipart upload on their way to S3, confirmed in the
//! order they were sent, as many at once as the upload's [`PartWindow`] allows. Streamed
//! form uploads (`upload`) and each request of a resumable upload send their parts through
//! it; a resumable upload records each part as it is confirmed.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::parts::UploadedPart;
use super::{ObjectStore, ObjectStoreError};
use crate::memory::PartInFlight;

mod window;

use self::window::PartWindow;

/// A part S3 has stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfirmedPart {
    /// S3's record of it.
    pub(crate) part: UploadedPart,
    /// Its length.
    pub(crate) size: u64,
}

/// A part's upload: S3's record of it, and the part's bytes to fill again.
type PartTask = JoinHandle<Result<(UploadedPart, Option<BytesMut>), ObjectStoreError>>;

/// A part being sent.
#[derive(Debug)]
struct InFlight {
    task: PartTask,
    size: u64,
    _counted: PartInFlight,
}

/// The parts of one multipart upload in flight, oldest first. Dropping it stops them.
#[derive(Debug)]
pub(crate) struct PartPipeline {
    store: ObjectStore,
    key: String,
    upload_id: String,
    in_flight: VecDeque<InFlight>,
    window: PartWindow,
    /// The allocation of a part S3 has taken, when nothing else holds it any more: the
    /// next part is filled into it rather than into pages faulted in anew.
    spare: Option<BytesMut>,
}

impl PartPipeline {
    /// Parts of the multipart upload `upload_id` at `key`.
    pub(crate) fn new(store: &ObjectStore, key: &str, upload_id: &str) -> Self {
        Self {
            window: PartWindow::new(
                store.max_parts_in_flight,
                store.parts_in_flight_ceiling,
                store.part_size as u64,
                store.memory.clone(),
                store.learned_parts_in_flight.clone(),
                Instant::now(),
            ),
            store: store.clone(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            in_flight: VecDeque::new(),
            spare: None,
        }
    }

    /// The multipart upload's id.
    pub(crate) fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// Parts sent and not yet confirmed.
    pub(crate) fn len(&self) -> usize {
        self.in_flight.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Whether the oldest part must be confirmed before another is sent.
    pub(crate) fn is_full(&mut self) -> bool {
        if self.in_flight.len() < self.window.size() {
            return false;
        }
        self.window.on_full(Instant::now());
        self.in_flight.len() >= self.window.size()
    }

    /// Starts sending `part` as part `number`.
    pub(crate) fn send(&mut self, number: i32, part: Bytes) {
        let (store, key, upload_id) =
            (self.store.clone(), self.key.clone(), self.upload_id.clone());
        let size = part.len() as u64;
        self.in_flight.push_back(InFlight {
            task: tokio::spawn(async move {
                store
                    .upload_part_reclaiming(&key, &upload_id, number, part)
                    .await
            }),
            size,
            _counted: self.store.memory.part_in_flight(),
        });
    }

    /// Whether S3 has answered for the oldest part.
    pub(crate) fn oldest_is_answered(&self) -> bool {
        self.in_flight
            .front()
            .is_some_and(|part| part.task.is_finished())
    }

    /// Waits for the oldest part; `None` when none is in flight. Cancel-safe: dropped
    /// while waiting, the part stays the oldest.
    pub(crate) async fn confirm_oldest(
        &mut self,
    ) -> Result<Option<ConfirmedPart>, ObjectStoreError> {
        let Some(oldest) = self.in_flight.front_mut() else {
            return Ok(None);
        };
        let joined = (&mut oldest.task).await;
        let size = oldest.size;
        self.in_flight.pop_front();
        let (part, reclaimed) = joined.map_err(|join_error| ObjectStoreError::Unavailable {
            detail: format!("part upload task failed: {join_error}"),
        })??;
        self.spare = reclaimed;
        self.window.confirmed(size);
        Ok(Some(ConfirmedPart { part, size }))
    }

    /// The allocation of the last part confirmed, if nothing else holds it.
    pub(crate) fn take_spare(&mut self) -> Option<BytesMut> {
        self.spare.take()
    }

    /// Stops every part in flight; none of them is confirmed.
    pub(crate) fn abort(&mut self) {
        for part in self.in_flight.drain(..) {
            part.task.abort();
        }
    }
}

impl Drop for PartPipeline {
    fn drop(&mut self) {
        self.abort();
    }
}
