//! Starting the service for tests: in-process on a random port with a fresh database, or
//! as the real binary in a child process; plus a latency-injecting TCP proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{Application, Settings};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// The repository root, where `config/` lives.
pub fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A testbed variable that `scripts/test` exports; tests cannot run without it.
pub fn testbed(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through scripts/test, or source .local/services.env"
        )
    })
}

/// Settings from the testbed environment, for a service on a random local port.
pub fn test_settings() -> Settings {
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut settings = Settings::load_from(&repository_root().join("config"), &env)
        .expect("the testbed environment is a valid configuration");
    settings.server.host = "127.0.0.1".into();
    settings.server.port = 0;
    settings.mongo.database = format!("test_{}", uuid::Uuid::new_v4().simple());
    settings.s3.key_prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    // Authentication has tests of its own; elsewhere the service runs open.
    settings.auth.jwt_hs256_secret = secrecy::SecretString::from("");
    settings
}

/// A service running inside the test process.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// The port.
    pub port: u16,
    /// A client without redirects or proxies.
    pub client: reqwest::Client,
    /// The settings it runs with.
    pub settings: Settings,
    /// An S3 client to inspect the bucket behind the service's back.
    pub s3: aws_sdk_s3::Client,
    /// The service's database, to inspect records.
    pub database: mongodb::Database,
}

