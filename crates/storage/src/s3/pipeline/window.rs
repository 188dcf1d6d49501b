//! How many parts one upload keeps in flight: the parts it was admitted with, and more while
//! S3 takes them faster, as far as `s3.parts_in_flight_ceiling` and spare upload memory go.
//!
//! A part's upload is bounded by one connection's throughput (tens of MB/s to a distant
//! region), so a distant S3 is filled only by several parts at once; on loopback, or behind
//! a slow client, one more part is only more memory. The window therefore grows by
//! measurement, as a sender probes for bandwidth: each time the sender waits for S3 after a
//! whole round of parts at the current window, the round's throughput is compared with the
//! round before. While it rises by [`GAIN`], the window doubles, each part's memory taken
//! from the free half of the budget only; once it stops rising, the parts of the last step
//! are given back and the window stays. The size it stays at is remembered for the bucket,
//! and the next upload starts there (memory allowing), so that only the first upload of an
//! instance pays for the ramp.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::memory::{MemoryHold, UploadMemory};

/// How much faster a round must go than the one before it for the window to grow again.
const GAIN: f64 = 1.1;

/// Parts in flight for one upload, and the memory it took beyond its admission.
#[derive(Debug)]
pub(crate) struct PartWindow {
    admitted: usize,
    ceiling: usize,
    part_bytes: u64,
    memory: UploadMemory,
    extra: Vec<MemoryHold>,
    /// Parts the last step added.
    last_step: usize,
    round: Round,
    last_rate: Option<f64>,
    settled: bool,
    /// The size the last window of this bucket settled at.
    learned: Arc<AtomicUsize>,
}

/// Parts confirmed since the window last changed.
#[derive(Debug)]
struct Round {
    started: Instant,
    parts: usize,
    bytes: u64,
}

impl Round {
    fn new(started: Instant) -> Self {
        Self {
            started,
            parts: 0,
            bytes: 0,
        }
    }
}

impl PartWindow {
    /// A window of `admitted` parts of `part_bytes`, growing up to `ceiling` with memory
    /// from `memory`; it starts at the size `learned` holds, as far as memory allows.
    pub(crate) fn new(
        admitted: usize,
        ceiling: usize,
        part_bytes: u64,
        memory: UploadMemory,
        learned: Arc<AtomicUsize>,
        now: Instant,
    ) -> Self {
        let admitted = admitted.max(1);
        let mut window = Self {
            admitted,
            ceiling: ceiling.max(admitted),
            part_bytes,
            memory,
            extra: Vec::new(),
            last_step: 0,
            round: Round::new(now),
            last_rate: None,
            settled: false,
            learned,
        };
        let start = window.learned.load(Ordering::Relaxed).min(window.ceiling);
        window.take_spare_parts(start.saturating_sub(admitted));
        window
    }

    /// Takes up to `parts` more parts' memory from the free half of the budget; how many.
    fn take_spare_parts(&mut self, parts: usize) -> usize {
        let before = self.extra.len();
        while self.extra.len() - before < parts {
            match self.memory.try_take_spare(self.part_bytes) {
                Some(hold) => self.extra.push(hold),
                None => break,
            }
        }
        self.extra.len() - before
    }

    /// Stays at the current size from now on, and remembers it for the next upload.
    fn settle(&mut self) {
        self.settled = true;
        self.learned.store(self.size(), Ordering::Relaxed);
        tracing::debug!(parts = self.size(), "parts in flight settled");
    }

    /// Parts that may be in flight now.
    pub(crate) fn size(&self) -> usize {
        self.admitted + self.extra.len()
    }

    /// S3 confirmed a part of `bytes`.
    pub(crate) fn confirmed(&mut self, bytes: u64) {
        self.round.parts += 1;
        self.round.bytes += bytes;
    }

