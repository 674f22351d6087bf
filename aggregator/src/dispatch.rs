//! Where committed events go: every integration that admits them and every operator
//! watching.
//!
//! Routing happens twice, on purpose. Inside the store's commit, `admitting` names the
//! integrations whose filters let an event through, and the store writes one outbox row
//! per (event, integration) in the same transaction (`outbox`). After the commit,
//! `publish` wakes those integrations' workers (`delivery`) and hands the events to
//! watchers. Each integration has its own worker, so a slow or dead sink never delays
//! another sink, nor the store that publishes (invariant 2). Policies when full:
//! - an integration's wake-up is a `Notify` holding at most one permit: when one is
//!   already pending, the new one is merged into it; the rows wait in the outbox, so
//!   nothing is lost however far behind a sink is;
//! - a watcher (WatchEvents) that falls behind the broadcast buffer loses the oldest
//!   events and is told so (DATA_LOSS), instead of holding everyone back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde_json::Value;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{EventSourceConfig, IntegrationConfig};
use crate::delivery::{RetryPolicy, Worker};
use crate::events::{Event, EventSource};
use crate::health::HealthPublisher;
use crate::model::{NodeKey, Sample, Severity};
use crate::outbox::Outbox;
use crate::telemetry::{self, TelemetryQueue, TelemetryWorker};

/// Events buffered for watchers.
const WATCH_BUFFER: usize = 4096;

/// What an integration lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Empty: issues and notifications.
    pub sources: Vec<EventSource>,
    /// Empty: every tenant.
    pub tenant: String,
    /// Empty: every cluster.
    pub clusters: Vec<String>,
    pub min_severity: Option<Severity>,
}

impl Filter {
    pub fn from_config(integration: &IntegrationConfig) -> Self {
        Self {
            sources: integration
                .source
                .iter()
                .map(|source| match source {
                    EventSourceConfig::Issues => EventSource::Issues,
                    EventSourceConfig::Notifications => EventSource::Notifications,
                    EventSourceConfig::Logs => EventSource::Logs,
                    EventSourceConfig::Metrics => EventSource::Metrics,
                    EventSourceConfig::Health => EventSource::Health,
                })
                .collect(),
            tenant: integration.tenant.clone().unwrap_or_default(),
            clusters: integration.clusters.clone(),
            min_severity: integration.min_severity,
        }
    }

    pub fn admits_source(&self, source: EventSource) -> bool {
        if self.sources.is_empty() {
            matches!(source, EventSource::Issues | EventSource::Notifications)
        } else {
            self.sources.contains(&source)
        }
    }

    pub fn admits_place(&self, tenant: &str, cluster: &str) -> bool {
        (self.tenant.is_empty() || self.tenant == tenant)
            && (self.clusters.is_empty() || self.clusters.iter().any(|c| c == cluster))
    }

    pub fn admits(&self, event: &Event) -> bool {
        self.admits_source(event.source())
            && self.admits_place(event.tenant(), event.cluster())
            && self.min_severity.is_none_or(|min| event.severity() >= min)
    }
}

/// The key an integration is known by inside the aggregator (its outbox rows, its
/// worker): its name, qualified by its tenant when it was created through the API for a
/// tenant, so that two tenants may each have an integration of the same name. Names
/// hold no `/` (config validation and the API refuse one), so keys cannot collide.
pub fn route_key(integration: &IntegrationConfig, from_api: bool) -> String {
    match integration.tenant.as_deref() {
        Some(tenant) if from_api && !tenant.is_empty() => {
            format!("{tenant}/{}", integration.name)
        }
        _ => integration.name.clone(),
    }
}

/// An integration as listed: its key, its settings and where it came from.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub config: IntegrationConfig,
    /// Created through the API (persisted in the database), not from the config file.
    pub from_api: bool,
}

impl Listed {
    /// The tenant the integration belongs to; "" for one of every tenant.
    pub fn tenant(&self) -> &str {
        self.config.tenant.as_deref().unwrap_or_default()
    }
}

#[derive(Debug)]
struct Route {
    /// `route_key`: what its outbox rows name.
    key: String,
    config: IntegrationConfig,
    /// Created through the API (persisted in the database), not from the config file.
    from_api: bool,
    filter: Filter,
    wake: Arc<Notify>,
    stop: CancellationToken,
    /// For logs/metrics integrations: their bounded queue (`telemetry`), and its
    /// receiving end until the worker starts.
    telemetry: Option<TelemetryQueue>,
    telemetry_records: Mutex<Option<mpsc::Receiver<Value>>>,
}

