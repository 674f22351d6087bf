//! One HTTP/1.1 request over a fresh connection, plain or TLS: hyper's client connection on
//! a tokio `TcpStream`, wrapped in tokio-rustls for `https`. No pool, no redirects, no
//! proxies, no spawned task: the connection is driven next to the request and dropped with
//! it. Answers are capped at the client's `max_body_bytes`, so a misbehaving server cannot
//! make the agent grow. Shared by the probes that ask a local server over HTTP (`gossip`).
//!
//! **Why not reqwest**: the agent needs a few requests a minute to one host. hyper's HTTP/1
//! client connection, tokio-rustls and rustls are already in the binary (tonic's channel and
//! its TLS), so this adds a few hundred lines of our code and ~60 KB to the stripped binary;
//! reqwest 0.12 (rustls, no default features) brings its pool, tower stack, URL parser and
//! compiled-in webpki roots. Measured here on the same one-GET program built both ways
//! (release, stripped): see the README's Performance section for the figures.
//!
//! It returns every answer, whatever its status, with its body: what a status means is the
//! caller's (an Elasticsearch 408 can carry a valid body, a 503 names its cause in it).
//! Timeouts are the caller's too (a probe bounds its whole query).

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        addr: String,
        /// The server's host answered that nothing listens on the port.
        refused: bool,
        message: String,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {path}: {message}")]
    Http { path: String, message: String },
    #[error("invalid URL {url:?}: {message}")]
    Url { url: String, message: String },
}

/// An answer: its status and its whole body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// Sends requests over HTTP, or HTTPS with the TLS configuration it was built with.
#[derive(Clone)]
pub(crate) struct HttpClient {
    tls: Option<TlsConnector>,
    max_body_bytes: usize,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("tls", &self.tls.is_some())
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

impl HttpClient {
    /// `tls` is required for `https` URLs; a longer answer is an error.
    pub(crate) fn new(tls: Option<rustls::ClientConfig>, max_body_bytes: usize) -> HttpClient {
        HttpClient {
            tls: tls.map(|config| TlsConnector::from(Arc::new(config))),
            max_body_bytes,
        }
    }

    /// GETs `base_url` + `path`.
    pub(crate) async fn get(
        &self,
        base_url: &str,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Answer, HttpError> {
        self.send(Method::GET, base_url, path, headers, Bytes::new())
            .await
    }

    /// Sends `method` to `base_url` + `path` with `json` as its body (none when empty).
    pub(crate) async fn send(
        &self,
        method: Method,
        base_url: &str,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        json: Bytes,
    ) -> Result<Answer, HttpError> {
        let url = format!("{base_url}{path}");
        let uri: Uri = url
            .parse()
            .map_err(|err: hyper::http::uri::InvalidUri| HttpError::Url {
                url: url.clone(),
                message: err.to_string(),
            })?;
        let url_error = |message: &str| HttpError::Url {
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
                .map_err(|err| HttpError::Connect {
                    addr: addr.clone(),
                    refused: err.kind() == std::io::ErrorKind::ConnectionRefused,
                    message: io_message(&err),
                })?;
        // Answers are small and wanted at once.
        let _ = tcp.set_nodelay(true);
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, addr.as_str())
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("hostwatch-agent/", env!("CARGO_PKG_VERSION")),
            );
        if !json.is_empty() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(json))
            .map_err(|err| url_error(&err.to_string()))?;
        if !https {
            return exchange(tcp, request, path, self.max_body_bytes).await;
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
            .map_err(|err| HttpError::Tls(io_message(&err)))?;
        exchange(tls, request, path, self.max_body_bytes).await
    }
}

/// Sends the request on a new HTTP/1.1 connection over `io` and reads the whole answer.
async fn exchange<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
    path: &str,
    max_body_bytes: usize,
) -> Result<Answer, HttpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_error = |err: &dyn std::error::Error| HttpError::Http {
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
        let body = Limited::new(response.into_body(), max_body_bytes)
            .collect()
            .await
            .map_err(|err| http_error(err.as_ref()))?;
        Ok(Answer {
            status,
            body: body.to_bytes(),
        })
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
