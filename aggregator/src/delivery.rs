//! One integration's delivery worker: it takes the integration's live rows from the
//! persistent outbox in commit order and hands them to its sink, one at a time, so the
//! integration's order is kept (a delivery waiting for its retry holds back the ones
//! after it, by design).
//!
//! Outcomes: accepted → the row is deleted; `Permanent` → dead-lettered at once;
//! `Transient` (5xx, timeouts, refused connections) → retried after an exponential
//! backoff with jitter between `backoff_min` and `backoff_max`; `Throttled` (429) →
//! retried no sooner than its `Retry-After`. Every attempt is bounded by the
//! integration's timeout, so a hanging receiver holds back only its own integration.
//!
//! The worker owns no queue in memory beyond the batch it is working through: dispatch
//! wakes it after each commit (a `Notify`, which holds at most one wake-up: a full
//! "queue" means a wake-up is already pending, and nothing is lost, since the rows are in
//! the outbox). On shutdown it delivers what is due and stops at the first delivery that
//! has to wait.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Delivery, Outbox};
use crate::sink::{AnySink, DeliveryError, Sink, SinkConfig};
use crate::store::StoreError;

/// Rows taken from the outbox at a time.
const BATCH: u32 = 64;
/// How long the worker waits after the outbox itself failed (disk full, locked).
const OUTBOX_RETRY: Duration = Duration::from_secs(1);

/// When to try again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub min: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempts`-th failed attempt: `min · 2^(attempts-1)`, capped at
    /// `max`, then jittered down by up to a half so that many failing deliveries do not
    /// retry in step. Never under `min`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1).min(30);
        let base = self.min.saturating_mul(1 << exponent).min(self.max);
        let jitter = base.mul_f64(fastrand::f64() / 2.0);
        (base - jitter).max(self.min)
    }
}

/// Everything a worker needs; built by `dispatch`.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) integration: String,
    pub(crate) sink: SinkConfig,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) db_path: PathBuf,
    pub(crate) wake: Arc<Notify>,
    pub(crate) stop: CancellationToken,
}

type SharedOutbox = Arc<Mutex<Outbox>>;

async fn with_outbox<T: Send + 'static>(
    outbox: &SharedOutbox,
    operation: impl FnOnce(&Outbox) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let outbox = Arc::clone(outbox);
    tokio::task::spawn_blocking(move || {
        // A poisoned lock only means an operation panicked; the connection is fine.
        let outbox = outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        operation(&outbox)
    })
    .await
    .map_err(|error| StoreError::Corrupt {
        what: "outbox task".into(),
        detail: error.to_string(),
    })?
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What the worker does next after one pass over a batch.
enum Next {
    /// Read the outbox again at once.
    Continue,
    /// Wait this long (a retry is not due yet).
    Wait(Duration),
    /// Nothing live: wait for a wake-up.
    Idle,
}

impl Worker {
    pub(crate) async fn run(self) {
        let mut sink = match self.sink.build(self.timeout) {
            Ok(sink) => sink,
            Err(error) => {
                // The rows stay pending; a fixed config delivers them after a restart.
                tracing::error!(integration = %self.integration, %error, "cannot build the sink; its deliveries stay pending");
                self.stop.cancelled().await;
                return;
            }
        };
        let db_path = self.db_path.clone();
        let outbox = match tokio::task::spawn_blocking(move || Outbox::open(&db_path)).await {
            Ok(Ok(outbox)) => Arc::new(Mutex::new(outbox)),
            Ok(Err(error)) => {
                tracing::error!(integration = %self.integration, %error, "cannot open the outbox");
                return;
            }
            Err(error) => {
                tracing::error!(integration = %self.integration, %error, "cannot open the outbox");
                return;
            }
        };
        loop {
            let draining = self.stop.is_cancelled();
            let next = match self.pass(&mut sink, &outbox, draining).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::error!(integration = %self.integration, %error, "outbox failed");
                    if draining {
                        return;
                    }
                    Next::Wait(OUTBOX_RETRY)
                }
            };
            match next {
                Next::Continue => {}
                Next::Idle | Next::Wait(_) if draining => return,
                Next::Idle => {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = self.stop.cancelled() => {}
                    }
                }
                Next::Wait(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.stop.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Works through one batch of live rows, in order, until one has to wait.
    async fn pass(
        &self,
        sink: &mut AnySink,
        outbox: &SharedOutbox,
        draining: bool,
    ) -> Result<Next, StoreError> {
        let integration = self.integration.clone();
        let batch = with_outbox(outbox, move |outbox| outbox.live(&integration, BATCH)).await?;
        if batch.is_empty() {
            return Ok(Next::Idle);
        }
        for delivery in batch {
            let now = now_ms();
            if delivery.next_attempt_ms > now {
                let wait = u64::try_from(delivery.next_attempt_ms - now).unwrap_or(0);
                return Ok(Next::Wait(Duration::from_millis(wait)));
            }
            if let Some(wait) = self.attempt(sink, outbox, delivery).await? {
                return Ok(if draining {
                    Next::Idle
                } else {
                    Next::Wait(wait)
                });
            }
        }
        Ok(Next::Continue)
    }

    /// One attempt; returns how long to wait when it has to be retried.
    async fn attempt(
        &self,
        sink: &mut AnySink,
        outbox: &SharedOutbox,
        delivery: Delivery,
    ) -> Result<Option<Duration>, StoreError> {
        let outcome =
            match tokio::time::timeout(self.timeout, sink.deliver(&delivery.envelope)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(DeliveryError::Transient(format!(
                    "no answer within {:?}",
                    self.timeout
                ))),
            };
        let seq = delivery.seq;
        let attempts = delivery.attempts.saturating_add(1);
        let (wait, reason) = match outcome {
            Ok(()) => {
                with_outbox(outbox, move |outbox| outbox.delivered(seq)).await?;
                return Ok(None);
            }
            Err(DeliveryError::Permanent(reason)) => {
                tracing::error!(
                    integration = %self.integration,
                    event = %delivery.event_id,
                    attempts,
                    %reason,
                    "delivery refused for good: dead-lettered"
                );
                with_outbox(outbox, move |outbox| outbox.dead(seq, attempts, &reason)).await?;
                return Ok(None);
            }
            Err(DeliveryError::Transient(reason)) => (self.retry.backoff(attempts), reason),
            Err(DeliveryError::Throttled {
                retry_after,
                reason,
            }) => (retry_after.max(self.retry.backoff(attempts)), reason),
        };
        tracing::warn!(
            integration = %self.integration,
            event = %delivery.event_id,
            attempts,
            retry_in = ?wait,
            %reason,
            "delivery failed; will retry"
        );
        let next_attempt_ms =
            now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
        with_outbox(outbox, move |outbox| {
            outbox.failed(seq, attempts, next_attempt_ms, &reason)
        })
        .await?;
        Ok(Some(wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let policy = RetryPolicy::default();
        for _ in 0..100 {
            let first = policy.backoff(1);
            assert_eq!(first, Duration::from_secs(1));
            let third = policy.backoff(3);
            assert!(
                third >= Duration::from_secs(2) && third <= Duration::from_secs(4),
                "{third:?}"
            );
            let late = policy.backoff(40);
            assert!(
                late >= Duration::from_secs(150) && late <= Duration::from_secs(300),
                "{late:?}"
            );
        }
        // Jitter actually varies the wait.
        let waits: std::collections::HashSet<Duration> =
            (0..50).map(|_| policy.backoff(5)).collect();
        assert!(waits.len() > 1);
    }
}
