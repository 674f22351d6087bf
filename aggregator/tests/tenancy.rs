//! Authentication and tenant isolation over real gRPC on loopback: a real aggregator with
//! agent and operator tokens, tonic clients playing agents of two tenants and operators
//! with tenant, global, viewer and admin tokens.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic, loudly

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aggregator::auth::token_sha256;
use aggregator::config::AggregatorConfig;
use aggregator::server::Aggregator;
use proto::v1 as wire;
use proto::v1::ingest_client::IngestClient;
use proto::v1::operator_client::OperatorClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

const ACME_AGENT: &str = "acme-agent-secret";
const ACME_DB_AGENT: &str = "acme-db-only-secret";
const GLOBEX_AGENT: &str = "globex-agent-secret";
const ACME_VIEWER: &str = "acme-viewer-secret";
const ACME_ADMIN: &str = "acme-admin-secret";
const GLOBEX_ADMIN: &str = "globex-admin-secret";
const GLOBAL_VIEWER: &str = "global-viewer-secret";

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
}

fn config_text(data_dir: &std::path::Path) -> String {
    let token_dir = data_dir.join("tokens");
    std::fs::create_dir_all(&token_dir).unwrap();
    // One token from a file, to show both ways work end to end.
    let globex_file = token_dir.join("globex-admin");
    std::fs::write(&globex_file, format!("{GLOBEX_ADMIN}\n")).unwrap();
    format!(
        r#"
        listen = "127.0.0.1:0"
        data_dir = "{data}"

        [[auth.agent_tokens]]
        name = "acme-agents"
        tenant = "acme"
        sha256 = "{acme_agent}"
        [[auth.agent_tokens]]
        name = "acme-db-agents"
        tenant = "acme"
        cluster = "db"
        sha256 = "{acme_db_agent}"
        [[auth.agent_tokens]]
        name = "globex-agents"
        tenant = "globex"
        sha256 = "{globex_agent}"

        [[auth.operator_tokens]]
        name = "acme-viewer"
        tenant = "acme"
        role = "viewer"
        sha256 = "{acme_viewer}"
        [[auth.operator_tokens]]
        name = "acme-admin"
        tenant = "acme"
        role = "admin"
        sha256 = "{acme_admin}"
        [[auth.operator_tokens]]
        name = "globex-admin"
        tenant = "globex"
        role = "admin"
        token_file = "{globex_file}"
        [[auth.operator_tokens]]
        name = "global-viewer"
        role = "viewer"
        sha256 = "{global_viewer}"
        "#,
        data = data_dir.display(),
        acme_agent = token_sha256(ACME_AGENT),
        acme_db_agent = token_sha256(ACME_DB_AGENT),
        globex_agent = token_sha256(GLOBEX_AGENT),
        acme_viewer = token_sha256(ACME_VIEWER),
        acme_admin = token_sha256(ACME_ADMIN),
        global_viewer = token_sha256(GLOBAL_VIEWER),
        globex_file = globex_file.display(),
    )
}

impl Running {
    async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    /// An aggregator on the database in `data` (a restart when it holds one).
    async fn start_in(data: tempfile::TempDir) -> Self {
        let config = AggregatorConfig::parse(&config_text(data.path())).unwrap();
        assert_eq!(config.validate(), Ok(()));
        let aggregator = Aggregator::bind(config).await.unwrap();
        let addr = aggregator.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            aggregator
                .run(async { stopped.await.unwrap_or(()) })
                .await
                .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            task,
            _data: data,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Stops it; returns its data directory, for a restart.
    async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .unwrap()
            .unwrap();
        self._data
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn hello(tenant: &str, cluster: &str, node: &str, token: &str) -> wire::AgentMessage {
    wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Hello(wire::Hello {
            identity: Some(wire::NodeIdentity {
                tenant: tenant.into(),
                cluster: cluster.into(),
                node: node.into(),
                ..Default::default()
            }),
            agent_version: "test".into(),
            probes: vec![wire::ProbeInfo {
                name: "host".into(),
                interval_ms: 1000,
            }],
            token: token.into(),
            seq_epoch: "e1".into(),
            ..Default::default()
        })),
    }
}

