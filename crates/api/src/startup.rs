//! Start-up wiring: connect MongoDB and obtain AWS credentials concurrently, prove both,
//! migrate, then bind and serve the routes; graceful shutdown on SIGTERM or SIGINT.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpServer, web};
use aws_config::{BehaviorVersion, Region};
use aws_creds::{CredentialsError, TemporaryCredentials};
use storage::{
    MigrationError, Mongo, MongoError, ObjectStore, ObjectStoreError, Storage, UploadMemory,
};
use tokio::task::JoinHandle;

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::background::{Reaper, refresh_jwks_periodically};
use crate::config::Settings;
use crate::http::{self, request_id};
use crate::metrics::Metrics;
use crate::routes;
use crate::routes::ops::ReadinessCache;
use crate::routes::page::{WebPage, mints_dev_tokens};
use crate::state::AppState;
use crate::telemetry::AwsCallSpans;
use crate::webhooks::Dispatcher;

/// Why the service could not start. Each message names the dependency and the cause.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// MongoDB could not be reached.
    #[error("MongoDB: {0}")]
    Mongo(#[from] MongoError),
    /// No usable AWS credentials.
    #[error("AWS credentials: {0}")]
    Credentials(#[from] CredentialsError),
    /// The bucket cannot be used.
    #[error("S3: {0}")]
    Bucket(#[from] ObjectStoreError),
    /// The schema could not be migrated.
    #[error("MongoDB migrations: {0}")]
    Migrations(#[from] MigrationError),
    /// Authentication cannot be set up.
    #[error("authentication: {0}")]
    Auth(#[from] crate::auth::AuthSetupError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// `host:port`.
        address: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// MongoDB and AWS both failed.
    #[error("{0}; and {1}")]
    Both(Box<StartupError>, Box<StartupError>),
}

/// A bound, not yet running, service.
pub struct Application {
    server: Server,
    port: u16,
    /// The management listener (`/readyz`, `/metrics`) and its port, when configured.
    management: Option<(Server, u16)>,
    mongo: Mongo,
    reaper: Reaper,
    dispatcher: Option<Dispatcher>,
    jwks_refresher: JoinHandle<()>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects every dependency and binds the listener. Fails, naming the dependency,
    /// when MongoDB, the credentials or the bucket cannot be used.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        // The JWKS is fetched while MongoDB and AWS are reached, not before them.
        let upload_memory = UploadMemory::new(settings.admission.upload_memory_bytes.get());
        let (authenticator, backends) = tokio::try_join!(
            async { Ok(Authenticator::from_settings(&settings.auth).await?) },
            connect(&settings, &upload_memory),
        )?;
        let applied = storage::run_migrations(backends.mongo.database()).await?;
        tracing::info!(applied, "migrations up to date");
        let metrics = Arc::new(Metrics::new(
            backends.credentials.clone(),
            backends.mongo.clone(),
            upload_memory.clone(),
            backends.storage.clone(),
        ));
        let reaper = Reaper::start(
            backends.storage.clone(),
            Duration::from_secs(settings.uploads.reaper_interval_secs.get()),
            metrics.clone(),
        );
        let dispatcher =
            Dispatcher::start(backends.storage.clone(), &settings.events, metrics.events());
        let state = AppState {
            mongo: backends.mongo,
            storage: backends.storage,
            credentials: backends.credentials,
            storage_timeout: Duration::from_secs(settings.server.storage_timeout_secs.get()),
            settings: Arc::new(settings.clone()),
            admission: Arc::new(Admission::new(&settings, upload_memory)),
            metrics,
            variant_names: settings.media.variants.keys().cloned().collect(),
        };

        let (listener, port) = bind(&settings.server.host, settings.server.port)?;
        disconnect_clients_that_stop_reading(
            &listener,
            Duration::from_secs(settings.server.response_body_timeout_secs.get()),
        )
        .map_err(|source| StartupError::Bind {
            address: format!("{}:{port}", settings.server.host),
            source,
        })?;
        let management_listener = match settings.server.management_port {
            0 => None,
            management_port => Some(bind(&settings.server.host, management_port)?),
        };
        let mongo = state.mongo.clone();
        let readiness = web::Data::new(ReadinessCache::default());
        let data = web::Data::new(state);
        let storage_origin = storage_origin(&data.storage, &settings).await;
        let page = web::Data::new(WebPage::new(
            mints_dev_tokens(&settings),
            storage_origin.as_deref(),
        ));
        let jwks_refresher = refresh_jwks_periodically(authenticator.clone());
        let authenticator = web::Data::new(authenticator);
        let separate_management = management_listener.is_some();
        let cors_origins = settings.server.cors_allowed_origins.clone();
        let server = HttpServer::new({
            let (data, readiness) = (data.clone(), readiness.clone());
            move || {
                App::new()
                    .wrap(from_fn(http::request_metrics::record))
                    .wrap(from_fn(request_id::assign))
                    // Outermost, so that every answer, errors included, carries its headers.
                    .wrap(Condition::new(
                        !cors_origins.is_empty(),
                        http::cors::policy(&cors_origins),
                    ))
                    .app_data(web::Data::new(data.for_this_worker()))
                    .app_data(readiness.clone())
                    .app_data(authenticator.clone())
                    .app_data(page.clone())
                    .configure(if separate_management {
                        routes::public
                    } else {
                        routes::configure
                    })
            }
        });
        let server = server
            // Signals are ours: actix treats SIGINT as a forced stop, we want graceful.
            .disable_signals()
            .shutdown_timeout(settings.server.shutdown_grace_secs)
            .client_request_timeout(Duration::from_secs(10))
            .client_disconnect_timeout(Duration::from_secs(5))
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                address: format!("{}:{port}", settings.server.host),
                source,
            })?
            .run();
        let management = match management_listener {
            None => None,
            Some((listener, management_port)) => {
                let server = HttpServer::new(move || {
                    App::new()
                        .wrap(from_fn(http::request_metrics::record))
                        .wrap(from_fn(request_id::assign))
                        .app_data(data.clone())
                        .app_data(readiness.clone())
                        .configure(routes::management)
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(settings.server.shutdown_grace_secs)
                .client_request_timeout(Duration::from_secs(10));
                let server = server
                    .listen(listener)
                    .map_err(|source| StartupError::Bind {
                        address: format!("{}:{management_port}", settings.server.host),
                        source,
                    })?
                    .run();
                Some((server, management_port))
            }
        };
        Ok(Self {
            server,
            port,
            management,
            mongo,
            reaper,
            dispatcher,
            jwks_refresher,
        })
    }

    /// The bound port (useful when configured as 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the management listener, when one is configured.
    pub fn management_port(&self) -> Option<u16> {
        self.management.as_ref().map(|(_, port)| *port)
    }

    /// Serves until SIGTERM or SIGINT, then lets in-flight requests finish within the
    /// grace period and closes MongoDB.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        tracing::info!(
            port = self.port,
            management_port = self.management_port(),
            "listening"
        );
        let handle = self.server.handle();
        let management = self
            .management
            .map(|(server, _)| (server.handle(), tokio::spawn(server)));
        let mut server = tokio::spawn(self.server);
        let result = tokio::select! {
            result = &mut server => result,
            () = shutdown_signal() => {
                tracing::info!("shutting down: finishing in-flight requests");
                handle.stop(true).await;
                server.await
            }
        };
        // Readiness and metrics stay up until the public listener has drained.
        if let Some((handle, task)) = management {
            handle.stop(true).await;
            if let Err(error) = task.await {
                tracing::warn!(%error, "the management listener ended abnormally");
            }
        }
        self.jwks_refresher.abort();
        self.reaper.stop().await;
        if let Some(dispatcher) = self.dispatcher {
            dispatcher.stop().await;
        }
        self.mongo.shutdown().await;
        tracing::info!("stopped");
        result.map_err(io::Error::other)?
    }
}

/// The origin (`scheme://host:port`) of this instance's presigned S3 URLs, which the web
/// page may send files to; `None` if none can be presigned (the page then uploads
/// through the service only).
async fn storage_origin(storage: &storage::Storage, settings: &Settings) -> Option<String> {
    let key = storage
        .objects()
        .staging_key_for(storage::PostId::new(), storage::AttachmentId::new());
    let ttl = Duration::from_secs(settings.s3.presign_ttl_secs.get());
    match storage
        .objects()
        .presign_put(&key, ttl, "application/octet-stream", 1)
        .await
    {
        Ok(presigned) => reqwest::Url::parse(&presigned.url)
            .ok()
            .map(|url| url.origin().ascii_serialization()),
        Err(error) => {
            tracing::warn!(%error, "cannot presign: the web page uploads through the service only");
            None
        }
    }
}

/// Sets `TCP_USER_TIMEOUT` on the listener, which its connections inherit: the kernel
/// closes a connection whose client took no byte for `timeout`, and the response (a
/// download's S3 stream with it) fails at its next write. actix-web has no write timeout
/// of its own.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn disconnect_clients_that_stop_reading(
    listener: &TcpListener,
    timeout: Duration,
) -> io::Result<()> {
    socket2::SockRef::from(listener).set_tcp_user_timeout(Some(timeout))
}

