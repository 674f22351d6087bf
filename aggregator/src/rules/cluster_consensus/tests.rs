//! `judge` on hand-made views: what counts as agreement and how disagreement reads.

use super::*;
use crate::model::GossipMember;

fn member(id: &str, state: &str) -> GossipMember {
    GossipMember {
        instance_id: id.into(),
        state: state.into(),
        alive: true,
        endpoint: String::new(),
        epoch_number: -1,
    }
}

fn reading(members: Vec<GossipMember>, leader_id: &str) -> GossipReading {
    GossipReading {
        adapter: "elasticsearch".into(),
        outcome: Ok(members),
        cluster_status: "green".into(),
        leader_id: leader_id.into(),
    }
}

fn judge_all(readings: &[(&str, &GossipReading)]) -> Judgement {
    let views: Vec<NodeView<'_>> = readings
        .iter()
        .map(|(node, reading)| NodeView {
            node,
            observed: Observed::View(reading),
        })
        .collect();
    judge(&views)
}

#[test]
fn equal_views_with_one_leader_agree() {
    let view = reading(vec![member("x", "master"), member("y", "data")], "x");
    assert_eq!(judge_all(&[("x", &view), ("y", &view)]), Judgement::Agree);
}

#[test]
fn a_leader_named_only_by_leader_id_must_be_the_same_everywhere() {
    let members = vec![member("x", "master"), member("y", "data")];
    let x_leads = reading(members.clone(), "x");
    let y_leads = reading(members, "y");
    let judgement = judge_all(&[("x", &x_leads), ("y", &y_leads), ("z", &x_leads)]);
    assert_eq!(
        judgement,
        Judgement::Disagree {
            message: "node y names y as leader, nodes x and z name x as leader".into(),
            n_nodes: 1,
            signature: "node y names y as leader, nodes x and z name x as leader".into(),
        }
    );
}

#[test]
fn views_naming_no_leader_disagree_even_when_equal() {
    let view = reading(vec![member("x", "Follower"), member("y", "Follower")], "");
    let Judgement::Disagree {
        message, n_nodes, ..
    } = judge_all(&[("x", &view), ("y", &view)])
    else {
        panic!("no leader is a disagreement");
    };
    assert_eq!(message, "node x names no leader; node y names no leader");
    assert_eq!(n_nodes, 2);
}

#[test]
fn a_pending_node_leaves_the_cluster_undecided() {
    let view = reading(vec![member("x", "Leader")], "");
    let views = [
        NodeView {
            node: "x",
            observed: Observed::View(&view),
        },
        NodeView {
            node: "y",
            observed: Observed::Pending,
        },
    ];
    assert_eq!(judge(&views), Judgement::Undecided);
}

#[test]
fn three_nodes_in_a_group_are_listed_with_commas() {
    assert_eq!(
        nodes_phrase(&["a", "b", "c"], "sees", "see"),
        "nodes a, b and c see"
    );
}
