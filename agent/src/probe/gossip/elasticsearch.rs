//! Elasticsearch: the node's view of its cluster from `_cat/nodes` (members, the elected
//! master) and `_cluster/health` (green, yellow or red).
//!
//! A member's state is `master` for the elected master and its role letters (e.g. `dimr`)
//! otherwise; every listed node is alive (a node the cluster lost is not listed); epochs do
//! not apply (-1). Shards, storage and document counts are other rules' business.

use proto::v1::GossipMember;
use serde::Deserialize;

use super::{ClusterView, GossipError};

pub(super) const NODES_PATH: &str =
    "/_cat/nodes?format=json&full_id=true&h=id,name,ip,http_address,node.role,master";
pub(super) const HEALTH_PATH: &str = "/_cluster/health";

#[derive(Deserialize)]
struct CatNode {
    id: Option<String>,
    name: Option<String>,
    ip: Option<String>,
    http_address: Option<String>,
    #[serde(rename = "node.role")]
    role: Option<String>,
    master: Option<String>,
}

#[derive(Deserialize)]
struct Health {
    status: Option<String>,
}

pub(super) fn parse(nodes_body: &[u8], health_body: &[u8]) -> Result<ClusterView, GossipError> {
    let invalid = |path: &str, err: serde_json::Error| GossipError::InvalidJson {
        path: path.to_owned(),
        message: err.to_string(),
    };
    let nodes: Vec<CatNode> =
        serde_json::from_slice(nodes_body).map_err(|err| invalid("/_cat/nodes", err))?;
    let health: Health =
        serde_json::from_slice(health_body).map_err(|err| invalid(HEALTH_PATH, err))?;
    let cluster_status = health.status.ok_or_else(|| GossipError::Unexpected {
        path: HEALTH_PATH.to_owned(),
        message: "no \"status\"".to_owned(),
    })?;
    let mut view = ClusterView {
        cluster_status,
        ..ClusterView::default()
    };
    for (idx, node) in nodes.into_iter().enumerate() {
        let instance_id = node
            .id
            .or(node.name)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| GossipError::Unexpected {
                path: "/_cat/nodes".to_owned(),
                message: format!("[{idx}]: no \"id\" or \"name\""),
            })?;
        let elected = node.master.as_deref() == Some("*");
        if elected && view.leader_id.is_empty() {
            view.leader_id.clone_from(&instance_id);
        }
        let state = if elected {
            "master".to_owned()
        } else {
            node.role.unwrap_or_default()
        };
        view.members.push(GossipMember {
            instance_id,
            state,
            alive: true,
            endpoint: node.http_address.or(node.ip).unwrap_or_default(),
            epoch_number: -1,
        });
    }
    Ok(view)
}
