//! The shell examples of README.md and docs/api.md whose fence says ` ```sh runnable` run
//! as written against a started service, in order, sharing their variables: an example
//! that drifts from the API fails here. `localhost:8080` becomes the service's address,
//! `curl` fails on any 4xx or 5xx answer, and the directory they run in holds the
//! `photo.png` they upload and `target/release/posts-api`.

use std::time::{Duration, Instant};

use test_support::repository_root;

use crate::helpers::ServiceCommand;

/// A real (one-pixel) PNG, for the examples that upload `photo.png`.
const PHOTO: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// The bodies of the ` ```sh runnable` blocks of `markdown`, in order.
fn runnable_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            None if line.trim() == "```sh runnable" => current = Some(String::new()),
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

async fn run_the_examples_of(document: &str) {
    let markdown = std::fs::read_to_string(repository_root().join(document)).expect(document);
    let blocks = runnable_blocks(&markdown);
    assert!(!blocks.is_empty(), "{document} has no runnable example");
    // Authentication on, with config/local.toml's development secret, as scripts/dev runs.
    let mut service = ServiceCommand::new()
        .env("APP__AUTH__PUBLIC_READS", "true")
        .spawn();
    service
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;
    let directory =
        std::env::temp_dir().join(format!("posts-api-examples-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(directory.join("target/release")).expect("a scratch directory");
    std::fs::write(directory.join("photo.png"), PHOTO).expect("photo.png");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_posts-api"),
        directory.join("target/release/posts-api"),
    )
    .expect("target/release/posts-api");
    let address = format!("127.0.0.1:{}", service.port);
    let script = format!(
        "set -euo pipefail\ncurl() {{ command curl --fail-with-body \"$@\"; }}\n{}",
        blocks.join("\n").replace("localhost:8080", &address)
    );

    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&directory)
        .env(
            "APP_CONFIG_DIR",
            repository_root().join("config").display().to_string(),
        )
        .output()
        .await
        .expect("bash runs");
    let _ = std::fs::remove_dir_all(&directory);

    assert!(
        run.status.success(),
        "an example of {document} failed ({}):\n--- stdout\n{}\n--- stderr\n{}\n--- script\n{script}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
}

#[tokio::test]
async fn the_runnable_examples_of_the_readme_succeed() {
    run_the_examples_of("README.md").await;
}

#[tokio::test]
async fn the_runnable_examples_of_the_api_page_succeed() {
    run_the_examples_of("docs/api.md").await;
}

#[test]
fn only_blocks_marked_runnable_are_run() {
    let markdown = "```sh\nnot this\n```\ntext\n```sh runnable\necho one\n```\n```sh runnable\necho two\n```\n";

    assert_eq!(runnable_blocks(markdown), ["echo one\n", "echo two\n"]);
}
