//! One playbook on many hosts: a bounded pool of workers, progress per host, a report per host.
//! A host that cannot be reached, locked or rendered fails alone; the others go on.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::engine::{self, HostReport, Mode, TaskReport};
use crate::error::{Error, Result};
use crate::facts::Facts;
use crate::graph::Graph;
use crate::playbook::render::{Rendered, Renderer, Selection, When};
use crate::playbook::Playbook;
use crate::transport::{ssh, Local, Ssh, Transport};
use crate::yaml::Node;

/// How to reach one host.
pub enum Endpoint {
    Local(Local),
    Ssh(ssh::Target),
}

/// One host of the run, with its inventory variables.
pub struct Host {
    pub name: String,
    pub endpoint: Endpoint,
    pub vars: Vec<(String, Node)>,
}

/// What every host of the run shares.
pub struct Job<'a> {
    pub playbook: &'a Playbook,
    pub extra: &'a [(String, Node)],
    pub selection: &'a Selection,
    pub mode: Mode,
    pub ssh: &'a ssh::Options,
    pub lock_wait: Duration,
    /// How long a change that may cut SLICE off stays before the host undoes it by itself.
    pub revert_after: Duration,
    /// Shown to a run that finds the lock taken: who holds it.
    pub holder: String,
}

/// Why a host produced no task reports.
pub struct HostError {
    pub error: Error,
    /// A mistake in the playbook or inventory (as opposed to the host failing).
    pub input: bool,
}

/// A host's outcome: its tasks, or why it could not run them.
pub struct Outcome {
    pub name: String,
    pub report: std::result::Result<HostReport, HostError>,
}

/// Runs the job on every host, at most `forks` at a time. Results keep the hosts' order.
pub fn run(job: &Job, hosts: Vec<Host>, forks: usize, progress: bool) -> Vec<Outcome> {
    let bars = Bars::new(progress && hosts.len() > 1, hosts.len());
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Outcome>>> = hosts.iter().map(|_| Mutex::new(None)).collect();
    let workers = forks.clamp(1, hosts.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(host) = hosts.get(i) else { break };
                let bar = bars.start(&host.name);
                let t0 = Instant::now();
                let report = run_host(job, host, &mut |r: &TaskReport| bars.task(&bar, r));
                bars.finish(bar, &host.name, &report, t0.elapsed());
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(Outcome {
                        name: host.name.clone(),
                        report,
                    });
                }
            });
        }
    });
    bars.done();
    slots
        .into_iter()
        .zip(&hosts)
        .map(|(slot, h)| {
            slot.into_inner().ok().flatten().unwrap_or_else(|| Outcome {
                name: h.name.clone(),
                report: Err(HostError {
                    error: Error::new("the worker for this host stopped"),
                    input: false,
                }),
            })
        })
        .collect()
}

fn run_host(
    job: &Job,
    host: &Host,
    tick: &mut dyn FnMut(&TaskReport),
) -> std::result::Result<HostReport, HostError> {
    let fail = |msg: String| HostError {
        error: Error::new(msg),
        input: false,
    };
    with_transport(host, job.ssh, |t| {
        let _lock = t
            .lock(&job.holder, job.lock_wait)
            .map_err(|e| fail(e.to_string()))?;
        let (rendered, graph) = prepare(job.playbook, job.extra, host, t)
            .map_err(|error| HostError { error, input: true })?;
        Ok(engine::run(
            job.playbook,
            &rendered,
            &graph,
            t,
            &engine::How {
                mode: job.mode,
                selection: job.selection,
                revert_after: job.revert_after,
            },
            tick,
        ))
    })
    .map_err(fail)?
}

/// Reaches the host (connecting over SSH when needed) and hands its transport to `f`.
pub fn with_transport<R>(
    host: &Host,
    opts: &ssh::Options,
    f: impl FnOnce(&dyn Transport) -> R,
) -> std::result::Result<R, String> {
    match &host.endpoint {
        Endpoint::Local(l) => Ok(f(l)),
        Endpoint::Ssh(target) => Ok(f(&Ssh::connect(target, opts)?)),
    }
}

/// Renders the playbook with this host's facts and variables and orders it.
pub fn prepare(
    pb: &Playbook,
    extra: &[(String, Node)],
    host: &Host,
    t: &dyn Transport,
) -> Result<(Vec<Rendered>, Graph)> {
    let facts = Facts::gather(t);
    render(pb, extra, host, &facts, t.live(), When::Evaluate)
}

/// Renders for a host with the given facts (placeholders when validating without a host).
pub fn render(
    pb: &Playbook,
    extra: &[(String, Node)],
    host: &Host,
    facts: &Facts,
    live: bool,
    when: When,
) -> Result<(Vec<Rendered>, Graph)> {
    let renderer = Renderer::new(pb, facts, &host.vars, extra, live, when)?;
    let rendered = pb
        .tasks
        .iter()
        .chain(pb.handlers.iter())
        .map(|t| renderer.task(t))
        .collect::<Result<Vec<_>>>()?;
    let graph = Graph::build(pb, &rendered)?;
    Ok((rendered, graph))
}

/// Progress on a terminal: a bar per running host and one for the whole run. Elsewhere, a plain
/// line per finished host on standard error.
struct Bars {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    plain: bool,
}

impl Bars {
    fn new(show: bool, hosts: usize) -> Bars {
        if !show {
            return Bars {
                multi: None,
                overall: None,
                plain: false,
            };
        }
        if !std::io::stderr().is_terminal() {
            return Bars {
                multi: None,
                overall: None,
                plain: true,
            };
        }
        let multi = MultiProgress::new();
        let overall = multi.add(ProgressBar::new(hosts as u64));
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} hosts {elapsed}") {
            overall.set_style(style);
        }
        Bars {
            multi: Some(multi),
            overall: Some(overall),
            plain: false,
        }
    }

    fn start(&self, name: &str) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let bar = multi.add(ProgressBar::new_spinner());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix:20} {wide_msg}") {
            bar.set_style(style);
        }
        bar.set_prefix(name.to_string());
        bar.set_message("connecting");
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    }

    fn task(&self, bar: &Option<ProgressBar>, r: &TaskReport) {
        if let Some(b) = bar {
            b.set_message(r.id.clone());
        }
    }

    fn finish(
        &self,
        bar: Option<ProgressBar>,
        name: &str,
        report: &std::result::Result<HostReport, HostError>,
        took: Duration,
    ) {
        let line = match report {
            Ok(h) => format!(
                "{name}: {} pass, {} drift, {} changed, {} fail in {:.2} s",
                h.count(engine::Status::Pass),
                h.count(engine::Status::Drift),
                h.count(engine::Status::Changed),
                h.count(engine::Status::Fail),
                took.as_secs_f64()
            ),
            Err(e) => format!("{name}: FAILED: {}", e.error.message),
        };
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if let Some(o) = &self.overall {
            o.inc(1);
        }
        if self.plain {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
    }
}
