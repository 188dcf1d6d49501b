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
