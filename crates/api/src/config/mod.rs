//! One typed configuration, loaded once at start-up from layered sources (see
//! `docs/configuration.md`): the built-in `config/default.toml` → `config/default.toml` on disk →
//! `config/$APP_ENV.toml` → `APP__SECTION__KEY` variables → the original service's
//! variable names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aws_creds::AwsSettings;
use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};
use storage::{MongoSettings, S3Settings, UploadSettings};

/// Built-in defaults, so the binary runs from any directory.
const DEFAULTS: &str = include_str!("../../../../config/default.toml");

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
    /// `auth.*`
    pub auth: AuthSettings,
    /// `log.*`
    pub log: LogSettings,
    /// `APP_ENV` the settings were loaded for (`local` by default).
    #[serde(skip, default = "default_environment")]
    pub environment: String,
}

fn default_environment() -> String {
    "local".into()
}

impl Settings {
    /// Whether this is the production environment (stricter start-up checks).
    pub fn is_production(&self) -> bool {
        self.environment == "production"
    }
}

/// `server.*`: where to listen and how long shutdown may take.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub host: String,
    /// Listen port; 0 picks a free one.
    pub port: u16,
    /// Time in-flight requests get after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// An upload whose body sends nothing for this long fails.
    pub request_body_timeout_secs: u64,
}

/// `auth.*`: bearer token validation.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret for local development.
    #[serde(serialize_with = "serialize_redacted")]
    pub jwt_hs256_secret: SecretString,
    /// JWKS for RS256/ES256 tokens.
    pub jwks_url: String,
    /// Required `iss` when set.
    pub issuer: String,
    /// Required `aud` when set.
    pub audience: String,
    /// Whether GET routes need no token.
    pub public_reads: bool,
}

/// `log.*`: log output.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Human-readable or JSON lines.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,storage=debug`.
    pub level: String,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (local development).
    Pretty,
    /// One JSON object per line (production).
    Json,
}

fn serialize_redacted<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    s.serialize_str(if secret.expose_secret().is_empty() {
        ""
    } else {
        "[redacted]"
    })
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
        let app_env = env.get("APP_ENV").map_or("local", String::as_str);
        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::from(config_dir.join("default.toml")).required(false))
            .add_source(File::from(config_dir.join(format!("{app_env}.toml"))).required(false))
            .add_source(
                Environment::with_prefix("APP")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("uploads.allowed_content_types")
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
        let mut settings: Self = builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(from_config_error)?;
        settings.environment = app_env.to_owned();
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that deserialize but cannot work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        use secrecy::ExposeSecret;
        let uri = self.mongo.uri.expose_secret();
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(SettingsError::new(
                "mongo.uri",
                "must be a mongodb:// or mongodb+srv:// connection string (set MONGODB_URI)",
            ));
        }
        if self.mongo.database.is_empty() {
            return Err(SettingsError::new("mongo.database", "must not be empty"));
        }
        self.aws.validate()?;
        if self.s3.bucket.trim().is_empty() {
            return Err(SettingsError::new(
                "s3.bucket",
                "is required (set AWS_S3_BUCKET_NAME or APP__S3__BUCKET)",
            ));
        }
        if self.s3.key_prefix.is_empty()
            || !self
                .s3
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c))
        {
            return Err(SettingsError::new(
                "s3.key_prefix",
                "must be letters, digits, '-', '_' or '/'",
            ));
        }
        const MIN_PART: u64 = 5 * 1024 * 1024;
        if self.s3.part_size_bytes < MIN_PART {
            return Err(SettingsError::new(
                "s3.part_size_bytes",
                format!(
                    "{} is below S3's minimum part size of 5 MiB",
                    self.s3.part_size_bytes
                ),
            ));
        }
        if self.s3.max_parts_in_flight == 0 {
            return Err(SettingsError::new(
                "s3.max_parts_in_flight",
                "must be at least 1",
            ));
        }
        if self.s3.presign_ttl_secs == 0 {
            return Err(SettingsError::new(
                "s3.presign_ttl_secs",
                "must be at least 1",
            ));
        }
        if self.aws.refresh_lead_secs < self.s3.presign_ttl_secs {
            return Err(SettingsError::new(
                "aws.refresh_lead_secs",
                format!(
                    "{} must be at least s3.presign_ttl_secs ({}), so a presigned URL never outlives its credentials",
                    self.aws.refresh_lead_secs, self.s3.presign_ttl_secs
                ),
            ));
        }
        if self.uploads.max_file_bytes == 0 {
            return Err(SettingsError::new(
                "uploads.max_file_bytes",
                "must be at least 1",
            ));
        }
        if self.uploads.max_files_per_request == 0 {
            return Err(SettingsError::new(
                "uploads.max_files_per_request",
                "must be at least 1",
            ));
        }
        if let Some(bad) = self.uploads.allowed_content_types.iter().find(|t| {
            t.split_once('/')
                .is_none_or(|(a, b)| a.is_empty() || b.is_empty())
        }) {
            return Err(SettingsError::new(
                "uploads.allowed_content_types",
                format!("`{bad}` is not a media type like image/png"),
            ));
        }
        if self.uploads.reaper_interval_secs == 0 {
            return Err(SettingsError::new(
                "uploads.reaper_interval_secs",
                "must be at least 1",
            ));
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(SettingsError::new("log.level", error.to_string()));
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }
}

