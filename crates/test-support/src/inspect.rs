//! Looking behind the service's back: the objects and multipart uploads under a key prefix,
//! and the attachment records of a database.

use std::time::{Duration, Instant};

use crate::testbed;

/// An S3 client on the testbed's lax moto (path-style), for inspection.
pub async fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(testbed("AWS_REGION")))
        .endpoint_url(testbed("AWS_ENDPOINT_URL"))
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    )
}

/// What one test stored: objects under its key prefix, records in its database.
#[derive(Clone, Debug)]
pub struct Inspector {
    /// Straight to the emulator, never through a proxy under test.
    pub s3: aws_sdk_s3::Client,
    /// The bucket.
    pub bucket: String,
    /// The test's key prefix, without the trailing `/`.
    pub prefix: String,
    /// The test's database.
    pub database: mongodb::Database,
}

impl Inspector {
    /// Inspects `bucket` under `prefix/` and `database`.
    pub async fn new(bucket: &str, prefix: &str, database: mongodb::Database) -> Self {
        Self {
            s3: s3_client().await,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            database,
        }
    }

    /// Keys of the objects under the prefix.
    pub async fn object_keys(&self) -> Vec<String> {
        self.s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}/", self.prefix))
            .send()
            .await
            .expect("ListObjectsV2")
            .contents
            .unwrap_or_default()
            .into_iter()
            .filter_map(|object| object.key)
            .collect()
    }

    /// Keys of the incomplete multipart uploads under the prefix.
    pub async fn multipart_uploads(&self) -> Vec<String> {
        self.s3
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(format!("{}/", self.prefix))
            .send()
            .await
            .expect("ListMultipartUploads")
            .uploads
            .unwrap_or_default()
            .into_iter()
            .filter_map(|upload| upload.key)
            .collect()
    }

    /// Attachment records of any status.
    pub async fn attachment_records(&self) -> u64 {
        self.database
            .collection::<mongodb::bson::Document>("attachments")
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count attachments")
    }

    /// Reservations that uploads hold on posts (their posts' `pending` entries).
    pub async fn reservations(&self) -> usize {
        let mut posts = self
            .database
            .collection::<mongodb::bson::Document>("posts")
            .find(mongodb::bson::doc! {})
            .await
            .expect("find posts");
        let mut reservations = 0;
        while posts.advance().await.expect("read posts") {
            let post = posts.deserialize_current().expect("a post document");
            reservations += post.get_array("pending").map_or(0, Vec::len);
        }
        reservations
    }

    /// Applies `update` to every document of `collection` behind the service's back, as a
    /// crash or an operator would leave them.
    pub async fn update_every(&self, collection: &str, update: mongodb::bson::Document) {
        self.database
            .collection::<mongodb::bson::Document>(collection)
            .update_many(mongodb::bson::doc! {}, update)
            .await
            .expect("update behind the service's back");
    }

    /// Whether no record, object, multipart upload or reservation exists.
    pub async fn nothing_stored(&self) -> bool {
        self.attachment_records().await == 0
            && self.object_keys().await.is_empty()
            && self.multipart_uploads().await.is_empty()
            && self.reservations().await == 0
    }

    /// Asserts that no record, object, multipart upload or reservation is left.
    pub async fn assert_nothing_stored(&self) {
        self.assert_nothing_stored_within(Duration::ZERO).await;
    }

    /// Waits until nothing is stored (clean-up after a cancelled request is asynchronous),
    /// failing the test after `limit`.
    pub async fn assert_nothing_stored_within(&self, limit: Duration) {
        let started = Instant::now();
        while !self.nothing_stored().await {
            assert!(
                started.elapsed() <= limit,
                "still stored after {limit:?}: {} records, objects {:?}, multipart uploads {:?}, {} reservations",
                self.attachment_records().await,
                self.object_keys().await,
                self.multipart_uploads().await,
                self.reservations().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
