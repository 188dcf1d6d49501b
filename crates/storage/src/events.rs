//! Events of a post's life, for webhooks: recorded in the post document by the same write
//! as the change they describe (an outbox that no crash can separate from its change),
//! then taken out one at a time, in order, by a dispatcher on any instance.
//!
//! A post's `outbox` holds its undelivered events, oldest first; `outbox_due_at` says
//! when its first one may be tried next. A dispatcher claims a post by moving
//! `outbox_due_at` past its lease, so one event of a post is in flight at a time, and an
//! instance that dies mid-delivery only delays it. Delivered, an event leaves the outbox;
//! out of attempts, it moves to `failed_events` for operators.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::ReturnDocument;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::error::StorageError;
use crate::model::{Attachment, PostId};
use crate::mongo::Mongo;
use crate::mongo::documents::{POSTS, PostDocument, PostStatus, now};
use crate::store::Storage;

/// Where events out of attempts are kept.
pub(crate) const FAILED_EVENTS: &str = "failed_events";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    PostCreated,
    PostUpdated,
    PostDeleted,
    AttachmentReady,
    AttachmentDeleted,
    AttachmentRejected,
}

impl EventKind {
    /// The event's `type`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PostCreated => "post.created",
            Self::PostUpdated => "post.updated",
            Self::PostDeleted => "post.deleted",
            Self::AttachmentReady => "attachment.ready",
            Self::AttachmentDeleted => "attachment.deleted",
            Self::AttachmentRejected => "attachment.rejected",
        }
    }
}

/// An outbox entry: the event's id, type, time and the resource it is about.
pub(crate) fn entry(kind: EventKind, at: DateTime, data: impl Into<Bson>) -> Document {
    doc! {
        "_id": format!("msg_{}", ObjectId::new().to_hex()),
        "type": kind.as_str(),
        "timestamp": at,
        "data": data.into(),
        "attempts": 0,
    }
}

/// A post as events show it.
pub(crate) fn post_data(post: &PostDocument) -> Document {
    doc! {
        "id": post.id,
        "title": &post.title,
        "body": &post.body,
        "author": post.author.as_deref(),
        "created_at": post.created_at,
        "updated_at": post.updated_at,
        "version": post.version,
    }
}

/// An attachment as events show it.
pub(crate) fn attachment_data(attachment: &Attachment) -> Document {
    let mut data = doc! {
        "id": attachment.id.0,
        "post_id": attachment.post_id.0,
        "filename": &attachment.filename,
        "content_type": &attachment.content_type,
        "size": i64::try_from(attachment.size).unwrap_or(i64::MAX),
        "sha256": &attachment.sha256,
        "created_at": DateTime::from_system_time(attachment.created_at),
    };
    if let Some(image) = &attachment.image {
        data.insert(
            "image",
            doc! { "width": image.width, "height": image.height, "blurhash": &image.blurhash },
        );
    }
    data
}

/// What a claim reads of a post: its first event.
#[derive(Debug, Deserialize)]
struct OutboxHead {
    #[serde(rename = "_id")]
    id: ObjectId,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    outbox: Vec<OutboxEntry>,
}

#[derive(Debug, Deserialize)]
struct OutboxEntry {
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: DateTime,
    data: Bson,
    #[serde(default)]
    attempts: i64,
}

#[derive(Debug, Deserialize)]
struct FailedEventDocument {
    #[serde(rename = "_id")]
    id: String,
    post_id: ObjectId,
    attempts: i64,
    last_error: String,
    failed_at: DateTime,
    body: String,
}

/// An event due for delivery, claimed by this instance until its lease ends.
#[derive(Clone, Debug)]
pub struct DueEvent {
    /// The event's id (`webhook-id`), the same on every attempt.
    pub id: String,
    /// The post whose outbox holds it.
    pub post_id: PostId,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When the change happened.
    pub timestamp: SystemTime,
    /// The JSON body: `{"type", "timestamp", "data"}`.
    pub body: Vec<u8>,
}

/// An event that ran out of attempts.
#[derive(Clone, Debug)]
pub struct FailedEvent {
    /// The event's id.
    pub id: String,
    /// The post it is about.
    pub post_id: PostId,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: String,
    /// When it was given up.
    pub failed_at: SystemTime,
    /// The event as it would have been delivered.
    pub body: Value,
}

impl Storage {
    /// The same storage, recording events with every change to a post or attachment.
    pub fn recording_events(self) -> Self {
        Self {
            events: Some(Arc::new(Notify::new())),
            ..self
        }
    }

