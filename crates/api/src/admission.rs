//! Admission of streamed uploads: a service-wide memory budget and a per-user limit, both
//! checked before a byte of the body is read. Each request reserves what it can hold: the
//! bytes it declares (with a little for its buffers; past one part, in whole parts, since
//! part buffers are reused whole), at most one upload's share ((parts in flight + 1) ×
//! part size), and that share when its length is unknown. A
//! request that does not fit is refused with `Retry-After`, so a burst of uploads turns
//! into retries instead of an out-of-memory kill of every request in flight. An upload that
//! S3 takes faster with more parts at once may grow into the free half of the same budget
//! (see [`storage::UploadMemory`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use storage::{MemoryHold, UploadMemory};

use crate::config::Settings;

/// Why an upload was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The service's upload memory is taken: 503.
    ServiceBusy,
    /// This user already has their share of uploads in flight: 429.
    UserBusy,
}

type InFlight = Arc<Mutex<HashMap<String, usize>>>;

/// What any admitted request holds beside its body: the HTTP and multipart buffers.
const REQUEST_OVERHEAD_BYTES: u64 = 64 * 1024;

/// The budget, shared by every worker.
#[derive(Debug)]
pub struct Admission {
    memory: UploadMemory,
    per_request_bytes: u64,
    part_size: u64,
    per_user: usize,
    in_flight: InFlight,
}

/// An admitted upload; its memory and its user's slot are given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    _memory: MemoryHold,
    _slot: Option<UserSlot>,
}

/// One of a user's uploads in flight, counted until dropped.
#[derive(Debug)]
struct UserSlot {
    user: String,
    in_flight: InFlight,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = in_flight.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                in_flight.remove(&self.user);
            }
        }
    }
}

impl Admission {
    /// Admission into `memory`, the budget of `settings.admission`.
    pub fn new(settings: &Settings, memory: UploadMemory) -> Self {
        Self {
            per_request_bytes: settings
                .upload_memory_per_request()
                .min(memory.total_bytes()),
            memory,
            part_size: settings.s3.part_size_bytes,
            per_user: settings.admission.uploads_per_user.get() as usize,
            in_flight: Arc::default(),
        }
    }

    /// Admits one upload of `user` (`None` while authentication is off) that holds at
    /// most `holds_at_most` bytes of body (`None`: unknown), or says why not.
    pub fn admit(&self, user: Option<&str>, holds_at_most: Option<u64>) -> Result<Ticket, Refusal> {
        let slot = user.map(|user| self.take_slot(user)).transpose()?;
        let reserved = holds_at_most.map_or(self.per_request_bytes, |bytes| {
            let buffers = if bytes > self.part_size {
                bytes
                    .div_ceil(self.part_size)
                    .saturating_mul(self.part_size)
            } else {
                bytes
            };
            buffers
                .saturating_add(REQUEST_OVERHEAD_BYTES)
                .min(self.per_request_bytes)
        });
        let memory = self.memory.try_take(reserved).ok_or(Refusal::ServiceBusy)?;
        Ok(Ticket {
            _memory: memory,
            _slot: slot,
        })
    }

    fn take_slot(&self, user: &str) -> Result<UserSlot, Refusal> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = in_flight.entry(user.to_owned()).or_default();
        if *count >= self.per_user {
            return Err(Refusal::UserBusy);
        }
        *count += 1;
        Ok(UserSlot {
            user: user.to_owned(),
            in_flight: self.in_flight.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(budget_uploads: u64, per_user: u32) -> Admission {
        let per_request_bytes = 24 * 1024 * 1024;
        Admission {
            memory: UploadMemory::new(budget_uploads * per_request_bytes),
            per_request_bytes,
            part_size: 8 * 1024 * 1024,
            per_user: per_user as usize,
            in_flight: Arc::default(),
        }
    }

    #[test]
    fn uploads_beyond_the_memory_budget_are_refused_until_one_ends() {
        let admission = admission(2, 10);
        let first = admission.admit(None, None).expect("first");
        let _second = admission.admit(None, None).expect("second");

        assert_eq!(
            admission.admit(None, None).err(),
            Some(Refusal::ServiceBusy)
        );
        drop(first);
        assert!(admission.admit(None, None).is_ok());
    }

    #[test]
    fn a_user_beyond_their_share_is_refused_and_others_are_not() {
        let admission = admission(10, 2);
        let _one = admission.admit(Some("ann"), None).expect("one");
        let two = admission.admit(Some("ann"), None).expect("two");

        assert_eq!(
            admission.admit(Some("ann"), None).err(),
            Some(Refusal::UserBusy)
        );
        assert!(admission.admit(Some("bob"), None).is_ok());
        drop(two);
        assert!(admission.admit(Some("ann"), None).is_ok());
    }

    #[test]
    fn a_small_upload_reserves_its_length_and_an_unknown_one_a_whole_share() {
        let admission = admission(1, 100);
        let small: Vec<Ticket> = (0..100)
            .map(|_| admission.admit(None, Some(8 * 1024)).expect("small"))
            .collect();

        assert_eq!(
            admission.admit(None, None).err(),
            Some(Refusal::ServiceBusy),
            "an unknown length needs a whole share"
        );
        drop(small);
        let _whole = admission.admit(None, None).expect("whole");
        assert_eq!(
            admission.admit(None, Some(8 * 1024)).err(),
            Some(Refusal::ServiceBusy)
        );
    }

    #[test]
    fn a_length_past_one_part_reserves_whole_parts() {
        let admission = admission(3, 10);
        let twenty_mib = Some(20 * 1024 * 1024);
        let _uploads: Vec<Ticket> = (0..3)
            .map(|_| admission.admit(None, twenty_mib).expect("fits in 24 MiB"))
            .collect();

        assert_eq!(
            admission.admit(None, Some(1024)).err(),
            Some(Refusal::ServiceBusy),
            "three 20 MiB uploads hold three parts each"
        );
    }

    #[test]
    fn a_declared_length_beyond_a_share_reserves_only_the_share() {
        let admission = admission(2, 10);
        let _first = admission.admit(None, Some(u64::MAX)).expect("first");

        assert!(admission.admit(None, Some(1 << 40)).is_ok());
    }

    #[test]
    fn a_refusal_for_memory_gives_the_users_slot_back() {
        let admission = admission(1, 1);
        let held = admission.admit(Some("ann"), None).expect("held");

        assert_eq!(
            admission.admit(Some("bob"), None).err(),
            Some(Refusal::ServiceBusy)
        );
        drop(held);
        assert!(
            admission.admit(Some("bob"), None).is_ok(),
            "bob's refused attempt left no slot taken"
        );
    }
}
