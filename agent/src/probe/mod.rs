//! Probes: each one samples one thing on this machine and returns it as the proto's sample
//! type. One module per probe: `host` (load, memory, disks), `gossip` (the local database
//! node's view of its cluster) and `logs` (lines appended to log files).
//!
//! Probes do not know about batches, seqs, the outbox or the network to the aggregator:
//! scheduling them and queueing what they return is [`crate::Agent`]'s job. `host` and
//! `logs` only read local files; `gossip` asks the local database over HTTP, bounded by its
//! timeout.

pub mod gossip;
pub mod host;
pub mod logs;

pub use gossip::GossipProbe;
pub use host::HostProbe;
pub use logs::LogTailer;

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
