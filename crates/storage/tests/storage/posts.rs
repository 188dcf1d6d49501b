//! Posts: CRUD, optimistic concurrency, pagination, deletes with their objects.

use bytes::Bytes;
use mongodb::bson::doc;
use storage::{NewPost, PostChanges, StorageError};

use crate::support::{harness, stream_of};

fn new_post(title: &str) -> NewPost {
    NewPost {
        title: title.into(),
        body: "body".into(),
        author: None,
    }
}

#[tokio::test]
async fn a_created_post_reads_back() {
    let h = harness().await;

    let created = h
        .storage
        .create_post(new_post("hello"))
        .await
        .expect("create");
    let read = h.storage.post(created.id).await.expect("read");

    assert_eq!(read, created);
    assert_eq!(read.version, 1);
}

#[tokio::test]
async fn an_update_changes_fields_and_bumps_the_version() {
    let h = harness().await;
    let created = h
        .storage
        .create_post(new_post("before"))
        .await
        .expect("create");

    let updated = h
        .storage
        .update_post(
            created.id,
            PostChanges {
                title: Some("after".into()),
                body: None,
            },
            Some(&[1]),
        )
        .await
        .expect("update");

    assert_eq!(updated.title, "after");
    assert_eq!(updated.body, "body");
    assert_eq!(updated.version, 2);
}

#[tokio::test]
async fn an_update_at_a_stale_version_is_refused() {
    let h = harness().await;
    let created = h.storage.create_post(new_post("p")).await.expect("create");
    h.storage
        .update_post(created.id, PostChanges::default(), Some(&[1]))
        .await
        .expect("first update");

    let stale = h
        .storage
        .update_post(created.id, PostChanges::default(), Some(&[1]))
        .await;

    assert!(
        matches!(stale, Err(StorageError::StaleVersion)),
        "{stale:?}"
    );
}

#[tokio::test]
async fn pages_are_newest_first_and_stable_under_inserts() {
    let h = harness().await;
    let mut titles = Vec::new();
    for i in 0..7 {
        titles.push(format!("post {i}"));
        h.storage
            .create_post(new_post(&titles[i]))
            .await
            .expect("create");
    }

    let first = h.storage.list_posts(3, None).await.expect("page 1");
    for i in 0..3 {
        h.storage
            .create_post(new_post(&format!("newer {i}")))
            .await
            .expect("insert between pages");
    }
    let second = h
        .storage
        .list_posts(3, first.next_cursor.as_deref())
        .await
        .expect("page 2");
    let third = h
        .storage
        .list_posts(3, second.next_cursor.as_deref())
        .await
        .expect("page 3");

    let seen: Vec<_> = [first.items, second.items, third.items]
        .into_iter()
        .flatten()
        .map(|post| post.title)
        .collect();
    let expected: Vec<_> = titles.iter().rev().cloned().collect();
    assert_eq!(seen, expected);
    assert!(third.next_cursor.is_none());
}

#[tokio::test]
async fn a_forged_cursor_is_rejected() {
    let h = harness().await;

    let result = h.storage.list_posts(3, Some("not-a-cursor")).await;

    assert!(
        matches!(result, Err(StorageError::InvalidCursor)),
        "{result:?}"
    );
}

#[tokio::test]
async fn deleting_a_post_removes_its_attachments_objects() {
    let h = harness().await;
    let post = h.post().await;
    for name in ["a.txt", "b.txt"] {
        h.storage
            .upload_attachment(
                post,
                None,
                name,
                None,
                stream_of(vec![Bytes::from_static(b"content")]),
            )
            .await
            .expect("upload");
    }
    assert_eq!(h.stored.object_keys().await.len(), 2);

    h.storage.delete_post(post).await.expect("delete");

    h.stored.assert_nothing_stored().await;
    assert!(matches!(
        h.storage.post(post).await,
        Err(StorageError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_duplicate_key_is_a_conflict() {
    let h = harness().await;
    let scratch = h
        .mongo
        .database()
        .collection::<mongodb::bson::Document>("scratch");
    scratch
        .insert_one(doc! { "_id": 1 })
        .await
        .expect("first insert");

    let duplicate = scratch
        .insert_one(doc! { "_id": 1 })
        .await
        .expect_err("11000");

    assert!(matches!(
        StorageError::from(duplicate),
        StorageError::Conflict(_)
    ));
}

#[tokio::test]
async fn a_client_on_another_runtime_reads_what_the_shared_one_wrote() {
    let h = harness().await;
    let created = h
        .storage
        .create_post(new_post("shared"))
        .await
        .expect("create");
    let (storage, mongo) = (h.storage.clone(), h.mongo.clone());

    // An HTTP worker: a thread with a single-threaded runtime of its own.
    let read = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let local = storage.with_mongo(&mongo.on_this_runtime().expect("client"));
                local.post(created.id).await
            })
    })
    .join()
    .expect("worker thread");

    assert_eq!(read.expect("read").title, "shared");
}
