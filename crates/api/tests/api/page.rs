//! The web page at `/`: served from the binary with its security headers, assets by
//! content hash, and development tokens only where they may exist.

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use test_support::expect_problem;

use crate::auth::{app_with_users, send};
use crate::helpers::{TestApp, spawn_app, spawn_app_with, test_settings};

async fn page_of(app: &TestApp) -> (reqwest::header::HeaderMap, String) {
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    (headers, response.text().await.expect("HTML"))
}

/// The `/assets/…` paths the page links to.
fn asset_paths(html: &str) -> Vec<String> {
    html.split("\"/assets/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|name| format!("/assets/{name}"))
        .collect()
}

#[tokio::test]
async fn the_page_is_served_at_the_root_with_a_strict_content_security_policy() {
    let app = spawn_app().await;

    let (headers, html) = page_of(&app).await;

    assert!(
        headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let policy = headers["content-security-policy"].to_str().expect("ascii");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy} lacks {directive}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(html.contains("<title>posts-api</title>"));
}

#[tokio::test]
async fn the_page_has_no_inline_script_style_or_event_handler() {
    let app = spawn_app().await;

    let (_, html) = page_of(&app).await;

    let lower = html.to_ascii_lowercase();
    for script in lower.split("<script").skip(1) {
        let tag = script.split('>').next().unwrap_or_default();
        assert!(tag.contains("src="), "an inline script: <script{tag}>");
    }
    assert!(!lower.contains("<style"), "an inline style sheet");
    assert!(!lower.contains(" style="), "an inline style attribute");
    assert!(
        !lower.contains(" onclick=") && !lower.contains(" onload="),
        "an inline handler"
    );
}

#[tokio::test]
async fn assets_are_named_by_their_content_and_cached_for_a_year() {
    let app = spawn_app().await;
    let (_, html) = page_of(&app).await;
    let paths = asset_paths(&html);
    assert_eq!(paths.len(), 3, "{paths:?}");

    for path in paths {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let bytes = response.bytes().await.expect("asset");
        let hash = hex::encode(&Sha256::digest(&bytes)[..8]);
        assert!(path.contains(&hash), "{path} is not named by its content");
    }
}

#[tokio::test]
async fn an_asset_the_page_does_not_name_is_404() {
    let app = spawn_app().await;

    expect_problem(app.get("/assets/app.js").await, 404).await;
}

#[tokio::test]
async fn local_development_with_a_secret_mints_tokens_the_api_accepts() {
    let (app, _, _) = app_with_users(|_| {}).await;
    let (_, html) = page_of(&app).await;
    assert!(html.contains("name=\"posts-api-dev-tokens\" content=\"on\""));

    let response = app
        .post_json("/v1/dev/token", &json!({ "subject": "page-user" }))
        .await;

    assert_eq!(response.status(), 201);
    let minted: Value = response.json().await.expect("JSON");
    assert_eq!(minted["subject"], "page-user");
    let token = minted["token"].as_str().expect("token");
    let created = send(
        &app,
        Method::POST,
        "/v1/posts",
        Some(token),
        Some(json!({ "title": "from the page" })),
    )
    .await;
    assert_eq!(created.status(), 201);
    let post: Value = created.json().await.expect("JSON");
    assert_eq!(post["author"], "page-user");
}

#[tokio::test]
async fn a_development_token_for_a_malformed_subject_is_422() {
    let (app, _, _) = app_with_users(|_| {}).await;

    let response = app
        .post_json("/v1/dev/token", &json!({ "subject": "no spaces" }))
        .await;

    expect_problem(response, 422).await;
}

#[tokio::test]
async fn without_authentication_no_development_token_exists() {
    let app = spawn_app().await;
    let (_, html) = page_of(&app).await;
    assert!(html.contains("name=\"posts-api-dev-tokens\" content=\"off\""));

    let response = app
        .post_json("/v1/dev/token", &json!({ "subject": "anyone" }))
        .await;

    expect_problem(response, 404).await;
}

#[tokio::test]
async fn outside_local_development_no_development_token_exists() {
    let mut settings = test_settings();
    settings.auth.disabled = false;
    settings.auth.jwt_hs256_secret =
        secrecy::SecretString::from("a-secret-of-at-least-thirty-two-bytes!!");
    settings.environment = api::Environment::Named("staging".into());
    let app = spawn_app_with(settings).await;

    let response = app
        .post_json("/v1/dev/token", &json!({ "subject": "anyone" }))
        .await;

    expect_problem(response, 404).await;
}
