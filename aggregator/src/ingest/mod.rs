//! The `Ingest` gRPC service: one stream per agent. Reads the Hello, then each batch:
//! validates its samples, has the monitor apply and persist it, and acknowledges it.
//! Rejected samples are summarised per reason, in the Ack and in one log line each.
//!
//! Batches of one stream are applied in order and acknowledged in order, each only once
//! its commit is durable. Up to `IN_FLIGHT` of a stream's batches may wait for their
//! commit at once (so a stream is not limited to one batch per fsync); past that the
//! stream is not read, which pushes back on that agent. Wire types stop here: the
//! monitor and engine see domain values only.

#[cfg(test)]
mod fuzz;
pub mod limits;
mod route;
pub mod validate;

pub use limits::Inbound;
pub use route::IngestRoute;

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use proto::v1 as wire;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Auth, ClientCert};
use crate::config::IngestConfig;
use crate::engine::Batch;
use crate::model::{NodeKey, Timestamp};
use crate::monitor::{Monitor, MonitorError};
use limits::{LimitedBatch, WireLimits};
use validate::{HelloLimits, Rejections, SampleLimits};

/// Batches of one stream applied but not yet durable (so not yet acknowledged); past
/// this the stream's reader waits.
const IN_FLIGHT: usize = 32;

