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

/// The schema step that makes integration names per tenant: an integration created
/// through the API for a tenant is keyed `tenant/name` (`dispatch::route_key`), in the
/// `integrations` table and in the deliveries it owes.
pub const MIGRATION_TENANT_NAMES: &str = "
    UPDATE deliveries SET integration = (
            SELECT json_extract(integrations.config, '$.tenant') || '/' || integrations.name
            FROM integrations WHERE integrations.name = deliveries.integration)
        WHERE integration IN (SELECT name FROM integrations
            WHERE coalesce(json_extract(config, '$.tenant'), '') != '');
    UPDATE integrations SET name = json_extract(config, '$.tenant') || '/' || name
        WHERE coalesce(json_extract(config, '$.tenant'), '') != '';";

/// Which deliveries an operator asked for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryQuery {
    /// Only these integrations (`route_key`s); `None` for every one.
    pub integrations: Option<Vec<String>>,
    /// Only deliveries of this tenant's events; `None` for every tenant.
    pub tenant: Option<String>,
    /// Empty for every state.
    pub states: Vec<DeliveryState>,
    /// Only deliveries after this seq (the previous page's last).
    pub after_seq: i64,
    /// 0 for 1000.
    pub limit: u32,
}

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

    /// Deliveries for operators, oldest first, at most `query.limit`. Every filter is
    /// applied before the limit, so a page is full whenever enough rows match.
    pub fn list(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        let states: Vec<&str> = query.states.iter().map(|state| state.as_str()).collect();
        let integrations = query
            .integrations
            .as_ref()
            .map(|keys| serde_json::to_string(keys).unwrap_or_default());
        self.select(
            "WHERE seq > ?1
               AND (?2 IS NULL OR integration IN (SELECT value FROM json_each(?2)))
               AND (?3 IS NULL OR json_extract(envelope, '$.tenant') = ?3)
               AND (?4 = '[]' OR (CASE WHEN dead THEN 'dead' WHEN attempts > 0 THEN 'failed'
                                  ELSE 'pending' END) IN (SELECT value FROM json_each(?4)))
             ORDER BY seq LIMIT ?5",
            params![
                query.after_seq,
                integrations,
                query.tenant,
                serde_json::to_string(&states).unwrap_or_default(),
                if query.limit == 0 { 1000 } else { query.limit }
            ],
        )
    }

    /// Integrations created through the API, as (`route_key`, config JSON), oldest first.
    pub fn integrations(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut statement = self
            .connection
            .prepare_cached("SELECT name, config FROM integrations ORDER BY created_ms, name")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Persists an integration created through the API, under its `route_key`.
    pub fn save_integration(&self, key: &str, config: &str, now_ms: i64) -> Result<(), StoreError> {
        self.connection
            .prepare_cached(
                "INSERT INTO integrations (name, config, created_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, config, now_ms])?;
        Ok(())
    }

    /// Forgets an integration (by `route_key`) and every delivery it still owed (dead
    /// letters included).
    pub fn delete_integration(&mut self, key: &str) -> Result<(), StoreError> {
        let transaction = self.connection.transaction()?;
        transaction.execute("DELETE FROM integrations WHERE name = ?1", [key])?;
        transaction.execute("DELETE FROM deliveries WHERE integration = ?1", [key])?;
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

#[cfg(test)]
mod tests;
