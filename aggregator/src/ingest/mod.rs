//! The `Ingest` gRPC service: one stream per agent. Reads the Hello, then each batch:
//! validates its samples, has the monitor apply and persist it, and acknowledges it.
//!
//! Batches of one stream are applied in order and acknowledged in order, each only once
//! its commit is durable. Up to `IN_FLIGHT` of a stream's batches may wait for their
//! commit at once (so a stream is not limited to one batch per fsync); past that the
//! stream is not read, which pushes back on that agent. Wire types stop here: the
//! monitor and engine see domain values only.

mod route;
pub mod validate;

pub use route::IngestRoute;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use proto::v1 as wire;
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Auth, ClientCert};
use crate::engine::{Batch, Hello};
use crate::model::{NodeIdentity, NodeKey, Probe, Timestamp};
use crate::monitor::{Monitor, MonitorError};

/// Batches of one stream applied but not yet durable (so not yet acknowledged); past
/// this the stream's reader waits.
const IN_FLIGHT: usize = 32;

#[derive(Debug, Clone)]
pub struct IngestService {
    monitor: Monitor,
    max_clock_skew: Duration,
    auth: Auth,
    stop: CancellationToken,
    /// How long a stream may take to send its Hello: until then it is unauthenticated.
    hello_timeout: Duration,
}

/// `ConnectionsConfig::hello_timeout`'s default, for services built without a config.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

impl IngestService {
    pub fn new(
        monitor: Monitor,
        max_clock_skew: Duration,
        auth: Auth,
        stop: CancellationToken,
    ) -> Self {
        Self {
            monitor,
            max_clock_skew,
            auth,
            stop,
            hello_timeout: HELLO_TIMEOUT,
        }
    }

    /// A stream that sends no Hello within `timeout` ends with DEADLINE_EXCEEDED.
    pub fn with_hello_timeout(mut self, timeout: Duration) -> Self {
        self.hello_timeout = timeout;
        self
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<wire::AggregatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl wire::ingest_server::Ingest for IngestService {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        request: Request<Streaming<wire::AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = request.remote_addr();
        // The end-entity certificate comes first; the TLS layer has verified the chain.
        let client_cert = match request.peer_certs() {
            Some(certs) if !certs.is_empty() => Some(ClientCert::from_der(&certs[0])?),
            _ => None,
        };
        let metadata = request.metadata().clone();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.hello_timeout, inbound.message())
            .await
            .map_err(|_| {
                tracing::info!(?peer, "agent stream sent no hello in time");
                Status::deadline_exceeded(format!("no hello within {:?}", self.hello_timeout))
            })?;
        let hello = match first.map_err(inbound_error)? {
            Some(wire::AgentMessage {
                kind: Some(wire::agent_message::Kind::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::failed_precondition(
                    "the first message must be a hello",
                ));
            }
        };
        let key = validate::node_key(hello.identity.as_ref()).map_err(Status::invalid_argument)?;
        if let Err(refused) = self.auth.check_agent(
            &metadata,
            &hello.token,
            &key.tenant,
            &key.cluster,
            client_cert.as_ref(),
        ) {
            tracing::warn!(node = %key, ?peer, status = %refused.message(), "agent refused");
            return Err(refused);
        }
        self.monitor
            .hello(key.clone(), hello_from_wire(hello))
            .await
            .map_err(status)?;
        tracing::info!(node = %key, ?peer, "agent connected");

        let session = Session {
            guard: Connected {
                key,
                monitor: self.monitor.clone(),
            },
            max_clock_skew: self.max_clock_skew,
            inbound,
            stop: Box::pin(self.stop.clone().cancelled_owned()),
            submitting: None,
            pending: VecDeque::new(),
            ending: None,
            ended: false,
        };
        Ok(Response::new(Box::pin(session)))
    }
}

/// A batch handed to the monitor: its ack, once its commit completes.
type PendingAck = Pin<Box<dyn Future<Output = Result<wire::Ack, Status>> + Send>>;
/// A batch waiting for room in the monitor's queue.
type Submitting = Pin<Box<dyn Future<Output = Result<PendingAck, Status>> + Send>>;

/// One agent's stream after its Hello, seen as the stream of its acks. Polling it reads
/// the agent's batches, validates them, queues them on the monitor, and yields their acks
/// in batch order, each once its commit completed. It has no task and no channel of its
/// own: the HTTP/2 stream's task polls it, so an idle agent costs only this struct and
/// its buffers. Reading stops while `IN_FLIGHT` acks are pending, or while a batch waits
/// for room in the monitor's queue: both push back on the agent.
struct Session {
    guard: Connected,
    max_clock_skew: Duration,
    inbound: Streaming<wire::AgentMessage>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    submitting: Option<Submitting>,
    pending: VecDeque<PendingAck>,
    /// Set when nothing more is read: `Some(status)` is sent once the pending acks are out.
    ending: Option<Option<Status>>,
    ended: bool,
}

/// Tells the monitor the agent left, however the stream ends (also when the HTTP/2
/// stream is reset and the session is dropped unpolled).
struct Connected {
    key: NodeKey,
    monitor: Monitor,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.monitor.disconnected_soon(self.key.clone());
        tracing::info!(node = %self.key, "agent disconnected");
    }
}

