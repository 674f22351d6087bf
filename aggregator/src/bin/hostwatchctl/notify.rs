//! `hostwatchctl notify`: publishes a one-off notification through the Operator API, e.g.
//! from a provisioning pipeline: `hostwatchctl notify acme/db --severity error --title
//! "Cluster volumes failed to provision" --text "…"`.
//!
//! It only builds the request and prints what the aggregator answered; who may publish
//! is the aggregator's business (admin tokens, own tenant).

use clap::Args;
use proto::v1::{Notification, PublishNotificationRequest};
use serde_json::{Value, json};

use crate::format::{render_fields, severity_name};
use crate::{SeverityFilter, min_severity};

#[derive(Debug, Args)]
pub(crate) struct NotifyArgs {
    /// Whom it concerns: TENANT/CLUSTER, or TENANT/CLUSTER/NODE.
    #[arg(value_parser = parse_target)]
    target: Target,
    /// How bad it is (default: info).
    #[arg(long, value_enum)]
    severity: Option<SeverityFilter>,
    /// One line, e.g. "Cluster instances failed to provision".
    #[arg(long)]
    title: String,
    /// Details.
    #[arg(long, default_value = "")]
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    tenant: String,
    cluster: String,
    node: String,
}

fn parse_target(text: &str) -> Result<Target, String> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts[..] {
        [tenant, cluster] | [tenant, cluster, _]
            if !tenant.is_empty()
                && !cluster.is_empty()
                && parts.get(2).is_none_or(|node| !node.is_empty()) =>
        {
            Ok(Target {
                tenant: tenant.to_owned(),
                cluster: cluster.to_owned(),
                node: parts.get(2).copied().unwrap_or_default().to_owned(),
            })
        }
        _ => Err(format!(
            "expected TENANT/CLUSTER or TENANT/CLUSTER/NODE, got `{text}`"
        )),
    }
}

impl NotifyArgs {
    pub(crate) fn request(&self) -> PublishNotificationRequest {
        PublishNotificationRequest {
            tenant: self.target.tenant.clone(),
            cluster: self.target.cluster.clone(),
            node: self.target.node.clone(),
            severity: min_severity(self.severity),
            title: self.title.clone(),
            text: self.text.clone(),
        }
    }
}

/// What was published, for people.
pub(crate) fn detail(notification: &Notification) -> String {
    let mut target = format!("{}/{}", notification.tenant, notification.cluster);
    if !notification.node.is_empty() {
        target = format!("{target}/{}", notification.node);
    }
    render_fields(&[
        ("published", notification.id.clone()),
        ("target", target),
        ("severity", severity_name(notification.severity)),
        ("title", notification.title.clone()),
        ("origin", notification.origin.clone()),
    ])
}

/// What was published, for scripts.
pub(crate) fn json(notification: &Notification) -> Value {
    json!({
        "id": notification.id,
        "tenant": notification.tenant,
        "cluster": notification.cluster,
        "node": notification.node,
        "severity": severity_name(notification.severity),
        "title": notification.title,
        "text": notification.text,
        "time_unix_ms": notification.time_unix_ms,
        "origin": notification.origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: NotifyArgs,
    }

    #[test]
    fn builds_the_request_from_the_flags() {
        let cli = Cli::try_parse_from([
            "notify",
            "acme/db/node-a",
            "--severity",
            "error",
            "--title",
            "Cluster volumes failed to provision",
            "--text",
            "volume vol-1 stuck in creating",
        ])
        .unwrap();
        let request = cli.args.request();
        assert_eq!(
            (
                request.tenant.as_str(),
                request.cluster.as_str(),
                request.node.as_str()
            ),
            ("acme", "db", "node-a")
        );
        assert_eq!(request.severity, proto::v1::Severity::Error as i32);
        assert_eq!(request.title, "Cluster volumes failed to provision");
    }

    #[test]
    fn a_cluster_target_has_no_node_and_severity_defaults_to_unspecified() {
        let cli = Cli::try_parse_from(["notify", "acme/db", "--title", "t"]).unwrap();
        let request = cli.args.request();
        assert_eq!(request.node, "");
        assert_eq!(request.severity, proto::v1::Severity::Unspecified as i32);
        assert!(Cli::try_parse_from(["notify", "acme", "--title", "t"]).is_err());
        assert!(Cli::try_parse_from(["notify", "acme/db/", "--title", "t"]).is_err());
    }

    #[test]
    fn prints_what_was_published() {
        let notification = Notification {
            id: "n1".into(),
            tenant: "acme".into(),
            cluster: "db".into(),
            node: "node-a".into(),
            severity: proto::v1::Severity::Error as i32,
            title: "Cluster volumes failed to provision".into(),
            text: String::new(),
            time_unix_ms: 5,
            origin: "operator ops".into(),
        };
        let text = detail(&notification);
        assert!(text.contains("acme/db/node-a"), "{text}");
        assert!(text.contains("error"), "{text}");
        assert_eq!(json(&notification)["severity"], "error");
    }
}
