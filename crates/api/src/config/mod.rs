//! One typed configuration, loaded once at start-up from layered sources (see
//! `docs/configuration.md`): the built-in `config/default.toml` → `config/default.toml` on
//! disk → `config/$APP_ENV.toml` → `APP__SECTION__KEY` variables → the original service's
//! variable names. Each section validates itself next to its type (here, in `storage` and
//! in `aws-creds`); `Settings::validate` adds the rules that span sections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aws_creds::AwsSettings;
use config::{Config, ConfigError, File, FileFormat};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use storage::{MediaSettings, MongoSettings, S3Settings, ScanSettings, UploadSettings};

mod sections;

pub use self::sections::{
    AdmissionSettings, AuthSettings, EventSettings, LogFormat, LogSettings, MIN_HS256_SECRET_BYTES,
    ServerSettings, TraceSettings,
};

/// Built-in defaults, so the binary runs from any directory.
const DEFAULTS: &str = include_str!("../../../../config/default.toml");

/// The most parts one S3 multipart upload may have.
const MAX_PARTS_PER_UPLOAD: u64 = 10_000;

/// The original service's variables and the keys they set; they win over everything.
pub const LEGACY_VARIABLES: &[(&str, &str)] = &[
    ("PORT", "server.port"),
    ("MONGODB_URI", "mongo.uri"),
    ("AWS_REGION", "aws.region"),
    ("AWS_IAM_ROLE_ARN", "aws.role_arn"),
    ("AWS_S3_BUCKET_NAME", "s3.bucket"),
];

/// Every setting of the service.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `server.*`
    pub server: ServerSettings,
    /// `mongo.*`
    pub mongo: MongoSettings,
    /// `aws.*`
    pub aws: AwsSettings,
    /// `s3.*`
    pub s3: S3Settings,
    /// `uploads.*`
    pub uploads: UploadSettings,
    /// `media.*`
    pub media: MediaSettings,
    /// `scan.*`
    pub scan: ScanSettings,
    /// `admission.*`
    pub admission: AdmissionSettings,
    /// `auth.*`
    pub auth: AuthSettings,
    /// `events.*`
    pub events: EventSettings,
    /// `log.*`
    pub log: LogSettings,
    /// `traces.*`
    pub traces: TraceSettings,
    /// The `APP_ENV` the settings were loaded for.
    #[serde(skip)]
    pub environment: Environment,
}

/// `APP_ENV`: which `config/{name}.toml` applies, and whether production's stricter
/// start-up checks do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Environment {
    /// `local`, the default: development on one machine.
    #[default]
    Local,
    /// `production`.
    Production,
    /// Any other name, e.g. `staging`.
    Named(String),
}

impl Environment {
    /// The environment called `name`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "local" => Self::Local,
            "production" => Self::Production,
            other => Self::Named(other.to_owned()),
        }
    }

    /// The name, as `APP_ENV` spells it.
    pub fn name(&self) -> &str {
        match self {
            Self::Local => "local",
            Self::Production => "production",
            Self::Named(name) => name,
        }
    }
}

impl Settings {
    /// Whether this is the production environment (stricter start-up checks).
    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }
}

/// A configuration that cannot be used: the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {problem}")]
pub struct SettingsError {
    /// Full key, e.g. `mongo.uri`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl SettingsError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl From<aws_creds::InvalidSetting> for SettingsError {
    fn from(invalid: aws_creds::InvalidSetting) -> Self {
        Self::new(invalid.key, invalid.problem)
    }
}

impl From<storage::InvalidSetting> for SettingsError {
    fn from(invalid: storage::InvalidSetting) -> Self {
        Self::new(invalid.key, invalid.problem)
    }
}

