//! Conditional reads and writes of posts: `ETag` from the post's version, `If-None-Match`
//! → 304, `If-Match` → 412 when stale, and the `Cache-Control` of reads.

use reqwest::Method;
use serde_json::json;

use test_support::expect_problem;

use crate::auth::{app, create_post_as, send, token_for};
use crate::helpers::{TestApp, spawn_app};

fn etag_of(response: &reqwest::Response) -> String {
    response.headers()["etag"]
        .to_str()
        .expect("ascii")
        .to_owned()
}

async fn get_if_none_match(app: &TestApp, path: &str, etag: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("request")
}

async fn patch_if_match(app: &TestApp, post: &str, etag: &str) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/v1/posts/{post}")))
        .header("if-match", etag)
        .json(&json!({ "title": "changed" }))
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_post_read_again_with_its_etag_is_304_without_a_body() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let path = format!("/v1/posts/{post}");
    let first = app.get(&path).await;
    let etag = etag_of(&first);

    let again = get_if_none_match(&app, &path, &etag).await;

    assert_eq!(again.status(), 304);
    assert_eq!(etag_of(&again), etag);
    assert!(again.bytes().await.expect("body").is_empty());
}

#[tokio::test]
async fn a_new_attachment_changes_the_etag_of_the_post_and_of_its_list() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let post_path = format!("/v1/posts/{post}");
    let list_path = format!("{post_path}/attachments");
    let post_etag = etag_of(&app.get(&post_path).await);
    let list_etag = etag_of(&app.get(&list_path).await);
    assert_eq!(
        get_if_none_match(&app, &list_path, &list_etag)
            .await
            .status(),
        304
    );

    app.upload_one(&post, "new.txt", b"new").await;

    let post_read = get_if_none_match(&app, &post_path, &post_etag).await;
    let list_read = get_if_none_match(&app, &list_path, &list_etag).await;
    assert_eq!(post_read.status(), 200);
    assert_eq!(list_read.status(), 200);
    assert_ne!(etag_of(&post_read), post_etag);
}

#[tokio::test]
async fn an_update_with_the_current_etag_applies_and_answers_the_new_one() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let etag = etag_of(&app.get(&format!("/v1/posts/{post}")).await);

    let updated = patch_if_match(&app, &post, &etag).await;

    assert_eq!(updated.status(), 200);
    let new_etag = etag_of(&updated);
    assert_ne!(new_etag, etag);
    assert_eq!(
        etag_of(&app.get(&format!("/v1/posts/{post}")).await),
        new_etag
    );
}

#[tokio::test]
async fn an_update_with_a_stale_etag_is_412_and_changes_nothing() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let stale = etag_of(&app.get(&format!("/v1/posts/{post}")).await);
    let current = etag_of(&patch_if_match(&app, &post, &stale).await);

    let refused = patch_if_match(&app, &post, &stale).await;

    expect_problem(refused, 412).await;
    assert_eq!(
        etag_of(&app.get(&format!("/v1/posts/{post}")).await),
        current
    );
}

#[tokio::test]
async fn a_weak_etag_never_satisfies_if_match() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let etag = etag_of(&app.get(&format!("/v1/posts/{post}")).await);

    let refused = patch_if_match(&app, &post, &format!("W/{etag}")).await;

    expect_problem(refused, 412).await;
}

#[tokio::test]
async fn public_reads_may_be_kept_by_shared_caches_after_revalidation() {
    let app = app(true).await;
    let post = create_post_as(&app, &token_for("ann")).await;

    let read = app.get(&format!("/v1/posts/{post}")).await;

    assert_eq!(read.headers()["cache-control"], "public, no-cache");
}

#[tokio::test]
async fn reads_that_need_a_token_are_private_to_the_caller() {
    let app = app(false).await;
    let ann = token_for("ann");
    let post = create_post_as(&app, &ann).await;

    let read = send(
        &app,
        Method::GET,
        &format!("/v1/posts/{post}"),
        Some(&ann),
        None,
    )
    .await;

    assert_eq!(read.headers()["cache-control"], "private, no-cache");
}
