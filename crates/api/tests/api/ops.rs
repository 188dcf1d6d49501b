//! Operations routes (`/healthz`, `/readyz`, `/metrics`), request ids and unknown paths.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use test_support::{ApiClient, ChaosProxy, free_port, socket_address_of, testbed};

use crate::helpers::{spawn_app, spawn_app_with, test_settings};

#[tokio::test]
async fn healthz_answers_200() {
    let app = spawn_app().await;

    let response = app.get("/healthz").await;

    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn readyz_reports_every_dependency_ok_against_the_testbed() {
    let app = spawn_app().await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["status"], "ready");
    for check in ["mongodb", "credentials", "bucket"] {
        assert_eq!(body["checks"][check], "ok", "{check}: {body}");
    }
}

#[tokio::test]
async fn metrics_expose_the_credentials_status() {
    let app = spawn_app().await;

    let response = app.get("/metrics").await;

    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text body");
    assert!(
        text.contains("posts_api_sts_assume_role_total{result=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("posts_api_credentials_refresh_failures_total 0"),
        "{text}"
    );
    let expiry: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("posts_api_credentials_expiry_timestamp_seconds "))
        .and_then(|value| value.parse().ok())
        .expect("an expiry gauge");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    assert!(expiry > now, "the credentials expire in the future");
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_bytes_moved() {
    let app = spawn_app().await;
    let post = app.create_post().await;
    let attachment = app.upload_one(&post, "m.txt", b"twelve bytes").await;
    let content = app
        .get(&format!(
            "/v1/posts/{post}/attachments/{}/content",
            attachment["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(content.bytes().await.expect("body").len(), 12);

    let text = app.get("/metrics").await.text().await.expect("text");

    for expected in [
        r#"posts_api_http_requests_total{route="/v1/posts",method="POST",status="201"} 1"#,
        r#"posts_api_http_requests_total{route="/v1/posts/{post_id}/attachments",method="POST",status="201"} 1"#,
        r#"posts_api_http_request_duration_seconds_count{route="/v1/posts",method="POST"} 1"#,
        "posts_api_uploaded_bytes_total 12",
        "posts_api_downloaded_bytes_total 12",
        "posts_api_uploads_in_flight 0",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[tokio::test]
async fn a_client_request_id_is_echoed() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("request");

    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn a_request_id_is_generated_when_the_client_sends_none() {
    let app = spawn_app().await;

    let first = app.get("/healthz").await;
    let second = app.get("/healthz").await;

    let id = |response: &reqwest::Response| response.headers()["x-request-id"].clone();
    assert!(!id(&first).is_empty());
    assert_ne!(id(&first), id(&second));
}

#[tokio::test]
async fn an_unknown_path_is_a_problem_json_404() {
    let app = spawn_app().await;

    let response = app.get("/no/such/thing").await;

    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["status"], 404);
    assert!(body["title"].is_string() && body["detail"].is_string());
}

/// A SecantusDB of the test's own, so stopping it disturbs no other test.
struct OwnMongo {
    port: u16,
    child: std::process::Child,
}

impl OwnMongo {
    fn start(port: u16) -> Self {
        let child = std::process::Command::new(testbed("TESTBED_SECANTUSD"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--storage-path", ":memory:", "--log-level", "ERROR"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("SecantusDB starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "SecantusDB did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, child }
    }

    fn kill(mut self) -> u16 {
        self.child.kill().expect("kill SecantusDB");
        self.child.wait().expect("reap SecantusDB");
        self.port
    }
}

impl Drop for OwnMongo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn readyz_until(app: &crate::helpers::TestApp, status: u16, limit: Duration) -> Value {
    let started = Instant::now();
    loop {
        let response = app.get("/readyz").await;
        let code = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let body: Value = response.json().await.expect("JSON body");
        if code == status {
            if status == 503 {
                assert!(retry_after.is_some(), "a 503 carries Retry-After");
            }
            return body;
        }
        assert!(
            started.elapsed() < limit,
            "readyz did not become {status} within {limit:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The service on a SecantusDB of its own, which the test may stop.
async fn app_on_own_mongo() -> (OwnMongo, crate::helpers::TestApp) {
    let mongo = OwnMongo::start(free_port());
    let mut settings = test_settings();
    settings.mongo.uri =
        format!("mongodb://127.0.0.1:{}/?directConnection=true", mongo.port).into();
    settings.mongo.server_selection_timeout_ms = 1000;
    let app = spawn_app_with(settings).await;
    (mongo, app)
}

#[tokio::test]
async fn readyz_turns_503_while_mongodb_is_down_and_200_when_it_is_back() {
    let (mongo, app) = app_on_own_mongo().await;
    readyz_until(&app, 200, Duration::from_secs(5)).await;

    let port = mongo.kill();
    let body = readyz_until(&app, 503, Duration::from_secs(15)).await;
    assert_eq!(body["checks"]["mongodb"], "failed");
    assert_eq!(body["checks"]["bucket"], "ok");
    // Which check failed, never why: the cause names hosts, and goes to the log.
    let text = body.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("mongodb://"),
        "{text}"
    );

    let _mongo = OwnMongo::start(port);
    readyz_until(&app, 200, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn with_a_management_port_readiness_and_metrics_leave_the_public_listener() {
    let mut settings = test_settings();
    settings.server.management_port = free_port();
    let app = spawn_app_with(settings).await;
    let management = ApiClient::new(format!(
        "http://127.0.0.1:{}",
        app.management_port.expect("a management listener")
    ));

    for path in ["/readyz", "/metrics"] {
        assert_eq!(app.get(path).await.status(), 404, "public {path}");
        assert_eq!(
            management.get(path).await.status(),
            200,
            "management {path}"
        );
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(management.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_readiness_answer_is_reused_for_a_second_then_checked_again() {
    let proxy = ChaosProxy::start(socket_address_of(&testbed("MONGODB_URI"))).await;
    let mut settings = test_settings();
    settings.mongo.uri = proxy.url("mongodb", "/?directConnection=true").into();
    let app = spawn_app_with(settings).await;
    assert_eq!(app.get("/readyz").await.status(), 200);

    proxy.stall();
    let cached = app.get("/readyz").await.status();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let checked = app.get("/readyz").await.status();
    proxy.restore();

    assert_eq!(cached, 200, "answered from the last check");
    assert_eq!(
        checked, 503,
        "checked again once the answer was a second old"
    );
}

/// The path the ECS stack's load balancer health-checks (`HealthCheckPath`).
fn load_balancer_health_check_path() -> String {
    let stack =
        std::fs::read_to_string(test_support::repository_root().join("deploy/ecs/stack.yaml"))
            .expect("deploy/ecs/stack.yaml");
    stack
        .lines()
        .find_map(|line| line.trim().strip_prefix("HealthCheckPath:"))
        .map(|path| path.trim().to_owned())
        .expect("the target group names a HealthCheckPath")
}

#[tokio::test]
async fn the_load_balancer_health_check_answers_200_while_mongodb_is_down() {
    let path = load_balancer_health_check_path();
    let (mongo, app) = app_on_own_mongo().await;
    assert_eq!(app.get(&path).await.status(), 200);

    mongo.kill();
    readyz_until(&app, 503, Duration::from_secs(15)).await;

    assert_eq!(
        app.get(&path).await.status(),
        200,
        "{path} fails with MongoDB: an outage would replace every task"
    );
}

#[tokio::test]
async fn every_metric_the_service_exposes_is_documented_in_the_deploy_guide() {
    let app = spawn_app().await;
    app.create_post().await;
    let guide = std::fs::read_to_string(test_support::repository_root().join("docs/deploy.md"))
        .expect("docs/deploy.md");

    let text = app.get_text("/metrics").await;

    let undocumented: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# HELP "))
        .filter_map(|help| help.split(' ').next())
        .filter(|name| !guide.contains(&format!("| `{name}` |")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/deploy.md: {undocumented:?}"
    );
}
