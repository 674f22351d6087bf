//! The `log` sink: every event as one JSON line (the envelope of `events::Event::to_json`)
//! on stdout. The embedded default, and what the journal keeps under systemd.

use std::io::Write;

use serde_json::Value;

use super::{DeliveryError, Sink};

#[derive(Debug)]
pub struct LogSink<W> {
    out: W,
}

impl LogSink<std::io::Stdout> {
    pub fn stdout() -> Self {
        Self {
            out: std::io::stdout(),
        }
    }
}

impl<W: Write + Send + 'static> LogSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    fn write_line(&mut self, envelope: &Value) -> std::io::Result<()> {
        let mut line = envelope.to_string();
        line.push('\n');
        // One write per line, so lines from concurrent writers never interleave.
        self.out.write_all(line.as_bytes())?;
        self.out.flush()
    }
}

impl<W: Write + Send + 'static> Sink for LogSink<W> {
    async fn deliver(&mut self, envelope: &Value) -> Result<(), DeliveryError> {
        self.write_line(envelope)
            .map_err(|error| DeliveryError::Transient(format!("stdout: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Notification};
    use crate::model::{NodeKey, Severity, Timestamp};

    #[tokio::test]
    async fn one_json_line_per_event() {
        let node = NodeKey {
            tenant: "t".into(),
            cluster: "c".into(),
            node: "n".into(),
        };
        let event = Event::Notification(Notification::about_node(
            &node,
            Severity::Info,
            "New node",
            "node t/c/n appeared".into(),
            Timestamp::from_unix_ms(1_700_000_000_000),
        ));
        let mut sink = LogSink::new(Vec::new());
        sink.deliver(&event.to_json()).await.unwrap();
        sink.deliver(&event.to_json()).await.unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let json: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(json["source"], "notifications");
        assert_eq!(json["title"], "New node");
        assert_eq!(json["tenant"], "t");
        assert_eq!(json["time"], "2023-11-14T22:13:20.000Z");
    }
}
