//! The configuration's loading, layering and validation rules, one behaviour each.

use super::*;

/// A config directory of the test's own with the given files.
struct ConfigDir(PathBuf);

impl ConfigDir {
    fn with(files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("posts-api-config-{}", uuid::Uuid::new_v4()));
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
    // Authentication has tests of its own below; elsewhere it is off.
    let required = [
        ("MONGODB_URI", "mongodb://127.0.0.1:27017"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_S3_BUCKET_NAME", "attachments"),
        ("APP__AUTH__DISABLED", "true"),
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
    assert_eq!(settings.uploads.max_files_per_request.get(), 10);
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
    let settings = Settings::load_from(&dir, &env(&with(&JWKS, &[("APP_ENV", "production")])))
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
fn a_zero_where_at_least_one_is_needed_is_named() {
    for (variable, key) in [
        ("APP__S3__MAX_PARTS_IN_FLIGHT", "s3.max_parts_in_flight"),
        ("APP__S3__PRESIGN_TTL_SECS", "s3.presign_ttl_secs"),
        ("APP__UPLOADS__MAX_FILE_BYTES", "uploads.max_file_bytes"),
        (
            "APP__UPLOADS__MAX_FILES_PER_REQUEST",
            "uploads.max_files_per_request",
        ),
        (
            "APP__UPLOADS__REAPER_INTERVAL_SECS",
            "uploads.reaper_interval_secs",
        ),
        (
            "APP__SERVER__REQUEST_BODY_TIMEOUT_SECS",
            "server.request_body_timeout_secs",
        ),
        (
            "APP__SERVER__RESPONSE_BODY_TIMEOUT_SECS",
            "server.response_body_timeout_secs",
        ),
    ] {
        assert_eq!(error_key(&[], &[(variable, "0")]), key);
    }
}

#[test]
fn app_env_names_the_environment() {
    assert_eq!(load_ok(&[], &[]).environment, Environment::Local);
    let production = load_ok(&[], &[("APP_ENV", "production")]);
    assert!(production.is_production());
    assert_eq!(
        load_ok(&[], &[("APP_ENV", "staging")]).environment,
        Environment::Named("staging".into())
    );
}

const JWKS: [(&str, &str); 4] = [
    ("APP__AUTH__DISABLED", "false"),
    (
        "APP__AUTH__JWKS_URL",
        "https://idp.example.com/.well-known/jwks.json",
    ),
    ("APP__AUTH__ISSUER", "https://idp.example.com/"),
    ("APP__AUTH__AUDIENCE", "posts-api"),
];

fn with(
    base: &[(&'static str, &'static str)],
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    base.iter().chain(extra).copied().collect()
}

#[test]
fn without_a_way_to_verify_tokens_the_configuration_is_refused() {
    assert_eq!(error_key(&[], &[("APP__AUTH__DISABLED", "false")]), "auth");
}

#[test]
fn authentication_is_off_only_when_disabled_explicitly() {
    let settings = load_ok(&[], &[("APP_ENV", "production")]);
    assert!(settings.auth.disabled);
}

#[test]
fn hs256_is_refused_in_production() {
    let secret = (
        "APP__AUTH__JWT_HS256_SECRET",
        "a-secret-long-enough-for-hs256-but-shared",
    );
    assert_eq!(
        error_key(&[], &with(&JWKS, &[("APP_ENV", "production"), secret])),
        "auth.jwt_hs256_secret"
    );
}

#[test]
fn an_hs256_secret_under_256_bits_is_refused() {
    let short = [
        ("APP__AUTH__DISABLED", "false"),
        ("APP__AUTH__JWT_HS256_SECRET", "too-short"),
    ];
    assert_eq!(error_key(&[], &short), "auth.jwt_hs256_secret");
}

#[test]
fn jwks_in_production_needs_an_issuer_and_an_audience() {
    let without_issuer = [JWKS[0], JWKS[1], JWKS[3], ("APP_ENV", "production")];
    let without_audience = [JWKS[0], JWKS[1], JWKS[2], ("APP_ENV", "production")];
    assert_eq!(error_key(&[], &without_issuer), "auth.issuer");
    assert_eq!(error_key(&[], &without_audience), "auth.audience");
    assert!(load(&[], &with(&JWKS, &[("APP_ENV", "production")])).is_ok());
}

#[test]
fn a_jwks_url_over_plain_http_is_refused_outside_local_development() {
    let http = [
        JWKS[0],
        ("APP__AUTH__JWKS_URL", "http://idp.example.com/jwks.json"),
        JWKS[2],
        JWKS[3],
    ];
    assert_eq!(
        error_key(&[], &with(&http, &[("APP_ENV", "staging")])),
        "auth.jwks_url"
    );
    assert!(load(&[], &http).is_ok(), "local development may use http");
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
fn pending_uploads_reaped_before_their_presigned_url_expires_are_rejected() {
    assert_eq!(
        error_key(
            &[],
            &[
                ("APP__UPLOADS__PENDING_TTL_SECS", "60"),
                ("APP__S3__PRESIGN_TTL_SECS", "120")
            ]
        ),
        "uploads.pending_ttl_secs"
    );
}

#[test]
fn a_file_limit_that_would_take_more_than_ten_thousand_parts_is_rejected() {
    assert_eq!(
        error_key(
            &[],
            &[
                ("APP__UPLOADS__MAX_FILE_BYTES", "100000000000"),
                ("APP__S3__PART_SIZE_BYTES", "8388608")
            ]
        ),
        "s3.part_size_bytes"
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

#[test]
fn cors_origins_are_a_comma_separated_variable() {
    let settings = load_ok(
        &[],
        &[(
            "APP__SERVER__CORS_ALLOWED_ORIGINS",
            "https://app.example.com,http://127.0.0.1:5173",
        )],
    );
    assert_eq!(
        settings.server.cors_allowed_origins,
        ["https://app.example.com", "http://127.0.0.1:5173"]
    );
}

#[test]
fn no_cors_origins_by_default() {
    assert!(load_ok(&[], &[]).server.cors_allowed_origins.is_empty());
}

#[test]
fn a_cors_origin_with_a_path_or_a_wildcard_is_named() {
    for origin in ["https://app.example.com/", "*"] {
        assert_eq!(
            error_key(&[], &[("APP__SERVER__CORS_ALLOWED_ORIGINS", origin)]),
            "server.cors_allowed_origins",
            "{origin}"
        );
    }
}

#[test]
fn an_empty_cors_variable_lists_no_origin() {
    let settings = load_ok(&[], &[("APP__SERVER__CORS_ALLOWED_ORIGINS", "")]);
    assert!(settings.server.cors_allowed_origins.is_empty());
}

#[test]
fn a_presign_endpoint_that_is_not_a_url_is_named() {
    assert_eq!(
        error_key(&[], &[("APP__S3__PRESIGN_ENDPOINT", "127.0.0.1:5000")]),
        "s3.presign_endpoint"
    );
}

#[test]
fn a_clamd_address_that_is_not_host_and_port_is_refused() {
    assert_eq!(
        error_key(&[], &[("APP__SCAN__CLAMD_ADDRESS", "clamd")]),
        "scan.clamd_address"
    );
}

#[test]
fn a_quarantine_inside_the_key_prefix_is_refused() {
    assert_eq!(
        error_key(
            &[],
            &[
                ("APP__S3__KEY_PREFIX", "posts"),
                ("APP__SCAN__QUARANTINE_PREFIX", "posts/quarantine")
            ]
        ),
        "scan.quarantine_prefix"
    );
}

#[test]
fn a_variant_that_covers_a_box_without_a_height_is_refused() {
    assert_eq!(
        error_key(
            &[],
            &[
                ("APP__MEDIA__VARIANTS__WIDE__WIDTH", "640"),
                ("APP__MEDIA__VARIANTS__WIDE__FIT", "cover"),
                ("APP__MEDIA__VARIANTS__WIDE__FORMAT", "jpeg")
            ]
        ),
        "media.variants"
    );
}
