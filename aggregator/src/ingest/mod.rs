//! The `Ingest` gRPC service: one stream per agent. Reads the Hello, then each batch:
//! validates its samples, has the monitor apply and persist it, and acknowledges it.
//!
//! Batches of one stream are applied in order and acknowledged in order, each only once
//! its commit is durable. Up to `IN_FLIGHT` of a stream's batches may wait for their
//! commit at once (so a stream is not limited to one batch per fsync); past that the
//! stream is not read, which pushes back on that agent. Wire types stop here: the
//! monitor and engine see domain values only.

pub mod validate;

use std::pin::Pin;
use std::time::Duration;

use proto::v1 as wire;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Auth, ClientCert};
use crate::engine::{Batch, Hello};
use crate::model::{NodeIdentity, NodeKey, Probe, Timestamp};
use crate::monitor::{Monitor, MonitorError};

/// Acks buffered towards one agent.
const ACK_BUFFER: usize = 64;
/// Batches of one stream applied but not yet durable (so not yet acknowledged); past
/// this the stream's reader waits.
const IN_FLIGHT: usize = 32;

#[derive(Debug, Clone)]
pub struct IngestService {
    monitor: Monitor,
    max_clock_skew: Duration,
    auth: Auth,
    stop: CancellationToken,
}

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
        }
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
        let hello = match inbound.message().await.map_err(inbound_error)? {
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

        let (acks, outbound) = mpsc::channel(ACK_BUFFER);
        let session = Session {
            key,
            monitor: self.monitor.clone(),
            max_clock_skew: self.max_clock_skew,
            acks,
        };
        tokio::spawn(session.run(inbound, self.stop.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }
}

/// One agent's stream after its Hello.
struct Session {
    key: NodeKey,
    monitor: Monitor,
    max_clock_skew: Duration,
    acks: mpsc::Sender<Result<wire::AggregatorMessage, Status>>,
}

/// A batch handed to the monitor: its ack, once its commit completes.
type PendingAck = std::pin::Pin<Box<dyn Future<Output = Result<wire::Ack, Status>> + Send>>;

impl Session {
    async fn run(self, mut inbound: Streaming<wire::AgentMessage>, stop: CancellationToken) {
        // Acks leave in batch order, each after its commit: a second task awaits the
        // pending acks one by one while this one reads and submits further batches.
        let (pending, mut pending_acks) = mpsc::channel::<PendingAck>(IN_FLIGHT);
        let acks = self.acks.clone();
        let acker = tokio::spawn(async move {
            while let Some(ack) = pending_acks.recv().await {
                let message = ack.await.map(|ack| wire::AggregatorMessage {
                    kind: Some(wire::aggregator_message::Kind::Ack(ack)),
                });
                let failed = message.is_err();
                if acks.send(message).await.is_err() || failed {
                    return false;
                }
            }
            true
        });
        let ending = loop {
            let message = tokio::select! {
                () = stop.cancelled() => break Some(Status::unavailable("the aggregator is shutting down")),
                message = inbound.message() => message,
            };
            let batch = match message {
                Ok(Some(wire::AgentMessage {
                    kind: Some(wire::agent_message::Kind::Batch(batch)),
                })) => batch,
                Ok(Some(_)) => {
                    break Some(Status::failed_precondition(
                        "only the first message may be a hello",
                    ));
                }
                Ok(None) => break None,
                Err(status) => {
                    tracing::info!(node = %self.key, %status, "agent stream broke");
                    break Some(inbound_error(status));
                }
            };
            match self.submit(batch).await {
                Ok(ack) => {
                    if pending.send(ack).await.is_err() {
                        // The acker stopped: the agent left or a commit failed.
                        break None;
                    }
                }
                Err(status) => break Some(status),
            }
        };
        // Every batch submitted is acknowledged (or fails) before the stream ends.
        drop(pending);
        let acker_ok = acker.await.unwrap_or(false);
        if let Some(status) = ending.filter(|_| acker_ok) {
            let _ = self.acks.send(Err(status)).await;
        }
        self.monitor.disconnected(self.key.clone()).await;
        tracing::info!(node = %self.key, "agent disconnected");
    }

    /// Validates a batch and queues it on the monitor; the returned future is its ack.
    async fn submit(&self, batch: wire::SampleBatch) -> Result<PendingAck, Status> {
        let now = Timestamp::now();
        let mut samples = Vec::with_capacity(batch.samples.len());
        let mut rejected = Vec::new();
        for (index, sample) in batch.samples.iter().enumerate() {
            match validate::sample(sample, now, self.max_clock_skew) {
                Ok(sample) => samples.push(sample),
                Err(rejection) => {
                    tracing::warn!(node = %self.key, seq = batch.seq, index, reason = rejection.reason, detail = %rejection.detail, "sample rejected");
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
            seq: batch.seq,
            samples,
            n_rejected: u32::try_from(rejected.len()).unwrap_or(u32::MAX),
            dropped_batches_total: batch.dropped_batches_total,
        };
        let committed = self
            .monitor
            .submit(self.key.clone(), domain_batch)
            .await
            .map_err(status)?;
        let seq = batch.seq;
        Ok(Box::pin(async move {
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
        }))
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
