//! `hostwatchctl nodes` (ListNodes) and `hostwatchctl node T/C/N` (GetNode): the node
//! table, the detailed view, and their JSON.

use proto::v1::{DiskUsage, GossipSample, HostSample, ListNodesRequest, Node, NodeIdentity};
use serde_json::{Map, Value, json};

use crate::client::{Client, CtlError, call};

use crate::format::{
    Rows, ago, bytes, cell_name, health_name, insert_time, json_number, number, percent,
    render_fields, time_cell,
};

/// Every node the filters match, page after page (an answer holds as many as fit the
/// message limit).
pub(crate) async fn list_all(
    client: &mut Client,
    tenant: &str,
    cluster: &str,
) -> Result<Vec<Node>, CtlError> {
    let mut nodes = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListNodesRequest {
            tenant: tenant.to_owned(),
            cluster: cluster.to_owned(),
            page_size: 0,
            page_token,
        };
        let response = call("list nodes", client.list_nodes(request)).await?;
        nodes.extend(response.nodes);
        page_token = response.next_page_token;
        if page_token.is_empty() {
            return Ok(nodes);
        }
    }
}

/// Load per physical core, the seeds' "core load"; logical cores when the host reports
/// no physical ones; `None` without cores.
pub(crate) fn core_load(host: &HostSample) -> Option<f64> {
    let cores = if host.physical_cores > 0 {
        host.physical_cores
    } else {
        host.logical_cores
    };
    (cores > 0).then(|| host.load1 / f64::from(cores))
}

/// The fullest disk, the one that matters first.
fn worst_disk(host: &HostSample) -> Option<&DiskUsage> {
    host.disks
        .iter()
        .max_by(|left, right| left.used_percent.total_cmp(&right.used_percent))
}

fn identity(node: &Node) -> NodeIdentity {
    node.identity.clone().unwrap_or_default()
}

pub(crate) fn table(nodes: &[Node], now_unix_ms: i64) -> Rows {
    let mut rows = Rows::new(vec![
        "TENANT",
        "CLUSTER",
        "NODE",
        "HEALTH",
        "LAST SEEN",
        "CORE LOAD",
        "MEM %",
        "DISK %",
        "OPEN ISSUES",
        "AGENT",
    ]);
    for node in nodes {
        let identity = identity(node);
        let host = node.latest_host.as_ref();
        let core_load = host
            .and_then(core_load)
            .map_or_else(|| "-".to_owned(), number);
        let memory = host.map_or_else(|| "-".to_owned(), |host| percent(host.memory_used_percent));
        let disk = host.and_then(worst_disk).map_or_else(
            || "-".to_owned(),
            |disk| format!("{} {}", percent(disk.used_percent), disk.mount),
        );
        let agent = match (node.agent_version.as_str(), node.connected) {
            ("", _) => "-".to_owned(),
            (version, true) => version.to_owned(),
            (version, false) => format!("{version} (disconnected)"),
        };
        rows.rows.push(vec![
            identity.tenant,
            identity.cluster,
            identity.node,
            cell_name(health_name(node.health)),
            ago(node.last_seen_unix_ms, now_unix_ms),
            core_load,
            memory,
            disk,
            node.open_issues.to_string(),
            agent,
        ]);
    }
    rows
}

pub(crate) fn json(node: &Node) -> Value {
    let identity = identity(node);
    let mut object = Map::new();
    object.insert("tenant".into(), identity.tenant.into());
    object.insert("cluster".into(), identity.cluster.into());
    object.insert("node".into(), identity.node.into());
    object.insert(
        "service_instance_id".into(),
        identity.service_instance_id.into(),
    );
    object.insert("business_group".into(), identity.business_group.into());
    object.insert(
        "cloud_service_name".into(),
        identity.cloud_service_name.into(),
    );
    object.insert("instance_class".into(), identity.instance_class.into());
    object.insert("labels".into(), json!(identity.labels));
    object.insert("health".into(), health_name(node.health).into());
    object.insert("open_issues".into(), node.open_issues.into());
    object.insert("agent_version".into(), node.agent_version.clone().into());
    object.insert("connected".into(), node.connected.into());
    insert_time(&mut object, "last_seen", node.last_seen_unix_ms);
    object.insert("applied_seq".into(), node.applied_seq.into());
    object.insert(
        "dropped_batches_total".into(),
        node.dropped_batches_total.into(),
    );
    object.insert(
        "rejected_samples_total".into(),
        node.rejected_samples_total.into(),
    );
    for (key, value) in [
        ("batches_applied_total", node.batches_applied_total),
        ("duplicate_batches_total", node.duplicate_batches_total),
        ("skipped_seqs_total", node.skipped_seqs_total),
    ] {
        object.insert(key.into(), value.into());
    }
    let probes: Vec<Value> = node
        .probes
        .iter()
        .map(|probe| json!({ "name": probe.name, "interval_ms": probe.interval_ms }))
        .collect();
    object.insert("probes".into(), probes.into());
    object.insert(
        "latest_host".into(),
        node.latest_host.as_ref().map_or(Value::Null, host_json),
    );
    insert_time(&mut object, "latest_host_time", node.latest_host_unix_ms);
    object.insert(
        "latest_gossip".into(),
        node.latest_gossip.as_ref().map_or(Value::Null, gossip_json),
    );
    Value::Object(object)
}

