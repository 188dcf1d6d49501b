//! Bearer tokens (HS256 and JWKS), ownership, and public reads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::Settings;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use test_support::{multipart, repository_root};

use crate::helpers::{ServiceCommand, TestApp, spawn_app_with, test_settings};

pub const SECRET: &str = "test-secret-of-the-auth-tests-32-bytes-at-least";
pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "posts-api";

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

pub fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600 })
}

pub fn hs256(claims: &Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).expect("token")
}

pub fn token_for(sub: &str) -> String {
    hs256(&claims(sub), SECRET)
}

pub async fn app(public_reads: bool) -> TestApp {
    app_with_users(|settings| settings.auth.public_reads = public_reads)
        .await
        .0
}

/// A service with authentication, `adjust`ed, and tokens of two users.
pub async fn app_with_users(adjust: impl FnOnce(&mut Settings)) -> (TestApp, String, String) {
    let mut settings = test_settings();
    settings.auth.disabled = false;
    settings.auth.jwt_hs256_secret = secrecy::SecretString::from(SECRET);
    settings.auth.issuer = ISSUER.into();
    settings.auth.audience = AUDIENCE.into();
    adjust(&mut settings);
    (
        spawn_app_with(settings).await,
        token_for("ann"),
        token_for("bob"),
    )
}

pub async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("request")
}

pub async fn create_post_as(app: &TestApp, token: &str) -> String {
    let response = send(
        app,
        Method::POST,
        "/v1/posts",
        Some(token),
        Some(json!({ "title": "mine" })),
    )
    .await;
    assert_eq!(response.status(), 201);
    let post: Value = response.json().await.expect("JSON");
    post["id"].as_str().expect("id").to_owned()
}

async fn upload_as(app: &TestApp, post: &str, token: &str) -> reqwest::Response {
    let (content_type, body) = multipart(&[("a.txt", b"hello")]);
    app.client
        .post(format!("{}/v1/posts/{post}/attachments", app.address))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request")
}

async fn assert_401(response: reqwest::Response, challenge: &str) {
    assert_eq!(response.status(), 401);
    let header = response.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(header.starts_with("Bearer realm=\"posts-api\""), "{header}");
    assert!(header.contains(challenge), "{header} lacks {challenge}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn a_write_without_a_token_is_401_with_a_bare_challenge() {
    let app = app(true).await;

    let response = send(
        &app,
        Method::POST,
        "/v1/posts",
        None,
        Some(json!({ "title": "x" })),
    )
    .await;

    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"posts-api\""
    );
    assert_401(response, "").await;
}

#[tokio::test]
async fn invalid_tokens_are_401_invalid_token() {
    let app = app(true).await;
    let mut expired = claims("ann");
    expired["exp"] = json!(now() - 120);
    let mut not_yet_valid = claims("ann");
    not_yet_valid["nbf"] = json!(now() + 120);
    let mut wrong_issuer = claims("ann");
    wrong_issuer["iss"] = json!("https://elsewhere.test");
    let mut wrong_audience = claims("ann");
    wrong_audience["aud"] = json!("another-api");

    for (case, token) in [
        ("malformed", "not.a.jwt".to_owned()),
        ("expired", hs256(&expired, SECRET)),
        ("not yet valid", hs256(&not_yet_valid, SECRET)),
        ("wrong signature", hs256(&claims("ann"), "another-secret")),
        ("wrong issuer", hs256(&wrong_issuer, SECRET)),
        ("wrong audience", hs256(&wrong_audience, SECRET)),
    ] {
        let response = send(
            &app,
            Method::POST,
            "/v1/posts",
            Some(&token),
            Some(json!({ "title": case })),
        )
        .await;
        assert_eq!(response.status(), 401, "{case}");
        assert_401(response, "error=\"invalid_token\"").await;
    }
}

#[tokio::test]
async fn a_non_bearer_authorization_header_is_401() {
    let app = app(true).await;

    let response = app
        .client
        .post(format!("{}/v1/posts", app.address))
        .header("authorization", "Basic YTpi")
        .json(&json!({ "title": "x" }))
        .send()
        .await
        .expect("request");

    assert_401(response, "error=\"invalid_token\"").await;
}

#[tokio::test]
async fn the_token_subject_becomes_the_author() {
    let app = app(true).await;

    let id = create_post_as(&app, &token_for("ann")).await;

    let post: Value = app.get_json(&format!("/v1/posts/{id}")).await;
    assert_eq!(post["author"], "ann");
}

