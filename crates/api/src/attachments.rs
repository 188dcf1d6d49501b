//! `/v1/posts/{post_id}/attachments`: upload (multipart, streamed), list, read, download,
//! presigned download URL, delete.

use std::time::{Duration, Instant};

use actix_multipart::{Multipart, MultipartError};
use actix_web::body::SizedStream;
use actix_web::http::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    HeaderName, IF_NONE_MATCH, RANGE,
};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError, web};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use storage::{Attachment, AttachmentId, ByteRange, PostId};

use crate::auth::{Reader, Writer};
use crate::configuration::Settings;
use crate::domain::{FileName, parse_id};
use crate::download::{RangeDecision, content_disposition, decide_range, none_match};
use crate::error::{ApiError, method_not_allowed};
use crate::metrics::Metrics;
use crate::posts::{authorize, not_found};
use crate::representation::{AttachmentList, AttachmentView, DownloadUrl, ProblemView, timestamp};
use crate::startup::Dependencies;

const X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");

/// Multipart framing allowed per file on top of its bytes.
const PART_OVERHEAD: u64 = 64 * 1024;
/// After a rejected upload, at most this much of the rest is read and discarded before
/// answering; beyond it the connection is closed instead.
const DRAIN_BUDGET: u64 = 256 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

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
            web::resource("/v1/posts/{post_id}/attachments/{attachment_id}")
                .route(web::get().to(get_attachment))
                .route(web::delete().to(delete_attachment))
                .default_service(method_not_allowed("GET, DELETE")),
        )
        .service(
            web::resource("/v1/posts/{post_id}/attachments/{attachment_id}/content")
                .route(web::get().to(download_attachment))
                .route(web::head().to(download_attachment))
                .default_service(method_not_allowed("GET, HEAD")),
        )
        .service(
            web::resource("/v1/posts/{post_id}/attachments/{attachment_id}/url")
                .route(web::get().to(attachment_url))
                .default_service(method_not_allowed("GET")),
        );
}

/// The ready attachment named by the path `(post_id, attachment_id)`.
async fn find_attachment(
    dependencies: &Dependencies,
    path: &(String, String),
) -> Result<Attachment, ApiError> {
    let (post_id, attachment_id) = ids(path)?;
    dependencies
        .storage
        .attachment(post_id, attachment_id)
        .await
        .map_err(not_found("attachment"))
}

fn ids(path: &(String, String)) -> Result<(PostId, AttachmentId), ApiError> {
    Ok((parse_id(&path.0, "post")?, parse_id(&path.1, "attachment")?))
}

/// Upload files as attachments of a post.
#[utoipa::path(
    post, path = "/v1/posts/{post_id}/attachments", tag = "attachments",
    params(("post_id" = String, Path, description = "Post id")),
    request_body(content = crate::openapi::UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored, in order", body = AttachmentList),
        (status = 400, description = "Malformed multipart body or file name", body = ProblemView, content_type = "application/problem+json"),
        (status = 404, description = "No such post", body = ProblemView, content_type = "application/problem+json"),
        (status = 413, description = "A file or the request is too large, or too many files", body = ProblemView, content_type = "application/problem+json"),
        (status = 415, description = "Not multipart, or a file type that is not allowed", body = ProblemView, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down", body = ProblemView, content_type = "application/problem+json"),
    )
)]
pub async fn upload_attachments(
    dependencies: web::Data<Dependencies>,
    settings: web::Data<Settings>,
    metrics: web::Data<Metrics>,
    writer: Result<Writer, ApiError>,
    request: HttpRequest,
    path: web::Path<String>,
    multipart: Multipart,
) -> HttpResponse {
    let mut parts = Parts {
        multipart,
        finished: false,
        failed: false,
    };
    let limits = &settings.uploads;
    let max_files = u64::from(limits.max_files_per_request);
    let max_body = limits
        .max_file_bytes
        .saturating_add(PART_OVERHEAD)
        .saturating_mul(max_files);
    let declared_length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > max_body) {
        // Refuse before reading a byte, and close: the client may still be sending.
        return closing(ApiError::TooLarge(format!(
            "the request body exceeds {max_body} bytes"
        )));
    }

    let outcome = match writer {
        Ok(writer) => {
            store_files(
                &dependencies,
                &settings,
                &metrics,
                &writer,
                &path,
                &mut parts,
            )
            .await
        }
        Err(error) => Err((error, Vec::new())),
    };
    match outcome {
        Ok(stored) => HttpResponse::Created().json(AttachmentList {
            items: stored.into_iter().map(AttachmentView::from).collect(),
        }),
        Err((error, stored)) => {
            for attachment in stored {
                if let Err(cleanup) = dependencies
                    .storage
                    .delete_attachment(attachment.post_id, attachment.id)
                    .await
                {
                    tracing::warn!(attachment_id = %attachment.id, error = %cleanup, "could not undo a stored file; the reaper will");
                }
            }
            if drain(&mut parts).await {
                error.error_response()
            } else {
                closing(error)
            }
        }
    }
}

