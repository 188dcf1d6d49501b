//! `GET|HEAD /v1/posts/{post_id}/attachments/{attachment_id}/variants/{name}` and
//! `…/variants/{name}/url`: an image in one of the sizes `media.variants` names, rendered
//! on first request, then served from S3.

use actix_web::http::header::{ContentDisposition, DispositionType, IfNoneMatch, Range};
use actix_web::{HttpRequest, HttpResponse, web};
use storage::{AttachmentId, PostId, Variant};

use crate::domain::parse_id;
use crate::http::error::{ApiError, method_not_allowed};
use crate::http::extractors::Reader;
use crate::http::problem::Problem;
use crate::http::views::{DownloadUrl, timestamp};
use crate::routes::content::{Served, serve};
use crate::state::AppState;

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/posts/{post_id}/attachments/{attachment_id}/variants/{name}")
                .route(web::get().to(download_variant))
                .route(web::head().to(download_variant))
                .default_service(method_not_allowed("GET, HEAD")),
        )
        .service(
            web::resource("/v1/posts/{post_id}/attachments/{attachment_id}/variants/{name}/url")
                .route(web::get().to(variant_url))
                .default_service(method_not_allowed("GET")),
        );
}

/// The variant named by the path `(post_id, attachment_id, name)`, rendered if it is not
/// yet. Rendering may take longer than metadata work, so it is bounded by its own wait
/// (`media.wait_secs`) rather than `server.storage_timeout_secs`.
async fn find_variant(
    state: &AppState,
    path: &(String, String, String),
) -> Result<Variant, ApiError> {
    let post_id: PostId = parse_id(&path.0, "post")?;
    let attachment_id: AttachmentId = parse_id(&path.1, "attachment")?;
    Ok(state
        .storage
        .variant(post_id, attachment_id, &path.2)
        .await?)
}

/// Download an image in one of the configured sizes (`HEAD` for the headers only).
#[utoipa::path(
    method(get, head), path = "/v1/posts/{post_id}/attachments/{attachment_id}/variants/{name}", tag = "attachments",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("attachment_id" = String, Path, description = "Attachment id"),
        ("name" = String, Path, description = "A name of `media.variants`, e.g. `thumb`"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-99`"),
        ("If-None-Match" = Option<String>, Header, description = "ETag(s) the client holds"),
    ),
    responses(
        (status = 200, description = "The image at that size", content_type = "image/*", body = Vec<u8>,
            headers(
                ("ETag" = String, description = "Strong tag from the SHA-256"),
                ("Cache-Control" = String, description = "Kept a year (`immutable`); `public` when reads need no token"),
            )),
        (status = 206, description = "The requested range", content_type = "image/*", body = Vec<u8>,
            headers(("Content-Range" = String, description = "`bytes START-END/SIZE`"))),
        (status = 304, description = "The client's copy is current"),
        (status = 404, description = "No such post, attachment or variant name", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The attachment is not an image", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range is outside the content", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Every render turn is taken (`Retry-After`), or a dependency is down", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn download_variant(
    state: web::Data<AppState>,
    reader: Reader,
    request: HttpRequest,
    path: web::Path<(String, String, String)>,
    range: Option<web::Header<Range>>,
    if_none_match: Option<web::Header<IfNoneMatch>>,
) -> Result<HttpResponse, ApiError> {
    let variant = find_variant(&state, &path).await?;
    let served = Served {
        content_type: &variant.content_type,
        size: variant.size,
        sha256: &variant.sha256,
        disposition: inline(),
        cache_control: Some(reader.immutable_cache_control()),
    };
    let open = |range| state.storage.open_variant(&variant, range);
    serve(&state, &request, range, if_none_match, served, open).await
}

/// A presigned URL to download an image in one of the configured sizes from S3.
#[utoipa::path(
    get, path = "/v1/posts/{post_id}/attachments/{attachment_id}/variants/{name}/url", tag = "attachments",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("attachment_id" = String, Path, description = "Attachment id"),
        ("name" = String, Path, description = "A name of `media.variants`, e.g. `thumb`"),
    ),
    responses(
        (status = 200, description = "A presigned GET, never outliving its credentials", body = DownloadUrl),
        (status = 404, description = "No such post, attachment or variant name", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The attachment is not an image", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Every render turn is taken (`Retry-After`), or a dependency is down", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn variant_url(
    state: web::Data<AppState>,
    _reader: Reader,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    let variant = find_variant(&state, &path).await?;
    let url = state
        .bounded(
            state
                .storage
                .presign_variant(&variant, &inline().to_string()),
        )
        .await?;
    Ok(HttpResponse::Ok().json(DownloadUrl {
        url: url.url,
        expires_at: timestamp(url.expires_at),
    }))
}

/// Shown in place: a variant is for display.
fn inline() -> ContentDisposition {
    ContentDisposition {
        disposition: DispositionType::Inline,
        parameters: Vec::new(),
    }
}