    /// Whether changes record events.
    pub fn records_events(&self) -> bool {
        self.events.is_some()
    }

    /// Waits until this instance records an event (forever when events are off).
    pub async fn event_recorded(&self) {
        match &self.events {
            Some(notify) => notify.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Outbox entries for `events` at `at`, or none when events are off.
    pub(crate) fn outbox_entries(
        &self,
        at: DateTime,
        events: impl IntoIterator<Item = (EventKind, Document)>,
    ) -> Vec<Document> {
        if self.events.is_none() {
            return Vec::new();
        }
        events
            .into_iter()
            .map(|(kind, data)| entry(kind, at, data))
            .collect()
    }

    /// Adds to a post's `update` the recording of `entries` in its outbox.
    pub(crate) fn push_to_outbox(update: &mut Document, entries: Vec<Document>, at: DateTime) {
        if entries.is_empty() {
            return;
        }
        if !update.contains_key("$push") {
            update.insert("$push", Document::new());
        }
        let Ok(push) = update.get_document_mut("$push") else {
            return;
        };
        push.insert("outbox", doc! { "$each": entries });
        update.insert("$max", doc! { "outbox_due_at": at });
    }

    /// Wakes this instance's dispatcher after a write that recorded events.
    pub(crate) fn events_written(&self) {
        if let Some(notify) = &self.events {
            notify.notify_one();
        }
    }

    /// Records an event about `post_id` that changes nothing else (a refused upload).
    pub(crate) async fn record_event(
        &self,
        post_id: ObjectId,
        kind: EventKind,
        data: Document,
    ) -> Result<(), StorageError> {
        let at = now();
        let entries = self.outbox_entries(at, [(kind, data)]);
        if entries.is_empty() {
            return Ok(());
        }
        let mut update = Document::new();
        Self::push_to_outbox(&mut update, entries, at);
        self.posts()
            .update_one(doc! { "_id": post_id }, update)
            .await?;
        self.events_written();
        Ok(())
    }

    /// Claims the first event of a post whose outbox is due, for `lease`.
    pub async fn claim_due_event(&self, lease: Duration) -> Result<Option<DueEvent>, StorageError> {
        let posts = self.database.collection::<OutboxHead>(POSTS);
        let now = SystemTime::now();
        loop {
            let claimed = posts
                .find_one_and_update(
                    doc! { "outbox_due_at": { "$lte": DateTime::from_system_time(now) } },
                    doc! { "$set": { "outbox_due_at": DateTime::from_system_time(now + lease) } },
                )
                .projection(doc! { "status": 1, "outbox": { "$slice": 1 } })
                .return_document(ReturnDocument::After)
                .await?;
            let Some(post) = claimed else {
                return Ok(None);
            };
            if let Some(first) = post.outbox.into_iter().next() {
                return Ok(Some(due_event(post.id, first)));
            }
            // Emptied: nothing is due any more, unless an event came since the claim,
            // which is then due now rather than when the claim would have ended.
            let emptied = posts
                .update_one(
                    doc! { "_id": post.id, "outbox.0": { "$exists": false } },
                    doc! { "$unset": { "outbox_due_at": "" } },
                )
                .await?;
            if emptied.matched_count == 0 {
                posts
                    .update_one(
                        doc! { "_id": post.id },
                        doc! { "$set": { "outbox_due_at": DateTime::from_system_time(now) } },
                    )
                    .await?;
            }
        }
    }

    /// Removes a delivered event from its outbox; the post's next event is due now. A
    /// `deleting` post whose outbox is empty is then removed.
    pub async fn event_delivered(&self, event: &DueEvent) -> Result<(), StorageError> {
        self.take_first_event(event).await
    }

    /// Records a failed attempt; the event is tried again at `retry_at`.
    pub async fn retry_event_at(
        &self,
        event: &DueEvent,
        retry_at: SystemTime,
        error: &str,
    ) -> Result<(), StorageError> {
        self.database
            .collection::<Document>(POSTS)
            .update_one(
                doc! { "_id": event.post_id.0, "outbox.0._id": &event.id },
                doc! {
                    "$inc": { "outbox.0.attempts": 1 },
                    "$set": {
                        "outbox.0.last_error": error,
                        "outbox_due_at": DateTime::from_system_time(retry_at),
                    },
                },
            )
            .await?;
        Ok(())
    }

    /// Moves an event out of attempts to `failed_events`, and the post on to its next.
    pub async fn give_up_event(&self, event: &DueEvent, error: &str) -> Result<(), StorageError> {
        let failed = doc! {
            "post_id": event.post_id.0,
            "attempts": i64::from(event.attempts) + 1,
            "last_error": error,
            "failed_at": now(),
            "body": String::from_utf8_lossy(&event.body).into_owned(),
        };
        self.database
            .collection::<Document>(FAILED_EVENTS)
            .update_one(doc! { "_id": &event.id }, doc! { "$set": failed })
            .upsert(true)
            .await?;
        self.take_first_event(event).await
    }

    async fn take_first_event(&self, event: &DueEvent) -> Result<(), StorageError> {
        let taken = self
            .database
            .collection::<OutboxHead>(POSTS)
            .find_one_and_update(
                doc! { "_id": event.post_id.0, "outbox.0._id": &event.id },
                doc! { "$pop": { "outbox": -1 }, "$set": { "outbox_due_at": now() } },
            )
            .projection(doc! { "status": 1, "outbox": { "$slice": 1 } })
            .return_document(ReturnDocument::After)
            .await?;
        if taken.is_some_and(|post| {
            post.status.as_deref() == Some(PostStatus::Deleting.as_str()) && post.outbox.is_empty()
        }) {
            self.finish_post_deletion(event.post_id.0).await?;
        }
        Ok(())
    }
}

/// Events that ran out of attempts, most recent first (for operators: `posts-api
/// failed-events`).
pub async fn failed_events(mongo: &Mongo, limit: i64) -> Result<Vec<FailedEvent>, StorageError> {
    let documents: Vec<FailedEventDocument> = mongo
        .database()
        .collection::<FailedEventDocument>(FAILED_EVENTS)
        .find(doc! {})
        .sort(doc! { "failed_at": -1 })
        .limit(limit)
        .await?
        .try_collect()
        .await?;
    Ok(documents
        .into_iter()
        .map(|failed| FailedEvent {
            id: failed.id,
            post_id: PostId(failed.post_id),
            attempts: u32::try_from(failed.attempts).unwrap_or(u32::MAX),
            last_error: failed.last_error,
            failed_at: failed.failed_at.to_system_time(),
            body: serde_json::from_str(&failed.body).unwrap_or(Value::Null),
        })
        .collect())
}

/// The event at the head of a post's outbox, with its JSON body.
fn due_event(post_id: ObjectId, entry: OutboxEntry) -> DueEvent {
    let body = json!({
        "type": entry.kind,
        "timestamp": rfc3339(entry.timestamp),
        "data": json_of(&entry.data),
    });
    DueEvent {
        id: entry.id,
        post_id: PostId(post_id),
        attempts: u32::try_from(entry.attempts).unwrap_or(u32::MAX),
        timestamp: entry.timestamp.to_system_time(),
        body: body.to_string().into_bytes(),
    }
}

/// A time as RFC 3339 with milliseconds, as the API shows it.
fn rfc3339(at: DateTime) -> String {
    at.try_to_rfc3339_string()
        .unwrap_or_else(|_| at.timestamp_millis().to_string())
}

/// JSON for the BSON that events hold: ids as hex, times as RFC 3339.
fn json_of(value: &Bson) -> Value {
    match value {
        Bson::Document(document) => Value::Object(
            document
                .iter()
                .map(|(key, value)| (key.clone(), json_of(value)))
                .collect::<Map<String, Value>>(),
        ),
        Bson::Array(items) => Value::Array(items.iter().map(json_of).collect()),
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        Bson::DateTime(at) => Value::String(rfc3339(*at)),
        Bson::String(text) => Value::String(text.clone()),
        Bson::Int32(n) => Value::from(*n),
        Bson::Int64(n) => Value::from(*n),
        Bson::Double(n) => Value::from(*n),
        Bson::Boolean(b) => Value::Bool(*b),
        other => other.clone().into_relaxed_extjson(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_times_read_as_the_api_shows_them() {
        let id = ObjectId::new();
        let at = DateTime::from_millis(1_700_000_000_123);
        let value = json_of(&Bson::Document(
            doc! { "id": id, "at": at, "size": 8_i64, "author": Bson::Null },
        ));
        assert_eq!(
            value,
            json!({ "id": id.to_hex(), "at": "2023-11-14T22:13:20.123Z", "size": 8, "author": null })
        );
    }
}
