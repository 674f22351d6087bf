//! The task that owns the `Engine`: it applies hellos and batches in arrival order, ticks
//! the clock every second, hands what the engine decided to the store, and answers the
//! API's questions about nodes.
//!
//! A batch's acknowledgement is released only after the store has committed the batch's
//! seq and every event it caused (invariant 4). The command queue is bounded: when it is
//! full, ingest waits, which pushes back on the agents' streams.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::dispatch::Dispatch;
use crate::engine::{Batch, Engine, EngineError, Hello};
use crate::events::Event;
use crate::ingest::validate::Rejection;
use crate::issue::Issue;
use crate::model::{NodeKey, Reading, Timestamp};
use crate::store::{NodeProgress, NodeRow, Store, Write};

/// Commands waiting for the monitor; past this, senders wait.
const COMMAND_QUEUE: usize = 1024;
/// How often time-driven rules (silence, reminders) are evaluated.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("the aggregator is shutting down")]
    Stopped,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("not persisted: {0}")]
    Store(String),
    #[error("issue {0}: not open")]
    IssueNotOpen(String),
}

/// How a batch was taken.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    pub duplicate: bool,
    /// The samples not applied because they were not after the node's previous sample of
    /// their kind: (position in the batch's `samples`, why).
    pub out_of_order: Vec<(usize, Rejection)>,
}

type Query = Box<dyn FnOnce(&Engine) + Send>;

enum Command {
    Hello {
        key: NodeKey,
        hello: Hello,
        done: oneshot::Sender<Result<(), MonitorError>>,
    },
    Batch {
        key: NodeKey,
        batch: Batch,
        done: oneshot::Sender<Result<Applied, MonitorError>>,
    },
    Disconnected {
        key: NodeKey,
    },
    CloseIssue {
        id: String,
        operator: String,
        reason: String,
        done: oneshot::Sender<Result<Issue, MonitorError>>,
    },
    Query(Query),
}

/// The handle ingest and the API use. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Monitor {
    commands: mpsc::Sender<Command>,
}

impl Monitor {
    /// Starts the monitor task; it ends when `stop` is cancelled or every handle is gone,
    /// after handing its last writes to the store.
    pub fn spawn(
        engine: Engine,
        store: Store,
        stop: CancellationToken,
    ) -> (Monitor, tokio::task::JoinHandle<()>) {
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
        let task = tokio::spawn(run(engine, store, queue, stop));
        (Monitor { commands }, task)
    }

    /// An agent said hello; the node's record is persisted before this returns.
    pub async fn hello(&self, key: NodeKey, hello: Hello) -> Result<(), MonitorError> {
        let (done, outcome) = oneshot::channel();
        self.send(Command::Hello { key, hello, done }).await?;
        outcome.await.map_err(|_| MonitorError::Stopped)?
    }

    /// Applies a batch; returns once it is persisted and may be acknowledged.
    pub async fn apply(&self, key: NodeKey, batch: Batch) -> Result<Applied, MonitorError> {
        self.submit(key, batch).await?.await
    }

    /// Queues a batch behind those already queued (the monitor applies them in order)
    /// and returns at once: the returned future completes once the batch is persisted
    /// and may be acknowledged. Lets one stream have several batches in flight while
    /// keeping acks after commits.
    pub async fn submit(
        &self,
        key: NodeKey,
        batch: Batch,
    ) -> Result<impl Future<Output = Result<Applied, MonitorError>> + Send + 'static, MonitorError>
    {
        let (done, outcome) = oneshot::channel();
        self.send(Command::Batch { key, batch, done }).await?;
        Ok(async move { outcome.await.map_err(|_| MonitorError::Stopped)? })
    }

    /// An agent's stream ended.
    pub async fn disconnected(&self, key: NodeKey) {
        // During shutdown there is no one left to tell; that is fine.
        let _ = self.commands.send(Command::Disconnected { key }).await;
    }

