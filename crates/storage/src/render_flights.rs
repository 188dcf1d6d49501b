//! Single flight for renders: one render of a variant at a time on an instance, the other
//! requests for it waiting on its lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use mongodb::bson::oid::ObjectId;

/// The lock one render of a variant holds; the requests that find it held wait for it.
type RenderLock = tokio::sync::Mutex<()>;

/// The renders running on this instance, one per attachment and variant.
#[derive(Debug, Default)]
pub(crate) struct RenderFlights {
    running: Mutex<HashMap<(ObjectId, String), Weak<RenderLock>>>,
}

impl RenderFlights {
    /// The lock that one render of `name` of attachment `id` holds.
    pub(crate) fn lock_for(&self, id: ObjectId, name: &str) -> Arc<RenderLock> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        running.retain(|_, lock| lock.strong_count() > 0);
        let key = (id, name.to_owned());
        if let Some(lock) = running.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(RenderLock::new(()));
        running.insert(key, Arc::downgrade(&lock));
        lock
    }
}
