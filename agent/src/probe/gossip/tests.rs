use super::*;

const HEALTHY: &str = include_str!("../../../tests/fixtures/eventstoredb-gossip-healthy.json");

fn esdb(body: &str) -> Result<ClusterView, GossipError> {
    eventstoredb::parse(body.as_bytes(), eventstoredb::PATH)
}

#[test]
fn the_reference_gossip_gives_three_members_and_the_leader() {
    let view = esdb(HEALTHY).unwrap();
    let summary: Vec<(&str, &str, bool, &str, i64)> = view
        .members
        .iter()
        .map(|m| {
            (
                m.instance_id.as_str(),
                m.state.as_str(),
                m.alive,
                m.endpoint.as_str(),
                m.epoch_number,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "3b3a2b5e-6a55-4c1e-9a3e-1f2d7c0e9a01",
                "Leader",
                true,
                "10.0.0.11:2113",
                4
            ),
            (
                "7c1d9e44-0b2f-4d6a-8e55-2a6f9b3c4d02",
                "Follower",
                true,
                "10.0.0.12:2113",
                4
            ),
            (
                "e2f4a6b8-1c3d-4e5f-9a0b-3c5d7e9f1a03",
                "Follower",
                true,
                "10.0.0.13:2113",
                4
            ),
        ]
    );
    assert_eq!(view.leader_id, "3b3a2b5e-6a55-4c1e-9a3e-1f2d7c0e9a01");
    assert_eq!(view.cluster_status, "");
}

#[test]
fn version_5_names_are_understood() {
    let body = r#"{"members": [
        {"instanceId": "a", "state": "Master", "isAlive": true,
         "internalHttpIp": "10.0.0.1", "internalHttpPort": 2112,
         "externalHttpIp": "192.168.0.1", "externalHttpPort": 2113, "epochNumber": 7},
        {"instanceId": "b", "state": "Slave", "isAlive": true,
         "internalHttpIp": "10.0.0.2", "internalHttpPort": 2112, "epochNumber": 7}
    ], "serverIp": "10.0.0.1", "serverPort": 2112}"#;
    let view = esdb(body).unwrap();
    assert_eq!(
        view.members[0].endpoint, "192.168.0.1:2113",
        "external first"
    );
    assert_eq!(view.members[1].endpoint, "10.0.0.2:2112");
    assert_eq!(
        view.members[0].state, "Master",
        "states as the node wrote them"
    );
    assert_eq!(view.leader_id, "a", "a 5.x Master is the leader");
    assert_eq!(view.members[1].epoch_number, 7);
}

#[test]
fn a_dead_leader_is_no_leader_and_missing_fields_are_named() {
    let body = r#"{"members": [
        {"instanceId": "a", "state": "Leader", "isAlive": false, "httpEndPointIp": "::1", "httpEndPointPort": 2113},
        {"instanceId": "b", "state": "Follower", "isAlive": true}
    ]}"#;
    let view = esdb(body).unwrap();
    assert_eq!(view.leader_id, "");
    assert_eq!(view.members[0].endpoint, "[::1]:2113");
    assert_eq!(view.members[1].endpoint, "");
    assert_eq!(view.members[1].epoch_number, -1);

    let err = esdb(r#"{"members": [{"instanceId": "a", "isAlive": true}]}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected answer from /gossip: members[0]: no \"state\""
    );
    let err = esdb(r#"{"serverIp": "10.0.0.1"}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected answer from /gossip: no \"members\""
    );
    let err = esdb("<html>").unwrap_err();
    assert!(
        err.to_string().starts_with("invalid JSON from /gossip: "),
        "{err}"
    );
}

#[test]
fn elasticsearch_nodes_and_health() {
    let nodes = br#"[
        {"id": "n1-full-id", "name": "es-1", "ip": "10.0.0.1", "http_address": "10.0.0.1:9200", "node.role": "dimr", "master": "*"},
        {"id": "n2-full-id", "name": "es-2", "ip": "10.0.0.2", "http_address": null, "node.role": "di", "master": "-"}
    ]"#;
    let view =
        elasticsearch::parse(nodes, br#"{"cluster_name": "logs", "status": "yellow"}"#).unwrap();
    assert_eq!(view.cluster_status, "yellow");
    assert_eq!(view.leader_id, "n1-full-id");
    let summary: Vec<(&str, &str, bool, &str, i64)> = view
        .members
        .iter()
        .map(|m| {
            (
                m.instance_id.as_str(),
                m.state.as_str(),
                m.alive,
                m.endpoint.as_str(),
                m.epoch_number,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("n1-full-id", "master", true, "10.0.0.1:9200", -1),
            ("n2-full-id", "di", true, "10.0.0.2", -1),
        ]
    );
    let err = elasticsearch::parse(nodes, b"{}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected answer from /_cluster/health: no \"status\""
    );
}

/// Fuzzing the adapters' parsers (stable proptest, bounded for CI): any bytes a node could
/// answer, and the reference bodies with a few bytes changed, give a view or an error,
/// never a panic. Failures found are kept in `proptest-regressions/probe/gossip/tests.txt`.
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const ES_NODES: &[u8] = br#"[
        {"id": "aB1c", "name": "es-1", "ip": "10.0.0.1", "node.role": "dim", "master": "*"},
        {"id": "dE2f", "name": "es-2", "ip": null, "node.role": "d", "master": "-"}
    ]"#;
    const ES_HEALTH: &[u8] = br#"{"cluster_name": "logs", "status": "yellow", "timed_out": false}"#;

    fn changed(body: &[u8], changes: &[(prop::sample::Index, u8)]) -> Vec<u8> {
        let mut body = body.to_vec();
        for (at, byte) in changes {
            let at = at.index(body.len());
            body[at] = *byte;
        }
        body
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn any_bytes_give_a_view_or_an_error(
            body in prop::collection::vec(any::<u8>(), 0..256),
            other in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = eventstoredb::parse(&body, eventstoredb::PATH);
            let _ = elasticsearch::parse(&body, &other);
            let _ = elasticsearch::parse(ES_NODES, &body);
        }

        #[test]
        fn changed_reference_bodies_give_a_view_or_an_error(
            changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let _ = eventstoredb::parse(&changed(HEALTHY.as_bytes(), &changes), eventstoredb::PATH);
            let _ = elasticsearch::parse(&changed(ES_NODES, &changes), ES_HEALTH);
            let _ = elasticsearch::parse(ES_NODES, &changed(ES_HEALTH, &changes));
        }
    }
}
