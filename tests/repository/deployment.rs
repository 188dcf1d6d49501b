//! The deployment files agree with the code: variables the configuration understands, the
//! health check that exists, exactly the S3 permissions the storage uses.

use std::collections::BTreeSet;

use api::config::LEGACY_VARIABLES;
use serde_json::Value;
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
    let env_file = compose["services"]["api"]["env_file"][0]
        .as_str()
        .expect("the api service reads an env file");
    let text = read(env_file);
    let names: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    assert!(names.contains(&"MONGODB_URI"));
    for name in names {
        assert!(understood(name, &keys), "{env_file} sets unknown {name}");
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
        assert!(resource.starts_with("arn:aws:s3:::BUCKET"), "{resource}");
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
fn the_task_trust_policy_names_ecs_tasks_with_source_conditions() {
    let statement = &json("deploy/ecs/iam/task-role-trust.json")["Statement"][0];
    assert_eq!(statement["Principal"]["Service"], "ecs-tasks.amazonaws.com");
    assert!(statement["Condition"]["StringEquals"]["aws:SourceAccount"].is_string());
    assert!(statement["Condition"]["ArnLike"]["aws:SourceArn"].is_string());
}
