//! The `slack` sink, in one of two modes:
//! - incoming webhook (`webhook_url`): one message per event;
//! - bot token (`token` + `channel`): one message per issue, posted with
//!   `chat.postMessage` when it opens and edited in place with `chat.update` at most every
//!   `update_interval` (default 5 min) while it is open, and always when it closes. The
//!   colour says the state: red (error, critical), amber (warning), blue (info), green
//!   once closed. Notifications are one message each.
//!
//! Which message belongs to which issue is kept in memory: after a restart, the next
//! event of an issue opened before posts a new message rather than editing the old one.
//! The webhook URL and the token are secrets.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::envelope::{body, headline, is_issue, place, text};
use super::secret::{self, Secret};
use super::{DeliveryError, Sink, SinkError, http};

pub const GREEN: &str = "#2eb886";
pub const RED: &str = "#d00000";
pub const AMBER: &str = "#daa038";
pub const BLUE: &str = "#439fe0";

fn default_api_url() -> String {
    "https://slack.com/api".to_owned()
}

fn default_update_interval() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Incoming-webhook mode.
    pub webhook_url: Option<Secret>,
    pub webhook_url_file: Option<PathBuf>,
    /// Bot-token mode (with `channel`).
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub channel: Option<String>,
    /// The Web API's base URL.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// Bot mode: an open issue's message is edited at most this often.
    #[serde(default = "default_update_interval", with = "humantime_serde")]
    pub update_interval: Duration,
}

impl SlackConfig {
    pub fn build(&self, timeout: Duration) -> Result<SlackSink, SinkError> {
        let webhook = secret::resolve(
            "webhook_url",
            self.webhook_url.as_ref(),
            self.webhook_url_file.as_deref(),
        )?;
        let token = secret::resolve("token", self.token.as_ref(), self.token_file.as_deref())?;
        let mode = match (webhook, token, &self.channel) {
            (Some(url), None, None) => {
                reqwest::Url::parse(url.expose()).map_err(|error| SinkError::Invalid {
                    field: "webhook_url",
                    problem: format!("not a URL ({error})"),
                })?;
                Mode::Webhook { url }
            }
            (None, Some(token), Some(channel)) => Mode::Bot {
                authorization: Secret::new(format!("Bearer {}", token.expose())),
                channel: channel.clone(),
                api_url: self.api_url.trim_end_matches('/').to_owned(),
                messages: HashMap::new(),
            },
            _ => {
                return Err(SinkError::Invalid {
                    field: "slack",
                    problem: "set either webhook_url (or webhook_url_file), or token (or \
                              token_file) and channel"
                        .into(),
                });
            }
        };
        Ok(SlackSink {
            client: http::client(timeout)?,
            mode,
            update_interval: self.update_interval,
            clock: Arc::new(Instant::now),
        })
    }
}

/// An issue's message in bot mode.
#[derive(Debug, Clone)]
struct Posted {
    channel: String,
    ts: String,
    last_edit: Instant,
}

#[derive(Debug)]
enum Mode {
    Webhook {
        url: Secret,
    },
    Bot {
        authorization: Secret,
        channel: String,
        api_url: String,
        messages: HashMap<String, Posted>,
    },
}

pub struct SlackSink {
    client: reqwest::Client,
    mode: Mode,
    update_interval: Duration,
    /// Injectable, so tests can step over the update interval.
    clock: Arc<dyn Fn() -> Instant + Send + Sync>,
}

impl std::fmt::Debug for SlackSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSink")
            .field("mode", &self.mode)
            .field("update_interval", &self.update_interval)
            .finish_non_exhaustive()
    }
}

/// The attachment colour for an event.
pub fn colour(envelope: &Value) -> &'static str {
    if is_issue(envelope) && text(envelope, "state") == "closed" {
        return GREEN;
    }
    match text(envelope, "severity") {
        "critical" | "error" => RED,
        "warning" => AMBER,
        _ => BLUE,
    }
}

