//! Runs one host's graph: observe, diff, and in apply mode apply, verify and run handlers.
//!
//! Both modes first observe every task of the host in one batch. Check mode stops at the diff.
//! Apply mode walks the graph in order; a task whose answers an earlier change may have made
//! stale observes again before it applies, and every changed task is observed once more
//! afterwards: a task whose diff is then not empty has failed to converge.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::graph::{self, Graph};
use crate::playbook::render::{Rendered, Selection};
use crate::playbook::{Level, Playbook};
use crate::resource::{Change, Observed, Resource};
use crate::transport::script::quote;
use crate::transport::{Answer, Probe, Transport};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Check,
    Apply,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In sync (shown as PASS in check mode, OK in apply mode).
    Pass,
    /// Check mode: the host differs from the playbook.
    Drift,
    /// Apply mode: the host was changed and now matches.
    Changed,
    Fail,
    Skip,
}

pub struct TaskReport {
    pub node: usize,
    pub handler: bool,
    /// `kind[target]`.
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    /// `file:line` of the task.
    pub source: String,
    pub control: Option<String>,
    pub cis: Vec<(String, String)>,
    pub level: Option<Level>,
    pub status: Status,
    pub changes: Vec<Change>,
    pub message: Option<String>,
    pub duration: Duration,
}

pub struct HostReport {
    pub host: String,
    pub mode: Mode,
    pub tasks: Vec<TaskReport>,
    /// Tasks left out by `--tags` / `--level`.
    pub deselected: usize,
    /// Time spent gathering state (check mode: the one batch).
    pub observe_time: Duration,
    pub total_time: Duration,
}

impl HostReport {
    pub fn count(&self, s: Status) -> usize {
        self.tasks.iter().filter(|t| t.status == s).count()
    }
}

/// How to run a host's graph.
pub struct How<'a> {
    pub mode: Mode,
    /// The tasks asked for (`--tags`, `--level`).
    pub selection: &'a Selection,
    /// How long a change that may cut SLICE off stays before the host undoes it by itself.
    pub revert_after: Duration,
}

/// Runs the graph on a transport. `progress` sees each task report as it is made.
pub fn run(
    pb: &Playbook,
    rendered: &[Rendered],
    graph: &Graph,
    t: &dyn Transport,
    how: &How,
    progress: &mut dyn FnMut(&TaskReport),
) -> HostReport {
    let (mode, sel, revert_after) = (how.mode, how.selection, how.revert_after);
    let start = Instant::now();
    let n = pb.tasks.len();
    // Handlers follow the selection of the tasks that notify them.
    let mut selected: Vec<bool> = pb.tasks.iter().map(|t| sel.selects(t)).collect();
    let handlers: Vec<bool> = (0..pb.handlers.len())
        .map(|h| {
            pb.tasks
                .iter()
                .enumerate()
                .any(|(i, t)| selected[i] && t.notify.contains(&h))
        })
        .collect();
    selected.extend(handlers);
    let deselected = selected.iter().filter(|s| !**s).count();

    // Check mode: one batch for the whole host.
    // One batch for the whole host, in both modes: over SSH that is one round trip. Apply mode
    // observes a task again only when an earlier change may have made its answers stale.
    let t0 = Instant::now();
    let batch = Batch::observe(
        t,
        graph
            .order
            .iter()
            .filter(|&&i| selected[i])
            .filter_map(|&i| rendered[i].resource.as_deref()),
    );
    let observe_time = t0.elapsed();
    let mut dirty = Dirty::default();

    let mut reports: Vec<TaskReport> = Vec::new();
    let mut status: Vec<Option<Status>> = vec![None; rendered.len()];
    // Apply mode: tasks that failed, or were skipped because something they need failed.
    let mut broken = vec![false; rendered.len()];
    for &i in &graph.order {
        if !selected[i] {
            continue;
        }
        let t0 = Instant::now();
        let (def, handler) = graph::def(pb, i);
        let mut report = TaskReport {
            node: i,
            handler,
            id: graph::label(def, &rendered[i]),
            name: def.name.clone(),
            kind: def.kind.name,
            source: def.loc.file_line(),
            control: def.control.clone(),
            cis: def.cis.clone(),
            level: def.level,
            status: Status::Skip,
            changes: Vec::new(),
            message: None,
            duration: Duration::ZERO,
        };
        let blocked = if handler {
            let notified = pb.tasks.iter().enumerate().any(|(k, task)| {
                task.notify.contains(&(i - n))
                    && matches!(status[k], Some(Status::Drift | Status::Changed))
            });
            (!notified).then(|| "not notified".to_string())
        } else if mode == Mode::Apply {
            graph.needs(i).into_iter().find(|&p| broken[p]).map(|p| {
                format!(
                    "depends on `{}`, which did not succeed",
                    graph::def(pb, p).0.name
                )
            })
        } else {
            None
        };
        broken[i] = blocked.is_some() && !handler;
        match (&rendered[i].resource, blocked) {
            (None, _) => report.message = rendered[i].skip.clone(),
            (Some(_), Some(why)) => report.message = Some(why),
            (Some(res), None) => match mode {
                Mode::Check => batch.diff(res.as_ref(), &mut report),
                Mode::Apply => {
                    let ctx = ApplyCtx {
                        t,
                        batch: &batch,
                        revert_after,
                    };
                    apply_one(res.as_ref(), &ctx, &mut dirty, &mut report)
                }
            },
        }
        report.duration = t0.elapsed();
        status[i] = Some(report.status);
        broken[i] |= report.status == Status::Fail;
        progress(&report);
        reports.push(report);
    }
    HostReport {
        host: t.name(),
        mode,
        tasks: reports,
        deselected,
        observe_time,
        total_time: start.elapsed(),
    }
}

