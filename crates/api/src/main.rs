//! The `posts-api` binary: serve (default), print the configuration, or migrate.

use std::process::ExitCode;

use api::{Application, Settings, telemetry};
use clap::{Parser, Subcommand};

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
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("posts-api: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Config = command {
        print!("{}", settings.to_redacted_toml());
        return ExitCode::SUCCESS;
    }

    telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("posts-api: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match command {
            Command::Migrate => migrate(&settings).await,
            Command::Serve | Command::Config => serve(settings).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("start-up failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let application = Application::build(settings).await?;
    application.run_until_stopped().await?;
    Ok(())
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let mongo = storage::Mongo::connect(&settings.mongo).await?;
    let applied = storage::run_migrations(mongo.database()).await?;
    tracing::info!(applied, "migrations up to date");
    mongo.shutdown().await;
    Ok(())
}