impl Route {
    fn new(config: IntegrationConfig, from_api: bool, stop: CancellationToken) -> Self {
        let filter = Filter::from_config(&config);
        let key = route_key(&config, from_api);
        let (telemetry, telemetry_records) = if filter.admits_source(EventSource::Logs)
            || filter.admits_source(EventSource::Metrics)
        {
            let (sender, records) = mpsc::channel(telemetry::QUEUE);
            let queue = TelemetryQueue {
                integration: key.clone(),
                sender,
                dropped: Arc::default(),
            };
            (Some(queue), Some(records))
        } else {
            (None, None)
        };
        Self {
            key,
            config,
            from_api,
            filter,
            wake: Arc::new(Notify::new()),
            stop,
            telemetry,
            telemetry_records: Mutex::new(telemetry_records),
        }
    }
}

/// Whether `integration` would clash with a route: the same name for the same tenant,
/// or the same key.
fn conflicts(routes: &[Route], integration: &IntegrationConfig, from_api: bool) -> bool {
    let key = route_key(integration, from_api);
    let tenant = integration.tenant.as_deref().unwrap_or_default();
    routes.iter().any(|route| {
        route.key == key
            || (route.config.name == integration.name
                && route.config.tenant.as_deref().unwrap_or_default() == tenant)
    })
}

/// Log and metrics records of one committed batch, ready to hand to their queues.
#[derive(Debug)]
pub struct TelemetryBatch {
    records: Vec<(TelemetryQueue, Value)>,
}

impl TelemetryBatch {
    /// Offers every record to its integration's queue; never waits.
    pub fn publish(self) {
        for (queue, record) in self.records {
            queue.offer(record);
        }
    }
}

#[derive(Debug)]
struct Inner {
    routes: RwLock<Vec<Route>>,
    /// Set once the store has opened the database (the outbox lives there).
    db_path: Mutex<Option<PathBuf>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Drop for Inner {
    /// The last handle is gone: workers deliver what is due and end.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The publishing side. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatch {
    inner: Arc<Inner>,
    watchers: broadcast::Sender<Arc<Event>>,
}

/// An integration could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("integration {0:?} exists already")]
    Exists(String),
    #[error("integration {0:?}: a name may not contain '/'")]
    Slash(String),
    #[error("integration {0:?} does not exist")]
    Unknown(String),
}

impl Dispatch {
    /// Routes for `integrations`. Their workers start on `tasks` once the store has
    /// opened the database (`attach`); they end once every `Dispatch` handle is dropped
    /// and what is due is delivered.
    pub fn start(integrations: &[IntegrationConfig], tasks: &TaskTracker) -> Self {
        let stop = CancellationToken::new();
        let routes = integrations
            .iter()
            .map(|integration| Route::new(integration.clone(), false, stop.child_token()))
            .collect();
        let (watchers, _) = broadcast::channel(WATCH_BUFFER);
        Self {
            inner: Arc::new(Inner {
                routes: RwLock::new(routes),
                db_path: Mutex::new(None),
                tasks: tasks.clone(),
                stop,
            }),
            watchers,
        }
    }

    /// The database is open and migrated: add the integrations created through the API,
    /// then start every integration's worker.
    pub fn attach(&self, db_path: &Path) {
        *self
            .inner
            .db_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(db_path.to_owned());
        self.restore_api_integrations(db_path);
        let routes = self
            .inner
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for route in routes.iter() {
            self.spawn_worker(route, db_path);
        }
    }

    fn spawn_worker(&self, route: &Route, db_path: &Path) {
        let records = route
            .telemetry_records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let (Some(queue), Some(records)) = (&route.telemetry, records) {
            let worker = TelemetryWorker {
                queue: queue.clone(),
                records,
                sink: route.config.sink.clone(),
                timeout: route.config.timeout,
                retry: RetryPolicy {
                    min: route.config.backoff_min,
                    max: route.config.backoff_max,
                },
                stop: route.stop.clone(),
            };
            self.inner.tasks.spawn(worker.run());
        }
        if route.filter.admits_source(EventSource::Health) {
            let (interval, platform) = route.config.sink.health_settings();
            let publisher = HealthPublisher {
                integration: route.key.clone(),
                filter: route.filter.clone(),
                sink: route.config.sink.clone(),
                timeout: route.config.timeout,
                interval,
                platform,
                db_path: db_path.to_owned(),
                events: self.subscribe(),
                stop: route.stop.clone(),
            };
            self.inner.tasks.spawn(publisher.run());
        }
        let outboxed = route.filter.admits_source(EventSource::Issues)
            || route.filter.admits_source(EventSource::Notifications);
        if !outboxed {
            return;
        }
        let worker = Worker {
            integration: route.key.clone(),
            sink: route.config.sink.clone(),
            timeout: route.config.timeout,
            retry: RetryPolicy {
                min: route.config.backoff_min,
                max: route.config.backoff_max,
            },
            db_path: db_path.to_owned(),
            wake: Arc::clone(&route.wake),
            stop: route.stop.clone(),
        };
        self.inner.tasks.spawn(worker.run());
    }

