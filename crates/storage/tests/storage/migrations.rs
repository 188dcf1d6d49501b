//! Migrations: applied once, recorded, safe to run concurrently and again.

use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use secrecy::SecretString;
use storage::{Mongo, MongoSettings};

use test_support::testbed;

async fn fresh_database() -> Mongo {
    Mongo::connect(&MongoSettings {
        uri: SecretString::from(testbed("MONGODB_URI")),
        database: format!("test_{}", uuid::Uuid::new_v4().simple()),
        server_selection_timeout_ms: 5000,
    })
    .await
    .expect("MongoDB answers")
}

#[tokio::test]
async fn two_instances_migrating_together_apply_each_migration_once() {
    let mongo = fresh_database().await;

    let (first, second) = tokio::join!(
        storage::run_migrations(mongo.database()),
        storage::run_migrations(mongo.database()),
    );

    let applied = first.expect("first runner") + second.expect("second runner");
    let records: Vec<Document> = mongo
        .database()
        .collection::<Document>("_migrations")
        .find(doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("records");
    assert_eq!(applied, records.len());
    assert!(records.len() >= 3);
}

#[tokio::test]
async fn running_migrations_again_is_a_no_op() {
    let mongo = fresh_database().await;
    storage::run_migrations(mongo.database())
        .await
        .expect("first run");

    let again = storage::run_migrations(mongo.database())
        .await
        .expect("second run");

    assert_eq!(again, 0);
}

#[tokio::test]
async fn a_changed_applied_migration_is_an_error() {
    let mongo = fresh_database().await;
    storage::run_migrations(mongo.database())
        .await
        .expect("first run");
    mongo
        .database()
        .collection::<Document>("_migrations")
        .update_one(
            doc! { "_id": "0001_posts_indexes" },
            doc! { "$set": { "checksum": "edited" } },
        )
        .await
        .expect("tamper");

    let result = storage::run_migrations(mongo.database()).await;

    assert!(
        matches!(result, Err(storage::MigrationError::Changed { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn documents_of_the_wrong_shape_are_rejected_by_the_validators() {
    let mongo = fresh_database().await;
    storage::run_migrations(mongo.database())
        .await
        .expect("migrate");

    let result = mongo
        .database()
        .collection::<Document>("posts")
        .insert_one(doc! { "title": "" })
        .await;

    assert!(result.is_err());
}

#[tokio::test]
async fn posts_stored_before_attachment_lists_get_their_ready_attachments_listed() {
    let mongo = fresh_database().await;
    storage::run_migrations(mongo.database())
        .await
        .expect("migrate");
    let database = mongo.database();
    let post_id = mongodb::bson::oid::ObjectId::new();
    let now = mongodb::bson::DateTime::now();
    let later = mongodb::bson::DateTime::from_millis(now.timestamp_millis() + 1000);
    database
        .collection::<Document>("posts")
        .insert_one(doc! {
            "_id": post_id, "title": "old", "body": "", "author": null, "status": "active",
            "created_at": now, "updated_at": now, "version": 1_i64,
        })
        .await
        .expect("an old post");
    let record = |id, status: &str, created_at| {
        doc! {
            "_id": id, "post_id": post_id, "filename": "a.txt", "content_type": "text/plain",
            "size": 1_i64, "sha256": "00", "status": status,
            "created_at": created_at, "updated_at": created_at,
        }
    };
    let (first, second, pending) = (
        mongodb::bson::oid::ObjectId::new(),
        mongodb::bson::oid::ObjectId::new(),
        mongodb::bson::oid::ObjectId::new(),
    );
    database
        .collection::<Document>("attachments")
        .insert_many([
            record(second, "ready", later),
            record(pending, "pending", now),
            record(first, "ready", now),
        ])
        .await
        .expect("its attachments");
    database
        .collection::<Document>("_migrations")
        .delete_one(doc! { "_id": "0004_attachment_summaries" })
        .await
        .expect("forget the migration");

    storage::run_migrations(database)
        .await
        .expect("migrate again");

    let post = database
        .collection::<Document>("posts")
        .find_one(doc! { "_id": post_id })
        .await
        .expect("find")
        .expect("the post");
    let listed: Vec<_> = post
        .get_array("attachments")
        .expect("a list")
        .iter()
        .filter_map(|summary| summary.as_document()?.get_object_id("_id").ok())
        .collect();
    assert_eq!(listed, vec![first, second], "ready ones, oldest first");
}

#[tokio::test]
async fn the_reaper_finds_expired_upload_reservations_through_an_index() {
    let mongo = fresh_database().await;

    storage::run_migrations(mongo.database())
        .await
        .expect("migrations");

    let names: Vec<String> = mongo
        .database()
        .collection::<Document>("posts")
        .list_index_names()
        .await
        .expect("indexes");
    assert!(
        names.iter().any(|name| name == "pending_expires_at"),
        "{names:?}"
    );
}