#[tokio::test]
async fn the_author_may_change_upload_to_and_delete_their_post() {
    let app = app(true).await;
    let ann = token_for("ann");
    let post = create_post_as(&app, &ann).await;

    let patched = send(
        &app,
        Method::PATCH,
        &format!("/v1/posts/{post}"),
        Some(&ann),
        Some(json!({ "title": "new" })),
    )
    .await;
    let uploaded = upload_as(&app, &post, &ann).await;
    assert_eq!(patched.status(), 200);
    assert_eq!(uploaded.status(), 201);
    let attachment: Value = uploaded.json().await.expect("JSON");
    let attachment_id = attachment["items"][0]["id"].as_str().expect("id");
    let removed = send(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{post}/attachments/{attachment_id}"),
        Some(&ann),
        None,
    )
    .await;
    let deleted = send(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{post}"),
        Some(&ann),
        None,
    )
    .await;

    assert_eq!(removed.status(), 204);
    assert_eq!(deleted.status(), 204);
}

#[tokio::test]
async fn another_user_is_403_for_update_delete_upload_and_attachment_delete() {
    let app = app(true).await;
    let ann = token_for("ann");
    let bob = token_for("bob");
    let post = create_post_as(&app, &ann).await;
    let attachment: Value = upload_as(&app, &post, &ann)
        .await
        .json()
        .await
        .expect("JSON");
    let attachment_id = attachment["items"][0]["id"].as_str().expect("id");

    let patched = send(
        &app,
        Method::PATCH,
        &format!("/v1/posts/{post}"),
        Some(&bob),
        Some(json!({ "title": "mine now" })),
    )
    .await;
    let deleted = send(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{post}"),
        Some(&bob),
        None,
    )
    .await;
    let uploaded = upload_as(&app, &post, &bob).await;
    let removed = send(
        &app,
        Method::DELETE,
        &format!("/v1/posts/{post}/attachments/{attachment_id}"),
        Some(&bob),
        None,
    )
    .await;
    let direct = send(
        &app,
        Method::POST,
        &format!("/v1/posts/{post}/attachments/uploads"),
        Some(&bob),
        Some(json!({ "filename": "a.txt", "content_type": "text/plain", "size": 3 })),
    )
    .await;

    for (case, response) in [
        ("update", patched),
        ("delete", deleted),
        ("upload", uploaded),
        ("attachment delete", removed),
        ("direct upload", direct),
    ] {
        assert_eq!(response.status(), 403, "{case}");
    }
    let post: Value = app.get_json(&format!("/v1/posts/{post}")).await;
    assert_eq!(post["title"], "mine");
    assert_eq!(post["attachments"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn without_public_reads_reads_need_a_token() {
    let app = app(false).await;
    let ann = token_for("ann");
    let post = create_post_as(&app, &ann).await;

    for path in [
        "/v1/posts".to_owned(),
        format!("/v1/posts/{post}"),
        format!("/v1/posts/{post}/attachments"),
    ] {
        assert_401(app.get(&path).await, "").await;
        let with_token = send(&app, Method::GET, &path, Some(&ann), None).await;
        assert_eq!(with_token.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn without_public_reads_tus_options_tell_no_stranger_whether_a_post_exists() {
    let app = app(false).await;
    let ann = token_for("ann");
    let post = create_post_as(&app, &ann).await;
    let options = |post: String, token: Option<String>| {
        let mut request = app.client.request(
            Method::OPTIONS,
            app.url(&format!("/v1/posts/{post}/attachments/tus")),
        );
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let existing = options(post.clone(), None).await.expect("OPTIONS");
    let missing = options("0".repeat(24), None).await.expect("OPTIONS");

    assert_401(existing, "").await;
    assert_401(missing, "").await;
    let with_token = options(post, Some(ann)).await.expect("OPTIONS");
    assert_eq!(with_token.status(), 204);
}

#[tokio::test]
async fn reads_are_public_by_default() {
    let app = app(true).await;
    let post = create_post_as(&app, &token_for("ann")).await;

    assert_eq!(app.get(&format!("/v1/posts/{post}")).await.status(), 200);
}

#[tokio::test]
async fn the_token_command_mints_a_token_the_service_accepts() {
    let app = app(true).await;

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_posts-api"))
        .args(["token", "--sub", "cli-user", "--ttl", "60"])
        .current_dir(repository_root())
        .env("APP__AUTH__JWT_HS256_SECRET", SECRET)
        .env("APP__AUTH__ISSUER", ISSUER)
        .env("APP__AUTH__AUDIENCE", AUDIENCE)
        .output()
        .expect("posts-api token runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();

    let post = create_post_as(&app, &token).await;
    let read: Value = app.get_json(&format!("/v1/posts/{post}")).await;
    assert_eq!(read["author"], "cli-user");
}

#[test]
fn the_token_command_needs_only_the_auth_settings() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_posts-api"))
        .args(["token", "--sub", "me"])
        .current_dir(repository_root())
        .env_clear()
        .env("APP__AUTH__JWT_HS256_SECRET", SECRET)
        .output()
        .expect("posts-api token runs");

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).matches('.').count(),
        2
    );
}

#[tokio::test]
async fn production_without_authentication_refuses_to_start() {
    let mut service = ServiceCommand::new()
        .env("APP_ENV", "production")
        .env("APP__AUTH__DISABLED", "false")
        .spawn();

    let status = service.exit_within(Duration::from_secs(30)).await;

    assert_eq!(status.code(), Some(2), "{}", service.output());
    assert!(
        service
            .output()
            .contains("invalid configuration: auth: no way to verify tokens"),
        "{}",
        service.output()
    );
}

/// A JWKS endpoint whose key set the test can replace.
pub async fn jwks_server(initial: Value) -> (String, Arc<Mutex<Value>>) {
    let (url, keys, _) = counting_jwks_server(initial).await;
    (url, keys)
}

/// A JWKS endpoint whose key set (or, as a JSON string, an HTTP status to answer with) the
/// test can replace, counting the fetches.
pub async fn counting_jwks_server(
    initial: Value,
) -> (
    String,
    Arc<Mutex<Value>>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = fetches.clone();
    let keys = Arc::new(Mutex::new(initial));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/jwks.json",
        listener.local_addr().expect("address")
    );
    let served = keys.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let current = served.lock().expect("keys").clone();
            let (status, body) = match current {
                Value::String(status) => (status, String::new()),
                keys => ("200 OK".to_owned(), keys.to_string()),
            };
            tokio::spawn(async move {
                let mut request = [0u8; 2048];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, keys, fetches)
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(repository_root().join("tests/fixtures").join(name)).expect("fixture")
}

pub fn rs256(claims: &Value, key: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(format!("key-{key}"));
    let pem = fixture(&format!("rsa-{key}.pem"));
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA key");
    jsonwebtoken::encode(&header, claims, &key).expect("token")
}

pub fn jwk(key: &str) -> Value {
    serde_json::from_str(&fixture(&format!("rsa-{key}.jwk.json"))).expect("JWK")
}

#[tokio::test]
async fn rs256_tokens_are_checked_against_the_jwks_and_a_rotated_key_is_picked_up() {
    let (url, keys) = jwks_server(json!({ "keys": [jwk("a")] })).await;
    let app = app_with_jwks(url).await;

    assert_eq!(post_with_key(&app, "a").await, 201);
    let forged = send(
        &app,
        Method::POST,
        "/v1/posts",
        Some(&hs256(&claims("ann"), "guess")),
        Some(json!({ "title": "x" })),
    )
    .await;
    assert_eq!(
        forged.status(),
        401,
        "HS256 is not accepted without a secret"
    );

    *keys.lock().expect("keys") = json!({ "keys": [jwk("b")] });
    // Unknown key ids refetch the set, at most every few seconds.
    tokio::time::sleep(Duration::from_secs(6)).await;

    assert_eq!(
        post_with_key(&app, "b").await,
        201,
        "the rotated key is used"
    );
}

async fn app_with_jwks(url: String) -> TestApp {
    let mut settings = test_settings();
    settings.auth.disabled = false;
    settings.auth.jwks_url = url;
    settings.auth.issuer = ISSUER.into();
    settings.auth.audience = AUDIENCE.into();
    spawn_app_with(settings).await
}

async fn post_with_key(app: &TestApp, key: &str) -> u16 {
    send(
        app,
        Method::POST,
        "/v1/posts",
        Some(&rs256(&claims("ann"), key)),
        Some(json!({ "title": key })),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn a_key_refused_before_a_refetch_was_due_is_accepted_once_the_set_has_it() {
    let (url, keys) = jwks_server(json!({ "keys": [jwk("a")] })).await;
    let app = app_with_jwks(url).await;
    // Just after start-up's fetch: no refetch is due, so key b is refused unseen.
    assert_eq!(post_with_key(&app, "b").await, 401);

    *keys.lock().expect("keys") = json!({ "keys": [jwk("a"), jwk("b")] });
    tokio::time::sleep(Duration::from_secs(6)).await;

    assert_eq!(post_with_key(&app, "b").await, 201);
}

#[tokio::test]
async fn a_key_refused_while_the_provider_was_down_is_accepted_once_it_is_back() {
    let (url, keys) = jwks_server(json!({ "keys": [jwk("a")] })).await;
    let app = app_with_jwks(url).await;
    *keys.lock().expect("keys") = json!("503 Service Unavailable");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(post_with_key(&app, "b").await, 401, "the fetch failed");

    *keys.lock().expect("keys") = json!({ "keys": [jwk("a"), jwk("b")] });
    tokio::time::sleep(Duration::from_secs(6)).await;

    assert_eq!(post_with_key(&app, "b").await, 201);
}
