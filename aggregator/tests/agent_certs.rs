//! Agents authenticated by client certificates, over real TLS on loopback: a real
//! aggregator with `[auth.tls]` requiring client certificates signed by its client CA and
//! `[[auth.agent_certs]]` binding them to tenants and clusters; tonic clients playing
//! agents with certificates made by rcgen for the test.
#![allow(clippy::unwrap_used)] // a test that cannot set itself up should panic, loudly

mod support;

use std::path::Path;
use std::time::Duration;

use aggregator::auth::token_sha256;
use proto::v1 as wire;
use proto::v1::ingest_client::IngestClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use support::Running;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const ACME_TOKEN: &str = "acme-agent-token";
const GLOBEX_TOKEN: &str = "globex-agent-token";

/// A client certificate and its key, as PEM.
struct ClientPem {
    cert: String,
    key: String,
}

/// The test's PKI: the aggregator's CA and server certificate, client certificates signed
/// by it (bound and unbound), and one signed by another CA.
struct Pki {
    ca_pem: String,
    /// DNS name n1.db.acme.example: bound by `*.db.acme.example` to acme/db.
    acme_db: ClientPem,
    /// CN globex-agent (no DNS name): bound by common name to tenant globex.
    globex: ClientPem,
    /// CN stranger: signed by the right CA, bound to nothing.
    stranger: ClientPem,
    /// Names like `acme_db`'s, but signed by another CA.
    forged: ClientPem,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn client(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    dns_name: Option<&str>,
) -> ClientPem {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = dns_name
        .map(|name| SanType::DnsName(name.try_into().unwrap()))
        .into_iter()
        .collect();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).unwrap();
    ClientPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// Writes the server's files to `dir` and returns the `[auth]` config using them.
fn pki(dir: &Path) -> (Pki, String) {
    let authority = ca("hostwatch agents CA");
    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params.signed_by(&server_key, &authority).unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    };
    let config = format!(
        r#"
        [[auth.agent_tokens]]
        name = "acme-token"
        tenant = "acme"
        sha256 = "{acme}"
        [[auth.agent_tokens]]
        name = "globex-token"
        tenant = "globex"
        sha256 = "{globex}"

        [[auth.agent_certs]]
        name = "acme-db-agents"
        tenant = "acme"
        cluster = "db"
        dns_name = "*.db.acme.example"
        [[auth.agent_certs]]
        name = "globex-agent"
        tenant = "globex"
        common_name = "globex-agent"

        [auth.tls]
        cert_file = "{cert}"
        key_file = "{key}"
        client_ca_file = "{ca}"
        require_agent_client_cert = true
        "#,
        acme = token_sha256(ACME_TOKEN),
        globex = token_sha256(GLOBEX_TOKEN),
        cert = write("server.pem", &server_cert.pem()),
        key = write("server.key", &server_key.serialize_pem()),
        ca = write("agents-ca.pem", &authority.pem()),
    );
    let other = ca("another CA");
    let pki = Pki {
        ca_pem: authority.pem(),
        acme_db: client(&authority, "n1", Some("n1.db.acme.example")),
        globex: client(&authority, "globex-agent", None),
        stranger: client(&authority, "stranger", Some("stranger.example")),
        forged: client(&other, "n1", Some("n1.db.acme.example")),
    };
    (pki, config)
}

/// An aggregator with the test's PKI and bindings; the directory holds its TLS files.
async fn start() -> (Running, Pki, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let (pki, config) = pki(files.path());
    let running = Running::start(&config).await;
    (running, pki, files)
}

