//! The application state every handler reads: the backing services, shared by every
//! worker. Handlers import it from here, and start-up builds it, so neither depends on
//! the other.

use storage::{Mongo, PostId, Storage};

use crate::http::error::ApiError;
use crate::http::extractors::Writer;

/// What the routes need, shared by every worker.
#[derive(Clone, Debug)]
pub struct AppState {
    /// MongoDB client and database.
    pub mongo: Mongo,
    /// Posts and attachments.
    pub storage: Storage,
    /// The temporary credentials every AWS client signs with.
    pub credentials: aws_creds::TemporaryCredentials,
}

impl AppState {
    /// Checks that the post exists and the writer is its author.
    pub async fn authorize(&self, writer: &Writer, post_id: PostId) -> Result<(), ApiError> {
        let author = self.storage.post_author(post_id).await?;
        writer.ensure_author(author.as_deref())
    }
}
