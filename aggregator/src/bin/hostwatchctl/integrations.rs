//! `hostwatchctl integrations create|list|delete|test` and `hostwatchctl deliveries`: the
//! Integrations gRPC service as tables or JSON.
//!
//! `create` takes the sink as JSON, the same fields as the config file's `sink = {...}`;
//! to keep secrets out of shell history and `ps`, `--sink-file` reads it from a file.
//! Nothing printed here can hold a secret: the service never returns one.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use proto::v1::integrations_client::IntegrationsClient;
use proto::v1::{
    CreateIntegrationRequest, DeleteIntegrationRequest, Delivery, Integration,
    ListDeliveriesRequest, ListIntegrationsRequest, TestIntegrationRequest,
};
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;

use crate::client::{CtlError, call, normalize_addr, page_size};
use crate::format::{Rows, time_cell};
use crate::{Output, Stop, print_json, print_text};

#[derive(Debug, Subcommand)]
pub(crate) enum IntegrationsCommand {
    /// Create an integration (admin tokens only).
    Create(CreateArgs),
    /// List integrations: from the config file and created here.
    List,
    /// Delete an integration created here, with the deliveries it still owed.
    Delete {
        name: String,
        /// The integration's tenant, when a global token sees several of that name.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Send a test message through an integration's sink and say how it went.
    Test {
        name: String,
        /// The integration's tenant, when a global token sees several of that name.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Unique among integrations.
    name: String,
    /// Sources routed (repeat or separate with commas): issues, notifications, logs,
    /// metrics, health.
    #[arg(long, value_delimiter = ',')]
    source: Vec<String>,
    /// The sink as JSON, e.g. '{"type": "webhook", "url": "https://…"}'.
    #[arg(
        long,
        required_unless_present = "sink_file",
        conflicts_with = "sink_file"
    )]
    sink: Option<String>,
    /// A file holding the sink's JSON (keeps secrets off the command line).
    #[arg(long)]
    sink_file: Option<PathBuf>,
    /// Only this tenant's events.
    #[arg(long)]
    tenant: Option<String>,
    /// Only these clusters' events (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    cluster: Vec<String>,
    /// Only events at least this severe: info, warning, error, critical.
    #[arg(long)]
    min_severity: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DeliveriesArgs {
    /// Only this integration's.
    #[arg(long)]
    integration: Option<String>,
    /// Only these states (repeat or separate with commas): pending, failed, dead.
    #[arg(long, value_delimiter = ',')]
    state: Vec<String>,
    /// At most this many (the server's default when not given).
    #[arg(long)]
    limit: Option<u32>,
}

type Client = IntegrationsClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// Adds `authorization: Bearer …` when a token was given.
#[derive(Debug, Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

async fn connect(addr: &str, token: Option<String>) -> Result<Client, CtlError> {
    let addr = normalize_addr(addr);
    let header = token
        .map(|token| MetadataValue::try_from(format!("Bearer {token}")))
        .transpose()
        .map_err(|_| {
            CtlError::Local("the token has characters not allowed in a header".to_owned())
        })?;
    let channel = Endpoint::from_shared(addr.clone())
        .map_err(|error| CtlError::Connect {
            addr: addr.clone(),
            reason: format!("not a valid URL ({error})"),
        })?
        .connect()
        .await
        .map_err(|error| CtlError::Connect {
            addr: addr.clone(),
            reason: error.to_string(),
        })?;
    Ok(IntegrationsClient::with_interceptor(
        channel,
        Bearer(header),
    ))
}

pub(crate) fn table(integrations: &[Integration]) -> Rows {
    let mut rows = Rows::new(vec![
        "NAME",
        "SOURCES",
        "SINK",
        "TENANT",
        "CLUSTERS",
        "MIN SEVERITY",
        "ORIGIN",
    ]);
    let or_all = |text: String| {
        if text.is_empty() {
            "all".to_owned()
        } else {
            text
        }
    };
    for integration in integrations {
        rows.rows.push(vec![
            integration.name.clone(),
            integration.sources.join(","),
            integration.sink_type.clone(),
            or_all(integration.tenant.clone()),
            or_all(integration.clusters.join(",")),
            or_all(integration.min_severity.clone()),
            integration.origin.clone(),
        ]);
    }
    rows
}

pub(crate) fn json_of(integration: &Integration) -> Value {
    json!({
        "name": integration.name,
        "sources": integration.sources,
        "sink_type": integration.sink_type,
        "tenant": integration.tenant,
        "clusters": integration.clusters,
        "min_severity": integration.min_severity,
        "origin": integration.origin,
    })
}

pub(crate) fn deliveries_table(deliveries: &[Delivery]) -> Rows {
    let mut rows = Rows::new(vec![
        "INTEGRATION",
        "EVENT",
        "STATE",
        "ATTEMPTS",
        "NEXT ATTEMPT",
        "LAST ERROR",
    ]);
    for delivery in deliveries {
        rows.rows.push(vec![
            delivery.integration.clone(),
            delivery.event_id.clone(),
            delivery.state.clone(),
            delivery.attempts.to_string(),
            if delivery.state == "dead" || delivery.next_attempt_unix_ms == 0 {
                "-".to_owned()
            } else {
                time_cell(delivery.next_attempt_unix_ms)
            },
            delivery.last_error.clone(),
        ]);
    }
    rows
}

pub(crate) fn delivery_json(delivery: &Delivery) -> Value {
    json!({
        "seq": delivery.seq,
        "integration": delivery.integration,
        "event_id": delivery.event_id,
        "tenant": delivery.tenant,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "next_attempt_unix_ms": delivery.next_attempt_unix_ms,
        "last_error": delivery.last_error,
        "created_unix_ms": delivery.created_unix_ms,
    })
}

pub(crate) async fn run_integrations(
    addr: &str,
    token: Option<String>,
    command: IntegrationsCommand,
    output: Output,
) -> Result<(), Stop> {
    let mut client = connect(addr, token).await?;
    match command {
        IntegrationsCommand::Create(args) => {
            let sink = match (&args.sink, &args.sink_file) {
                (Some(sink), _) => sink.clone(),
                (None, Some(path)) => std::fs::read_to_string(path).map_err(|error| {
                    CtlError::Local(format!("cannot read {}: {error}", path.display()))
                })?,
                (None, None) => {
                    return Err(CtlError::Local("give --sink or --sink-file".into()).into());
                }
            };
            let request = CreateIntegrationRequest {
                name: args.name,
                sources: args.source,
                sink_json: sink,
                tenant: args.tenant.unwrap_or_default(),
                clusters: args.cluster,
                min_severity: args.min_severity.unwrap_or_default(),
            };
            let created = call("create integration", client.create_integration(request)).await?;
            match output {
                Output::Table => print_text(&table(&[created]).render())?,
                Output::Json => print_json(&json_of(&created))?,
            }
        }
        IntegrationsCommand::List => {
            let response = call(
                "list integrations",
                client.list_integrations(ListIntegrationsRequest {}),
            )
            .await?;
            match output {
                Output::Table => print_text(&table(&response.integrations).render())?,
                Output::Json => print_json(&Value::Array(
                    response.integrations.iter().map(json_of).collect(),
                ))?,
            }
        }
        IntegrationsCommand::Delete { name, tenant } => {
            let what = format!("delete integration {name}");
            call(
                &what,
                client.delete_integration(DeleteIntegrationRequest {
                    name: name.clone(),
                    tenant: tenant.unwrap_or_default(),
                }),
            )
            .await?;
            match output {
                Output::Table => print_text(&format!("deleted {name}"))?,
                Output::Json => print_json(&json!({ "deleted": name }))?,
            }
        }
        IntegrationsCommand::Test { name, tenant } => {
            let what = format!("test integration {name}");
            let response = call(
                &what,
                client.test_integration(TestIntegrationRequest {
                    name: name.clone(),
                    tenant: tenant.unwrap_or_default(),
                }),
            )
            .await?;
            match output {
                Output::Table if response.ok => {
                    print_text(&format!("{name}: test message accepted"))?
                }
                Output::Table => {
                    print_text(&format!("{name}: test message refused: {}", response.error))?
                }
                Output::Json => print_json(
                    &json!({ "name": name, "ok": response.ok, "error": response.error }),
                )?,
            }
            if !response.ok {
                return Err(CtlError::Local(format!("{name}: the test failed")).into());
            }
        }
    }
    Ok(())
}

pub(crate) async fn run_deliveries(
    addr: &str,
    token: Option<String>,
    args: DeliveriesArgs,
    output: Output,
) -> Result<(), Stop> {
    let mut client = connect(addr, token).await?;
    // Every page, up to --limit in all.
    let wanted = args.limit.map_or(usize::MAX, |limit| limit as usize);
    let mut deliveries = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListDeliveriesRequest {
            integration: args.integration.clone().unwrap_or_default(),
            states: args.state.clone(),
            limit: 0,
            page_size: page_size(wanted - deliveries.len()),
            page_token,
        };
        let response = call("list deliveries", client.list_deliveries(request)).await?;
        deliveries.extend(response.deliveries);
        page_token = response.next_page_token;
        if page_token.is_empty() || deliveries.len() >= wanted {
            break;
        }
    }
    deliveries.truncate(wanted);
    match output {
        Output::Table => print_text(&deliveries_table(&deliveries).render())?,
        Output::Json => print_json(&Value::Array(
            deliveries.iter().map(delivery_json).collect(),
        ))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_integration_table_says_all_for_empty_filters() {
        let rendered = table(&[Integration {
            name: "pager".into(),
            sources: vec!["issues".into()],
            sink_type: "opsgenie".into(),
            tenant: String::new(),
            clusters: Vec::new(),
            min_severity: "error".into(),
            origin: "api".into(),
        }])
        .render();
        assert!(rendered.contains("pager"), "{rendered}");
        assert!(rendered.contains("opsgenie"), "{rendered}");
        assert!(rendered.contains("all"), "{rendered}");
    }
}