/// Stores every `file` part in order; on failure returns the error and what was stored.
async fn store_files(
    dependencies: &Dependencies,
    settings: &Settings,
    metrics: &Metrics,
    writer: &Writer,
    post_id: &str,
    parts: &mut Parts,
) -> Result<Vec<Attachment>, (ApiError, Vec<Attachment>)> {
    let mut stored = Vec::new();
    let post_id: PostId = match parse_id(post_id, "post") {
        Ok(id) => id,
        Err(error) => return Err((error, stored)),
    };
    if let Err(error) = authorize(dependencies, writer, post_id).await {
        return Err((error, stored));
    }
    let stall = Duration::from_secs(settings.server.request_body_timeout_secs);
    while let Some(field) = parts.next().await {
        let field = match field {
            Ok(field) => field,
            Err(error) => return Err((multipart_error(error), stored)),
        };
        if field.name() != Some("file") {
            return Err((
                ApiError::BadRequest("the form may only have parts named `file`".into()),
                stored,
            ));
        }
        if stored.len() >= settings.uploads.max_files_per_request as usize {
            return Err((
                ApiError::TooLarge(format!(
                    "at most {} files per request",
                    settings.uploads.max_files_per_request
                )),
                stored,
            ));
        }
        let Some(filename) = field
            .content_disposition()
            .and_then(|disposition| disposition.get_filename())
            .map(str::to_owned)
        else {
            return Err((
                ApiError::BadRequest("each `file` part needs a filename".into()),
                stored,
            ));
        };
        let filename = match FileName::parse(&filename) {
            Ok(name) => name,
            Err(error) => {
                return Err((
                    ApiError::BadRequest(format!("filename {}", error.message)),
                    stored,
                ));
            }
        };
        let declared = field.content_type().map(ToString::to_string);
        let _in_flight = metrics.upload_started();
        let result = dependencies
            .storage
            .upload_attachment(
                post_id,
                filename.as_str(),
                declared.as_deref(),
                with_stall_timeout(field, stall),
            )
            .await;
        match result {
            Ok(attachment) => {
                metrics.add_uploaded(attachment.size);
                stored.push(attachment);
            }
            Err(error) => {
                // A body that failed or stalled mid-file cannot be drained.
                if matches!(error, storage::StorageError::Client(_)) {
                    parts.failed = true;
                }
                return Err((not_found("post")(error), stored));
            }
        }
    }
    if stored.is_empty() {
        return Err((
            ApiError::BadRequest("the form has no part named `file`".into()),
            stored,
        ));
    }
    Ok(stored)
}

/// The parts of a form. It ends for good after the first error, since actix-multipart
/// must not be polled again then.
struct Parts {
    multipart: Multipart,
    finished: bool,
    failed: bool,
}

impl Parts {
    async fn next(&mut self) -> Option<Result<actix_multipart::Field, MultipartError>> {
        if self.finished {
            return None;
        }
        let item = self.multipart.next().await;
        match &item {
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                self.finished = true;
                self.failed = true;
            }
            None => self.finished = true,
        }
        item
    }
}

