//! The OpenAPI 3.1 document, generated from the handlers, served at `/openapi.json`.

use actix_web::{HttpResponse, web};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::config::Settings;
use crate::http::error::method_not_allowed;

use crate::routes::{attachments, content, direct_uploads, multipart, ops, posts};

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
        multipart::upload_attachments,
        attachments::list_attachments,
        attachments::get_attachment,
        content::download_attachment,
        attachments::attachment_url,
        attachments::delete_attachment,
        direct_uploads::begin_upload,
        direct_uploads::complete_upload,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        openapi_json,
    ),
    modifiers(&BearerSecurity),
    tags(
        (name = "posts", description = "Posts"),
        (name = "attachments", description = "Files of a post, streamed through the service"),
        (name = "uploads", description = "Direct uploads to S3 by presigned URL"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer scheme, and to every `/v1` operation its security requirement and its
/// 401 (and, where ownership is checked, 403) responses, so they stay uniform.
#[derive(Debug)]
struct BearerSecurity;

impl Modify for BearerSecurity {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .build(),
                ),
            );
        }
        let problem = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ProblemView")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let operations = [
                (&mut item.get, false),
                (&mut item.head, false),
                (&mut item.post, true),
                (&mut item.patch, true),
                (&mut item.delete, true),
            ];
            for (operation, writes) in operations {
                let Some(operation) = operation.as_mut() else {
                    continue;
                };
                let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
                operation.security = Some(if writes {
                    vec![bearer]
                } else {
                    // Reads are public while `auth.public_reads` is on.
                    vec![SecurityRequirement::default(), bearer]
                });
                let responses = &mut operation.responses.responses;
                responses.insert(
                    "401".into(),
                    problem("No valid bearer token (see `WWW-Authenticate`)"),
                );
                if writes && path != "/v1/posts" {
                    responses.insert("403".into(), problem("Not the post's author"));
                }
            }
        }
    }
}

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
