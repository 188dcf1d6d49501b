//! The OpenAPI 3.1 document, generated from the handlers, served at `/openapi.json`.

use actix_web::http::header::LOCATION;
use actix_web::{HttpResponse, web};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::config::Settings;
use crate::http::error::method_not_allowed;
use crate::http::problem::PROBLEM_JSON;
use crate::state::AppState;

use crate::routes::{
    attachments, content, direct_uploads, multipart, ops, posts, tus, usage, variants,
};

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
        multipart::upload_raw_attachment,
        attachments::list_attachments,
        attachments::get_attachment,
        content::download_attachment,
        variants::download_variant,
        variants::variant_url,
        attachments::attachment_url,
        attachments::delete_attachment,
        direct_uploads::begin_upload,
        direct_uploads::complete_upload,
        tus::capabilities,
        tus::create_upload,
        tus::upload_offset,
        tus::append_bytes,
        tus::terminate_upload,
        usage::get_usage,
        ops::healthz,
        ops::readyz,
        ops::metrics,
        openapi_json,
    ),
    components(schemas(tus::TusResumable)),
    modifiers(&CommonResponses),
    tags(
        (name = "posts", description = "Posts"),
        (name = "attachments", description = "Files of a post, streamed through the service"),
        (name = "uploads", description = "Direct uploads to S3 by presigned URL"),
        (name = "resumable uploads", description = "Resumable uploads with the tus 1.0.0 protocol, for large files over flaky networks"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The responses every operation of a kind shares, declared here once: the bearer scheme
/// and, on every `/v1` operation, its security requirement, 401, 403 where ownership is
/// checked, and 503; on every operation with a JSON body, 400, 413, 415 and 422; on every
/// operation that adds an attachment, 404 and 409, and where its body is the file, 429,
/// 503 at capacity and 422 for an image refused; on every tus operation, 412. An
/// operation that declares one of these itself keeps its own, more specific, description.
#[derive(Debug)]
struct CommonResponses;

#[cfg(test)]
mod tests {
    use super::allowed_types_pattern;

    #[test]
    fn the_pattern_of_an_allow_list_names_each_type_in_either_case() {
        assert_eq!(
            allowed_types_pattern(&["image/*".into(), "application/vnd.x+json".into()]),
            "^([iI][mM][aA][gG][eE]/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}|[aA][pP][pP][lL][iI][cC][aA][tT][iI][oO][nN]/[vV][nN][dD]\\.[xX]\\+[jJ][sS][oO][nN])$"
        );
    }

    #[test]
    fn any_type_allowed_is_any_media_type() {
        assert_eq!(
            allowed_types_pattern(&["*/*".into()]),
            "^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
        );
    }
}

impl Modify for CommonResponses {
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
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            let operations = [
                ("get", &mut item.get, false),
                ("options", &mut item.options, false),
                // A resumable upload's state is its writer's only.
                ("head", &mut item.head, path.contains("/tus/")),
                ("post", &mut item.post, true),
                ("patch", &mut item.patch, true),
                ("delete", &mut item.delete, true),
            ];
            for (method, operation, writes) in operations {
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
                let json_body = operation
                    .request_body
                    .as_ref()
                    .is_some_and(|body| match body {
                        RefOr::T(body) => body.content.contains_key("application/json"),
                        RefOr::Ref(_) => false,
                    });
                // Specific first: the first description of a status stays.
                let mut common = Vec::new();
                let (adds, streams) = upload_kind(method, path);
                if streams {
                    common.extend([
                        (
                            "429",
                            "You have as many uploads in flight as one may; see `Retry-After`",
                        ),
                        (
                            "503",
                            "The service is at its upload capacity, or a dependency is down; see `Retry-After`",
                        ),
                        (
                            "422",
                            "An image that does not decode or is over a `media.*` limit (named), or a file in which the scanner found malware (its signature named); nothing is kept",
                        ),
                    ]);
                }
                if adds {
                    common.extend([
                        ("404", "No such post"),
                        ("409", "The post has as many attachments as one may"),
                        (
                            "507",
                            "The upload would take you past your quota (`uploads.quota_bytes_per_user`); `quota_bytes` and `used_bytes` say where you stand",
                        ),
                    ]);
                }
                if path.contains("/attachments/tus") && method != "options" {
                    common.push(("412", "Not `Tus-Resumable: 1.0.0`"));
                }
                common.extend([
                    ("401", "No valid bearer token (see `WWW-Authenticate`)"),
                    (
                        "503",
                        "A dependency is down; retry after `Retry-After` seconds",
                    ),
                ]);
                if writes && path != "/v1/posts" {
                    common.push(("403", "Not the post's author"));
                }
                if json_body {
                    common.extend([
                        ("400", "Malformed JSON"),
                        ("413", "The JSON body is too large"),
                        ("415", "Not JSON"),
                        ("422", "Invalid fields"),
                    ]);
                }
                let responses = &mut operation.responses.responses;
                for (status, description) in common {
                    responses
                        .entry(status.into())
                        .or_insert_with(|| problem(description));
                }
            }
        }
    }
}

