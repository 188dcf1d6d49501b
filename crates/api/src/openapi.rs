//! The OpenAPI 3.1 document, generated from the handlers, served at `/openapi.json`.

use actix_web::{HttpResponse, web};
use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{OpenApi, ToSchema};

use crate::configuration::Settings;
use crate::error::method_not_allowed;

use crate::{attachments, ops, posts, uploads};

/// The service's API description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "posts-api", description = "Posts with file attachments; bytes in S3, metadata in MongoDB."),
    paths(
        posts::create_post,
        posts::list_posts,
        posts::get_post,
        posts::update_post,
        posts::delete_post,
        attachments::upload_attachments,
        attachments::list_attachments,
        attachments::get_attachment,
        attachments::download_attachment,
        attachments::attachment_url,
        attachments::delete_attachment,
        uploads::begin_upload,
        uploads::complete_upload,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        openapi_json,
    ),
    tags(
        (name = "posts", description = "Posts"),
        (name = "attachments", description = "Files of a post, streamed through the service"),
        (name = "uploads", description = "Direct uploads to S3 by presigned URL"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The multipart form of an upload: one or more parts named `file`. It only describes the
/// body; the handler streams the parts.
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// The files, in order.
    #[schema(value_type = Vec<String>, format = Binary)]
    pub file: Vec<Vec<u8>>,
}

/// Registers `/openapi.json`.
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/openapi.json")
            .route(web::get().to(openapi_json))
            .default_service(method_not_allowed("GET")),
    );
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub async fn openapi_json(settings: web::Data<Settings>) -> HttpResponse {
    HttpResponse::Ok().json(document(&settings))
}

/// The document with this instance's configured limits filled in.
pub fn document(settings: &Settings) -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    if let Some(components) = document.components.as_mut()
        && let Some(RefOr::T(Schema::Object(form))) = components.schemas.get_mut("UploadForm")
        && let Some(RefOr::T(Schema::Array(files))) = form.properties.get_mut("file")
    {
        files.max_items = Some(settings.uploads.max_files_per_request as usize);
        files.min_items = Some(1);
        form.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    }
    document
}
