//! Delivery of the events `storage` records (see `storage::events`) to `events.webhook_url`,
//! signed as [Standard Webhooks](https://www.standardwebhooks.com/): at least once, a
//! post's events in order, each retried with exponential backoff and jitter until
//! `events.max_attempts`, then kept as failed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use storage::{DueEvent, Storage};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::config::EventSettings;
use crate::metrics::EventMetrics;

/// How long a claimed event is this instance's to deliver: the receiver's time and some.
fn lease(settings: &EventSettings) -> Duration {
    Duration::from_secs(settings.timeout_secs.get() + 30)
}

/// How often an idle dispatcher looks for events other instances recorded, or whose retry
/// came due.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The three Standard Webhooks headers for one attempt.
#[derive(Debug, PartialEq, Eq)]
pub struct Signed {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`: seconds since the epoch, of this attempt.
    pub timestamp: String,
    /// `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`.
    pub signature: String,
}

/// The HMAC-SHA256 of the signing key, keyed once and cloned for each signature.
pub type SigningKey = Hmac<Sha256>;

/// The signing key of `key`'s bytes (any length).
pub fn signing_key(key: &[u8]) -> Option<SigningKey> {
    <SigningKey as KeyInit>::new_from_slice(key).ok()
}

/// Signs `body` for delivery as event `id` at `at`.
pub fn sign(key: &SigningKey, id: &str, at: SystemTime, body: &[u8]) -> Signed {
    let timestamp = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
        .to_string();
    let mut mac = key.clone();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Signed {
        id: id.to_owned(),
        timestamp,
        signature: format!("v1,{signature}"),
    }
}

/// The wait before the attempt after `attempts` failed ones: `first_retry_ms` doubled
/// for each, at most `max_retry_secs`, then between half and all of it (jitter, so that
/// receivers coming back are not met by every sender at once).
pub fn backoff(settings: &EventSettings, attempts: u32, jitter: f64) -> Duration {
    let first = Duration::from_millis(settings.first_retry_ms.get());
    let ceiling = Duration::from_secs(settings.max_retry_secs.get());
    let doubled = first.saturating_mul(1_u32 << attempts.saturating_sub(1).min(20));
    doubled
        .min(ceiling)
        .mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// The dispatcher of this instance.
#[derive(Debug)]
pub struct Dispatcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Dispatcher {
    /// Starts delivering, if events are on.
    pub fn start(
        storage: Storage,
        settings: &EventSettings,
        metrics: EventMetrics,
    ) -> Option<Self> {
        let key = signing_key(&settings.signing_key().filter(|_| settings.is_on())?)?;
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs.get()))
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "no HTTP client for webhooks: events are recorded, not delivered");
                return None;
            }
        };
        let delivery = Arc::new(Delivery {
            storage,
            client,
            url: settings.webhook_url.trim().to_owned(),
            key,
            settings: settings.clone(),
            metrics,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(dispatch(delivery, stopped));
        Some(Self { stop, task })
    }

    /// Lets deliveries in progress finish, then stops.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "event dispatcher ended abnormally");
        }
    }
}

/// What every delivery needs.
#[derive(Debug)]
struct Delivery {
    storage: Storage,
    client: reqwest::Client,
    url: String,
    key: SigningKey,
    settings: EventSettings,
    metrics: EventMetrics,
}

/// Claims due events and delivers them, up to `max_concurrent_deliveries` at once, until
/// stopped. MongoDB calls are never cancelled half-way.
async fn dispatch(delivery: Arc<Delivery>, mut stopped: watch::Receiver<bool>) {
    let most = usize::try_from(delivery.settings.max_concurrent_deliveries.get()).unwrap_or(1);
    let lease = lease(&delivery.settings);
    let mut deliveries = JoinSet::new();
    while !*stopped.borrow() {
        let claimed = if deliveries.len() < most {
            delivery.storage.claim_due_event(lease).await
        } else {
            Ok(None)
        };
        match claimed {
            Ok(Some(event)) => {
                deliveries.spawn(deliver(delivery.clone(), event));
                continue;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "could not claim an event; retrying"),
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => {}
            () = delivery.storage.event_recorded() => {}
            Some(_) = deliveries.join_next() => {}
            () = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
    while deliveries.join_next().await.is_some() {}
}

/// One attempt at `event`, and what follows from its outcome.
async fn deliver(delivery: Arc<Delivery>, event: DueEvent) {
    let storage = &delivery.storage;
    let outcome = attempt(&delivery, &event).await;
    let recorded = match outcome {
        Ok(()) => {
            delivery.metrics.delivered(event.timestamp);
            storage.event_delivered(&event).await
        }
        Err(problem) if event.attempts + 1 >= delivery.settings.max_attempts.get() => {
            tracing::warn!(event_id = %event.id, post_id = %event.post_id, %problem, "event out of attempts; kept as failed");
            delivery.metrics.failed();
            storage.give_up_event(&event, &problem).await
        }
        Err(problem) => {
            let wait = backoff(&delivery.settings, event.attempts + 1, fastrand::f64());
            tracing::info!(event_id = %event.id, %problem, ?wait, "event not delivered; will retry");
            delivery.metrics.retried();
            storage
                .retry_event_at(&event, SystemTime::now() + wait, &problem)
                .await
        }
    };
    if let Err(error) = recorded {
        // The lease runs out and the event is tried again: at least once.
        tracing::warn!(event_id = %event.id, %error, "could not record a delivery's outcome");
    }
}

/// POSTs `event`, signed for now; `Err` says why the receiver did not take it.
async fn attempt(delivery: &Delivery, event: &DueEvent) -> Result<(), String> {
    let signed = sign(&delivery.key, &event.id, SystemTime::now(), &event.body);
    let response = delivery
        .client
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("webhook-id", signed.id)
        .header("webhook-timestamp", signed.timestamp)
        .header("webhook-signature", signed.signature)
        .body(event.body.clone())
        .send()
        .await
        .map_err(|error| format!("{error}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroU64};

    use super::*;

    fn settings() -> EventSettings {
        EventSettings {
            webhook_url: String::new(),
            webhook_secret: String::new().into(),
            max_attempts: NonZeroU32::new(16).expect("not zero"),
            timeout_secs: NonZeroU64::new(10).expect("not zero"),
            first_retry_ms: NonZeroU64::new(1000).expect("not zero"),
            max_retry_secs: NonZeroU64::new(3600).expect("not zero"),
            max_concurrent_deliveries: NonZeroU32::new(8).expect("not zero"),
        }
    }

    #[test]
    fn a_signature_is_the_standard_webhooks_example() {
        // The example in the Standard Webhooks specification's test vectors.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        let key = signing_key(&key).expect("a key");
        let at = UNIX_EPOCH + Duration::from_secs(1_614_265_330);
        let signed = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            at,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signed.signature,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn retries_double_up_to_the_ceiling_within_their_jitter() {
        let settings = settings();
        assert_eq!(backoff(&settings, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&settings, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(&settings, 3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(&settings, 30, 1.0), Duration::from_secs(3600));
    }
}
