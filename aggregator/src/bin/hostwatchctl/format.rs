//! Shared formatting: enum names, times, numbers, sizes, and the plain table layout.
//!
//! Everything here is pure: the current time comes in as an argument so the output of
//! every command can be tested with hand-built values. Printing lives in `main.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::{ContentArrangement, Table, presets};
use proto::v1::{EventSource, HealthStatus, IssueEventKind, IssueState, Severity};
use serde_json::{Map, Value};

/// A table: a header and rows of cells, all plain strings. The commands build these so
/// tests can look at cells without parsing rendered text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rows {
    pub(crate) header: Vec<&'static str>,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Rows {
    pub(crate) fn new(header: Vec<&'static str>) -> Self {
        Rows {
            header,
            rows: Vec::new(),
        }
    }

    /// Renders in the style of `kubectl get`: no borders, columns two spaces apart.
    pub(crate) fn render(&self) -> String {
        let mut table = Table::new();
        table
            .load_style(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(self.header.clone());
        for row in &self.rows {
            table.add_row(row.clone());
        }
        for column in table.column_iter_mut() {
            column.set_padding((0, 2));
        }
        table.trim_fmt()
    }
}

/// Renders label/value pairs as two aligned columns, for the detail views.
pub(crate) fn render_fields(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(label, _)| label.len() + 1)
        .max()
        .unwrap_or(0);
    fields
        .iter()
        .map(|(label, value)| {
            format!("{:<width$}  {value}", format!("{label}:"))
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lowercase name of a proto enum value without its type prefix ("SEVERITY_WARNING" →
/// "warning"); "unknown(7)" for a value this build does not know.
fn enum_name(name: Option<&str>, prefix: &str, raw: i32) -> String {
    match name {
        Some(name) => name
            .strip_prefix(prefix)
            .unwrap_or(name)
            .to_ascii_lowercase(),
        None => format!("unknown({raw})"),
    }
}

pub(crate) fn severity_name(raw: i32) -> String {
    let name = Severity::try_from(raw)
        .ok()
        .map(|value| value.as_str_name());
    enum_name(name, "SEVERITY_", raw)
}

pub(crate) fn issue_state_name(raw: i32) -> String {
    let name = IssueState::try_from(raw)
        .ok()
        .map(|value| value.as_str_name());
    enum_name(name, "ISSUE_STATE_", raw)
}

pub(crate) fn issue_event_kind_name(raw: i32) -> String {
    let name = IssueEventKind::try_from(raw)
        .ok()
        .map(|value| value.as_str_name());
    enum_name(name, "ISSUE_EVENT_KIND_", raw)
}

pub(crate) fn event_source_name(raw: i32) -> String {
    let name = EventSource::try_from(raw)
        .ok()
        .map(|value| value.as_str_name());
    enum_name(name, "EVENT_SOURCE_", raw)
}

pub(crate) fn health_name(raw: i32) -> String {
    let name = HealthStatus::try_from(raw)
        .ok()
        .map(|value| value.as_str_name());
    enum_name(name, "HEALTH_STATUS_", raw)
}

/// An enum name for a table cell: "-" instead of "unspecified".
pub(crate) fn cell_name(name: String) -> String {
    if name == "unspecified" {
        "-".to_owned()
    } else {
        name
    }
}

/// The wall clock as ms since the epoch, the unit every time in the API uses.
pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 in UTC with second precision; `None` for 0 (the API's "never").
pub(crate) fn rfc3339(unix_ms: i64) -> Option<String> {
    system_time(unix_ms).map(|time| humantime::format_rfc3339_seconds(time).to_string())
}

/// RFC 3339 in UTC with millisecond precision, for JSON; `None` for 0.
pub(crate) fn rfc3339_millis(unix_ms: i64) -> Option<String> {
    system_time(unix_ms).map(|time| humantime::format_rfc3339_millis(time).to_string())
}

fn system_time(unix_ms: i64) -> Option<SystemTime> {
    let unix_ms = u64::try_from(unix_ms).ok().filter(|ms| *ms > 0)?;
    UNIX_EPOCH.checked_add(Duration::from_millis(unix_ms))
}

/// A table cell for a time: RFC 3339, or "-" for never.
pub(crate) fn time_cell(unix_ms: i64) -> String {
    rfc3339(unix_ms).unwrap_or_else(|| "-".to_owned())
}

/// How long ago `unix_ms` was, in the largest whole unit: "3s ago", "5m ago", "2h ago",
/// "4d ago"; "in 2s" for a time ahead of `now` (clock skew); "never" for 0.
pub(crate) fn ago(unix_ms: i64, now_unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".to_owned();
    }
    let delta_ms = now_unix_ms.saturating_sub(unix_ms);
    let seconds = delta_ms.unsigned_abs() / 1000;
    let span = if seconds < 60 {
        format!("{seconds}s")
    } else if seconds < 3600 {
        format!("{}m", seconds / 60)
    } else if seconds < 86_400 {
        format!("{}h", seconds / 3600)
    } else {
        format!("{}d", seconds / 86_400)
    };
    if delta_ms < 0 && seconds > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// A number with at most two decimals and no trailing zeros: 13.25, 13.2, 80.
pub(crate) fn number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// A percentage for a table: "13.2 %".
pub(crate) fn percent(value: f64) -> String {
    format!("{} %", number(value))
}

/// A size in binary units: "512 B", "19.6 GiB".
pub(crate) fn bytes(value: i64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if value.unsigned_abs() < 1024 {
        return format!("{value} B");
    }
    let mut scaled = value as f64 / 1024.0;
    let mut unit_idx = 0;
    while scaled.abs() >= 1024.0 && unit_idx + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit_idx += 1;
    }
    format!("{scaled:.1} {}", UNITS[unit_idx])
}

/// Adds `"<name>": RFC 3339` and `"<name>_unix_ms": ms` to a JSON object; both are null
/// when the time is 0 (never).
pub(crate) fn insert_time(object: &mut Map<String, Value>, name: &str, unix_ms: i64) {
    let (text, ms) = match rfc3339_millis(unix_ms) {
        Some(text) => (Value::from(text), Value::from(unix_ms)),
        None => (Value::Null, Value::Null),
    };
    object.insert(name.to_owned(), text);
    object.insert(format!("{name}_unix_ms"), ms);
}

/// A float for JSON: a number, or null when not finite (JSON has no NaN).
pub(crate) fn json_number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// `tenant/cluster[/node][:mount]`, how every command names a subject.
pub(crate) fn subject(tenant: &str, cluster: &str, node: &str, mount: &str) -> String {
    let mut text = format!("{tenant}/{cluster}");
    if !node.is_empty() {
        text.push('/');
        text.push_str(node);
    }
    if !mount.is_empty() {
        text.push(':');
        text.push_str(mount);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_names_are_lowercase_without_prefix() {
        assert_eq!(severity_name(Severity::Warning as i32), "warning");
        assert_eq!(issue_state_name(IssueState::Open as i32), "open");
        assert_eq!(
            issue_event_kind_name(IssueEventKind::Opened as i32),
            "opened"
        );
        assert_eq!(
            event_source_name(EventSource::Notifications as i32),
            "notifications"
        );
        assert_eq!(health_name(HealthStatus::Ok as i32), "ok");
        assert_eq!(severity_name(0), "unspecified");
        assert_eq!(severity_name(42), "unknown(42)");
        assert_eq!(cell_name(severity_name(0)), "-");
    }

    #[test]
    fn times_are_rfc3339_utc_and_zero_is_never() {
        assert_eq!(
            rfc3339(1_700_000_000_123).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            rfc3339_millis(1_700_000_000_123).as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
        assert_eq!(rfc3339(0), None);
        assert_eq!(time_cell(0), "-");
    }

    #[test]
    fn ago_uses_the_largest_whole_unit() {
        let now = 1_700_000_000_000;
        assert_eq!(ago(now - 3_400, now), "3s ago");
        assert_eq!(ago(now - 5 * 60_000 - 10, now), "5m ago");
        assert_eq!(ago(now - 2 * 3_600_000, now), "2h ago");
        assert_eq!(ago(now - 4 * 86_400_000, now), "4d ago");
        assert_eq!(ago(now + 2_000, now), "in 2s");
        assert_eq!(ago(now + 200, now), "0s ago");
        assert_eq!(ago(0, now), "never");
    }

    #[test]
    fn numbers_drop_trailing_zeros() {
        assert_eq!(number(13.2), "13.2");
        assert_eq!(number(80.0), "80");
        assert_eq!(number(1.0 / 3.0), "0.33");
        assert_eq!(number(-0.001), "0");
        assert_eq!(percent(13.25), "13.25 %");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(bytes(21_045_288_960), "19.6 GiB");
    }

    #[test]
    fn json_times_carry_text_and_ms_or_null() {
        let mut object = Map::new();
        insert_time(&mut object, "opened", 1_700_000_000_123);
        insert_time(&mut object, "closed", 0);
        assert_eq!(
            Value::Object(object),
            serde_json::json!({
                "opened": "2023-11-14T22:13:20.123Z",
                "opened_unix_ms": 1_700_000_000_123_i64,
                "closed": null,
                "closed_unix_ms": null,
            })
        );
    }

    #[test]
    fn subjects_name_node_and_mount_when_present() {
        assert_eq!(subject("acme", "e2e", "node-a", "/"), "acme/e2e/node-a:/");
        assert_eq!(subject("acme", "e2e", "node-a", ""), "acme/e2e/node-a");
        assert_eq!(subject("acme", "e2e", "", ""), "acme/e2e");
    }

    #[test]
    fn tables_render_without_borders() {
        let mut rows = Rows::new(vec!["ID", "STATE"]);
        rows.rows.push(vec!["abc".to_owned(), "open".to_owned()]);
        assert_eq!(rows.render(), "ID   STATE\nabc  open");
    }
}
