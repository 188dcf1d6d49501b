//! The `posts-api` command line: serve (default), print the configuration, migrate, probe
//! the health of a running instance, or mint a development token.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{AuthSettings, ServerSettings, Settings};
use crate::startup::Application;
use crate::telemetry;

pub mod healthcheck;

/// Exit status for an unusable configuration.
const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "posts-api",
    version,
    about = "REST API for posts with file attachments"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect MongoDB and AWS, migrate, and serve HTTP (the default).
    Serve,
    /// Print the effective configuration with secrets redacted.
    Config,
    /// Apply pending MongoDB migrations and exit.
    Migrate,
    /// Probe `/healthz` of the running instance (for container health checks).
    Healthcheck,
    /// Print the webhook events that ran out of attempts, newest first, one JSON per line.
    FailedEvents {
        /// How many to print at most.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Mint an HS256 bearer token from the configured secret, for local use.
    Token {
        /// The token's subject (the author it stands for).
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

/// Whether `posts-api NAME` is a command (deployment files name them).
pub fn has_command(name: &str) -> bool {
    Cli::command().find_subcommand(name).is_some()
}

/// Parses the arguments, runs the command and returns its exit status.
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn main() -> ExitCode {
    match Cli::parse().command.unwrap_or(Command::Serve) {
        // These two need one section each, so they work where nothing else is configured.
        Command::Healthcheck => match Settings::load_section::<ServerSettings>("server") {
            Ok(server) => match healthcheck::probe(&server, Duration::from_secs(3)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("posts-api: unhealthy: {error}");
                    ExitCode::FAILURE
                }
            },
            Err(error) => config_error(&error),
        },
        Command::Token { sub, ttl } => match Settings::load_section::<AuthSettings>("auth") {
            Ok(auth) => match crate::auth::mint_hs256(&auth, &sub, Duration::from_secs(ttl)) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("posts-api: cannot mint a token: {error}");
                    ExitCode::FAILURE
                }
            },
            Err(error) => config_error(&error),
        },
        Command::Config => match Settings::load() {
            Ok(settings) => {
                print!("{}", settings.to_redacted_toml());
                ExitCode::SUCCESS
            }
            Err(error) => config_error(&error),
        },
        Command::Migrate => match Settings::load() {
            Ok(settings) => run(&settings.clone(), migrate(settings)),
            Err(error) => config_error(&error),
        },
        Command::FailedEvents { limit } => match Settings::load() {
            Ok(settings) => run(&settings.clone(), print_failed_events(settings, limit)),
            Err(error) => config_error(&error),
        },
        Command::Serve => match Settings::load() {
            Ok(settings) => run(&settings.clone(), serve(settings)),
            Err(error) => config_error(&error),
        },
    }
}

/// Reports an unusable configuration and returns its exit status.
#[allow(clippy::print_stderr)]
fn config_error(error: &crate::config::SettingsError) -> ExitCode {
    eprintln!("posts-api: {error}");
    ExitCode::from(EXIT_CONFIG)
}

/// Sets up logging and the runtime, runs `work`, and turns its outcome into the exit code.
fn run(settings: &Settings, work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let telemetry = telemetry::init(&settings.log, &settings.traces);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the async runtime: {error}");
            telemetry.shutdown();
            return ExitCode::FAILURE;
        }
    };
    let outcome = match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("start-up failed: {error:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    outcome
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let application = Application::build(settings).await?;
    application.run_until_stopped().await?;
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let mongo = storage::Mongo::connect(&settings.mongo).await?;
    let applied = storage::run_migrations(mongo.database()).await?;
    tracing::info!(applied, "migrations up to date");
    mongo.shutdown().await;
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn print_failed_events(settings: Settings, limit: u32) -> anyhow::Result<()> {
    let mongo = storage::Mongo::connect(&settings.mongo).await?;
    let failed = storage::failed_events(&mongo, i64::from(limit)).await;
    mongo.shutdown().await;
    for event in failed? {
        let line = serde_json::json!({
            "id": event.id,
            "post_id": event.post_id.to_string(),
            "attempts": event.attempts,
            "last_error": event.last_error,
            "failed_at": crate::http::views::timestamp(event.failed_at),
            "event": event.body,
        });
        println!("{line}");
    }
    Ok(())
}
