//! The Integrations service behind operator tokens: viewers may not change anything, a
//! tenant's admin creates integrations for its own tenant only and neither sees nor
//! deletes nor tests another tenant's; no token, no answer.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic, loudly

mod support;

use aggregator::auth::token_sha256;
use proto::v1 as wire;
use proto::v1::integrations_client::IntegrationsClient;
use support::Running;
use support::receiver::Receiver;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scope_integrations_to_their_tenant_and_role() {
    let receiver = Receiver::start().await;
    let url = receiver.url("/hook");
    let config = format!(
        "[[auth.operator_tokens]]\nname = \"acme-viewer\"\ntenant = \"acme\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\
         [[auth.operator_tokens]]\nname = \"acme-admin\"\ntenant = \"acme\"\nrole = \"admin\"\nsha256 = \"{}\"\n\
         [[auth.operator_tokens]]\nname = \"globex-admin\"\ntenant = \"globex\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
        token_sha256(ACME_VIEWER),
        token_sha256(ACME_ADMIN),
        token_sha256(GLOBEX_ADMIN),
    );
    let running = Running::start(&config).await;
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
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = acme
        .test_integration(wire::TestIntegrationRequest {
            name: "globex-hook".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = acme
        .delete_integration(wire::DeleteIntegrationRequest {
            name: "globex-hook".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = viewer
        .delete_integration(wire::DeleteIntegrationRequest {
            name: "acme-hook".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    acme.delete_integration(wire::DeleteIntegrationRequest {
        name: "acme-hook".into(),
    })
    .await
    .unwrap();
    assert!(names(&mut acme).await.is_empty());
    assert_eq!(names(&mut globex).await, ["globex-hook@globex"]);
    running.stop().await;
}
