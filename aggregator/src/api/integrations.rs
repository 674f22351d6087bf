//! The `Integrations` gRPC service: create, list, delete and test integrations, and list
//! the deliveries they still owe. Integrations created here are persisted (the
//! `integrations` table) and handed to `dispatch`, which starts their workers at once.
//!
//! Secrets go in (inside `sink_json`) and never come out: an integration is listed by
//! its name, sources, filters and sink type only, and errors quote no sink settings.
//! Authorization as for the Operator service (`auth::Caller`): viewers list, admins
//! change and test, a tenant's token sees and changes only its tenant's integrations.
//! Names are per tenant (`dispatch::route_key`), so a name taken by another tenant is
//! no answer's business. Sinks created here may not reach the aggregator's own network
//! (loopback, link-local, private addresses) unless the operator's `[api]` config allows
//! it, and a tenant's test of a sink learns the outcome's class, not the answer.

use std::net::IpAddr;
use std::time::Duration;

use proto::v1 as wire;
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use super::check_name;
use crate::auth::{self, Caller};
use crate::config::{ApiConfig, IntegrationConfig};
use crate::delivery::now_ms;
use crate::dispatch::{Dispatch, Filter, Listed, RouteError, route_key};
use crate::events::{Event, Notification};
use crate::model::{NodeKey, Severity, Timestamp};
use crate::outbox::{Delivery, DeliveryQuery, DeliveryState, Outbox};
use crate::sink::{DeliveryError, Sink, SinkConfig};
use crate::store::StoreError;

/// Deliveries per answer at most (and when the request does not say).
const MAX_DELIVERIES_PAGE: u32 = 1000;

#[derive(Debug, Clone)]
pub struct IntegrationsService {
    dispatch: Dispatch,
    api: ApiConfig,
}

impl IntegrationsService {
    pub fn new(dispatch: Dispatch, api: ApiConfig) -> Self {
        Self { dispatch, api }
    }

    /// The integration named `name` (of `tenant`, for a global caller who names one), if
    /// the caller may see it; another tenant's is "not found", as if it did not exist.
    fn visible_integration(
        &self,
        caller: &Caller,
        name: &str,
        tenant: &str,
    ) -> Result<Listed, Status> {
        let mut found: Vec<Listed> = self
            .dispatch
            .integrations()
            .into_iter()
            .filter(|listed| {
                listed.config.name == name
                    && visible(caller, listed)
                    && (tenant.is_empty() || listed.tenant() == tenant)
            })
            .collect();
        match found.len() {
            0 => Err(Status::not_found(format!(
                "integration {name:?} does not exist"
            ))),
            1 => Ok(found.remove(0)),
            _ => Err(Status::invalid_argument(format!(
                "integration {name:?} exists for several tenants; name the tenant"
            ))),
        }
    }

    /// Refuses a sink that would reach the aggregator's own network, unless the
    /// operator allows it.
    async fn check_destinations(&self, sink: &SinkConfig) -> Result<(), Status> {
        if self.api.allow_private_sink_addresses {
            return Ok(());
        }
        let destinations = sink
            .destinations()
            .map_err(|error| Status::invalid_argument(format!("sink.{error}")))?;
        for (host, port) in destinations {
            let addresses = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|_| {
                    Status::invalid_argument(format!("sink: host {host:?} does not resolve"))
                })?;
            for address in addresses {
                if is_internal(address.ip()) {
                    return Err(Status::permission_denied(format!(
                        "sink: host {host:?} resolves to a loopback, link-local or private \
                         address, which the aggregator's config does not allow for \
                         integrations created through the API"
                    )));
                }
            }
        }
        Ok(())
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
fn visible(caller: &Caller, listed: &Listed) -> bool {
    match &caller.tenant {
        None => true,
        Some(own) => listed.tenant() == own,
    }
}

/// Addresses of the aggregator's own network, or no real destination at all: what a
/// tenant's sink must not make the aggregator send to.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [first, second, ..] = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || ip.is_documentation()
                // 0.0.0.0/8 ("this network"), 100.64.0.0/10 (carrier-grade NAT),
                // 240.0.0.0/4 (reserved).
                || first == 0
                || (first == 100 && (64..128).contains(&second))
                || first >= 240
        }
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_internal(IpAddr::V4(v4)),
            None => {
                ip.is_loopback()
                    || ip.is_unspecified()
                    || ip.is_multicast()
                    || ip.is_unique_local()
                    || ip.is_unicast_link_local()
            }
        },
    }
}