/// Elsewhere (a developer's macOS) the option does not exist; connections keep the
/// system's behaviour.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn disconnect_clients_that_stop_reading(
    _listener: &TcpListener,
    _timeout: Duration,
) -> io::Result<()> {
    Ok(())
}

/// Binds `host:port`; returns the listener and the port it got (for port 0).
fn bind(host: &str, port: u16) -> Result<(TcpListener, u16), StartupError> {
    let address = format!("{host}:{port}");
    let listener = TcpListener::bind(&address).map_err(|source| StartupError::Bind {
        address: address.clone(),
        source,
    })?;
    let port = listener
        .local_addr()
        .map_err(|source| StartupError::Bind { address, source })?
        .port();
    Ok((listener, port))
}

/// MongoDB, S3 and the credentials, connected.
struct Backends {
    mongo: Mongo,
    storage: Storage,
    credentials: TemporaryCredentials,
}

/// Connects MongoDB and AWS at the same time; start-up takes the slower of the two. Uploads
/// grow their parts in flight into `upload_memory`.
async fn connect(
    settings: &Settings,
    upload_memory: &UploadMemory,
) -> Result<Backends, StartupError> {
    let started = Instant::now();
    let mongo = async {
        let mongo = if settings.traces.is_on() {
            Mongo::connect_with_command_spans(&settings.mongo).await?
        } else {
            Mongo::connect(&settings.mongo).await?
        };
        tracing::info!(elapsed = ?started.elapsed(), uri = %settings.mongo.redacted_uri(), "MongoDB answered");
        Ok::<_, StartupError>(mongo)
    };
    let aws = async {
        let (credentials, objects) = connect_aws(settings).await?;
        tracing::info!(elapsed = ?started.elapsed(), bucket = %objects.bucket(), "AWS credentials and bucket ready");
        Ok::<_, StartupError>((credentials, objects))
    };
    match tokio::join!(mongo, aws) {
        (Ok(mongo), Ok((credentials, objects))) => Ok(Backends {
            storage: {
                let storage = Storage::new(
                    &mongo,
                    objects.with_upload_memory(upload_memory.clone()),
                    &settings.uploads,
                    &settings.media,
                    &settings.scan,
                    Duration::from_secs(settings.s3.presign_ttl_secs.get()),
                );
                if settings.events.is_on() {
                    storage.recording_events()
                } else {
                    storage
                }
            },
            mongo,
            credentials,
        }),
        (Err(mongo), Err(aws)) => Err(StartupError::Both(Box::new(mongo), Box::new(aws))),
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => Err(error),
    }
}

/// Obtains the first credentials (AssumeRole or the base chain) and proves them with a
/// `HeadBucket` through the S3 client that will serve requests.
async fn connect_aws(
    settings: &Settings,
) -> Result<(TemporaryCredentials, ObjectStore), StartupError> {
    let sdk_config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(settings.aws.region.clone()))
        .timeout_config(settings.aws.timeout_config())
        .load()
        .await;
    let interceptors = if settings.traces.is_on() {
        vec![AwsCallSpans::shared()]
    } else {
        Vec::new()
    };
    let credentials =
        TemporaryCredentials::with_interceptors(&settings.aws, &sdk_config, &interceptors)?;
    credentials.credentials().await?;
    let objects = ObjectStore::with_interceptors(
        &sdk_config,
        credentials.shared_provider(),
        &settings.s3,
        &interceptors,
    );
    objects.check_bucket().await?;
    Ok((credentials, objects))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
