//! Health as a function of open issues, and the health event's fields (snapshot).

use super::*;

fn node(name: &str) -> NodeKey {
    NodeKey {
        tenant: "orion-123".into(),
        cluster: "db".into(),
        node: name.into(),
    }
}

fn described(name: &str) -> (NodeKey, NodeDescription) {
    (
        node(name),
        NodeDescription {
            service_instance_id: format!("df22bc90-ebdd-4c8e-a051-b088f89f88{}", name.len()),
            business_group: "marketing".into(),
            cloud_service_name: "Managed EventStoreDB".into(),
            instance_class: "Managed EventStoreDB".into(),
        },
    )
}

fn issue(id: &str, node: &str, severity: Severity) -> OpenIssue {
    OpenIssue {
        id: id.into(),
        tenant: "orion-123".into(),
        cluster: "db".into(),
        node: node.into(),
        rule: "disk_usage".into(),
        severity,
        message: format!("{id} is open"),
    }
}

#[test]
fn status_is_the_worst_open_issue() {
    let mut tracker = HealthTracker::default();
    tracker.reset(
        vec![described("a"), described("b"), described("c")],
        vec![
            issue("i1", "a", Severity::Warning),
            issue("i2", "a", Severity::Critical),
            issue("i3", "b", Severity::Warning),
            issue("i4", "c", Severity::Info),
        ],
    );
    assert_eq!(tracker.status(&node("a")).0, HealthStatus::Error);
    assert_eq!(tracker.status(&node("b")).0, HealthStatus::Warning);
    assert_eq!(tracker.status(&node("c")).0, HealthStatus::Ok);
    let (_, description) = tracker.status(&node("a"));
    assert_eq!(
        description,
        "disk_usage (critical): i2 is open; disk_usage (warning): i1 is open"
    );
}

#[test]
fn a_cluster_wide_issue_counts_for_every_node_of_its_cluster() {
    let mut tracker = HealthTracker::default();
    tracker.reset(
        vec![described("a"), described("b")],
        vec![issue("i1", "", Severity::Error)],
    );
    assert_eq!(tracker.status(&node("a")).0, HealthStatus::Error);
    assert_eq!(tracker.status(&node("b")).0, HealthStatus::Error);
}

#[test]
fn changed_lists_nodes_until_their_event_is_made() {
    let mut tracker = HealthTracker::default();
    tracker.reset(vec![described("a"), described("b")], Vec::new());
    assert_eq!(tracker.changed(), [node("a"), node("b")], "never sent");
    let now = Timestamp::from_unix_ms(1_676_378_400_000);
    tracker.event(&node("a"), "ESC", now).unwrap();
    tracker.event(&node("b"), "ESC", now).unwrap();
    assert!(tracker.changed().is_empty());
    tracker.reset(
        vec![described("a"), described("b")],
        vec![issue("i1", "b", Severity::Error)],
    );
    assert_eq!(tracker.changed(), [node("b")]);
    let event = tracker.event(&node("b"), "ESC", now).unwrap();
    assert_eq!(event["health_status"], "ERROR");
    assert_eq!(event["timestamp"], "2023-02-14T12:40:00.000Z");
    assert!(tracker.changed().is_empty());
}

#[test]
fn the_event_matches_the_schema_fields() {
    let mut tracker = HealthTracker::default();
    tracker.reset(vec![described("orion1230001")], Vec::new());
    let mut event = tracker
        .event(
            &node("orion1230001"),
            "ESC",
            Timestamp::from_unix_ms(1_676_378_400_000),
        )
        .unwrap();
    assert!(uuid::Uuid::parse_str(event["id"].as_str().unwrap()).is_ok());
    event["id"] = Value::String("[uuid]".into());
    insta::assert_json_snapshot!("health_event", event);
}
