//! [`UploadMemory`]: the memory every streamed upload of an instance shares. The API admits
//! an upload by taking its share before a byte of the body is read; an upload whose parts
//! S3 takes ever faster takes more, one part at a time, only from the half of the budget
//! that is still free, and gives it back when it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The upload memory of one instance, counted in KiB, and the parts it holds in flight.
#[derive(Clone, Debug)]
pub struct UploadMemory {
    free: Arc<Semaphore>,
    total_kib: u32,
    parts_in_flight: Arc<AtomicUsize>,
}

/// Memory taken from an [`UploadMemory`], given back when dropped.
#[derive(Debug)]
pub struct MemoryHold {
    _permit: OwnedSemaphorePermit,
}

/// `bytes` in KiB, rounded up, as the budget counts them.
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl UploadMemory {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let total_kib = kib(bytes).min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        Self {
            free: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            parts_in_flight: Arc::default(),
        }
    }

    /// No budget: nothing can be taken (for tools that store no upload).
    pub fn none() -> Self {
        Self::new(0)
    }

    /// Takes `bytes` if they are free.
    pub fn try_take(&self, bytes: u64) -> Option<MemoryHold> {
        self.free
            .clone()
            .try_acquire_many_owned(kib(bytes))
            .ok()
            .map(|permit| MemoryHold { _permit: permit })
    }

    /// Takes `bytes`, waiting up to `within` for them to be free; `None` if they were not.
    pub async fn take_within(&self, bytes: u64, within: std::time::Duration) -> Option<MemoryHold> {
        let acquire = self.free.clone().acquire_many_owned(kib(bytes));
        match tokio::time::timeout(within, acquire).await {
            Ok(Ok(permit)) => Some(MemoryHold { _permit: permit }),
            _ => None,
        }
    }

    /// Takes `bytes` only if half of the budget stays free after: what an upload takes to
    /// go faster never leaves new uploads without room.
    pub fn try_take_spare(&self, bytes: u64) -> Option<MemoryHold> {
        let wanted = kib(bytes) as usize;
        let kept_free = (self.total_kib / 2) as usize;
        if self.free.available_permits() < wanted.saturating_add(kept_free) {
            return None;
        }
        self.try_take(bytes)
    }

    /// The budget in bytes.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total_kib) * 1024
    }

    /// Bytes taken now.
    pub fn held_bytes(&self) -> u64 {
        let free = u64::try_from(self.free.available_permits()).unwrap_or(u64::MAX);
        u64::from(self.total_kib).saturating_sub(free) * 1024
    }

    /// Multipart parts being sent to S3 now, by every upload.
    pub fn parts_in_flight(&self) -> usize {
        self.parts_in_flight.load(Ordering::Relaxed)
    }

    /// Counts one part in flight until the returned guard is dropped.
    pub(crate) fn part_in_flight(&self) -> PartInFlight {
        self.parts_in_flight.fetch_add(1, Ordering::Relaxed);
        PartInFlight(self.parts_in_flight.clone())
    }
}

/// One part counted in [`UploadMemory::parts_in_flight`] while it lives.
#[derive(Debug)]
pub(crate) struct PartInFlight(Arc<AtomicUsize>);

impl Drop for PartInFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn memory_taken_is_given_back_when_its_hold_is_dropped() {
        let memory = UploadMemory::new(10 * MIB);
        let hold = memory.try_take(8 * MIB).expect("free");

        assert!(memory.try_take(4 * MIB).is_none());
        assert_eq!(memory.held_bytes(), 8 * MIB);
        drop(hold);
        assert!(memory.try_take(4 * MIB).is_some());
    }

    #[test]
    fn spare_memory_is_taken_only_while_half_the_budget_stays_free() {
        let memory = UploadMemory::new(100 * MIB);
        let _admitted = memory.try_take(40 * MIB).expect("free");

        let _spare = memory.try_take_spare(10 * MIB).expect("half stays free");
        assert!(
            memory.try_take_spare(10 * MIB).is_none(),
            "the next would leave 40 MiB free of 100"
        );
        assert!(
            memory.try_take(10 * MIB).is_some(),
            "an admission still fits"
        );
    }

    #[test]
    fn no_budget_gives_nothing() {
        assert!(UploadMemory::none().try_take(1).is_none());
    }

    #[tokio::test]
    async fn memory_waited_for_is_taken_once_it_is_given_back_or_not_at_all() {
        let memory = UploadMemory::new(10 * MIB);
        let hold = memory.try_take(8 * MIB).expect("free");
        let wait = std::time::Duration::from_millis(50);

        assert!(memory.take_within(4 * MIB, wait).await.is_none());
        let waiting = memory.take_within(4 * MIB, std::time::Duration::from_secs(5));
        drop(hold);
        assert!(waiting.await.is_some());
    }
}
