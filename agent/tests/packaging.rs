//! The example config shipped in `packaging/` parses and validates, and says what it means.

use std::path::Path;
use std::time::Duration;

use agent::config::AgentConfig;

#[test]
fn packaged_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
    let config = AgentConfig::load(&path).expect("packaging/agent.toml must be valid");
    assert_eq!(config.identity.tenant, "acme");
    assert_eq!(config.identity.cluster, "orders-db");
    assert_eq!(
        config.identity.node, "",
        "node is left to default to the hostname"
    );
    assert_eq!(config.aggregator.url, "http://127.0.0.1:7170");
    assert_eq!(config.host.interval, Duration::from_secs(15));
    assert_eq!(config.shutdown_grace, Duration::from_secs(5));
    assert_eq!(config.outbox.max_batches, 10_000);
    // The example spells out the defaults: it must not drift from them.
    let defaults = AgentConfig::default();
    assert_eq!(config.state_dir, defaults.state_dir);
    assert_eq!(config.host, defaults.host);
    assert_eq!(config.outbox, defaults.outbox);
    assert_eq!(
        config.aggregator.connect_timeout,
        defaults.aggregator.connect_timeout
    );
}
