//! Why an issue is open (GetIssue's `explanation`): the readable block `hostwatchctl
//! issue ID` prints under the fields, and its JSON for `-o json`.

use std::time::Duration;

use proto::v1::{Evidence, Explanation};
use serde_json::{Map, Value, json};

use crate::format::{
    Rows, insert_time, json_number, number, render_fields, severity_name, time_cell,
};

/// The text view shows this many of the earliest and of the latest deciding samples;
/// `-o json` has every sample the server kept (up to 60).
const TEXT_HEAD_SAMPLES: usize = 3;
const TEXT_TAIL_SAMPLES: usize = 7;

/// "Why it is open" (or "Why it was open" for a closed issue), then "Why it closed".
pub(crate) fn block(explanation: &Explanation) -> String {
    let mut sections = Vec::new();
    if let Some(opened) = &explanation.opened {
        let title = if explanation.closed.is_some() {
            "Why it was open"
        } else {
            "Why it is open"
        };
        sections.push(evidence_block(title, opened));
    }
    if let Some(closed) = &explanation.closed {
        sections.push(evidence_block("Why it closed", closed));
    }
    sections.join("\n\n")
}

fn evidence_block(title: &str, evidence: &Evidence) -> String {
    let condition = evidence.condition.clone().unwrap_or_default();
    let window = evidence.window.clone().unwrap_or_default();
    let unit = condition.unit.as_str();
    let mut measured = evidence.measured.clone();
    if !evidence.detail.is_empty() {
        measured = format!("{measured} ({})", evidence.detail);
    }
    let mut fields = vec![
        ("Rule", evidence.rule.clone()),
        ("Decided", time_cell(evidence.decided_unix_ms)),
        ("Severity", severity_name(evidence.severity)),
        ("Measured", measured),
        ("Condition", condition.text.clone()),
    ];
    if !condition.tiers.is_empty() {
        // The tier the decision gave is marked, unless this is a close.
        let holding = (condition.comparator != "<").then_some(evidence.severity);
        let tiers: Vec<String> = condition
            .tiers
            .iter()
            .map(|tier| {
                let mark = if Some(tier.severity) == holding {
                    " (holds)"
                } else {
                    ""
                };
                format!(
                    "{} {} {}{mark}",
                    severity_name(tier.severity),
                    if unit == "seconds" { "after" } else { "over" },
                    value_text(tier.above, unit)
                )
            })
            .collect();
        fields.push(("Tiers", tiers.join(", ")));
    }
    fields.push(("Window", window_text(&window)));
    if let Some(silence) = &evidence.silence {
        fields.push(("Silent since", time_cell(silence.silent_since_unix_ms)));
        fields.push(("Silent for", duration_text(silence.silent_for_ms)));
        fields.push((
            "Allowance",
            format!(
                "{} ({} × {} interval)",
                duration_text(silence.allowance_ms),
                silence.missed_intervals,
                duration_text(silence.interval_ms)
            ),
        ));
    }
    if !evidence.samples.is_empty() {
        let n_kept = evidence.samples.len() as u64;
        let count = if evidence.samples_elided == 0 {
            format!("{n_kept}")
        } else {
            format!(
                "{} ({n_kept} kept, {} elided)",
                n_kept + evidence.samples_elided,
                evidence.samples_elided
            )
        };
        fields.push(("Samples", count));
    }
    let mut text = format!("{title}:\n{}", indent(&render_fields(&fields)));
    if !evidence.samples.is_empty() {
        text.push_str("\n\n");
        text.push_str(&indent(&samples_table(evidence).render()));
    }
    if !evidence.nodes.is_empty() {
        text.push_str("\n\n");
        text.push_str(&indent(&nodes_table(evidence).render()));
    }
    text
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The deciding samples, oldest first: the earliest few and the latest ones, with a row
/// saying how many are not shown (elided by the server, or left for `-o json`).
pub(crate) fn samples_table(evidence: &Evidence) -> Rows {
    let unit = evidence
        .condition
        .as_ref()
        .map_or("", |condition| condition.unit.as_str());
    let samples = &evidence.samples;
    let n_shown = TEXT_HEAD_SAMPLES + TEXT_TAIL_SAMPLES;
    let (head, tail) = if samples.len() <= n_shown && evidence.samples_elided == 0 {
        (&samples[..], &samples[..0])
    } else {
        let head_len = TEXT_HEAD_SAMPLES.min(samples.len());
        let tail_start = samples
            .len()
            .saturating_sub(TEXT_TAIL_SAMPLES)
            .max(head_len);
        (&samples[..head_len], &samples[tail_start..])
    };
    let row = |sample: &proto::v1::DecidingSample| {
        vec![
            time_cell(sample.time_unix_ms),
            value_text(sample.value, unit),
        ]
    };
    let mut rows = Rows::new(vec!["SAMPLE TIME", "VALUE"]);
    rows.rows.extend(head.iter().map(row));
    if !tail.is_empty() {
        let hidden = (samples.len() - head.len() - tail.len()) as u64 + evidence.samples_elided;
        push_note(&mut rows, format!("… {hidden} samples not shown"));
        rows.rows.extend(tail.iter().map(row));
    }
    rows
}

fn push_note(rows: &mut Rows, note: String) {
    let mut row = vec![note];
    row.resize(rows.header.len(), String::new());
    rows.rows.push(row);
}

/// Each node's part in a consensus decision: its normalized view or its failure.
pub(crate) fn nodes_table(evidence: &Evidence) -> Rows {
    let mut rows = Rows::new(vec!["NODE", "OUTCOME", "LEADER", "VIEW"]);
    for node in &evidence.nodes {
        let view = if node.error.is_empty() {
            node.members
                .iter()
                .map(|member| {
                    let dead = if member.alive { "" } else { " (dead)" };
                    format!("{} {}{dead}", member.id, member.state)
                })
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            node.error.clone()
        };
        rows.rows.push(vec![
            node.node.clone(),
            node.outcome.clone(),
            if node.leaders.is_empty() {
                "-".to_owned()
            } else {
                node.leaders.join(", ")
            },
            view,
        ]);
    }
    if evidence.nodes_elided > 0 {
        push_note(&mut rows, format!("… {} more nodes", evidence.nodes_elided));
    }
    rows
}

fn window_text(window: &proto::v1::EvidenceWindow) -> String {
    let lasted = duration_text(u64::try_from(window.to_unix_ms - window.from_unix_ms).unwrap_or(0));
    format!(
        "{} to {} ({lasted}, {} clock); open_for {}, close_for {}",
        time_cell(window.from_unix_ms),
        time_cell(window.to_unix_ms),
        if window.clock.is_empty() {
            "agent"
        } else {
            &window.clock
        },
        duration_text(window.open_for_ms),
        duration_text(window.close_for_ms),
    )
}

fn duration_text(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// A value as its unit reads: "83.2 %", "2.35", "45s".
fn value_text(value: f64, unit: &str) -> String {
    match unit {
        "percent" => format!("{} %", number(value)),
        "seconds" if value.is_finite() && value >= 0.0 => {
            duration_text((value * 1000.0).round() as u64)
        }
        _ => number(value),
    }
}

/// `{"opened": {...}, "closed": {...}}`, times in both forms as everywhere in `-o json`.
pub(crate) fn json(explanation: &Explanation) -> Value {
    json!({
        "opened": explanation.opened.as_ref().map_or(Value::Null, evidence_json),
        "closed": explanation.closed.as_ref().map_or(Value::Null, evidence_json),
    })
}

fn evidence_json(evidence: &Evidence) -> Value {
    let mut object = Map::new();
    object.insert("rule".into(), evidence.rule.clone().into());
    insert_time(&mut object, "decided", evidence.decided_unix_ms);
    object.insert("severity".into(), severity_name(evidence.severity).into());
    object.insert("measured".into(), evidence.measured.clone().into());
    object.insert("detail".into(), evidence.detail.clone().into());
    let condition = evidence.condition.clone().unwrap_or_default();
    object.insert(
        "condition".into(),
        json!({
            "text": condition.text,
            "comparator": condition.comparator,
            "threshold": json_number(condition.threshold),
            "unit": condition.unit,
            "tiers": condition.tiers.iter().map(|tier| json!({
                "severity": severity_name(tier.severity),
                "above": json_number(tier.above),
            })).collect::<Vec<_>>(),
            "tier_threshold": json_number(condition.tier_threshold),
        }),
    );
    let window = evidence.window.clone().unwrap_or_default();
    let mut window_object = Map::new();
    window_object.insert("open_for_ms".into(), window.open_for_ms.into());
    window_object.insert("close_for_ms".into(), window.close_for_ms.into());
    insert_time(&mut window_object, "from", window.from_unix_ms);
    insert_time(&mut window_object, "to", window.to_unix_ms);
    window_object.insert("clock".into(), window.clock.into());
    object.insert("window".into(), Value::Object(window_object));
    let samples: Vec<Value> = evidence
        .samples
        .iter()
        .map(|sample| {
            let mut sample_object = Map::new();
            insert_time(&mut sample_object, "time", sample.time_unix_ms);
            sample_object.insert("value".into(), json_number(sample.value));
            Value::Object(sample_object)
        })
        .collect();
    object.insert("samples".into(), samples.into());
    object.insert("samples_elided".into(), evidence.samples_elided.into());
    let silence = evidence.silence.as_ref().map_or(Value::Null, |silence| {
        let mut silence_object = Map::new();
        insert_time(
            &mut silence_object,
            "silent_since",
            silence.silent_since_unix_ms,
        );
        silence_object.insert("silent_for_ms".into(), silence.silent_for_ms.into());
        silence_object.insert("interval_ms".into(), silence.interval_ms.into());
        silence_object.insert("missed_intervals".into(), silence.missed_intervals.into());
        silence_object.insert("allowance_ms".into(), silence.allowance_ms.into());
        silence_object.insert("escalate_after_ms".into(), silence.escalate_after_ms.into());
        Value::Object(silence_object)
    });
    object.insert("silence".into(), silence);
    let nodes: Vec<Value> = evidence
        .nodes
        .iter()
        .map(|node| {
            json!({
                "node": node.node,
                "outcome": node.outcome,
                "error": node.error,
                "leaders": node.leaders,
                "members": node.members.iter().map(|member| json!({
                    "id": member.id,
                    "state": member.state,
                    "alive": member.alive,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    object.insert("nodes".into(), nodes.into());
    object.insert("nodes_elided".into(), evidence.nodes_elided.into());
    Value::Object(object)
}

#[cfg(test)]
pub(crate) mod tests;