/// The message for an event: a fallback text and one coloured attachment.
pub fn message(envelope: &Value) -> Value {
    let mut fields = vec![json!({ "title": "Where", "value": place(envelope), "short": true })];
    if is_issue(envelope) {
        fields.push(json!({ "title": "State", "value": text(envelope, "state"), "short": true }));
        if let (Some(value), Some(threshold)) =
            (envelope["value"].as_f64(), envelope["threshold"].as_f64())
        {
            fields.push(json!({
                "title": "Value",
                "value": format!("{value} (threshold {threshold})"),
                "short": true,
            }));
        }
    }
    json!({
        "text": headline(envelope),
        "attachments": [{
            "color": colour(envelope),
            "title": headline(envelope),
            "text": body(envelope),
            "fields": fields,
            "footer": format!("hostwatch · event {}", text(envelope, "id")),
        }],
    })
}

impl SlackSink {
    #[cfg(test)]
    fn with_clock(mut self, clock: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Calls a Web API method; Slack answers 200 with `ok: false` for most failures.
    async fn call(
        &self,
        method: &str,
        api_url: &str,
        authorization: &Secret,
        payload: &Value,
    ) -> Result<Value, DeliveryError> {
        let what = format!("slack {method}");
        let request = self
            .client
            .post(format!("{api_url}/{method}"))
            .header(reqwest::header::AUTHORIZATION, authorization.expose())
            .json(payload);
        let response = http::send(&what, request).await?;
        let answer: Value = response
            .json()
            .await
            .map_err(|error| DeliveryError::Transient(format!("{what}: bad answer: {error}")))?;
        if answer["ok"].as_bool() == Some(true) {
            return Ok(answer);
        }
        let error = answer["error"].as_str().unwrap_or("unknown error");
        let reason = format!("{what}: {error}");
        Err(match error {
            "ratelimited" => DeliveryError::Throttled {
                retry_after: Duration::from_secs(30),
                reason,
            },
            "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
                DeliveryError::Transient(reason)
            }
            _ => DeliveryError::Permanent(reason),
        })
    }
}

impl Sink for SlackSink {
    async fn deliver(&mut self, envelope: &Value) -> Result<(), DeliveryError> {
        let message = message(envelope);
        let now = (self.clock)();
        let (authorization, channel, api_url, posted) = match &self.mode {
            Mode::Webhook { url } => {
                let request = self.client.post(url.expose()).json(&message);
                http::send("slack webhook", request).await?;
                return Ok(());
            }
            Mode::Bot {
                authorization,
                channel,
                api_url,
                messages,
            } => (
                authorization.clone(),
                channel.clone(),
                api_url.clone(),
                messages.get(text(envelope, "issue_id")).cloned(),
            ),
        };
        let issue_id = text(envelope, "issue_id").to_owned();
        let closed = text(envelope, "state") == "closed";
        match posted.filter(|_| is_issue(envelope)) {
            Some(posted) => {
                let due = now.saturating_duration_since(posted.last_edit) >= self.update_interval;
                if !closed && !due {
                    // Throttled: the message shows this issue's state as of its last edit;
                    // the next edit (or the close) brings it up to date.
                    return Ok(());
                }
                let mut payload = message;
                payload["channel"] = Value::String(posted.channel.clone());
                payload["ts"] = Value::String(posted.ts.clone());
                self.call("chat.update", &api_url, &authorization, &payload)
                    .await?;
                if let Mode::Bot { messages, .. } = &mut self.mode {
                    if closed {
                        messages.remove(&issue_id);
                    } else {
                        messages.insert(
                            issue_id,
                            Posted {
                                last_edit: now,
                                ..posted
                            },
                        );
                    }
                }
            }
            None => {
                let mut payload = message;
                payload["channel"] = Value::String(channel);
                let answer = self
                    .call("chat.postMessage", &api_url, &authorization, &payload)
                    .await?;
                if is_issue(envelope) && !closed {
                    let posted = Posted {
                        channel: answer["channel"].as_str().unwrap_or_default().to_owned(),
                        ts: answer["ts"].as_str().unwrap_or_default().to_owned(),
                        last_edit: now,
                    };
                    if let Mode::Bot { messages, .. } = &mut self.mode {
                        messages.insert(issue_id, posted);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
