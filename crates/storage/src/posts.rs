//! Posts: create, read, list newest first, update, delete (with their attachments).

use futures::TryStreamExt;
use mongodb::bson::doc;
use mongodb::bson::oid::ObjectId;
use mongodb::options::ReturnDocument;

use crate::error::{Entity, StorageError};
use crate::events::{EventKind, post_data};
use crate::model::{NewPost, Page, Post, PostChanges, PostId};
use crate::mongo::cursor::Cursor;
use crate::mongo::documents::{PostDocument, PostStatus, now};
use crate::store::Storage;

impl Storage {
    /// Stores a new post.
    pub async fn create_post(&self, new: NewPost) -> Result<Post, StorageError> {
        let now = now();
        let mut document = PostDocument {
            id: ObjectId::new(),
            title: new.title,
            body: new.body,
            author: new.author,
            status: PostStatus::Active,
            created_at: now,
            updated_at: now,
            version: 1,
            attachments: Vec::new(),
            outbox: Vec::new(),
            outbox_due_at: None,
        };
        let created = post_data(&document);
        document.outbox = self.outbox_entries(now, [(EventKind::PostCreated, created)]);
        if !document.outbox.is_empty() {
            document.outbox_due_at = Some(now);
        }
        self.posts().insert_one(&document).await?;
        self.events_written();
        Ok(document.into_post())
    }

    /// The post with its ready attachments, in one point read.
    pub async fn post(&self, id: PostId) -> Result<Post, StorageError> {
        Ok(self.active_post(id).await?.into_post())
    }

    /// The author of a post, without reading its attachments (for ownership checks).
    pub async fn post_author(&self, id: PostId) -> Result<Option<String>, StorageError> {
        Ok(self.active_post(id).await?.author)
    }

    /// A page of posts, newest first, after `cursor` (from a previous page).
    pub async fn list_posts(
        &self,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Post>, StorageError> {
        let mut filter = doc! { "status": PostStatus::Active.as_str() };
        if let Some(cursor) = cursor {
            let cursor = Cursor::decode(cursor).ok_or(StorageError::InvalidCursor)?;
            filter.extend(cursor.after());
        }
        let limit = i64::from(limit.max(1));
        let mut documents: Vec<PostDocument> = self
            .posts()
            .find(filter)
            .sort(doc! { "created_at": -1, "_id": -1 })
            .limit(limit + 1)
            .await?
            .try_collect()
            .await?;
        let next_cursor = if documents.len() as i64 > limit {
            documents.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            documents.last().map(|last| {
                Cursor {
                    created_at: last.created_at,
                    id: last.id,
                }
                .encode()
            })
        } else {
            None
        };
        let items = documents.into_iter().map(PostDocument::into_post).collect();
        Ok(Page { items, next_cursor })
    }

    /// Applies `changes`; with `expected_versions`, only if the post is still at one of
    /// them (otherwise `StaleVersion`).
    pub async fn update_post(
        &self,
        id: PostId,
        changes: PostChanges,
        expected_versions: Option<&[i64]>,
    ) -> Result<Post, StorageError> {
        // A pipeline, so that the event records the post as this write leaves it.
        let at = now();
        let mut set = doc! { "updated_at": at, "version": { "$add": ["$version", 1] } };
        if let Some(title) = changes.title {
            set.insert("title", doc! { "$literal": title });
        }
        if let Some(body) = changes.body {
            set.insert("body", doc! { "$literal": body });
        }
        let mut pipeline = vec![doc! { "$set": set }];
        let as_left = doc! {
            "id": "$_id", "title": "$title", "body": "$body", "author": "$author",
            "created_at": "$created_at", "updated_at": "$updated_at", "version": "$version",
        };
        if let Some(updated) = self
            .outbox_entries(at, [(EventKind::PostUpdated, as_left)])
            .pop()
        {
            pipeline.push(doc! { "$set": {
                "outbox": { "$concatArrays": [{ "$ifNull": ["$outbox", []] }, [updated]] },
                "outbox_due_at": { "$max": ["$outbox_due_at", at] },
            } });
        }
        let mut filter = doc! { "_id": id.0, "status": PostStatus::Active.as_str() };
        if let Some(versions) = expected_versions {
            filter.insert("version", doc! { "$in": versions });
        }
        let updated = self
            .posts()
            .find_one_and_update(filter, pipeline)
            .return_document(ReturnDocument::After)
            .await?;
        self.events_written();
        match updated {
            Some(document) => Ok(document.into_post()),
            None => {
                // Tell a missing post from a stale version.
                self.active_post(id).await?;
                Err(StorageError::StaleVersion)
            }
        }
    }

    /// Deletes a post and its attachments' bytes.
    ///
    /// The post is first marked `deleting` (invisible from then on) and its attachments
    /// too; then objects and records are removed. If that stops half-way, the reaper
    /// finishes it, so the delete has taken effect once this returns `Ok`.
    pub async fn delete_post(&self, id: PostId) -> Result<(), StorageError> {
        // With a quota, the author's count is held before the post changes.
        let author = match self.quota() {
            Some(_) => self.post_author(id).await?,
            None => None,
        };
        self.hold_quota(author.as_deref(), id.0).await?;
        let marked = self.mark_post_deleting(id).await;
        let (attachments, bytes) = match &marked {
            Ok(Some(post)) => (
                post.attachments.len() as u64,
                post.attachments
                    .iter()
                    .map(|summary| u64::try_from(summary.size).unwrap_or(0))
                    .sum(),
            ),
            _ => (0, 0),
        };
        if let Err(error) = self
            .uncount_quota(author.as_deref(), id.0, attachments, bytes)
            .await
        {
            tracing::warn!(post_id = %id, %error, "could not give a deleted post's bytes back to the quota; the reaper will");
        }
        if marked?.is_none() {
            return Err(StorageError::NotFound(Entity::Post));
        }
        if let Err(error) = self.finish_post_deletion(id.0).await {
            tracing::warn!(post_id = %id, %error, "post deletion interrupted; the reaper will finish it");
        }
        Ok(())
    }

    /// Marks an active post `deleting`, with its event; the post as it was, if it was.
    async fn mark_post_deleting(&self, id: PostId) -> Result<Option<PostDocument>, StorageError> {
        let at = now();
        let mut update =
            doc! { "$set": { "status": PostStatus::Deleting.as_str(), "updated_at": at } };
        let deleted = self.outbox_entries(at, [(EventKind::PostDeleted, doc! { "id": id.0 })]);
        Self::push_to_outbox(&mut update, deleted, at);
        let marked = self
            .posts()
            .find_one_and_update(
                doc! { "_id": id.0, "status": PostStatus::Active.as_str() },
                update,
            )
            .await?;
        if marked.is_some() {
            self.events_written();
        }
        Ok(marked)
    }

    /// The post if it is active. Read by `_id` alone, the cheapest query there is, and its
    /// status checked here.
    pub(crate) async fn active_post(&self, id: PostId) -> Result<PostDocument, StorageError> {
        self.posts()
            .find_one(doc! { "_id": id.0 })
            .await?
            .filter(|post| post.status == PostStatus::Active)
            .ok_or(StorageError::NotFound(Entity::Post))
    }
}
