//! The connection to the aggregator's Operator service, the bearer token, and the one
//! error type every command returns.
//!
//! The channel connects eagerly so that an unreachable aggregator is reported once, with
//! its address, instead of as the status of whichever call came first.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use proto::v1::operator_client::OperatorClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// How long to wait for the TCP and HTTP/2 handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a unary call may take; streams are not limited.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) type Client = OperatorClient<InterceptedService<Channel, BearerToken>>;

/// Why a command failed; printed as `hostwatchctl: <this>`.
#[derive(Debug)]
pub(crate) enum CtlError {
    /// The aggregator could not be reached at all.
    Connect { addr: String, reason: String },
    /// A call was answered with an error status.
    Call { what: String, status: tonic::Status },
    /// A unary call got no answer within `CALL_TIMEOUT`.
    Timeout { what: String },
    /// Anything about the command line or local files.
    Local(String),
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Connect { addr, reason } => write!(f, "cannot connect to {addr}: {reason}"),
            CtlError::Call { what, status } => {
                let message = status.message();
                if message.is_empty() {
                    write!(f, "{what}: {}", status.code().description())
                } else {
                    write!(f, "{what}: {message}")
                }
            }
            CtlError::Timeout { what } => {
                write!(f, "{what}: no answer within {}s", CALL_TIMEOUT.as_secs())
            }
            CtlError::Local(message) => f.write_str(message),
        }
    }
}

/// Adds `authorization: Bearer …` to every call when a token was given.
#[derive(Debug, Clone)]
pub(crate) struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
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

/// Reads the token from `--token` or `--token-file` (trimmed, so a trailing newline in
/// the file does not matter).
pub(crate) fn load_token(
    token: Option<&str>,
    token_file: Option<&std::path::Path>,
) -> Result<Option<String>, CtlError> {
    let raw = match (token, token_file) {
        (Some(token), _) => token.to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|error| {
            CtlError::Local(format!(
                "cannot read token file {}: {error}",
                path.display()
            ))
        })?,
        (None, None) => return Ok(None),
    };
    let token = raw.trim();
    if token.is_empty() {
        return Err(CtlError::Local("the token is empty".to_owned()));
    }
    Ok(Some(token.to_owned()))
}

/// Accepts `host:port` as well as a URL, since that is what people type.
pub(crate) fn normalize_addr(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

pub(crate) async fn connect(addr: &str, token: Option<String>) -> Result<Client, CtlError> {
    let addr = normalize_addr(addr);
    let connect_error = |reason: String| CtlError::Connect {
        addr: addr.clone(),
        reason,
    };
    let header = token
        .map(|token| MetadataValue::try_from(format!("Bearer {token}")))
        .transpose()
        .map_err(|_| {
            CtlError::Local("the token has characters not allowed in a header".to_owned())
        })?;
    let endpoint = Endpoint::from_shared(addr.clone())
        .map_err(|error| connect_error(format!("not a valid URL ({error})")))?
        .connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| connect_error(root_cause(&error)))?;
    Ok(OperatorClient::with_interceptor(
        channel,
        BearerToken(header),
    ))
}

/// The innermost error's message: "Connection refused (os error 111)" rather than
/// "transport error".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost.to_string()
}

/// The `page_size` to ask for when `remaining` more items are wanted: 0 (the server's
/// default page) when that is more than a page anyway.
pub(crate) fn page_size(remaining: usize) -> u32 {
    u32::try_from(remaining).unwrap_or(0)
}

/// Runs one unary call with the call timeout, naming it in any error.
pub(crate) async fn call<T>(
    what: &str,
    future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CtlError> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(CtlError::Call {
            what: what.to_owned(),
            status,
        }),
        Err(_elapsed) => Err(CtlError::Timeout {
            what: what.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_errors_show_what_failed_and_the_status_message() {
        let error = CtlError::Call {
            what: "get issue".to_owned(),
            status: tonic::Status::not_found("no issue 42"),
        };
        assert_eq!(error.to_string(), "get issue: no issue 42");
        let error = CtlError::Call {
            what: "list nodes".to_owned(),
            status: tonic::Status::unavailable(""),
        };
        assert_eq!(
            error.to_string(),
            "list nodes: The service is currently unavailable"
        );
    }

    #[test]
    fn bare_addresses_get_a_scheme() {
        assert_eq!(normalize_addr("127.0.0.1:7170"), "http://127.0.0.1:7170");
        assert_eq!(normalize_addr("https://agg:7170"), "https://agg:7170");
    }

    #[test]
    fn tokens_are_trimmed_and_must_not_be_empty() {
        assert_eq!(
            load_token(Some(" abc\n"), None).unwrap().as_deref(),
            Some("abc")
        );
        assert!(load_token(None, None).unwrap().is_none());
        assert!(load_token(Some("  "), None).is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address() {
        // Bind and drop a listener so the port is very likely closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = connect(&format!("127.0.0.1:{port}"), None)
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("cannot connect to http://127.0.0.1:{port}: ")),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }
}
