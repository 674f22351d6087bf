//! Persistence in SQLite (WAL): nodes with their last applied seq, issues, issue events
//! and notifications.
//!
//! One writer thread owns the write connection and commits whatever has queued up in one
//! transaction (group commit), then completes each write and hands the committed events
//! to `dispatch`: an event reaches sinks and watchers only once it is durable, and a
//! batch is acknowledged to its agent only once what it decided is durable. Reads use
//! their own connection on the blocking pool. Async threads never touch SQLite.
//!
//! The write queue is bounded; a full queue makes the monitor wait, which makes ingest
//! wait, which pushes back on the agents' streams.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::mpsc;

use crate::dispatch::Dispatch;
use crate::engine::NodeState;
use crate::events::{Event, Notification};
use crate::explain::Explanation;
use crate::issue::{Issue, IssueEvent, IssueEventKind, IssueKey, IssueState, UpdateReason};
use crate::model::{
    EsCheck, NodeIdentity, NodeKey, Probe, Resource, ResourceKind, Severity, Subject, Timestamp,
};
use crate::rules::RuleName;

/// Writes waiting for the writer thread; past this the monitor waits.
const WRITE_QUEUE: usize = 1024;
/// At most this many writes go into one transaction.
const GROUP_COMMIT_MAX: usize = 512;
/// The shortest time between the starts of two commits. A write arriving after a quiet
/// spell is committed at once; under load, writes gather for what is left of this (and
/// during the previous commit's fsync), so one fsync covers every batch that arrived
/// meanwhile. Bounds the commits (and fsyncs) to 100 a second however many agents
/// report, and costs an ack at most this much latency.
const COMMIT_INTERVAL: Duration = Duration::from_millis(10);
/// Queued writes applying at least this many samples are committed without waiting for
/// the interval: a commit's fixed cost (~200 µs of fsync and SQLite work here) is then
/// under a microsecond a sample, and waiting would only hold back a bulk sender's acks.
const COMMIT_AT_ONCE_SAMPLES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store: the writer has stopped")]
    Closed,
    #[error("store: {what}: {detail}")]
    Corrupt { what: String, detail: String },
}

/// What survives a restart.
#[derive(Debug, Default)]
pub struct Restored {
    pub nodes: Vec<NodeState>,
    pub open_issues: Vec<Issue>,
}

/// Told the outcome of a write once its transaction committed or failed.
pub type WriteDone = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

/// One unit of work for the writer: node rows to upsert and events to record, all in
/// one transaction; `done` learns the outcome after the commit.
pub struct Write {
    pub nodes: Vec<NodeRow>,
    pub events: Vec<Event>,
    pub done: Option<WriteDone>,
}

/// What a write changes in a node's row.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeRow {
    /// The whole row: a Hello (identity, probes, seq epoch may have changed).
    Full(Box<NodeState>),
    /// A batch: only the seq, the counters and last-seen move, so only they are written
    /// (the node's row exists: its Hello was committed before any of its batches).
    Progress(NodeProgress),
}

impl NodeRow {
    fn key(&self) -> &NodeKey {
        match self {
            NodeRow::Full(node) => &node.key,
            NodeRow::Progress(progress) => &progress.key,
        }
    }
}

impl From<NodeState> for NodeRow {
    fn from(node: NodeState) -> Self {
        NodeRow::Full(Box::new(node))
    }
}

/// The part of a node's row a batch moves.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeProgress {
    pub key: NodeKey,
    pub applied_seq: u64,
    pub last_seen: Option<Timestamp>,
    pub dropped_batches_total: u64,
    pub batches_applied_total: u64,
    pub duplicate_batches_total: u64,
    pub skipped_seqs_total: u64,
    /// How many samples the batch applied. Not stored: a group of writes heavy with
    /// samples commits without waiting for `COMMIT_INTERVAL`.
    pub batch_samples: usize,
}

