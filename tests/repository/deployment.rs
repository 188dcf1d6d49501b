//! The deployment files agree with the code: variables the configuration understands, the
//! health check that exists, exactly the S3 permissions the storage uses, templates that
//! render into a configuration the service starts with, and an image build context that
//! holds the whole workspace.

use std::collections::{BTreeSet, HashMap};

use api::Settings;
use api::config::LEGACY_VARIABLES;
use serde_json::Value;
use test_support::repository_root;
use yaml_rust2::{Yaml, YamlLoader};

use crate::{read, setting_keys};

fn json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

fn compose() -> Yaml {
    let mut documents = YamlLoader::load_from_str(&read("docker-compose.yml"))
        .unwrap_or_else(|e| panic!("docker-compose.yml is not YAML: {e}"));
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

/// Whether the service (or the AWS SDK it uses) reads `name`.
fn understood(name: &str, keys: &BTreeSet<String>) -> bool {
    const SDK_AND_RUNTIME: &[&str] = &[
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "APP_ENV",
        "APP_CONFIG_DIR",
        "RUST_LOG",
    ];
    if SDK_AND_RUNTIME.contains(&name) || LEGACY_VARIABLES.iter().any(|(v, _)| *v == name) {
        return true;
    }
    name.strip_prefix("APP__")
        .and_then(|rest| rest.split_once("__"))
        .is_some_and(|(section, key)| {
            keys.contains(&format!(
                "{}.{}",
                section.to_lowercase(),
                key.to_lowercase()
            ))
        })
}

fn container() -> Value {
    json("deploy/ecs/task-definition.json")["containerDefinitions"][0].clone()
}

#[test]
fn every_json_file_under_deploy_parses() {
    for entry in ["task-definition.json", "bucket-lifecycle.json"]
        .iter()
        .map(|f| format!("deploy/ecs/{f}"))
        .chain(
            [
                "task-role-trust.json",
                "task-role-s3-policy.json",
                "task-role-assume-policy.json",
                "target-role-trust.json",
                "execution-role-secrets-policy.json",
            ]
            .iter()
            .map(|f| format!("deploy/ecs/iam/{f}")),
        )
    {
        json(&entry);
    }
}

#[test]
fn the_task_definition_sets_only_variables_the_service_understands() {
    let keys = setting_keys();
    let container = container();
    let names = container["environment"]
        .as_array()
        .into_iter()
        .chain(container["secrets"].as_array())
        .flatten()
        .filter_map(|variable| variable["name"].as_str());
    for name in names {
        assert!(
            understood(name, &keys),
            "task definition sets unknown {name}"
        );
    }
}

#[test]
fn the_compose_environment_sets_only_variables_the_service_understands() {
    let keys = setting_keys();
    let compose = compose();
    let environment = compose["services"]["api"]["environment"]
        .as_hash()
        .expect("the api service has an environment map");
    let names: Vec<&str> = environment.keys().filter_map(Yaml::as_str).collect();
    assert!(names.contains(&"MONGODB_URI"));
    for name in names {
        assert!(
            understood(name, &keys),
            "docker-compose.yml sets unknown {name}"
        );
    }
}

#[test]
fn every_variable_of_env_example_overrides_something_compose_reads() {
    let compose_text = read("docker-compose.yml");
    for line in read(".env.example").lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, _) = line.split_once('=').expect("NAME=value");
        assert!(
            compose_text.contains(&format!("${{{name}:-")),
            ".env.example sets {name}, which docker-compose.yml never reads"
        );
    }
}

#[test]
fn compose_publishes_the_api_on_loopback_only_and_restarts_it_on_failure() {
    let compose = compose();
    let api = &compose["services"]["api"];
    let ports: Vec<&str> = api["ports"]
        .as_vec()
        .expect("api ports")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        ports,
        ["${API_BIND_ADDRESS:-127.0.0.1}:${API_PORT:-8080}:8080"]
    );
    assert_eq!(api["restart"].as_str(), Some("on-failure"));
    for service in ["mongo", "moto", "moto-init"] {
        assert!(
            compose["services"][service]["ports"].is_badvalue(),
            "{service} is published; only the API is"
        );
    }
}

