//! Unit tests of `cache`.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aws_smithy_async::test_util::ManualTimeSource;
use aws_smithy_async::time::TimeSource;

use super::*;
use crate::source::FetchFuture;

const SESSION: Duration = Duration::from_secs(900);
const LEAD: Duration = Duration::from_secs(300);

/// An in-process STS: counts calls, issues credentials valid for `SESSION` from the
/// fake clock's now, and fails while told to.
#[derive(Debug)]
struct FakeSts {
    clock: ManualTimeSource,
    calls: AtomicUsize,
    failing: AtomicBool,
    latency: Duration,
}

impl FetchCredentials for Arc<FakeSts> {
    fn fetch(&self) -> FetchFuture<'_> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(CredentialsError::Unavailable {
                    detail: "STS is down".into(),
                });
            }
            Ok(Credentials::new(
                format!("ASIAFAKE{call}"),
                "secret",
                Some("token".into()),
                Some(self.clock.now() + SESSION),
                "FakeSts",
            ))
        })
    }
}

struct Harness {
    clock: ManualTimeSource,
    sts: Arc<FakeSts>,
    credentials: TemporaryCredentials,
}

fn harness(latency: Duration) -> Harness {
    let clock = ManualTimeSource::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let sts = Arc::new(FakeSts {
        clock: clock.clone(),
        calls: AtomicUsize::new(0),
        failing: AtomicBool::new(false),
        latency,
    });
    let credentials = TemporaryCredentials::new(
        Box::new(sts.clone()),
        CredentialsOrigin::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/test".into(),
        },
        SharedTimeSource::new(clock.clone()),
        LEAD,
        Backoff::default(),
    );
    Harness {
        clock,
        sts,
        credentials,
    }
}

impl Harness {
    fn calls(&self) -> usize {
        self.sts.calls.load(Ordering::SeqCst)
    }

    fn fail(&self, failing: bool) {
        self.sts.failing.store(failing, Ordering::SeqCst);
    }

    async fn key(&self) -> Result<String, CredentialsError> {
        self.credentials
            .credentials()
            .await
            .map(|c| c.access_key_id().to_owned())
    }
}

#[tokio::test]
async fn the_first_call_fetches_and_later_calls_reuse_the_cache() {
    let h = harness(Duration::ZERO);
    assert_eq!(h.key().await.ok().as_deref(), Some("ASIAFAKE1"));
    h.clock.advance(Duration::from_secs(10));
    assert_eq!(h.key().await.ok().as_deref(), Some("ASIAFAKE1"));
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn no_refresh_before_expiry_minus_lead() {
    let h = harness(Duration::ZERO);
    h.key().await.ok();
    h.clock.advance(SESSION - LEAD - Duration::from_secs(1));
    assert_eq!(h.key().await.ok().as_deref(), Some("ASIAFAKE1"));
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn refresh_happens_at_expiry_minus_lead() {
    let h = harness(Duration::ZERO);
    h.key().await.ok();
    h.clock.advance(SESSION - LEAD);
    assert_eq!(h.key().await.ok().as_deref(), Some("ASIAFAKE2"));
    assert_eq!(h.calls(), 2);
    assert_eq!(h.credentials.status().refresh_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_callers_at_the_refresh_point_cause_one_sts_call() {
    let h = Arc::new(harness(Duration::from_millis(50)));
    h.key().await.ok();
    h.clock.advance(SESSION - LEAD);
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.key().await })
        })
        .collect();
    for caller in callers {
        assert!(caller.await.expect("caller task").is_ok());
    }
    assert_eq!(h.calls(), 2, "one initial fetch and one refresh");
    assert_eq!(h.key().await.ok().as_deref(), Some("ASIAFAKE2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_callers_with_nothing_cached_cause_one_sts_call() {
    let h = Arc::new(harness(Duration::from_millis(50)));
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.key().await })
        })
        .collect();
    for caller in callers {
        assert_eq!(
            caller.await.expect("caller task").ok().as_deref(),
            Some("ASIAFAKE1")
        );
    }
    assert_eq!(h.calls(), 1);
}

#[tokio::test]
async fn failing_sts_inside_the_lead_window_serves_the_old_credentials_until_expiry() {
    let h = harness(Duration::ZERO);
    h.key().await.ok();
    h.fail(true);
    h.clock.advance(SESSION - LEAD);
    assert_eq!(h.key().await.ok().as_deref(), Some("ASIAFAKE1"));
    h.clock.advance(LEAD - Duration::from_secs(1));
    assert_eq!(h.key().await.ok().as_deref(), Some("ASIAFAKE1"));
    let status = h.credentials.status();
    assert!(status.consecutive_failures >= 1);
    assert!(status.last_error.is_some());
}

#[tokio::test]
async fn failing_sts_after_expiry_returns_the_expired_error_with_its_cause() {
    let h = harness(Duration::ZERO);
    h.key().await.ok();
    h.fail(true);
    h.clock.advance(SESSION);
    match h.key().await {
        Err(CredentialsError::Expired { cause, .. }) => {
            assert!(matches!(*cause, CredentialsError::Unavailable { .. }));
        }
        other => panic!("expected Expired, got {other:?}"),
    }
}

#[tokio::test]
async fn refresh_is_retried_only_after_the_backoff() {
    let h = harness(Duration::ZERO);
    h.key().await.ok();
    h.fail(true);
    h.clock.advance(SESSION - LEAD);
    h.key().await.ok();
    let calls_after_failure = h.calls();
    // Within the minimum backoff (half the initial delay) nothing is retried.
    h.clock.advance(Duration::from_millis(400));
    h.key().await.ok();
    assert_eq!(h.calls(), calls_after_failure);
    h.fail(false);
    h.clock.advance(Backoff::default().initial);
    assert_eq!(h.key().await.ok().as_deref(), Some("ASIAFAKE3"));
    assert_eq!(h.credentials.status().consecutive_failures, 0);
}

#[tokio::test]
async fn recovery_after_expiry_fetches_new_credentials() {
    let h = harness(Duration::ZERO);
    h.key().await.ok();
    h.fail(true);
    h.clock.advance(SESSION);
    assert!(h.key().await.is_err());
    h.fail(false);
    h.clock.advance(Backoff::default().max);
    assert!(h.key().await.is_ok());
}

#[test]
fn backoff_grows_exponentially_and_is_bounded() {
    let backoff = Backoff::default();
    assert_eq!(backoff.delay(1, 1.0), Duration::from_secs(1));
    assert_eq!(backoff.delay(2, 1.0), Duration::from_secs(2));
    assert_eq!(backoff.delay(3, 1.0), Duration::from_secs(4));
    assert_eq!(backoff.delay(50, 1.0), backoff.max);
    assert_eq!(backoff.delay(u32::MAX, 1.0), backoff.max);
}

#[test]
fn backoff_jitter_stays_within_half_to_full_delay() {
    let backoff = Backoff::default();
    assert_eq!(backoff.delay(3, 0.0), Duration::from_secs(2));
    assert!(backoff.delay(3, 0.5) > Duration::from_secs(2));
    assert!(backoff.delay(3, 0.5) < Duration::from_secs(4));
}
