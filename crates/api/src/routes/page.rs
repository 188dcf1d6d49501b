//! `/`: the web page, a plain HTML, CSS and JavaScript client of the API built into the
//! binary. Its assets are served under `/assets/` by content-hashed names, cached for a
//! year; the page itself is revalidated on every load. `POST /v1/dev/token` mints a token
//! for the page in local development with an HS256 secret, and does not exist otherwise.

use std::time::Duration;

use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use actix_web::{HttpResponse, HttpResponseBuilder, web};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Environment, Settings};
use crate::http::error::{ApiError, method_not_allowed};
use crate::http::json::Object;
use crate::state::AppState;

/// Files above this size go straight to S3 through a presigned PUT, when the page may
/// reach S3.
const DIRECT_UPLOAD_BYTES: u64 = 8 * 1024 * 1024;
const PERMISSIONS_POLICY: HeaderName = HeaderName::from_static("permissions-policy");
const CROSS_ORIGIN_OPENER_POLICY: HeaderName =
    HeaderName::from_static("cross-origin-opener-policy");
/// How long a development token lives.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

/// A file of the page, under a name that changes whenever its bytes do.
#[derive(Debug)]
struct Asset {
    name: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

impl Asset {
    fn new(stem: &str, extension: &str, content_type: &'static str, bytes: &'static [u8]) -> Self {
        let hash = hex::encode(&Sha256::digest(bytes)[..8]);
        Self {
            name: format!("{stem}.{hash}.{extension}"),
            content_type,
            bytes,
        }
    }
}

/// The page and its assets, ready to serve.
#[derive(Debug)]
pub struct WebPage {
    /// Rendered once; each response shares it.
    index: Bytes,
    assets: [Asset; 3],
    content_security_policy: String,
}

impl WebPage {
    /// The page of this instance; `dev_tokens` shows its development-token button.
    /// `storage_origin`, the origin of presigned S3 URLs, lets the page send large files
    /// straight to S3; without it every file goes through the service.
    pub fn new(dev_tokens: bool, storage_origin: Option<&str>) -> Self {
        let script = Asset::new(
            "app",
            "js",
            "text/javascript; charset=utf-8",
            include_bytes!("../../web/app.js"),
        );
        let style = Asset::new(
            "style",
            "css",
            "text/css; charset=utf-8",
            include_bytes!("../../web/style.css"),
        );
        let icon = Asset::new(
            "icon",
            "svg",
            "image/svg+xml",
            include_bytes!("../../web/icon.svg"),
        );
        let index = include_str!("../../web/index.html")
            .replace("{{SCRIPT}}", &script.name)
            .replace("{{STYLE}}", &style.name)
            .replace("{{ICON}}", &icon.name)
            .replace("{{DEV_TOKENS}}", if dev_tokens { "on" } else { "off" })
            .replace(
                "{{DIRECT_UPLOAD_BYTES}}",
                &storage_origin
                    .map_or(0, |_| DIRECT_UPLOAD_BYTES)
                    .to_string(),
            );
        // Scripts and styles only from this origin, no inline code; images from here or
        // made by the page (previews of fetched bytes); requests to the API and to S3.
        let content_security_policy = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
             connect-src 'self'{}; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
            storage_origin
                .map(|origin| format!(" {origin}"))
                .unwrap_or_default()
        );
        Self {
            index: Bytes::from(index),
            assets: [script, style, icon],
            content_security_policy,
        }
    }
}

/// Whether this instance mints development tokens: local, with an HS256 secret, and
/// authentication on.
pub fn mints_dev_tokens(settings: &Settings) -> bool {
    settings.environment == Environment::Local
        && !settings.auth.disabled
        && settings.auth.hs256_secret().is_some()
}

/// Registers the page, its assets and the development-token endpoint.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/")
                .route(web::get().to(page))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/assets/{name}")
                .route(web::get().to(asset))
                .default_service(method_not_allowed("GET")),
        )
        .service(
            web::resource("/v1/dev/token")
                .route(web::post().to(dev_token))
                .default_service(method_not_allowed("POST")),
        );
}

fn security_headers(response: &mut HttpResponseBuilder) -> &mut HttpResponseBuilder {
    response
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((REFERRER_POLICY, "no-referrer"))
        .insert_header((X_FRAME_OPTIONS, "DENY"))
        .insert_header((CROSS_ORIGIN_OPENER_POLICY, "same-origin"))
        .insert_header((
            PERMISSIONS_POLICY,
            "camera=(), microphone=(), geolocation=(), payment=()",
        ))
}

async fn page(page: web::Data<WebPage>) -> HttpResponse {
    security_headers(&mut HttpResponse::Ok())
        .insert_header((
            CONTENT_SECURITY_POLICY,
            page.content_security_policy.as_str(),
        ))
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(page.index.clone())
}

async fn asset(
    page: web::Data<WebPage>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let asset = page
        .assets
        .iter()
        .find(|asset| asset.name == *name)
        .ok_or(ApiError::NotFound("asset"))?;
    Ok(security_headers(&mut HttpResponse::Ok())
        .insert_header((CONTENT_TYPE, asset.content_type))
        .insert_header((CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(asset.bytes))
}

/// Who a development token is for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevTokenRequest {
    /// 1 to 64 letters, digits, `.`, `_` or `-`.
    subject: String,
}

/// A development token.
#[derive(Debug, Serialize)]
struct DevToken {
    token: String,
    subject: String,
    expires_in: u64,
}

async fn dev_token(
    state: web::Data<AppState>,
    body: web::Json<Object<DevTokenRequest>>,
) -> Result<HttpResponse, ApiError> {
    let settings = &state.settings;
    if !mints_dev_tokens(settings) {
        return Err(ApiError::NotFound("resource"));
    }
    let subject = body.into_inner().0.subject;
    let valid = (1..=64).contains(&subject.len())
        && subject
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
    if !valid {
        return Err(ApiError::invalid(
            "subject",
            "must be 1 to 64 letters, digits, `.`, `_` or `-`",
        ));
    }
    let token = crate::auth::mint_hs256(&settings.auth, &subject, DEV_TOKEN_TTL)
        .map_err(|_| ApiError::Internal("the development token could not be minted"))?;
    Ok(HttpResponse::Created()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(DevToken {
            token,
            subject,
            expires_in: DEV_TOKEN_TTL.as_secs(),
        }))
}
