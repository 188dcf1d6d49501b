//! The deployment files agree with the code: variables the configuration understands, the
//! health check that exists, exactly the S3 permissions the storage uses, and an image
//! build context that holds the whole workspace. tests/stack deploys the ECS stack itself
//! and checks what AWS would hold.

use std::collections::BTreeSet;

use api::config::LEGACY_VARIABLES;
use test_support::repository_root;
use yaml_rust2::{Yaml, YamlLoader};

use crate::{read, setting_keys};

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

/// `deploy/ecs/stack.yaml`. Its short forms read as plain values: `!Ref Name` as `"Name"`,
/// `!FindInMap [Map, Key, Field]` as the list.
fn stack() -> Yaml {
    let mut documents = YamlLoader::load_from_str(&read("deploy/ecs/stack.yaml"))
        .unwrap_or_else(|e| panic!("deploy/ecs/stack.yaml is not YAML: {e}"));
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

fn properties(resource: &str) -> Yaml {
    stack()["Resources"][resource]["Properties"].clone()
}

fn container() -> Yaml {
    properties("TaskDefinition")["ContainerDefinitions"][0].clone()
}

/// A string or a list of strings, as IAM policies write actions.
fn strings(node: &Yaml) -> Vec<String> {
    match node {
        Yaml::String(one) => vec![one.clone()],
        Yaml::Array(many) => many
            .iter()
            .filter_map(Yaml::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn the_task_definition_sets_only_variables_the_service_understands() {
    let keys = setting_keys();
    let container = container();
    let names: Vec<&str> = container["Environment"]
        .as_vec()
        .expect("environment")
        .iter()
        .chain(container["Secrets"].as_vec().expect("secrets"))
        .filter_map(|variable| variable["Name"].as_str())
        .collect();
    assert!(names.contains(&"MONGODB_URI") && names.contains(&"APP_ENV"));
    for name in names {
        assert!(
            understood(name, &keys),
            "the stack's task definition sets unknown {name}"
        );
    }
}

/// `NAME` of every `NAME=value` line of an env file; with `commented`, of `# NAME=value`
/// lines too (the examples of `.env.example`).
fn env_file_names(path: &str, commented: bool) -> Vec<String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter_map(|line| match line.strip_prefix('#') {
            Some(example) if commented => Some(example.trim()),
            Some(_) => None,
            None => Some(line),
        })
        .filter_map(|line| line.split_once('='))
        .map(|(name, _)| name.to_owned())
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect()
}

#[test]
fn compose_gives_the_api_only_variables_the_service_understands() {
    let keys = setting_keys();
    let compose = compose();
    let api = &compose["services"]["api"];
    let files: Vec<&str> = api["env_file"]
        .as_vec()
        .expect("the api reads env files")
        .iter()
        .filter_map(|file| file.as_str().or_else(|| file["path"].as_str()))
        .collect();
    assert_eq!(
        files,
        ["compose.env", ".env"],
        "compose.env first, .env over it"
    );
    let mut names = env_file_names("compose.env", false);
    names.extend(
        api["environment"]
            .as_hash()
            .expect("the api's environment")
            .keys()
            .filter_map(Yaml::as_str)
            .map(str::to_owned),
    );
    assert!(names.iter().any(|name| name == "MONGODB_URI"));
    for name in names {
        assert!(
            understood(&name, &keys),
            "compose gives the api unknown {name}"
        );
    }
}

#[test]
fn compose_takes_no_setting_from_the_invoking_shell() {
    let compose = compose();
    let environment = compose["services"]["api"]["environment"]
        .as_hash()
        .expect("the api's environment");
    for (name, value) in environment {
        let value = value.as_str().unwrap_or_default();
        let interpolated: Vec<&str> = value
            .split("${")
            .skip(1)
            .filter_map(|rest| rest.split([':', '}']).next())
            .collect();
        for variable in interpolated {
            assert!(
                ["S3_PUBLIC_URL", "S3_PORT"].contains(&variable),
                "{name:?} takes ${{{variable}}} from the shell: settings belong in compose.env"
            );
        }
    }
}

#[test]
fn every_variable_of_env_example_is_a_compose_variable_or_a_setting() {
    let keys = setting_keys();
    let compose_text = read("docker-compose.yml");
    for name in env_file_names(".env.example", true) {
        assert!(
            compose_text.contains(&format!("${{{name}:-")) || understood(&name, &keys),
            ".env.example sets {name}, which neither compose nor the service reads"
        );
    }
}

#[test]
fn compose_publishes_the_api_and_s3_on_loopback_only_and_restarts_the_api_on_failure() {
    let compose = compose();
    let published = |service: &str| -> Vec<String> {
        compose["services"][service]["ports"]
            .as_vec()
            .map(|ports| {
                ports
                    .iter()
                    .filter_map(Yaml::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        published("api"),
        ["${API_BIND_ADDRESS:-127.0.0.1}:${API_PORT:-8080}:8080"]
    );
    assert_eq!(
        published("moto"),
        ["${S3_BIND_ADDRESS:-127.0.0.1}:${S3_PORT:-5000}:5000"],
        "presigned URLs are links to it"
    );
    assert_eq!(
        compose["services"]["api"]["restart"].as_str(),
        Some("on-failure")
    );
    for service in ["mongo", "moto-init"] {
        assert!(published(service).is_empty(), "{service} is published");
    }
}

#[test]
fn every_health_check_runs_the_healthcheck_command() {
    let expected = ["CMD", "posts-api", "healthcheck"];
    assert_eq!(strings(&container()["HealthCheck"]["Command"]), expected);
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
    let policy = properties("S3AccessPolicy")["PolicyDocument"].clone();
    let granted: BTreeSet<String> = policy["Statement"]
        .as_vec()
        .expect("statements")
        .iter()
        .flat_map(|statement| strings(&statement["Action"]))
        .collect();
    let used: BTreeSet<String> = storage::IAM_ACTIONS
        .iter()
        .map(|(action, _)| (*action).to_owned())
        .collect();
    assert_eq!(granted, used);
}

#[test]
fn the_load_balancer_checks_the_route_the_container_health_check_probes() {
    let path = properties("TargetGroup")["HealthCheckPath"].clone();
    assert_eq!(path.as_str(), Some("/healthz"));
}

#[test]
fn the_image_exposes_the_port_the_task_maps() {
    let port = stack()["Mappings"]["Container"]["Ports"]["Http"].as_i64();
    assert_eq!(port, Some(8080));
    assert!(read("Dockerfile").contains("EXPOSE 8080"));
}

#[test]
fn the_task_role_trusts_ecs_tasks_of_this_account_only() {
    let trust = properties("TaskRole")["AssumeRolePolicyDocument"]["Statement"][0].clone();
    assert_eq!(
        trust["Principal"]["Service"].as_str(),
        Some("ecs-tasks.amazonaws.com")
    );
    assert!(!trust["Condition"]["StringEquals"]["aws:SourceAccount"].is_badvalue());
    assert!(!trust["Condition"]["ArnLike"]["aws:SourceArn"].is_badvalue());
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
