//! What each subcommand does: load, render, build the graph, run the engine, report.

use std::io::{IsTerminal, Write};
use std::path::Path;

use serde_json::json;

use crate::cli::{Cli, Command, Format, RunArgs};
use crate::engine::{self, Mode, TaskReport};
use crate::error::{Error, Result, Source};
use crate::facts::Facts;
use crate::graph::{self, Graph};
use crate::playbook::render::{Rendered, Renderer, Selection, When};
use crate::playbook::{Level, Playbook};
use crate::report;
use crate::transport::{Local, Transport};
use crate::yaml::{self, Node};

/// The built-in playbook used when none is named.
pub const DEFAULT_PLAYBOOK: &str = "container-host.yml";

/// Runs the command line and returns the process exit code.
pub fn main_with(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Check(a) => check_or_apply(&a, Mode::Check, false),
        Command::Apply {
            run,
            detailed_exitcodes,
        } => check_or_apply(&run, Mode::Apply, detailed_exitcodes),
        Command::Plan(a) => plan(&a),
        Command::Graph(a) => graph_cmd(&a),
        Command::Validate(a) => validate(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprint!("{e}");
            1
        }
    }
}

/// A playbook made concrete for one target.
struct Prepared {
    pb: Playbook,
    rendered: Vec<Rendered>,
    graph: Graph,
    selection: Selection,
}

fn load(a: &RunArgs) -> Result<Playbook> {
    match &a.playbook {
        None => Playbook::builtin(DEFAULT_PLAYBOOK, &a.module_path),
        Some(p) if p.exists() => Playbook::load(p, &a.module_path),
        Some(p) => {
            let name = p.to_string_lossy();
            let builtin = if name.ends_with(".yml") {
                name.to_string()
            } else {
                format!("{name}.yml")
            };
            Playbook::builtin(&builtin, &a.module_path).map_err(|_| {
                Error::new(format!(
                    "cannot read {name}: no such file, and no built-in playbook of that name"
                ))
            })
        }
    }
}

fn transport(a: &RunArgs) -> Result<Local> {
    match &a.root {
        None => Ok(Local::new()),
        Some(r) => Local::with_root(r)
            .map_err(|e| Error::io("use", &format!("{} as the root directory", r.display()), e)),
    }
}

/// `-e key=value`: the value is read as YAML, so `-e icc=false` gives a boolean.
fn extra_vars(items: &[String]) -> Result<Vec<(String, Node)>> {
    items
        .iter()
        .map(|item| {
            let Some((k, v)) = item.split_once('=') else {
                return Err(Error::new(format!("-e takes KEY=VALUE, found `{item}`")));
            };
            let k = k.trim();
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::new(format!(
                    "-e {item}: `{k}` is not a variable name (letters, digits, _)"
                )));
            }
            let node = yaml::parse(&Source::new(format!("-e {k}"), v.to_string()))?;
            Ok((k.to_string(), node))
        })
        .collect()
}

fn selection(a: &RunArgs) -> Selection {
    Selection {
        tags: a.tags.iter().filter(|t| !t.is_empty()).cloned().collect(),
        level: a.level.as_deref().and_then(Level::parse),
    }
}

/// Loads, renders and orders the playbook. With `t`, facts come from the target; without,
/// nothing is read from any host and `when:` is only compiled.
fn prepare(a: &RunArgs, t: Option<&dyn Transport>) -> Result<Prepared> {
    let pb = load(a)?;
    let extra = extra_vars(&a.extra)?;
    let (facts, live, when) = match t {
        Some(t) => (Facts::gather(t), t.live(), When::Evaluate),
        None => (Facts::placeholder(), a.root.is_none(), When::CompileOnly),
    };
    let facts = serde_json::to_value(facts).unwrap_or_default();
    let renderer = Renderer::new(&pb, facts, &extra, live, when)?;
    let rendered = pb
        .tasks
        .iter()
        .chain(pb.handlers.iter())
        .map(|t| renderer.task(t))
        .collect::<Result<Vec<_>>>()?;
    drop(renderer);
    let graph = Graph::build(&pb, &rendered)?;
    Ok(Prepared {
        pb,
        rendered,
        graph,
        selection: selection(a),
    })
}

fn emit(a: &RunArgs, text: &str) -> Result<()> {
    match &a.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Error::io("write", &path.display().to_string(), e)),
        None => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`slice check | head`) is not an error worth a message.
            let _ = out.write_all(text.as_bytes());
            Ok(())
        }
    }
}