fn host_json(host: &HostSample) -> Value {
    let disks: Vec<Value> = host
        .disks
        .iter()
        .map(|disk| {
            json!({
                "mount": disk.mount,
                "device": disk.device,
                "fs_type": disk.fs_type,
                "total_bytes": disk.total_bytes,
                "available_bytes": disk.available_bytes,
                "used_percent": json_number(disk.used_percent),
                "inodes_total": disk.inodes_total,
                "inodes_free": disk.inodes_free,
            })
        })
        .collect();
    json!({
        "load1": json_number(host.load1),
        "load5": json_number(host.load5),
        "load15": json_number(host.load15),
        "physical_cores": host.physical_cores,
        "logical_cores": host.logical_cores,
        "physical_cores_estimated": host.physical_cores_estimated,
        "core_load": core_load(host).map_or(Value::Null, json_number),
        "memory_total_bytes": host.memory_total_bytes,
        "memory_available_bytes": host.memory_available_bytes,
        "memory_used_percent": json_number(host.memory_used_percent),
        "disks": disks,
    })
}

fn gossip_json(gossip: &GossipSample) -> Value {
    let members: Vec<Value> = gossip
        .members
        .iter()
        .map(|member| {
            json!({
                "instance_id": member.instance_id,
                "state": member.state,
                "alive": member.alive,
                "endpoint": member.endpoint,
                "epoch_number": member.epoch_number,
            })
        })
        .collect();
    json!({
        "adapter": gossip.adapter,
        "ok": gossip.ok,
        "error": gossip.error,
        "cluster_status": gossip.cluster_status,
        "leader_id": gossip.leader_id,
        "members": members,
    })
}

