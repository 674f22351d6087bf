//! The hostwatch aggregator: ingests agents' samples, keeps windows per node and metric,
//! opens and closes issues, and serves the operator API.
//!
//! Pure core (no I/O, time passed in): `model`, `window`, `rules` (one module per rule and
//! the registry), `issue`, `explain`, `engine`.
//! Edges: `ingest` and `api` (gRPC), `monitor` (the task that owns the engine), `store`
//! (SQLite), `dispatch`, `outbox`, `delivery` and `sink` (where events go), `listener`
//! (connections: cap, deadlines), `server` (wiring), `up` (the embedded default: aggregator
//! and a local agent in one process), `panics` (a panic ends one agent's stream, or the
//! process).

pub mod api;
pub mod auth;
pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod engine;
pub mod events;
pub mod explain;
pub mod health;
pub mod ingest;
pub mod issue;
pub mod listener;
pub mod model;
pub mod monitor;
pub mod outbox;
pub mod panics;
pub mod rules;
pub mod server;
pub mod sink;
pub mod store;
pub mod telemetry;
pub mod up;
pub mod window;
