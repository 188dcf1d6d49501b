//! `/v1/posts/{post_id}/attachments/tus`: resumable uploads with tus 1.0.0 — the core
//! protocol and the creation, creation-with-upload, termination and expiration
//! extensions — so that any stock tus client can carry on an upload after losing its
//! connection, on any instance. Storage keeps the state (`storage::ResumableUpload`); these
//! handlers speak the protocol's headers.

use std::time::SystemTime;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_LOCATION, CONTENT_TYPE, HttpDate, LOCATION};
use actix_web::middleware::{DefaultHeaders, Next, from_fn};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, web};
use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use storage::{AttachmentId, NewResumableUpload, PostId, ResumableUpload};
use utoipa::ToSchema;

use crate::domain::parse_id;
use crate::http::error::{ApiError, method_not_allowed};
use crate::http::extractors::{Reader, Writer};
use crate::http::problem::Problem;
use crate::state::AppState;
use crate::uploads::{BodyPace, closing, declared_length, paced};

mod protocol;

use protocol::{UploadMetadata, header, parse_count, require_tus, upload_path};

/// The protocol version spoken, the only one.
pub const TUS_VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration";
/// The body type of a request that carries upload bytes.
const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// Registers the routes, before the attachment routes (`tus` is not an attachment id).
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/posts/{post_id}/attachments/tus")
                .wrap(tus_resumable())
                .route(web::post().to(create_upload))
                .route(web::method(Method::OPTIONS).to(capabilities))
                .default_service(method_not_allowed("POST, OPTIONS")),
        )
        .service(
            web::resource("/v1/posts/{post_id}/attachments/tus/{upload_id}")
                .wrap(from_fn(method_override))
                .wrap(tus_resumable())
                .route(web::head().to(upload_offset))
                .route(web::patch().to(append_bytes))
                .route(web::delete().to(terminate_upload))
                .route(web::method(Method::OPTIONS).to(capabilities))
                .default_service(method_not_allowed("HEAD, PATCH, DELETE, OPTIONS")),
        );
}

/// The `Tus-Resumable` header's one value, for the OpenAPI document.
#[derive(Debug, Serialize, ToSchema)]
pub enum TusResumable {
    /// tus 1.0.0
    #[serde(rename = "1.0.0")]
    V1,
}

/// tus clients behind proxies that allow only GET and POST send a `PATCH` or `DELETE` as
/// a `POST` naming its method in `X-HTTP-Method-Override`, which the protocol says to obey.
async fn method_override(
    mut request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let wanted = request
        .headers()
        .get("X-HTTP-Method-Override")
        .and_then(|value| value.to_str().ok())
        .and_then(|name| match name {
            "PATCH" => Some(Method::PATCH),
            "DELETE" => Some(Method::DELETE),
            _ => None,
        });
    if request.method() == Method::POST
        && let Some(method) = wanted
    {
        request.head_mut().method = method;
    }
    next.call(request).await
}

/// Every tus response names the protocol version.
fn tus_resumable() -> DefaultHeaders {
    DefaultHeaders::new().add(("Tus-Resumable", TUS_VERSION))
}

