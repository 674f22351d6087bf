//! Reading the event envelope (`events::Event::to_json`) the way every sink needs it:
//! string fields that default to empty, and the words shared by the chat sinks.

use serde_json::Value;

/// A string field, empty when missing.
pub fn text<'a>(envelope: &'a Value, field: &str) -> &'a str {
    envelope[field].as_str().unwrap_or_default()
}

/// `tenant/cluster/node` (or `tenant/cluster` for a cluster-wide event), plus the mount
/// (`:/data`) or another resource (` shard logs/0`), as `model::Subject` reads.
pub fn place(envelope: &Value) -> String {
    let mut place = format!("{}/{}", text(envelope, "tenant"), text(envelope, "cluster"));
    for field in ["node", "mount"] {
        let value = text(envelope, field);
        if !value.is_empty() {
            place.push_str(if field == "mount" { ":" } else { "/" });
            place.push_str(value);
        }
    }
    let (kind, resource) = (text(envelope, "resource_kind"), text(envelope, "resource"));
    if !kind.is_empty() && kind != "mount" {
        place.push_str(&format!(" {kind} {resource}"));
    }
    place
}

/// One line saying what happened, e.g. `[WARNING] core_load opened on acme/db/n1`.
pub fn headline(envelope: &Value) -> String {
    let severity = text(envelope, "severity").to_uppercase();
    if text(envelope, "source") == "issues" {
        format!(
            "[{severity}] {} {} on {}",
            text(envelope, "rule"),
            text(envelope, "kind"),
            place(envelope)
        )
    } else {
        format!(
            "[{severity}] {} ({})",
            text(envelope, "title"),
            place(envelope)
        )
    }
}

/// What was found and what to do.
pub fn body(envelope: &Value) -> String {
    if text(envelope, "source") == "issues" {
        let mut body = text(envelope, "message").to_owned();
        let remedy = text(envelope, "remedy");
        if !remedy.is_empty() {
            body.push_str("\nWhat to do: ");
            body.push_str(remedy);
        }
        body
    } else {
        text(envelope, "text").to_owned()
    }
}

pub fn is_issue(envelope: &Value) -> bool {
    text(envelope, "source") == "issues"
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_place_names_the_node_and_its_mount_or_another_resource() {
        let mount = json!({"tenant": "acme", "cluster": "db", "node": "n1", "mount": "/data",
            "resource_kind": "mount", "resource": "/data"});
        assert_eq!(place(&mount), "acme/db/n1:/data");
        let shard = json!({"tenant": "acme", "cluster": "es", "node": "", "mount": "",
            "resource_kind": "shard", "resource": "logs/0"});
        assert_eq!(place(&shard), "acme/es shard logs/0");
        let cluster = json!({"tenant": "acme", "cluster": "db", "node": "", "mount": ""});
        assert_eq!(place(&cluster), "acme/db");
    }
}
