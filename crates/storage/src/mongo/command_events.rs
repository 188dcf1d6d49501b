//! What the service sees of the commands the MongoDB driver sends: a count of each by
//! name (every round trip to the server, for metrics), and, for traces, a span for each:
//! opened when the driver reports the command started, closed when it reports the answer.
//! The driver reports both from the task that awaits the operation, so each span is a
//! child of the caller's span (the request's). Named as OpenTelemetry names database
//! calls: `find posts`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use mongodb::event::EventHandler;
use mongodb::event::command::CommandEvent;
use tracing::Span;

/// Commands started, by name, over every client that shares the handler.
pub(crate) type CommandCounts = Arc<Mutex<BTreeMap<String, u64>>>;

/// The handler to put in the client's `command_event_handler`: counts into `counts`, and
/// opens spans when `spans`.
pub(crate) fn handler(counts: CommandCounts, spans: bool) -> EventHandler<CommandEvent> {
    let open: Arc<Mutex<HashMap<i32, Span>>> = Arc::default();
    EventHandler::callback(move |event| {
        if let CommandEvent::Started(started) = &event {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            match counts.get_mut(&started.command_name) {
                Some(count) => *count += 1,
                None => {
                    counts.insert(started.command_name.clone(), 1);
                }
            }
        }
        if !spans {
            return;
        }
        let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            CommandEvent::Started(started) => {
                // The collection is the value of the command's first field, as in
                // `{"find": "posts", ...}`.
                let collection = started
                    .command
                    .iter()
                    .next()
                    .and_then(|(_, value)| value.as_str())
                    .unwrap_or_default()
                    .to_owned();
                let span = tracing::info_span!(
                    "mongodb",
                    otel.name = %format_args!("{} {collection}", started.command_name),
                    otel.kind = "client",
                    db.system.name = "mongodb",
                    db.namespace = %started.db,
                    db.operation.name = %started.command_name,
                    db.collection.name = %collection,
                    otel.status_code = tracing::field::Empty,
                );
                open.insert(started.request_id, span);
            }
            CommandEvent::Succeeded(succeeded) => {
                open.remove(&succeeded.request_id);
            }
            CommandEvent::Failed(failed) => {
                if let Some(span) = open.remove(&failed.request_id) {
                    span.record("otel.status_code", "ERROR");
                }
            }
            _ => {}
        }
    })
}
