//! What each subcommand does: load, render, build the graph, run the engine, report.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::cli::{Cli, Command, FactsArgs, Format, RunArgs, TargetArgs};
use crate::engine::Mode;
use crate::error::{Error, Result, Source};
use crate::facts::Facts;
use crate::fleet::{self, Endpoint, HostError, Job, Outcome};
use crate::graph::{self, Graph};
use crate::inventory::Inventory;
use crate::playbook::render::{Rendered, Selection, When};
use crate::playbook::{Level, Playbook};
use crate::report;
use crate::transport::{ssh, Local, Transport};
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
        Command::Facts(a) => facts(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprint!("{e}");
            1
        }
    }
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

/// The hosts to work on: the inventory's (after `--limit`), or this machine (or `--root`).
fn hosts(a: &TargetArgs) -> Result<Vec<fleet::Host>> {
    let Some(path) = &a.inventory else {
        let local = match &a.root {
            None => Local::new(),
            Some(r) => Local::with_root(r).map_err(|e| {
                Error::io("use", &format!("{} as the root directory", r.display()), e)
            })?,
        };
        return Ok(vec![fleet::Host {
            name: local.name(),
            endpoint: Endpoint::Local(local),
            vars: Vec::new(),
        }]);
    };
    let inv = Inventory::load(path)?;
    let chosen = match &a.limit {
        Some(pattern) => inv.limit(pattern)?,
        None => inv.hosts.iter().collect(),
    };
    if chosen.is_empty() {
        return Err(Error::new(format!("{} has no hosts", path.display())));
    }
    Ok(chosen
        .into_iter()
        .map(|h| fleet::Host {
            name: h.name.clone(),
            endpoint: if h.local {
                Endpoint::Local(Local::new())
            } else {
                Endpoint::Ssh(ssh::Target {
                    name: h.name.clone(),
                    address: Some(h.address.clone()),
                    port: h.port,
                    user: h.user.clone(),
                    key_file: h.key_file.clone(),
                    become_user: h.escalate.then(|| h.become_user_or_root().to_string()),
                })
            },
            vars: h.template_vars(),
        })
        .collect())
}

fn ssh_options(a: &TargetArgs) -> ssh::Options {
    ssh::Options {
        accept_new_host_keys: a.accept_new_host_keys,
        connect_timeout: Duration::from_secs(a.connect_timeout),
        command_timeout: Duration::from_secs(a.command_timeout),
        ssh_config: a.ssh_config.clone(),
        become_password: std::env::var("SLICE_BECOME_PASSWORD").ok(),
        key_passphrase: std::env::var("SLICE_SSH_PASSPHRASE").ok(),
    }
}

/// Who holds a host's run lock, for the message a second run shows.
fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "?".into());
    format!(
        "slice (pid {}) of {user}@{}",
        std::process::id(),
        host.trim()
    )
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