    /// The sender waits for S3 with the window full: after a whole round at this window,
    /// doubles it if the round went faster than the one before, else gives the last step's
    /// parts back and stays.
    pub(crate) fn on_full(&mut self, now: Instant) {
        if self.settled || self.round.parts < self.size() {
            return;
        }
        let elapsed = now.saturating_duration_since(self.round.started);
        if elapsed.is_zero() {
            return;
        }
        let rate = self.round.bytes as f64 / elapsed.as_secs_f64();
        if self.last_rate.is_some_and(|last| rate < last * GAIN) {
            let kept = self.extra.len() - self.last_step;
            self.extra.truncate(kept);
            self.settle();
            return;
        }
        if self.size() >= self.ceiling {
            self.settle();
            return;
        }
        let taken = self.take_spare_parts(self.size().min(self.ceiling - self.size()));
        // Without spare memory the window stays as it is, and asks again next time.
        if taken > 0 {
            self.last_step = taken;
            self.last_rate = Some(rate);
            self.round = Round::new(now);
            tracing::debug!(
                parts = self.size(),
                bytes_per_sec = rate,
                "parts in flight grown"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const PART: u64 = 8 * 1024 * 1024;

    /// An S3 whose connections each carry `per_part` bytes a second, `total` at most.
    struct DistantS3 {
        per_part: f64,
        total: f64,
    }

    impl DistantS3 {
        /// Runs `rounds` rounds of a sender that always waits for S3; the window after each.
        fn drive(&self, window: &mut PartWindow, rounds: usize) -> Vec<usize> {
            let mut now = Instant::now();
            let mut sizes = Vec::new();
            for _ in 0..rounds {
                let parts = window.size();
                let rate = (self.per_part * parts as f64).min(self.total);
                for _ in 0..parts {
                    window.confirmed(PART);
                }
                now += Duration::from_secs_f64(PART as f64 * parts as f64 / rate);
                window.on_full(now);
                sizes.push(window.size());
            }
            sizes
        }
    }

    fn window(ceiling: usize, memory: &UploadMemory) -> PartWindow {
        PartWindow::new(
            2,
            ceiling,
            PART,
            memory.clone(),
            Arc::default(),
            Instant::now(),
        )
    }

    #[test]
    fn the_window_doubles_while_s3_goes_faster_and_gives_back_the_step_that_did_not_help() {
        let memory = UploadMemory::new(1 << 30);
        let s3 = DistantS3 {
            per_part: 40e6,
            total: 200e6,
        };
        let mut window = window(16, &memory);

        let sizes = s3.drive(&mut window, 6);

        assert_eq!(sizes, [4, 8, 16, 8, 8, 8]);
        assert_eq!(memory.held_bytes(), 6 * PART);
    }

    #[test]
    fn the_window_stays_at_the_admitted_parts_when_s3_goes_no_faster() {
        let memory = UploadMemory::new(1 << 30);
        let s3 = DistantS3 {
            per_part: 40e6,
            total: 80e6,
        };
        let mut window = window(16, &memory);

        let sizes = s3.drive(&mut window, 5);

        assert_eq!(sizes, [4, 2, 2, 2, 2]);
        assert_eq!(memory.held_bytes(), 0);
    }

    #[test]
    fn the_window_never_passes_its_ceiling() {
        let memory = UploadMemory::new(1 << 30);
        let s3 = DistantS3 {
            per_part: 40e6,
            total: 1e12,
        };
        let mut window = window(6, &memory);

        assert_eq!(s3.drive(&mut window, 4), [4, 6, 6, 6]);
    }

    #[test]
    fn the_window_takes_no_memory_from_the_half_of_the_budget_new_uploads_need() {
        let memory = UploadMemory::new(4 * PART);
        let _admitted = memory.try_take(2 * PART).expect("free");
        let s3 = DistantS3 {
            per_part: 40e6,
            total: 1e12,
        };
        let mut window = window(16, &memory);

        assert_eq!(s3.drive(&mut window, 3), [2, 2, 2]);
    }

    #[test]
    fn the_next_window_starts_where_the_last_one_settled_and_probes_from_there() {
        let memory = UploadMemory::new(1 << 30);
        let s3 = DistantS3 {
            per_part: 40e6,
            total: 200e6,
        };
        let learned = Arc::new(AtomicUsize::new(0));
        let mut first =
            PartWindow::new(2, 16, PART, memory.clone(), learned.clone(), Instant::now());
        s3.drive(&mut first, 4);
        drop(first);

        let mut next = PartWindow::new(2, 16, PART, memory.clone(), learned, Instant::now());

        assert_eq!(next.size(), 8);
        assert_eq!(s3.drive(&mut next, 3), [16, 8, 8]);
    }

    #[test]
    fn a_sender_that_waits_before_a_whole_round_does_not_change_the_window() {
        let memory = UploadMemory::new(1 << 30);
        let mut window = window(16, &memory);
        window.confirmed(PART);

        window.on_full(Instant::now() + Duration::from_secs(1));

        assert_eq!(window.size(), 2);
    }
}
