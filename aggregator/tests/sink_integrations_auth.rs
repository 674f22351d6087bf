//! The Integrations service behind operator tokens: viewers may not change anything, a
//! tenant's admin creates integrations for its own tenant only and neither sees nor
//! deletes nor tests another tenant's; no token, no answer. Two tenants' answers are
//! right and say no more than they should (issue 16): names are per tenant, a tenant's
//! deliveries are filtered before the page is cut, and a tenant's sinks neither reach
//! internal addresses nor tell what a receiver answered.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic, loudly

mod support;

use aggregator::auth::token_sha256;
use proto::v1 as wire;
use proto::v1::integrations_client::IntegrationsClient;
use support::receiver::{Receiver, Reply};
use support::{FakeAgent, Running, host};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const ACME_VIEWER: &str = "acme-viewer-secret";
const ACME_ADMIN: &str = "acme-admin-secret";
const GLOBEX_ADMIN: &str = "globex-admin-secret";

/// Adds the bearer token, when there is one.
type Intercept =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

type Client = IntegrationsClient<InterceptedService<Channel, Intercept>>;

async fn client(running: &Running, token: Option<&str>) -> Client {
    let header = token.map(|token| MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    let interceptor: Intercept = Box::new(move |mut request: tonic::Request<()>| {
        if let Some(header) = &header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    });
    IntegrationsClient::with_interceptor(running.channel().await, interceptor)
}

fn create(name: &str, tenant: &str, url: &str) -> wire::CreateIntegrationRequest {
    wire::CreateIntegrationRequest {
        name: name.into(),
        sources: vec!["issues".into()],
        sink_json: serde_json::json!({"type": "webhook", "url": url}).to_string(),
        tenant: tenant.into(),
        ..Default::default()
    }
}

async fn names(client: &mut Client) -> Vec<String> {
    client
        .list_integrations(wire::ListIntegrationsRequest {})
        .await
        .unwrap()
        .into_inner()
        .integrations
        .into_iter()
        .map(|integration| format!("{}@{}", integration.name, integration.tenant))
        .collect()
}

/// The operator tokens; `allow_private`: whether API sinks may reach 127.0.0.1 (where
/// the test receivers are). node_silent is off so that only the issues a test makes
/// become deliveries.
fn config(allow_private: bool) -> String {
    format!(
        "[api]\nallow_private_sink_addresses = {allow_private}\n\
         [rules.node_silent]\nenabled = false\n\
         [[auth.operator_tokens]]\nname = \"acme-viewer\"\ntenant = \"acme\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\
         [[auth.operator_tokens]]\nname = \"acme-admin\"\ntenant = \"acme\"\nrole = \"admin\"\nsha256 = \"{}\"\n\
         [[auth.operator_tokens]]\nname = \"globex-admin\"\ntenant = \"globex\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
        token_sha256(ACME_VIEWER),
        token_sha256(ACME_ADMIN),
        token_sha256(GLOBEX_ADMIN),
    )
}

/// One issue opened on a new node of `tenant`; returns once its commit is acknowledged
/// (and with it the deliveries it owes).
async fn trip_in(running: &Running, tenant: &str, node: &str) {
    let mut agent = FakeAgent::connect(running.channel().await, tenant, "db", node).await;
    let ack = agent.send(vec![host(9.0)]).await;
    assert_eq!(ack.accepted, 1, "{ack:?}");
}

async fn deliveries(client: &mut Client, limit: u32) -> Vec<wire::Delivery> {
    client
        .list_deliveries(wire::ListDeliveriesRequest {
            limit,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deliveries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scope_integrations_to_their_tenant_and_role() {
    let receiver = Receiver::start().await;
    let url = receiver.url("/hook");
    let running = Running::start(&config(true)).await;
    let mut anonymous = client(&running, None).await;
    let mut viewer = client(&running, Some(ACME_VIEWER)).await;
    let mut acme = client(&running, Some(ACME_ADMIN)).await;
    let mut globex = client(&running, Some(GLOBEX_ADMIN)).await;

    let status = anonymous
        .list_integrations(wire::ListIntegrationsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = viewer
        .create_integration(create("v", "", &url))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = acme
        .create_integration(create("sneaky", "globex", &url))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // A tenant's admin creates for its own tenant, even without naming it.
    let created = acme
        .create_integration(create("acme-hook", "", &url))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.tenant, "acme");
    globex
        .create_integration(create("globex-hook", "globex", &url))
        .await
        .unwrap();

    assert_eq!(names(&mut acme).await, ["acme-hook@acme"]);
    assert_eq!(names(&mut viewer).await, ["acme-hook@acme"]);
    assert_eq!(names(&mut globex).await, ["globex-hook@globex"]);

    let status = viewer
        .test_integration(wire::TestIntegrationRequest {
            name: "acme-hook".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = acme
        .test_integration(wire::TestIntegrationRequest {
            name: "globex-hook".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = acme
        .delete_integration(wire::DeleteIntegrationRequest {
            name: "globex-hook".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = viewer
        .delete_integration(wire::DeleteIntegrationRequest {
            name: "acme-hook".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    acme.delete_integration(wire::DeleteIntegrationRequest {
        name: "acme-hook".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(names(&mut acme).await.is_empty());
    assert_eq!(names(&mut globex).await, ["globex-hook@globex"]);
    running.stop().await;
}

/// Issue 16: tenant acme with 3 owed deliveries saw 0 with `limit=10`, because the
/// limit was applied before the tenant filter (globex's 12 came first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_deliveries_are_filtered_before_the_limit() {
    // Every delivery fails (and waits for its retry), so all stay owed.
    let receiver = Receiver::start_with(|_, _| Reply::status(503)).await;
    let running = Running::start(&config(true)).await;
    let mut acme = client(&running, Some(ACME_ADMIN)).await;
    let mut globex = client(&running, Some(GLOBEX_ADMIN)).await;
    acme.create_integration(create("acme-hook", "", &receiver.url("/acme")))
        .await
        .unwrap();
    globex
        .create_integration(create("globex-hook", "", &receiver.url("/globex")))
        .await
        .unwrap();
    for index in 0..12 {
        trip_in(&running, "globex", &format!("g{index}")).await;
    }
    for index in 0..3 {
        trip_in(&running, "acme", &format!("a{index}")).await;
    }

    let owed = deliveries(&mut acme, 10).await;
    assert_eq!(owed.len(), 3, "{owed:#?}");
    assert!(
        owed.iter()
            .all(|d| d.tenant == "acme" && d.integration == "acme-hook")
    );
    assert_eq!(deliveries(&mut globex, 10).await.len(), 10);

    // Paging a tenant's deliveries one at a time meets each once.
    let mut paged = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = acme
            .list_deliveries(wire::ListDeliveriesRequest {
                page_size: 1,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.deliveries.len() <= 1);
        paged.extend(page.deliveries.into_iter().map(|d| d.seq));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
    }
    let seqs: Vec<i64> = owed.iter().map(|d| d.seq).collect();
    assert_eq!(paged, seqs);
    running.stop().await;
}

/// Issue 16: `ALREADY_EXISTS` told tenant acme that globex has an integration of that
/// name. Names are per tenant; each tenant's `pager` owes its own tenant's deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integration_names_are_per_tenant() {
    let receiver = Receiver::start_with(|_, _| Reply::status(503)).await;
    let running = Running::start(&config(true)).await;
    let mut acme = client(&running, Some(ACME_ADMIN)).await;
    let mut globex = client(&running, Some(GLOBEX_ADMIN)).await;
    globex
        .create_integration(create("pager", "", &receiver.url("/globex")))
        .await
        .unwrap();
    acme.create_integration(create("pager", "", &receiver.url("/acme")))
        .await
        .unwrap();
    assert_eq!(names(&mut acme).await, ["pager@acme"]);
    assert_eq!(names(&mut globex).await, ["pager@globex"]);
    let again = acme
        .create_integration(create("pager", "", &receiver.url("/acme")))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);

    trip_in(&running, "acme", "a1").await;
    let owed = deliveries(&mut acme, 0).await;
    assert_eq!(owed.len(), 1, "{owed:#?}");
    assert_eq!(owed[0].integration, "pager");
    assert!(deliveries(&mut globex, 0).await.is_empty());

    // Deleting acme's leaves globex's, which survives a restart under its own tenant.
    acme.delete_integration(wire::DeleteIntegrationRequest {
        name: "pager".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(names(&mut acme).await.is_empty());
    assert!(deliveries(&mut acme, 0).await.is_empty());
    let data = running.stop().await;
    let running = Running::start_in(data, &config(true)).await;
    let mut globex = client(&running, Some(GLOBEX_ADMIN)).await;
    let mut acme = client(&running, Some(ACME_ADMIN)).await;
    assert_eq!(names(&mut globex).await, ["pager@globex"]);
    acme.create_integration(create("pager", "", &receiver.url("/acme")))
        .await
        .unwrap();
    running.stop().await;
}

/// A tenant or cluster no agent could have (`..`) is INVALID_ARGUMENT naming the field:
/// an integration filtered on it is not created, and no lookup answers "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_cannot_exist_are_invalid_arguments() {
    let receiver = Receiver::start().await;
    let running = Running::start(&config(true)).await;
    let mut acme = client(&running, Some(ACME_ADMIN)).await;
    let refused = |field: &str, result: Result<(), tonic::Status>| {
        let status = result.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("{field}: \"..\"")),
            "{field}: {status:?}"
        );
    };
    let url = receiver.url("/hook");
    let result = acme.create_integration(create("bad", "..", &url)).await;
    refused("tenant", result.map(drop));
    let mut bad_cluster = create("bad", "", &url);
    bad_cluster.clusters = vec!["db".into(), "..".into()];
    let result = acme.create_integration(bad_cluster).await;
    refused("clusters[1]", result.map(drop));
    assert!(names(&mut acme).await.is_empty());
    acme.create_integration(create("good", "", &url))
        .await
        .unwrap();
    let result = acme
        .delete_integration(wire::DeleteIntegrationRequest {
            name: "good".into(),
            tenant: "..".into(),
        })
        .await;
    refused("tenant", result.map(drop));
    let result = acme
        .test_integration(wire::TestIntegrationRequest {
            name: "good".into(),
            tenant: "..".into(),
        })
        .await;
    refused("tenant", result.map(drop));
    assert_eq!(names(&mut acme).await, ["good@acme"]);
    running.stop().await;
}

/// Issue 16: `TestIntegration` returned the status and first 200 characters of any
/// endpoint the aggregator could reach to a tenant admin. API sinks may not reach
/// internal addresses unless the operator allows it, and a tenant learns only the
/// outcome's class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_sinks_reach_no_internal_address_and_tests_tell_only_the_class() {
    let receiver = Receiver::start_with(|_, _| Reply::Status {
        status: 404,
        headers: Vec::new(),
        body: "internal admin page: db password hunter2".into(),
    })
    .await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };

    let strict = Running::start(&config(false)).await;
    let mut acme = client(&strict, Some(ACME_ADMIN)).await;
    for url in [
        receiver.url("/hook"),
        format!("http://localhost:{closed_port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]:9/".to_owned(),
        "http://10.1.2.3/".to_owned(),
    ] {
        let refused = acme
            .create_integration(create("internal", "", &url))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{url}: {refused:?}");
    }
    assert!(names(&mut acme).await.is_empty());
    strict.stop().await;

    let allowed = Running::start(&config(true)).await;
    let mut acme = client(&allowed, Some(ACME_ADMIN)).await;
    acme.create_integration(create("answers-404", "", &receiver.url("/hook")))
        .await
        .unwrap();
    acme.create_integration(create(
        "nobody-listens",
        "",
        &format!("http://127.0.0.1:{closed_port}/"),
    ))
    .await
    .unwrap();
    let test = |name: &str| wire::TestIntegrationRequest {
        name: name.into(),
        ..Default::default()
    };
    let tested = acme
        .test_integration(test("answers-404"))
        .await
        .unwrap()
        .into_inner();
    assert!(!tested.ok);
    assert_eq!(tested.error, "http 404");
    let tested = acme
        .test_integration(test("nobody-listens"))
        .await
        .unwrap()
        .into_inner();
    assert!(!tested.ok);
    assert_eq!(tested.error, "connection refused");
    allowed.stop().await;
}