impl TestApp {
    /// `GET {address}{path}`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the service")
    }

    /// `GET {address}{path}`, read as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).await.json().await.expect("a JSON body")
    }

    /// `POST {address}{path}` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request reaches the service")
    }

    /// `{METHOD} {address}{path}` without a body.
    pub async fn request(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.client
            .request(method, format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the service")
    }

    /// Creates a post and returns its id.
    pub async fn create_post(&self) -> String {
        let response = self
            .post_json(
                "/v1/posts",
                &serde_json::json!({ "title": "a post", "body": "text" }),
            )
            .await;
        assert_eq!(response.status(), 201);
        let post: serde_json::Value = response.json().await.expect("post JSON");
        post["id"].as_str().expect("post id").to_owned()
    }

    /// Uploads files as one multipart request.
    pub async fn upload(&self, post_id: &str, files: &[(&str, &[u8])]) -> reqwest::Response {
        let (content_type, body) = multipart(files);
        self.client
            .post(format!("{}/v1/posts/{post_id}/attachments", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request reaches the service")
    }

    /// Uploads one file and returns the attachment JSON.
    pub async fn upload_one(&self, post_id: &str, name: &str, bytes: &[u8]) -> serde_json::Value {
        let response = self.upload(post_id, &[(name, bytes)]).await;
        assert_eq!(response.status(), 201);
        let mut body: serde_json::Value = response.json().await.expect("JSON");
        body["items"][0].take()
    }

    /// Keys of the objects under this service's key prefix.
    pub async fn object_keys(&self) -> Vec<String> {
        self.s3
            .list_objects_v2()
            .bucket(&self.settings.s3.bucket)
            .prefix(format!("{}/", self.settings.s3.key_prefix))
            .send()
            .await
            .expect("ListObjectsV2")
            .contents
            .unwrap_or_default()
            .into_iter()
            .filter_map(|object| object.key)
            .collect()
    }

    /// Incomplete multipart uploads under this service's key prefix.
    pub async fn multipart_uploads(&self) -> usize {
        self.s3
            .list_multipart_uploads()
            .bucket(&self.settings.s3.bucket)
            .prefix(format!("{}/", self.settings.s3.key_prefix))
            .send()
            .await
            .expect("ListMultipartUploads")
            .uploads
            .unwrap_or_default()
            .len()
    }

    /// Attachment records of any status.
    pub async fn attachment_records(&self) -> u64 {
        self.database
            .collection::<mongodb::bson::Document>("attachments")
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("count")
    }

    /// Whether no record, object or multipart upload exists.
    pub async fn nothing_stored(&self) -> bool {
        self.attachment_records().await == 0
            && self.object_keys().await.is_empty()
            && self.multipart_uploads().await == 0
    }

    /// Waits until nothing is stored (clean-up after a cancelled request is asynchronous).
    pub async fn assert_nothing_stored_within(&self, limit: Duration) {
        let started = Instant::now();
        while !self.nothing_stored().await {
            assert!(
                started.elapsed() < limit,
                "still stored after {limit:?}: {} records, {:?} objects, {} multipart uploads",
                self.attachment_records().await,
                self.object_keys().await,
                self.multipart_uploads().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The multipart boundary the helpers use.
pub const BOUNDARY: &str = "posts-api-test-boundary-7MA4YWxkTrZu0gW";

/// The header of one `file` part.
pub fn part_header(name: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
}

/// The closing boundary.
pub fn closing_boundary() -> String {
    format!("--{BOUNDARY}--\r\n")
}

/// A `multipart/form-data` body of `file` parts: (content type, body).
pub fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(part_header(name).as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(closing_boundary().as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// Starts the service in-process against the testbed, with its own database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

/// Starts the service in-process with the given settings.
pub async fn spawn_app_with(settings: Settings) -> TestApp {
    let application = Application::build(settings.clone())
        .await
        .expect("the service starts against the testbed");
    let port = application.port();
    tokio::spawn(application.run_until_stopped());
    let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(settings.aws.region.clone()))
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk_config)
            .force_path_style(true)
            .build(),
    );
    let database =
        mongodb::Client::with_uri_str(secrecy::ExposeSecret::expose_secret(&settings.mongo.uri))
            .await
            .expect("MongoDB client")
            .database(&settings.mongo.database);
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client"),
        settings,
        s3,
        database,
    }
}

/// A free local port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The `posts-api` binary in a child process; output is collected for assertions.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    /// The port it was told to listen on.
    pub port: u16,
    output: Arc<Mutex<String>>,
}

/// Builder for a child-process service: the test's environment with changes.
#[derive(Debug, Default)]
pub struct ServiceCommand {
    set: Vec<(String, String)>,
    removed: Vec<String>,
}

impl ServiceCommand {
    /// Starts from the testbed environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets one environment variable.
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set.push((name.into(), value.into()));
        self
    }

    /// Removes one environment variable.
    pub fn env_remove(mut self, name: &str) -> Self {
        self.removed.push(name.into());
        self
    }

    /// Spawns `posts-api serve` on a free port.
    pub fn spawn(self) -> ServiceProcess {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_posts-api"));
        command
            .arg("serve")
            .current_dir(repository_root())
            .env("PORT", port.to_string())
            .env("APP__LOG__FORMAT", "json")
            .env("APP__AUTH__JWT_HS256_SECRET", "")
            .env(
                "APP__MONGO__DATABASE",
                format!("test_{}", uuid::Uuid::new_v4().simple()),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for name in &self.removed {
            command.env_remove(name);
        }
        for (name, value) in &self.set {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("posts-api starts");
        let output = Arc::new(Mutex::new(String::new()));
        for mut stream in [
            Box::new(child.stdout.take().expect("stdout"))
                as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let output = output.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while let Ok(read) = stream.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    output
                        .lock()
                        .expect("output lock")
                        .push_str(&String::from_utf8_lossy(&buffer[..read]));
                }
            });
        }
        ServiceProcess {
            child,
            port,
            output,
        }
    }
}

impl ServiceProcess {
    /// Everything the process wrote so far, stdout and stderr.
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").clone()
    }

    /// Waits for the exit status, failing the test after `limit`.
    pub async fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("still running after {limit:?}; output:\n{}", self.output()))
            .expect("wait for posts-api");
        // Let the readers drain the pipes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        status
    }

    /// Polls `/healthz` until it answers; returns how long that took from `since`.
    pub async fn ready_within(&mut self, since: Instant, limit: Duration) -> Duration {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        while since.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("posts-api exited with {status}; output:\n{}", self.output());
            }
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return since.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("not ready after {limit:?}; output:\n{}", self.output());
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("running process has a pid");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

/// A TCP proxy to `upstream` that waits `delay` before connecting each accepted client,
/// so every new connection through it costs that much latency.
pub async fn delaying_proxy(upstream: SocketAddr, delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
    let address = listener.local_addr().expect("proxy address");
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Ok(mut server) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    address
}

/// `host:port` of a testbed URL such as `http://127.0.0.1:5000` or a MongoDB URI.
pub fn socket_address_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority.parse().expect("a 127.0.0.1:PORT address")
}