    /// An agent's stream ended, told from where nothing can wait (a drop): queued at
    /// once, or by a short task when the queue is full.
    pub fn disconnected_soon(&self, key: NodeKey) {
        match self.commands.try_send(Command::Disconnected { key }) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                let commands = self.commands.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = commands.send(command).await;
                    });
                }
            }
        }
    }

    /// An operator closes the open issue `id`; returns the closed issue once its `closed`
    /// event is persisted.
    pub async fn close_issue(
        &self,
        id: String,
        operator: String,
        reason: String,
    ) -> Result<Issue, MonitorError> {
        let (done, outcome) = oneshot::channel();
        self.send(Command::CloseIssue {
            id,
            operator,
            reason,
            done,
        })
        .await?;
        outcome.await.map_err(|_| MonitorError::Stopped)?
    }

    /// Runs `read` against the engine's current state.
    pub async fn query<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Engine) -> T + Send + 'static,
    ) -> Result<T, MonitorError> {
        let (reply, answer) = oneshot::channel();
        let query: Query = Box::new(move |engine| {
            let _ = reply.send(read(engine));
        });
        self.send(Command::Query(query)).await?;
        answer.await.map_err(|_| MonitorError::Stopped)
    }

    async fn send(&self, command: Command) -> Result<(), MonitorError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| MonitorError::Stopped)
    }
}

async fn run(
    mut engine: Engine,
    store: Store,
    mut queue: mpsc::Receiver<Command>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let write = tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {
                let events = engine.tick(Timestamp::now());
                if events.is_empty() {
                    continue;
                }
                Write { nodes: Vec::new(), events, done: None }
            }
            command = queue.recv() => match command {
                None => break,
                Some(command) => match handle(&mut engine, command, store.dispatch()) {
                    Some(write) => write,
                    None => continue,
                },
            },
        };
        if store.write(write).await.is_err() {
            tracing::error!("store writer stopped; the monitor stops too");
            break;
        }
    }
}

/// Applies one command; returns what must be persisted, if anything.
fn handle(engine: &mut Engine, command: Command, dispatch: &Dispatch) -> Option<Write> {
    let now = Timestamp::now();
    match command {
        Command::Hello { key, hello, done } => {
            let events = engine.hello(&key, hello, now);
            let node = engine.node(&key).cloned();
            Some(Write {
                nodes: node.into_iter().map(NodeRow::from).collect(),
                events,
                done: Some(Box::new(move |result| {
                    let _ =
                        done.send(result.map_err(|error| MonitorError::Store(error.to_string())));
                })),
            })
        }
        Command::Batch {
            key,
            mut batch,
            done,
        } => {
            let out_of_order = take_out_of_order(engine, &key, &mut batch);
            // Log lines and host samples for logs/metrics integrations, handed over
            // once the batch is committed (and not for a replayed batch).
            let telemetry = dispatch.telemetry(&key, &batch.samples);
            let n_samples = batch.samples.len();
            let first_host = engine
                .node(&key)
                .is_some_and(|node| node.latest_host.is_none());
            match engine.apply_batch(&key, batch, now) {
                Err(error) => {
                    let _ = done.send(Err(error.into()));
                    None
                }
                Ok(outcome) => {
                    let node = engine.node(&key);
                    let latest_host = node.and_then(|node| node.latest_host.as_ref());
                    if let (true, Some((_, host))) = (first_host, latest_host) {
                        log_first_host_sample(&key, host);
                    }
                    let applied = Applied {
                        duplicate: outcome.duplicate,
                        out_of_order,
                    };
                    // Only the seq and counters: identity and probes were written by the
                    // Hello, so a batch does not copy them.
                    let progress = node.map(|node| NodeProgress::of(node, n_samples));
                    Some(Write {
                        nodes: progress.into_iter().map(NodeRow::Progress).collect(),
                        events: outcome.events,
                        done: Some(Box::new(move |result| {
                            if let (Ok(()), false, Some(telemetry)) =
                                (result, applied.duplicate, telemetry)
                            {
                                telemetry.publish();
                            }
                            let result = result
                                .map(|()| applied)
                                .map_err(|error| MonitorError::Store(error.to_string()));
                            let _ = done.send(result);
                        })),
                    })
                }
            }
        }
        Command::Disconnected { key } => {
            engine.disconnected(&key);
            None
        }
        Command::CloseIssue {
            id,
            operator,
            reason,
            done,
        } => {
            let Some(event) = engine.close_issue(&id, &operator, &reason, now) else {
                let _ = done.send(Err(MonitorError::IssueNotOpen(id)));
                return None;
            };
            let closed = event.issue.clone();
            Some(Write {
                nodes: Vec::new(),
                events: vec![Event::Issue(event)],
                done: Some(Box::new(move |result| {
                    let result = result
                        .map(|()| closed)
                        .map_err(|error| MonitorError::Store(error.to_string()));
                    let _ = done.send(result);
                })),
            })
        }
        Command::Query(read) => {
            read(engine);
            None
        }
    }
}

