//! One HTTP/1.1 GET over a fresh connection, plain or TLS: hyper's client connection on a
//! tokio `TcpStream`, wrapped in tokio-rustls for `https`. No pool, no redirects, no
//! proxies, no spawned task: the connection is driven next to the request and dropped with
//! it. Answers are capped at [`MAX_BODY_BYTES`], so a misbehaving node cannot make the agent
//! grow.
//!
//! Timeouts are the caller's (the probe bounds the whole query).

use std::sync::Arc;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use super::GossipError;

/// The largest answer read: a gossip of a few dozen members is a few tens of KB.
pub(super) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// GETs over HTTP, or HTTPS with the TLS configuration it was built with.
#[derive(Clone)]
pub(super) struct HttpGet {
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for HttpGet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpGet")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl HttpGet {
    /// `tls` is required for `https` URLs.
    pub(super) fn new(tls: Option<rustls::ClientConfig>) -> HttpGet {
        HttpGet {
            tls: tls.map(|config| TlsConnector::from(Arc::new(config))),
        }
    }

    /// GETs `base_url` + `path` and returns the body of a 2xx answer.
    pub(super) async fn get(&self, base_url: &str, path: &str) -> Result<Bytes, GossipError> {
        let url = format!("{base_url}{path}");
        let uri: Uri =
            url.parse()
                .map_err(|err: hyper::http::uri::InvalidUri| GossipError::Url {
                    url: url.clone(),
                    message: err.to_string(),
                })?;
        let url_error = |message: &str| GossipError::Url {
            url: url.clone(),
            message: message.to_owned(),
        };
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(url_error("must start with http:// or https://")),
        };
        let host = uri.host().ok_or_else(|| url_error("names no host"))?;
        // `Uri::host` keeps the brackets of an IPv6 literal; sockets and TLS want none.
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = format!("{host}:{port}");
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());

        let tcp =
            TcpStream::connect((bare_host, port))
                .await
                .map_err(|err| GossipError::Connect {
                    addr: addr.clone(),
                    message: io_message(&err),
                })?;
        // Gossip answers are small and wanted at once.
        let _ = tcp.set_nodelay(true);
        let request = Request::get(path_and_query)
            .header(hyper::header::HOST, addr.as_str())
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("hostwatch-agent/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|err| url_error(&err.to_string()))?;
        if !https {
            return exchange(tcp, request, path).await;
        }
        let connector = self
            .tls
            .as_ref()
            .ok_or_else(|| url_error("https needs a TLS configuration"))?;
        let server_name = ServerName::try_from(bare_host.to_owned())
            .map_err(|err| url_error(&format!("not a TLS server name: {err}")))?;
        let tls = connector
            .connect(server_name, tcp)
            .await
            .map_err(|err| GossipError::Tls(io_message(&err)))?;
        exchange(tls, request, path).await
    }
}

/// Sends the request on a new HTTP/1.1 connection over `io` and reads the whole answer.
async fn exchange<IO>(
    io: IO,
    request: Request<Empty<Bytes>>,
    path: &str,
) -> Result<Bytes, GossipError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_error = |err: &dyn std::error::Error| GossipError::Http {
        path: path.to_owned(),
        message: error_chain(err),
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| http_error(&err))?;
    let response = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| http_error(&err))?;
        let status = response.status();
        if !status.is_success() {
            return Err(GossipError::Status {
                status,
                path: path.to_owned(),
            });
        }
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|err| http_error(err.as_ref()))?;
        Ok(body.to_bytes())
    };
    tokio::pin!(response, connection);
    let mut connection_done = false;
    loop {
        tokio::select! {
            result = &mut response => return result,
            // The connection future must be polled for the response to progress; when it
            // ends first, the answer is either complete in the body or failed there too.
            ended = &mut connection, if !connection_done => {
                connection_done = true;
                if let Err(err) = ended {
                    return Err(http_error(&err));
                }
            }
        }
    }
}

/// An I/O error's text with its causes (rustls puts the useful part in the inner error),
/// lowercase as the kernel's messages are ("connection refused").
fn io_message(err: &std::io::Error) -> String {
    match err.get_ref() {
        Some(inner) => error_chain(inner),
        None => match err.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            _ => err.to_string(),
        },
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