/// Whether an operation adds an attachment to a post, and whether its body is the file
/// (admitted to the upload memory, so 429 and 503 at capacity).
fn upload_kind(method: &str, path: &str) -> (bool, bool) {
    let streamed_post = method == "post"
        && ["/attachments", "/attachments/raw", "/attachments/tus"]
            .iter()
            .any(|end| path.ends_with(end));
    let adds = streamed_post || method == "post" && path.ends_with("/attachments/uploads");
    let streams = streamed_post
        || method == "patch" && path.contains("/attachments/tus/") && path.ends_with('}');
    (adds, streams)
}

/// A problem-details response with `description`.
fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

/// Registers `/openapi.json` and the API reference at `/docs/`: Swagger UI, built into the
/// binary (nothing is fetched at run time), reading `/openapi.json`, with bearer tokens
/// usable from its Authorize button.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/openapi.json")
                .route(web::get().to(openapi_json))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/docs")
                .route(web::get().to(|| async {
                    HttpResponse::PermanentRedirect()
                        .insert_header((LOCATION, "/docs/"))
                        .finish()
                }))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            SwaggerUi::new("/docs/{_:.*}").config(
                Config::new(["/openapi.json"])
                    // The default validator is a public web service: no calls out.
                    .validator_url("none")
                    .persist_authorization(true)
                    .try_it_out_enabled(true),
            ),
        );
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(document(&state.settings))
}

/// The document with this instance's configured limits filled in, so that a request the
/// document calls valid is one the service accepts.
pub fn document(settings: &Settings) -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    let Some(components) = document.components.as_mut() else {
        return document;
    };
    if let Some(RefOr::T(Schema::Object(form))) = components.schemas.get_mut("UploadForm")
        && let Some(RefOr::T(Schema::Array(files))) = form.properties.get_mut("file")
    {
        files.max_items = Some(settings.uploads.max_files_per_request.get() as usize);
        files.min_items = Some(1);
        form.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
    }
    if let Some(RefOr::T(Schema::Object(begin))) = components.schemas.get_mut("BeginUpload") {
        if let Some(RefOr::T(Schema::Object(size))) = begin.properties.get_mut("size") {
            size.maximum = Some(settings.uploads.max_file_bytes.get().into());
        }
        if let Some(RefOr::T(Schema::Object(content_type))) =
            begin.properties.get_mut("content_type")
        {
            content_type.pattern = Some(allowed_types_pattern(
                &settings.uploads.allowed_content_types,
            ));
        }
    }
    document
}

/// A restricted name of RFC 6838, in either case.
const RESTRICTED_NAME: &str = "[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}";

/// A pattern matching exactly the media types the allow-list admits, in any letter case
/// (media types are case-insensitive).
fn allowed_types_pattern(allowed: &[String]) -> String {
    if allowed.iter().any(|allowed| allowed == "*/*") {
        return format!("^{RESTRICTED_NAME}/{RESTRICTED_NAME}$");
    }
    let either_case = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                } else if c.is_ascii_alphanumeric() || c == '/' {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect()
    };
    let alternatives: Vec<String> = allowed
        .iter()
        .map(|allowed| match allowed.strip_suffix("/*") {
            Some(kind) => format!("{}/{RESTRICTED_NAME}", either_case(kind)),
            None => either_case(allowed),
        })
        .collect();
    format!("^({})$", alternatives.join("|"))
}
