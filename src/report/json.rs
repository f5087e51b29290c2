//! The machine-readable report: one JSON document per run (schema in docs/report-json.md).

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::engine::{HostReport, Mode, TaskReport};
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

#[derive(Serialize)]
struct Document<'a> {
    slice: &'static str,
    mode: Mode,
    playbook: &'a str,
    exit_code: i32,
    summary: Summary,
    hosts: Vec<Value>,
}

pub fn render(playbook: &str, hosts: &[HostReport], mode: Mode, detailed: bool) -> String {
    let summary = Summary::of(hosts);
    let doc = Document {
        slice: env!("CARGO_PKG_VERSION"),
        mode,
        playbook,
        exit_code: summary.exit_code(mode, detailed),
        summary,
        hosts: hosts
            .iter()
            .map(|h| {
                json!({
                    "host": h.host,
                    "summary": Summary::of(std::slice::from_ref(h)),
                    "observe_ms": ms(h.observe_time),
                    "duration_ms": ms(h.total_time),
                    "tasks": h.tasks.iter().map(task).collect::<Vec<_>>(),
                })
            })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
