//! `POST /v1/posts/{post_id}/attachments`: files of a multipart form, and
//! `POST /v1/posts/{post_id}/attachments/raw`: one file as the raw body, each streamed to
//! S3 as it arrives. A rejected request stores
//! nothing, and its unread rest is drained within a budget or the connection is closed.

use std::time::{Duration, Instant};

use actix_multipart::{Multipart, MultipartError};
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use futures::StreamExt;
use serde::Deserialize;
use storage::{PostId, StagedAttachment};
use utoipa::{IntoParams, ToSchema};

use crate::config::Settings;
use crate::domain::{FileName, parse_id};
use crate::http::error::ApiError;
use crate::http::extractors::Writer;
use crate::http::problem::Problem;
use crate::http::views::AttachmentList;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::uploads::{BodyPace, closing, declared_length, paced};

/// Multipart framing allowed per file on top of its bytes.
const PART_OVERHEAD: u64 = 64 * 1024;
/// After a rejected upload, at most this much of the rest is read and discarded before
/// answering; beyond it the connection is closed instead.
const DRAIN_BUDGET: u64 = 256 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The multipart form of an upload: one or more parts named `file`. It only describes the
/// body; the handler streams the parts.
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// The files, in order.
    #[schema(value_type = Vec<String>, format = Binary)]
    pub file: Vec<Vec<u8>>,
}

/// The query of a raw upload.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawUploadQuery {
    /// The file's name, kept as metadata: 1 to 255 characters, no control or invisible
    /// formatting characters.
    #[param(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u00AD\u061C\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF\uFFF9-\uFFFB]+$"
    )]
    filename: String,
}

