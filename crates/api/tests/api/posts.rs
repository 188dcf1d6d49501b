//! `/v1/posts`.

use reqwest::Method;
use serde_json::{Value, json};

use test_support::expect_problem;

use crate::helpers::spawn_app;

#[tokio::test]
async fn creating_a_post_answers_201_with_its_location() {
    let app = spawn_app().await;

    let response = app
        .post_json("/v1/posts", &json!({ "title": "Hello", "body": "World" }))
        .await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let post: Value = response.json().await.expect("JSON");
    assert_eq!(
        location,
        format!("/v1/posts/{}", post["id"].as_str().expect("id"))
    );
    assert_eq!(post["title"], "Hello");
    assert_eq!(post["body"], "World");
    assert_eq!(post["author"], Value::Null);
    assert_eq!(post["attachments"], json!([]));
    assert!(
        post["created_at"]
            .as_str()
            .expect("timestamp")
            .ends_with('Z')
    );
}

#[tokio::test]
async fn an_empty_title_is_422_naming_the_field() {
    let app = spawn_app().await;

    let response = app
        .post_json("/v1/posts", &json!({ "title": "", "body": "x" }))
        .await;

    let body = expect_problem(response, 422).await;
    assert_eq!(body["errors"][0]["field"], "title");
}

#[tokio::test]
async fn a_title_over_200_characters_is_422() {
    let app = spawn_app().await;

    let response = app
        .post_json("/v1/posts", &json!({ "title": "x".repeat(201) }))
        .await;

    expect_problem(response, 422).await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(format!("{}/v1/posts", app.address))
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .expect("request");

    expect_problem(response, 400).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;

    let response = app
        .client
        .post(format!("{}/v1/posts", app.address))
        .header("content-type", "text/plain")
        .body("title=x")
        .send()
        .await
        .expect("request");

    expect_problem(response, 415).await;
}

#[tokio::test]
async fn a_post_reads_back() {
    let app = spawn_app().await;
    let id = app.create_post().await;

    let response = app.get(&format!("/v1/posts/{id}")).await;

    assert_eq!(response.status(), 200);
    let post: Value = response.json().await.expect("JSON");
    assert_eq!(post["id"], id.as_str());
}

#[tokio::test]
async fn an_unknown_post_is_404() {
    let app = spawn_app().await;

    let response = app.get("/v1/posts/5f0000000000000000000000").await;

    expect_problem(response, 404).await;
}

#[tokio::test]
async fn a_malformed_post_id_is_404() {
    let app = spawn_app().await;

    let response = app.get("/v1/posts/not-an-id").await;

    expect_problem(response, 404).await;
}

#[tokio::test]
async fn posts_list_newest_first_in_pages() {
    let app = spawn_app().await;
    for title in ["one", "two", "three"] {
        app.post_json("/v1/posts", &json!({ "title": title })).await;
    }

    let first: Value = app.get_json("/v1/posts?limit=2").await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second: Value = app
        .get_json(&format!("/v1/posts?limit=2&cursor={cursor}"))
        .await;

    let titles = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|post| post["title"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(titles(&first), ["three", "two"]);
    assert_eq!(titles(&second), ["one"]);
    assert_eq!(second["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_limit_over_100_is_400() {
    let app = spawn_app().await;

    expect_problem(app.get("/v1/posts?limit=101").await, 400).await;
}

#[tokio::test]
async fn a_forged_cursor_is_400() {
    let app = spawn_app().await;

    expect_problem(app.get("/v1/posts?cursor=forged").await, 400).await;
}

#[tokio::test]
async fn patching_a_post_changes_only_the_given_fields() {
    let app = spawn_app().await;
    let id = app.create_post().await;

    let response = app
        .client
        .patch(format!("{}/v1/posts/{id}", app.address))
        .json(&json!({ "title": "renamed" }))
        .send()
        .await
        .expect("request");

    assert_eq!(response.status(), 200);
    let post: Value = response.json().await.expect("JSON");
    assert_eq!(post["title"], "renamed");
    assert_eq!(post["body"], "text");
}

#[tokio::test]
async fn patching_an_invalid_title_is_422() {
    let app = spawn_app().await;
    let id = app.create_post().await;

    let response = app
        .client
        .patch(format!("{}/v1/posts/{id}", app.address))
        .json(&json!({ "title": "" }))
        .send()
        .await
        .expect("request");

    let body = expect_problem(response, 422).await;
    assert_eq!(body["errors"][0]["field"], "title");
}

#[tokio::test]
async fn patching_an_unknown_field_is_400() {
    let app = spawn_app().await;
    let id = app.create_post().await;

    let response = app
        .client
        .patch(format!("{}/v1/posts/{id}", app.address))
        .json(&json!({ "titel": "typo" }))
        .send()
        .await
        .expect("request");

    expect_problem(response, 400).await;
}

#[tokio::test]
async fn patching_an_unknown_post_is_404() {
    let app = spawn_app().await;

    let response = app
        .client
        .patch(format!("{}/v1/posts/5f0000000000000000000000", app.address))
        .json(&json!({ "title": "x" }))
        .send()
        .await
        .expect("request");

    expect_problem(response, 404).await;
}

#[tokio::test]
async fn deleting_a_post_removes_it_and_its_objects() {
    let app = spawn_app().await;
    let id = app.create_post().await;
    app.upload_one(&id, "a.txt", b"first").await;
    app.upload_one(&id, "b.txt", b"second").await;
    assert_eq!(app.stored.object_keys().await.len(), 2);

    let response = app
        .request(Method::DELETE, &format!("/v1/posts/{id}"))
        .await;

    assert_eq!(response.status(), 204);
    assert!(app.stored.object_keys().await.is_empty());
    expect_problem(app.get(&format!("/v1/posts/{id}")).await, 404).await;
}

#[tokio::test]
async fn deleting_an_unknown_post_is_404() {
    let app = spawn_app().await;

    let response = app
        .request(Method::DELETE, "/v1/posts/5f0000000000000000000000")
        .await;

    expect_problem(response, 404).await;
}

#[tokio::test]
async fn an_unsupported_method_is_a_problem_json_405() {
    let app = spawn_app().await;

    expect_problem(app.request(Method::PUT, "/v1/posts").await, 405).await;
}
