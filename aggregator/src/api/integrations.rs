//! The `Integrations` gRPC service: create, list, delete and test integrations, and list
//! the deliveries they still owe. Integrations created here are persisted (the
//! `integrations` table) and handed to `dispatch`, which starts their workers at once.
//!
//! Secrets go in (inside `sink_json`) and never come out: an integration is listed by
//! its name, sources, filters and sink type only, and errors quote no sink settings.
//! Authorization as for the Operator service (`auth::Caller`): viewers list, admins
//! change and test, a tenant's token sees and changes only its tenant's integrations.

use std::time::Duration;

use proto::v1 as wire;
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use crate::auth::{self, Caller};
use crate::config::IntegrationConfig;
use crate::delivery::now_ms;
use crate::dispatch::{Dispatch, Filter, RouteError};
use crate::events::{Event, Notification};
use crate::model::{NodeKey, Severity, Timestamp};
use crate::outbox::{Delivery, DeliveryState, Outbox};
use crate::sink::Sink;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct IntegrationsService {
    dispatch: Dispatch,
}

impl IntegrationsService {
    pub fn new(dispatch: Dispatch) -> Self {
        Self { dispatch }
    }

    /// The integration named `name`, if the caller may see it; another tenant's is
    /// "not found", as if it did not exist.
    fn visible_integration(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<IntegrationConfig, Status> {
        self.dispatch
            .integrations()
            .into_iter()
            .find(|integration| integration.name == name && visible(caller, integration))
            .ok_or_else(|| Status::not_found(format!("integration {name:?} does not exist")))
    }

    async fn with_outbox<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut Outbox) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let path = self
            .dispatch
            .db_path()
            .ok_or_else(|| Status::unavailable("the store is not open yet"))?;
        tokio::task::spawn_blocking(move || {
            let mut outbox = Outbox::open(&path)?;
            operation(&mut outbox)
        })
        .await
        .map_err(|error| Status::internal(format!("outbox task: {error}")))?
        .map_err(|error| Status::internal(error.to_string()))
    }
}

/// The tenant an integration concerns ("" for all tenants).
fn tenant_of(integration: &IntegrationConfig) -> &str {
    integration.tenant.as_deref().unwrap_or_default()
}

/// A caller bound to a tenant sees only integrations filtered to that tenant.
fn visible(caller: &Caller, integration: &IntegrationConfig) -> bool {
    match &caller.tenant {
        None => true,
        Some(own) => tenant_of(integration) == own,
    }
}

fn to_wire(integration: &IntegrationConfig, from_api: bool) -> wire::Integration {
    let filter = Filter::from_config(integration);
    wire::Integration {
        name: integration.name.clone(),
        sources: filter
            .sources
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        sink_type: integration.sink.kind().to_owned(),
        tenant: tenant_of(integration).to_owned(),
        clusters: integration.clusters.clone(),
        min_severity: integration
            .min_severity
            .map(|severity| severity.as_str().to_owned())
            .unwrap_or_default(),
        origin: if from_api { "api" } else { "config" }.to_owned(),
    }
}

