//! Where committed events go: every integration's queue and every operator watching.
//!
//! Each integration has its own bounded queue and its own worker, so a slow sink never
//! delays another sink, nor the store that publishes. Policies when full:
//! - an integration's queue: the event is dropped for that integration and counted, with
//!   an error in the log (the persistent, retrying outbox replaces this in a later issue);
//! - a watcher (WatchEvents) that falls behind the broadcast buffer loses the oldest
//!   events and is told so (DATA_LOSS), instead of holding everyone back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{broadcast, mpsc};
use tokio_util::task::TaskTracker;

use crate::config::{EventSourceConfig, IntegrationConfig};
use crate::events::{Event, EventSource};
use crate::model::Severity;
use crate::sink::{self, Sink, SinkConfig};

/// Events buffered per integration before its worker must catch up.
const INTEGRATION_QUEUE: usize = 4096;
/// Events buffered for watchers.
const WATCH_BUFFER: usize = 4096;

/// What an integration lets through.
#[derive(Debug, Clone)]
struct Filter {
    sources: Vec<EventSource>,
    min_severity: Option<Severity>,
}

impl Filter {
    fn admits(&self, event: &Event) -> bool {
        (self.sources.is_empty() || self.sources.contains(&event.source()))
            && self.min_severity.is_none_or(|min| event.severity() >= min)
    }
}

#[derive(Debug)]
struct Route {
    name: String,
    filter: Filter,
    queue: mpsc::Sender<Arc<Event>>,
    dropped: AtomicU64,
}

/// The publishing side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatch {
    routes: Arc<Vec<Route>>,
    watchers: broadcast::Sender<Arc<Event>>,
}

impl Dispatch {
    /// Starts one worker per integration on `tasks`. The workers end once every
    /// `Dispatch` handle is dropped and their queues are drained.
    pub fn start(integrations: &[IntegrationConfig], tasks: &TaskTracker) -> Self {
        let mut routes = Vec::with_capacity(integrations.len());
        for integration in integrations {
            let (queue, events) = mpsc::channel(INTEGRATION_QUEUE);
            let sink = match integration.sink {
                SinkConfig::Log => sink::log::LogSink::stdout(),
            };
            tasks.spawn(deliver(integration.name.clone(), sink, events));
            let sources = integration
                .source
                .iter()
                .map(|source| match source {
                    EventSourceConfig::Issues => EventSource::Issues,
                    EventSourceConfig::Notifications => EventSource::Notifications,
                })
                .collect();
            routes.push(Route {
                name: integration.name.clone(),
                filter: Filter {
                    sources,
                    min_severity: integration.min_severity,
                },
                queue,
                dropped: AtomicU64::new(0),
            });
        }
        let (watchers, _) = broadcast::channel(WATCH_BUFFER);
        Self {
            routes: Arc::new(routes),
            watchers,
        }
    }

    /// Hands committed events to every integration that admits them and to watchers.
    /// Never waits.
    pub fn publish(&self, events: Vec<Event>) {
        for event in events {
            let event = Arc::new(event);
            for route in self
                .routes
                .iter()
                .filter(|route| route.filter.admits(&event))
            {
                if let Err(mpsc::error::TrySendError::Full(_)) =
                    route.queue.try_send(Arc::clone(&event))
                {
                    let dropped = route.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::error!(
                        integration = %route.name,
                        event = event.id(),
                        dropped,
                        "integration queue full: event not delivered to it"
                    );
                }
            }
            // No watcher is not an error.
            let _ = self.watchers.send(event);
        }
    }

    /// A live feed of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.watchers.subscribe()
    }
}

async fn deliver(name: String, mut sink: impl Sink, mut events: mpsc::Receiver<Arc<Event>>) {
    while let Some(event) = events.recv().await {
        if let Err(error) = sink.deliver(&event).await {
            tracing::error!(integration = %name, event = event.id(), %error, "delivery failed");
        }
    }
}
