//! `/v1/posts/{post_id}/attachments`: list, read, presigned download URL, delete. The
//! upload itself is in `multipart.rs`, the bytes in `content.rs`.

use actix_web::http::header::IfNoneMatch;
use actix_web::{HttpResponse, web};
use storage::{Attachment, AttachmentId, PostId};

use crate::domain::parse_id;
use crate::http::conditional::{conditional_json, content_disposition, post_etag};
use crate::http::error::{ApiError, method_not_allowed};
use crate::http::extractors::{Reader, Writer};
use crate::http::problem::Problem;
use crate::http::views::{AttachmentList, AttachmentView, DownloadUrl, timestamp};
use crate::routes::multipart::{upload_attachments, upload_raw_attachment};
use crate::state::AppState;

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/posts/{post_id}/attachments")
                .route(web::post().to(upload_attachments))
                .route(web::get().to(list_attachments))
                .default_service(method_not_allowed("GET, POST")),
        )
        .service(
            web::resource("/v1/posts/{post_id}/attachments/raw")
                .route(web::post().to(upload_raw_attachment))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/v1/posts/{post_id}/attachments/{attachment_id}")
                .route(web::get().to(get_attachment))
                .route(web::delete().to(delete_attachment))
                .default_service(method_not_allowed("GET, DELETE")),
        )
        .service(
            web::resource("/v1/posts/{post_id}/attachments/{attachment_id}/url")
                .route(web::get().to(attachment_url))
                .default_service(method_not_allowed("GET")),
        );
}

/// The ready attachment named by the path `(post_id, attachment_id)`.
pub async fn find_attachment(
    state: &AppState,
    path: &(String, String),
) -> Result<Attachment, ApiError> {
    let (post_id, attachment_id) = ids(path)?;
    state
        .bounded(state.storage.attachment(post_id, attachment_id))
        .await
}

fn ids(path: &(String, String)) -> Result<(PostId, AttachmentId), ApiError> {
    Ok((parse_id(&path.0, "post")?, parse_id(&path.1, "attachment")?))
}

/// List a post's attachments. The `ETag` is the post's version, which every added or
/// deleted attachment changes; with `If-None-Match` naming it, the answer is 304.
#[utoipa::path(
    get, path = "/v1/posts/{post_id}/attachments", tag = "attachments",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` of this list seen before"),
    ),
    responses(
        (status = 200, description = "The attachments, oldest first", body = AttachmentList, headers(
            ("ETag" = String, description = "The post's version"),
            ("Cache-Control" = String, description = "`public, no-cache` when reads need no token, else `private, no-cache`"),
        )),
        (status = 304, description = "Not modified since the `ETag` in `If-None-Match`"),
        (status = 404, description = "No such post", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_attachments(
    state: web::Data<AppState>,
    reader: Reader,
    path: web::Path<String>,
    if_none_match: Option<web::Header<IfNoneMatch>>,
) -> Result<HttpResponse, ApiError> {
    let post_id: PostId = parse_id(&path, "post")?;
    let post = state.bounded(state.storage.post(post_id)).await?;
    Ok(conditional_json(
        if_none_match.as_deref(),
        post_etag(post.version),
        reader.cache_control(),
        || AttachmentList {
            items: post
                .attachments
                .into_iter()
                .map(|attachment| state.attachment_view(attachment))
                .collect(),
        },
    ))
}

/// Read an attachment's metadata.
#[utoipa::path(
    get, path = "/v1/posts/{post_id}/attachments/{attachment_id}", tag = "attachments",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("attachment_id" = String, Path, description = "Attachment id"),
    ),
    responses(
        (status = 200, description = "The attachment", body = AttachmentView),
        (status = 404, description = "No such post or attachment", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_attachment(
    state: web::Data<AppState>,
    _reader: Reader,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let attachment = find_attachment(&state, &path).await?;
    Ok(HttpResponse::Ok().json(state.attachment_view(attachment)))
}
/// A presigned URL to download an attachment directly from S3.
#[utoipa::path(
    get, path = "/v1/posts/{post_id}/attachments/{attachment_id}/url", tag = "attachments",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("attachment_id" = String, Path, description = "Attachment id"),
    ),
    responses(
        (status = 200, description = "A presigned GET, never outliving its credentials", body = DownloadUrl),
        (status = 404, description = "No such post or attachment", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn attachment_url(
    state: web::Data<AppState>,
    _reader: Reader,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let attachment = find_attachment(&state, &path).await?;
    let url = state
        .bounded(state.storage.presign_download(
            &attachment,
            &content_disposition(&attachment.filename).to_string(),
        ))
        .await?;
    Ok(HttpResponse::Ok().json(DownloadUrl {
        url: url.url,
        expires_at: timestamp(url.expires_at),
    }))
}

/// Delete an attachment and its bytes.
#[utoipa::path(
    delete, path = "/v1/posts/{post_id}/attachments/{attachment_id}", tag = "attachments",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("attachment_id" = String, Path, description = "Attachment id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such post or attachment", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_attachment(
    state: web::Data<AppState>,
    writer: Writer,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (post_id, attachment_id) = ids(&path)?;
    state.authorize(&writer, post_id).await?;
    state
        .bounded(state.storage.delete_attachment(post_id, attachment_id))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