fn emit(output: &Option<PathBuf>, text: &str) -> Result<()> {
    match output {
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
    let pb = load(a)?;
    let extra = extra_vars(&a.extra)?;
    let sel = selection(a);
    let hosts = hosts(&a.target)?;
    let ssh = ssh_options(&a.target);
    let job = Job {
        playbook: &pb,
        extra: &extra,
        selection: &sel,
        mode,
        ssh: &ssh,
        lock_wait: Duration::from_secs(a.target.lock_wait),
        revert_after: Duration::from_secs(a.target.revert_after),
        holder: holder(),
    };
    let mut outcomes = fleet::run(&job, hosts, usize::from(a.target.forks), true);
    // Without an inventory a mistake in the playbook means the run could not start: exit 1.
    if a.target.inventory.is_none() {
        if let Some(Outcome {
            report: Err(HostError { input: true, .. }),
            ..
        }) = outcomes.first()
        {
            if let Some(Outcome { report: Err(e), .. }) = outcomes.pop() {
                return Err(e.error);
            }
        }
    }
    let text = match a.format {
        Format::Json => report::json::render(&pb.source.name, &outcomes, mode, detailed),
        _ => {
            let style = report::human::Style {
                color: a.output.is_none()
                    && std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none(),
                verbose: a.verbose > 0,
            };
            report::human::render(&outcomes, mode, &style, detailed)
        }
    };
    emit(&a.output, &text)?;
    Ok(report::Summary::of(&outcomes).exit_code(mode, detailed))
}

/// Renders and orders the playbook for each host, reading each host's facts.
fn for_each_prepared(
    a: &RunArgs,
    mut f: impl FnMut(&Playbook, &str, &[Rendered], &Graph) -> Result<()>,
) -> Result<()> {
    let pb = load(a)?;
    let extra = extra_vars(&a.extra)?;
    let ssh = ssh_options(&a.target);
    for host in hosts(&a.target)? {
        let name = host.name.clone();
        let (rendered, graph) =
            fleet::with_transport(&host, &ssh, |t| fleet::prepare(&pb, &extra, &host, t))
                .map_err(Error::new)??;
        f(&pb, &name, &rendered, &graph)?;
    }
    Ok(())
}

fn plan(a: &RunArgs) -> Result<i32> {
    let sel = selection(a);
    let mut text = String::new();
    let mut docs = Vec::new();
    for_each_prepared(a, |pb, host, rendered, graph| {
        let entries: Vec<_> = graph
            .order
            .iter()
            .filter(|&&i| {
                let (def, handler) = graph::def(pb, i);
                handler || sel.selects(def)
            })
            .map(|&i| {
                let (def, handler) = graph::def(pb, i);
                let needs: Vec<String> = graph
                    .needs(i)
                    .into_iter()
                    .map(|n| graph::def(pb, n).0.name.clone())
                    .collect();
                (i, def, handler, needs)
            })
            .collect();
        if a.format == Format::Json {
            let tasks: Vec<_> = entries
                .iter()
                .enumerate()
                .map(|(pos, (i, def, handler, needs))| {
                    json!({
                        "position": pos + 1,
                        "name": def.name,
                        "id": graph::label(def, &rendered[*i]),
                        "source": def.loc.file_line(),
                        "handler": handler,
                        "after": needs,
                        "skip": rendered[*i].skip,
                    })
                })
                .collect();
            docs.push(json!({ "playbook": pb.source.name, "target": host, "tasks": tasks }));
            return Ok(());
        }
        text.push_str(&format!("plan for {} on {host}\n", pb.source.name));
        for (pos, (i, def, handler, needs)) in entries.iter().enumerate() {
            let what = if *handler {
                " (handler, runs when notified)"
            } else {
                ""
            };
            text.push_str(&format!(
                "{:>4}. {}  {}{what}  ({})\n",
                pos + 1,
                graph::label(def, &rendered[*i]),
                def.name,
                def.loc.file_line()
            ));
            if !needs.is_empty() {
                text.push_str(&format!("        after: {}\n", needs.join("; ")));
            }
            if let Some(skip) = &rendered[*i].skip {
                text.push_str(&format!("        skipped: {skip}\n"));
            }
        }
        Ok(())
    })?;
    if a.format == Format::Json {
        // One document for one target (the common case), a list for several.
        let doc = if docs.len() == 1 {
            docs.remove(0)
        } else {
            serde_json::Value::Array(docs)
        };
        text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
    }
    emit(&a.output, &text)?;
    Ok(0)
}

fn graph_cmd(a: &RunArgs) -> Result<i32> {
    if a.format == Format::Json {
        return Err(Error::new(
            "`slice graph` prints Graphviz: use --format dot",
        ));
    }
    let mut text = String::new();
    for_each_prepared(a, |pb, _, rendered, graph| {
        text.push_str(&graph.dot(pb, rendered));
        Ok(())
    })?;
    emit(&a.output, &text)?;
    Ok(0)
}

fn validate(a: &RunArgs) -> Result<i32> {
    if let Some(root) = &a.target.root {
        // Validation never reads the host, but a root that is not there is still a mistake.
        if !Path::new(root).is_dir() {
            return Err(Error::new(format!("{} is not a directory", root.display())));
        }
    }
    let pb = load(a)?;
    let extra = extra_vars(&a.extra)?;
    let facts = Facts::placeholder();
    // Every inventory host's variables are rendered, with placeholder facts and no connection.
    let hosts = hosts(&a.target)?;
    for host in &hosts {
        let live = !matches!(&host.endpoint, Endpoint::Local(l) if !l.live());
        fleet::render(&pb, &extra, host, &facts, live, When::CompileOnly)?;
    }
    let modules: Vec<&str> = pb
        .scopes
        .iter()
        .filter_map(|s| s.module.as_deref())
        .collect();
    let for_hosts = if a.target.inventory.is_some() {
        format!(" for {}", report::human::plural(hosts.len(), "host"))
    } else {
        String::new()
    };
    let text = format!(
        "{}: valid ({}, {}{}){for_hosts}\n",
        pb.source.name,
        report::human::plural(pb.tasks.len(), "task"),
        report::human::plural(pb.handlers.len(), "handler"),
        if modules.is_empty() {
            String::new()
        } else {
            format!(", modules: {}", modules.join(", "))
        }
    );
    emit(&a.output, &text)?;
    Ok(0)
}

/// `slice facts`: what each target is, as SLICE sees it.
fn facts(a: &FactsArgs) -> Result<i32> {
    if a.format == Format::Dot {
        return Err(Error::new("`slice facts` prints human or json"));
    }
    let ssh = ssh_options(&a.target);
    let mut text = String::new();
    let mut docs = serde_json::Map::new();
    let mut failed = false;
    for host in hosts(&a.target)? {
        match fleet::with_transport(&host, &ssh, |t| Facts::gather(t)) {
            Ok(f) => {
                text.push_str(&format!("{}\n{}", host.name, f.describe()));
                docs.insert(
                    host.name.clone(),
                    serde_json::to_value(&f).unwrap_or_default(),
                );
            }
            Err(e) => {
                failed = true;
                text.push_str(&format!("{}\n  could not connect: {e}\n", host.name));
                docs.insert(host.name.clone(), json!({ "error": e }));
            }
        }
    }
    if a.format == Format::Json {
        text = serde_json::to_string_pretty(&docs).unwrap_or_default();
        text.push('\n');
    }
    emit(&a.output, &text)?;
    Ok(if failed { 4 } else { 0 })
}
