//! The JSON shapes of responses (see `docs/api.md`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;
use storage::{Attachment, Post};
use utoipa::ToSchema;

/// RFC 3339 UTC with milliseconds.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// A post.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostView {
    /// 24-hex-digit id.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    pub id: String,
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
    /// The author's subject; `null` until authentication exists.
    pub author: Option<String>,
    /// Creation time (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last change (RFC 3339).
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Ready attachments, oldest first.
    pub attachments: Vec<AttachmentView>,
    /// This post: `/v1/posts/{id}` (relative).
    #[schema(example = "/v1/posts/6650f1c2a1b2c3d4e5f60718")]
    pub url: String,
    /// Its attachments, and where to upload more: `/v1/posts/{id}/attachments`.
    #[schema(example = "/v1/posts/6650f1c2a1b2c3d4e5f60718/attachments")]
    pub attachments_url: String,
}

impl PostView {
    /// The view of `post`, its images linking to the sizes `variants` names.
    pub fn new(post: Post, variants: &[String]) -> Self {
        let url = format!("/v1/posts/{}", post.id);
        Self {
            id: post.id.to_string(),
            attachments_url: format!("{url}/attachments"),
            url,
            title: post.title,
            body: post.body,
            author: post.author,
            created_at: timestamp(post.created_at),
            updated_at: timestamp(post.updated_at),
            attachments: post
                .attachments
                .into_iter()
                .map(|attachment| AttachmentView::new(attachment, variants))
                .collect(),
        }
    }
}

/// A stored file of a post.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentView {
    /// 24-hex-digit id.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    pub id: String,
    /// The post's id.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    pub post_id: String,
    /// The client's file name, kept as metadata only.
    pub filename: String,
    /// What the bytes are (sniffed), not what the client claimed.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub sha256: String,
    /// Creation time (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// This attachment's metadata: `/v1/posts/{post_id}/attachments/{id}` (relative).
    #[schema(example = "/v1/posts/6650f1c2a1b2c3d4e5f60718/attachments/6650f1c2a1b2c3d4e5f60719")]
    pub url: String,
    /// Its bytes: `…/attachments/{id}/content` (relative).
    #[schema(
        example = "/v1/posts/6650f1c2a1b2c3d4e5f60718/attachments/6650f1c2a1b2c3d4e5f60719/content"
    )]
    pub content_url: String,
    /// For an image (JPEG, PNG, WebP, GIF): its size as displayed and a placeholder, so a
    /// client can lay it out and paint something before its bytes arrive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageView>,
}

/// An image's size as displayed (after its EXIF orientation) and its placeholder.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageView {
    /// Width in pixels, as displayed.
    pub width: u32,
    /// Height in pixels, as displayed.
    pub height: u32,
    /// A [blurhash](https://blurha.sh) of the image (4 × 3 components).
    #[schema(example = "LEHV6nWB2yk8pyo0adR*.7kCMdnj")]
    pub blurhash: String,
    /// Its sizes (`media.variants`), by name: `…/attachments/{id}/variants/{name}`
    /// (relative), rendered on first request, then served from S3.
    #[schema(example = json!({"thumb": "/v1/posts/6650f1c2a1b2c3d4e5f60718/attachments/6650f1c2a1b2c3d4e5f60719/variants/thumb"}))]
    pub variants: BTreeMap<String, String>,
}

impl AttachmentView {
    /// The view of `attachment`, an image linking to the sizes `variants` names.
    pub fn new(attachment: Attachment, variants: &[String]) -> Self {
        let url = format!(
            "/v1/posts/{}/attachments/{}",
            attachment.post_id, attachment.id
        );
        Self {
            content_url: format!("{url}/content"),
            url: url.clone(),
            id: attachment.id.to_string(),
            post_id: attachment.post_id.to_string(),
            filename: attachment.filename,
            content_type: attachment.content_type,
            size: attachment.size,
            sha256: attachment.sha256,
            created_at: timestamp(attachment.created_at),
            image: attachment.image.map(|image| ImageView {
                width: image.width,
                height: image.height,
                blurhash: image.blurhash,
                variants: variants
                    .iter()
                    .map(|name| (name.clone(), format!("{url}/variants/{name}")))
                    .collect(),
            }),
        }
    }
}

/// A page of posts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostPage {
    /// The posts.
    pub items: Vec<PostView>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Attachments of a post.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttachmentList {
    /// The attachments.
    pub items: Vec<AttachmentView>,
}

/// A presigned download URL.
#[derive(Debug, Serialize, ToSchema)]
pub struct DownloadUrl {
    /// The presigned GET URL.
    pub url: String,
    /// When it stops working (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// A presigned direct upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct DirectUploadView {
    /// Id to complete the upload with.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    pub upload_id: String,
    /// The presigned URL.
    pub url: String,
    /// Always `PUT`.
    pub method: String,
    /// Headers the PUT must carry.
    pub headers: std::collections::BTreeMap<String, String>,
    /// When the URL stops working (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Where to POST once the bytes are uploaded (relative).
    pub complete_url: String,
}
