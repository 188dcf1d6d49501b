//! posts-api persistence: post and attachment metadata in MongoDB, attachment bytes in S3.
//!
//! Knows nothing of HTTP. The S3 client signs with whatever credentials provider it is
//! given; the service gives it the shared, refreshing temporary credentials.

mod migrations;
mod mongo;
mod objects;

pub use crate::migrations::{MigrationError, run_migrations};
pub use crate::mongo::{Mongo, MongoError, MongoSettings};
pub use crate::objects::{ObjectStore, ObjectStoreError, S3Settings};