impl NodeProgress {
    /// The node's row after a batch of `batch_samples` samples.
    pub fn of(node: &NodeState, batch_samples: usize) -> Self {
        Self {
            key: node.key.clone(),
            applied_seq: node.applied_seq,
            last_seen: node.last_seen,
            dropped_batches_total: node.dropped_batches_total,
            batches_applied_total: node.batches_applied_total,
            duplicate_batches_total: node.duplicate_batches_total,
            skipped_seqs_total: node.skipped_seqs_total,
            batch_samples,
        }
    }
}

impl Write {
    /// The samples the write's batches applied.
    fn n_samples(&self) -> usize {
        self.nodes
            .iter()
            .map(|row| match row {
                NodeRow::Progress(progress) => progress.batch_samples,
                NodeRow::Full(_) => 0,
            })
            .sum()
    }
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write")
            .field("nodes", &self.nodes.len())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

/// Filters for `list_issues`; empty strings match anything.
#[derive(Debug, Clone, Default)]
pub struct IssueFilter {
    pub state: Option<IssueState>,
    pub min_severity: Option<Severity>,
    pub tenant: String,
    pub cluster: String,
    pub node: String,
    pub rule: String,
    pub limit: u32,
    /// Paging: only issues after this (opened_ms, id) in the list's order (newest first).
    pub before: Option<(i64, String)>,
}

/// A persisted issue event (the issue is fetched alongside).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredIssueEvent {
    pub id: String,
    pub kind: IssueEventKind,
    pub time: Timestamp,
    pub severity: Severity,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
    pub remedy: String,
}

/// The handle: queue writes, run reads.
#[derive(Debug, Clone)]
pub struct Store {
    writes: mpsc::Sender<Write>,
    reader: Arc<Mutex<Connection>>,
    /// Where committed writes are published; the monitor routes logs and metrics
    /// through it too.
    dispatch: Dispatch,
}

/// The writer thread; joined on shutdown once every `Store` handle is dropped.
#[derive(Debug)]
pub struct StoreWriter {
    thread: JoinHandle<()>,
}

impl StoreWriter {
    /// Waits for queued writes to be committed.
    pub fn join(self) {
        if self.thread.join().is_err() {
            tracing::error!("store writer thread panicked");
        }
    }
}

impl Store {
    /// Opens (creating if needed) `data_dir/hostwatch.db` and loads what survives.
    pub fn open(
        data_dir: &Path,
        dispatch: Dispatch,
    ) -> Result<(Store, StoreWriter, Restored), StoreError> {
        let path = data_dir.join("hostwatch.db");
        let open = |path: &Path| {
            let connection = Connection::open(path).map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
            connection.busy_timeout(Duration::from_secs(5))?;
            connection.pragma_update(None, "journal_mode", "WAL")?;
            // FULL: a commit is on disk before the batch it covers is acknowledged.
            connection.pragma_update(None, "synchronous", "FULL")?;
            connection.pragma_update(None, "foreign_keys", "ON")?;
            Ok::<_, StoreError>(connection)
        };
        let mut writer = open(&path)?;
        migrate(&mut writer)?;
        let restored = restore(&writer)?;
        let reader = open(&path)?;
        // The outbox's tables exist now: integrations' delivery workers may start.
        dispatch.attach(&path);

        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn({
                let dispatch = dispatch.clone();
                move || write_loop(writer, queue, dispatch)
            })
            .map_err(|error| StoreError::Corrupt {
                what: "writer thread".into(),
                detail: error.to_string(),
            })?;
        Ok((
            Store {
                writes,
                reader: Arc::new(Mutex::new(reader)),
                dispatch,
            },
            StoreWriter { thread },
            restored,
        ))
    }

    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }

    /// Queues a write; waits while the queue is full.
    pub async fn write(&self, write: Write) -> Result<(), StoreError> {
        self.writes
            .send(write)
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Issues, newest first.
    pub async fn list_issues(&self, filter: IssueFilter) -> Result<Vec<Issue>, StoreError> {
        self.read(move |connection| list_issues(connection, &filter))
            .await
    }

    /// One issue and its events, oldest first.
    pub async fn get_issue(
        &self,
        id: String,
    ) -> Result<Option<(Issue, Vec<StoredIssueEvent>)>, StoreError> {
        self.read(move |connection| get_issue(connection, &id))
            .await
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another read panicked; the connection is fine.
            let connection = reader
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            query(&connection)
        })
        .await
        .map_err(|error| StoreError::Corrupt {
            what: "read task".into(),
            detail: error.to_string(),
        })?
    }
}