fn multipart_error(error: MultipartError) -> ApiError {
    match error {
        MultipartError::ContentTypeMissing
        | MultipartError::ContentTypeParse
        | MultipartError::ContentTypeIncompatible
        | MultipartError::BoundaryMissing => {
            ApiError::UnsupportedMediaType("the body must be multipart/form-data".into())
        }
        other => ApiError::BadRequest(format!("the multipart body is malformed: {other}")),
    }
}

/// The field's bytes, failing when no byte arrives for `stall`.
fn with_stall_timeout(
    field: actix_multipart::Field,
    stall: Duration,
) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
    Box::pin(futures::stream::unfold(
        Some(field),
        move |field| async move {
            let mut field = field?;
            match tokio::time::timeout(stall, field.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(field))),
                Ok(Some(Err(error))) => Some((Err(error.to_string()), None)),
                Ok(None) => None,
                Err(_) => Some((Err(format!("no data for {} s", stall.as_secs())), None)),
            }
        },
    ))
}

/// Reads and discards what is left of the body within a budget; whether all of it was
/// read (so the connection can be reused).
async fn drain(parts: &mut Parts) -> bool {
    let mut drained = 0u64;
    let started = Instant::now();
    let work = async {
        if parts.failed {
            return false;
        }
        while let Some(field) = parts.next().await {
            let Ok(mut field) = field else {
                return false;
            };
            while let Some(chunk) = field.next().await {
                let Ok(chunk) = chunk else {
                    return false;
                };
                drained += chunk.len() as u64;
                if drained > DRAIN_BUDGET {
                    return false;
                }
            }
        }
        true
    };
    let drained_all = tokio::time::timeout(DRAIN_TIME, work)
        .await
        .unwrap_or(false);
    tracing::debug!(drained_all, elapsed = ?started.elapsed(), "drained rejected request body");
    drained_all
}

/// The error response with `Connection: close`, for bodies left unread.
fn closing(error: ApiError) -> HttpResponse {
    let mut response = error.error_response();
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

/// List a post's attachments.
#[utoipa::path(
    get, path = "/v1/posts/{post_id}/attachments", tag = "attachments",
    params(("post_id" = String, Path, description = "Post id")),
    responses(
        (status = 200, description = "The attachments, oldest first", body = AttachmentList),
        (status = 404, description = "No such post", body = ProblemView, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down", body = ProblemView, content_type = "application/problem+json"),
    )
)]
pub async fn list_attachments(
    dependencies: web::Data<Dependencies>,
    _reader: Reader,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let post_id: PostId = parse_id(&path, "post")?;
    let attachments = dependencies
        .storage
        .list_attachments(post_id)
        .await
        .map_err(not_found("post"))?;
    Ok(HttpResponse::Ok().json(AttachmentList {
        items: attachments.into_iter().map(AttachmentView::from).collect(),
    }))
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
        (status = 404, description = "No such post or attachment", body = ProblemView, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down", body = ProblemView, content_type = "application/problem+json"),
    )
)]
pub async fn get_attachment(
    dependencies: web::Data<Dependencies>,
    _reader: Reader,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let attachment = find_attachment(&dependencies, &path).await?;
    Ok(HttpResponse::Ok().json(AttachmentView::from(attachment)))
}

