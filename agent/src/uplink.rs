//! The uplink: the one gRPC stream to the aggregator (DESIGN §5).
//!
//! Per connection it sends `Hello`, then every unacknowledged batch oldest first, then new
//! batches as the sampler announces them; each `Ack` removes its batch from the outbox. When
//! the stream fails or ends it reconnects with exponential backoff and jitter (1 s doubling
//! to 30 s, reset once a connection has carried an ack) and starts over from the oldest
//! unacknowledged batch.
//!
//! It never makes batches and never blocks the sampler: the two share the outbox behind a
//! mutex that neither holds across an await. It knows nothing of shutdown signals; it is
//! told to drain and returns once the outbox is empty, and its owner bounds that in time.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use proto::v1::agent_message::Kind as AgentKind;
use proto::v1::aggregator_message::Kind as AggregatorKind;
use proto::v1::ingest_client::IngestClient;
use proto::v1::{Ack, AgentMessage, AggregatorMessage, Hello};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::Secret;
use crate::outbox::Outbox;

/// The outbox as the sampler and the uplink share it.
pub(crate) type SharedOutbox = Arc<Mutex<Outbox>>;

/// Locks the outbox. A panic while holding the lock cannot leave the outbox half-updated
/// in a way that matters more than stopping would, so a poisoned lock is used as is.
pub(crate) fn lock(outbox: &SharedOutbox) -> MutexGuard<'_, Outbox> {
    outbox.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Messages queued towards the request stream; small, because batches stay in the outbox
/// until there is room, and are only cloned when they are about to go out.
const SEND_BUFFER: usize = 4;

/// How long a drained stream waits for the aggregator to end its side (one round trip).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reconnect delays: 1 s doubling to 30 s, each with jitter.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration, rng: fastrand::Rng) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
            rng,
        }
    }

    /// The next delay: the current step, minus up to half of it at random so that agents
    /// cut off together do not reconnect together. Doubles the step, up to the maximum.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        let half_ms = u64::try_from(step.as_millis() / 2).unwrap_or(u64::MAX);
        step - Duration::from_millis(self.rng.u64(0..=half_ms))
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Why a connection ended.
enum SessionEnd {
    /// Draining was requested and the outbox is empty: nothing left to do.
    Drained,
    /// The connection failed or the aggregator ended it; `healthy` when it carried an ack.
    Lost { healthy: bool, reason: String },
}

pub(crate) struct Uplink {
    endpoint: Endpoint,
    /// Sent at the start of every stream, with `oldest_unacked_seq` and the token filled in
    /// per stream.
    hello: Hello,
    /// Sent as `authorization: Bearer …` and in `Hello.token`; never logged.
    token: Option<Secret>,
    /// How long to wait for the aggregator to answer the stream call.
    open_timeout: Duration,
    outbox: SharedOutbox,
    batch_ready: Arc<Notify>,
    backoff: Backoff,
}