/// The detailed view of one node: sections of label/value pairs and tables.
pub(crate) fn detail(node: &Node, now_unix_ms: i64) -> String {
    let identity = identity(node);
    let or_dash = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.to_owned()
        }
    };
    let labels = if identity.labels.is_empty() {
        "-".to_owned()
    } else {
        let mut labels: Vec<String> = identity
            .labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        labels.sort();
        labels.join(", ")
    };
    let mut sections = vec![render_fields(&[
        (
            "Node",
            format!("{}/{}/{}", identity.tenant, identity.cluster, identity.node),
        ),
        ("Service instance", or_dash(&identity.service_instance_id)),
        ("Business group", or_dash(&identity.business_group)),
        ("Cloud service", or_dash(&identity.cloud_service_name)),
        ("Instance class", or_dash(&identity.instance_class)),
        ("Labels", labels),
        ("Health", health_name(node.health)),
        ("Open issues", node.open_issues.to_string()),
        (
            "Last seen",
            format!(
                "{} ({})",
                ago(node.last_seen_unix_ms, now_unix_ms),
                time_cell(node.last_seen_unix_ms)
            ),
        ),
        (
            "Connected",
            if node.connected { "yes" } else { "no" }.to_owned(),
        ),
        ("Agent version", or_dash(&node.agent_version)),
    ])];

    let mut probes = Rows::new(vec!["PROBE", "INTERVAL"]);
    for probe in &node.probes {
        let interval = if probe.interval_ms == 0 {
            "event-driven".to_owned()
        } else {
            format!("{}s", number(probe.interval_ms as f64 / 1000.0))
        };
        probes.rows.push(vec![probe.name.clone(), interval]);
    }
    sections.push(if probes.rows.is_empty() {
        "Probes: none".to_owned()
    } else {
        probes.render()
    });

    match &node.latest_host {
        Some(host) => {
            let estimated = if host.physical_cores_estimated {
                " (estimated)"
            } else {
                ""
            };
            sections.push(render_fields(&[
                (
                    "Host sample",
                    format!(
                        "{} ({})",
                        ago(node.latest_host_unix_ms, now_unix_ms),
                        time_cell(node.latest_host_unix_ms)
                    ),
                ),
                (
                    "Load 1/5/15",
                    format!(
                        "{} {} {}",
                        number(host.load1),
                        number(host.load5),
                        number(host.load15)
                    ),
                ),
                (
                    "Cores",
                    format!(
                        "{} physical{estimated}, {} logical",
                        host.physical_cores, host.logical_cores
                    ),
                ),
                (
                    "Core load",
                    core_load(host).map_or_else(|| "-".to_owned(), number),
                ),
                (
                    "Memory",
                    format!(
                        "{} used ({} available of {})",
                        percent(host.memory_used_percent),
                        bytes(host.memory_available_bytes),
                        bytes(host.memory_total_bytes)
                    ),
                ),
            ]));
            sections.push(disks(&host.disks).render());
        }
        None => sections.push("Host sample: none yet".to_owned()),
    }

    if let Some(gossip) = &node.latest_gossip {
        let status = if gossip.ok {
            "ok".to_owned()
        } else {
            format!("failed: {}", gossip.error)
        };
        sections.push(render_fields(&[
            ("Gossip", format!("{} ({status})", gossip.adapter)),
            ("Leader", or_dash(&gossip.leader_id)),
            ("Cluster status", or_dash(&gossip.cluster_status)),
        ]));
        if !gossip.members.is_empty() {
            let mut members = Rows::new(vec!["MEMBER", "STATE", "ALIVE", "ENDPOINT", "EPOCH"]);
            for member in &gossip.members {
                members.rows.push(vec![
                    member.instance_id.clone(),
                    member.state.clone(),
                    if member.alive { "yes" } else { "no" }.to_owned(),
                    member.endpoint.clone(),
                    member.epoch_number.to_string(),
                ]);
            }
            sections.push(members.render());
        }
    }

    sections.push(render_fields(&[
        ("Applied seq", node.applied_seq.to_string()),
        ("Dropped batches", node.dropped_batches_total.to_string()),
        ("Rejected samples", node.rejected_samples_total.to_string()),
        ("Batches applied", node.batches_applied_total.to_string()),
        (
            "Duplicate batches",
            node.duplicate_batches_total.to_string(),
        ),
        ("Skipped seqs", node.skipped_seqs_total.to_string()),
    ]));
    sections.join("\n\n")
}