/// Download an attachment's bytes (`HEAD` for the headers only).
#[utoipa::path(
    get, path = "/v1/posts/{post_id}/attachments/{attachment_id}/content", tag = "attachments",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("attachment_id" = String, Path, description = "Attachment id"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-99`"),
        ("If-None-Match" = Option<String>, Header, description = "ETag(s) the client holds"),
    ),
    responses(
        (status = 200, description = "The bytes, of their sniffed type", content_type = "*/*", body = Vec<u8>,
            headers(
                ("ETag" = String, description = "Strong tag from the SHA-256"),
                ("Accept-Ranges" = String, description = "`bytes`"),
                ("Content-Disposition" = String, description = "attachment with the file name"),
            )),
        (status = 206, description = "The requested range", content_type = "*/*", body = Vec<u8>,
            headers(("Content-Range" = String, description = "`bytes START-END/SIZE`"))),
        (status = 304, description = "The client's copy is current"),
        (status = 404, description = "No such post or attachment", body = ProblemView, content_type = "application/problem+json"),
        (status = 416, description = "The range is outside the content", body = ProblemView, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down", body = ProblemView, content_type = "application/problem+json"),
    )
)]
pub async fn download_attachment(
    dependencies: web::Data<Dependencies>,
    _reader: Reader,
    metrics: web::Data<Metrics>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let attachment = find_attachment(&dependencies, &path).await?;
    let etag = format!("\"{}\"", attachment.sha256);
    let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());

    if none_match(header(IF_NONE_MATCH), &etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((ETAG, etag))
            .finish());
    }
    let decision = decide_range(header(RANGE), attachment.size);
    let (mut response, range, length) = match decision {
        RangeDecision::Full => (HttpResponse::Ok(), None, attachment.size),
        RangeDecision::Partial(start, end) => {
            let mut partial = HttpResponse::PartialContent();
            partial.insert_header((
                CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", attachment.size),
            ));
            (
                partial,
                Some(ByteRange::Inclusive(start, end)),
                end - start + 1,
            )
        }
        RangeDecision::Unsatisfiable => {
            return Err(ApiError::RangeNotSatisfiable {
                size: Some(attachment.size),
            });
        }
    };
    download_headers(&mut response, &attachment, &etag);

    if request.method() == actix_web::http::Method::HEAD {
        // A sized body that is never polled: actix sends its length, not its bytes.
        let nothing = futures::stream::empty::<Result<Bytes, actix_web::Error>>();
        return Ok(response.body(SizedStream::new(length, nothing)));
    }
    // An empty object needs no S3 round trip.
    if attachment.size == 0 {
        return Ok(response.body(Bytes::new()));
    }
    let body = dependencies
        .storage
        .open_attachment(&attachment, range)
        .await
        .map_err(not_found("attachment"))?;
    let counted = metrics.clone();
    let stream = body.stream.map(move |chunk| {
        chunk
            .inspect(|bytes| counted.add_downloaded(bytes.len() as u64))
            .map_err(|error| {
                tracing::warn!(%error, "download interrupted");
                actix_web::error::ErrorServiceUnavailable("download interrupted")
            })
    });
    Ok(response.no_chunking(length).streaming(stream))
}

fn download_headers(response: &mut HttpResponseBuilder, attachment: &Attachment, etag: &str) {
    response
        .insert_header((CONTENT_TYPE, attachment.content_type.as_str()))
        .insert_header((ETAG, etag))
        .insert_header((ACCEPT_RANGES, "bytes"))
        .insert_header((
            CONTENT_DISPOSITION,
            content_disposition(&attachment.filename),
        ))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"));
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
        (status = 404, description = "No such post or attachment", body = ProblemView, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down", body = ProblemView, content_type = "application/problem+json"),
    )
)]
pub async fn attachment_url(
    dependencies: web::Data<Dependencies>,
    _reader: Reader,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let attachment = find_attachment(&dependencies, &path).await?;
    let url = dependencies
        .storage
        .presign_download(&attachment, &content_disposition(&attachment.filename))
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
        (status = 404, description = "No such post or attachment", body = ProblemView, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down", body = ProblemView, content_type = "application/problem+json"),
    )
)]
pub async fn delete_attachment(
    dependencies: web::Data<Dependencies>,
    writer: Writer,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (post_id, attachment_id) = ids(&path)?;
    authorize(&dependencies, &writer, post_id).await?;
    dependencies
        .storage
        .delete_attachment(post_id, attachment_id)
        .await
        .map_err(not_found("attachment"))?;
    Ok(HttpResponse::NoContent().finish())
}
