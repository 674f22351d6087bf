//! The node's identity as sent in `Hello`: the configured names plus the defaults that need
//! the machine, namely the hostname and the service instance id kept in the state directory.
//!
//! It does not validate names (that is [`crate::config`]) and owns no other state file
//! (the seq counter belongs to [`crate::outbox`]).

use std::path::{Path, PathBuf};

use proto::v1::NodeIdentity;
use uuid::Uuid;

use crate::AgentError;
use crate::config::IdentityConfig;
use crate::state;

/// Where the kernel keeps the hostname (the UTS namespace's, as `hostname` prints it).
const HOSTNAME_PATH: &str = "/proc/sys/kernel/hostname";

/// The file in the state directory that keeps a generated service instance id.
pub const INSTANCE_ID_FILE: &str = "instance_id";

/// Builds the node's identity, filling in the hostname and the instance id when the config
/// leaves them empty. Creates `state_dir/instance_id` on first use.
pub fn resolve(config: &IdentityConfig, state_dir: &Path) -> Result<NodeIdentity, AgentError> {
    let node = if config.node.is_empty() {
        hostname()?
    } else {
        config.node.clone()
    };
    let service_instance_id = if config.service_instance_id.is_empty() {
        load_or_create_instance_id(state_dir)?.to_string()
    } else {
        config.service_instance_id.clone()
    };
    Ok(NodeIdentity {
        tenant: config.tenant.clone(),
        cluster: config.cluster.clone(),
        node,
        service_instance_id,
        business_group: config.business_group.clone(),
        cloud_service_name: config.cloud_service_name.clone(),
        instance_class: config.instance_class.clone(),
        labels: config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// The machine's hostname.
pub fn hostname() -> Result<String, AgentError> {
    let text = std::fs::read_to_string(HOSTNAME_PATH).map_err(|source| AgentError::Hostname {
        path: PathBuf::from(HOSTNAME_PATH),
        source,
    })?;
    let name = text.trim();
    if name.is_empty() {
        return Err(AgentError::Hostname {
            path: PathBuf::from(HOSTNAME_PATH),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "empty hostname"),
        });
    }
    Ok(name.to_owned())
}

/// Reads the instance id kept in `state_dir/instance_id`, creating it on first use.
///
/// A file that exists but does not hold a UUID is an error rather than silently replaced:
/// a new id would make the node look like a different service instance downstream.
pub fn load_or_create_instance_id(state_dir: &Path) -> Result<Uuid, AgentError> {
    let path = state_dir.join(INSTANCE_ID_FILE);
    match state::read_optional(&path)? {
        Some(text) => Uuid::parse_str(text.trim()).map_err(|err| AgentError::CorruptState {
            path,
            message: format!("not a UUID: {err}"),
        }),
        None => {
            let id = Uuid::new_v4();
            state::write_atomic(&path, format!("{id}\n").as_bytes())?;
            Ok(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_instance_id(dir.path()).unwrap();
        let second = load_or_create_instance_id(dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.get_version_num(), 4);
        let on_disk = std::fs::read_to_string(dir.path().join(INSTANCE_ID_FILE)).unwrap();
        assert_eq!(on_disk.trim(), first.to_string());
    }

    #[test]
    fn a_corrupt_instance_id_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(INSTANCE_ID_FILE), "garbage").unwrap();
        let err = load_or_create_instance_id(dir.path()).unwrap_err();
        assert!(err.to_string().contains("instance_id: not a UUID"), "{err}");
    }

    #[test]
    fn configured_values_win_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = IdentityConfig {
            tenant: "acme".into(),
            cluster: "orders-db".into(),
            node: "db-1".into(),
            service_instance_id: "6c1b8c1e-2d7a-4f5e-9b1a-0d6f3e2a9c11".into(),
            labels: [("az".to_owned(), "a".to_owned())].into(),
            ..IdentityConfig::default()
        };
        let identity = resolve(&config, dir.path()).unwrap();
        assert_eq!(identity.node, "db-1");
        assert_eq!(
            identity.service_instance_id,
            "6c1b8c1e-2d7a-4f5e-9b1a-0d6f3e2a9c11"
        );
        assert_eq!(identity.labels.get("az").map(String::as_str), Some("a"));
        assert!(
            !dir.path().join(INSTANCE_ID_FILE).exists(),
            "a configured id needs no file"
        );
    }

    #[test]
    fn node_defaults_to_the_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let config = IdentityConfig {
            tenant: "t".into(),
            cluster: "c".into(),
            ..Default::default()
        };
        let identity = resolve(&config, dir.path()).unwrap();
        assert_eq!(identity.node, hostname().unwrap());
        assert!(Uuid::parse_str(&identity.service_instance_id).is_ok());
    }
}