/// A host sample whose core load (10 on 1 core) opens a `core_load` issue at once.
fn overloaded() -> wire::AgentMessage {
    wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Batch(wire::SampleBatch {
            seq: 1,
            samples: vec![wire::Sample {
                time_unix_ms: now_ms(),
                kind: Some(wire::sample::Kind::Host(wire::HostSample {
                    load1: 10.0,
                    physical_cores: 1,
                    logical_cores: 1,
                    memory_total_bytes: 1 << 30,
                    memory_available_bytes: 1 << 29,
                    memory_used_percent: 50.0,
                    ..Default::default()
                })),
            }],
            dropped_batches_total: 0,
        })),
    }
}

/// Opens an agent stream with `first`; the status when the aggregator refuses it.
async fn open_stream(
    channel: Channel,
    first: wire::AgentMessage,
) -> Result<
    (
        mpsc::Sender<wire::AgentMessage>,
        tonic::Streaming<wire::AggregatorMessage>,
    ),
    tonic::Status,
> {
    let (sender, outbound) = mpsc::channel(16);
    sender.send(first).await.unwrap();
    let response = IngestClient::new(channel)
        .stream(ReceiverStream::new(outbound))
        .await?;
    Ok((sender, response.into_inner()))
}

/// An agent that reports one overloaded sample and waits for its ack.
async fn report(running: &Running, tenant: &str, cluster: &str, node: &str, token: &str) {
    let (sender, mut inbound) =
        open_stream(running.channel().await, hello(tenant, cluster, node, token))
            .await
            .unwrap();
    sender.send(overloaded()).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(
        message.kind,
        Some(wire::aggregator_message::Kind::Ack(_))
    ));
}

/// Adds the operator's bearer token, if any, to every call.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

type Operator = OperatorClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

async fn operator(running: &Running, token: Option<&str>) -> Operator {
    let header = token.map(|token| format!("Bearer {token}").parse().unwrap());
    OperatorClient::with_interceptor(running.channel().await, Bearer(header))
}

fn notification(tenant: &str, cluster: &str, title: &str) -> wire::PublishNotificationRequest {
    wire::PublishNotificationRequest {
        tenant: tenant.into(),
        cluster: cluster.into(),
        node: String::new(),
        severity: wire::Severity::Error as i32,
        title: title.into(),
        text: "from the tenancy test".into(),
    }
}