/// A TLS connection trusting the aggregator's CA, with `identity` as client certificate.
async fn connect(
    running: &Running,
    pki: &Pki,
    identity: Option<&ClientPem>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if let Some(client) = identity {
        tls = tls.identity(Identity::from_pem(&client.cert, &client.key));
    }
    Channel::from_shared(format!("https://{}", running.addr))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

fn hello(tenant: &str, cluster: &str, token: &str) -> wire::AgentMessage {
    wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Hello(wire::Hello {
            identity: Some(wire::NodeIdentity {
                tenant: tenant.into(),
                cluster: cluster.into(),
                node: "n1".into(),
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

/// Says hello as `tenant/cluster/n1` (with `token` unless empty) and sends one batch:
/// Ok once it is acknowledged, or the status that refused the stream.
async fn report(
    channel: Channel,
    tenant: &str,
    cluster: &str,
    token: &str,
) -> Result<(), tonic::Status> {
    let (sender, outbound) = mpsc::channel(4);
    sender.send(hello(tenant, cluster, token)).await.unwrap();
    let mut inbound = IngestClient::new(channel)
        .stream(ReceiverStream::new(outbound))
        .await?
        .into_inner();
    let batch = wire::AgentMessage {
        kind: Some(wire::agent_message::Kind::Batch(wire::SampleBatch {
            seq: 1,
            samples: vec![support::host(0.5)],
            dropped_batches_total: 0,
        })),
    };
    sender.send(batch).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("an answer within 10 s")?
        .expect("an ack");
    assert!(matches!(
        message.kind,
        Some(wire::aggregator_message::Kind::Ack(wire::Ack {
            seq: 1,
            ..
        }))
    ));
    Ok(())
}

#[tokio::test]
async fn a_bound_certificate_reports_for_its_tenant_and_cluster() {
    let (running, pki, _files) = start().await;
    let channel = connect(&running, &pki, Some(&pki.acme_db)).await.unwrap();
    report(channel, "acme", "db", "").await.unwrap();
    // By common name, for a tenant without a cluster restriction.
    let channel = connect(&running, &pki, Some(&pki.globex)).await.unwrap();
    report(channel, "globex", "anything", "").await.unwrap();
    running.stop().await;
}

#[tokio::test]
async fn without_a_certificate_the_hello_is_unauthenticated() {
    let (running, pki, _files) = start().await;
    // TLS itself lets the agent in (operators need no certificate); its Hello is refused,
    // even with a valid token.
    let channel = connect(&running, &pki, None).await.unwrap();
    let status = report(channel, "acme", "db", ACME_TOKEN).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("client certificate"),
        "{status:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let (running, pki, _files) = start().await;
    // The handshake fails (rustls rejects the chain), so no stream ever opens.
    let refused = match connect(&running, &pki, Some(&pki.forged)).await {
        Err(_) => true,
        Ok(channel) => report(channel, "acme", "db", "").await.is_err(),
    };
    assert!(refused, "a certificate from another CA must not get in");
    // The same names from the right CA do.
    let channel = connect(&running, &pki, Some(&pki.acme_db)).await.unwrap();
    report(channel, "acme", "db", "").await.unwrap();
    running.stop().await;
}

#[tokio::test]
async fn an_unbound_certificate_is_unauthenticated() {
    let (running, pki, _files) = start().await;
    let channel = connect(&running, &pki, Some(&pki.stranger)).await.unwrap();
    let status = report(channel, "acme", "db", "").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status.message(),
        "client certificate (CN \"stranger\", DNS \"stranger.example\") is not bound to a \
         tenant: no auth.agent_certs entry matches it"
    );
    // A valid token does not make up for it.
    let channel = connect(&running, &pki, Some(&pki.stranger)).await.unwrap();
    let status = report(channel, "acme", "db", ACME_TOKEN).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    running.stop().await;
}

#[tokio::test]
async fn claiming_another_tenant_or_cluster_is_permission_denied() {
    let (running, pki, _files) = start().await;
    let channel = connect(&running, &pki, Some(&pki.acme_db)).await.unwrap();
    let status = report(channel.clone(), "globex", "db", "")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "client certificate \"acme-db-agents\" is for tenant \"acme\", not \"globex\""
    );
    let status = report(channel, "acme", "web", "").await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "client certificate \"acme-db-agents\" is for cluster acme/db, not acme/web"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_token_and_a_certificate_must_agree() {
    let (running, pki, _files) = start().await;
    let channel = connect(&running, &pki, Some(&pki.acme_db)).await.unwrap();
    let status = report(channel.clone(), "acme", "db", GLOBEX_TOKEN)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "agent token \"globex-token\" is for tenant \"globex\" but client certificate \
         \"acme-db-agents\" is for cluster acme/db: they must agree"
    );
    assert!(!status.message().contains(GLOBEX_TOKEN), "never the token");
    report(channel.clone(), "acme", "db", ACME_TOKEN)
        .await
        .unwrap();
    // Agreeing credentials still hold the Hello to the narrower of the two (acme/db).
    let status = report(channel, "acme", "web", ACME_TOKEN)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    running.stop().await;
}