/// The answers to every probe of a host, asked once each.
struct Batch {
    index: HashMap<Probe, usize>,
    answers: Vec<Answer>,
}

impl Batch {
    fn observe<'r>(t: &dyn Transport, resources: impl Iterator<Item = &'r dyn Resource>) -> Batch {
        let mut index = HashMap::new();
        let mut probes = Vec::new();
        for r in resources {
            for p in r.probes() {
                index.entry(p.clone()).or_insert_with(|| {
                    probes.push(p);
                    probes.len() - 1
                });
            }
        }
        let answers = t.observe(&probes);
        Batch { index, answers }
    }

    /// The batch's answers to these probes.
    fn answers(&self, probes: &[Probe]) -> Vec<Answer> {
        probes
            .iter()
            .map(
                |p| match self.index.get(p).and_then(|&k| self.answers.get(k)) {
                    Some(a) => a.clone(),
                    None => Answer::Failed("not observed".into()),
                },
            )
            .collect()
    }

    fn diff(&self, res: &dyn Resource, report: &mut TaskReport) {
        let probes = res.probes();
        let answers = self.answers(&probes);
        let obs = Observed {
            answers: &answers,
            probes: &probes,
        };
        match res.diff(&obs) {
            Ok(changes) if changes.is_empty() => report.status = Status::Pass,
            Ok(changes) => {
                report.status = Status::Drift;
                report.changes = changes;
            }
            Err(msg) => {
                report.status = Status::Fail;
                report.message = Some(msg);
            }
        }
    }
}

/// Observes the resource again after apply: what still differs, and what it notes about the
/// host now (a reboot that became necessary, say).
fn verify(res: &dyn Resource, t: &dyn Transport) -> (Result<Vec<Change>, String>, Option<String>) {
    let probes = res.probes();
    let answers = t.observe(&probes);
    let obs = Observed {
        answers: &answers,
        probes: &probes,
    };
    (res.diff(&obs), res.note(&obs))
}

/// Starts the revert on the host: a detached timer that runs `script` after `after`. Returns the
/// timer's process id.
fn arm(t: &dyn Transport, script: &str, after: Duration) -> Result<String, String> {
    let timer = format!("sleep {}; {script}", after.as_secs().max(1));
    let cmd = format!(
        "setsid sh -c {} > /dev/null 2>&1 < /dev/null & echo $!",
        quote(&timer)
    );
    let out = t.run(&cmd).map_err(|e| e.to_string())?;
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.success() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the timer did not start: {}", out.message()));
    }
    Ok(pid)
}

/// Stops the revert timer (its whole process group: the shell and its sleep).
fn disarm(t: &dyn Transport, pid: &str) {
    let _ = t.run(&format!(
        "kill -- -{pid} 2>/dev/null || kill {pid} 2>/dev/null; true"
    ));
}

/// After a change cut SLICE off: waits for the host's own revert, then says whether it worked.
fn locked_out(t: &dyn Transport, after: Duration, why: &str) -> String {
    // Confirming took up to half the delay already; the revert runs at the full delay.
    std::thread::sleep(after / 2 + Duration::from_secs(3));
    let back = match t.confirm_access(Duration::from_secs(10)) {
        Ok(()) => "the host put the previous state back and SLICE can log in again".to_string(),
        Err(e) => format!("and SLICE still cannot log in ({e}): check the host from its console"),
    };
    format!("this change cut SLICE's access to the host (a new connection failed: {why}); after {}s {back}", after.as_secs())
}