/// Takes out of a new batch the host samples, gossip views and Elasticsearch check results
/// not after the node's previous one of their kind, and says why. The engine would ignore them (a window moves
/// only forward, the latest view stays the latest), so they are rejected as `out_of_order`
/// instead of acknowledged as applied. Decided here, per node and sample kind, before the
/// rules see the batch; log lines have no order to keep. A replayed seq is left whole: the
/// engine ignores it as a duplicate.
pub(crate) fn take_out_of_order(
    engine: &Engine,
    key: &NodeKey,
    batch: &mut Batch,
) -> Vec<(usize, Rejection)> {
    let Some(node) = engine.node(key) else {
        return Vec::new();
    };
    if batch.seq <= node.applied_seq {
        return Vec::new();
    }
    let mut latest_host = node.latest_host.as_ref().map(|(time, _)| *time);
    let mut latest_gossip = node.latest_gossip.as_ref().map(|(time, _)| *time);
    let mut latest_es = node.latest_es;
    let mut rejected = Vec::new();
    let mut position = 0;
    batch.samples.retain(|sample| {
        let (latest, kind) = match sample.reading {
            Reading::Host(_) => (&mut latest_host, "host sample"),
            Reading::Gossip(_) => (&mut latest_gossip, "gossip view"),
            Reading::Elasticsearch(ref es) => {
                (&mut latest_es[es.check.index()], es.check.probe_name())
            }
            Reading::Log { .. } => (&mut None, ""),
        };
        let keep = match *latest {
            Some(previous) if sample.time <= previous => {
                rejected.push((
                    position,
                    Rejection::new(
                        "out_of_order",
                        format!(
                            "time_unix_ms: {} is not after the node's previous {kind} ({})",
                            sample.time.to_rfc3339(),
                            previous.to_rfc3339()
                        ),
                    ),
                ));
                false
            }
            _ => {
                if !kind.is_empty() {
                    *latest = Some(sample.time);
                }
                true
            }
        };
        position += 1;
        keep
    });
    batch.n_rejected = batch
        .n_rejected
        .saturating_add(u32::try_from(rejected.len()).unwrap_or(u32::MAX));
    rejected
}

/// Disks named in the line of a node's first host sample.
const LOGGED_DISKS: usize = 8;

/// Operators starting out see each node's values as soon as they arrive.
fn log_first_host_sample(key: &NodeKey, host: &crate::model::HostReading) {
    // A few disks make the point; a node may report up to ingest.max_disks_per_sample.
    let mut disks: Vec<String> = host
        .disks
        .iter()
        .take(LOGGED_DISKS)
        .map(|disk| format!("{} {:.1} %", disk.mount, disk.used_percent))
        .collect();
    if host.disks.len() > LOGGED_DISKS {
        disks.push(format!("and {} more", host.disks.len() - LOGGED_DISKS));
    }
    tracing::info!(
        "node {key} reporting: core load {:.2} (load1 {:.2}, {} physical cores), memory {:.1} % used, disks: {}",
        host.core_load(),
        host.load1,
        host.physical_cores,
        host.memory_used_percent,
        if disks.is_empty() {
            "none".to_owned()
        } else {
            disks.join(", ")
        },
    );
}
