//! Starting the service for tests: in-process on a random port with a fresh database and
//! key prefix, or as the real binary in a child process. Everything not specific to the
//! `api` crate is in `test-support`.

use std::collections::HashMap;
use std::ops::Deref;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{Application, Settings};
use test_support::{ApiClient, Inspector, free_port, repository_root, rss_of};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

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
    settings.auth.disabled = true;
    settings
}

/// A service running inside the test process.
#[derive(Debug)]
pub struct TestApp {
    /// Requests to it.
    pub api: ApiClient,
    /// The port.
    pub port: u16,
    /// The management listener's port, when the settings ask for one.
    pub management_port: Option<u16>,
    /// Its bucket prefix and database, seen directly.
    pub stored: Inspector,
}

impl Deref for TestApp {
    type Target = ApiClient;

    fn deref(&self) -> &ApiClient {
        &self.api
    }
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
    let management_port = application.management_port();
    tokio::spawn(application.run_until_stopped());
    let database =
        mongodb::Client::with_uri_str(secrecy::ExposeSecret::expose_secret(&settings.mongo.uri))
            .await
            .expect("MongoDB client")
            .database(&settings.mongo.database);
    let stored = Inspector::new(&settings.s3.bucket, &settings.s3.key_prefix, database).await;
    TestApp {
        api: ApiClient::new(format!("http://127.0.0.1:{port}")),
        port,
        management_port,
        stored,
    }
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

    /// Spawns `posts-api serve` on a free port, with a database and a key prefix of its own
    /// unless the test names them.
    pub fn spawn(self) -> ServiceProcess {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_posts-api"));
        command
            .arg("serve")
            .current_dir(repository_root())
            .env("PORT", port.to_string())
            .env("APP__LOG__FORMAT", "json")
            .env(
                "APP__MONGO__DATABASE",
                format!("test_{}", uuid::Uuid::new_v4().simple()),
            )
            // A prefix of its own, as the database: a reaper aborts the multipart uploads
            // under its prefix that its database does not know.
            .env(
                "APP__S3__KEY_PREFIX",
                format!("test-{}", uuid::Uuid::new_v4().simple()),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for name in &self.removed {
            command.env_remove(name);
        }
        // Authentication has tests of its own: unless a test configures it, run open.
        if !self
            .set
            .iter()
            .any(|(name, _)| name.starts_with("APP__AUTH__"))
        {
            command.env("APP__AUTH__DISABLED", "true");
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

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("a running process has a pid")
    }

    /// The resident memory of the process now, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_of(self.pid())
    }

    /// Kills the process at once (SIGKILL), as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}
