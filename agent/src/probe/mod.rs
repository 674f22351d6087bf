//! Probes: each one samples one thing on this machine and returns it as the proto's sample
//! type. One file per probe (`host` now; `gossip` comes later).
//!
//! Probes do not know about batches, seqs, the outbox or the network, and they never block
//! on anything but local reads: scheduling them is [`crate::Agent`]'s job.

pub mod host;

pub use host::HostProbe;

/// Why a probe could not take a sample.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe: cannot read {path}: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("probe: {path}: {message}")]
    Parse { path: &'static str, message: String },
}
