//! `/v1/posts`: create, list, read, update, delete.

use actix_web::http::header::{ETag, IfMatch, IfNoneMatch, LOCATION};
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use storage::{NewPost, PostChanges, PostId};
use utoipa::{IntoParams, ToSchema};

use crate::domain::{PageLimit, PostBody, PostTitle, parse_id};
use crate::http::conditional::{conditional_json, if_match_versions, post_etag};
use crate::http::error::{ApiError, method_not_allowed};
use crate::http::extractors::{Reader, Writer};
use crate::http::json::Object;
use crate::http::problem::FieldError;
use crate::http::problem::Problem;
use crate::http::views::{PostPage, PostView};
use crate::state::AppState;

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/v1/posts")
                .route(web::post().to(create_post))
                .route(web::get().to(list_posts))
                .default_service(method_not_allowed("GET, POST")),
        )
        .service(
            web::resource("/v1/posts/{post_id}")
                .route(web::get().to(get_post))
                .route(web::patch().to(update_post))
                .route(web::delete().to(delete_post))
                .default_service(method_not_allowed("GET, PATCH, DELETE")),
        );
}

/// A new post.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreatePost {
    /// 1 to 200 characters, not all white space, no control characters.
    // The pattern spells out the `White_Space` characters `str::trim` removes, so that
    // every regex dialect reads the same set.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    title: String,
    /// Up to 100,000 characters.
    #[serde(default)]
    #[schema(max_length = 100000)]
    body: String,
}

/// Changes to a post; absent fields keep their value. The body must be a JSON object.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePost {
    /// 1 to 200 characters, not all white space, no control characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\u0000-\u001F\u007F-\u009F]*$")]
    title: Option<String>,
    /// Up to 100,000 characters.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, max_length = 100000)]
    body: Option<String>,
}

/// An optional field that, when present, must not be `null`.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
}

/// Paging of `GET /v1/posts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(nullable = false, pattern = "^([0-9a-f]{40})?$")]
    cursor: Option<String>,
}

fn validate_all(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Create a post.
#[utoipa::path(
    post, path = "/v1/posts", tag = "posts",
    request_body = CreatePost,
    responses(
        (status = 201, description = "Created", body = PostView,
            headers(
                ("Location" = String, description = "URL of the new post"),
                ("ETag" = String, description = "The post's version, for `If-Match` and `If-None-Match`"),
            )),
    )
)]
pub async fn create_post(
    state: web::Data<AppState>,
    writer: Writer,
    body: web::Json<Object<CreatePost>>,
) -> Result<HttpResponse, ApiError> {
    let CreatePost { title, body } = body.into_inner().0;
    let title = PostTitle::parse(title);
    let body = PostBody::parse(body);
    let (title, body) = match (title, body) {
        (Ok(title), Ok(body)) => (title, body),
        (title, body) => {
            return Err(ApiError::Validation(
                [title.err(), body.err()].into_iter().flatten().collect(),
            ));
        }
    };
    let post = state
        .bounded(state.storage.create_post(NewPost {
            title: title.into_inner(),
            body: body.into_inner(),
            author: writer.subject().map(str::to_owned),
        }))
        .await?;
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, format!("/v1/posts/{}", post.id)))
        .insert_header(ETag(post_etag(post.version)))
        .json(state.post_view(post)))
}

/// List posts, newest first.
#[utoipa::path(
    get, path = "/v1/posts", tag = "posts",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of posts", body = PostPage),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_posts(
    state: web::Data<AppState>,
    _reader: Reader,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = PageLimit::parse(query.limit)?;
    let page = state
        .bounded(state.storage.list_posts(
            limit.get(),
            query.cursor.as_deref().filter(|c| !c.is_empty()),
        ))
        .await?;
    Ok(HttpResponse::Ok().json(PostPage {
        items: page
            .items
            .into_iter()
            .map(|post| state.post_view(post))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Read a post. Its `ETag` is its version; with `If-None-Match` naming it, the answer is
/// 304 without a body.
#[utoipa::path(
    get, path = "/v1/posts/{post_id}", tag = "posts",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("If-None-Match" = Option<String>, Header, description = "An `ETag` of this post seen before"),
    ),
    responses(
        (status = 200, description = "The post", body = PostView, headers(
            ("ETag" = String, description = "The post's version"),
            ("Cache-Control" = String, description = "`public, no-cache` when reads need no token, else `private, no-cache`"),
        )),
        (status = 304, description = "Not modified since the `ETag` in `If-None-Match`"),
        (status = 404, description = "No such post", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_post(
    state: web::Data<AppState>,
    reader: Reader,
    path: web::Path<String>,
    if_none_match: Option<web::Header<IfNoneMatch>>,
) -> Result<HttpResponse, ApiError> {
    let post_id: PostId = parse_id(&path, "post")?;
    let post = state.bounded(state.storage.post(post_id)).await?;
    Ok(conditional_json(
        if_none_match.as_deref(),
        post_etag(post.version),
        reader.cache_control(),
        || state.post_view(post),
    ))
}

/// Change a post's title or body. With `If-Match`, only if the post is still at a version
/// it names (otherwise 412), so that concurrent editors do not overwrite each other.
#[utoipa::path(
    patch, path = "/v1/posts/{post_id}", tag = "posts",
    params(
        ("post_id" = String, Path, description = "Post id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` of the version the change was made against"),
    ),
    request_body = UpdatePost,
    responses(
        (status = 200, description = "The updated post", body = PostView,
            headers(("ETag" = String, description = "The post's new version"))),
        (status = 404, description = "No such post", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The post changed since the version `If-Match` names", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update_post(
    state: web::Data<AppState>,
    writer: Writer,
    path: web::Path<String>,
    if_match: Option<web::Header<IfMatch>>,
    body: web::Json<Object<UpdatePost>>,
) -> Result<HttpResponse, ApiError> {
    let post_id: PostId = parse_id(&path, "post")?;
    state.authorize(&writer, post_id).await?;
    let UpdatePost { title, body } = body.into_inner().0;
    let title = title.map(PostTitle::parse).transpose();
    let body = body.map(PostBody::parse).transpose();
    validate_all(
        [title.as_ref().err(), body.as_ref().err()]
            .into_iter()
            .flatten()
            .cloned()
            .collect(),
    )?;
    let changes = PostChanges {
        title: title.ok().flatten().map(PostTitle::into_inner),
        body: body.ok().flatten().map(PostBody::into_inner),
    };
    let expected_versions = if_match_versions(if_match.as_deref());
    let post = state
        .bounded(
            state
                .storage
                .update_post(post_id, changes, expected_versions.as_deref()),
        )
        .await?;
    Ok(HttpResponse::Ok()
        .insert_header(ETag(post_etag(post.version)))
        .json(state.post_view(post)))
}

/// Delete a post and its attachments.
#[utoipa::path(
    delete, path = "/v1/posts/{post_id}", tag = "posts",
    params(("post_id" = String, Path, description = "Post id")),
    responses(
        (status = 204, description = "Deleted, with its attachments' bytes"),
        (status = 404, description = "No such post", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_post(
    state: web::Data<AppState>,
    writer: Writer,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let post_id: PostId = parse_id(&path, "post")?;
    state.authorize(&writer, post_id).await?;
    state.bounded(state.storage.delete_post(post_id)).await?;
    Ok(HttpResponse::NoContent().finish())
}
