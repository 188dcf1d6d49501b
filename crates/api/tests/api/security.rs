//! Attacks, one test each, and the refusal each must meet: forged and confused tokens,
//! another user's post, unknown signing keys aimed at the JWKS provider, tokens of other
//! applications, made-up methods aimed at the metrics, disguised file names, and secrets
//! looked for in the logs. (Configuration that would run the service unsafely is refused
//! at load; the unit tests of `config` cover each rule.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use test_support::{expect_problem, multipart};
use tokio::io::AsyncWriteExt;

use crate::auth::{
    AUDIENCE, ISSUER, SECRET, app, app_with_users, claims, counting_jwks_server, create_post_as,
    fixture, hs256, jwk, now, rs256, send,
};
use crate::helpers::{ServiceCommand, TestApp, spawn_app_with, test_settings};

fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn post_as(app: &TestApp, token: &str) -> reqwest::Response {
    send(
        app,
        Method::POST,
        "/v1/posts",
        Some(token),
        Some(json!({ "title": "attack" })),
    )
    .await
}

/// A service that trusts only the JWKS served by a local endpoint.
async fn jwks_app(initial: Value) -> (TestApp, Arc<AtomicUsize>, Arc<Mutex<Value>>) {
    let (url, keys, fetches) = counting_jwks_server(initial).await;
    let mut settings = test_settings();
    settings.auth.disabled = false;
    settings.auth.jwks_url = url;
    settings.auth.issuer = ISSUER.into();
    settings.auth.audience = AUDIENCE.into();
    (spawn_app_with(settings).await, fetches, keys)
}