/// What a tenant's caller learns of a failed test: the class of the outcome, never what
/// the receiver answered (its body could be any internal page).
fn classified(error: &DeliveryError) -> String {
    let text = match error {
        DeliveryError::Throttled { .. } => return "http 429".to_owned(),
        DeliveryError::Transient(text) | DeliveryError::Permanent(text) => text,
    };
    if let Some(status) = text.split("http ").skip(1).find_map(|after| {
        let code = after.get(..3)?;
        code.bytes().all(|b| b.is_ascii_digit()).then_some(code)
    }) {
        return format!("http {status}");
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("timed out") {
        "timeout".to_owned()
    } else if lower.contains("refused") {
        "connection refused".to_owned()
    } else if lower.contains("cannot connect") {
        "cannot connect".to_owned()
    } else {
        "delivery failed".to_owned()
    }
}

fn to_wire(listed: &Listed) -> wire::Integration {
    let (integration, from_api) = (&listed.config, listed.from_api);
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

/// `name` is the integration's name (its row holds its `route_key`).
fn delivery_to_wire(delivery: &Delivery, name: &str) -> wire::Delivery {
    wire::Delivery {
        seq: delivery.seq,
        integration: name.to_owned(),
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
        check_name("tenant", &request.tenant)?;
        if let Some(own) = &caller.tenant {
            if request.tenant.is_empty() {
                request.tenant = own.clone();
            }
            caller.require_tenant(&request.tenant)?;
        }
        if request.name.trim().is_empty() {
            return Err(Status::invalid_argument("name: must not be empty"));
        }
        if request.name.contains('/') {
            return Err(Status::invalid_argument("name: may not contain '/'"));
        }
        let json = integration_json(&request)?;
        let integration: IntegrationConfig =
            serde_json::from_value(json.clone()).map_err(|error| invalid_settings(&error))?;
        if let Some(error) = integration.name_errors().into_iter().next() {
            return Err(Status::invalid_argument(error));
        }
        if let Err(error) = integration.sink.build(integration.timeout) {
            return Err(Status::invalid_argument(format!("sink.{error}")));
        }
        self.check_destinations(&integration.sink).await?;
        // The name must be new for its tenant only: another tenant's names are not this
        // caller's business.
        let taken = self.dispatch.integrations().iter().any(|listed| {
            listed.config.name == integration.name && listed.tenant() == tenant_of(&integration)
        });
        if taken {
            return Err(Status::already_exists(format!(
                "integration {:?} exists already",
                integration.name
            )));
        }
        let key = route_key(&integration, true);
        let text = json.to_string();
        let listed = to_wire(&Listed {
            key: key.clone(),
            config: integration.clone(),
            from_api: true,
        });
        self.dispatch
            .add(integration)
            .map_err(|error| match error {
                RouteError::Exists(_) => Status::already_exists(error.to_string()),
                RouteError::Slash(_) => Status::invalid_argument(error.to_string()),
                RouteError::Unknown(_) => Status::internal(error.to_string()),
            })?;
        let saved = key.clone();
        if let Err(status) = self
            .with_outbox(move |outbox| outbox.save_integration(&saved, &text, now_ms()))
            .await
        {
            // Not persisted: not created.
            let _ = self.dispatch.remove(&key);
            return Err(status);
        }
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
            .filter(|listed| visible(&caller, listed))
            .map(to_wire)
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
        let request = request.into_inner();
        let name = request.name;
        check_name("tenant", &request.tenant)?;
        let listed = self.visible_integration(&caller, &name, &request.tenant)?;
        if !listed.from_api {
            return Err(Status::failed_precondition(format!(
                "integration {name:?} comes from the config file; remove it there"
            )));
        }
        self.dispatch
            .remove(&listed.key)
            .map_err(|error| Status::not_found(error.to_string()))?;
        let deleted = listed.key.clone();
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
        let request = request.into_inner();
        check_name("tenant", &request.tenant)?;
        let listed = self.visible_integration(&caller, &request.name, &request.tenant)?;
        if listed.from_api {
            // The name may resolve elsewhere now than when it was created.
            self.check_destinations(&listed.config.sink).await?;
        }
        let integration = listed.config;
        let timeout = integration.timeout;
        // A global (operator) caller gets the whole error; a tenant's, its class.
        let tell = |error: &DeliveryError| {
            if caller.tenant.is_some() {
                classified(error)
            } else {
                error.to_string()
            }
        };
        let outcome = match integration.sink.build(timeout) {
            Err(error) if caller.tenant.is_some() => {
                // The settings' error can name files on the aggregator's host.
                tracing::info!(integration = %listed.key, %error, "test: the sink cannot be built");
                Err("invalid sink settings".to_owned())
            }
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
                    Ok(Err(error)) => Err(tell(&error)),
                    Err(_) if caller.tenant.is_some() => Err("timeout".to_owned()),
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
        let listed = self.dispatch.integrations();
        // A name stands for the caller's integrations of that name (a global caller's:
        // every tenant's); rows name their integration's key.
        let integrations = (!request.integration.is_empty()).then(|| {
            listed
                .iter()
                .filter(|l| l.config.name == request.integration && visible(&caller, l))
                .map(|l| l.key.clone())
                .collect::<Vec<_>>()
        });
        let after_seq = if request.page_token.is_empty() {
            0
        } else {
            request
                .page_token
                .parse::<i64>()
                .map_err(|_| Status::invalid_argument("page_token: not one this server gave"))?
        };
        let page_size = match (request.page_size, request.limit) {
            (0, 0) => MAX_DELIVERIES_PAGE,
            (0, limit) => limit.min(MAX_DELIVERIES_PAGE),
            (page_size, _) => page_size.min(MAX_DELIVERIES_PAGE),
        };
        // The tenant filter goes into the query, before its limit: a tenant's page
        // holds its own deliveries, however many other tenants' come first.
        let query = DeliveryQuery {
            integrations,
            tenant: caller.tenant.clone(),
            states,
            after_seq,
            limit: page_size,
        };
        let deliveries = self.with_outbox(move |outbox| outbox.list(&query)).await?;
        let name_of = |key: &str| {
            listed
                .iter()
                .find(|l| l.key == key)
                .map_or_else(|| key.to_owned(), |l| l.config.name.clone())
        };
        let wire_deliveries: Vec<wire::Delivery> = deliveries
            .iter()
            .map(|delivery| delivery_to_wire(delivery, &name_of(&delivery.integration)))
            .collect();
        let (deliveries, more) = super::page_by_bytes(wire_deliveries);
        let next_page_token = if more || deliveries.len() == page_size as usize {
            deliveries
                .last()
                .map(|delivery| delivery.seq.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(wire::ListDeliveriesResponse {
            deliveries,
            next_page_token,
        }))
    }
}
