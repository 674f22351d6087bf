//! Wiring: builds the store, dispatch, monitor and gRPC services from a config and runs
//! them until shutdown. The one place that knows how the parts fit together.
//!
//! Shutdown order: stop taking connections and end the agents' streams, stop the
//! monitor, let the store commit what is queued, let the sinks drain their queues.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use proto::v1 as wire;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::OperatorService;
use crate::api::integrations::IntegrationsService;
use crate::auth::{Auth, AuthError, TlsConfig};
use crate::config::AggregatorConfig;
use crate::dispatch::Dispatch;
use crate::engine::Engine;
use crate::ingest::{IngestRoute, IngestService};
use crate::listener::{
    CallTracking, Deadlines, Registry, connection_cap, incoming, raise_file_limit,
};
use crate::model::Timestamp;
use crate::monitor::Monitor;
use crate::store::{Store, StoreError};

/// How long shutdown waits for sinks to drain their queues.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("grpc server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("grpc reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("{0}")]
    Exposed(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("config: auth.tls: {0}")]
    Tls(String),
}

/// An aggregator bound to its listener, ready to run.
#[derive(Debug)]
pub struct Aggregator {
    config: AggregatorConfig,
    listener: TcpListener,
}

impl Aggregator {
    /// Binds the gRPC listener, so the address is known (and taken) before running.
    pub async fn bind(config: AggregatorConfig) -> Result<Self, ServerError> {
        if let Some(error) = config.exposure_error() {
            return Err(ServerError::Exposed(error));
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Ok(Self { config, listener })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener
            .local_addr()
            .map_err(|source| ServerError::Bind {
                addr: self.config.listen,
                source,
            })
    }

    /// Runs until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let Self { config, listener } = self;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;

        let auth = Auth::build(&config.auth)?;
        let connections = &config.connections;
        let tls = config
            .auth
            .tls
            .as_ref()
            .map(|tls| tls_config(tls, connections.handshake_timeout))
            .transpose()?;
        let file_limit = raise_file_limit();
        let max_connections = connection_cap(connections.max, file_limit);

        let sinks = TaskTracker::new();
        let dispatch = Dispatch::start(&config.integrations, &sinks);
        let (store, writer, restored) = Store::open(&config.data_dir, dispatch.clone())?;
        tracing::info!(
            nodes = restored.nodes.len(),
            open_issues = restored.open_issues.len(),
            data_dir = %config.data_dir.display(),
            "state restored"
        );
        let engine = Engine::new(
            config.rules.clone(),
            Timestamp::now(),
            restored.nodes,
            restored.open_issues,
        );

        let stop = CancellationToken::new();
        let (monitor, monitor_task) = Monitor::spawn(engine, store.clone(), stop.child_token());

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<wire::ingest_server::IngestServer<IngestService>>()
            .await;
        health_reporter
            .set_serving::<wire::operator_server::OperatorServer<OperatorService>>()
            .await;
        health_reporter
            .set_serving::<wire::integrations_server::IntegrationsServer<IntegrationsService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(wire::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let ingest = IngestRoute::new(
            IngestService::new(
                monitor.clone(),
                config.ingest.clone(),
                auth.clone(),
                stop.child_token(),
            )
            .with_hello_timeout(connections.hello_timeout),
            config.ingest.max_message_bytes,
        );
        let operator = wire::operator_server::OperatorServer::with_interceptor(
            OperatorService::new(
                monitor.clone(),
                store.clone(),
                dispatch.clone(),
                stop.child_token(),
            ),
            auth.operator_interceptor(),
        );
        let integrations = wire::integrations_server::IntegrationsServer::with_interceptor(
            IntegrationsService::new(dispatch.clone(), config.api.clone()),
            auth.operator_interceptor(),
        );

        let local_addr = listener.local_addr().ok();
        tracing::info!(
            listen = ?local_addr,
            max_connections,
            file_limit,
            "aggregator serving ingest and operator gRPC"
        );
        let registry = Registry::default();
        let incoming = incoming(
            listener,
            max_connections,
            Deadlines::from_config(connections),
            registry.clone(),
        );
        let stop_serving = stop.clone();
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(connections.keepalive_interval))
            .http2_keepalive_timeout(Some(connections.keepalive_timeout));
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .map_err(|error| ServerError::Tls(error.to_string()))?;
        }
        let served = builder
            .layer(CallTracking::new(registry))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(ingest)
            .add_service(operator)
            .add_service(integrations)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                tracing::info!("shutting down");
                // End the long-lived streams so the server's graceful stop can finish.
                stop_serving.cancel();
            })
            .await;

        stop.cancel();
        drop(monitor);
        if monitor_task.await.is_err() {
            tracing::error!("monitor task panicked");
        }
        drop(store);
        drop(dispatch);
        // The writer commits what is queued, then ends once the last handle is gone.
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .ok();
        sinks.close();
        if tokio::time::timeout(DRAIN_GRACE, sinks.wait())
            .await
            .is_err()
        {
            tracing::warn!("sinks did not drain within {DRAIN_GRACE:?}");
        }
        served?;
        Ok(())
    }
}

/// The listener's TLS: the aggregator's certificate, and the CA that agents' client
/// certificates must chain to. Client certificates stay optional at the TLS layer so
/// operators need none; `auth` requires one from agents when configured.
fn tls_config(
    tls: &TlsConfig,
    handshake_timeout: Duration,
) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
    let read = |field: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|error| ServerError::Tls(format!("{field}: {}: {error}", path.display())))
    };
    let identity = tonic::transport::Identity::from_pem(
        read("cert_file", &tls.cert_file)?,
        read("key_file", &tls.key_file)?,
    );
    let mut config = tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .timeout(handshake_timeout);
    if let Some(ca) = &tls.client_ca_file {
        config = config
            .client_ca_root(tonic::transport::Certificate::from_pem(read(
                "client_ca_file",
                ca,
            )?))
            .client_auth_optional(true);
    }
    Ok(config)
}
