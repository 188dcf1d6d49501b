//! What every streamed way in shares, whatever its route: the pace a body must keep, and
//! the answer that closes a connection whose body is left unread. (Admission, and the one
//! mapping of its refusal to an answer, is `AppState::admit`.)

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::config::Settings;
use crate::http::error::ApiError;

/// The request's `Content-Length`, if it sent one.
pub fn declared_length(request: &HttpRequest) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())
}

/// How fast a request body must arrive: a byte at least every `stall`, all of it by
/// `deadline`, and, after [`RATE_GRACE`], at least `min_rate` bytes a second on average. A
/// client that sends one byte every few seconds would otherwise hold an upload, and its
/// memory, for ever.
#[derive(Clone, Debug)]
pub struct BodyPace {
    stall: Duration,
    started: Instant,
    deadline: Instant,
    min_rate: u64,
    received: Rc<Cell<u64>>,
}

/// How long a body may start slowly before its average rate counts.
const RATE_GRACE: Duration = Duration::from_secs(10);

impl BodyPace {
    pub fn new(settings: &Settings) -> Self {
        let started = Instant::now();
        Self {
            stall: Duration::from_secs(settings.server.request_body_timeout_secs.get()),
            started,
            deadline: started + Duration::from_secs(settings.admission.upload_deadline_secs.get()),
            min_rate: settings.admission.min_upload_bytes_per_sec,
            received: Rc::default(),
        }
    }

    /// Why the body is too slow, after `bytes` more arrived; `None` while it keeps pace.
    fn check(&self, bytes: u64) -> Option<String> {
        self.received.set(self.received.get() + bytes);
        let elapsed = self.started.elapsed();
        if Instant::now() > self.deadline {
            return Some(format!(
                "the body took longer than {} s",
                (self.deadline - self.started).as_secs()
            ));
        }
        if elapsed > RATE_GRACE
            && (self.received.get() as f64 / elapsed.as_secs_f64()) < self.min_rate as f64
        {
            return Some(format!(
                "the body arrives slower than {} bytes a second",
                self.min_rate
            ));
        }
        None
    }

    /// How long to wait for the next chunk.
    fn wait(&self) -> Duration {
        self.stall
            .min(self.deadline.saturating_duration_since(Instant::now()))
    }
}

/// The bytes of a part or a body, failing when the body falls behind `pace`.
pub fn paced<S, E>(body: S, pace: BodyPace) -> impl Stream<Item = Result<Bytes, String>> + Unpin
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    Box::pin(futures::stream::unfold(Some(body), move |field| {
        let pace = pace.clone();
        async move {
            let mut field = field?;
            match tokio::time::timeout(pace.wait(), field.next()).await {
                Ok(Some(Ok(chunk))) => match pace.check(chunk.len() as u64) {
                    None => Some((Ok(chunk), Some(field))),
                    Some(slow) => Some((Err(slow), None)),
                },
                Ok(Some(Err(error))) => Some((Err(error.to_string()), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(pace
                        .check(0)
                        .unwrap_or_else(|| format!("no data for {} s", pace.stall.as_secs()))),
                    None,
                )),
            }
        }
    }))
}

/// The error response with `Connection: close`, for bodies left unread.
pub fn closing(error: ApiError) -> HttpResponse {
    let mut response = error.error_response();
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(started_ago: Duration, deadline_in: Duration, min_rate: u64) -> BodyPace {
        let now = Instant::now();
        BodyPace {
            stall: Duration::from_secs(30),
            started: now - started_ago,
            deadline: now + deadline_in,
            min_rate,
            received: Rc::default(),
        }
    }

    #[test]
    fn a_slow_start_is_allowed_within_the_grace() {
        let pace = pace(Duration::from_secs(5), Duration::from_secs(60), 1024);
        assert_eq!(pace.check(10), None);
    }

    #[test]
    fn a_body_below_the_minimum_rate_after_the_grace_is_cut() {
        let pace = pace(Duration::from_secs(20), Duration::from_secs(60), 1024);
        assert!(
            pace.check(10)
                .is_some_and(|why| why.contains("slower than 1024"))
        );
    }

    #[test]
    fn a_body_past_its_deadline_is_cut_whatever_its_rate() {
        let pace = pace(Duration::from_secs(5), Duration::ZERO, 0);
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            pace.check(1 << 30)
                .is_some_and(|why| why.contains("longer than"))
        );
    }
}
