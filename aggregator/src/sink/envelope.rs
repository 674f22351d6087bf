//! Reading the event envelope (`events::Event::to_json`) the way every sink needs it:
//! string fields that default to empty, and the words shared by the chat sinks.

use serde_json::Value;

/// A string field, empty when missing.
pub fn text<'a>(envelope: &'a Value, field: &str) -> &'a str {
    envelope[field].as_str().unwrap_or_default()
}

/// `tenant/cluster/node` (or `tenant/cluster` for a cluster-wide event), plus the mount.
pub fn place(envelope: &Value) -> String {
    let mut place = format!("{}/{}", text(envelope, "tenant"), text(envelope, "cluster"));
    for field in ["node", "mount"] {
        let value = text(envelope, field);
        if !value.is_empty() {
            place.push_str(if field == "mount" { ":" } else { "/" });
            place.push_str(value);
        }
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