impl Settings {
    /// Loads from the process environment and `$APP_CONFIG_DIR` (default `config`).
    pub fn load() -> Result<Self, SettingsError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let dir = env
            .get("APP_CONFIG_DIR")
            .map_or_else(|| PathBuf::from("config"), PathBuf::from);
        Self::load_from(&dir, &env)
    }

    /// Loads from `config_dir` and the given environment variables, then validates.
    pub fn load_from(
        config_dir: &Path,
        env: &HashMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let environment =
            Environment::from_name(env.get("APP_ENV").map_or("local", String::as_str));
        let mut settings: Self = layered(config_dir, env, &environment)?
            .try_deserialize()
            .map_err(from_config_error)?;
        settings.environment = environment;
        settings.validate()?;
        Ok(settings)
    }

    /// Loads one section alone, from the same sources as [`Settings::load`]: for commands
    /// that need only it (`posts-api token` needs `auth`, not a database).
    pub fn load_section<T: DeserializeOwned>(name: &str) -> Result<T, SettingsError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let dir = env
            .get("APP_CONFIG_DIR")
            .map_or_else(|| PathBuf::from("config"), PathBuf::from);
        let environment =
            Environment::from_name(env.get("APP_ENV").map_or("local", String::as_str));
        layered(&dir, &env, &environment)?
            .get(name)
            .map_err(from_config_error)
    }

    /// Checks every section, then the rules between sections.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.mongo.validate()?;
        self.aws.validate()?;
        self.s3.validate()?;
        self.uploads.validate()?;
        self.media.validate()?;
        self.scan.validate()?;
        self.auth.validate(&self.environment)?;
        self.events.validate()?;
        self.log.validate()?;
        self.traces.validate()?;
        if self.aws.refresh_lead_secs < self.s3.presign_ttl_secs.get() {
            return Err(SettingsError::new(
                "aws.refresh_lead_secs",
                format!(
                    "{} must be at least s3.presign_ttl_secs ({}), so a presigned URL never outlives its credentials",
                    self.aws.refresh_lead_secs, self.s3.presign_ttl_secs
                ),
            ));
        }
        let quarantine = self.scan.quarantine_prefix.as_str();
        let own = self.s3.key_prefix.as_str();
        if !quarantine.is_empty()
            && (quarantine == own || quarantine.starts_with(&format!("{own}/")))
        {
            return Err(SettingsError::new(
                "scan.quarantine_prefix",
                format!(
                    "`{quarantine}` is inside s3.key_prefix (`{own}`), where the reaper deletes what no record names"
                ),
            ));
        }
        let per_upload = self.upload_memory_per_request();
        if self.admission.upload_memory_bytes.get() < per_upload {
            return Err(SettingsError::new(
                "admission.upload_memory_bytes",
                format!(
                    "{} is less than one upload holds ({per_upload} bytes: \
                     (s3.max_parts_in_flight + 1) × s3.part_size_bytes), so no upload could start",
                    self.admission.upload_memory_bytes
                ),
            ));
        }
        let parts_needed = self
            .uploads
            .max_file_bytes
            .get()
            .div_ceil(self.s3.part_size_bytes.max(1));
        if parts_needed > MAX_PARTS_PER_UPLOAD {
            return Err(SettingsError::new(
                "s3.part_size_bytes",
                format!(
                    "{} bytes per part would take {parts_needed} parts for a file of \
                     uploads.max_file_bytes ({}); S3 takes at most {MAX_PARTS_PER_UPLOAD}, so \
                     parts must be at least {} bytes",
                    self.s3.part_size_bytes,
                    self.uploads.max_file_bytes,
                    self.uploads
                        .max_file_bytes
                        .get()
                        .div_ceil(MAX_PARTS_PER_UPLOAD)
                ),
            ));
        }
        if self.uploads.pending_ttl_secs < self.s3.presign_ttl_secs.get() {
            return Err(SettingsError::new(
                "uploads.pending_ttl_secs",
                format!(
                    "{} must be at least s3.presign_ttl_secs ({}): the reaper would remove a \
                     direct upload while its presigned URL still works",
                    self.uploads.pending_ttl_secs, self.s3.presign_ttl_secs
                ),
            ));
        }
        Ok(())
    }

    /// The most memory one streamed upload request holds: its parts in flight and the one
    /// filling.
    pub fn upload_memory_per_request(&self) -> u64 {
        (u64::from(self.s3.max_parts_in_flight.get()) + 1).saturating_mul(self.s3.part_size_bytes)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }
}

/// The layers, later winning: built-in defaults, `default.toml` and the environment's file
/// on disk, `APP__SECTION__KEY` variables, the original service's variables.
fn layered(
    config_dir: &Path,
    env: &HashMap<String, String>,
    environment: &Environment,
) -> Result<Config, SettingsError> {
    let mut builder = Config::builder()
        .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
        .add_source(File::from(config_dir.join("default.toml")).required(false))
        .add_source(
            File::from(config_dir.join(format!("{}.toml", environment.name()))).required(false),
        )
        .add_source(
            config::Environment::with_prefix("APP")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("uploads.allowed_content_types")
                .with_list_parse_key("server.cors_allowed_origins")
                .try_parsing(true)
                .source(Some(env.clone())),
        );
    for (variable, key) in LEGACY_VARIABLES {
        if let Some(value) = env.get(*variable) {
            builder = builder
                .set_override(*key, value.as_str())
                .map_err(|error| SettingsError::new(*key, error.to_string()))?;
        }
    }
    builder.build().map_err(from_config_error)
}

/// The `config` crate's error as one naming the key.
fn from_config_error(error: ConfigError) -> SettingsError {
    match error {
        ConfigError::NotFound(key) => SettingsError::new(key, "is required"),
        ConfigError::At { error, key, .. } => SettingsError::new(
            key.unwrap_or_else(|| "configuration".into()),
            problem_of(*error),
        ),
        ConfigError::Type { ref key, .. } => SettingsError::new(
            key.clone().unwrap_or_else(|| "configuration".into()),
            problem_of(error),
        ),
        ConfigError::FileParse { uri, cause } => SettingsError::new(
            uri.unwrap_or_else(|| "configuration file".into()),
            cause.to_string(),
        ),
        other => SettingsError::new("configuration", other.to_string()),
    }
}

/// What is wrong, without the key the caller names.
fn problem_of(error: ConfigError) -> String {
    match error {
        ConfigError::Type {
            unexpected,
            expected,
            ..
        } => format!("expected {expected}, found {unexpected}"),
        ConfigError::Message(message) => message,
        ConfigError::At { error, .. } => problem_of(*error),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
