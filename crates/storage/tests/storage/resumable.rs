//! Resumable uploads at the storage level: what requests racing for one upload may do.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use mongodb::bson::doc;
use sha2::{Digest, Sha256};
use storage::{NewResumableUpload, StorageError};

use crate::support::{Chunk, PART, harness, stream_of};

#[tokio::test]
async fn a_writer_whose_lease_was_taken_over_cannot_change_the_stored_bytes() {
    let h = harness().await;
    let good: Vec<u8> = (0..100u8).collect();
    let (post, upload) = new_upload(&h, 100).await;
    // A request that sent ten bytes of its own, then stalled with the lease.
    let (wake, stalled) = tokio::sync::oneshot::channel::<()>();
    let stale = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(&[b'A'; 10]))])
        .chain(
            futures::stream::once(async move {
                let _ = stalled.await;
            })
            .filter_map(|()| async { None::<Chunk> }),
        );
    let storage = h.storage.clone();
    let writer = tokio::spawn(async move {
        storage
            .append_to_resumable_upload(post, upload, 0, Box::pin(stale))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Its lease lapses (its instance stalled); another request takes the upload over and
    // stores half of the file.
    let lapsed = mongodb::bson::DateTime::from_system_time(
        std::time::SystemTime::now() - Duration::from_secs(1),
    );
    h.stored
        .update_every(
            "attachments",
            doc! { "$set": { "resumable.lease_until": lapsed } },
        )
        .await;
    let half = h
        .storage
        .append_to_resumable_upload(
            post,
            upload,
            0,
            stream_of(vec![Bytes::copy_from_slice(&good[..50])]),
        )
        .await
        .expect("the request that took over");
    assert_eq!(half.offset, 50);

    // The stalled request wakes up and ends.
    let _ = wake.send(());
    let stale_end = writer.await.expect("task");
    let rest = h
        .storage
        .append_to_resumable_upload(
            post,
            upload,
            50,
            stream_of(vec![Bytes::copy_from_slice(&good[50..])]),
        )
        .await;

    assert!(
        matches!(stale_end, Err(StorageError::UploadLocked)),
        "{stale_end:?}"
    );
    let attachment = rest
        .expect("the rest")
        .attachment
        .expect("the upload is complete");
    assert_eq!(attachment.sha256, hex::encode(Sha256::digest(&good)));
}

#[tokio::test]
async fn an_upload_whose_recorded_part_was_overwritten_ends_as_a_mismatch_and_leaves_nothing() {
    let h = harness().await;
    let part = usize::try_from(PART).expect("a part fits in memory");
    let (post, upload) = new_upload(&h, PART + 10).await;
    let first = h
        .storage
        .append_to_resumable_upload(
            post,
            upload,
            0,
            stream_of(vec![Bytes::from(vec![b'a'; part])]),
        )
        .await
        .expect("the first part");
    assert_eq!(first.offset, PART);
    // A request that lost its lease sends its own bytes as part 1 after it was recorded.
    let record = h
        .stored
        .database
        .collection::<mongodb::bson::Document>("attachments")
        .find_one(doc! {})
        .await
        .expect("find")
        .expect("the upload's record");
    let multipart_id = record
        .get_document("resumable")
        .and_then(|state| state.get_str("multipart_id"))
        .expect("a multipart upload");
    h.storage
        .objects()
        .upload_part(
            &h.storage.objects().key_for(post, upload),
            multipart_id,
            1,
            Bytes::from(vec![b'b'; part]),
        )
        .await
        .expect("the stale part");

    let last = h
        .storage
        .append_to_resumable_upload(
            post,
            upload,
            PART,
            stream_of(vec![Bytes::from_static(&[b'a'; 10])]),
        )
        .await;

    assert!(
        matches!(last, Err(StorageError::UploadMismatch(_))),
        "{last:?}"
    );
    assert!(matches!(
        h.storage.resumable_upload(post, upload).await,
        Err(StorageError::NotFound(_))
    ));
    h.stored.assert_nothing_stored().await;
}

/// A resumable upload of `length` bytes of a fresh post.
async fn new_upload(
    h: &crate::support::Harness,
    length: u64,
) -> (storage::PostId, storage::AttachmentId) {
    let post = h.post().await;
    let upload = h
        .storage
        .create_resumable_upload(
            post,
            NewResumableUpload {
                filename: "r.bin",
                declared_type: None,
                length,
                metadata: "",
                owner: None,
            },
        )
        .await
        .expect("create");
    (post, upload.id)
}

#[tokio::test]
async fn the_tail_is_also_where_the_previous_release_reads_it() {
    let h = harness().await;
    let (post, upload) = new_upload(&h, 100).await;

    h.storage
        .append_to_resumable_upload(
            post,
            upload,
            0,
            stream_of(vec![Bytes::from_static(
                b"first forty bytes of a resumable upload.",
            )]),
        )
        .await
        .expect("append");

    let shared = h.storage.objects().resumable_tail_key_for(post, upload);
    let tail = h
        .stored
        .s3
        .get_object()
        .bucket(&h.stored.bucket)
        .key(&shared)
        .send()
        .await
        .expect("the tail at the key the previous release reads")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert_eq!(&tail[..], b"first forty bytes of a resumable upload.");
}

#[tokio::test]
async fn a_tail_the_previous_release_wrote_is_the_one_read_next() {
    let h = harness().await;
    let good: Vec<u8> = (0..100u8).collect();
    let (post, upload) = new_upload(&h, 100).await;
    h.storage
        .append_to_resumable_upload(
            post,
            upload,
            0,
            stream_of(vec![Bytes::copy_from_slice(&good[..20])]),
        )
        .await
        .expect("append");
    // A request served by the previous release: it writes its tail to the shared key and
    // records the new offset and length, knowing nothing of the named tail.
    h.stored
        .s3
        .put_object()
        .bucket(&h.stored.bucket)
        .key(h.storage.objects().resumable_tail_key_for(post, upload))
        .body(aws_sdk_s3::primitives::ByteStream::from(
            good[..50].to_vec(),
        ))
        .send()
        .await
        .expect("put");
    h.stored
        .update_every(
            "attachments",
            doc! { "$set": { "resumable.offset": 50_i64, "resumable.tail": 50_i64 } },
        )
        .await;

    let rest = h
        .storage
        .append_to_resumable_upload(
            post,
            upload,
            50,
            stream_of(vec![Bytes::copy_from_slice(&good[50..])]),
        )
        .await
        .expect("the rest");

    let attachment = rest.attachment.expect("the upload is complete");
    assert_eq!(attachment.sha256, hex::encode(Sha256::digest(&good)));
}
