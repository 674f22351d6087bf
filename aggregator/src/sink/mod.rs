//! Sinks: the services events are delivered to. One module (or folder) per sink, each
//! with its config and an implementation of `Sink`; this file is the registry: the
//! `SinkConfig` enum and `build`. `dispatch` feeds the sinks. A sink knows its
//! service's format and transport, nothing about routing, filtering or queues.

pub mod log;

use std::future::Future;

use serde::Deserialize;

use crate::events::Event;

/// The sink an integration delivers to, as written in `[[integrations]] sink = {...}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Every event as one JSON line on stdout.
    Log,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: the service may accept it later.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying will not help; the event is dead-lettered.
    #[error("permanent: {0}")]
    Permanent(String),
}

pub trait Sink: Send + 'static {
    /// Delivers one event; returns once the service has accepted it.
    fn deliver(&mut self, event: &Event) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}
