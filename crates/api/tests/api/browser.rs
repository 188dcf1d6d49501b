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

/// Runs `crates/api/tests/browser/{script}` under Node with the browser and its clients,
/// plus `env`, and fails the test with what it printed unless it succeeds in two minutes.
// The steps the browser took are printed, to read when it fails.
#[allow(clippy::print_stderr)]
async fn run_in_the_browser(script: &str, env: &[(&str, String)]) {
    let run = tokio::process::Command::new("node")
        .arg(
            repository_root()
                .join("crates/api/tests/browser")
                .join(script),
        )
        .env(
            "BROWSER_MODULES",
            testbed_tool("TESTBED_BROWSER_MODULES", "browser"),
        )
        .env("CHROMIUM", testbed_tool("TESTBED_CHROMIUM", "browser"))
        .envs(env.iter().map(|(name, value)| (*name, value)))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test finishes within two minutes")
        .expect("node runs");

    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_page_works_in_a_real_browser_without_serious_accessibility_violations() {
    let (app, _, _) = app_with_users(|_| {}).await;
    let artefacts = repository_root().join("target/browser-artefacts");

    run_in_the_browser(
        "page.mjs",
        &[
            ("POSTS_API_URL", app.address.clone()),
            ("ARTEFACTS", artefacts.display().to_string()),
        ],
    )
    .await;

    assert!(artefacts.join("page.png").exists());
}

#[tokio::test]
async fn a_page_on_a_listed_origin_uses_the_api_tus_and_presigned_puts_from_a_browser() {
    let page_port = free_port();
    let (app, ann, _) = app_with_users(|settings| {
        settings.server.cors_allowed_origins = vec![format!("http://127.0.0.1:{page_port}")];
    })
    .await;

    run_in_the_browser(
        "cross-origin.mjs",
        &[
            ("POSTS_API_URL", app.address.clone()),
            ("PAGE_PORT", page_port.to_string()),
            ("TOKEN", ann),
        ],
    )
    .await;
}