/// Turns the `config` crate's error into one naming the key.
fn from_config_error(error: config::ConfigError) -> SettingsError {
    let message = error.to_string();
    // Missing keys read `missing configuration field "aws.region"`; others name the key
    // after `for key`.
    let key = quoted_after(&message, "missing configuration field ")
        .or_else(|| quoted_after(&message, "for key "))
        .unwrap_or_else(|| "configuration".into());
    let problem = if message.starts_with("missing configuration field") {
        "is required".to_owned()
    } else {
        message
    };
    SettingsError::new(key, problem)
}

fn quoted_after(message: &str, marker: &str) -> Option<String> {
    let rest = &message[message.find(marker)? + marker.len()..];
    let rest = rest.trim_start_matches(['"', '`']);
    let end = rest.find(['"', '`'])?;
    Some(rest[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config directory of the test's own with the given files.
    struct ConfigDir(PathBuf);

    impl ConfigDir {
        fn with(files: &[(&str, &str)]) -> Self {
            let dir =
                std::env::temp_dir().join(format!("posts-api-config-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            for (name, text) in files {
                std::fs::write(dir.join(name), text).expect("write config file");
            }
            Self(dir)
        }
    }

    impl Drop for ConfigDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let required = [
            ("MONGODB_URI", "mongodb://127.0.0.1:27017"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_S3_BUCKET_NAME", "attachments"),
        ];
        required
            .iter()
            .chain(pairs)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(files: &[(&str, &str)], pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let dir = ConfigDir::with(files);
        Settings::load_from(&dir.0, &env(pairs))
    }

    fn load_ok(files: &[(&str, &str)], pairs: &[(&str, &str)]) -> Settings {
        load(files, pairs).expect("valid configuration")
    }

    fn error_key(files: &[(&str, &str)], pairs: &[(&str, &str)]) -> String {
        match load(files, pairs) {
            Err(error) => error.key,
            Ok(_) => panic!("expected an invalid configuration"),
        }
    }

    #[test]
    fn built_in_defaults_apply_when_only_required_keys_are_set() {
        let settings = load_ok(&[], &[]);
        assert_eq!(settings.server.host, "0.0.0.0");
        assert_eq!(settings.server.port, 8080);
        assert_eq!(settings.mongo.database, "posts_api");
        assert_eq!(settings.aws.session_duration_secs, 3600);
        assert_eq!(settings.aws.role_arn(), None);
        assert_eq!(settings.s3.part_size_bytes, 8 * 1024 * 1024);
        assert_eq!(settings.uploads.max_files_per_request, 10);
        assert!(settings.auth.public_reads);
        assert_eq!(settings.log.format, LogFormat::Pretty);
    }

    #[test]
    fn default_toml_on_disk_overrides_the_built_in_defaults() {
        let settings = load_ok(&[("default.toml", "[mongo]\ndatabase = \"disk\"\n")], &[]);
        assert_eq!(settings.mongo.database, "disk");
    }

    #[test]
    fn app_env_selects_the_environment_file() {
        let files = [
            ("staging.toml", "[server]\nport = 7000\n"),
            ("local.toml", "[server]\nport = 7001\n"),
        ];
        assert_eq!(load_ok(&files, &[("APP_ENV", "staging")]).server.port, 7000);
    }

    #[test]
    fn app_env_defaults_to_local() {
        let files = [("local.toml", "[server]\nport = 7001\n")];
        assert_eq!(load_ok(&files, &[]).server.port, 7001);
    }

    #[test]
    fn app_variables_override_the_environment_file() {
        let files = [("local.toml", "[s3]\npart_size_bytes = 6291456\n")];
        let settings = load_ok(&files, &[("APP__S3__PART_SIZE_BYTES", "10485760")]);
        assert_eq!(settings.s3.part_size_bytes, 10 * 1024 * 1024);
    }

    #[test]
    fn app_variables_reach_every_section() {
        let settings = load_ok(
            &[],
            &[
                ("APP__SERVER__SHUTDOWN_GRACE_SECS", "5"),
                ("APP__MONGO__SERVER_SELECTION_TIMEOUT_MS", "100"),
                ("APP__AWS__SESSION_NAME_PREFIX", "svc"),
                ("APP__S3__FORCE_PATH_STYLE", "true"),
                (
                    "APP__UPLOADS__ALLOWED_CONTENT_TYPES",
                    "image/png,text/plain",
                ),
                ("APP__AUTH__PUBLIC_READS", "false"),
                ("APP__LOG__FORMAT", "json"),
            ],
        );
        assert_eq!(settings.server.shutdown_grace_secs, 5);
        assert_eq!(settings.mongo.server_selection_timeout_ms, 100);
        assert_eq!(settings.aws.session_name_prefix, "svc");
        assert!(settings.s3.force_path_style);
        assert_eq!(
            settings.uploads.allowed_content_types,
            ["image/png", "text/plain"]
        );
        assert!(!settings.auth.public_reads);
        assert_eq!(settings.log.format, LogFormat::Json);
    }

    #[test]
    fn original_variable_names_win_over_app_variables() {
        let settings = load_ok(
            &[],
            &[
                ("APP__SERVER__PORT", "1111"),
                ("PORT", "2222"),
                ("APP__MONGO__URI", "mongodb://app-variable"),
                ("MONGODB_URI", "mongodb://original"),
                ("APP__AWS__REGION", "us-west-2"),
                ("AWS_REGION", "ap-northeast-1"),
                ("APP__AWS__ROLE_ARN", "arn:aws:iam::1:role/app"),
                ("AWS_IAM_ROLE_ARN", "arn:aws:iam::1:role/original"),
                ("APP__S3__BUCKET", "app-bucket"),
                ("AWS_S3_BUCKET_NAME", "original-bucket"),
            ],
        );
        use secrecy::ExposeSecret;
        assert_eq!(settings.server.port, 2222);
        assert_eq!(settings.mongo.uri.expose_secret(), "mongodb://original");
        assert_eq!(settings.aws.region, "ap-northeast-1");
        assert_eq!(
            settings.aws.role_arn(),
            Some("arn:aws:iam::1:role/original")
        );
        assert_eq!(settings.s3.bucket, "original-bucket");
    }

    #[test]
    fn the_shipped_production_file_switches_logs_to_json() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let settings = Settings::load_from(&dir, &env(&[("APP_ENV", "production")]))
            .expect("valid configuration");
        assert_eq!(settings.log.format, LogFormat::Json);
    }

    #[test]
    fn a_missing_required_key_is_named() {
        let dir = ConfigDir::with(&[]);
        let mut env = env(&[]);
        env.remove("MONGODB_URI");
        let error = Settings::load_from(&dir.0, &env).expect_err("mongo.uri is required");
        assert_eq!(
            error.to_string(),
            "invalid configuration: mongo.uri: is required"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named() {
        assert_eq!(
            error_key(&[], &[("APP__SERVER__PORT", "eighty")]),
            "server.port"
        );
    }

    #[test]
    fn an_unknown_key_is_rejected() {
        assert_eq!(error_key(&[], &[("APP__S3__BUKET", "typo")]), "s3");
    }

    #[test]
    fn a_refresh_lead_shorter_than_presigned_urls_live_is_rejected() {
        assert_eq!(
            error_key(
                &[],
                &[
                    ("APP__AWS__REFRESH_LEAD_SECS", "60"),
                    ("APP__S3__PRESIGN_TTL_SECS", "120")
                ]
            ),
            "aws.refresh_lead_secs"
        );
    }

    #[test]
    fn a_part_size_below_five_mebibytes_is_rejected() {
        assert_eq!(
            error_key(&[], &[("APP__S3__PART_SIZE_BYTES", "1048576")]),
            "s3.part_size_bytes"
        );
    }

    #[test]
    fn a_non_mongodb_uri_is_rejected() {
        assert_eq!(
            error_key(&[], &[("MONGODB_URI", "postgres://db")]),
            "mongo.uri"
        );
    }

    #[test]
    fn printed_configuration_redacts_secrets() {
        let settings = load_ok(
            &[],
            &[
                ("MONGODB_URI", "mongodb://app:hunter2@db:27017"),
                ("APP__AUTH__JWT_HS256_SECRET", "very-secret-value"),
            ],
        );
        let printed = settings.to_redacted_toml();
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("very-secret-value"));
        assert!(printed.contains("mongodb://app:***@db:27017"));
        assert!(printed.contains("jwt_hs256_secret = \"[redacted]\""));
    }
}