impl Stream for Session {
    type Item = Result<wire::AggregatorMessage, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            // The oldest pending ack leaves first, as soon as its commit completed.
            if let Some(front) = this.pending.front_mut()
                && let Poll::Ready(ack) = front.as_mut().poll(cx)
            {
                this.pending.pop_front();
                return Poll::Ready(Some(match ack {
                    Ok(ack) => Ok(wire::AggregatorMessage {
                        kind: Some(wire::aggregator_message::Kind::Ack(ack)),
                    }),
                    Err(status) => {
                        // A failed commit ends the stream: the agent replays from there.
                        this.ended = true;
                        Err(status)
                    }
                }));
            }
            if let Some(submitting) = &mut this.submitting {
                match submitting.as_mut().poll(cx) {
                    Poll::Ready(Ok(ack)) => this.pending.push_back(ack),
                    Poll::Ready(Err(status)) => this.ending = Some(Some(status)),
                    Poll::Pending => return Poll::Pending,
                }
                this.submitting = None;
                continue;
            }
            if let Some(ending) = &mut this.ending {
                // Every batch submitted is acknowledged (or fails) before the stream ends.
                if !this.pending.is_empty() {
                    return Poll::Pending;
                }
                this.ended = true;
                return Poll::Ready(ending.take().map(Err));
            }
            if this.pending.len() >= IN_FLIGHT {
                return Poll::Pending;
            }
            if this.stop.as_mut().poll(cx).is_ready() {
                this.ending = Some(Some(Status::unavailable("the aggregator is shutting down")));
                continue;
            }
            match Pin::new(&mut this.inbound).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(wire::AgentMessage {
                    kind: Some(wire::agent_message::Kind::Batch(batch)),
                }))) => this.submitting = Some(this.submit(batch)),
                Poll::Ready(Some(Ok(_))) => {
                    this.ending = Some(Some(Status::failed_precondition(
                        "only the first message may be a hello",
                    )));
                }
                Poll::Ready(None) => this.ending = Some(None),
                Poll::Ready(Some(Err(status))) => {
                    tracing::info!(node = %this.guard.key, %status, "agent stream broke");
                    this.ending = Some(Some(inbound_error(status)));
                }
            }
        }
    }
}

impl Session {
    /// Validates a batch and queues it on the monitor; the future resolves, once the
    /// monitor took it, to the future of its ack.
    fn submit(&self, batch: wire::SampleBatch) -> Submitting {
        let key = &self.guard.key;
        let now = Timestamp::now();
        let seq = batch.seq;
        let mut samples = Vec::with_capacity(batch.samples.len());
        let mut rejected = Vec::new();
        for (index, sample) in batch.samples.into_iter().enumerate() {
            match validate::sample(sample, now, self.max_clock_skew) {
                Ok(sample) => samples.push(sample),
                Err(rejection) => {
                    tracing::warn!(node = %key, seq, index, reason = rejection.reason, detail = %rejection.detail, "sample rejected");
                    rejected.push(wire::SampleRejection {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        reason: rejection.reason.to_owned(),
                        detail: rejection.detail,
                    });
                }
            }
        }
        let accepted = u32::try_from(samples.len()).unwrap_or(u32::MAX);
        let domain_batch = Batch {
            seq,
            samples,
            n_rejected: u32::try_from(rejected.len()).unwrap_or(u32::MAX),
            dropped_batches_total: batch.dropped_batches_total,
        };
        let monitor = self.guard.monitor.clone();
        let key = key.clone();
        Box::pin(async move {
            let committed = monitor.submit(key, domain_batch).await.map_err(status)?;
            let ack: PendingAck = Box::pin(async move {
                let applied = committed.await.map_err(status)?;
                Ok(wire::Ack {
                    seq,
                    accepted: if applied.duplicate { 0 } else { accepted },
                    rejected: if applied.duplicate {
                        Vec::new()
                    } else {
                        rejected
                    },
                    duplicate: applied.duplicate,
                })
            });
            Ok(ack)
        })
    }
}

/// What the agent is told when its own stream failed. tonic reports a message over the
/// size limit as OUT_OF_RANGE; gRPC's convention (and our protocol) is RESOURCE_EXHAUSTED.
fn inbound_error(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
}

fn hello_from_wire(hello: wire::Hello) -> Hello {
    let identity = hello.identity.unwrap_or_default();
    Hello {
        identity: NodeIdentity {
            service_instance_id: identity.service_instance_id,
            business_group: identity.business_group,
            cloud_service_name: identity.cloud_service_name,
            instance_class: identity.instance_class,
            labels: identity.labels.into_iter().collect(),
        },
        agent_version: hello.agent_version,
        probes: hello
            .probes
            .into_iter()
            .map(|probe| Probe {
                name: probe.name,
                interval: Duration::from_millis(probe.interval_ms),
            })
            .collect(),
        seq_epoch: hello.seq_epoch,
    }
}

fn status(error: MonitorError) -> Status {
    match error {
        MonitorError::Stopped => Status::unavailable(error.to_string()),
        MonitorError::Engine(_) => Status::failed_precondition(error.to_string()),
        MonitorError::Store(_) => Status::unavailable(error.to_string()),
    }
}