/// The schema, one step per version; `PRAGMA user_version` records how many have run.
/// Append a step to change the schema; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: nodes, issues, issue events, notifications.
    "CREATE TABLE nodes (
            tenant TEXT NOT NULL,
            cluster TEXT NOT NULL,
            node TEXT NOT NULL,
            identity TEXT NOT NULL,
            agent_version TEXT NOT NULL,
            probes TEXT NOT NULL,
            seq_epoch TEXT NOT NULL,
            applied_seq INTEGER NOT NULL,
            first_seen_ms INTEGER NOT NULL,
            last_seen_ms INTEGER,
            dropped_batches_total INTEGER NOT NULL,
            batches_applied_total INTEGER NOT NULL,
            duplicate_batches_total INTEGER NOT NULL,
            skipped_seqs_total INTEGER NOT NULL,
            PRIMARY KEY (tenant, cluster, node)
        );
        CREATE TABLE issues (
            id TEXT PRIMARY KEY,
            rule TEXT NOT NULL,
            tenant TEXT NOT NULL,
            cluster TEXT NOT NULL,
            node TEXT NOT NULL,
            mount TEXT NOT NULL,
            severity TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
            opened_ms INTEGER NOT NULL,
            closed_ms INTEGER,
            updated_ms INTEGER NOT NULL,
            value REAL NOT NULL,
            threshold REAL NOT NULL,
            message TEXT NOT NULL,
            remedy TEXT NOT NULL
        );
        -- The lifecycle's first invariant, kept by the database too.
        CREATE UNIQUE INDEX one_open_issue_per_key
            ON issues (rule, tenant, cluster, node, mount) WHERE state = 'open';
        CREATE INDEX issues_by_opened ON issues (opened_ms DESC);
        CREATE TABLE issue_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            issue_id TEXT NOT NULL REFERENCES issues (id),
            kind TEXT NOT NULL CHECK (kind IN ('opened', 'updated', 'closed')),
            reason TEXT NOT NULL,
            time_ms INTEGER NOT NULL,
            severity TEXT NOT NULL,
            value REAL NOT NULL,
            threshold REAL NOT NULL,
            message TEXT NOT NULL,
            remedy TEXT NOT NULL
        );
        CREATE INDEX issue_events_by_issue ON issue_events (issue_id, seq);
        CREATE TABLE notifications (
            id TEXT PRIMARY KEY,
            time_ms INTEGER NOT NULL,
            tenant TEXT NOT NULL,
            cluster TEXT NOT NULL,
            node TEXT NOT NULL,
            severity TEXT NOT NULL,
            title TEXT NOT NULL,
            text TEXT NOT NULL,
            origin TEXT NOT NULL
        );",
    // 2: the delivery outbox (with dead letters) and integrations created through the API.
    crate::outbox::MIGRATION,
    // 3: why each issue is (or was last) open and why it closed (`explain::Explanation`
    // as JSON), one row per issue, beside its row so that listing issues stays cheap.
    "CREATE TABLE issue_explanations (
            issue_id TEXT PRIMARY KEY REFERENCES issues (id),
            explanation TEXT NOT NULL
        );",
    // 4: general subjects: a typed resource (`resource_kind`, `resource`) instead of a
    // mount; a mount row becomes resource ('mount', its mount). One open issue per rule
    // and subject, resource included.
    "ALTER TABLE issues ADD COLUMN resource_kind TEXT NOT NULL DEFAULT '';
        ALTER TABLE issues ADD COLUMN resource TEXT NOT NULL DEFAULT '';
        UPDATE issues SET resource_kind = 'mount', resource = mount WHERE mount <> '';
        DROP INDEX one_open_issue_per_key;
        ALTER TABLE issues DROP COLUMN mount;
        CREATE UNIQUE INDEX one_open_issue_per_subject
            ON issues (rule, tenant, cluster, node, resource_kind, resource) WHERE state = 'open';",
    // 5: integration names per tenant (`dispatch::route_key`).
    crate::outbox::MIGRATION_TENANT_NAMES,
];

fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(0);
    let has_tables: bool = connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'nodes')",
        [],
        |row| row.get(0),
    )?;
    if applied == 0 && has_tables {
        return Err(StoreError::Corrupt {
            what: "schema".into(),
            detail: "the database has tables but no schema version: it was made by a \
                     pre-release build; move it away to start afresh"
                .into(),
        });
    }
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Corrupt {
            what: "schema".into(),
            detail: format!(
                "the database is at version {applied}, newer than this aggregator's {}",
                MIGRATIONS.len()
            ),
        });
    }
    for (index, step) in MIGRATIONS.iter().enumerate().skip(applied) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(step)?;
        transaction.pragma_update(
            None,
            "user_version",
            i64::try_from(index + 1).unwrap_or(i64::MAX),
        )?;
        transaction.commit()?;
    }
    Ok(())
}

fn write_loop(mut connection: Connection, mut queue: mpsc::Receiver<Write>, dispatch: Dispatch) {
    let mut last_commit: Option<std::time::Instant> = None;
    while let Some(first) = queue.blocking_recv() {
        let mut group = vec![first];
        drain(&mut queue, &mut group);
        let n_samples: usize = group.iter().map(Write::n_samples).sum();
        if n_samples < COMMIT_AT_ONCE_SAMPLES
            && let Some(wait) = last_commit.and_then(|at| COMMIT_INTERVAL.checked_sub(at.elapsed()))
        {
            std::thread::sleep(wait);
            drain(&mut queue, &mut group);
        }
        last_commit = Some(std::time::Instant::now());
        let result = commit(&mut connection, &group, &dispatch);
        if let Err(error) = &result {
            tracing::error!(%error, writes = group.len(), "store commit failed; nothing in it is acknowledged");
        }
        let mut committed = Vec::new();
        for write in group {
            if let Some(done) = write.done {
                done(result.as_ref().map(|_| ()));
            }
            if result.is_ok() {
                committed.extend(write.events);
            }
        }
        if !committed.is_empty() {
            dispatch.publish(committed);
        }
    }
}

/// Moves what is queued into the group, up to `GROUP_COMMIT_MAX`.
fn drain(queue: &mut mpsc::Receiver<Write>, group: &mut Vec<Write>) {
    while group.len() < GROUP_COMMIT_MAX {
        match queue.try_recv() {
            Ok(write) => group.push(write),
            Err(_) => break,
        }
    }
}

fn commit(
    connection: &mut Connection,
    group: &[Write],
    dispatch: &Dispatch,
) -> Result<(), StoreError> {
    let transaction = connection.transaction()?;
    let now_ms = Timestamp::now().as_unix_ms();
    // A node's row is written once per transaction, as its latest write has it: a stream
    // of batches from one node costs one short update per commit, not one per batch. A
    // Hello's whole row goes first, then the progress of batches after it, if any.
    type Latest<'a> = (Option<&'a NodeState>, Option<&'a NodeProgress>);
    let mut latest_rows: std::collections::HashMap<&NodeKey, Latest<'_>> =
        std::collections::HashMap::new();
    for row in group.iter().flat_map(|write| &write.nodes) {
        let latest = latest_rows.entry(row.key()).or_default();
        match row {
            NodeRow::Full(node) => *latest = (Some(&**node), None),
            NodeRow::Progress(progress) => latest.1 = Some(progress),
        }
    }
    for (full, progress) in latest_rows.values() {
        if let Some(node) = full {
            upsert_node(&transaction, node)?;
        }
        if let Some(progress) = progress {
            update_progress(&transaction, progress)?;
        }
    }
    for write in group {
        for event in &write.events {
            match event {
                Event::Issue(event) => {
                    record_issue_event(&transaction, event)?;
                    record_explanation(&transaction, event)?;
                }
                Event::Notification(notification) => {
                    record_notification(&transaction, notification)?
                }
            }
            // One outbox row per admitting integration, in the event's transaction.
            let integrations = dispatch.admitting(event);
            if !integrations.is_empty() {
                let envelope = event.to_json();
                for integration in integrations {
                    let id = event.id();
                    crate::outbox::enqueue(&transaction, &integration, id, &envelope, now_ms)?;
                }
            }
        }
    }
    transaction.commit()?;
    Ok(())
}

