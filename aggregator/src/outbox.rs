//! The persistent delivery outbox: one `deliveries` row per (event, integration), written
//! by the store's writer in the same transaction as the event itself, so an event that
//! is committed is never lost for an integration that admits it (invariant 4).
//!
//! A row is `pending` until its sink accepts it (the row is deleted) or refuses it for
//! good (`dead`, kept with the last error: the dead-letter list). A pending row that has
//! failed carries its attempt count, the time of its next attempt and the last error.
//! `delivery` workers read and update rows through their own connection; nothing here
//! decides when to retry.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, Transaction, params};
use serde_json::Value;

use crate::store::StoreError;

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Commit order; deliveries of one integration go out in this order.
    pub seq: i64,
    pub integration: String,
    pub event_id: String,
    pub envelope: Value,
    pub state: DeliveryState,
    pub attempts: u32,
    /// Unix ms; 0 for "now".
    pub next_attempt_ms: i64,
    pub last_error: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Never tried yet.
    Pending,
    /// Tried, failed transiently, waiting for its next attempt.
    Failed,
    /// Refused for good; kept for operators.
    Dead,
}

impl DeliveryState {
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Failed => "failed",
            DeliveryState::Dead => "dead",
        }
    }
}

/// The schema step `store` appends to its migrations.
pub const MIGRATION: &str = "CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        integration TEXT NOT NULL,
        event_id TEXT NOT NULL,
        envelope TEXT NOT NULL,
        dead INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        created_ms INTEGER NOT NULL,
        UNIQUE (integration, event_id)
    );
    CREATE INDEX deliveries_due ON deliveries (integration, dead, seq);
    CREATE TABLE integrations (
        name TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );";

/// Records that `integration` owes a delivery of this event; part of the event's commit.
pub fn enqueue(
    transaction: &Transaction<'_>,
    integration: &str,
    event_id: &str,
    envelope: &Value,
    now_ms: i64,
) -> Result<(), StoreError> {
    transaction
        .prepare_cached(
            "INSERT INTO deliveries (integration, event_id, envelope, created_ms)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )?
        .execute(params![integration, event_id, envelope.to_string(), now_ms])?;
    Ok(())
}

/// A connection of its own to the outbox, for one delivery worker or a reader.
#[derive(Debug)]
pub struct Outbox {
    connection: Connection,
}

impl Outbox {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        connection.busy_timeout(Duration::from_secs(10))?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        Ok(Self { connection })
    }

    /// The oldest `limit` live (not dead) deliveries of an integration, in commit order.
    pub fn live(&self, integration: &str, limit: u32) -> Result<Vec<Delivery>, StoreError> {
        self.select(
            "WHERE integration = ?1 AND dead = 0 ORDER BY seq LIMIT ?2",
            params![integration, limit],
        )
    }

    /// Accepted by the sink: gone.
    pub fn delivered(&self, seq: i64) -> Result<(), StoreError> {
        self.connection
            .prepare_cached("DELETE FROM deliveries WHERE seq = ?1")?
            .execute([seq])?;
        Ok(())
    }

    /// Failed for now; tried again at `next_attempt_ms`.
    pub fn failed(
        &self,
        seq: i64,
        attempts: u32,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        self.connection
            .prepare_cached(
                "UPDATE deliveries SET attempts = ?2, next_attempt_ms = ?3, last_error = ?4
                 WHERE seq = ?1",
            )?
            .execute(params![seq, attempts, next_attempt_ms, error])?;
        Ok(())
    }

    /// Refused for good: on the dead-letter list.
    pub fn dead(&self, seq: i64, attempts: u32, error: &str) -> Result<(), StoreError> {
        self.connection
            .prepare_cached(
                "UPDATE deliveries SET dead = 1, attempts = ?2, last_error = ?3 WHERE seq = ?1",
            )?
            .execute(params![seq, attempts, error])?;
        Ok(())
    }

    /// Deliveries for operators, oldest first; `integration` empty for all, `states`
    /// empty for every state.
    pub fn list(
        &self,
        integration: &str,
        states: &[DeliveryState],
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let rows = self.select(
            "WHERE (?1 = '' OR integration = ?1) ORDER BY seq LIMIT ?2",
            params![integration, if limit == 0 { 1000 } else { limit }],
        )?;
        Ok(rows
            .into_iter()
            .filter(|row| states.is_empty() || states.contains(&row.state))
            .collect())
    }

    /// Integrations created through the API, as their config JSON, oldest first.
    pub fn integrations(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT name, config FROM integrations ORDER BY created_ms, name")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Persists an integration created through the API.
    pub fn save_integration(
        &self,
        name: &str,
        config: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.connection
            .prepare_cached(
                "INSERT INTO integrations (name, config, created_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![name, config, now_ms])?;
        Ok(())
    }

    /// Forgets an integration and every delivery it still owed (dead letters included).
    pub fn delete_integration(&mut self, name: &str) -> Result<(), StoreError> {
        let transaction = self.connection.transaction()?;
        transaction.execute("DELETE FROM integrations WHERE name = ?1", [name])?;
        transaction.execute("DELETE FROM deliveries WHERE integration = ?1", [name])?;
        transaction.commit()?;
        Ok(())
    }

    fn select(
        &self,
        clause: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT seq, integration, event_id, envelope, dead, attempts, next_attempt_ms,
                 last_error, created_ms FROM deliveries {clause}"
        );
        let mut statement = self.connection.prepare_cached(&sql)?;
        let mut rows = statement.query(params)?;
        let mut deliveries = Vec::new();
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let envelope: String = row.get(3)?;
            let envelope =
                serde_json::from_str(&envelope).map_err(|error| StoreError::Corrupt {
                    what: format!("delivery {seq}"),
                    detail: error.to_string(),
                })?;
            let dead: bool = row.get(4)?;
            let attempts: u32 = row.get(5)?;
            deliveries.push(Delivery {
                seq,
                integration: row.get(1)?,
                event_id: row.get(2)?,
                envelope,
                state: if dead {
                    DeliveryState::Dead
                } else if attempts > 0 {
                    DeliveryState::Failed
                } else {
                    DeliveryState::Pending
                },
                attempts,
                next_attempt_ms: row.get(6)?,
                last_error: row.get(7)?,
                created_ms: row.get(8)?,
            });
        }
        Ok(deliveries)
    }
}