impl Uplink {
    pub(crate) fn new(
        endpoint: Endpoint,
        hello: Hello,
        token: Option<Secret>,
        open_timeout: Duration,
        outbox: SharedOutbox,
        batch_ready: Arc<Notify>,
    ) -> Uplink {
        let backoff = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(30),
            fastrand::Rng::new(),
        );
        Uplink {
            endpoint,
            hello,
            token,
            open_timeout,
            outbox,
            batch_ready,
            backoff,
        }
    }

    /// Streams until `draining` turns true and the outbox is empty. Never fails: every
    /// error is logged and answered by a reconnect.
    pub(crate) async fn run(mut self, mut draining: watch::Receiver<bool>) {
        let mut attempt: u64 = 0;
        loop {
            if self.drained(&draining) {
                return;
            }
            attempt += 1;
            match self.session(&mut draining).await {
                SessionEnd::Drained => return,
                SessionEnd::Lost { healthy, reason } => {
                    if healthy {
                        self.backoff.reset();
                        attempt = 1;
                    }
                    let delay = self.backoff.next_delay();
                    let unacked = lock(&self.outbox).len();
                    tracing::warn!(
                        url = %self.endpoint.uri(),
                        attempt,
                        unacked,
                        retry_in = %humantime::format_duration(round_ms(delay)),
                        "no stream to the aggregator: {reason}"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = wait_drained(&mut draining, &self.outbox) => return,
                    }
                }
            }
        }
    }

    fn drained(&self, draining: &watch::Receiver<bool>) -> bool {
        *draining.borrow() && lock(&self.outbox).is_empty()
    }

    async fn session(&mut self, draining: &mut watch::Receiver<bool>) -> SessionEnd {
        let lost = |reason: String| SessionEnd::Lost {
            healthy: false,
            reason,
        };
        let channel = tokio::select! {
            connected = self.endpoint.connect() => match connected {
                Ok(channel) => channel,
                Err(err) => return lost(format!("cannot connect: {}", error_chain(&err))),
            },
            () = wait_drained(draining, &self.outbox) => return SessionEnd::Drained,
        };
        let mut client = IngestClient::new(channel);

        let (sender, receiver) = mpsc::channel::<AgentMessage>(SEND_BUFFER);
        let hello = Hello {
            oldest_unacked_seq: lock(&self.outbox).oldest_seq().unwrap_or(0),
            token: self
                .token
                .as_ref()
                .map(|token| token.expose().to_owned())
                .unwrap_or_default(),
            ..self.hello.clone()
        };
        // The channel is empty, so this cannot wait; it fails only if the receiver is gone.
        if sender
            .send(AgentMessage {
                kind: Some(AgentKind::Hello(hello)),
            })
            .await
            .is_err()
        {
            return lost("request stream closed before hello".to_owned());
        }
        let mut request = tonic::Request::new(ReceiverStream::new(receiver));
        if let Some(token) = &self.token {
            // Checked to be visible ASCII when it was read, so this cannot fail.
            if let Ok(mut value) = format!("Bearer {}", token.expose())
                .parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>(
            ) {
                // Keeps it out of Debug output and out of HPACK's dynamic table.
                value.set_sensitive(true);
                request.metadata_mut().insert("authorization", value);
            }
        }
        let call = client.stream(request);
        let mut inbound = match tokio::time::timeout(self.open_timeout, call).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return lost(describe_status(&status)),
            Err(_) => {
                return lost(format!(
                    "no answer to the stream call within {}",
                    humantime::format_duration(self.open_timeout)
                ));
            }
        };
        tracing::info!(url = %self.endpoint.uri(), "connected to the aggregator");

        // Everything from the oldest unacknowledged batch on is (re)sent on this stream.
        let mut send_from: u64 = 0;
        let mut healthy = false;
        loop {
            let next_seq = lock(&self.outbox).next_unsent_seq(send_from);
            let draining_now = *draining.borrow();
            let mut drained = false;
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Some(AggregatorKind::Ack(ack)) = message.kind {
                            healthy = true;
                            self.apply_ack(ack);
                            drained = self.drained(draining);
                        }
                    }
                    Ok(None) => {
                        return SessionEnd::Lost { healthy, reason: "the aggregator ended the stream".to_owned() };
                    }
                    Err(status) => return SessionEnd::Lost { healthy, reason: describe_status(&status) },
                },
                permit = sender.reserve(), if next_seq.is_some() => {
                    let Ok(permit) = permit else {
                        return SessionEnd::Lost { healthy, reason: "request stream closed".to_owned() };
                    };
                    let Some(seq) = next_seq else { continue };
                    // Read back under the lock, send outside it. The batch may have been dropped
                    // or acknowledged meanwhile; then the loop just looks again.
                    let batch = lock(&self.outbox).batch(seq);
                    send_from = seq + 1;
                    if let Some(batch) = batch {
                        tracing::debug!(seq, "sending batch");
                        permit.send(AgentMessage { kind: Some(AgentKind::Batch(batch)) });
                    }
                },
                () = self.batch_ready.notified(), if next_seq.is_none() => {}
                changed = draining.changed(), if !draining_now => {
                    drained = changed.is_err() || self.drained(draining);
                }
            }
            if drained {
                return self.close(sender, &mut inbound).await;
            }
        }
    }

    /// Ends a drained stream the way a finished call ends: the request stream first, then
    /// the aggregator's end of the response, awaited for at most [`CLOSE_TIMEOUT`]. Without
    /// this the connection was dropped mid-stream at every stop, which the aggregator can
    /// only take for a broken stream (and log as one); now a broken stream is a real one.
    async fn close(
        &self,
        sender: mpsc::Sender<AgentMessage>,
        inbound: &mut tonic::Streaming<AggregatorMessage>,
    ) -> SessionEnd {
        drop(sender);
        let ended = async {
            loop {
                match inbound.message().await {
                    Ok(Some(message)) => {
                        if let Some(AggregatorKind::Ack(ack)) = message.kind {
                            self.apply_ack(ack);
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!("stream ended with {}", describe_status(&status));
                        return;
                    }
                }
            }
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, ended).await.is_err() {
            tracing::debug!("the aggregator did not end the stream; closing the connection");
        }
        SessionEnd::Drained
    }

    fn apply_ack(&self, ack: Ack) {
        // One entry per reason (`count` samples from `index` on; 0 from aggregators that
        // sent one entry per sample).
        for rejected in &ack.rejected {
            tracing::warn!(
                seq = ack.seq,
                index = rejected.index,
                count = rejected.count.max(1),
                reason = %rejected.reason,
                detail = %rejected.detail,
                "aggregator rejected a sample"
            );
        }
        if lock(&self.outbox).ack(ack.seq) {
            tracing::debug!(
                seq = ack.seq,
                accepted = ack.accepted,
                duplicate = ack.duplicate,
                "batch acknowledged"
            );
        } else {
            tracing::debug!(seq = ack.seq, "ack for a batch no longer in the outbox");
        }
    }
}

/// Resolves once draining was requested and the outbox is empty; pending forever otherwise
/// (the outbox only empties through acks, which need a connection).
async fn wait_drained(draining: &mut watch::Receiver<bool>, outbox: &SharedOutbox) {
    loop {
        if *draining.borrow_and_update() && lock(outbox).is_empty() {
            return;
        }
        if draining.changed().await.is_err() {
            // The agent is gone; so is the reason to keep trying.
            return;
        }
    }
}

fn describe_status(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// The transport error with its causes, which carry the useful part ("connection refused").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // hyper and tonic repeat a cause's text in its wrapper; say each part once.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_max_with_jitter_and_resets() {
        let mut backoff = Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(30),
            fastrand::Rng::with_seed(7),
        );
        let steps = [1, 2, 4, 8, 16, 30, 30, 30];
        for step in steps {
            let step = Duration::from_secs(step);
            let delay = backoff.next_delay();
            assert!(
                delay <= step && delay >= step / 2,
                "{delay:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn backoff_jitter_varies() {
        let mut delays = std::collections::BTreeSet::new();
        for seed in 0..20 {
            let mut backoff = Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(30),
                fastrand::Rng::with_seed(seed),
            );
            delays.insert(backoff.next_delay());
        }
        assert!(
            delays.len() > 1,
            "jitter must spread agents apart: {delays:?}"
        );
    }
}
