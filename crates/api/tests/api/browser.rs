//! The web page in a real browser (`crates/api/tests/browser/page.mjs`): headless
//! Chromium creates a post, uploads two files (one through the API, one straight
//! to S3), downloads and deletes one, and runs axe-core. Screenshots are saved in
//! `target/browser-artefacts/`. `scripts/test` installs the browser and the pinned client and names them in
//! `TESTBED_CHROMIUM` and `TESTBED_BROWSER_MODULES`.

use std::time::Duration;

use test_support::{repository_root, testbed_tool};

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