    fn restore_api_integrations(&self, db_path: &Path) {
        let saved = Outbox::open(db_path).and_then(|outbox| outbox.integrations());
        let saved = match saved {
            Ok(saved) => saved,
            Err(error) => {
                tracing::error!(%error, "cannot read the integrations created through the API");
                return;
            }
        };
        let mut routes = self
            .inner
            .routes
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for (key, config) in saved {
            match serde_json::from_str::<IntegrationConfig>(&config) {
                Ok(integration) if !conflicts(&routes, &integration, true) => {
                    routes.push(Route::new(integration, true, self.inner.stop.child_token()));
                }
                Ok(_) => {
                    tracing::error!(integration = %key, "an integration of the config file has the same name; the API's is ignored")
                }
                Err(error) => {
                    tracing::error!(integration = %key, %error, "a saved integration does not parse; ignored")
                }
            }
        }
    }

    /// Where the database (and its outbox) is, once the store has opened it.
    pub fn db_path(&self) -> Option<PathBuf> {
        self.inner
            .db_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds an integration at run time (the API); its worker starts at once. Its name
    /// must be new for its tenant (and its key new at all).
    pub fn add(&self, integration: IntegrationConfig) -> Result<(), RouteError> {
        if integration.name.contains('/') {
            return Err(RouteError::Slash(integration.name));
        }
        let mut routes = self
            .inner
            .routes
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if conflicts(&routes, &integration, true) {
            return Err(RouteError::Exists(integration.name));
        }
        let route = Route::new(integration, true, self.inner.stop.child_token());
        if let Some(db_path) = self
            .inner
            .db_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_deref()
        {
            self.spawn_worker(&route, db_path);
        }
        routes.push(route);
        Ok(())
    }

    /// Removes the integration with this `route_key`; its worker stops after the attempt
    /// in flight.
    pub fn remove(&self, key: &str) -> Result<IntegrationConfig, RouteError> {
        let mut routes = self
            .inner
            .routes
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let index = routes
            .iter()
            .position(|route| route.key == key)
            .ok_or_else(|| RouteError::Unknown(key.to_owned()))?;
        let route = routes.remove(index);
        route.stop.cancel();
        Ok(route.config)
    }

    /// The integrations, in the order they were added.
    pub fn integrations(&self) -> Vec<Listed> {
        self.inner
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|route| Listed {
                key: route.key.clone(),
                config: route.config.clone(),
                from_api: route.from_api,
            })
            .collect()
    }

    /// The log and metrics records of a batch's samples for the logs/metrics
    /// integrations that admit them; `None` when none does (the common case costs
    /// nothing). Built before the batch is applied, published after its commit.
    pub fn telemetry(&self, node: &NodeKey, samples: &[Sample]) -> Option<TelemetryBatch> {
        let routes = self
            .inner
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let queues: Vec<(&TelemetryQueue, &Filter)> = routes
            .iter()
            .filter_map(|route| Some((route.telemetry.as_ref()?, &route.filter)))
            .filter(|(_, filter)| filter.admits_place(&node.tenant, &node.cluster))
            .collect();
        if queues.is_empty() {
            return None;
        }
        let mut records = Vec::new();
        for (is_log, record) in telemetry::records(node, samples) {
            let source = if is_log {
                EventSource::Logs
            } else {
                EventSource::Metrics
            };
            for (queue, filter) in &queues {
                if filter.admits_source(source) {
                    records.push(((*queue).clone(), record.clone()));
                }
            }
        }
        Some(TelemetryBatch { records })
    }

    /// The keys of the integrations that admit `event`: the store writes an outbox row
    /// for each.
    pub fn admitting(&self, event: &Event) -> Vec<String> {
        self.inner
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|route| route.filter.admits(event))
            .map(|route| route.key.clone())
            .collect()
    }

    /// Hands committed events to watchers and wakes the integrations that admit them.
    /// Never waits.
    pub fn publish(&self, events: Vec<Event>) {
        {
            let routes = self
                .inner
                .routes
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for route in routes.iter() {
                if events.iter().any(|event| route.filter.admits(event)) {
                    route.wake.notify_one();
                }
            }
        }
        for event in events {
            // No watcher is not an error.
            let _ = self.watchers.send(Arc::new(event));
        }
    }

    /// A live feed of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.watchers.subscribe()
    }
}