/// Upload files as attachments of a post: a multipart form of `file` parts.
#[utoipa::path(
    post, path = "/v1/posts/{post_id}/attachments", tag = "attachments",
    params(("post_id" = String, Path, description = "Post id")),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored, in order", body = AttachmentList),
        (status = 400, description = "Malformed multipart body or file name", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "A file or the request is too large, or too many files", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not multipart, or a file type that is not allowed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload_attachments(
    state: web::Data<AppState>,
    writer: Result<Writer, ApiError>,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let body = Body::Form(Parts {
        multipart: Multipart::new(request.headers(), payload),
        finished: false,
        failed: false,
    });
    upload(&state, writer, &request, &path, body).await
}

/// Upload one file as the raw request body. Its `Content-Type` is the declared type; with
/// a `Content-Length`, the bytes go to S3 as they arrive, in one PutObject: the fastest
/// way in for a single file.
#[utoipa::path(
    post, path = "/v1/posts/{post_id}/attachments/raw", tag = "attachments",
    params(("post_id" = String, Path, description = "Post id"), RawUploadQuery),
    request_body(content = Option<Vec<u8>>, content_type = "application/octet-stream",
        description = "The file's bytes; an empty body is an empty file"),
    responses(
        (status = 201, description = "Stored", body = AttachmentList),
        (status = 400, description = "A bad file name, or a body that failed or did not match its `Content-Length`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The file is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A file type that is not allowed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload_raw_attachment(
    state: web::Data<AppState>,
    writer: Result<Writer, ApiError>,
    request: HttpRequest,
    path: web::Path<String>,
    query: web::Query<RawUploadQuery>,
    payload: web::Payload,
) -> HttpResponse {
    let headers = request.headers();
    let body = Body::Raw(RawFile {
        payload,
        filename: query.into_inner().filename,
        declared_type: headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        size: declared_length(&request),
        failed: false,
    });
    upload(&state, writer, &request, &path, body).await
}

/// Admits, stores and publishes the files of `body`, or refuses it storing nothing.
async fn upload(
    state: &AppState,
    writer: Result<Writer, ApiError>,
    request: &HttpRequest,
    path: &str,
    mut body: Body,
) -> HttpResponse {
    let (settings, metrics) = (&*state.settings, &*state.metrics);
    let declared_length = declared_length(request);
    let limits = &settings.uploads;
    let max_files = match body {
        Body::Form(_) => u64::from(limits.max_files_per_request.get()),
        Body::Raw(_) => 1,
    };
    let max_body = limits
        .max_file_bytes
        .get()
        .saturating_add(PART_OVERHEAD)
        .saturating_mul(max_files);
    if declared_length.is_some_and(|length| length > max_body) {
        // Refuse before reading a byte, and close: the client may still be sending.
        return closing(ApiError::TooLarge(format!(
            "the request body exceeds {max_body} bytes"
        )));
    }

    // Authenticated first: a request without a valid token is answered at once, its
    // body unread, and holds no upload memory.
    let writer = match writer {
        Ok(writer) => writer,
        Err(error) => return closing(error),
    };
    // Admitted before a byte of the body is read; the ticket holds the memory until the
    // response is sent.
    let _ticket = match state.admit(&writer, declared_length) {
        Ok(ticket) => ticket,
        Err(refusal) => return closing(refusal),
    };

    // Every file stays pending, invisible, until the last one is stored; then all turn
    // ready in one update. A failure, or a crash, leaves none of them visible.
    let mut staged = Vec::new();
    let stored = match &mut body {
        Body::Form(parts) => {
            store_files(state, settings, metrics, &writer, path, parts, &mut staged).await
        }
        Body::Raw(file) => {
            store_raw_file(state, settings, metrics, &writer, path, file, &mut staged).await
        }
    };
    let outcome = match stored {
        Ok(()) => state.bounded(state.storage.publish(staged)).await,
        Err(error) => {
            for file in staged {
                file.discard().await;
            }
            Err(error)
        }
    };
    match outcome {
        Ok(published) => HttpResponse::Created().json(AttachmentList {
            items: published
                .into_iter()
                .map(|attachment| state.attachment_view(attachment))
                .collect(),
        }),
        Err(error) => {
            if drain(&mut body).await {
                error.error_response()
            } else {
                closing(error)
            }
        }
    }
}

/// A request body: a form of files, or one raw file.
enum Body {
    Form(Parts),
    Raw(RawFile),
}

/// A raw body holding one file.
struct RawFile {
    payload: web::Payload,
    filename: String,
    declared_type: Option<String>,
    /// The `Content-Length`, when the client sent one.
    size: Option<u64>,
    /// Whether the body failed or stalled, so that it cannot be drained.
    failed: bool,
}

/// Stages the raw body as one file into `staged`.
async fn store_raw_file(
    state: &AppState,
    settings: &Settings,
    metrics: &Metrics,
    writer: &Writer,
    post_id: &str,
    file: &mut RawFile,
    staged: &mut Vec<StagedAttachment>,
) -> Result<(), ApiError> {
    let post_id: PostId = parse_id(post_id, "post")?;
    let filename = FileName::parse(&file.filename)
        .map_err(|error| ApiError::BadRequest(format!("filename {}", error.message)))?;
    let _in_flight = metrics.upload_started();
    let bytes = paced(&mut file.payload, BodyPace::new(settings));
    let declared = file.declared_type.as_deref();
    let result = match file.size {
        Some(size) => {
            state
                .storage
                .stage_sized_attachment(
                    post_id,
                    writer.subject(),
                    filename.as_str(),
                    declared,
                    size,
                    bytes,
                )
                .await
        }
        None => {
            state
                .storage
                .stage_attachment(
                    post_id,
                    writer.subject(),
                    filename.as_str(),
                    declared,
                    bytes,
                )
                .await
        }
    };
    match result {
        Ok(stored) => {
            metrics.add_uploaded(stored.attachment().size);
            staged.push(stored);
            Ok(())
        }
        Err(error) => {
            // A body that failed, stalled or did not match its length cannot be drained.
            if matches!(error, storage::StorageError::Client(_)) {
                file.failed = true;
            }
            Err(error.into())
        }
    }
}

/// Stages every `file` part in order into `staged`.
async fn store_files(
    state: &AppState,
    settings: &Settings,
    metrics: &Metrics,
    writer: &Writer,
    post_id: &str,
    parts: &mut Parts,
    staged: &mut Vec<StagedAttachment>,
) -> Result<(), ApiError> {
    let post_id: PostId = parse_id(post_id, "post")?;
    let pace = BodyPace::new(settings);
    while let Some(field) = parts.next().await {
        let field = match field {
            Ok(field) => field,
            Err(error) => return Err(multipart_error(error)),
        };
        if field.name() != Some("file") {
            return Err(ApiError::BadRequest(
                "the form may only have parts named `file`".into(),
            ));
        }
        if staged.len() >= settings.uploads.max_files_per_request.get() as usize {
            return Err(ApiError::TooLarge(format!(
                "at most {} files per request",
                settings.uploads.max_files_per_request
            )));
        }
        let Some(filename) = field
            .content_disposition()
            .and_then(|disposition| disposition.get_filename())
            .map(str::to_owned)
        else {
            return Err(ApiError::BadRequest(
                "each `file` part needs a filename".into(),
            ));
        };
        let filename = match FileName::parse(&filename) {
            Ok(name) => name,
            Err(error) => {
                return Err(ApiError::BadRequest(format!("filename {}", error.message)));
            }
        };
        let declared = field.content_type().map(ToString::to_string);
        let _in_flight = metrics.upload_started();
        let result = state
            .storage
            .stage_attachment(
                post_id,
                writer.subject(),
                filename.as_str(),
                declared.as_deref(),
                paced(field, pace.clone()),
            )
            .await;
        match result {
            Ok(file) => {
                metrics.add_uploaded(file.attachment().size);
                staged.push(file);
            }
            Err(error) => {
                // A body that failed or stalled mid-file cannot be drained.
                if matches!(error, storage::StorageError::Client(_)) {
                    parts.failed = true;
                }
                return Err(error.into());
            }
        }
    }
    if staged.is_empty() {
        return Err(ApiError::BadRequest(
            "the form has no part named `file`".into(),
        ));
    }
    Ok(())
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
        | MultipartError::BoundaryMissing => ApiError::UnsupportedMediaType(
            "the body must be multipart/form-data; one file may also be sent as the raw body to attachments/raw?filename=".into(),
        ),
        other => ApiError::BadRequest(format!("the multipart body is malformed: {other}")),
    }
}

/// Reads and discards what is left of the body within a budget; whether all of it was
/// read (so the connection can be reused).
async fn drain(body: &mut Body) -> bool {
    let mut drained = 0u64;
    let started = Instant::now();
    let work = async {
        let parts = match body {
            Body::Form(parts) if !parts.failed => parts,
            Body::Raw(file) if !file.failed => {
                while let Some(chunk) = file.payload.next().await {
                    let Ok(chunk) = chunk else {
                        return false;
                    };
                    drained += chunk.len() as u64;
                    if drained > DRAIN_BUDGET {
                        return false;
                    }
                }
                return true;
            }
            _ => return false,
        };
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
