//! Start-up of the real binary: success, each failure named, concurrency, shutdown.

use std::time::{Duration, Instant};

use test_support::{ChaosProxy, socket_address_of, testbed};

use crate::helpers::ServiceCommand;

const EXIT_LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn starts_against_the_testbed_and_stops_cleanly_on_sigterm() {
    let mut service = ServiceCommand::new().spawn();
    service
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;

    service.terminate();

    let status = service.exit_within(EXIT_LIMIT).await;
    assert!(
        status.success(),
        "exit {status}; output:\n{}",
        service.output()
    );
    assert!(service.output().contains("stopped"));
}

#[tokio::test]
async fn unreachable_mongodb_fails_start_up_naming_mongodb() {
    let mut service = ServiceCommand::new()
        .env(
            "MONGODB_URI",
            "mongodb://127.0.0.1:1/?directConnection=true",
        )
        .env("APP__MONGO__SERVER_SELECTION_TIMEOUT_MS", "1000")
        .spawn();

    let status = service.exit_within(EXIT_LIMIT).await;

    assert!(!status.success());
    let output = service.output();
    assert!(output.contains("start-up failed: MongoDB"), "{output}");
    assert!(output.contains("127.0.0.1:1"), "{output}");
}

/// The service as the seeded IAM user of the strict (IAM-auth) moto.
fn strict_moto() -> ServiceCommand {
    ServiceCommand::new()
        .env("AWS_ENDPOINT_URL", testbed("TESTBED_STRICT_ENDPOINT_URL"))
        .env("AWS_ACCESS_KEY_ID", testbed("TESTBED_STRICT_ACCESS_KEY_ID"))
        .env(
            "AWS_SECRET_ACCESS_KEY",
            testbed("TESTBED_STRICT_SECRET_ACCESS_KEY"),
        )
}

#[tokio::test]
async fn assuming_the_role_on_strict_sts_succeeds() {
    let mut service = strict_moto().spawn();

    service
        .ready_within(Instant::now(), Duration::from_secs(30))
        .await;
}

#[tokio::test]
async fn untrusted_role_fails_start_up_with_both_fixes() {
    let role = testbed("TESTBED_UNTRUSTED_ROLE_ARN");
    let mut service = strict_moto().env("AWS_IAM_ROLE_ARN", &role).spawn();

    let status = service.exit_within(EXIT_LIMIT).await;

    assert!(!status.success());
    let output = service.output();
    assert!(
        output.contains("start-up failed: AWS credentials"),
        "{output}"
    );
    assert!(
        output.contains(&format!("AssumeRole of {role} was denied")),
        "{output}"
    );
    assert!(
        output.contains("user/posts-api-dev"),
        "the caller is named: {output}"
    );
    assert!(output.contains("allow `sts:AssumeRole`"), "{output}");
    assert!(output.contains("trust policy"), "{output}");
}

#[tokio::test]
async fn a_wrong_secret_fails_start_up_as_invalid_base_credentials() {
    let mut service = strict_moto()
        .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        .spawn();

    let status = service.exit_within(EXIT_LIMIT).await;

    assert!(!status.success());
    let output = service.output();
    assert!(
        output.contains("base AWS credentials were rejected"),
        "{output}"
    );
    assert!(
        !output.contains("not-the-secret"),
        "the secret is never printed"
    );
}

#[tokio::test]
async fn missing_bucket_fails_start_up_naming_the_bucket() {
    let mut service = ServiceCommand::new()
        .env("AWS_S3_BUCKET_NAME", "no-such-bucket-here")
        .spawn();

    let status = service.exit_within(EXIT_LIMIT).await;

    assert!(!status.success());
    let output = service.output();
    assert!(output.contains("start-up failed: S3"), "{output}");
    assert!(
        output.contains("`no-such-bucket-here` does not exist"),
        "{output}"
    );
}

#[tokio::test]
async fn missing_region_exits_2_naming_the_key() {
    let mut service = ServiceCommand::new()
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("APP__AWS__REGION")
        .spawn();

    let status = service.exit_within(EXIT_LIMIT).await;

    assert_eq!(status.code(), Some(2));
    let output = service.output();
    assert_eq!(
        output.trim(),
        "posts-api: invalid configuration: aws.region: is required"
    );
}

/// Time from spawn to a listening service, with optional latency in front of MongoDB and
/// of STS.
async fn time_to_ready(mongo_delay: Option<Duration>, sts_delay: Option<Duration>) -> Duration {
    let mut command = ServiceCommand::new();
    if let Some(delay) = mongo_delay {
        let proxy =
            ChaosProxy::with_connect_delay(socket_address_of(&testbed("MONGODB_URI")), delay)
                .await
                .address;
        command = command.env(
            "MONGODB_URI",
            format!("mongodb://{proxy}/?directConnection=true"),
        );
    }
    if let Some(delay) = sts_delay {
        let proxy =
            ChaosProxy::with_connect_delay(socket_address_of(&testbed("AWS_ENDPOINT_URL")), delay)
                .await
                .address;
        command = command.env("AWS_ENDPOINT_URL_STS", format!("http://{proxy}"));
    }
    let started = Instant::now();
    let mut service = command.spawn();
    service.ready_within(started, Duration::from_secs(60)).await
}

#[tokio::test]
async fn mongodb_and_sts_are_reached_concurrently_at_start_up() {
    let delay = Duration::from_millis(1500);
    let baseline = time_to_ready(None, None).await;
    let mongo_only = time_to_ready(Some(delay), None).await - baseline;
    let sts_only = time_to_ready(None, Some(delay)).await - baseline;
    let both = time_to_ready(Some(delay), Some(delay)).await - baseline;

    let slower = mongo_only.max(sts_only);
    let sum = mongo_only + sts_only;
    assert!(
        sts_only >= delay.mul_f64(0.8) && mongo_only >= delay.mul_f64(0.8),
        "latency was injected: mongo {mongo_only:?}, sts {sts_only:?}"
    );
    assert!(
        both < slower + delay / 2,
        "both delayed took {both:?}: about the slower ({slower:?}), not the sum ({sum:?})"
    );
}
