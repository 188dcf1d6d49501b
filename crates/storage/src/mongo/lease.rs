//! Leases: one holder at a time for work that instances must not do twice at once (the
//! reaper, migrations). A lease is a document in `_leases` that expires by itself, so a
//! killed holder blocks the others only until then.

use std::time::{Duration, SystemTime};

use mongodb::Database;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::ReturnDocument;

use crate::error::is_duplicate_key;

const LEASES: &str = "_leases";

/// Takes the lease `name` for `holder` until `ttl` from now, if it is free, expired or
/// already ours. Returns whether we hold it.
pub(crate) async fn acquire(
    database: &Database,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, mongodb::error::Error> {
    let now = SystemTime::now();
    let expires_at = DateTime::from_system_time(now + ttl);
    let result = database
        .collection::<Document>(LEASES)
        .find_one_and_update(
            doc! {
                "_id": name,
                "$or": [
                    { "expires_at": { "$lte": DateTime::from_system_time(now) } },
                    { "holder": holder },
                ],
            },
            doc! { "$set": { "holder": holder, "expires_at": expires_at } },
        )
        .upsert(true)
        .return_document(ReturnDocument::After)
        .await;
    match result {
        Ok(lease) => Ok(lease.is_some()),
        // Someone else holds it: the filter missed and the upsert hit their `_id`.
        Err(error) if is_duplicate_key(&error) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Gives the lease up, if we hold it.
pub(crate) async fn release(
    database: &Database,
    name: &str,
    holder: &str,
) -> Result<(), mongodb::error::Error> {
    database
        .collection::<Document>(LEASES)
        .delete_one(doc! { "_id": name, "holder": holder })
        .await
        .map(drop)
}

/// A fresh holder name for this process and purpose.
pub(crate) fn holder_name(purpose: &str) -> String {
    format!(
        "{purpose}-{}-{}",
        std::process::id(),
        mongodb::bson::oid::ObjectId::new()
    )
}