fn delivery_to_wire(delivery: &Delivery) -> wire::Delivery {
    wire::Delivery {
        seq: delivery.seq,
        integration: delivery.integration.clone(),
        event_id: delivery.event_id.clone(),
        state: delivery.state.as_str().to_owned(),
        attempts: delivery.attempts,
        next_attempt_unix_ms: delivery.next_attempt_ms,
        last_error: delivery.last_error.clone(),
        created_unix_ms: delivery.created_ms,
        tenant: delivery.envelope["tenant"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The request as the config file's `[[integrations]]` table, so one parser (and its
/// validation) serves both. The returned JSON holds the secrets: it is only stored.
fn integration_json(request: &wire::CreateIntegrationRequest) -> Result<Value, Status> {
    let sink: Value = serde_json::from_str(&request.sink_json).map_err(|error| {
        // serde_json's message quotes no input, only a position.
        Status::invalid_argument(format!("sink_json: not a JSON object ({error})"))
    })?;
    let mut integration =
        json!({ "name": request.name, "sink": sink, "clusters": request.clusters });
    if !request.sources.is_empty() {
        integration["source"] = json!(request.sources);
    }
    if !request.tenant.is_empty() {
        integration["tenant"] = json!(request.tenant);
    }
    if !request.min_severity.is_empty() {
        integration["min_severity"] = json!(request.min_severity);
    }
    Ok(integration)
}

/// Why a sink's settings were refused, without quoting them: serde names the field and
/// what it expected (`unknown field `urll``, `missing field `brokers``).
fn invalid_settings(error: &serde_json::Error) -> Status {
    Status::invalid_argument(format!("integration: {error}"))
}

fn test_envelope(integration: &IntegrationConfig) -> Value {
    let node = NodeKey {
        tenant: integration
            .tenant
            .clone()
            .unwrap_or_else(|| "hostwatch".to_owned()),
        cluster: integration
            .clusters
            .first()
            .cloned()
            .unwrap_or_else(|| "test".to_owned()),
        node: String::new(),
    };
    Event::Notification(Notification::about_node(
        &node,
        Severity::Info,
        "hostwatch test message",
        format!(
            "integration {:?} works: this message was sent by TestIntegration",
            integration.name
        ),
        Timestamp::now(),
    ))
    .to_json()
}

#[tonic::async_trait]
impl wire::integrations_server::Integrations for IntegrationsService {
    async fn create_integration(
        &self,
        request: Request<wire::CreateIntegrationRequest>,
    ) -> Result<Response<wire::Integration>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_admin()?;
        let mut request = request.into_inner();
        if let Some(own) = &caller.tenant {
            if request.tenant.is_empty() {
                request.tenant = own.clone();
            }
            caller.require_tenant(&request.tenant)?;
        }
        if request.name.trim().is_empty() {
            return Err(Status::invalid_argument("name: must not be empty"));
        }
        let json = integration_json(&request)?;
        let integration: IntegrationConfig =
            serde_json::from_value(json.clone()).map_err(|error| invalid_settings(&error))?;
        if let Err(error) = integration.sink.build(integration.timeout) {
            return Err(Status::invalid_argument(format!("sink.{error}")));
        }
        if self.dispatch.is_from_api(&integration.name).is_some() {
            return Err(Status::already_exists(format!(
                "integration {:?} exists already",
                integration.name
            )));
        }
        let name = integration.name.clone();
        let text = json.to_string();
        self.with_outbox(move |outbox| outbox.save_integration(&name, &text, now_ms()))
            .await?;
        let listed = to_wire(&integration, true);
        self.dispatch
            .add(integration)
            .map_err(|error| match error {
                RouteError::Exists(_) => Status::already_exists(error.to_string()),
                RouteError::Unknown(_) => Status::internal(error.to_string()),
            })?;
        tracing::info!(integration = %listed.name, sink = %listed.sink_type, by = %caller.name, "integration created");
        Ok(Response::new(listed))
    }

    async fn list_integrations(
        &self,
        request: Request<wire::ListIntegrationsRequest>,
    ) -> Result<Response<wire::ListIntegrationsResponse>, Status> {
        let caller = auth::caller(&request)?;
        let integrations = self
            .dispatch
            .integrations()
            .iter()
            .filter(|integration| visible(&caller, integration))
            .map(|integration| {
                let from_api = self
                    .dispatch
                    .is_from_api(&integration.name)
                    .unwrap_or(false);
                to_wire(integration, from_api)
            })
            .collect();
        Ok(Response::new(wire::ListIntegrationsResponse {
            integrations,
        }))
    }

    async fn delete_integration(
        &self,
        request: Request<wire::DeleteIntegrationRequest>,
    ) -> Result<Response<wire::DeleteIntegrationResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_admin()?;
        let name = request.into_inner().name;
        let integration = self.visible_integration(&caller, &name)?;
        if self.dispatch.is_from_api(&name) != Some(true) {
            return Err(Status::failed_precondition(format!(
                "integration {name:?} comes from the config file; remove it there"
            )));
        }
        self.dispatch
            .remove(&integration.name)
            .map_err(|error| Status::not_found(error.to_string()))?;
        let deleted = name.clone();
        self.with_outbox(move |outbox| outbox.delete_integration(&deleted))
            .await?;
        tracing::info!(integration = %name, by = %caller.name, "integration deleted");
        Ok(Response::new(wire::DeleteIntegrationResponse {}))
    }

    async fn test_integration(
        &self,
        request: Request<wire::TestIntegrationRequest>,
    ) -> Result<Response<wire::TestIntegrationResponse>, Status> {
        let caller = auth::caller(&request)?;
        caller.require_admin()?;
        let name = request.into_inner().name;
        let integration = self.visible_integration(&caller, &name)?;
        let timeout = integration.timeout;
        let outcome = match integration.sink.build(timeout) {
            Err(error) => Err(format!("sink.{error}")),
            Ok(mut sink) => {
                let envelope = test_envelope(&integration);
                match tokio::time::timeout(
                    timeout + Duration::from_secs(1),
                    sink.deliver(&envelope),
                )
                .await
                {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                }
            }
        };
        Ok(Response::new(match outcome {
            Ok(()) => wire::TestIntegrationResponse {
                ok: true,
                error: String::new(),
            },
            Err(error) => wire::TestIntegrationResponse { ok: false, error },
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<wire::ListDeliveriesRequest>,
    ) -> Result<Response<wire::ListDeliveriesResponse>, Status> {
        let caller = auth::caller(&request)?;
        let request = request.into_inner();
        let mut states = Vec::new();
        for state in &request.states {
            states.push(match state.as_str() {
                "pending" => DeliveryState::Pending,
                "failed" => DeliveryState::Failed,
                "dead" => DeliveryState::Dead,
                other => {
                    return Err(Status::invalid_argument(format!(
                        "states: {other:?} is not pending, failed or dead"
                    )));
                }
            });
        }
        let integration = request.integration.clone();
        let limit = request.limit;
        let deliveries = self
            .with_outbox(move |outbox| outbox.list(&integration, &states, limit))
            .await?;
        let deliveries = deliveries
            .iter()
            .filter(|delivery| {
                caller.sees(delivery.envelope["tenant"].as_str().unwrap_or_default())
            })
            .map(delivery_to_wire)
            .collect();
        Ok(Response::new(wire::ListDeliveriesResponse { deliveries }))
    }
}
