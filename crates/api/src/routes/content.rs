//! `GET|HEAD /v1/posts/{post_id}/attachments/{attachment_id}/content`: the bytes, streamed
//! from S3, with ranges and conditional requests; [`serve`] answers variants the same way.

use actix_web::body::SizedStream;
use std::future::Future;

use actix_web::http::header::{
    ACCEPT_RANGES, CONTENT_TYPE, CacheControl, ContentDisposition, ContentRange, ContentRangeSpec,
    ETag, EntityTag, IfNoneMatch, Range, X_CONTENT_TYPE_OPTIONS,
};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures::StreamExt;
use storage::{ByteRange, ObjectBody, StorageError};

use crate::http::conditional::{RangeDecision, content_disposition, decide_range, none_match};
use crate::http::error::{ApiError, method_not_allowed};
use crate::http::extractors::Reader;
use crate::http::problem::Problem;
use crate::routes::attachments::find_attachment;
use crate::state::AppState;

/// Registers the route.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/v1/posts/{post_id}/attachments/{attachment_id}/content")
            .route(web::get().to(download_attachment))
            .route(web::head().to(download_attachment))
            .default_service(method_not_allowed("GET, HEAD")),
    );
}

/// Download an attachment's bytes (`HEAD` for the headers only).
#[utoipa::path(
    method(get, head), path = "/v1/posts/{post_id}/attachments/{attachment_id}/content", tag = "attachments",
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
        (status = 404, description = "No such post or attachment", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range is outside the content", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn download_attachment(
    state: web::Data<AppState>,
    _reader: Reader,
    request: HttpRequest,
    path: web::Path<(String, String)>,
    range: Option<web::Header<Range>>,
    if_none_match: Option<web::Header<IfNoneMatch>>,
) -> Result<HttpResponse, ApiError> {
    let attachment = find_attachment(&state, &path).await?;
    let served = Served {
        content_type: &attachment.content_type,
        size: attachment.size,
        sha256: &attachment.sha256,
        disposition: content_disposition(&attachment.filename),
        cache_control: None,
    };
    let open = |range| state.storage.open_attachment(&attachment, range);
    serve(&state, &request, range, if_none_match, served, open).await
}

/// How a stored object is served.
#[derive(Debug)]
pub struct Served<'a> {
    /// Its type.
    pub content_type: &'a str,
    /// Its size in bytes.
    pub size: u64,
    /// Its hex SHA-256, the strong `ETag`.
    pub sha256: &'a str,
    /// `Content-Disposition`.
    pub disposition: ContentDisposition,
    /// `Cache-Control`, if it can be cached.
    pub cache_control: Option<CacheControl>,
}

/// Answers a `GET` or `HEAD` of a stored object: 304 for a current `If-None-Match`, 206
/// for a satisfiable `Range`, else the whole; the bytes streamed from what `open` opens.
pub async fn serve<Open, Opening>(
    state: &AppState,
    request: &HttpRequest,
    range: Option<web::Header<Range>>,
    if_none_match: Option<web::Header<IfNoneMatch>>,
    served: Served<'_>,
    open: Open,
) -> Result<HttpResponse, ApiError>
where
    Open: FnOnce(Option<ByteRange>) -> Opening,
    Opening: Future<Output = Result<ObjectBody, StorageError>>,
{
    let etag = EntityTag::new_strong(served.sha256.to_owned());
    if none_match(if_none_match.as_deref(), &etag) {
        let mut response = HttpResponse::NotModified();
        response.insert_header(ETag(etag));
        if let Some(cache_control) = served.cache_control {
            response.insert_header(cache_control);
        }
        return Ok(response.finish());
    }
    let size = served.size;
    let (mut response, range, length) = match decide_range(range.as_deref(), size) {
        RangeDecision::Full => (HttpResponse::Ok(), None, size),
        RangeDecision::Partial(start, end) => {
            let mut partial = HttpResponse::PartialContent();
            partial.insert_header(ContentRange(ContentRangeSpec::Bytes {
                range: Some((start, end)),
                instance_length: Some(size),
            }));
            (
                partial,
                Some(ByteRange::Inclusive(start, end)),
                end - start + 1,
            )
        }
        RangeDecision::Unsatisfiable => {
            return Err(ApiError::RangeNotSatisfiable { size: Some(size) });
        }
    };
    response
        .insert_header((CONTENT_TYPE, served.content_type))
        .insert_header(ETag(etag))
        .insert_header((ACCEPT_RANGES, "bytes"))
        .insert_header(served.disposition)
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if let Some(cache_control) = served.cache_control {
        response.insert_header(cache_control);
    }

    if request.method() == actix_web::http::Method::HEAD {
        // A sized body that is never polled: actix sends its length, not its bytes.
        let nothing = futures::stream::empty::<Result<Bytes, actix_web::Error>>();
        return Ok(response.body(SizedStream::new(length, nothing)));
    }
    // An empty object needs no S3 round trip.
    if size == 0 {
        return Ok(response.body(Bytes::new()));
    }
    let body = open(range).await?;
    let counted = state.metrics.clone();
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
