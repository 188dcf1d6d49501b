//! Black-box tests of the running service against the local testbed (`scripts/test`).

mod attachments;
mod auth;
mod browser;
mod conditional;
mod cors;
mod distant;
mod docs_examples;
mod events;
mod faults;
mod helpers;
mod images;
mod load;
mod openapi;
mod ops;
mod page;
mod posts;
mod quotas;
mod raw_uploads;
mod scanning;
mod security;
mod startup;
mod telemetry;
mod tus;
mod tus_client;
mod uploads;
mod variants;