/// Both tenants have a node with an open issue.
async fn two_tenants() -> (Running, String, String) {
    let running = Running::start().await;
    report(&running, "acme", "db", "a1", ACME_AGENT).await;
    report(&running, "globex", "web", "g1", GLOBEX_AGENT).await;
    let mut global = operator(&running, Some(GLOBAL_VIEWER)).await;
    let issues = global
        .list_issues(wire::ListIssuesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .issues;
    let id_of = |tenant: &str| {
        issues
            .iter()
            .find(|issue| issue.tenant == tenant)
            .unwrap_or_else(|| panic!("an open issue for {tenant}: {issues:#?}"))
            .id
            .clone()
    };
    let (acme_issue, globex_issue) = (id_of("acme"), id_of("globex"));
    (running, acme_issue, globex_issue)
}

#[tokio::test]
async fn every_read_rpc_answers_from_the_callers_tenant_only() {
    let (running, acme_issue, globex_issue) = two_tenants().await;
    for token in [ACME_VIEWER, ACME_ADMIN] {
        let mut acme = operator(&running, Some(token)).await;

        let clusters = acme
            .list_clusters(wire::ListClustersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .clusters;
        let names: Vec<(&str, &str)> = clusters
            .iter()
            .map(|c| (c.tenant.as_str(), c.cluster.as_str()))
            .collect();
        assert_eq!(names, [("acme", "db")]);

        let nodes = acme
            .list_nodes(wire::ListNodesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .nodes;
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].identity.as_ref().unwrap().tenant, "acme");

        let issues = acme
            .list_issues(wire::ListIssuesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .issues;
        assert!(!issues.is_empty());
        assert!(
            issues.iter().all(|issue| issue.tenant == "acme"),
            "{issues:#?}"
        );

        // Naming the other tenant is refused on every call that takes a tenant.
        let denied = [
            acme.list_clusters(wire::ListClustersRequest {
                tenant: "globex".into(),
            })
            .await
            .map(|_| ())
            .unwrap_err(),
            acme.list_nodes(wire::ListNodesRequest {
                tenant: "globex".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .unwrap_err(),
            acme.get_node(wire::GetNodeRequest {
                tenant: "globex".into(),
                cluster: "web".into(),
                node: "g1".into(),
            })
            .await
            .map(|_| ())
            .unwrap_err(),
            acme.list_issues(wire::ListIssuesRequest {
                tenant: "globex".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .unwrap_err(),
            acme.watch_events(wire::WatchEventsRequest {
                tenant: "globex".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .unwrap_err(),
        ];
        for status in denied {
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert!(!status.message().contains(token), "a token is never echoed");
        }

        // The other tenant's issue, by id, is as unknown as a made-up id; its own is there.
        let status = acme
            .get_issue(wire::GetIssueRequest {
                id: globex_issue.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let own = acme
            .get_issue(wire::GetIssueRequest {
                id: acme_issue.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(own.issue.unwrap().tenant, "acme");
    }

    // A global token sees both.
    let mut global = operator(&running, Some(GLOBAL_VIEWER)).await;
    let clusters = global
        .list_clusters(wire::ListClustersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .clusters;
    assert_eq!(clusters.len(), 2);
    global
        .get_issue(wire::GetIssueRequest { id: globex_issue })
        .await
        .unwrap();
    running.stop().await;
}

/// GetIssue says why the issue is open: the rule, its condition and window, and the one
/// sample that opened it (core_load opens on the first sample over 2.0). Only the
/// issue's tenant (or a global token) gets it.
#[tokio::test]
async fn get_issue_explains_why_it_is_open_to_its_tenant_only() {
    let (running, acme_issue, globex_issue) = two_tenants().await;
    let mut acme = operator(&running, Some(ACME_VIEWER)).await;
    let response = acme
        .get_issue(wire::GetIssueRequest {
            id: acme_issue.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let issue = response.issue.unwrap();
    let explanation = response.explanation.expect("an explanation");
    assert!(explanation.closed.is_none());
    let opened = explanation.opened.unwrap();
    assert_eq!(opened.rule, "core_load");
    assert_eq!(opened.measured, "core load on acme/db/a1");
    assert_eq!(opened.detail, "load1 10.00 over 1 physical cores");
    assert_eq!(opened.severity, wire::Severity::Warning as i32);
    let condition = opened.condition.unwrap();
    assert_eq!(
        (condition.comparator.as_str(), condition.threshold),
        (">", 2.0)
    );
    assert_eq!(condition.unit, "ratio");
    let window = opened.window.unwrap();
    assert_eq!((window.open_for_ms, window.close_for_ms), (0, 120_000));
    assert_eq!(window.from_unix_ms, window.to_unix_ms);
    assert_eq!(opened.samples.len(), 1);
    assert_eq!(opened.samples[0].value, 10.0);
    assert_eq!(opened.samples[0].time_unix_ms, window.to_unix_ms);
    assert_eq!(opened.samples_elided, 0);
    assert_eq!(opened.decided_unix_ms, issue.opened_unix_ms);

    // Another tenant's issue stays NOT_FOUND, explanation and all; a global token sees it.
    let status = acme
        .get_issue(wire::GetIssueRequest {
            id: globex_issue.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(!status.message().contains("core_load"), "{status:?}");
    let mut global = operator(&running, Some(GLOBAL_VIEWER)).await;
    let globex = global
        .get_issue(wire::GetIssueRequest { id: globex_issue })
        .await
        .unwrap()
        .into_inner();
    let opened = globex.explanation.unwrap().opened.unwrap();
    assert_eq!(opened.measured, "core load on globex/web/g1");
    running.stop().await;
}

#[tokio::test]
async fn watch_events_carries_only_the_callers_tenant() {
    let running = Running::start().await;
    let mut acme_watcher = operator(&running, Some(ACME_VIEWER)).await;
    let mut stream = acme_watcher
        .watch_events(wire::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Published after the watch began: globex's first, then acme's. Acme sees only its own.
    let mut globex = operator(&running, Some(GLOBEX_ADMIN)).await;
    let published = globex
        .publish_notification(notification("globex", "web", "globex secret"))
        .await
        .unwrap()
        .into_inner()
        .notification
        .unwrap();
    assert_eq!(published.origin, "operator globex-admin");
    let mut acme = operator(&running, Some(ACME_ADMIN)).await;
    acme.publish_notification(notification("acme", "db", "acme news"))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.tenant, "acme");
    let Some(wire::event::Payload::Notification(notification)) = event.payload else {
        panic!("a notification: {event:?}");
    };
    assert_eq!(notification.title, "acme news");
    running.stop().await;
}

#[tokio::test]
async fn viewers_may_not_publish_and_admins_only_for_their_tenant() {
    let running = Running::start().await;
    // Every mutating RPC of the Operator service, as a viewer: refused.
    for token in [ACME_VIEWER, GLOBAL_VIEWER] {
        let mut viewer = operator(&running, Some(token)).await;
        let status = viewer
            .publish_notification(notification("acme", "db", "nope"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let mut acme = operator(&running, Some(ACME_ADMIN)).await;
    let status = acme
        .publish_notification(notification("globex", "web", "not mine"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // Nothing was published for globex.
    let mut globex = operator(&running, Some(GLOBEX_ADMIN)).await;
    let mut stream = globex
        .watch_events(wire::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    globex
        .publish_notification(notification("globex", "web", "marker"))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(wire::event::Payload::Notification(first)) = event.payload else {
        panic!("a notification");
    };
    assert_eq!(first.title, "marker");
    running.stop().await;
}

/// A tenant, cluster or node name that no agent could have (`..`) is INVALID_ARGUMENT
/// naming the field, in a filter as in a notification: never "nothing found", never stored.
#[tokio::test]
async fn names_that_cannot_exist_are_invalid_arguments_on_every_call() {
    let running = Running::start().await;
    let mut viewer = operator(&running, Some(GLOBAL_VIEWER)).await;
    let mut admin = operator(&running, Some(ACME_ADMIN)).await;
    let refused = |field: &str, result: Result<(), tonic::Status>| {
        let status = result.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: \"..\"")),
            "{field}: {status:?}"
        );
    };
    for field in ["tenant", "cluster", "node"] {
        let bad = |wanted: &str| if wanted == field { ".." } else { "" }.to_owned();
        if field != "node" {
            let nodes = wire::ListNodesRequest {
                tenant: bad("tenant"),
                cluster: bad("cluster"),
                ..Default::default()
            };
            refused(field, viewer.list_nodes(nodes).await.map(drop));
            let watch = wire::WatchEventsRequest {
                tenant: bad("tenant"),
                cluster: bad("cluster"),
                ..Default::default()
            };
            refused(field, viewer.watch_events(watch).await.map(drop));
        }
        let issues = wire::ListIssuesRequest {
            tenant: bad("tenant"),
            cluster: bad("cluster"),
            node: bad("node"),
            ..Default::default()
        };
        refused(field, viewer.list_issues(issues).await.map(drop));
        let node = wire::GetNodeRequest {
            tenant: bad("tenant"),
            cluster: bad("cluster"),
            node: bad("node"),
        };
        refused(field, viewer.get_node(node).await.map(drop));
        let mut published = notification("acme", "db", "bad name");
        match field {
            "tenant" => published.tenant = "..".into(),
            "cluster" => published.cluster = "..".into(),
            _ => published.node = "..".into(),
        }
        refused(field, admin.publish_notification(published).await.map(drop));
    }
    let clusters = wire::ListClustersRequest {
        tenant: "..".into(),
    };
    refused("tenant", viewer.list_clusters(clusters).await.map(drop));
    // Nothing was published: acme's first notification is the marker.
    let mut stream = admin
        .watch_events(wire::WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    admin
        .publish_notification(notification("acme", "db", "marker"))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Some(wire::event::Payload::Notification(first)) = event.payload else {
        panic!("a notification");
    };
    assert_eq!(first.title, "marker");
    running.stop().await;
}

#[tokio::test]
async fn operators_without_a_known_token_are_unauthenticated() {
    let running = Running::start().await;
    for token in [None, Some("made-up"), Some(ACME_AGENT)] {
        let mut client = operator(&running, token).await;
        let status = client
            .list_nodes(wire::ListNodesRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
        let status = client
            .watch_events(wire::WatchEventsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
    }
    running.stop().await;
}

#[tokio::test]
async fn agents_are_held_to_their_tokens_tenant_and_cluster() {
    let running = Running::start().await;
    let refused = |tenant: &'static str, cluster: &'static str, token: &'static str| {
        let running = &running;
        async move {
            open_stream(running.channel().await, hello(tenant, cluster, "x", token))
                .await
                .map(|_| ())
                .unwrap_err()
        }
    };
    // A tenant-A token claiming tenant B.
    let status = refused("globex", "web", ACME_AGENT).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("acme-agents"), "{status:?}");
    assert!(!status.message().contains(ACME_AGENT));
    // A cluster-bound token claiming another cluster of its tenant.
    let status = refused("acme", "web", ACME_DB_AGENT).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    // Unknown and missing tokens; an operator's token is not an agent's.
    for token in ["guess", "", ACME_ADMIN] {
        let status = refused("acme", "db", token).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
    }
    // The token may also come as `authorization` metadata (it wins over the Hello's).
    let (sender, outbound) = mpsc::channel(4);
    sender
        .send(hello("acme", "db", "meta", "wrong-in-hello"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(outbound));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ACME_DB_AGENT}").parse().unwrap(),
    );
    let mut inbound = IngestClient::new(running.channel().await)
        .stream(request)
        .await
        .unwrap()
        .into_inner();
    sender.send(overloaded()).await.unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(
        ack.kind,
        Some(wire::aggregator_message::Kind::Ack(_))
    ));
    // Nothing of the refused agents reached the aggregator.
    let mut global = operator(&running, Some(GLOBAL_VIEWER)).await;
    let nodes = global
        .list_nodes(wire::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .nodes;
    let names: Vec<String> = nodes
        .iter()
        .map(|node| node.identity.as_ref().unwrap().node.clone())
        .collect();
    assert_eq!(names, ["meta"]);
    running.stop().await;
}

#[tokio::test]
async fn without_tokens_a_public_address_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let mut config = AggregatorConfig::parse("listen = \"0.0.0.0:0\"").unwrap();
    config.data_dir = data.path().to_owned();
    let error = Aggregator::bind(config).await.unwrap_err().to_string();
    assert!(
        error.contains("0.0.0.0:0 is not a loopback address"),
        "{error}"
    );
}

/// An issue of a rule this build does not know (written by another build, e.g. before a
/// rollback) does not stop the aggregator: it loads, lists with its rule and resource,
/// and an admin of its tenant closes it, the reason recorded in its `closed` event.
#[tokio::test]
async fn an_issue_of_an_unknown_rule_lists_and_its_tenants_admin_closes_it() {
    const ID: &str = "0190b1a2-1111-7000-8000-00000000abcd";
    let data = Running::start().await.stop().await;
    let connection = rusqlite::Connection::open(data.path().join("hostwatch.db")).unwrap();
    connection
        .execute(
            "INSERT INTO issues (id, rule, tenant, cluster, node, resource_kind, resource,
                 severity, state, opened_ms, updated_ms, value, threshold, message, remedy)
             VALUES (?1, 'retired_rule', 'acme', 'db', '', 'service', 'checkout', 'error',
                 'open', ?2, ?2, 7.5, 5.0, 'from a newer build', '')",
            rusqlite::params![ID, now_ms()],
        )
        .unwrap();
    drop(connection);
    let running = Running::start_in(data).await;

    let open = wire::ListIssuesRequest {
        state: wire::IssueState::Open as i32,
        ..Default::default()
    };
    let mut viewer = operator(&running, Some(ACME_VIEWER)).await;
    let listed = viewer
        .list_issues(open.clone())
        .await
        .unwrap()
        .into_inner()
        .issues;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(
        (
            listed[0].id.as_str(),
            listed[0].rule.as_str(),
            listed[0].resource_kind.as_str(),
            listed[0].resource.as_str()
        ),
        (ID, "retired_rule", "service", "checkout")
    );

    let close = |reason: &str| wire::CloseIssueRequest {
        id: ID.into(),
        reason: reason.into(),
    };
    let denied = viewer.close_issue(close("gone")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let mut globex = operator(&running, Some(GLOBEX_ADMIN)).await;
    let unknown = globex.close_issue(close("gone")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let mut admin = operator(&running, Some(ACME_ADMIN)).await;
    let no_reason = admin.close_issue(close("  ")).await.unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument, "{no_reason:?}");

    let closed = admin
        .close_issue(close("the rule was retired"))
        .await
        .unwrap()
        .into_inner()
        .issue
        .unwrap();
    assert_eq!(closed.state, wire::IssueState::Closed as i32);
    assert_eq!(closed.rule, "retired_rule");
    let detail = viewer
        .get_issue(wire::GetIssueRequest { id: ID.into() })
        .await
        .unwrap()
        .into_inner();
    let last = detail.events.last().unwrap();
    assert_eq!(last.kind, wire::IssueEventKind::Closed as i32);
    assert_eq!(
        last.message,
        "closed by operator acme-admin: the rule was retired"
    );
    let again = admin.close_issue(close("twice")).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let still_open = viewer.list_issues(open).await.unwrap().into_inner().issues;
    assert_eq!(still_open, []);
    running.stop().await;
}

/// Issue 16: a tenant whose nodes' labels add up to more than the gRPC message limit
/// made ListNodes fail for the whole tenant ("decoded message length too large"). The
/// list is paged: every page fits the client's default 4 MiB, and following the pages
/// lists every node of the caller's tenant once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_nodes_pages_a_tenant_larger_than_one_message() {
    const NODES: usize = 600;
    const LABELS: usize = 40;
    let running = Running::start().await;
    let mut channels = Vec::new();
    for _ in 0..6 {
        channels.push(running.channel().await);
    }
    let mut hellos = tokio::task::JoinSet::new();
    for index in 0..NODES {
        let channel = channels[index % channels.len()].clone();
        hellos.spawn(async move {
            let mut message = hello("acme", "big", &format!("n{index:03}"), ACME_AGENT);
            if let Some(wire::agent_message::Kind::Hello(hello)) = &mut message.kind {
                let identity = hello.identity.as_mut().unwrap();
                for label in 0..LABELS {
                    identity
                        .labels
                        .insert(format!("label-{label:02}"), format!("{label:0>200}"));
                }
            }
            // The stream's answer comes once the Hello is applied; the node stays known
            // after the stream ends.
            open_stream(channel, message).await.unwrap();
        });
    }
    while let Some(done) = hellos.join_next().await {
        done.unwrap();
    }
    report(&running, "globex", "web", "g1", GLOBEX_AGENT).await;

    let mut acme = operator(&running, Some(ACME_VIEWER)).await;
    let mut listed = Vec::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = acme
            .list_nodes(wire::ListNodesRequest {
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        listed.extend(
            page.nodes
                .iter()
                .map(|node| node.identity.as_ref().unwrap().node.clone()),
        );
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    assert!(pages > 1, "{NODES} nodes of ~9 KB each fit one answer?");
    let expected: Vec<String> = (0..NODES).map(|index| format!("n{index:03}")).collect();
    assert_eq!(listed, expected);

    // A token that this server did not give is refused, not misread.
    let status = acme
        .list_nodes(wire::ListNodesRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    running.stop().await;
}
