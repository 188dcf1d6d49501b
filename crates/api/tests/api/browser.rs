//! Real browsers. The web page (`crates/api/tests/browser/page.mjs`): headless Chromium
//! creates a post, uploads two files (one through the API, one straight to S3), downloads
//! and deletes one, and runs axe-core; screenshots are saved in `target/browser-artefacts/`.
//! A page on another origin (`cross-origin.mjs`) uses the API, tus-js-client and a
//! presigned PUT through CORS. `scripts/test-tools browser` installs the browser and the
//! pinned clients; `.local/services.env` names them in `TESTBED_CHROMIUM` and
//! `TESTBED_BROWSER_MODULES`.

use std::time::Duration;

use test_support::{free_port, repository_root, testbed_tool};

use crate::auth::app_with_users;

// The steps the browser took are printed, to read when it fails.
#[allow(clippy::print_stderr)]
#[tokio::test]
async fn the_page_works_in_a_real_browser_without_serious_accessibility_violations() {
    let (app, _, _) = app_with_users(|_| {}).await;
    let artefacts = repository_root().join("target/browser-artefacts");

    let run = tokio::process::Command::new("node")
        .arg(repository_root().join("crates/api/tests/browser/page.mjs"))
        .env("POSTS_API_URL", &app.address)
        .env(
            "BROWSER_MODULES",
            testbed_tool("TESTBED_BROWSER_MODULES", "browser"),
        )
        .env("CHROMIUM", testbed_tool("TESTBED_CHROMIUM", "browser"))
        .env("ARTEFACTS", &artefacts)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test finishes within two minutes")
        .expect("node runs");

    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(artefacts.join("page.png").exists());
}

// The steps the browser took are printed, to read when it fails.
#[allow(clippy::print_stderr)]
#[tokio::test]
async fn a_page_on_a_listed_origin_uses_the_api_tus_and_presigned_puts_from_a_browser() {
    let page_port = free_port();
    let (app, ann, _) = app_with_users(|settings| {
        settings.server.cors_allowed_origins = vec![format!("http://127.0.0.1:{page_port}")];
    })
    .await;

    let run = tokio::process::Command::new("node")
        .arg(repository_root().join("crates/api/tests/browser/cross-origin.mjs"))
        .env("POSTS_API_URL", &app.address)
        .env("PAGE_PORT", page_port.to_string())
        .env("TOKEN", ann)
        .env(
            "BROWSER_MODULES",
            testbed_tool("TESTBED_BROWSER_MODULES", "browser"),
        )
        .env("CHROMIUM", testbed_tool("TESTBED_CHROMIUM", "browser"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test finishes within two minutes")
        .expect("node runs");

    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "the page on another origin failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