fn upsert_node(transaction: &Transaction<'_>, node: &NodeState) -> Result<(), StoreError> {
    let identity = serde_json::json!({
        "service_instance_id": node.identity.service_instance_id,
        "business_group": node.identity.business_group,
        "cloud_service_name": node.identity.cloud_service_name,
        "instance_class": node.identity.instance_class,
        "labels": node.identity.labels,
    });
    let probes: Vec<serde_json::Value> = node
        .probes
        .iter()
        .map(|probe| {
            serde_json::json!({ "name": probe.name, "interval_ms": probe.interval.as_millis() as u64 })
        })
        .collect();
    transaction
        .prepare_cached(
            "INSERT INTO nodes (tenant, cluster, node, identity, agent_version, probes, seq_epoch,
                 applied_seq, first_seen_ms, last_seen_ms, dropped_batches_total,
                 batches_applied_total, duplicate_batches_total, skipped_seqs_total)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (tenant, cluster, node) DO UPDATE SET
                 identity = excluded.identity, agent_version = excluded.agent_version,
                 probes = excluded.probes, seq_epoch = excluded.seq_epoch,
                 applied_seq = excluded.applied_seq, last_seen_ms = excluded.last_seen_ms,
                 dropped_batches_total = excluded.dropped_batches_total,
                 batches_applied_total = excluded.batches_applied_total,
                 duplicate_batches_total = excluded.duplicate_batches_total,
                 skipped_seqs_total = excluded.skipped_seqs_total",
        )?
        .execute(params![
            node.key.tenant,
            node.key.cluster,
            node.key.node,
            identity.to_string(),
            node.agent_version,
            serde_json::Value::Array(probes).to_string(),
            node.seq_epoch,
            signed(node.applied_seq),
            node.first_seen.as_unix_ms(),
            node.last_seen.map(Timestamp::as_unix_ms),
            signed(node.dropped_batches_total),
            signed(node.batches_applied_total),
            signed(node.duplicate_batches_total),
            signed(node.skipped_seqs_total),
        ])?;
    Ok(())
}

fn update_progress(
    transaction: &Transaction<'_>,
    progress: &NodeProgress,
) -> Result<(), StoreError> {
    transaction
        .prepare_cached(
            "UPDATE nodes SET applied_seq = ?4, last_seen_ms = ?5, dropped_batches_total = ?6,
                 batches_applied_total = ?7, duplicate_batches_total = ?8, skipped_seqs_total = ?9
             WHERE tenant = ?1 AND cluster = ?2 AND node = ?3",
        )?
        .execute(params![
            progress.key.tenant,
            progress.key.cluster,
            progress.key.node,
            signed(progress.applied_seq),
            progress.last_seen.map(Timestamp::as_unix_ms),
            signed(progress.dropped_batches_total),
            signed(progress.batches_applied_total),
            signed(progress.duplicate_batches_total),
            signed(progress.skipped_seqs_total),
        ])?;
    Ok(())
}

