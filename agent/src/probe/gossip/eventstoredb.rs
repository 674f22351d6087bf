//! EventStoreDB's `GET /gossip`: current field names (`httpEndPointIp`, as in
//! `shared/reference/eventstoredb-gossip-healthy.json`) and the 5.x ones (`externalHttpIp`,
//! `internalHttpIp`, states `Master`/`Slave`).
//!
//! States are reported as the node wrote them; the leader is the first alive member in
//! state `Leader` (5.x: `Master`). Timestamps and checkpoints are ignored: they change on
//! every query and say nothing about who is in the cluster.

use proto::v1::GossipMember;
use serde::Deserialize;

use super::{ClusterView, GossipError, endpoint};

pub(super) const PATH: &str = "/gossip";

#[derive(Deserialize)]
struct Gossip {
    members: Option<Vec<Member>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Member {
    instance_id: Option<String>,
    state: Option<String>,
    is_alive: Option<bool>,
    epoch_number: Option<i64>,
    // 20.x and later.
    http_end_point_ip: Option<String>,
    http_end_point_port: Option<u16>,
    internal_http_end_point_ip: Option<String>,
    internal_http_end_point_port: Option<u16>,
    // 5.x.
    external_http_ip: Option<String>,
    external_http_port: Option<u16>,
    internal_http_ip: Option<String>,
    internal_http_port: Option<u16>,
}

pub(super) fn parse(body: &[u8], path: &str) -> Result<ClusterView, GossipError> {
    let gossip: Gossip = serde_json::from_slice(body).map_err(|err| GossipError::InvalidJson {
        path: path.to_owned(),
        message: err.to_string(),
    })?;
    let unexpected = |message: String| GossipError::Unexpected {
        path: path.to_owned(),
        message,
    };
    let members = gossip
        .members
        .ok_or_else(|| unexpected("no \"members\"".to_owned()))?;
    let mut view = ClusterView::default();
    for (idx, member) in members.into_iter().enumerate() {
        let missing = |field: &str| unexpected(format!("members[{idx}]: no \"{field}\""));
        let instance_id = member.instance_id.ok_or_else(|| missing("instanceId"))?;
        let state = member.state.ok_or_else(|| missing("state"))?;
        let alive = member.is_alive.ok_or_else(|| missing("isAlive"))?;
        let endpoint = [
            (member.http_end_point_ip, member.http_end_point_port),
            (member.external_http_ip, member.external_http_port),
            (
                member.internal_http_end_point_ip,
                member.internal_http_end_point_port,
            ),
            (member.internal_http_ip, member.internal_http_port),
        ]
        .into_iter()
        .find_map(|(ip, port)| ip.filter(|ip| !ip.is_empty()).map(|ip| endpoint(&ip, port)))
        .unwrap_or_default();
        let is_leader =
            state.eq_ignore_ascii_case("leader") || state.eq_ignore_ascii_case("master");
        if is_leader && alive && view.leader_id.is_empty() {
            view.leader_id.clone_from(&instance_id);
        }
        view.members.push(GossipMember {
            instance_id,
            state,
            alive,
            endpoint,
            epoch_number: member.epoch_number.unwrap_or(-1),
        });
    }
    Ok(view)
}
