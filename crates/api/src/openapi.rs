//! The OpenAPI 3.1 document, generated from the handlers, served at `/openapi.json`.

use actix_web::{HttpResponse, web};
use utoipa::{OpenApi, ToSchema};

use crate::{attachments, posts, uploads};

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
    ),
    tags(
        (name = "posts", description = "Posts"),
        (name = "attachments", description = "Files of a post, streamed through the service"),
        (name = "uploads", description = "Direct uploads to S3 by presigned URL"),
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
    config.route("/openapi.json", web::get().to(openapi_json));
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
