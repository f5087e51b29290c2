//! The machine-readable report: one JSON document per run (schema in docs/report-json.md).

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::engine::{Mode, TaskReport};
use crate::error::Error;
use crate::fleet::Outcome;
use crate::report::Summary;

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn task(t: &TaskReport) -> Value {
    let cis: Map<String, Value> = t
        .cis
        .iter()
        .map(|(b, id)| (b.clone(), Value::String(id.clone())))
        .collect();
    json!({
        "name": t.name,
        "id": t.id,
        "kind": t.kind,
        "source": t.source,
        "handler": t.handler,
        "control": t.control,
        "cis": cis,
        "level": t.level,
        "status": t.status,
        "changes": t.changes,
        "message": t.message,
        "duration_ms": ms(t.duration),
    })
}

/// An error as text without the `error: ` that starts it on a terminal.
fn message(e: &Error) -> String {
    let text = e.to_string();
    text.strip_prefix("error: ")
        .unwrap_or(&text)
        .trim_end()
        .to_string()
}

fn host(o: &Outcome) -> Value {
    match &o.report {
        Ok(h) => json!({
            "host": h.host,
            "error": null,
            "summary": Summary::host(h),
            "observe_ms": ms(h.observe_time),
            "duration_ms": ms(h.total_time),
            "tasks": h.tasks.iter().map(task).collect::<Vec<_>>(),
        }),
        Err(e) => json!({
            "host": o.name,
            "error": message(&e.error),
            "summary": Summary { hosts_failed: 1, ..Summary::default() },
            "observe_ms": 0.0,
            "duration_ms": 0.0,
            "tasks": [],
        }),
    }
}

#[derive(Serialize)]
struct Document<'a> {
    slice: &'static str,
    mode: Mode,
    playbook: &'a str,
    exit_code: i32,
    summary: Summary,
    hosts: Vec<Value>,
}

pub fn render(playbook: &str, outcomes: &[Outcome], mode: Mode, detailed: bool) -> String {
    let summary = Summary::of(outcomes);
    let doc = Document {
        slice: env!("CARGO_PKG_VERSION"),
        mode,
        playbook,
        exit_code: summary.exit_code(mode, detailed),
        summary,
        hosts: outcomes.iter().map(host).collect(),
    };
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
