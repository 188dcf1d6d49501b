//! `/v1/posts/{post_id}/attachments/uploads`: direct uploads to S3 by presigned PUT, then
//! completed (verified) through the service.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use storage::{AttachmentId, PostId};
use utoipa::ToSchema;

use crate::domain::{FileName, parse_id};
use crate::http::error::{ApiError, method_not_allowed};
use crate::http::extractors::Writer;
use crate::http::json::Object;
use crate::http::problem::FieldError;
use crate::http::problem::Problem;
use crate::http::views::{AttachmentView, DirectUploadView, timestamp};
use crate::state::AppState;

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/posts/{post_id}/attachments/uploads")
                .route(web::post().to(begin_upload))
                .default_service(method_not_allowed("POST")),
        )
        .service(
            web::resource("/v1/posts/{post_id}/attachments/uploads/{upload_id}/complete")
                .route(web::post().to(complete_upload))
                .default_service(method_not_allowed("POST")),
        );
}

/// What the client is about to upload.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BeginUpload {
    /// The file name, kept as metadata: 1 to 255 characters, no control or invisible
    /// formatting characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F\u00AD\u061C\u180E\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u206F\uFEFF\uFFF9-\uFFFB]+$"
    )]
    filename: String,
    /// The media type the PUT will carry; verified against the bytes on completion.
    #[schema(
        pattern = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
    )]
    content_type: String,
    /// Exact size in bytes.
    #[serde(deserialize_with = "whole_number")]
    #[schema(minimum = 0)]
    size: u64,
    /// The hex SHA-256 of the bytes, if the client knows it: completion refuses other
    /// bytes with 422. (An image's `sha256` afterwards is that of what is stored, without
    /// its metadata.)
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    sha256: Option<String>,
}

/// `type/subtype` of RFC 6838 restricted names.
pub(crate) fn is_media_type(text: &str) -> bool {
    let restricted_name = |name: &str| {
        name.len() <= 127
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
    };
    text.split_once('/')
        .is_some_and(|(kind, subtype)| restricted_name(kind) && restricted_name(subtype))
}

/// A non-negative integer, also when written as `12.0` (JSON Schema calls that an integer).
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(value) = number.as_u64() {
        return Ok(value);
    }
    match number.as_f64() {
        Some(value) if value >= 0.0 && value.fract() == 0.0 && value <= u64::MAX as f64 => {
            Ok(value as u64)
        }
        _ => Err(serde::de::Error::custom(
            "size must be a non-negative integer",
        )),
    }
}

/// Start a direct upload: a pending attachment and a presigned PUT.
#[utoipa::path(
    post, path = "/v1/posts/{post_id}/attachments/uploads", tag = "uploads",
    params(("post_id" = String, Path, description = "Post id")),
    request_body = BeginUpload,
    responses(
        (status = 201, description = "PUT the bytes to `url` with `headers`, then complete", body = DirectUploadView),
        (status = 400, description = "Malformed JSON or file name", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than allowed, or the JSON body is too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Type not allowed, or the body is not JSON", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn begin_upload(
    state: web::Data<AppState>,
    writer: Writer,
    path: web::Path<String>,
    body: web::Json<Object<BeginUpload>>,
) -> Result<HttpResponse, ApiError> {
    let post_id: PostId = parse_id(&path, "post")?;
    let BeginUpload {
        filename,
        content_type,
        size,
        sha256,
    } = body.into_inner().0;
    let filename = FileName::parse(&filename).map_err(|error| ApiError::Validation(vec![error]))?;
    if !is_media_type(&content_type) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "content_type",
            "must be a media type such as image/png",
        )]));
    }
    let sha256 = sha256
        .map(|text| {
            let mut digest = [0; 32];
            hex::decode_to_slice(&text, &mut digest).map(|()| digest)
        })
        .transpose()
        .map_err(|_| ApiError::invalid("sha256", "must be 64 hexadecimal digits"))?;
    let ticket = state
        .bounded(state.storage.begin_direct_upload(
            post_id,
            writer.subject(),
            filename.as_str(),
            &storage::essence(&content_type),
            size,
            sha256,
        ))
        .await?;
    Ok(HttpResponse::Created().json(DirectUploadView {
        upload_id: ticket.upload_id.to_string(),
        url: ticket.url.url,
        method: ticket.url.method,
        headers: ticket.url.headers.into_iter().collect(),
        expires_at: timestamp(ticket.url.expires_at),
        complete_url: format!(
            "/v1/posts/{post_id}/attachments/uploads/{}/complete",
            ticket.upload_id
        ),
    }))
}

/// Complete a direct upload: the service verifies the object and makes it an attachment.
#[utoipa::path(
    post, path = "/v1/posts/{post_id}/attachments/uploads/{upload_id}/complete", tag = "uploads",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("upload_id" = String, Path, description = "Upload id from the start of the upload"),
    ),
    responses(
        (status = 201, description = "The verified attachment", body = AttachmentView),
        (status = 404, description = "Unknown or expired upload", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The bytes are of a type that is not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The object is missing or does not match the declaration, or is an image that does not decode or is over a `media.*` limit; nothing is kept", body = Problem, content_type = "application/problem+json"),
        (status = 423, description = "Another completion of this upload is running; retry", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn complete_upload(
    state: web::Data<AppState>,
    writer: Writer,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let post_id: PostId = parse_id(&path.0, "upload")?;
    state
        .authorize(&writer, post_id)
        .await
        .map_err(|error| match error {
            ApiError::NotFound(_) => ApiError::NotFound("upload"),
            other => other,
        })?;
    let upload_id: AttachmentId = parse_id(&path.1, "upload")?;
    let attachment = state
        .storage
        .complete_direct_upload(post_id, upload_id)
        .await?;
    Ok(HttpResponse::Created().json(state.attachment_view(attachment)))
}

#[cfg(test)]
mod tests {
    use super::is_media_type;

    #[test]
    fn media_types_are_restricted_names() {
        assert!(is_media_type("image/png"));
        assert!(is_media_type("application/vnd.ms-excel"));
        assert!(!is_media_type("png"));
        assert!(!is_media_type("image/*"));
        assert!(!is_media_type("/png"));
    }
}