fn record_issue_event(transaction: &Transaction<'_>, event: &IssueEvent) -> Result<(), StoreError> {
    let issue = &event.issue;
    let subject = &issue.key.subject;
    transaction
        .prepare_cached(
            "INSERT INTO issues (id, rule, tenant, cluster, node, resource_kind, resource,
                 severity, state, opened_ms, closed_ms, updated_ms, value, threshold, message,
                 remedy)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (id) DO UPDATE SET
                 severity = excluded.severity, state = excluded.state,
                 closed_ms = excluded.closed_ms, updated_ms = excluded.updated_ms,
                 value = excluded.value, threshold = excluded.threshold,
                 message = excluded.message, remedy = excluded.remedy",
        )?
        .execute(params![
            issue.id,
            issue.key.rule.as_str(),
            subject.tenant,
            subject.cluster,
            subject.node,
            subject
                .resource
                .as_ref()
                .map_or("", |resource| resource.kind.as_str()),
            subject
                .resource
                .as_ref()
                .map_or("", |resource| resource.name.as_str()),
            issue.severity.as_str(),
            state_str(issue.state),
            issue.opened_at.as_unix_ms(),
            issue.closed_at.map(Timestamp::as_unix_ms),
            issue.updated_at.as_unix_ms(),
            issue.value,
            issue.threshold,
            issue.message,
            issue.remedy,
        ])?;
    let reason = match event.kind {
        IssueEventKind::Updated(reason) => reason.as_str(),
        _ => "",
    };
    transaction
        .prepare_cached(
            "INSERT INTO issue_events (id, issue_id, kind, reason, time_ms, severity, value,
                 threshold, message, remedy)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            event.id,
            issue.id,
            event.kind.as_str(),
            reason,
            event.time.as_unix_ms(),
            issue.severity.as_str(),
            issue.value,
            issue.threshold,
            issue.message,
            issue.remedy,
        ])?;
    Ok(())
}

/// Writes the issue's explanation when an event changed it (opened, severity, changed,
/// closed).
fn record_explanation(transaction: &Transaction<'_>, event: &IssueEvent) -> Result<(), StoreError> {
    let (IssueEventKind::Opened
    | IssueEventKind::Updated(UpdateReason::Severity | UpdateReason::Changed)
    | IssueEventKind::Closed) = event.kind
    else {
        return Ok(());
    };
    let Some(explanation) = &event.issue.explanation else {
        return Ok(());
    };
    let json = serde_json::to_string(explanation).map_err(|error| StoreError::Corrupt {
        what: format!("issue {} explanation", event.issue.id),
        detail: error.to_string(),
    })?;
    transaction
        .prepare_cached(
            "INSERT INTO issue_explanations (issue_id, explanation) VALUES (?1, ?2)
             ON CONFLICT (issue_id) DO UPDATE SET explanation = excluded.explanation",
        )?
        .execute(params![event.issue.id, json])?;
    Ok(())
}

/// The stored explanation of one issue, if it has one.
fn explanation(
    connection: &Connection,
    issue_id: &str,
) -> Result<Option<Box<Explanation>>, StoreError> {
    let json: Option<String> = connection
        .prepare_cached("SELECT explanation FROM issue_explanations WHERE issue_id = ?1")?
        .query_row([issue_id], |row| row.get(0))
        .optional()?;
    json.map(|json| {
        serde_json::from_str(&json).map_err(|error| StoreError::Corrupt {
            what: format!("issue {issue_id} explanation"),
            detail: error.to_string(),
        })
    })
    .transpose()
}

fn record_notification(
    transaction: &Transaction<'_>,
    notification: &Notification,
) -> Result<(), StoreError> {
    transaction
        .prepare_cached(
            "INSERT INTO notifications (id, time_ms, tenant, cluster, node, severity, title, text, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            notification.id,
            notification.time.as_unix_ms(),
            notification.tenant,
            notification.cluster,
            notification.node,
            notification.severity.as_str(),
            notification.title,
            notification.text,
            notification.origin,
        ])?;
    Ok(())
}