#[test]
fn every_health_check_runs_the_healthcheck_command() {
    let expected = ["CMD", "posts-api", "healthcheck"];
    let container = container();
    let task: Vec<&str> = container["healthCheck"]["command"]
        .as_array()
        .expect("task health check")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(task, expected);
    let compose = compose();
    let compose_test: Vec<&str> = compose["services"]["api"]["healthcheck"]["test"]
        .as_vec()
        .expect("compose health check")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(compose_test, expected);
    assert!(read("Dockerfile").contains(r#"CMD ["posts-api", "healthcheck"]"#));

    assert!(
        api::cli::has_command("healthcheck"),
        "`posts-api healthcheck` exists"
    );
}

#[test]
fn the_health_check_probes_a_route_the_service_serves() {
    let source = read("crates/api/src/cli/healthcheck.rs");
    assert!(source.contains("GET /healthz "));
    let document =
        serde_json::to_value(<api::routes::openapi::ApiDoc as utoipa::OpenApi>::openapi())
            .expect("JSON");
    assert!(document["paths"]["/healthz"]["get"].is_object());
}

#[test]
fn the_s3_policy_grants_exactly_the_actions_the_storage_uses() {
    let policy = json("deploy/ecs/iam/task-role-s3-policy.json");
    let granted: BTreeSet<String> = policy["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .flat_map(|statement| match &statement["Action"] {
            Value::String(action) => vec![action.clone()],
            Value::Array(actions) => actions
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let used: BTreeSet<String> = storage::IAM_ACTIONS
        .iter()
        .map(|(action, _)| (*action).to_owned())
        .collect();
    assert_eq!(granted, used);
    for statement in policy["Statement"].as_array().expect("statements") {
        let resource = statement["Resource"].as_str().expect("one resource");
        assert!(resource.starts_with("arn:aws:s3:::${BUCKET}"), "{resource}");
        assert_ne!(resource, "*");
    }
}

#[test]
fn the_task_stops_no_sooner_than_the_shutdown_grace() {
    let keys = setting_keys();
    assert!(keys.contains("server.shutdown_grace_secs"));
    let container = container();
    let grace: u64 = container["environment"]
        .as_array()
        .expect("environment")
        .iter()
        .find(|v| v["name"] == "APP__SERVER__SHUTDOWN_GRACE_SECS")
        .and_then(|v| v["value"].as_str())
        .and_then(|v| v.parse().ok())
        .expect("the grace is set explicitly");
    let stop_timeout = container["stopTimeout"].as_u64().expect("stopTimeout");
    assert!(
        stop_timeout >= grace,
        "stopTimeout {stop_timeout} < grace {grace}"
    );
}

#[test]
fn the_container_port_is_the_default_listen_port() {
    let port = container()["portMappings"][0]["containerPort"].as_u64();
    assert_eq!(port, Some(8080));
    assert!(read("Dockerfile").contains("EXPOSE 8080"));
}

#[test]
fn incomplete_multipart_uploads_expire_after_a_day() {
    let rule = &json("deploy/ecs/bucket-lifecycle.json")["Rules"][0];
    assert_eq!(
        rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"],
        1
    );
    assert_eq!(rule["Status"], "Enabled");
}

#[test]
fn staged_direct_uploads_expire_after_a_day() {
    let rules = json("deploy/ecs/bucket-lifecycle.json")["Rules"].clone();
    let staging = rules
        .as_array()
        .expect("rules")
        .iter()
        .find(|rule| rule["Filter"]["Prefix"] == "${PREFIX}/staging/")
        .expect("a rule for the staging prefix");
    assert_eq!(staging["Expiration"]["Days"], 1);
    assert_eq!(staging["Status"], "Enabled");
}

#[test]
fn the_task_trust_policy_names_ecs_tasks_with_source_conditions() {
    let statement = &json("deploy/ecs/iam/task-role-trust.json")["Statement"][0];
    assert_eq!(statement["Principal"]["Service"], "ecs-tasks.amazonaws.com");
    assert!(statement["Condition"]["StringEquals"]["aws:SourceAccount"].is_string());
    assert!(statement["Condition"]["ArnLike"]["aws:SourceArn"].is_string());
}

/// The values docs/deploy.md has a user export before rendering the templates.
const EXAMPLE: &[(&str, &str)] = &[
    ("ACCOUNT_ID", "123456789012"),
    ("REGION", "eu-west-1"),
    ("BUCKET", "example-attachments"),
    ("PREFIX", "posts"),
    ("IMAGE_TAG", "1.0.0"),
    ("ASSUME_ROLE_ARN", ""),
    (
        "JWKS_URL",
        "https://example.eu.auth0.com/.well-known/jwks.json",
    ),
    ("ISSUER", "https://example.eu.auth0.com/"),
    ("AUDIENCE", "https://posts.example.com"),
];

/// `deploy/render TEMPLATE` with `variables` as its whole environment.
fn render(template: &str, variables: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new("bash")
        .arg("deploy/render")
        .arg(template)
        .current_dir(repository_root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(variables.iter().copied())
        .output()
        .expect("bash runs deploy/render")
}

fn placeholders(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}

#[test]
fn the_rendered_task_definition_loads_as_a_production_configuration() {
    let output = render("deploy/ecs/task-definition.json", EXAMPLE);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let task: Value = serde_json::from_slice(&output.stdout).expect("rendered JSON");
    let container = &task["containerDefinitions"][0];
    let mut env: HashMap<String, String> = container["environment"]
        .as_array()
        .expect("environment")
        .iter()
        .map(|variable| {
            (
                variable["name"].as_str().expect("name").to_owned(),
                variable["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    // Secrets Manager supplies these at start.
    for secret in container["secrets"].as_array().expect("secrets") {
        let name = secret["name"].as_str().expect("secret name");
        assert_eq!(name, "MONGODB_URI", "a secret the test does not know");
        env.insert(
            name.into(),
            "mongodb+srv://user:pass@cluster.example.net/".into(),
        );
    }

    let settings = Settings::load_from(&repository_root().join("config"), &env)
        .unwrap_or_else(|error| panic!("the task would exit at start-up: {error}"));

    assert!(settings.is_production());
    assert!(!settings.auth.disabled);
    assert_eq!(
        settings.auth.jwks_url(),
        Some("https://example.eu.auth0.com/.well-known/jwks.json")
    );
    assert_eq!(settings.s3.bucket, "example-attachments");
    assert_eq!(settings.aws.role_arn(), None);
    assert!(placeholders(&String::from_utf8_lossy(&output.stdout)).is_empty());
}

#[test]
fn rendering_refuses_a_placeholder_whose_variable_is_unset() {
    let without_bucket: Vec<(&str, &str)> = EXAMPLE
        .iter()
        .copied()
        .filter(|(name, _)| *name != "BUCKET")
        .collect();

    let output = render("deploy/ecs/task-definition.json", &without_bucket);

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("BUCKET"));
}

#[test]
fn every_placeholder_of_the_templates_is_a_variable_the_guide_exports() {
    let guide = read("docs/deploy.md");
    let templates = [
        "deploy/ecs/task-definition.json",
        "deploy/ecs/bucket-lifecycle.json",
        "deploy/ecs/iam/task-role-trust.json",
        "deploy/ecs/iam/task-role-s3-policy.json",
        "deploy/ecs/iam/task-role-assume-policy.json",
        "deploy/ecs/iam/target-role-trust.json",
        "deploy/ecs/iam/execution-role-secrets-policy.json",
    ];
    for template in templates {
        for name in placeholders(&read(template)) {
            assert!(
                guide.contains(&format!("{name}=")),
                "{template} uses ${{{name}}}, which docs/deploy.md never sets"
            );
            assert!(
                EXAMPLE.iter().any(|(example, _)| *example == name),
                "{template} uses ${{{name}}}, which this test does not render"
            );
        }
    }
}

/// Whether `.dockerignore` leaves `path` out of the build context, by Docker's rules: the
/// last matching pattern wins, `!` re-includes, `*` and `?` stay within a directory, `**`
/// spans any number of them, and excluding a directory excludes what it holds.
fn docker_ignores(patterns: &[String], path: &str) -> bool {
    let path: Vec<&str> = path.split('/').collect();
    let matches = |pattern: &str| {
        let pattern: Vec<&str> = pattern.trim_end_matches('/').split('/').collect();
        (1..=path.len()).any(|depth| segments_match(&pattern, &path[..depth]))
    };
    let mut ignored = false;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(included) if matches(included) => ignored = false,
            None if matches(pattern) => ignored = true,
            _ => {}
        }
    }
    ignored
}

fn segments_match(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.split_first(), path.split_first()) {
        (None, None) => true,
        (Some((&"**", rest)), _) => {
            segments_match(rest, path) || (!path.is_empty() && segments_match(pattern, &path[1..]))
        }
        (Some((glob, pattern_rest)), Some((name, path_rest))) => {
            glob_matches(glob.as_bytes(), name.as_bytes())
                && segments_match(pattern_rest, path_rest)
        }
        _ => false,
    }
}

/// `*` and `?` within one path segment.
fn glob_matches(glob: &[u8], name: &[u8]) -> bool {
    match glob.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| glob_matches(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && glob_matches(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob_matches(rest, &name[1..]),
    }
}

fn dockerignore() -> Vec<String> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_dockerignore_rules_are_read_as_docker_reads_them() {
    let patterns: Vec<String> = ["target/", "**/.cache/", "*.md", "!crates/**/*.md"]
        .map(String::from)
        .into();
    assert!(docker_ignores(&patterns, "target/release/posts-api"));
    assert!(docker_ignores(&patterns, "crates/api/.cache/x"));
    assert!(docker_ignores(&patterns, "README.md"));
    assert!(!docker_ignores(&patterns, "crates/api/README.md"));
    assert!(!docker_ignores(&patterns, "crates/api/src/lib.rs"));
}

#[test]
fn the_image_builds_from_every_workspace_member_whatever_they_are() {
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("cargo chef prepare") && dockerfile.contains("COPY . ."),
        "the dependency layer must come from the whole workspace (cargo chef prepare), not a list"
    );
    assert!(
        !dockerfile
            .lines()
            .any(|line| line.trim_start().starts_with("COPY crates/")),
        "the Dockerfile names workspace members by hand"
    );
    let patterns = dockerignore();
    let manifest: toml::Table = read("Cargo.toml").parse().expect("Cargo.toml");
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    let mut needed = vec![
        "Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
        "config/default.toml".to_owned(),
        "config/production.toml".to_owned(),
    ];
    for member in members.iter().filter_map(toml::Value::as_str) {
        let directories: Vec<String> = match member.strip_suffix("/*") {
            Some(parent) => std::fs::read_dir(repository_root().join(parent))
                .expect("member directory")
                .flatten()
                .filter(|entry| entry.path().join("Cargo.toml").is_file())
                .map(|entry| format!("{parent}/{}", entry.file_name().to_string_lossy()))
                .collect(),
            None => vec![member.to_owned()],
        };
        for directory in directories {
            needed.push(format!("{directory}/Cargo.toml"));
            needed.push(format!("{directory}/src/lib.rs"));
        }
    }
    for entry in std::fs::read_dir(repository_root().join("migrations")).expect("migrations/") {
        let name = entry.expect("entry").file_name();
        needed.push(format!("migrations/{}", name.to_string_lossy()));
    }
    for path in needed {
        assert!(
            !docker_ignores(&patterns, &path),
            ".dockerignore leaves {path} out of the image build"
        );
    }
}

#[test]
fn the_image_leaves_out_the_development_token_secret() {
    let dockerfile = read("Dockerfile");
    let copies: Vec<&str> = dockerfile
        .lines()
        .filter(|line| line.trim_start().starts_with("COPY") && line.contains("config"))
        .collect();
    assert_eq!(
        copies,
        ["COPY config/default.toml config/production.toml config/"],
        "config/local.toml holds the development secret"
    );
}
