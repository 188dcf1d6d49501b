//! The storage crate against the testbed: SecantusDB and lax moto over real sockets.
//! Run through `scripts/test`.

mod attachments;
mod migrations;
mod objects;
mod posts;
mod reaper;
mod resumable;
mod support;
mod variants;
