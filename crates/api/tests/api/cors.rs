//! Browsers on other origins: `server.cors_allowed_origins`.

use reqwest::Method;
use reqwest::header::HeaderMap;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, test_settings};

const APP: &str = "https://app.example.com";

async fn app_allowing(origins: &[&str]) -> TestApp {
    let mut settings = test_settings();
    settings.server.cors_allowed_origins = origins.iter().map(|o| (*o).to_owned()).collect();
    spawn_app_with(settings).await
}

async fn preflight(
    app: &TestApp,
    origin: &str,
    path: &str,
    method: &str,
    headers: &str,
) -> HeaderMap {
    let response = app
        .client
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", headers)
        .send()
        .await
        .expect("preflight");
    assert!(response.status().is_success(), "{}", response.status());
    response.headers().clone()
}

async fn get_from(app: &TestApp, origin: &str, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("origin", origin)
        .send()
        .await
        .expect("request")
}

fn listed(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|item| item.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn without_listed_origins_no_cors_headers_are_sent() {
    let app = spawn_app().await;

    let response = get_from(&app, APP, "/v1/posts").await;

    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn a_preflight_from_a_listed_origin_allows_an_authenticated_json_write() {
    let app = app_allowing(&[APP]).await;

    let headers = preflight(
        &app,
        APP,
        "/v1/posts",
        "POST",
        "authorization, content-type",
    )
    .await;

    assert_eq!(headers["access-control-allow-origin"], APP);
    assert!(listed(&headers, "access-control-allow-methods").contains(&"post".into()));
    let allowed = listed(&headers, "access-control-allow-headers");
    assert!(allowed.contains(&"authorization".into()) && allowed.contains(&"content-type".into()));
    assert_eq!(headers["access-control-max-age"], "3600");
    assert!(listed(&headers, "vary").contains(&"origin".into()));
}

#[tokio::test]
async fn a_preflight_allows_the_tus_protocols_requests() {
    let app = app_allowing(&[APP]).await;
    let post = app.create_post().await;
    let path = format!("/v1/posts/{post}/attachments/tus/some-upload");

    let headers = preflight(
        &app,
        APP,
        &path,
        "PATCH",
        "tus-resumable, upload-offset, content-type, x-http-method-override",
    )
    .await;

    assert_eq!(headers["access-control-allow-origin"], APP);
    assert!(listed(&headers, "access-control-allow-methods").contains(&"patch".into()));
}

#[tokio::test]
async fn a_response_to_a_listed_origin_exposes_the_headers_clients_read() {
    let app = app_allowing(&["http://127.0.0.1:5173", APP]).await;

    let response = app
        .client
        .post(app.url("/v1/posts"))
        .header("origin", APP)
        .json(&serde_json::json!({ "title": "from another origin" }))
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), 201);
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], APP);
    assert!(listed(headers, "vary").contains(&"origin".into()));
    let exposed = listed(headers, "access-control-expose-headers");
    for header in [
        "location",
        "etag",
        "upload-offset",
        "retry-after",
        "x-request-id",
        "content-range",
    ] {
        assert!(
            exposed.contains(&header.into()),
            "{header} is not exposed: {exposed:?}"
        );
    }
}

#[tokio::test]
async fn an_error_to_a_listed_origin_carries_cors_headers_so_the_page_can_read_it() {
    let app = app_allowing(&[APP]).await;

    let response = get_from(&app, APP, "/v1/posts/000000000000000000000000").await;

    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["access-control-allow-origin"], APP);
}

#[tokio::test]
async fn an_unlisted_origin_is_served_without_cors_headers() {
    let app = app_allowing(&[APP]).await;

    let response = get_from(&app, "https://elsewhere.example.net", "/v1/posts").await;

    assert_eq!(
        response.status(),
        200,
        "the service's own page sends its origin too"
    );
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
