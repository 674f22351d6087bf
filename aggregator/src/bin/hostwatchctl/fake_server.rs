//! Tests of the client side over real gRPC: a fake Operator service on 127.0.0.1
//! answers canned values and records the metadata it was sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use proto::v1::operator_server::{Operator, OperatorServer};
use proto::v1::{
    Cluster, Event, EventSource, GetIssueRequest, GetIssueResponse, GetNodeRequest,
    ListClustersRequest, ListClustersResponse, ListIssuesRequest, ListIssuesResponse,
    ListNodesRequest, ListNodesResponse, Node, WatchEventsRequest,
};
use tonic::codegen::tokio_stream::{self, wrappers::TcpListenerStream};
use tonic::{Request, Response, Status};

use crate::client::{call, connect};

#[derive(Debug, Default)]
struct FakeOperator {
    /// The `authorization` header of every call, in order.
    authorizations: Arc<Mutex<Vec<Option<String>>>>,
}

impl FakeOperator {
    fn record<T>(&self, request: &Request<T>) {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        self.authorizations.lock().unwrap().push(header);
    }
}

#[tonic::async_trait]
impl Operator for FakeOperator {
    async fn list_clusters(
        &self,
        request: Request<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        self.record(&request);
        let cluster = Cluster {
            tenant: "acme".into(),
            cluster: request.into_inner().tenant,
            ..Default::default()
        };
        Ok(Response::new(ListClustersResponse {
            clusters: vec![cluster],
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        self.record(&request);
        // Three pages of two nodes, the token naming the next page.
        let page: usize = match request.get_ref().page_token.as_str() {
            "" => 0,
            token => token
                .parse()
                .map_err(|_| Status::invalid_argument("token"))?,
        };
        let node = |index: usize| Node {
            identity: Some(proto::v1::NodeIdentity {
                node: format!("n{index}"),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(Response::new(ListNodesResponse {
            nodes: vec![node(2 * page), node(2 * page + 1)],
            next_page_token: if page < 2 {
                (page + 1).to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn get_node(&self, request: Request<GetNodeRequest>) -> Result<Response<Node>, Status> {
        self.record(&request);
        Err(Status::unimplemented("not in this fake"))
    }

    async fn list_issues(
        &self,
        request: Request<ListIssuesRequest>,
    ) -> Result<Response<ListIssuesResponse>, Status> {
        self.record(&request);
        Err(Status::unimplemented("not in this fake"))
    }

    async fn get_issue(
        &self,
        request: Request<GetIssueRequest>,
    ) -> Result<Response<GetIssueResponse>, Status> {
        self.record(&request);
        let id = request.into_inner().id;
        if id == crate::issues::tests::issue().id {
            return Ok(Response::new(GetIssueResponse {
                issue: Some(crate::issues::tests::issue()),
                events: vec![crate::issues::tests::opened_event()],
                explanation: Some(crate::explanation::tests::disk_explanation()),
            }));
        }
        Err(Status::not_found(format!("no issue {id}")))
    }

    type WatchEventsStream = tokio_stream::Iter<std::vec::IntoIter<Result<Event, Status>>>;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.record(&request);
        let event = Event {
            id: "e1".into(),
            source: EventSource::Issues as i32,
            ..Default::default()
        };
        let items = vec![Ok(event), Err(Status::data_loss("missed 3 events"))];
        Ok(Response::new(tokio_stream::iter(items)))
    }

    async fn close_issue(
        &self,
        request: Request<proto::v1::CloseIssueRequest>,
    ) -> Result<Response<proto::v1::CloseIssueResponse>, Status> {
        self.record(&request);
        Err(Status::unimplemented("not in this fake"))
    }

    async fn publish_notification(
        &self,
        request: Request<proto::v1::PublishNotificationRequest>,
    ) -> Result<Response<proto::v1::PublishNotificationResponse>, Status> {
        self.record(&request);
        let request = request.into_inner();
        Ok(Response::new(proto::v1::PublishNotificationResponse {
            notification: Some(proto::v1::Notification {
                id: "n1".into(),
                tenant: request.tenant,
                cluster: request.cluster,
                node: request.node,
                severity: request.severity,
                title: request.title,
                text: request.text,
                time_unix_ms: 1,
                origin: "fake".into(),
            }),
        }))
    }
}

async fn start_fake() -> (SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = FakeOperator::default();
    let authorizations = fake.authorizations.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(OperatorServer::new(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, authorizations)
}

#[tokio::test]
async fn the_token_is_sent_as_bearer_metadata_on_every_call() {
    let (addr, authorizations) = start_fake().await;
    let mut client = connect(&addr.to_string(), Some("s3cret".into()))
        .await
        .unwrap();
    let request = ListClustersRequest {
        tenant: "orders".into(),
    };
    let response = call("list clusters", client.list_clusters(request))
        .await
        .unwrap();
    assert_eq!(response.clusters[0].cluster, "orders");
    let mut client = connect(&format!("http://{addr}"), None).await.unwrap();
    call(
        "list clusters",
        client.list_clusters(ListClustersRequest::default()),
    )
    .await
    .unwrap();
    assert_eq!(
        *authorizations.lock().unwrap(),
        [Some("Bearer s3cret".to_owned()), None]
    );
}

#[tokio::test]
async fn nodes_are_listed_across_every_page() {
    let (addr, authorizations) = start_fake().await;
    let mut client = connect(&addr.to_string(), None).await.unwrap();
    let nodes = crate::nodes::list_all(&mut client, "acme", "")
        .await
        .unwrap();
    let names: Vec<&str> = nodes
        .iter()
        .map(|node| node.identity.as_ref().unwrap().node.as_str())
        .collect();
    assert_eq!(names, ["n0", "n1", "n2", "n3", "n4", "n5"]);
    assert_eq!(authorizations.lock().unwrap().len(), 3, "one call per page");
}

#[tokio::test]
async fn an_error_status_is_reported_with_what_failed() {
    let (addr, _) = start_fake().await;
    let mut client = connect(&addr.to_string(), None).await.unwrap();
    let request = GetIssueRequest { id: "42".into() };
    let error = call("get issue 42", client.get_issue(request))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "get issue 42: no issue 42");
}

/// `hostwatchctl issue ID` as it prints, from what the API sent: the issue's fields,
/// why it is open (condition, window, the deciding samples), then its events.
#[tokio::test]
async fn an_issue_prints_with_its_explanation() {
    let (addr, _) = start_fake().await;
    let mut client = connect(&addr.to_string(), None).await.unwrap();
    let request = GetIssueRequest {
        id: crate::issues::tests::issue().id,
    };
    let response = call("get issue", client.get_issue(request)).await.unwrap();
    insta::assert_snapshot!(crate::issues::detail(&response));
    let value = crate::issues::detail_json(&response);
    assert_eq!(value["explanation"]["opened"]["rule"], "disk_usage");
    assert_eq!(value["explanation"]["opened"]["samples_elided"], 15);
}

#[tokio::test]
async fn a_watch_stream_yields_events_then_its_error() {
    let (addr, _) = start_fake().await;
    let mut client = connect(&addr.to_string(), None).await.unwrap();
    let mut stream = call(
        "watch events",
        client.watch_events(WatchEventsRequest::default()),
    )
    .await
    .unwrap();
    let event = stream.message().await.unwrap().unwrap();
    assert_eq!(event.id, "e1");
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DataLoss);
}
