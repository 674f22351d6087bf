//! The probes this agent can run, one line each: every probe module offers
//! `probes(&AgentConfig)`, which builds its probes from its config section (none when the
//! section is absent). To add a probe, see ARCHITECTURE.md, "Add a probe".

use crate::AgentError;
use crate::config::AgentConfig;

use super::{Probe, elasticsearch, gossip, host, logs};

/// Builds every configured probe, reading the files their configs name.
pub(crate) fn probes(config: &AgentConfig) -> Result<Vec<Box<dyn Probe>>, AgentError> {
    let mut probes: Vec<Box<dyn Probe>> = Vec::new();
    probes.extend(host::probes(config)?);
    probes.extend(gossip::probes(config)?);
    probes.extend(logs::probes(config)?);
    probes.extend(elasticsearch::probes(config)?);
    Ok(probes)
}