#[derive(Debug, Clone)]
pub struct IngestService {
    monitor: Monitor,
    samples: SampleLimits,
    hellos: HelloLimits,
    wire: WireLimits,
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
        config: IngestConfig,
        auth: Auth,
        stop: CancellationToken,
    ) -> Self {
        Self {
            monitor,
            samples: SampleLimits::from_config(&config),
            hellos: HelloLimits::from_config(&config),
            wire: WireLimits::from_config(&config),
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

    /// What the codec counts before decoding (`IngestRoute`).
    pub(crate) fn wire_limits(&self) -> WireLimits {
        self.wire
    }

    /// One agent stream: the Hello, then the session of its batches.
    async fn serve<S>(&self, request: Request<S>) -> Result<Response<AckStream>, Status>
    where
        S: Stream<Item = Result<Inbound, Status>> + Send + 'static,
    {
        let peer = request.remote_addr();
        // The end-entity certificate comes first; the TLS layer has verified the chain.
        let client_cert = match request.peer_certs() {
            Some(certs) if !certs.is_empty() => Some(ClientCert::from_der(&certs[0])?),
            _ => None,
        };
        let metadata = request.metadata().clone();
        let mut inbound: InboundStream = Box::pin(request.into_inner());
        let first = tokio::time::timeout(self.hello_timeout, inbound.next())
            .await
            .map_err(|_| {
                tracing::info!(?peer, "agent stream sent no hello in time");
                Status::deadline_exceeded(format!("no hello within {:?}", self.hello_timeout))
            })?
            .transpose()
            .map_err(inbound_error)?;
        let mut hello = match first.map(Inbound::into_kind) {
            Some(Ok(Some(wire::agent_message::Kind::Hello(hello)))) => hello,
            Some(Err(Inbound::RefusedHello(why))) => return Err(Status::invalid_argument(why)),
            _ => {
                return Err(Status::failed_precondition(
                    "the first message must be a hello",
                ));
            }
        };
        let token = std::mem::take(&mut hello.token);
        let (key, hello) =
            validate::hello(hello, &self.hellos).map_err(Status::invalid_argument)?;
        if let Err(refused) = self.auth.check_agent(
            &metadata,
            &token,
            &key.tenant,
            &key.cluster,
            client_cert.as_ref(),
        ) {
            tracing::warn!(node = %key, ?peer, status = %refused.message(), "agent refused");
            return Err(refused);
        }
        self.monitor
            .hello(key.clone(), hello)
            .await
            .map_err(status)?;
        tracing::info!(node = %key, ?peer, "agent connected");

        let session = Session {
            guard: Connected {
                key,
                monitor: self.monitor.clone(),
            },
            limits: self.samples,
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

type AckStream = Pin<Box<dyn Stream<Item = Result<wire::AggregatorMessage, Status>> + Send>>;
/// An agent's messages, from the ingest codec (`IngestRoute`) or from the generated
/// server's prost codec (`Ingest`, which counts nothing before decoding).
type InboundStream = Pin<Box<dyn Stream<Item = Result<Inbound, Status>> + Send>>;

#[tonic::async_trait]
impl wire::ingest_server::Ingest for IngestService {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        request: Request<Streaming<wire::AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        self.serve(request.map(|inbound| {
            inbound.map(|message| message.map(|message| Inbound::Message(Box::new(message))))
        }))
        .await
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
    limits: SampleLimits,
    inbound: InboundStream,
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
        // A panic in here ends this stream only (`panics`).
        crate::panics::contained(|| self.poll_acks(cx))
    }
}

impl Session {
    fn poll_acks(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<wire::AggregatorMessage, Status>>> {
        let this = self;
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
            match this
                .inbound
                .as_mut()
                .poll_next(cx)
                .map_ok(Inbound::into_kind)
            {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(Ok(Some(wire::agent_message::Kind::Batch(batch)))))) => {
                    let samples = batch
                        .samples
                        .into_iter()
                        .enumerate()
                        .map(|(index, sample)| (u32::try_from(index).unwrap_or(u32::MAX), sample));
                    let refused = Rejections::default();
                    let (seq, dropped) = (batch.seq, batch.dropped_batches_total);
                    this.submitting = Some(this.submit(seq, dropped, samples, refused));
                }
                Poll::Ready(Some(Ok(Err(Inbound::Limited(limited))))) => {
                    let LimitedBatch {
                        seq,
                        dropped_batches_total,
                        samples,
                        refused,
                    } = limited;
                    this.submitting =
                        Some(this.submit(seq, dropped_batches_total, samples.into_iter(), refused));
                }
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

    /// Validates a batch's samples (with their indices in the batch, and those already
    /// refused undecoded) and queues them on the monitor; the future resolves, once the
    /// monitor took them, to the future of the batch's ack.
    fn submit(
        &self,
        seq: u64,
        dropped_batches_total: u64,
        batch: impl ExactSizeIterator<Item = (u32, wire::Sample)>,
        mut rejections: Rejections,
    ) -> Submitting {
        let now = Timestamp::now();
        let mut samples = Vec::with_capacity(batch.len());
        // The batch index of each sample in `samples`, to name those the monitor rejects.
        let mut indices = Vec::with_capacity(batch.len());
        for (index, sample) in batch {
            match validate::sample(sample, now, &self.limits) {
                Ok(sample) => {
                    samples.push(sample);
                    indices.push(index);
                }
                Err(rejection) => rejections.add(index, rejection),
            }
        }
        let domain_batch = Batch {
            seq,
            samples,
            n_rejected: u32::try_from(rejections.total()).unwrap_or(u32::MAX),
            dropped_batches_total,
        };
        let monitor = self.guard.monitor.clone();
        let key = self.guard.key.clone();
        Box::pin(async move {
            let committed = monitor
                .submit(key.clone(), domain_batch)
                .await
                .map_err(status)?;
            let ack: PendingAck = Box::pin(async move {
                let applied = committed.await.map_err(status)?;
                if applied.duplicate {
                    return Ok(wire::Ack {
                        seq,
                        accepted: 0,
                        rejected: Vec::new(),
                        duplicate: true,
                    });
                }
                let n_out_of_order = applied.out_of_order.len();
                let mut out_of_order = Rejections::default();
                for (position, rejection) in applied.out_of_order {
                    if let Some(index) = indices.get(position) {
                        out_of_order.add(*index, rejection);
                    }
                }
                let accepted = indices.len().saturating_sub(n_out_of_order);
                rejections.merge(out_of_order);
                log_rejections(&key, seq, &rejections);
                Ok(wire::Ack {
                    seq,
                    accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
                    rejected: rejections.to_wire(),
                    duplicate: false,
                })
            });
            Ok(ack)
        })
    }
}

/// One line per reason, however many samples it rejected.
fn log_rejections(key: &NodeKey, seq: u64, rejections: &Rejections) {
    for entry in rejections.iter() {
        tracing::warn!(
            node = %key,
            seq,
            reason = entry.reason,
            count = entry.count,
            indices = ?entry.indices,
            detail = %entry.detail,
            "samples rejected"
        );
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

fn status(error: MonitorError) -> Status {
    match error {
        MonitorError::Stopped => Status::unavailable(error.to_string()),
        MonitorError::Engine(_) | MonitorError::IssueNotOpen(_) => {
            Status::failed_precondition(error.to_string())
        }
        MonitorError::Store(_) => Status::unavailable(error.to_string()),
    }
}