#[tokio::test]
async fn an_unsigned_token_with_alg_none_is_refused() {
    let app = app(true).await;
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(claims("mallory").to_string().as_bytes());

    let response = post_as(&app, &format!("{header}.{payload}.")).await;

    expect_problem(response, 401).await;
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_public_rsa_key_is_refused() {
    // HS/RS confusion: a verifier that took the algorithm from the token would check this
    // HMAC with the (public) RSA key as its secret.
    let (app, _, _) = jwks_app(json!({ "keys": [jwk("a")] })).await;
    let public_key = fixture("rsa-a.jwk.json");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("key-a".into());
    let key = jsonwebtoken::EncodingKey::from_secret(public_key.as_bytes()).expect("HMAC key");
    let token = jsonwebtoken::encode(&header, &claims("mallory"), &key).expect("token");

    let response = post_as(&app, &token).await;

    expect_problem(response, 401).await;
}

#[tokio::test]
async fn expired_and_forged_tokens_are_refused() {
    let app = app(true).await;
    let mut expired = claims("ann");
    expired["exp"] = json!(now() - 120);
    let valid = hs256(&claims("ann"), SECRET);
    let (head, rest) = valid.split_once('.').expect("a JWT");
    let (_, signature) = rest.split_once('.').expect("a JWT");
    let forged_payload = base64url(claims("mallory").to_string().as_bytes());

    for token in [
        hs256(&expired, SECRET),
        format!("{head}.{forged_payload}.{signature}"),
    ] {
        expect_problem(post_as(&app, &token).await, 401).await;
    }
}

#[tokio::test]
async fn another_users_post_cannot_be_changed() {
    let app = app(true).await;
    let post = create_post_as(&app, &hs256(&claims("ann"), SECRET)).await;

    let response = send(
        &app,
        Method::PATCH,
        &format!("/v1/posts/{post}"),
        Some(&hs256(&claims("mallory"), SECRET)),
        Some(json!({ "title": "defaced" })),
    )
    .await;

    expect_problem(response, 403).await;
}

#[tokio::test]
async fn a_token_whose_audience_is_an_array_naming_this_service_is_accepted() {
    let app = app(true).await;
    let mut claims = claims("ann");
    claims["aud"] = json!(["another-api", AUDIENCE]);

    let response = post_as(&app, &hs256(&claims, SECRET)).await;

    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn a_token_for_another_application_of_the_same_provider_is_refused() {
    let (app, _, _) = jwks_app(json!({ "keys": [jwk("a")] })).await;
    let mut claims = claims("ann");
    claims["aud"] = json!("another-app-of-the-tenant");

    let response = post_as(&app, &rs256(&claims, "a")).await;

    expect_problem(response, 401).await;
}

/// A token signed by key `a` but naming the key id `kid`.
fn token_with_kid(kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let pem = fixture("rsa-a.pem");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA key");
    jsonwebtoken::encode(&header, &claims("ann"), &key).expect("token")
}

#[tokio::test]
async fn random_key_ids_cause_at_most_one_jwks_fetch_per_interval() {
    let (app, fetches, _) = jwks_app(json!({ "keys": [jwk("a")] })).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = fetches.load(Ordering::SeqCst);

    let answers = futures::future::join_all((0..40).map(|n| {
        let token = token_with_kid(&format!("kid-{n}"));
        let app = &app;
        async move {
            send(app, Method::GET, "/v1/posts", Some(&token), None)
                .await
                .status()
        }
    }))
    .await;

    assert!(answers.iter().all(|status| *status == 401));
    assert_eq!(
        fetches.load(Ordering::SeqCst) - before,
        1,
        "one fetch for forty unknown ids"
    );
}

#[tokio::test]
async fn while_the_provider_fails_unknown_key_ids_still_cause_one_fetch_per_interval() {
    let (app, fetches, keys) = jwks_app(json!({ "keys": [jwk("a")] })).await;
    *keys.lock().expect("keys") = json!("503 Service Unavailable");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = fetches.load(Ordering::SeqCst);

    for n in 0..20 {
        let token = token_with_kid(&format!("kid-{n}"));
        let status = send(&app, Method::GET, "/v1/posts", Some(&token), None)
            .await
            .status();
        assert_eq!(status, 401);
    }

    assert_eq!(fetches.load(Ordering::SeqCst) - before, 1);
}

#[tokio::test]
async fn an_oversized_jwks_is_refused() {
    let huge = json!({ "keys": [jwk("a")], "padding": "x".repeat(1024 * 1024) });
    let (url, _, _) = counting_jwks_server(huge).await;
    let mut service = ServiceCommand::new()
        .env("APP__AUTH__JWKS_URL", url)
        .env("APP__AUTH__ISSUER", ISSUER)
        .env("APP__AUTH__AUDIENCE", AUDIENCE)
        .spawn();

    let status = service.exit_within(Duration::from_secs(30)).await;

    assert!(!status.success());
    assert!(
        service.output().contains("larger than"),
        "{}",
        service.output()
    );
}

#[tokio::test]
async fn made_up_methods_add_no_metric_series() {
    let app = crate::helpers::spawn_app().await;
    for n in 0..20 {
        let method = Method::from_bytes(format!("RAND{n}").as_bytes()).expect("a method");
        app.request(method, "/v1/posts").await;
    }

    let metrics = app.get_text("/metrics").await;

    assert!(!metrics.contains("RAND"), "{metrics}");
    assert!(metrics.contains(r#"method="OTHER""#));
}

#[tokio::test]
async fn a_file_name_with_a_bidi_override_is_refused() {
    let app = crate::helpers::spawn_app().await;
    let post = app.create_post().await;
    let disguised = "invoice\u{202E}fdp.exe";

    let streamed = app.upload(&post, &[(disguised, b"MZ")]).await;
    let direct = app
        .post_json(
            &format!("/v1/posts/{post}/attachments/uploads"),
            &json!({ "filename": disguised, "content_type": "text/plain", "size": 2 }),
        )
        .await;

    expect_problem(streamed, 400).await;
    expect_problem(direct, 422).await;
    app.stored.assert_nothing_stored().await;
}

#[tokio::test]
async fn no_secret_or_token_reaches_the_logs() {
    const AWS_SECRET: &str = "aws-secret-key-that-must-never-be-logged";
    let mut service = ServiceCommand::new()
        .env("APP__AUTH__JWT_HS256_SECRET", SECRET)
        .env("APP__AUTH__ISSUER", ISSUER)
        .env("APP__AUTH__AUDIENCE", AUDIENCE)
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("RUST_LOG", "info,api=debug,storage=debug,aws_creds=debug")
        .spawn();
    service
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;
    let api = test_support::ApiClient::new(format!("http://127.0.0.1:{}", service.port));
    let token = hs256(&claims("ann"), SECRET);
    let forged = hs256(&claims("ann"), "a-wrong-secret-of-at-least-32-bytes!!");

    let created = api
        .client
        .post(api.url("/v1/posts"))
        .bearer_auth(&token)
        .json(&json!({ "title": "logged?" }))
        .send()
        .await
        .expect("request");
    assert_eq!(created.status(), 201);
    let post: Value = created.json().await.expect("JSON");
    let (content_type, body) = multipart(&[("a.txt", b"hello")]);
    let uploaded = api
        .client
        .post(api.url(post["attachments_url"].as_str().expect("url")))
        .bearer_auth(&token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(uploaded.status(), 201);
    let refused = api
        .client
        .post(api.url("/v1/posts"))
        .bearer_auth(&forged)
        .json(&json!({ "title": "x" }))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 401);
    api.get("/readyz").await;
    service.terminate();
    service.exit_within(Duration::from_secs(30)).await;

    let logs = service.output();
    assert!(logs.len() > 1000, "the session logged: {logs}");
    let signature = |jwt: &str| jwt.rsplit('.').next().expect("signature").to_owned();
    for (what, secret) in [
        ("the HS256 secret", SECRET.to_owned()),
        ("the AWS secret key", AWS_SECRET.to_owned()),
        ("a bearer token", token.clone()),
        ("a bearer token's signature", signature(&token)),
        ("a refused token's signature", signature(&forged)),
    ] {
        assert!(!logs.contains(&secret), "{what} is in the logs");
    }
}

#[tokio::test]
async fn uploads_without_a_valid_token_hold_no_upload_memory() {
    let (app, ann, _) = app_with_users(|_| {}).await;
    let post = create_post_as(&app, &ann).await;
    // More idle bodies than the default budget has room for (256 MiB, 24 MiB an upload).
    let mut idle = Vec::new();
    for _ in 0..14 {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .expect("connect");
        let head = format!(
            "POST /v1/posts/{post}/attachments/raw?filename=idle.txt HTTP/1.1\r\n\
             Host: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n"
        );
        socket
            .write_all(head.as_bytes())
            .await
            .expect("request head");
        idle.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let upload = app
        .client
        .post(app.url(&format!("/v1/posts/{post}/attachments/raw?filename=a.txt")))
        .bearer_auth(&ann)
        .header("content-type", "text/plain")
        .body("admitted")
        .send()
        .await
        .expect("upload");

    assert_eq!(upload.status(), 201);
    drop(idle);
}