fn restore(connection: &Connection) -> Result<Restored, StoreError> {
    let mut nodes = Vec::new();
    let mut statement = connection.prepare(
        "SELECT tenant, cluster, node, identity, agent_version, probes, seq_epoch, applied_seq,
             first_seen_ms, last_seen_ms, dropped_batches_total, batches_applied_total,
             duplicate_batches_total, skipped_seqs_total FROM nodes",
    )?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let key = NodeKey {
            tenant: row.get(0)?,
            cluster: row.get(1)?,
            node: row.get(2)?,
        };
        let identity: String = row.get(3)?;
        let probes: String = row.get(5)?;
        nodes.push(NodeState {
            identity: parse_identity(&key, &identity)?,
            agent_version: row.get(4)?,
            probes: parse_probes(&key, &probes)?,
            seq_epoch: row.get(6)?,
            applied_seq: unsigned(row.get(7)?),
            first_seen: Timestamp::from_unix_ms(row.get(8)?),
            last_seen: row.get::<_, Option<i64>>(9)?.map(Timestamp::from_unix_ms),
            connections: 0,
            latest_host: None,
            latest_gossip: None,
            latest_es: [None; EsCheck::COUNT],
            audit_partial: false,
            dropped_batches_total: unsigned(row.get(10)?),
            rejected_samples_total: 0,
            batches_applied_total: unsigned(row.get(11)?),
            duplicate_batches_total: unsigned(row.get(12)?),
            skipped_seqs_total: unsigned(row.get(13)?),
            key,
        });
    }
    let mut open_issues = list_issues(
        connection,
        &IssueFilter {
            state: Some(IssueState::Open),
            limit: u32::MAX,
            ..IssueFilter::default()
        },
    )?;
    for issue in &mut open_issues {
        issue.explanation = explanation(connection, &issue.id)?;
    }
    Ok(Restored { nodes, open_issues })
}

/// SQLite integers are signed; counters never reach 2^63.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn parse_identity(key: &NodeKey, text: &str) -> Result<NodeIdentity, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: format!("node {key} identity"),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
    let labels = value["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Ok(NodeIdentity {
        service_instance_id: field("service_instance_id"),
        business_group: field("business_group"),
        cloud_service_name: field("cloud_service_name"),
        instance_class: field("instance_class"),
        labels,
    })
}

fn parse_probes(key: &NodeKey, text: &str) -> Result<Vec<Probe>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: format!("node {key} probes"),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    let probes = value
        .as_array()
        .ok_or_else(|| corrupt("not a list".into()))?;
    Ok(probes
        .iter()
        .map(|probe| Probe {
            name: probe["name"].as_str().unwrap_or_default().to_owned(),
            interval: Duration::from_millis(probe["interval_ms"].as_u64().unwrap_or(0)),
        })
        .collect())
}

const ISSUE_COLUMNS: &str = "id, rule, tenant, cluster, node, resource_kind, resource, severity,
     state, opened_ms, closed_ms, updated_ms, value, threshold, message, remedy";

fn list_issues(connection: &Connection, filter: &IssueFilter) -> Result<Vec<Issue>, StoreError> {
    let severities: Vec<&str> = [
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ]
    .into_iter()
    .filter(|severity| filter.min_severity.is_none_or(|min| *severity >= min))
    .map(Severity::as_str)
    .collect();
    let sql = format!(
        "SELECT {ISSUE_COLUMNS} FROM issues
         WHERE (?1 = '' OR state = ?1) AND (?2 = '' OR tenant = ?2) AND (?3 = '' OR cluster = ?3)
           AND (?4 = '' OR node = ?4) AND (?5 = '' OR rule = ?5)
           AND severity IN (SELECT value FROM json_each(?6))
           AND (?8 IS NULL OR opened_ms < ?8 OR (opened_ms = ?8 AND id < ?9))
         ORDER BY opened_ms DESC, id DESC LIMIT ?7"
    );
    let (before_ms, before_id) = filter.before.clone().unzip();
    let limit = if filter.limit == 0 {
        1000
    } else {
        i64::from(filter.limit)
    };
    let mut statement = connection.prepare_cached(&sql)?;
    let mut rows = statement.query(params![
        filter.state.map(state_str).unwrap_or_default(),
        filter.tenant,
        filter.cluster,
        filter.node,
        filter.rule,
        serde_json::to_string(&severities).unwrap_or_default(),
        limit,
        before_ms,
        before_id,
    ])?;
    let mut issues = Vec::new();
    while let Some(row) = rows.next()? {
        issues.push(issue_from_row(row)?);
    }
    Ok(issues)
}

