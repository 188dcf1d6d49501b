//! Work that runs beside the requests: the reaper and the periodic JWKS refresh.

use std::sync::Arc;
use std::time::Duration;

use storage::{ReapReport, Storage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{Authenticator, JWKS_REFRESH};
use crate::metrics::Metrics;

/// The periodic reaper of this instance; at most one instance reaps at a time (a lease).
#[derive(Debug)]
pub struct Reaper {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Reaper {
    /// Starts a pass every `interval`, the first one now; `metrics` counts what the
    /// passes find out of place.
    pub fn start(storage: Storage, interval: Duration, metrics: Arc<Metrics>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let holder = Storage::reaper_holder();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.wait_for(|stop| *stop) => return,
                }
                // A pass is never cancelled half-way: MongoDB operations must not be
                // dropped mid-flight.
                match storage.reap_exclusively(&holder, interval * 3).await {
                    Ok(Some(report)) if report != ReapReport::default() => {
                        metrics.add_reconciled(&report);
                        tracing::info!(?report, "reaper cleaned up");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "reaper pass failed; retrying next interval")
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// Lets a pass in progress finish, then stops.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "reaper task ended abnormally");
        }
    }
}

/// Refetches the JWKS every [`JWKS_REFRESH`] until aborted.
pub fn refresh_jwks_periodically(authenticator: Authenticator) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(JWKS_REFRESH);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            authenticator.refresh_jwks().await;
        }
    })
}
