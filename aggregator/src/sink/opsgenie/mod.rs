//! The `opsgenie` sink (Alert API v2): an issue's `opened` creates an alert whose alias is
//! the issue id, with the priority from the severity (critical P1, error P2, warning P3,
//! info P5), tags and details; `updated` adds a note, and when the severity tier changed
//! first sets the alert's priority to the new tier's; `closed` closes the alert by alias.
//! A notification creates an alert of its own (alias = the notification's id).
//!
//! `Authorization: GenieKey …`; the key is a secret. The base URL is configurable for
//! the EU instance (`https://api.eu.opsgenie.com`).

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::envelope::{body, headline, is_issue, text};
use super::secret::{self, Secret};
use super::{DeliveryError, Sink, SinkError, http};
use crate::issue::UpdateReason;

/// OpsGenie cuts an alert's message at 130 characters.
const MESSAGE_CHARS: usize = 130;

fn default_base_url() -> String {
    "https://api.opsgenie.com".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieConfig {
    pub api_key: Option<Secret>,
    pub api_key_file: Option<PathBuf>,
    /// `https://api.opsgenie.com`, or `https://api.eu.opsgenie.com` for the EU instance.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Tags added to every alert, next to hostwatch's own.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl OpsgenieConfig {
    pub fn build(&self, timeout: Duration) -> Result<OpsgenieSink, SinkError> {
        let api_key =
            secret::require("api_key", self.api_key.as_ref(), self.api_key_file.as_ref())?;
        let base_url = reqwest::Url::parse(&self.base_url).map_err(|error| SinkError::Invalid {
            field: "base_url",
            problem: format!("not a URL ({error})"),
        })?;
        Ok(OpsgenieSink {
            client: http::client(timeout)?,
            base_url: base_url.as_str().trim_end_matches('/').to_owned(),
            authorization: format!("GenieKey {}", api_key.expose()),
            tags: self.tags.clone(),
        })
    }
}

pub struct OpsgenieSink {
    client: reqwest::Client,
    base_url: String,
    authorization: String,
    tags: Vec<String>,
}

impl std::fmt::Debug for OpsgenieSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsgenieSink")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// OpsGenie's priority for a hostwatch severity.
pub fn priority(severity: &str) -> &'static str {
    match severity {
        "critical" => "P1",
        "error" => "P2",
        "warning" => "P3",
        _ => "P5",
    }
}

/// An alias is at most 512 characters; ids are far shorter, and URL-safe.
fn alias(envelope: &Value) -> &str {
    if is_issue(envelope) {
        text(envelope, "issue_id")
    } else {
        text(envelope, "id")
    }
}

impl OpsgenieSink {
    /// The body of `POST /v2/alerts`.
    pub fn create_body(&self, envelope: &Value) -> Value {
        let mut tags = vec![
            "hostwatch".to_owned(),
            format!("tenant:{}", text(envelope, "tenant")),
            format!("cluster:{}", text(envelope, "cluster")),
            format!("severity:{}", text(envelope, "severity")),
        ];
        if is_issue(envelope) {
            tags.push(format!("rule:{}", text(envelope, "rule")));
        }
        tags.extend(self.tags.iter().cloned());
        let mut details = serde_json::Map::new();
        for field in [
            "tenant",
            "cluster",
            "node",
            "mount",
            "resource_kind",
            "resource",
            "rule",
            "remedy",
            "origin",
        ] {
            let value = text(envelope, field);
            if !value.is_empty() {
                details.insert(field.to_owned(), Value::String(value.to_owned()));
            }
        }
        for field in ["value", "threshold"] {
            if let Some(number) = envelope[field].as_f64() {
                details.insert(field.to_owned(), Value::String(number.to_string()));
            }
        }
        details.insert(
            "event_id".into(),
            Value::String(text(envelope, "id").to_owned()),
        );
        json!({
            "message": headline(envelope).chars().take(MESSAGE_CHARS).collect::<String>(),
            "alias": alias(envelope),
            "description": body(envelope),
            "priority": priority(text(envelope, "severity")),
            "tags": tags,
            "details": details,
            "entity": text(envelope, "node"),
            "source": "hostwatch",
        })
    }

    async fn post(&self, what: &str, path: &str, body: &Value) -> Result<(), DeliveryError> {
        self.send(what, Method::POST, path, body).await
    }

    async fn send(
        &self,
        what: &str,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<(), DeliveryError> {
        let request = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .header(reqwest::header::AUTHORIZATION, &self.authorization)
            .json(body);
        http::send(what, request).await?;
        Ok(())
    }
}

impl Sink for OpsgenieSink {
    async fn deliver(&mut self, envelope: &Value) -> Result<(), DeliveryError> {
        let kind = if is_issue(envelope) {
            text(envelope, "kind")
        } else {
            "opened"
        };
        match kind {
            "updated" => {
                // Priority first: setting it again on a redelivery changes nothing, while
                // a note would be added twice if it went first and the priority failed.
                if text(envelope, "reason") == UpdateReason::Severity.as_str() {
                    let path = format!(
                        "/v2/alerts/{}/priority?identifierType=alias",
                        alias(envelope)
                    );
                    let body = json!({ "priority": priority(text(envelope, "severity")) });
                    self.send("opsgenie update priority", Method::PUT, &path, &body)
                        .await?;
                }
                let path = format!("/v2/alerts/{}/notes?identifierType=alias", alias(envelope));
                let note = json!({
                    "note": format!("{}\n{}", headline(envelope), body(envelope)),
                    "source": "hostwatch",
                });
                self.post("opsgenie add note", &path, &note).await
            }
            "closed" => {
                let path = format!("/v2/alerts/{}/close?identifierType=alias", alias(envelope));
                let close = json!({ "note": body(envelope), "source": "hostwatch" });
                self.post("opsgenie close alert", &path, &close).await
            }
            _ => {
                let create = self.create_body(envelope);
                self.post("opsgenie create alert", "/v2/alerts", &create)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests;
