//! `hostwatchctl`: the operator's command line for a hostwatch aggregator.
//!
//! It speaks only the public Operator gRPC API (crate `proto`), never the aggregator's
//! internals, so it works against any aggregator of the same protocol version. This file
//! parses flags, connects, makes the call and prints; the shape of every table and JSON
//! document lives in the command's module, where it is tested with hand-built values.

mod client;
mod clusters;
mod events;
mod explanation;
#[cfg(test)]
mod fake_server;
mod format;
mod integrations;
mod issues;
mod nodes;
mod notify;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use proto::v1::{
    CloseIssueRequest, EventSource, GetIssueRequest, GetNodeRequest, IssueState,
    ListClustersRequest, ListIssuesRequest, Severity, WatchEventsRequest,
};
use serde_json::Value;

use crate::client::{Client, CtlError, call, connect, load_token, page_size};
use crate::format::now_unix_ms;

#[derive(Debug, Parser)]
#[command(
    name = "hostwatchctl",
    version,
    about = "Query and watch a hostwatch aggregator"
)]
struct Cli {
    /// The aggregator's operator API.
    #[arg(
        long,
        global = true,
        env = "HOSTWATCH_ADDR",
        default_value = "http://127.0.0.1:7170"
    )]
    addr: String,
    /// Bearer token, sent as `authorization: Bearer …`.
    #[arg(long, global = true)]
    token: Option<String>,
    /// File holding the bearer token (surrounding whitespace ignored).
    #[arg(long, global = true, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Output format: aligned tables for people, JSON for scripts.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List clusters with node counts and health.
    Clusters {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List nodes with last-seen time, load, memory and the fullest disk.
    Nodes {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Show one node in detail: identity, probes, all disks, gossip, counters.
    Node {
        /// The node as TENANT/CLUSTER/NODE.
        #[arg(value_parser = parse_node_key)]
        key: NodeKey,
    },
    /// List issues, newest first (open ones unless --state says otherwise).
    Issues(IssuesArgs),
    /// Show one issue and all its events, oldest first: `issue ID`. Or close an open
    /// one: `issue close ID --reason TEXT` (admin tokens only).
    Issue(IssueArgs),
    /// Stream events as they happen: `hostwatchctl events --watch`.
    ///
    /// The API only offers a live stream, so --watch is required: it makes the endless
    /// output explicit. Prints one line per event (one JSON object per line with -o json)
    /// until interrupted; exits 1 if the aggregator ends the stream.
    Events(EventsArgs),
    /// Publish a notification: `notify TENANT/CLUSTER[/NODE] --title T [--text X]
    /// [--severity S]` (admin tokens only).
    Notify(notify::NotifyArgs),
    /// Manage integrations (source → sink): create, list, delete, test.
    #[command(subcommand)]
    Integrations(integrations::IntegrationsCommand),
    /// List deliveries not yet accepted: pending, failed (retrying) and dead.
    Deliveries(integrations::DeliveriesArgs),
}

#[derive(Debug, Args)]
struct IssuesArgs {
    /// Which issues: open, closed, or all.
    #[arg(long, value_enum, default_value_t = StateFilter::Open)]
    state: StateFilter,
    /// Keep issues of at least this severity.
    #[arg(long, value_enum)]
    severity: Option<SeverityFilter>,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this cluster.
    #[arg(long)]
    cluster: Option<String>,
    /// Only this node.
    #[arg(long)]
    node: Option<String>,
    /// Only issues of this rule, e.g. disk_usage.
    #[arg(long)]
    rule: Option<String>,
    /// At most this many (the server's default when not given).
    #[arg(long)]
    limit: Option<u32>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct IssueArgs {
    #[command(subcommand)]
    action: Option<IssueAction>,
    /// The issue's id, as `hostwatchctl issues` shows it.
    #[arg(required = true)]
    id: Option<String>,
}

#[derive(Debug, Subcommand)]
enum IssueAction {
    /// Close an open issue; the reason is recorded in its `closed` event. For an issue
    /// whose condition is known to be over, or of a rule the aggregator does not know.
    Close {
        /// The issue's id, as `hostwatchctl issues` shows it.
        id: String,
        /// Why it is closed.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Args)]
struct EventsArgs {
    /// Keep streaming events as they happen (required).
    #[arg(long)]
    watch: bool,
    /// Only this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// Only this cluster.
    #[arg(long)]
    cluster: Option<String>,
    /// Only events from these sources (repeat or separate with commas).
    #[arg(long, value_enum, value_delimiter = ',')]
    source: Vec<SourceFilter>,
    /// Keep issue events and notifications of at least this severity.
    #[arg(long, value_enum)]
    severity: Option<SeverityFilter>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StateFilter {
    Open,
    Closed,
    All,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SeverityFilter {
    Info,
    Warning,
    Error,
    Critical,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SourceFilter {
    Issues,
    Notifications,
    Logs,
    Metrics,
    Health,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeKey {
    tenant: String,
    cluster: String,
    node: String,
}

fn parse_node_key(text: &str) -> Result<NodeKey, String> {
    match text.split('/').collect::<Vec<_>>()[..] {
        [tenant, cluster, node]
            if !tenant.is_empty() && !cluster.is_empty() && !node.is_empty() =>
        {
            Ok(NodeKey {
                tenant: tenant.to_owned(),
                cluster: cluster.to_owned(),
                node: node.to_owned(),
            })
        }
        _ => Err(format!("expected TENANT/CLUSTER/NODE, got `{text}`")),
    }
}

impl SeverityFilter {
    fn to_proto(self) -> Severity {
        match self {
            SeverityFilter::Info => Severity::Info,
            SeverityFilter::Warning => Severity::Warning,
            SeverityFilter::Error => Severity::Error,
            SeverityFilter::Critical => Severity::Critical,
        }
    }
}

fn min_severity(filter: Option<SeverityFilter>) -> i32 {
    filter.map_or(Severity::Unspecified, SeverityFilter::to_proto) as i32
}

impl StateFilter {
    fn to_proto(self) -> IssueState {
        match self {
            StateFilter::Open => IssueState::Open,
            StateFilter::Closed => IssueState::Closed,
            StateFilter::All => IssueState::Unspecified,
        }
    }
}

impl SourceFilter {
    fn to_proto(self) -> EventSource {
        match self {
            SourceFilter::Issues => EventSource::Issues,
            SourceFilter::Notifications => EventSource::Notifications,
            SourceFilter::Logs => EventSource::Logs,
            SourceFilter::Metrics => EventSource::Metrics,
            SourceFilter::Health => EventSource::Health,
        }
    }
}

/// Why `main` stops early: a failure to report, or stdout closed by its reader (`| head`),
/// which is not an error.
enum Stop {
    Failed(CtlError),
    StdoutClosed,
}

impl From<CtlError> for Stop {
    fn from(error: CtlError) -> Self {
        Stop::Failed(error)
    }
}

impl From<io::Error> for Stop {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe {
            Stop::StdoutClosed
        } else {
            Stop::Failed(CtlError::Local(format!("cannot write output: {error}")))
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Events(EventsArgs { watch: false, .. }) = cli.command {
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "`events` streams live events only; run `hostwatchctl events --watch`",
            )
            .exit();
    }
    match run(cli).await {
        Ok(()) | Err(Stop::StdoutClosed) => ExitCode::SUCCESS,
        Err(Stop::Failed(error)) => {
            eprintln!("hostwatchctl: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Stop> {
    let token = load_token(cli.token.as_deref(), cli.token_file.as_deref())?;
    // The Integrations service has its own client.
    let command = match cli.command {
        Command::Integrations(command) => {
            return integrations::run_integrations(&cli.addr, token, command, cli.output).await;
        }
        Command::Deliveries(args) => {
            return integrations::run_deliveries(&cli.addr, token, args, cli.output).await;
        }
        command => command,
    };
    let cli = Cli { command, ..cli };
    let mut client = connect(&cli.addr, token).await?;
    let output = cli.output;
    match cli.command {
        Command::Clusters { tenant } => {
            let request = ListClustersRequest {
                tenant: tenant.unwrap_or_default(),
            };
            let response = call("list clusters", client.list_clusters(request)).await?;
            match output {
                Output::Table => print_text(&clusters::table(&response.clusters).render())?,
                Output::Json => print_json(&clusters::json(&response.clusters))?,
            }
        }
        Command::Nodes { tenant, cluster } => {
            let nodes = nodes::list_all(
                &mut client,
                &tenant.unwrap_or_default(),
                &cluster.unwrap_or_default(),
            )
            .await?;
            match output {
                Output::Table => print_text(&nodes::table(&nodes, now_unix_ms()).render())?,
                Output::Json => print_json(&Value::Array(nodes.iter().map(nodes::json).collect()))?,
            }
        }
        Command::Node { key } => {
            let what = format!("get node {}/{}/{}", key.tenant, key.cluster, key.node);
            let request = GetNodeRequest {
                tenant: key.tenant,
                cluster: key.cluster,
                node: key.node,
            };
            let node = call(&what, client.get_node(request)).await?;
            match output {
                Output::Table => print_text(&nodes::detail(&node, now_unix_ms()))?,
                Output::Json => print_json(&nodes::json(&node))?,
            }
        }
        Command::Issues(args) => {
            // Every page, up to --limit in all (the server's default page without one).
            let wanted = args.limit.map_or(usize::MAX, |limit| limit as usize);
            let mut listed = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = ListIssuesRequest {
                    state: args.state.to_proto() as i32,
                    min_severity: min_severity(args.severity),
                    tenant: args.tenant.clone().unwrap_or_default(),
                    cluster: args.cluster.clone().unwrap_or_default(),
                    node: args.node.clone().unwrap_or_default(),
                    rule: args.rule.clone().unwrap_or_default(),
                    limit: 0,
                    page_size: page_size(wanted - listed.len()),
                    page_token,
                };
                let response = call("list issues", client.list_issues(request)).await?;
                listed.extend(response.issues);
                page_token = response.next_page_token;
                if page_token.is_empty() || listed.len() >= wanted {
                    break;
                }
            }
            listed.truncate(wanted);
            match output {
                Output::Table => print_text(&issues::table(&listed).render())?,
                Output::Json => print_json(&issues::list_json(&listed))?,
            }
        }
        Command::Issue(IssueArgs {
            action: Some(IssueAction::Close { id, reason }),
            ..
        }) => {
            let what = format!("close issue {id}");
            let response =
                call(&what, client.close_issue(CloseIssueRequest { id, reason })).await?;
            let issue = response.issue.unwrap_or_default();
            match output {
                Output::Table => print_text(&issues::table(&[issue]).render())?,
                Output::Json => print_json(&issues::issue_json(&issue))?,
            }
        }
        Command::Issue(IssueArgs {
            action: None,
            id: Some(id),
        }) => {
            let what = format!("get issue {id}");
            let response = call(&what, client.get_issue(GetIssueRequest { id })).await?;
            match output {
                Output::Table => print_text(&issues::detail(&response))?,
                Output::Json => print_json(&issues::detail_json(&response))?,
            }
        }
        // Clap requires the id when no action is given.
        Command::Issue(IssueArgs {
            action: None,
            id: None,
        }) => {}
        Command::Events(args) => watch_events(&mut client, args, output).await?,
        Command::Integrations(_) | Command::Deliveries(_) => {}
        Command::Notify(args) => {
            let request = args.request();
            let response =
                call("publish notification", client.publish_notification(request)).await?;
            let notification = response.notification.unwrap_or_default();
            match output {
                Output::Table => print_text(&notify::detail(&notification))?,
                Output::Json => print_json(&notify::json(&notification))?,
            }
        }
    }
    Ok(())
}

async fn watch_events(client: &mut Client, args: EventsArgs, output: Output) -> Result<(), Stop> {
    const WHAT: &str = "watch events";
    let request = WatchEventsRequest {
        tenant: args.tenant.unwrap_or_default(),
        cluster: args.cluster.unwrap_or_default(),
        sources: args
            .source
            .iter()
            .map(|source| source.to_proto() as i32)
            .collect(),
        min_severity: min_severity(args.severity),
    };
    let mut stream = call(WHAT, client.watch_events(request)).await?;
    let call_failed = |status| CtlError::Call {
        what: WHAT.to_owned(),
        status,
    };
    while let Some(event) = stream.message().await.map_err(call_failed)? {
        let text = match output {
            Output::Table => events::line(&event),
            Output::Json => events::json(&event).to_string(),
        };
        // Flush per event: a watcher is usually piped into something that wants it now.
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{text}")?;
        stdout.flush()?;
    }
    Err(CtlError::Local(format!("{WHAT}: the aggregator ended the stream")).into())
}

fn print_text(text: &str) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()
}

fn print_json(value: &Value) -> io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    print_text(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn node_keys_need_three_parts() {
        assert_eq!(
            parse_node_key("acme/e2e/node-a"),
            Ok(NodeKey {
                tenant: "acme".into(),
                cluster: "e2e".into(),
                node: "node-a".into()
            })
        );
        assert!(parse_node_key("acme/e2e").is_err());
        assert!(parse_node_key("acme//node-a").is_err());
        assert!(parse_node_key("a/b/c/d").is_err());
    }

    #[test]
    fn issues_default_to_open_and_all_means_unspecified() {
        let cli = Cli::try_parse_from(["hostwatchctl", "issues"]).unwrap();
        let Command::Issues(args) = cli.command else {
            panic!("not issues")
        };
        assert_eq!(args.state.to_proto(), IssueState::Open);
        assert_eq!(StateFilter::All.to_proto(), IssueState::Unspecified);
        assert_eq!(min_severity(None), Severity::Unspecified as i32);
        assert_eq!(
            min_severity(Some(SeverityFilter::Error)),
            Severity::Error as i32
        );
    }

    #[test]
    fn issue_takes_an_id_or_closes_one_with_a_reason() {
        let shown = Cli::try_parse_from(["hostwatchctl", "issue", "0193-id"]).unwrap();
        let Command::Issue(args) = shown.command else {
            panic!("not issue")
        };
        assert_eq!(args.id.as_deref(), Some("0193-id"));
        assert!(args.action.is_none());
        let closed = Cli::try_parse_from([
            "hostwatchctl",
            "issue",
            "close",
            "0193-id",
            "--reason",
            "rule retired",
        ])
        .unwrap();
        let Command::Issue(IssueArgs {
            action: Some(IssueAction::Close { id, reason }),
            ..
        }) = closed.command
        else {
            panic!("not issue close")
        };
        assert_eq!((id.as_str(), reason.as_str()), ("0193-id", "rule retired"));
        assert!(Cli::try_parse_from(["hostwatchctl", "issue", "close", "0193-id"]).is_err());
        assert!(Cli::try_parse_from(["hostwatchctl", "issue"]).is_err());
    }

    #[test]
    fn global_flags_work_after_the_command() {
        let cli = Cli::try_parse_from([
            "hostwatchctl",
            "events",
            "--watch",
            "--source",
            "issues,notifications",
            "-o",
            "json",
            "--addr",
            "http://10.0.0.1:7170",
        ])
        .unwrap();
        assert_eq!(cli.output, Output::Json);
        assert_eq!(cli.addr, "http://10.0.0.1:7170");
        let Command::Events(args) = cli.command else {
            panic!("not events")
        };
        assert_eq!(args.source.len(), 2);
    }
}
