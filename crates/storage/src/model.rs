//! Posts and attachments as the rest of the service sees them, and their identifiers.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use mongodb::bson::oid::ObjectId;

macro_rules! object_id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) ObjectId);

        impl $name {
            /// A new, unique id.
            pub fn new() -> Self {
                Self(ObjectId::new())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            /// Parses the 24-hex-digit form.
            fn from_str(text: &str) -> Result<Self, InvalidId> {
                ObjectId::parse_str(text).map(Self).map_err(|_| InvalidId)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0.to_hex())
            }
        }
    };
}

object_id_newtype!(
    /// A post's id: a MongoDB ObjectId, shown as 24 hex digits.
    PostId
);
object_id_newtype!(
    /// An attachment's id (also the id of a direct upload): a MongoDB ObjectId.
    AttachmentId
);

/// Text that is not a 24-hex-digit id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id")]
pub struct InvalidId;

/// A post with its ready attachments.
#[derive(Clone, Debug, PartialEq)]
pub struct Post {
    /// Id.
    pub id: PostId,
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
    /// The author's subject, once authentication exists.
    pub author: Option<String>,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last change.
    pub updated_at: SystemTime,
    /// Incremented by every update (optimistic concurrency).
    pub version: i64,
    /// Ready attachments, oldest first.
    pub attachments: Vec<Attachment>,
}

/// A stored file of a post.
#[derive(Clone, Debug, PartialEq)]
pub struct Attachment {
    /// Id.
    pub id: AttachmentId,
    /// The post it belongs to.
    pub post_id: PostId,
    /// The client's file name, kept only as metadata.
    pub filename: String,
    /// What the bytes are (sniffed).
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Creation time.
    pub created_at: SystemTime,
    /// What the image is, for an image.
    pub image: Option<ImageInfo>,
}

/// An image's displayed size (after its EXIF orientation) and placeholder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageInfo {
    /// Width as displayed, in pixels.
    pub width: u32,
    /// Height as displayed, in pixels.
    pub height: u32,
    /// A blurhash of the image.
    pub blurhash: String,
}

/// A rendered size of an image attachment, one of `media.variants`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// Its name in `media.variants`.
    pub name: String,
    /// The image it was rendered from.
    pub attachment_id: AttachmentId,
    /// That image's post.
    pub post_id: PostId,
    /// What the bytes are.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A page of a newest-first listing.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Opaque cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// Fields of a new post.
#[derive(Clone, Debug)]
pub struct NewPost {
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
    /// The author's subject, if known.
    pub author: Option<String>,
}

/// Changes to a post; `None` keeps a field.
#[derive(Clone, Debug, Default)]
pub struct PostChanges {
    /// New title.
    pub title: Option<String>,
    /// New body.
    pub body: Option<String>,
}
