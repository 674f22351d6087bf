//! `hostwatchctl clusters`: ListClusters as a table or JSON.

use proto::v1::Cluster;
use serde_json::{Value, json};

use crate::format::{Rows, cell_name, health_name};

pub(crate) fn table(clusters: &[Cluster]) -> Rows {
    let mut rows = Rows::new(vec![
        "TENANT",
        "CLUSTER",
        "HEALTH",
        "NODES",
        "REPORTING",
        "OPEN ISSUES",
    ]);
    for cluster in clusters {
        rows.rows.push(vec![
            cluster.tenant.clone(),
            cluster.cluster.clone(),
            cell_name(health_name(cluster.health)),
            cluster.node_count.to_string(),
            cluster.nodes_reporting.to_string(),
            cluster.open_issues.to_string(),
        ]);
    }
    rows
}

pub(crate) fn json(clusters: &[Cluster]) -> Value {
    Value::Array(
        clusters
            .iter()
            .map(|cluster| {
                json!({
                    "tenant": cluster.tenant,
                    "cluster": cluster.cluster,
                    "health": health_name(cluster.health),
                    "node_count": cluster.node_count,
                    "nodes_reporting": cluster.nodes_reporting,
                    "open_issues": cluster.open_issues,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::HealthStatus;

    fn cluster() -> Cluster {
        Cluster {
            tenant: "acme".into(),
            cluster: "orders".into(),
            node_count: 3,
            nodes_reporting: 2,
            open_issues: 1,
            health: HealthStatus::Warning as i32,
        }
    }

    #[test]
    fn table_has_one_row_per_cluster() {
        let rows = table(&[cluster()]);
        assert_eq!(
            rows.header,
            [
                "TENANT",
                "CLUSTER",
                "HEALTH",
                "NODES",
                "REPORTING",
                "OPEN ISSUES"
            ]
        );
        assert_eq!(rows.rows, [["acme", "orders", "warning", "3", "2", "1"]]);
    }

    #[test]
    fn json_is_an_array_of_objects() {
        assert_eq!(
            json(&[cluster()]),
            json!([{
                "tenant": "acme", "cluster": "orders", "health": "warning",
                "node_count": 3, "nodes_reporting": 2, "open_issues": 1,
            }])
        );
    }
}
