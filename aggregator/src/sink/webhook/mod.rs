//! The `webhook` sink: the event envelope as JSON, POSTed to a URL, with optional custom
//! headers and an `X-Hostwatch-Signature: sha256=<hex>` header, the HMAC-SHA256 of the
//! exact body under a shared secret, so the receiver can tell it came from us.
//!
//! The URL, the secret and the header values are secrets (they often carry tokens).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use super::secret::{self, Secret};
use super::{DeliveryError, Sink, SinkError, http};

pub const SIGNATURE_HEADER: &str = "x-hostwatch-signature";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Option<Secret>,
    pub url_file: Option<PathBuf>,
    /// Signs each body with HMAC-SHA256 when set.
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    /// Extra headers sent with every request, e.g. an `Authorization`.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
}

impl WebhookConfig {
    pub fn build(&self, timeout: Duration) -> Result<WebhookSink, SinkError> {
        let url = secret::require("url", self.url.as_ref(), self.url_file.as_ref())?;
        let url = reqwest::Url::parse(url.expose()).map_err(|error| SinkError::Invalid {
            field: "url",
            problem: format!("not a URL ({error})"),
        })?;
        let signing_key =
            secret::resolve("secret", self.secret.as_ref(), self.secret_file.as_deref())?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &self.headers {
            let header_name =
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    SinkError::Invalid {
                        field: "headers",
                        problem: format!("{name:?} is not a header name"),
                    }
                })?;
            let mut header_value =
                reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                    SinkError::Invalid {
                        field: "headers",
                        problem: format!("the value of {name:?} is not a header value"),
                    }
                })?;
            header_value.set_sensitive(true);
            headers.insert(header_name, header_value);
        }
        Ok(WebhookSink {
            client: http::client(timeout)?,
            url,
            signing_key,
            headers,
        })
    }
}

pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    signing_key: Option<Secret>,
    headers: reqwest::header::HeaderMap,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("signed", &self.signing_key.is_some())
            .field("headers", &self.headers.len())
            .finish_non_exhaustive()
    }
}

/// `sha256=<hex>` of HMAC-SHA256(key, body).
pub fn signature(key: &Secret, body: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Sink for WebhookSink {
    async fn deliver(&mut self, envelope: &Value) -> Result<(), DeliveryError> {
        let body = serde_json::to_vec(envelope)
            .map_err(|error| DeliveryError::Permanent(format!("webhook: encode: {error}")))?;
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(key) = &self.signing_key {
            request = request.header(SIGNATURE_HEADER, signature(key, &body));
        }
        http::send("webhook", request.body(body)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
