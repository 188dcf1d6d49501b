//! Ordered, versioned schema changes from `migrations/`, applied once each and recorded in
//! the `_migrations` collection with a checksum of the file that was applied.

use std::time::{Duration, Instant};

use mongodb::Database;
use mongodb::bson::{self, Document, doc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::mongo::lease;

/// The migrations in the order they apply; the name is the file name without `.json`.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_posts_indexes",
        include_str!("../../../../migrations/0001_posts_indexes.json"),
    ),
    (
        "0002_attachments_indexes",
        include_str!("../../../../migrations/0002_attachments_indexes.json"),
    ),
    (
        "0003_validators",
        include_str!("../../../../migrations/0003_validators.json"),
    ),
    (
        "0004_attachment_summaries",
        include_str!("../../../../migrations/0004_attachment_summaries.json"),
    ),
    (
        "0005_upload_reservations",
        include_str!("../../../../migrations/0005_upload_reservations.json"),
    ),
    (
        "0006_event_outbox",
        include_str!("../../../../migrations/0006_event_outbox.json"),
    ),
    (
        "0007_usage",
        include_str!("../../../../migrations/0007_usage.json"),
    ),
    (
        "0008_rejections",
        include_str!("../../../../migrations/0008_rejections.json"),
    ),
    (
        "0009_drop_posts_created_at_index",
        include_str!("../../../../migrations/0009_drop_posts_created_at_index.json"),
    ),
    (
        "0010_posts_author_index",
        include_str!("../../../../migrations/0010_posts_author_index.json"),
    ),
];

const RECORDS: &str = "_migrations";

/// A migration file: database commands run in order.
#[derive(Deserialize)]
struct MigrationFile {
    commands: Vec<serde_json::Value>,
}

/// Why migrations could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// A migration file is not valid.
    #[error("migration {name} is malformed: {detail}")]
    Malformed {
        /// Migration name.
        name: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// An applied migration's file was changed afterwards.
    #[error(
        "migration {name} was applied with checksum {applied} but the file now has {current}; never edit an applied migration, add a new one"
    )]
    Changed {
        /// Migration name.
        name: &'static str,
        /// Checksum recorded when it was applied.
        applied: String,
        /// Checksum of the file now.
        current: String,
    },
    /// Another instance kept the migrations lease for too long.
    #[error("another instance has been applying migrations for over a minute")]
    Busy,
    /// MongoDB rejected a command.
    #[error("migration {name} failed: {source}")]
    Database {
        /// Migration name.
        name: &'static str,
        /// The driver's error.
        #[source]
        source: mongodb::error::Error,
    },
}

/// How long one instance may hold the migrations lease.
const LEASE_TTL: Duration = Duration::from_secs(60);

/// Applies the migrations not yet recorded; returns how many were applied. Instances
/// starting together take turns through a lease, so each migration applies once.
pub async fn run_migrations(database: &Database) -> Result<usize, MigrationError> {
    let holder = lease::holder_name("migrations");
    let waiting_since = Instant::now();
    loop {
        match lease::acquire(database, "migrations", &holder, LEASE_TTL).await {
            Ok(true) => break,
            Ok(false) if waiting_since.elapsed() < LEASE_TTL => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(false) => return Err(MigrationError::Busy),
            Err(source) => {
                return Err(MigrationError::Database {
                    name: "lease",
                    source,
                });
            }
        }
    }
    let applied = apply_pending(database).await;
    if let Err(error) = lease::release(database, "migrations", &holder).await {
        tracing::warn!(%error, "could not release the migrations lease; it expires by itself");
    }
    applied
}

async fn apply_pending(database: &Database) -> Result<usize, MigrationError> {
    let records = database.collection::<Document>(RECORDS);
    let mut applied = 0;
    for &(name, text) in MIGRATIONS {
        let checksum = hex::encode(Sha256::digest(text.as_bytes()));
        let database_error = |source| MigrationError::Database { name, source };
        if let Some(record) = records
            .find_one(doc! { "_id": name })
            .await
            .map_err(database_error)?
        {
            let recorded = record.get_str("checksum").unwrap_or_default();
            if recorded != checksum {
                return Err(MigrationError::Changed {
                    name,
                    applied: recorded.to_owned(),
                    current: checksum,
                });
            }
            continue;
        }
        for command in parse(name, text)? {
            database
                .run_command(command)
                .await
                .map_err(database_error)?;
        }
        records
            .insert_one(
                doc! { "_id": name, "checksum": &checksum, "applied_at": bson::DateTime::now() },
            )
            .await
            .map_err(database_error)?;
        tracing::info!(migration = name, "applied migration");
        applied += 1;
    }
    Ok(applied)
}

fn parse(name: &'static str, text: &str) -> Result<Vec<Document>, MigrationError> {
    let malformed = |detail: String| MigrationError::Malformed { name, detail };
    let file: MigrationFile =
        serde_json::from_str(text).map_err(|error| malformed(error.to_string()))?;
    file.commands
        .into_iter()
        .map(|command| bson::to_document(&command).map_err(|error| malformed(error.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_parses() {
        for &(name, text) in MIGRATIONS {
            assert!(parse(name, text).is_ok(), "{name} does not parse");
        }
    }

    #[test]
    fn every_file_in_the_migrations_directory_is_applied() {
        let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let mut files: Vec<String> = std::fs::read_dir(directory)
            .expect("migrations/")
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".json").map(str::to_owned)
            })
            .collect();
        files.sort();
        let applied: Vec<&str> = MIGRATIONS.iter().map(|&(name, _)| name).collect();

        assert_eq!(files, applied);
    }

    #[test]
    fn migrations_are_in_name_order() {
        let names: Vec<_> = MIGRATIONS.iter().map(|(name, _)| *name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }
}