/// What the server supports, for a post that exists. Needs a token when reads do
/// (`auth.public_reads = false`).
#[utoipa::path(
    options, path = "/v1/posts/{post_id}/attachments/tus", tag = "resumable uploads",
    params(("post_id" = String, Path, description = "Post id")),
    responses(
        (status = 204, description = "The protocol version, extensions and largest upload", headers(
            ("Tus-Version" = String, description = "1.0.0"),
            ("Tus-Extension" = String, description = "creation,creation-with-upload,termination,expiration"),
            ("Tus-Max-Size" = u64, description = "The largest upload, in bytes"),
        )),
        (status = 404, description = "No such post", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn capabilities(
    // Whether the post exists is for those who may read it.
    _reader: Reader,
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let post_id: PostId = parse_id(
        request.match_info().get("post_id").unwrap_or_default(),
        "post",
    )?;
    state.bounded(state.storage.post_author(post_id)).await?;
    Ok(HttpResponse::NoContent()
        .insert_header(("Tus-Version", TUS_VERSION))
        .insert_header(("Tus-Extension", EXTENSIONS))
        .insert_header((
            "Tus-Max-Size",
            state.settings.uploads.max_file_bytes.get().to_string(),
        ))
        .finish())
}

/// Create a resumable upload (tus creation), optionally with its first bytes
/// (creation-with-upload). `Upload-Metadata` must carry `filename`; `filetype` is the
/// declared type, verified against the bytes at the end.
#[utoipa::path(
    post, path = "/v1/posts/{post_id}/attachments/tus", tag = "resumable uploads",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("Tus-Resumable" = TusResumable, Header, description = "The protocol version: 1.0.0"),
        ("Upload-Length" = u64, Header, description = "The file's exact size in bytes"),
        ("Upload-Metadata" = String, Header, description = "Comma-separated `key base64(value)` pairs: `filename` (required), `filetype`"),
    ),
    request_body(content = Option<Vec<u8>>, content_type = "application/offset+octet-stream",
        description = "Optional: the first bytes of the file (creation-with-upload)"),
    responses(
        (status = 201, description = "Created; continue at `Location`", headers(
            ("Location" = String, description = "The upload's URL"),
            ("Upload-Offset" = u64, description = "Bytes stored"),
            ("Upload-Expires" = String, description = "When an unfinished upload expires (HTTP date)"),
        )),
        (status = 400, description = "A missing or malformed tus header, or bad metadata", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Longer than allowed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A declared or sniffed type that is not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "You have as many unfinished or running uploads as one may", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_upload(
    state: web::Data<AppState>,
    writer: Result<Writer, ApiError>,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let created = async {
        let writer = writer?;
        require_tus(request.headers())?;
        let post_id: PostId = parse_id(&path, "post")?;
        let length = match (
            header(request.headers(), "Upload-Length"),
            header(request.headers(), "Upload-Defer-Length"),
        ) {
            (Some(length), _) => parse_count(length, "Upload-Length")?,
            (None, Some(_)) => {
                return Err(ApiError::BadRequest(
                    "Upload-Defer-Length is not supported: send Upload-Length".into(),
                ));
            }
            (None, None) => return Err(ApiError::BadRequest("Upload-Length is required".into())),
        };
        let raw_metadata = header(request.headers(), "Upload-Metadata").unwrap_or_default();
        let metadata = UploadMetadata::parse(raw_metadata)?;
        let upload = state
            .bounded(state.storage.create_resumable_upload(
                post_id,
                NewResumableUpload {
                    filename: metadata.filename.as_str(),
                    declared_type: metadata.content_type.as_deref(),
                    length,
                    metadata: raw_metadata,
                    owner: writer.subject(),
                },
            ))
            .await?;
        Ok((upload, writer))
    }
    .await;
    let (upload, writer) = match created {
        Ok(created) => created,
        Err(error) => return closing(error),
    };
    let location = upload_path(&upload);
    let carries_bytes = header(request.headers(), CONTENT_TYPE.as_str()) == Some(OFFSET_STREAM);
    if !carries_bytes || upload.attachment.is_some() {
        return upload_response(HttpResponse::Created(), &upload)
            .insert_header((LOCATION, location))
            .finish();
    }
    let declared = declared_length(&request);
    match append(
        &state,
        &writer,
        (upload.post_id, upload.id),
        0,
        paced(payload, BodyPace::new(&state.settings)),
        declared,
    )
    .await
    {
        Ok(upload) => upload_response(HttpResponse::Created(), &upload)
            .insert_header((LOCATION, location))
            .finish(),
        Err(error) => {
            // The upload exists: say where, so the client can resume it.
            let mut response = closing(error);
            if let Ok(value) = location.parse() {
                response.headers_mut().insert(LOCATION, value);
            }
            response
        }
    }
}

/// Where an upload stands (tus HEAD): its offset, length, metadata and expiry. An upload
/// whose every byte is stored but which is not an attachment yet (its last request failed
/// on the way) is finished first: the full offset is only ever told with the attachment.
#[utoipa::path(
    head, path = "/v1/posts/{post_id}/attachments/tus/{upload_id}", tag = "resumable uploads",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("upload_id" = String, Path, description = "Upload id, from `Location`"),
        ("Tus-Resumable" = TusResumable, Header, description = "The protocol version: 1.0.0"),
    ),
    responses(
        (status = 200, description = "The upload's state; no body", headers(
            ("Upload-Offset" = u64, description = "Bytes stored: resume from here"),
            ("Upload-Length" = u64, description = "The upload's length"),
            ("Upload-Metadata" = String, description = "The metadata sent at creation"),
            ("Cache-Control" = String, description = "no-store"),
        )),
        (status = 404, description = "No such upload"),
        (status = 410, description = "The upload expired"),
        (status = 415, description = "Finishing it found a type that is not allowed: the upload is ended", body = Problem, content_type = "application/problem+json"),
        (status = 423, description = "Another request is finishing or writing it; retry", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Finishing it failed for now (S3 or MongoDB); retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upload_offset(
    state: web::Data<AppState>,
    writer: Result<Writer, ApiError>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let writer = writer?;
    require_tus(request.headers())?;
    let (post_id, upload_id) = upload_ids(&path)?;
    authorize_upload(&state, &writer, post_id).await?;
    let mut upload = state
        .bounded(state.storage.resumable_upload(post_id, upload_id))
        .await?;
    if upload.attachment.is_none() && upload.offset == upload.length {
        // Every byte is stored, but the upload did not become an attachment (its last
        // request failed on the way, or its instance died): finish it now, since a client
        // told the full offset takes the upload as done.
        let no_more = futures::stream::empty::<Result<Bytes, String>>();
        let ids = (post_id, upload_id);
        upload = append(&state, &writer, ids, upload.length, no_more, Some(0)).await?;
    }
    let mut response = upload_response(HttpResponse::Ok(), &upload);
    response
        .insert_header(("Upload-Length", upload.length.to_string()))
        .insert_header((CACHE_CONTROL, "no-store"));
    if !upload.metadata.is_empty() {
        response.insert_header(("Upload-Metadata", upload.metadata.as_str()));
    }
    Ok(response.finish())
}

/// Append bytes at `Upload-Offset` (tus PATCH). Full parts are stored as they fill and
/// the rest is kept when the request ends or is cut, so the next `Upload-Offset` counts
/// every byte received. With the last byte the file is verified (size, sniffed type,
/// SHA-256) and becomes an attachment, named by `Content-Location`.
#[utoipa::path(
    patch, path = "/v1/posts/{post_id}/attachments/tus/{upload_id}", tag = "resumable uploads",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("upload_id" = String, Path, description = "Upload id, from `Location`"),
        ("Tus-Resumable" = TusResumable, Header, description = "The protocol version: 1.0.0"),
        ("Upload-Offset" = u64, Header, description = "Where these bytes start: the upload's current offset"),
    ),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream", description = "The next bytes of the file"),
    responses(
        (status = 204, description = "Stored", headers(
            ("Upload-Offset" = u64, description = "Bytes stored now"),
            ("Upload-Expires" = String, description = "When the unfinished upload expires (HTTP date)"),
            ("Content-Location" = String, description = "Once complete: the attachment"),
        )),
        (status = 400, description = "A missing or malformed `Upload-Offset`, or a body that failed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such upload", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`Upload-Offset` is not the upload's offset", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The upload expired", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The bytes go past the upload's length", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/offset+octet-stream`, or a type that is not allowed (the upload is ended)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The stored file cannot make the upload (a part was sent again with other bytes, or an image does not decode or is over a `media.*` limit): the upload is ended", body = Problem, content_type = "application/problem+json"),
        (status = 423, description = "Another request is writing to this upload; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn append_bytes(
    state: web::Data<AppState>,
    writer: Result<Writer, ApiError>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> HttpResponse {
    let appended = async {
        let writer = writer?;
        require_tus(request.headers())?;
        let (post_id, upload_id) = upload_ids(&path)?;
        if header(request.headers(), CONTENT_TYPE.as_str()) != Some(OFFSET_STREAM) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body must be {OFFSET_STREAM}"
            )));
        }
        let offset = match header(request.headers(), "Upload-Offset") {
            Some(offset) => parse_count(offset, "Upload-Offset")?,
            None => return Err(ApiError::BadRequest("Upload-Offset is required".into())),
        };
        authorize_upload(&state, &writer, post_id).await?;
        let declared = declared_length(&request);
        append(
            &state,
            &writer,
            (post_id, upload_id),
            offset,
            paced(payload, BodyPace::new(&state.settings)),
            declared,
        )
        .await
    }
    .await;
    match appended {
        Ok(upload) => upload_response(HttpResponse::NoContent(), &upload).finish(),
        Err(error) => closing(error),
    }
}

/// End an upload and remove what it stored (tus termination).
#[utoipa::path(
    delete, path = "/v1/posts/{post_id}/attachments/tus/{upload_id}", tag = "resumable uploads",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("upload_id" = String, Path, description = "Upload id, from `Location`"),
        ("Tus-Resumable" = TusResumable, Header, description = "The protocol version: 1.0.0"),
    ),
    responses(
        (status = 204, description = "Ended; nothing of it is kept"),
        (status = 404, description = "No such unfinished upload", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn terminate_upload(
    state: web::Data<AppState>,
    writer: Result<Writer, ApiError>,
    request: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let writer = writer?;
    require_tus(request.headers())?;
    let (post_id, upload_id) = upload_ids(&path)?;
    authorize_upload(&state, &writer, post_id).await?;
    state
        .bounded(state.storage.terminate_resumable_upload(post_id, upload_id))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Streams `bytes` (`declared` of them, when the request says) into the upload, admitted
/// like every streamed upload: it holds the upload's stored tail, less than a part, and
/// its body. The work runs as a task of its own, so that a client going away mid-body
/// cannot cancel it before the bytes received are saved.
async fn append<S>(
    state: &AppState,
    writer: &Writer,
    (post_id, upload_id): (PostId, AttachmentId),
    offset: u64,
    bytes: S,
    declared: Option<u64>,
) -> Result<ResumableUpload, ApiError>
where
    S: Stream<Item = Result<Bytes, String>> + Unpin + 'static,
{
    let tail = state.settings.s3.part_size_bytes;
    let ticket = state.admit(writer, declared.map(|body| body.saturating_add(tail)))?;
    let _in_flight = state.metrics.upload_started();
    let storage = state.storage.clone();
    let task = actix_web::rt::spawn(async move {
        let _ticket = ticket;
        storage
            .append_to_resumable_upload(post_id, upload_id, offset, bytes)
            .await
    });
    let upload = task
        .await
        .map_err(|_| ApiError::Internal("the upload task failed"))??;
    if let Some(attachment) = &upload.attachment {
        state.metrics.add_uploaded(attachment.size);
    }
    Ok(upload)
}

/// The writer may add to the post; an upload of a post that is gone is not found.
async fn authorize_upload(
    state: &AppState,
    writer: &Writer,
    post_id: PostId,
) -> Result<(), ApiError> {
    state
        .authorize(writer, post_id)
        .await
        .map_err(|error| match error {
            ApiError::NotFound(_) => ApiError::NotFound("upload"),
            other => other,
        })
}

/// A response with the headers every answer about an upload carries.
fn upload_response(
    mut builder: HttpResponseBuilder,
    upload: &ResumableUpload,
) -> HttpResponseBuilder {
    builder.insert_header(("Upload-Offset", upload.offset.to_string()));
    match &upload.attachment {
        Some(attachment) => {
            builder.insert_header((
                CONTENT_LOCATION,
                format!(
                    "/v1/posts/{}/attachments/{}",
                    attachment.post_id, attachment.id
                ),
            ));
        }
        None => {
            builder.insert_header(("Upload-Expires", http_date(upload.expires_at)));
        }
    }
    builder
}

fn http_date(at: SystemTime) -> String {
    HttpDate::from(at).to_string()
}

fn upload_ids(path: &(String, String)) -> Result<(PostId, AttachmentId), ApiError> {
    Ok((parse_id(&path.0, "upload")?, parse_id(&path.1, "upload")?))
}