/// All disks of a host sample, in the order the agent sent them.
pub(crate) fn disks(disks: &[DiskUsage]) -> Rows {
    let mut rows = Rows::new(vec![
        "MOUNT",
        "DEVICE",
        "FS",
        "SIZE",
        "AVAILABLE",
        "USED %",
        "INODES USED %",
    ]);
    for disk in disks {
        let inodes = if disk.inodes_total > 0 {
            let used = disk.inodes_total - disk.inodes_free;
            percent(100.0 * used as f64 / disk.inodes_total as f64)
        } else {
            "-".to_owned()
        };
        rows.rows.push(vec![
            disk.mount.clone(),
            disk.device.clone(),
            disk.fs_type.clone(),
            bytes(disk.total_bytes),
            bytes(disk.available_bytes),
            percent(disk.used_percent),
            inodes,
        ]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::{HealthStatus, ProbeInfo};

    const NOW: i64 = 1_700_000_010_000;

    pub(crate) fn node() -> Node {
        Node {
            identity: Some(NodeIdentity {
                tenant: "acme".into(),
                cluster: "e2e".into(),
                node: "node-a".into(),
                service_instance_id: "0190b1a2-0000-7000-8000-000000000001".into(),
                labels: [("az".to_owned(), "eu-west-1a".to_owned())].into(),
                ..Default::default()
            }),
            agent_version: "0.1.0".into(),
            last_seen_unix_ms: NOW - 3_000,
            connected: true,
            latest_host: Some(HostSample {
                load1: 0.5,
                load5: 0.25,
                load15: 0.125,
                physical_cores: 2,
                logical_cores: 4,
                physical_cores_estimated: false,
                memory_total_bytes: 8 << 30,
                memory_available_bytes: 6 << 30,
                memory_used_percent: 25.0,
                disks: vec![
                    DiskUsage {
                        mount: "/".into(),
                        device: "/dev/vda".into(),
                        fs_type: "ext4".into(),
                        total_bytes: 100 << 30,
                        available_bytes: 87 << 30,
                        used_percent: 13.0,
                        inodes_total: 1000,
                        inodes_free: 750,
                    },
                    DiskUsage {
                        mount: "/var/lib/eventstore".into(),
                        device: "/dev/vdb".into(),
                        fs_type: "xfs".into(),
                        total_bytes: 10 << 30,
                        available_bytes: 1 << 30,
                        used_percent: 90.5,
                        inodes_total: 0,
                        inodes_free: 0,
                    },
                ],
            }),
            latest_host_unix_ms: NOW - 4_000,
            latest_gossip: None,
            probes: vec![ProbeInfo {
                name: "host".into(),
                interval_ms: 1000,
            }],
            dropped_batches_total: 2,
            rejected_samples_total: 1,
            applied_seq: 42,
            open_issues: 1,
            health: HealthStatus::Warning as i32,
            batches_applied_total: 40,
            duplicate_batches_total: 3,
            skipped_seqs_total: 2,
        }
    }

    #[test]
    fn table_row_shows_core_load_memory_and_the_worst_disk() {
        let rows = table(&[node()], NOW);
        assert_eq!(rows.header[4], "LAST SEEN");
        assert_eq!(
            rows.rows,
            [[
                "acme",
                "e2e",
                "node-a",
                "warning",
                "3s ago",
                "0.25",
                "25 %",
                "90.5 % /var/lib/eventstore",
                "1",
                "0.1.0",
            ]]
        );
    }

    #[test]
    fn table_row_without_samples_uses_dashes() {
        let mut node = node();
        node.latest_host = None;
        node.connected = false;
        let row = &table(&[node], NOW).rows[0];
        assert_eq!(&row[5..], ["-", "-", "-", "1", "0.1.0 (disconnected)"]);
    }

    #[test]
    fn core_load_falls_back_to_logical_cores() {
        let host = HostSample {
            load1: 3.0,
            logical_cores: 4,
            ..Default::default()
        };
        assert_eq!(core_load(&host), Some(0.75));
        assert_eq!(core_load(&HostSample::default()), None);
    }

    #[test]
    fn json_flattens_identity_and_keeps_every_disk() {
        let value = json(&node());
        assert_eq!(value["tenant"], "acme");
        assert_eq!(value["node"], "node-a");
        assert_eq!(value["labels"], json!({ "az": "eu-west-1a" }));
        assert_eq!(value["health"], "warning");
        assert_eq!(value["connected"], true);
        assert_eq!(value["last_seen"], "2023-11-14T22:13:27.000Z");
        assert_eq!(value["last_seen_unix_ms"], NOW - 3_000);
        assert_eq!(value["latest_host"]["core_load"], 0.25);
        assert_eq!(
            value["latest_host"]["disks"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(value["latest_host"]["disks"][0]["mount"], "/");
        assert_eq!(value["latest_gossip"], Value::Null);
        assert_eq!(
            value["probes"],
            json!([{ "name": "host", "interval_ms": 1000 }])
        );
        assert_eq!(value["applied_seq"], 42);
    }

    #[test]
    fn detail_lists_identity_disks_and_counters() {
        let text = detail(&node(), NOW);
        assert!(text.contains("Node:"), "{text}");
        assert!(text.contains("acme/e2e/node-a"), "{text}");
        let field = |label: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(label))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {label} line in:\n{text}"))
                .to_owned()
        };
        assert_eq!(field("Labels:"), "az=eu-west-1a");
        assert!(text.contains("/var/lib/eventstore"), "{text}");
        assert_eq!(field("Dropped batches:"), "2");
        assert_eq!(field("Batches applied:"), "40");
        assert_eq!(field("Duplicate batches:"), "3");
        assert_eq!(field("Skipped seqs:"), "2");
        assert!(text.contains("host   1s"), "{text}");
    }

    #[test]
    fn disks_table_has_inode_usage_when_known() {
        let rows = disks(&node().latest_host.unwrap().disks);
        assert_eq!(
            rows.rows[0],
            [
                "/",
                "/dev/vda",
                "ext4",
                "100.0 GiB",
                "87.0 GiB",
                "13 %",
                "25 %"
            ]
        );
        assert_eq!(rows.rows[1][6], "-");
    }
}
