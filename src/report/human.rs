//! The report for people: one line per task, what differs under it, then a summary.

use std::fmt::Write;

use crate::engine::{HostReport, Mode, Status, TaskReport};
use crate::fleet::Outcome;
use crate::report::{status_word, Summary};

pub struct Style {
    pub color: bool,
    pub verbose: bool,
}

impl Style {
    fn paint(&self, s: Status, text: &str) -> String {
        if !self.color {
            return text.to_string();
        }
        let code = match s {
            Status::Pass => "32",
            Status::Drift => "33",
            Status::Changed => "36",
            Status::Fail => "1;31",
            Status::Skip => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

pub fn render(outcomes: &[Outcome], mode: Mode, style: &Style, detailed: bool) -> String {
    let mut out = String::new();
    for o in outcomes {
        if outcomes.len() > 1 {
            let _ = writeln!(out, "== {}", o.name);
        }
        match &o.report {
            Ok(h) => {
                for t in &h.tasks {
                    task(&mut out, mode, t, style);
                }
                host_summary(&mut out, h, style);
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{}  host[{}]  could not run",
                    style.paint(Status::Fail, "FAIL    "),
                    o.name
                );
                for line in e.error.to_string().lines() {
                    let _ = writeln!(out, "          {line}");
                }
            }
        }
    }
    let s = Summary::of(outcomes);
    if outcomes.len() > 1 {
        let _ = writeln!(
            out,
            "== {} hosts: {} ran, {} failed to run; tasks: {} pass, {} drift, {} changed, {} fail",
            outcomes.len(),
            outcomes.len() - s.hosts_failed,
            s.hosts_failed,
            s.pass,
            s.drift,
            s.changed,
            s.fail
        );
    }
    let _ = writeln!(out, "exit code {}", s.exit_code(mode, detailed));
    out
}

fn task(out: &mut String, mode: Mode, t: &TaskReport, style: &Style) {
    let word = status_word(mode, t.status);
    let pad = " ".repeat(8usize.saturating_sub(word.len()));
    let mut tags = Vec::new();
    if let Some(c) = &t.control {
        tags.push(c.clone());
    }
    for (bench, id) in &t.cis {
        tags.push(format!("CIS {bench} {id}"));
    }
    let tags = if tags.is_empty() {
        String::new()
    } else {
        format!("  [{}]", tags.join(", "))
    };
    let timing = if style.verbose {
        format!("  ({:.1} ms, {})", t.duration.as_secs_f64() * 1e3, t.source)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{}{pad}{}  {}{tags}{timing}",
        style.paint(t.status, word),
        t.id,
        t.name
    );
    let indent = "          ";
    if let Some(m) = &t.message {
        let _ = writeln!(out, "{indent}{m}");
    }
    if t.status == Status::Pass || t.status == Status::Skip {
        return;
    }
    for c in &t.changes {
        match (&c.before, &c.after) {
            (None, None) => {}
            (Some(b), Some(a)) => {
                let _ = writeln!(out, "{indent}{}: {b} → {a}", c.what);
            }
            (None, Some(a)) => {
                let _ = writeln!(out, "{indent}{}: {a}", c.what);
            }
            (Some(b), None) => {
                let _ = writeln!(out, "{indent}{}: {b} → (none)", c.what);
            }
        }
        if let Some(d) = &c.diff {
            for line in d.lines() {
                let _ = writeln!(out, "{indent}{line}");
            }
        }
    }
}

fn host_summary(out: &mut String, h: &HostReport, style: &Style) {
    let mut parts = vec![plural(h.tasks.len(), "task")];
    let counts = match h.mode {
        Mode::Check => [
            ("pass", Status::Pass),
            ("drift", Status::Drift),
            ("fail", Status::Fail),
            ("skip", Status::Skip),
        ],
        Mode::Apply => [
            ("ok", Status::Pass),
            ("changed", Status::Changed),
            ("fail", Status::Fail),
            ("skip", Status::Skip),
        ],
    };
    for (word, s) in counts {
        parts.push(style.paint(s, &format!("{} {word}", h.count(s))));
    }
    if h.deselected > 0 {
        parts.push(format!("{} not selected", h.deselected));
    }
    let _ = writeln!(
        out,
        "{}: {} in {:.1} ms",
        h.host,
        parts.join(", "),
        h.total_time.as_secs_f64() * 1e3
    );
}

/// `1 task`, `2 tasks`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}