/// What earlier tasks of this run changed, to know which batch answers are stale.
#[derive(Default)]
struct Dirty {
    paths: Vec<String>,
    /// A change whose effect is unknown (a command) makes every answer stale.
    everything: bool,
}

impl Dirty {
    fn record(&mut self, res: &dyn Resource) {
        let paths = res.paths();
        if paths.is_empty() {
            self.everything = true;
        }
        self.paths.extend(paths.into_iter().map(String::from));
    }

    /// Whether an earlier change may have made any of these answers stale: the same path
    /// written; a path that was absent and has something written below it now (`mkdir -p`
    /// makes parents); any command's answer once anything changed. Writing inside a directory
    /// does not change what its stat answered (type, mode, owner).
    fn touches(&self, probes: &[Probe], answers: &[Answer]) -> bool {
        if self.everything {
            return true;
        }
        let below =
            |w: &str, p: &str| p == "/" || w.strip_prefix(p).is_some_and(|r| r.starts_with('/'));
        probes
            .iter()
            .zip(answers)
            .any(|(probe, answer)| match probe {
                Probe::Read(p) => self.paths.iter().any(|w| w == p),
                Probe::Stat(p) => {
                    let was_absent = matches!(answer, Answer::Stat(None));
                    self.paths
                        .iter()
                        .any(|w| w == p || (was_absent && below(w, p)))
                }
                Probe::Run(_) => !self.paths.is_empty(),
            })
    }
}

/// What applying one task needs besides the task itself.
struct ApplyCtx<'a> {
    t: &'a dyn Transport,
    batch: &'a Batch,
    /// How long a change that may cut SLICE off is left in place before the host undoes it,
    /// unless SLICE gets back in.
    revert_after: Duration,
}

fn apply_one(res: &dyn Resource, ctx: &ApplyCtx, dirty: &mut Dirty, report: &mut TaskReport) {
    let (t, batch) = (ctx.t, ctx.batch);
    let probes = res.probes();
    let answers = batch.answers(&probes);
    let answers = if dirty.touches(&probes, &answers) {
        t.observe(&probes)
    } else {
        answers
    };
    let obs = Observed {
        answers: &answers,
        probes: &probes,
    };
    let changes = match res.diff(&obs) {
        Ok(c) => c,
        Err(msg) => {
            report.status = Status::Fail;
            report.message = Some(msg);
            return;
        }
    };
    if changes.is_empty() {
        report.status = Status::Pass;
        return;
    }
    report.changes = changes;
    // Even a failed apply may have changed something.
    dirty.record(res);
    // Over SSH, a change that can lock SLICE out is undone by the host itself unless SLICE
    // proves, with a new connection, that it can still get in.
    let guard = match (t.login(), res.revert(&obs)) {
        (Some(_), Some(script)) => match arm(t, &script, ctx.revert_after) {
            Ok(pid) => Some(pid),
            Err(msg) => {
                report.status = Status::Fail;
                report.message = Some(format!(
                    "not applied: cannot arm the automatic revert: {msg}"
                ));
                return;
            }
        },
        _ => None,
    };
    if let Err(msg) = res.apply(&obs, t) {
        if let Some(pid) = &guard {
            disarm(t, pid);
        }
        report.status = Status::Fail;
        report.message = Some(msg);
        return;
    }
    if let Some(pid) = guard {
        // Well inside the revert delay: a late success must not disarm a revert already done.
        if let Err(e) = t.confirm_access(ctx.revert_after / 2) {
            report.status = Status::Fail;
            report.message = Some(locked_out(t, ctx.revert_after, &e.to_string()));
            return;
        }
        disarm(t, &pid);
    }
    if res.verifiable() {
        let (left, note) = verify(res, t);
        report.message = note;
        match left {
            Ok(left) if left.is_empty() => {}
            Ok(left) => {
                let what: Vec<&str> = left.iter().map(|c| c.what.as_str()).collect();
                report.status = Status::Fail;
                report.message = Some(format!(
                    "applied, but the host still differs: {}",
                    what.join(", ")
                ));
                return;
            }
            Err(msg) => {
                report.status = Status::Fail;
                report.message = Some(format!("applied, but cannot verify: {msg}"));
                return;
            }
        }
    }
    report.status = Status::Changed;
}
