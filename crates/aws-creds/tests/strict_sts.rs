//! The credentials cache against the testbed's strict (IAM-auth) moto: real STS calls,
//! real signature and permission checks. Run through `scripts/test`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_creds::{AwsSettings, CredentialsError, TemporaryCredentials};
use aws_sdk_s3::config::IdentityCache;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use test_support::testbed;

/// The SDK configuration of the seeded IAM user on the strict moto.
async fn strict_user(secret: Option<&str>) -> SdkConfig {
    let secret = secret.map_or_else(
        || testbed("TESTBED_STRICT_SECRET_ACCESS_KEY"),
        str::to_owned,
    );
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(testbed("TESTBED_STRICT_ENDPOINT_URL"))
        .credentials_provider(Credentials::new(
            testbed("TESTBED_STRICT_ACCESS_KEY_ID"),
            secret,
            None,
            None,
            "testbed-user",
        ))
        .load()
        .await
}

fn settings(role_arn: String, duration_secs: u64, lead_secs: u64) -> AwsSettings {
    AwsSettings {
        region: "us-east-1".into(),
        role_arn,
        session_name_prefix: "posts-api-test".into(),
        session_duration_secs: duration_secs,
        refresh_lead_secs: lead_secs,
        external_id: String::new(),
        operation_timeout_secs: std::num::NonZeroU64::new(30).expect("non-zero"),
        attempt_timeout_secs: std::num::NonZeroU64::new(10).expect("non-zero"),
    }
}

async fn assume(role_arn: String, secret: Option<&str>) -> (TemporaryCredentials, SdkConfig) {
    let sdk_config = strict_user(secret).await;
    let credentials =
        TemporaryCredentials::from_settings(&settings(role_arn, 3600, 300), &sdk_config)
            .expect("credentials build");
    (credentials, sdk_config)
}

/// An S3 client that signs with the shared credentials, as the service builds it.
fn s3(sdk_config: &SdkConfig, credentials: &TemporaryCredentials) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk_config)
        .credentials_provider(credentials.shared_provider())
        .identity_cache(IdentityCache::no_cache())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

fn status_of<E>(error: &SdkError<E, HttpResponse>) -> Option<u16> {
    error
        .raw_response()
        .map(|response| response.status().as_u16())
}

#[tokio::test]
async fn assume_role_with_the_seeded_user_returns_session_credentials() {
    let (credentials, _) = assume(testbed("AWS_IAM_ROLE_ARN"), None).await;

    let issued = credentials
        .credentials()
        .await
        .expect("AssumeRole succeeds");

    assert!(issued.session_token().is_some());
    let expiry = issued.expiry().expect("temporary credentials expire");
    let lifetime = expiry
        .duration_since(SystemTime::now())
        .expect("expiry is ahead");
    assert!(lifetime > Duration::from_secs(3500) && lifetime <= Duration::from_secs(3600));
    assert_eq!(credentials.status().refresh_count, 1);
}

#[tokio::test]
async fn an_untrusted_role_is_access_denied_naming_the_caller_and_both_fixes() {
    let role = testbed("TESTBED_UNTRUSTED_ROLE_ARN");
    let (credentials, _) = assume(role.clone(), None).await;

    let error = credentials
        .credentials()
        .await
        .expect_err("AssumeRole is denied");

    match &error {
        CredentialsError::AccessDenied {
            role_arn, caller, ..
        } => {
            assert_eq!(role_arn, &role);
            assert!(caller.ends_with(":user/posts-api-dev"), "{caller}");
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("allow `sts:AssumeRole`"), "{message}");
    assert!(message.contains("trust policy"), "{message}");
    assert!(message.contains("taskRoleArn"), "{message}");
}

#[tokio::test]
async fn a_wrong_secret_is_reported_as_invalid_base_credentials() {
    let (credentials, _) = assume(testbed("AWS_IAM_ROLE_ARN"), Some("wrong-secret")).await;

    let error = credentials
        .credentials()
        .await
        .expect_err("signature is rejected");

    assert!(
        matches!(error, CredentialsError::InvalidBaseCredentials { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("wrong-secret"));
}

#[tokio::test]
async fn the_readonly_role_may_get_objects_but_not_put_them() {
    let bucket = testbed("AWS_S3_BUCKET_NAME");
    let key = format!("tests/readonly/{}", uuid_like());
    let (writer, writer_config) = assume(testbed("AWS_IAM_ROLE_ARN"), None).await;
    s3(&writer_config, &writer)
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .body(ByteStream::from_static(b"hello"))
        .send()
        .await
        .expect("the full role may put");
    let (reader, reader_config) = assume(testbed("TESTBED_READONLY_ROLE_ARN"), None).await;
    let readonly = s3(&reader_config, &reader);

    let put = readonly
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .body(ByteStream::from_static(b"overwrite"))
        .send()
        .await;
    let get = readonly.get_object().bucket(&bucket).key(&key).send().await;

    let denied = put.expect_err("the readonly role may not put");
    assert_eq!(status_of(&denied), Some(403), "{denied:?}");
    let body = get
        .expect("the readonly role may get")
        .body
        .collect()
        .await
        .expect("body");
    assert_eq!(body.into_bytes().as_ref(), b"hello");
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    )
}

/// The defect of the original service: a client built once must keep working across
/// credential refreshes. Sessions of 900 s refreshed 885 s early renew every ~15 s.
#[tokio::test]
async fn one_long_lived_s3_client_keeps_working_across_refreshes() {
    let bucket = testbed("AWS_S3_BUCKET_NAME");
    let sdk_config = strict_user(None).await;
    let credentials = TemporaryCredentials::from_settings(
        &settings(testbed("AWS_IAM_ROLE_ARN"), 900, 885),
        &sdk_config,
    )
    .expect("credentials build");
    let client = s3(&sdk_config, &credentials);
    let key = format!("tests/long-lived/{}", uuid_like());

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut key_ids = BTreeSet::new();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(60) {
        let put = client
            .put_object()
            .bucket(&bucket)
            .key(&key)
            .body(ByteStream::from_static(b"still here"))
            .send()
            .await;
        if let Err(error) = put {
            failures.push(format!("{:?}: {error:?}", started.elapsed()));
        }
        if let Ok(current) = credentials.credentials().await {
            key_ids.insert(current.access_key_id().to_owned());
        }
        calls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {failures:?}",
        failures.len()
    );
    let status = credentials.status();
    assert!(
        (4..=6).contains(&status.refresh_count),
        "STS calls: {}",
        status.refresh_count
    );
    assert_eq!(
        key_ids.len() as u64,
        status.refresh_count,
        "every refresh brings a new access key id"
    );
}
