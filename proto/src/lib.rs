//! The hostwatch protocol, version 1, as generated Rust types and gRPC stubs.
//!
//! The `.proto` files in `hostwatch/v1/` are the source of truth and document every
//! message and field; this crate adds the generated code and `names`, the one definition
//! of the tenant, cluster and node names the protocol allows (agent and aggregator both
//! check it). The `client` and `server` features keep server code out of the agent.

#![allow(missing_debug_implementations, unreachable_pub, clippy::all)]

pub mod v1 {
    tonic::include_proto!("hostwatch.v1");

    /// The encoded file descriptor set of all v1 files, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/hostwatch_descriptor.bin"));
}

/// The names `NodeIdentity` allows for a tenant, a cluster and a node: the agent checks its
/// config with this; the aggregator every Hello, the names its config binds or filters on,
/// and every name an API call filters by or publishes to.
/// Names become parts of keys, log fields, Kafka topics (`health-<tenant>`) and paths, so
/// the rule is narrow: 1 to 128 ASCII letters, digits, `.`, `_` and `-`, starting with a
/// letter, a digit or `_` (never `.`, `..`, a hidden name, nor something read as a flag).
pub mod names {
    /// The longest name, in bytes.
    pub const MAX_LEN: usize = 128;

    /// What is wrong with `name`, as a phrase to follow its field ("must not be empty"), or
    /// `None` when it is allowed.
    pub fn check(name: &str) -> Option<String> {
        let Some(first) = name.chars().next() else {
            return Some("must not be empty".to_owned());
        };
        if name.len() > MAX_LEN {
            return Some(format!("is longer than {MAX_LEN} bytes"));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Some(format!(
                "{name:?} contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
            ));
        }
        if !(first.is_ascii_alphanumeric() || first == '_') {
            return Some(format!(
                "{name:?} starts with {first:?}; a name starts with a letter, a digit or '_'"
            ));
        }
        None
    }

    #[cfg(test)]
    mod tests {
        use super::check;

        #[test]
        fn ordinary_names_pass() {
            for name in ["acme", "eu-west-1", "node_01", "db.prod", "_", "9"] {
                assert_eq!(check(name), None, "{name}");
            }
            assert_eq!(check(&"a".repeat(128)), None);
        }

        #[test]
        fn dots_empties_flags_and_oddities_are_refused() {
            for name in [
                "",
                ".",
                "..",
                ".hidden",
                "-v",
                "a b",
                "a/b",
                "é",
                &"a".repeat(129),
            ] {
                assert!(check(name).is_some(), "{name:?} passed");
            }
            assert_eq!(
                check("..").as_deref(),
                Some("\"..\" starts with '.'; a name starts with a letter, a digit or '_'")
            );
        }
    }
}