fn check_or_apply(a: &RunArgs, mode: Mode, detailed: bool) -> Result<i32> {
    if a.format == Format::Dot {
        return Err(Error::new(
            "--format dot is for `slice graph`; use human or json",
        ));
    }
    let t = transport(a)?;
    let p = prepare(a, Some(&t))?;
    let bar = progress_bar(mode, &p);
    let mut tick = |r: &TaskReport| {
        if let Some(b) = &bar {
            b.set_message(r.id.clone());
            b.inc(1);
        }
    };
    let host = engine::run(
        &p.pb,
        &p.rendered,
        &p.graph,
        &t,
        mode,
        &p.selection,
        &mut tick,
    );
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let hosts = [host];
    let text = match a.format {
        Format::Json => report::json::render(&p.pb.source.name, &hosts, mode, detailed),
        _ => {
            let style = report::human::Style {
                color: a.output.is_none()
                    && std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none(),
                verbose: a.verbose > 0,
            };
            report::human::render(&hosts, &style, detailed)
        }
    };
    emit(a, &text)?;
    Ok(report::Summary::of(&hosts).exit_code(mode, detailed))
}

/// A progress bar on a terminal while applying; nothing otherwise.
fn progress_bar(mode: Mode, p: &Prepared) -> Option<indicatif::ProgressBar> {
    if mode != Mode::Apply || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(p.rendered.len() as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}") {
        bar.set_style(style);
    }
    Some(bar)
}

fn plan(a: &RunArgs) -> Result<i32> {
    let t = transport(a)?;
    let p = prepare(a, Some(&t))?;
    let entries: Vec<_> = p
        .graph
        .order
        .iter()
        .filter(|&&i| p.selection.selects(graph::def(&p.pb, i).0) || graph::def(&p.pb, i).1)
        .map(|&i| {
            let (def, handler) = graph::def(&p.pb, i);
            let needs: Vec<String> = p
                .graph
                .needs(i)
                .into_iter()
                .map(|n| graph::def(&p.pb, n).0.name.clone())
                .collect();
            (i, def, handler, needs)
        })
        .collect();
    let text = match a.format {
        Format::Json => {
            let tasks: Vec<_> = entries
                .iter()
                .enumerate()
                .map(|(pos, (i, def, handler, needs))| {
                    json!({
                        "position": pos + 1,
                        "name": def.name,
                        "id": graph::label(def, &p.rendered[*i]),
                        "source": def.loc.file_line(),
                        "handler": handler,
                        "after": needs,
                        "skip": p.rendered[*i].skip,
                    })
                })
                .collect();
            let mut s = serde_json::to_string_pretty(
                &json!({ "playbook": p.pb.source.name, "target": t.name(), "tasks": tasks }),
            )
            .unwrap_or_default();
            s.push('\n');
            s
        }
        _ => {
            let mut s = format!("plan for {} on {}\n", p.pb.source.name, t.name());
            for (pos, (i, def, handler, needs)) in entries.iter().enumerate() {
                let what = if *handler {
                    " (handler, runs when notified)"
                } else {
                    ""
                };
                s.push_str(&format!(
                    "{:>4}. {}  {}{what}  ({})\n",
                    pos + 1,
                    graph::label(def, &p.rendered[*i]),
                    def.name,
                    def.loc.file_line()
                ));
                if !needs.is_empty() {
                    s.push_str(&format!("        after: {}\n", needs.join("; ")));
                }
                if let Some(skip) = &p.rendered[*i].skip {
                    s.push_str(&format!("        skipped: {skip}\n"));
                }
            }
            s
        }
    };
    emit(a, &text)?;
    Ok(0)
}

fn graph_cmd(a: &RunArgs) -> Result<i32> {
    if a.format == Format::Json {
        return Err(Error::new(
            "`slice graph` prints Graphviz: use --format dot",
        ));
    }
    let t = transport(a)?;
    let p = prepare(a, Some(&t))?;
    emit(a, &p.graph.dot(&p.pb, &p.rendered))?;
    Ok(0)
}

fn validate(a: &RunArgs) -> Result<i32> {
    if let Some(root) = &a.root {
        // Validation never reads the host, but a root that is not there is still a mistake.
        if !Path::new(root).is_dir() {
            return Err(Error::new(format!("{} is not a directory", root.display())));
        }
    }
    let p = prepare(a, None)?;
    let modules: Vec<&str> =
        p.pb.scopes
            .iter()
            .filter_map(|s| s.module.as_deref())
            .collect();
    let text = format!(
        "{}: valid ({}, {}{})\n",
        p.pb.source.name,
        report::human::plural(p.pb.tasks.len(), "task"),
        report::human::plural(p.pb.handlers.len(), "handler"),
        if modules.is_empty() {
            String::new()
        } else {
            format!(", modules: {}", modules.join(", "))
        }
    );
    emit(a, &text)?;
    Ok(0)
}
