//! Sinks: the services events are delivered to. One folder or file per sink, each
//! implementing `Sink`; `dispatch` feeds them. A sink knows its service's format and
//! transport, nothing about routing, filtering or queues.

pub mod log;

use std::future::Future;

use crate::events::Event;

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