fn get_issue(
    connection: &Connection,
    id: &str,
) -> Result<Option<(Issue, Vec<StoredIssueEvent>)>, StoreError> {
    let sql = format!("SELECT {ISSUE_COLUMNS} FROM issues WHERE id = ?1");
    let Some(mut issue) = connection
        .prepare_cached(&sql)?
        .query_row([id], |row| Ok(issue_from_row(row)))
        .optional()?
        .transpose()?
    else {
        return Ok(None);
    };
    issue.explanation = explanation(connection, id)?;
    let mut statement = connection.prepare_cached(
        "SELECT id, kind, reason, time_ms, severity, value, threshold, message, remedy
         FROM issue_events WHERE issue_id = ?1 ORDER BY seq",
    )?;
    let mut rows = statement.query([id])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        let kind: String = row.get(1)?;
        let reason: String = row.get(2)?;
        let kind = match (kind.as_str(), reason.as_str()) {
            ("opened", _) => IssueEventKind::Opened,
            ("closed", _) => IssueEventKind::Closed,
            (_, "reminder") => IssueEventKind::Updated(UpdateReason::Reminder),
            (_, "changed") => IssueEventKind::Updated(UpdateReason::Changed),
            _ => IssueEventKind::Updated(UpdateReason::Severity),
        };
        events.push(StoredIssueEvent {
            id: row.get(0)?,
            kind,
            time: Timestamp::from_unix_ms(row.get(3)?),
            severity: parse_severity(&row.get::<_, String>(4)?)?,
            value: row.get(5)?,
            threshold: row.get(6)?,
            message: row.get(7)?,
            remedy: row.get(8)?,
        });
    }
    Ok(Some((issue, events)))
}

fn issue_from_row(row: &rusqlite::Row<'_>) -> Result<Issue, StoreError> {
    let id: String = row.get(0)?;
    // A rule this build does not know (the issue came from another build) still loads:
    // it lists and can be closed by an operator; nothing evaluates it.
    let rule = RuleName::parse(&row.get::<_, String>(1)?);
    let resource_kind: String = row.get(5)?;
    let resource = if resource_kind.is_empty() {
        None
    } else {
        let kind = ResourceKind::parse(&resource_kind).ok_or_else(|| StoreError::Corrupt {
            what: format!("issue {id}"),
            detail: format!("unknown resource kind {resource_kind:?}"),
        })?;
        Some(Resource {
            kind,
            name: row.get(6)?,
        })
    };
    let state: String = row.get(8)?;
    Ok(Issue {
        id,
        key: IssueKey {
            rule,
            subject: Subject {
                tenant: row.get(2)?,
                cluster: row.get(3)?,
                node: row.get(4)?,
                resource,
            },
        },
        severity: parse_severity(&row.get::<_, String>(7)?)?,
        state: if state == "open" {
            IssueState::Open
        } else {
            IssueState::Closed
        },
        opened_at: Timestamp::from_unix_ms(row.get(9)?),
        closed_at: row.get::<_, Option<i64>>(10)?.map(Timestamp::from_unix_ms),
        updated_at: Timestamp::from_unix_ms(row.get(11)?),
        value: row.get(12)?,
        threshold: row.get(13)?,
        message: row.get(14)?,
        remedy: row.get(15)?,
        // Read beside the row where it is needed (`get_issue`, `restore`).
        explanation: None,
    })
}

fn parse_severity(text: &str) -> Result<Severity, StoreError> {
    Severity::parse(text).ok_or_else(|| StoreError::Corrupt {
        what: "severity".into(),
        detail: format!("unknown severity {text:?}"),
    })
}

fn state_str(state: IssueState) -> &'static str {
    match state {
        IssueState::Open => "open",
        IssueState::Closed => "closed",
    }
}

#[cfg(test)]
mod tests;
