//! The OpenAPI document: it covers `docs/api.md`, and the service keeps to it under
//! generated requests (schemathesis).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use test_support::{repository_root, testbed_tool};

use crate::helpers::{ServiceCommand, spawn_app};

/// `(method, path, success statuses)` of every route row in `docs/api.md`.
fn api_page_routes() -> Vec<(String, String, Vec<u16>)> {
    let path = repository_root().join("docs/api.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{} is readable: {error}", path.display()));
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let route = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let (method, path) = route.split_once(' ')?;
            if !path.starts_with('/') {
                return None;
            }
            let outcome = cells.get(cells.len().checked_sub(2)?)?;
            let statuses = outcome
                .split(|c: char| !c.is_ascii_digit())
                .filter(|word| word.len() == 3)
                .filter_map(|word| word.parse().ok())
                .collect();
            Some((method.to_lowercase(), path.to_owned(), statuses))
        })
        .collect()
}

#[tokio::test]
async fn every_route_and_status_of_the_api_page_is_in_the_document() {
    let app = spawn_app().await;
    let document: Value = app.get_json("/openapi.json").await;
    let routes = api_page_routes();
    assert!(
        routes.len() >= 17,
        "docs/api.md parsed into {} routes",
        routes.len()
    );

    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    for (method, path, statuses) in routes {
        let operation = &document["paths"][&path][&method];
        assert!(operation.is_object(), "{method} {path} is missing");
        for status in statuses {
            assert!(
                operation["responses"][status.to_string()].is_object(),
                "{method} {path} lacks {status}"
            );
        }
    }
}

#[tokio::test]
async fn the_document_declares_bearer_security_and_its_401_and_403_responses() {
    let app = spawn_app().await;
    let document: Value = app.get_json("/openapi.json").await;

    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let patch = &document["paths"]["/v1/posts/{post_id}"]["patch"];
    assert_eq!(patch["security"][0]["bearer"], serde_json::json!([]));
    assert!(patch["responses"]["401"].is_object());
    assert!(patch["responses"]["403"].is_object());
    let create = &document["paths"]["/v1/posts"]["post"];
    assert!(create["responses"]["401"].is_object());
    assert!(
        create["responses"]["403"].is_null(),
        "anyone with a token may create"
    );
}

/// Generated requests against every operation, with every check: no 5xx; no status,
/// content type, header or body that the document does not declare; every request the
/// document calls valid accepted, every one it calls invalid refused. The document carries
/// this instance's limits (files per form, bytes per file, allowed types), so "valid"
/// means what the service accepts.
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_contradiction() {
    const SECRET: &str = "schemathesis-secret-of-at-least-32-bytes";
    let mut service = ServiceCommand::new()
        .env("APP__UPLOADS__ALLOWED_CONTENT_TYPES", "*/*")
        .env("APP__AUTH__JWT_HS256_SECRET", SECRET)
        .spawn();
    let minted = std::process::Command::new(env!("CARGO_BIN_EXE_posts-api"))
        .args(["token", "--sub", "schemathesis", "--ttl", "3600"])
        .current_dir(repository_root())
        .env("APP__AUTH__JWT_HS256_SECRET", SECRET)
        .output()
        .expect("posts-api token runs");
    let token = String::from_utf8_lossy(&minted.stdout).trim().to_owned();
    service
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;

    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api/schemathesis.toml");
    let output = tokio::process::Command::new(testbed_tool("TESTBED_SCHEMATHESIS", "schemathesis"))
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &format!("http://127.0.0.1:{}/openapi.json", service.port),
        ])
        .args(["--checks", "all"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--max-examples",
            "50",
            "--seed",
            "20261129",
            "--workers",
            "2",
        ])
        .env("NO_COLOR", "1")
        // Teaches schemathesis the tus body type (schemathesis_hooks.py).
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", config.parent().expect("tests/api"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("schemathesis runs");

    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !service.output().contains("panicked"),
        "{}",
        service.output()
    );
}

#[tokio::test]
async fn the_api_reference_is_served_from_the_binary_and_reads_the_document() {
    let app = spawn_app().await;

    let redirect = app.get("/docs").await;
    let page = app.get("/docs/").await;
    let page_type = page.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let page = page.text().await.expect("page");
    let initializer = app.get_text("/docs/swagger-initializer.js").await;
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;

    assert_eq!(redirect.url().path(), "/docs/");
    assert!(page_type.starts_with("text/html"), "{page_type}");
    assert!(page.contains("swagger-ui-bundle.js"));
    assert!(
        initializer.contains(r#""url": "/openapi.json""#),
        "{initializer}"
    );
    assert!(
        initializer.contains(r#""validatorUrl": "none""#),
        "no call to the public validator: {initializer}"
    );
    assert_eq!(bundle.status(), 200);
    for text in [&page, &initializer] {
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{text}"
        );
    }
}
