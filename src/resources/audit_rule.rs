//! `audit_rule`: audit rules in a file of /etc/audit/rules.d, compared rule by rule as auditctl
//! understands them (never by substring), and loaded with `augenrules --load` when auditd runs.
//!
//! Each rule is parsed into its parts (`-w` path, `-p` permissions, `-k` keys, `-a` list and
//! action, `-S` syscalls, `-F` fields, `-C` comparisons); parts whose order auditctl ignores are
//! compared as sets. So `-w /x -k docker -p wa` and `-w /x -p wa -k docker` are the same rule,
//! while a rule that differs only in its key or permissions is not: it is rewritten in place.

use std::path::Path;

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::{at, content_change, Lines};
use crate::resources::{Accounts, Meta};
use crate::transport::{Attrs, FileType, Probe, Stat, Transport};
use crate::yaml::{Node, Value};

const DEFAULT_FILE: &str = "/etc/audit/rules.d/slice-docker.rules";
const RULES_D: &str = "/etc/audit/rules.d";
/// Written by augenrules from rules.d: edits there are lost at its next run.
const GENERATED: &str = "/etc/audit/audit.rules";
/// The kernel's audit status and rules, asked only where auditd runs (a read-only command).
const LIST: &str = "if [ -e /run/auditd.pid ]; then auditctl -s && auditctl -l; else echo 'auditd not running'; fi";
const LOAD: &str = "augenrules --load";
/// New rules files are readable by root's group only, as audit configuration should be.
const NEW_MODE: u32 = 0o640;

pub struct AuditRule {
    file: String,
    /// The rules as written in the playbook, and as parsed.
    rules: Vec<(String, Rule)>,
    present: bool,
    exclusive: bool,
    live: bool,
}

/// One audit rule in a normal form: rules auditctl loads alike compare equal.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    /// `-w PATH -p PERMS -k KEY`: permissions in `rwxa` order (all four when not given), keys
    /// sorted, a directory's trailing slash dropped.
    Watch {
        path: String,
        perms: String,
        keys: Vec<String>,
    },
    /// `-a LIST,ACTION -S … -F … -C …`: syscalls, fields and keys sorted.
    Syscall {
        list: String,
        action: String,
        syscalls: Vec<String>,
        fields: Vec<String>,
        keys: Vec<String>,
    },
    /// Anything else (`-b 8192`, `-e 2`, `-D`, `-W PATH`): compared word by word.
    Control(Vec<String>),
}

impl Rule {
    /// The rule without its keys and permissions: a rule of the file with the same identity as
    /// a wanted one is that rule with other keys or permissions, and is rewritten.
    fn identity(&self) -> Rule {
        match self {
            Rule::Watch { path, .. } => Rule::Watch {
                path: path.clone(),
                perms: String::new(),
                keys: Vec::new(),
            },
            Rule::Syscall {
                list,
                action,
                syscalls,
                fields,
                ..
            } => Rule::Syscall {
                list: list.clone(),
                action: action.clone(),
                syscalls: syscalls.clone(),
                fields: fields
                    .iter()
                    .filter(|f| !f.starts_with("perm="))
                    .cloned()
                    .collect(),
                keys: Vec::new(),
            },
            Rule::Control(t) => Rule::Control(t.clone()),
        }
    }

    /// `-e 2`: the configuration is locked until reboot; it must stay the last rule.
    fn locks(&self) -> bool {
        matches!(self, Rule::Control(t) if t.len() == 2 && t[0] == "-e" && t[1] == "2")
    }
}

/// Options that take a value, and those that do not; any other is refused.
const WITH_VALUE: &[&str] = &[
    "-w",
    "-W",
    "-p",
    "-k",
    "-a",
    "-A",
    "-d",
    "-S",
    "-F",
    "-C",
    "-b",
    "-f",
    "-e",
    "-r",
    "-R",
    "--backlog_wait_time",
];
const WITHOUT_VALUE: &[&str] = &["-D", "-c", "-i", "--loginuid-immutable", "--reset-lost"];
const LISTS: &[&str] = &["task", "exit", "user", "exclude", "filesystem", "io_uring"];
const ACTIONS: &[&str] = &["always", "never"];
/// Fields holding user or group ids, where `unset`, `4294967295` and `-1` are the same value.
const ID_FIELDS: &[&str] = &[
    "auid", "uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid", "obj_uid", "obj_gid",
];
/// Comparison operators of `-F`, longest first so `!=` is not read as `!` and `=`.
const OPERATORS: &[&str] = &["!=", ">=", "<=", "&=", "=", ">", "<", "&"];

/// Parses one rule line (no comment, no line break).
fn parse(text: &str) -> Result<Rule, String> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.is_empty() {
        return Err("an empty rule".into());
    }
    let mut watch: Option<String> = None;
    let mut action: Option<(String, String)> = None;
    let mut perms: Option<String> = None;
    let mut keys: Vec<String> = Vec::new();
    let mut syscalls: Vec<String> = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut other: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let opt = tokens[i];
        i += 1;
        let arg = if WITH_VALUE.contains(&opt) {
            let a = tokens
                .get(i)
                .ok_or_else(|| format!("`{opt}` needs a value"))?;
            i += 1;
            *a
        } else if WITHOUT_VALUE.contains(&opt) {
            ""
        } else {
            return Err(format!("`{opt}` is not an auditctl option"));
        };
        match opt {
            "-w" => {
                if watch.is_some() {
                    return Err("a rule takes one `-w`".into());
                }
                if !arg.starts_with('/') {
                    return Err(format!("`-w` needs an absolute path, found `{arg}`"));
                }
                watch = Some(trim_slash(arg));
            }
            "-p" => perms = Some(perm_set(arg)?),
            "-k" => keys.push(arg.to_string()),
            "-a" | "-A" => {
                if action.is_some() {
                    return Err("a rule takes one `-a`".into());
                }
                action = Some(list_action(arg)?);
            }
            "-S" => syscalls.extend(arg.split(',').filter(|s| !s.is_empty()).map(String::from)),
            "-F" => match field(arg)? {
                (name, "=", value) if name == "key" => keys.push(value),
                (name, "=", value) if name == "perm" => perms = Some(perm_set(&value)?),
                (name, op, value) => fields.push(format!("{name}{op}{value}")),
            },
            "-C" => fields.push(format!("-C {arg}")),
            _ => {
                other.push(opt);
                if !arg.is_empty() {
                    other.push(arg);
                }
            }
        }
    }
    keys.sort();
    if let Some(path) = watch {
        if action.is_some() || !syscalls.is_empty() || !fields.is_empty() || !other.is_empty() {
            return Err("`-w` goes only with `-p` and `-k`".into());
        }
        return Ok(Rule::Watch {
            path,
            perms: perms.unwrap_or_else(|| "rwxa".into()),
            keys,
        });
    }
    let Some((list, action)) = action else {
        if perms.is_some() || !syscalls.is_empty() || !fields.is_empty() {
            return Err("`-p`, `-S`, `-F` and `-C` need `-w` or `-a`".into());
        }
        return Ok(Rule::Control(
            tokens.iter().map(|t| t.to_string()).collect(),
        ));
    };
    if let Some(o) = other.first() {
        return Err(format!("`{o}` does not go with `-a`"));
    }
    // A watch written as a syscall rule is loaded as that watch, and listed as one.
    let all = syscalls.is_empty() || syscalls == ["all"];
    if let (true, "always", "exit", Some(p), [f]) = (
        all,
        action.as_str(),
        list.as_str(),
        &perms,
        fields.as_slice(),
    ) {
        if let Some(path) = f.strip_prefix("path=").or_else(|| f.strip_prefix("dir=")) {
            return Ok(Rule::Watch {
                path: path.to_string(),
                perms: p.clone(),
                keys,
            });
        }
    }
    if let Some(p) = perms {
        fields.push(format!("perm={p}"));
    }
    syscalls.sort();
    syscalls.dedup();
    fields.sort();
    Ok(Rule::Syscall {
        list,
        action,
        syscalls,
        fields,
        keys,
    })
}

fn trim_slash(path: &str) -> String {
    let t = path.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.into()
    }
}

/// Permissions as a set, written in auditctl's order.
fn perm_set(arg: &str) -> Result<String, String> {
    if arg.is_empty() || !arg.chars().all(|c| "rwxa".contains(c)) {
        return Err(format!("permissions are letters of rwxa, found `{arg}`"));
    }
    Ok("rwxa".chars().filter(|c| arg.contains(*c)).collect())
}

/// `always,exit` or `exit,always`: (list, action).
fn list_action(arg: &str) -> Result<(String, String), String> {
    let bad = || format!("`-a` takes a list and an action such as always,exit, found `{arg}`");
    let (a, b) = arg.split_once(',').ok_or_else(bad)?;
    if LISTS.contains(&a) && ACTIONS.contains(&b) {
        Ok((a.into(), b.into()))
    } else if LISTS.contains(&b) && ACTIONS.contains(&a) {
        Ok((b.into(), a.into()))
    } else {
        Err(bad())
    }
}

/// A `-F` field as (name, operator, value), with values auditctl lists differently normalized.
fn field(arg: &str) -> Result<(String, &'static str, String), String> {
    let bad = || format!("`-F` takes name, operator and value such as auid>=1000, found `{arg}`");
    let start = arg.find(['=', '!', '<', '>', '&']).ok_or_else(bad)?;
    let op = OPERATORS
        .iter()
        .find(|o| arg[start..].starts_with(**o))
        .ok_or_else(bad)?;
    let (name, value) = (&arg[..start], &arg[start + op.len()..]);
    if name.is_empty() || value.is_empty() {
        return Err(bad());
    }
    let value = match name {
        "arch" => match value {
            "b64" | "x86_64" | "aarch64" | "ppc64" | "ppc64le" | "s390x" | "ia64" => "b64".into(),
            "b32" | "i386" | "i486" | "i586" | "i686" | "arm" | "armeb" | "s390" | "ppc" => {
                "b32".into()
            }
            v => v.into(),
        },
        n if ID_FIELDS.contains(&n) && matches!(value, "unset" | "4294967295") => "-1".into(),
        "exit" => match value {
            "-EPERM" => "-1".into(),
            "-ENOENT" => "-2".into(),
            "-EACCES" => "-13".into(),
            v => v.into(),
        },
        "path" | "dir" => trim_slash(value),
        // auditctl lists syscall arguments in hexadecimal.
        "a0" | "a1" | "a2" | "a3" => {
            number(value).map_or_else(|| value.into(), |n| format!("0x{n:X}"))
        }
        _ => value.into(),
    };
    Ok((name.to_string(), op, value))
}

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// What a line of a rules file holds.
#[derive(Clone)]
enum Entry {
    /// Blank or a comment.
    Text,
    Rule(Rule),
    /// Not a rule auditctl would accept; kept unless `exclusive`.
    Invalid,
}

fn entry(line: &[u8]) -> Entry {
    let text = String::from_utf8_lossy(line);
    let t = text.trim();
    if t.is_empty() || t.starts_with('#') {
        return Entry::Text;
    }
    parse(t).map_or(Entry::Invalid, Entry::Rule)
}

/// The kernel's side, from `auditctl -s` and `auditctl -l`.
struct Loaded {
    /// `enabled 2`: rules cannot change until reboot.
    locked: bool,
    rules: Vec<Rule>,
}

fn loaded(out: &str) -> Option<Loaded> {
    if out.trim() == "auditd not running" {
        return None;
    }
    let mut locked = false;
    let mut rules = Vec::new();
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("enabled ") {
            locked = v.trim() == "2";
        } else if line.starts_with('-') {
            // A line auditctl prints but SLICE cannot read counts as some other rule.
            if let Ok(r) = parse(line) {
                rules.push(r);
            }
        }
    }
    Some(Loaded { locked, rules })
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan<'o> {
    stat: Option<&'o Stat>,
    parent: Option<&'o Stat>,
    old: &'o [u8],
    new: Vec<u8>,
    /// Rule by rule: added, rewritten, removed.
    rule_changes: Vec<Change>,
    /// Wanted rules the running kernel lacks.
    not_loaded: Vec<String>,
    /// auditd runs: `Some(locked)`.
    auditd: Option<bool>,
}

impl AuditRule {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let file = p
            .opt_path("file")?
            .unwrap_or_else(|| DEFAULT_FILE.to_string());
        let present = p.choice("state", &["present", "absent"], "present")? == "present";
        let exclusive = p.opt_bool("exclusive")?.unwrap_or(false);
        let items = items(p, "rules")?;
        p.finish()?;

        if file == GENERATED {
            return Err(at(
                p,
                "file",
                format!("{GENERATED} is generated by augenrules from {RULES_D}; put the rules in a file there"),
            ));
        }
        if Path::new(&file).parent() == Some(Path::new(RULES_D)) && !file.ends_with(".rules") {
            return Err(at(
                p,
                "file",
                format!("augenrules reads only files ending in .rules; `{file}` would be ignored"),
            ));
        }
        if exclusive && !present {
            return Err(at(
                p,
                "exclusive",
                "`exclusive` applies only with `state: present`",
            ));
        }
        if items.is_empty() && !exclusive {
            return Err(Error::at(p.loc(), "`audit_rule` needs `rules`"));
        }
        let mut rules: Vec<(String, Rule)> = Vec::new();
        for (node, text) in items {
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let rule =
                parse(&text).map_err(|e| p.error(node, format!("not an audit rule: {e}")))?;
            if let Some((first, _)) = rules.iter().find(|(_, r)| *r == rule) {
                return Err(p.error(node, format!("`{text}` is the same rule as `{first}`")));
            }
            rules.push((text, rule));
        }
        Ok(Box::new(AuditRule {
            file,
            rules,
            present,
            exclusive,
            live: ctx.live,
        }))
    }

    fn parent(&self) -> String {
        Path::new(&self.file)
            .parent()
            .map_or_else(|| "/".to_string(), |p| p.to_string_lossy().into_owned())
    }

    /// The file as wanted, and the rule-level changes that make it so.
    fn wanted(&self, old: &[u8]) -> (Vec<u8>, Vec<Change>) {
        let mut lines = Lines::parse(old);
        let mut entries: Vec<Entry> = (0..lines.len()).map(|i| entry(lines.body(i))).collect();
        let text_of =
            |lines: &Lines, i: usize| String::from_utf8_lossy(lines.body(i)).trim().to_string();
        let mut changes = Vec::new();
        let is = |e: &Entry, r: &Rule| matches!(e, Entry::Rule(x) if x == r);

        if !self.present {
            let gone: Vec<usize> = (0..entries.len())
                .filter(|&i| self.rules.iter().any(|(_, r)| is(&entries[i], r)))
                .collect();
            for &i in &gone {
                changes.push(Change::new("rule", Some(text_of(&lines, i)), None));
            }
            lines.remove_at(&gone);
            return (lines.join(), changes);
        }

        // Lines that are a wanted rule (the first of each), then lines rewritten into one.
        let mut claimed = vec![false; entries.len()];
        let mut missing = Vec::new();
        for (text, rule) in &self.rules {
            match (0..entries.len()).find(|&i| is(&entries[i], rule)) {
                Some(i) => claimed[i] = true,
                None => missing.push((text, rule)),
            }
        }
        let mut add = Vec::new();
        for (text, rule) in missing {
            let same = |e: &Entry| matches!(e, Entry::Rule(x) if x.identity() == rule.identity());
            match (0..entries.len()).find(|&i| !claimed[i] && same(&entries[i])) {
                Some(i) => {
                    changes.push(Change::new(
                        "rule",
                        Some(text_of(&lines, i)),
                        Some(text.clone()),
                    ));
                    lines.replace(i, text.as_bytes());
                    entries[i] = Entry::Rule(rule.clone());
                    claimed[i] = true;
                }
                None => add.push(text),
            }
        }
        // A rule loaded twice makes auditctl fail ("Rule exists"): later copies go; with
        // `exclusive`, so does every rule not in the list.
        let gone: Vec<usize> = (0..entries.len())
            .filter(|&i| !claimed[i])
            .filter(|&i| match &entries[i] {
                Entry::Text => false,
                Entry::Rule(r) => self.exclusive || self.rules.iter().any(|(_, w)| w == r),
                Entry::Invalid => self.exclusive,
            })
            .collect();
        for &i in &gone {
            changes.push(Change::new("rule", Some(text_of(&lines, i)), None));
        }
        lines.remove_at(&gone);
        let mut k = 0;
        entries.retain(|_| {
            k += 1;
            !gone.contains(&(k - 1))
        });
        // New rules go at the end, but before `-e 2`: rules after it would never load.
        let at = (0..entries.len())
            .find(|&i| matches!(&entries[i], Entry::Rule(r) if r.locks()))
            .unwrap_or(lines.len());
        for (k, text) in add.into_iter().enumerate() {
            changes.push(Change::new("rule", None, Some(text.clone())));
            lines.insert(at + k, text.as_bytes());
        }
        (lines.join(), changes)
    }

    fn plan<'o>(&self, obs: &'o Observed) -> Result<Plan<'o>, String> {
        let stat = obs.stat(0)?;
        let parent = obs.stat(2)?;
        match (stat, parent) {
            (Some(s), _) if s.kind != FileType::File => {
                return Err(format!(
                    "{} is {}, not a regular file; leaving it alone",
                    self.file,
                    s.kind.describe()
                ));
            }
            (None, Some(d)) if d.kind != FileType::Dir && d.kind != FileType::Symlink => {
                return Err(format!(
                    "cannot create {}: {} is {}, not a directory",
                    self.file,
                    self.parent(),
                    d.kind.describe()
                ));
            }
            _ => {}
        }
        let old = match stat {
            Some(_) => obs.read(1)?.unwrap_or_default(),
            None => &[],
        };
        let (new, rule_changes) = if stat.is_none() && !self.present {
            (Vec::new(), Vec::new())
        } else {
            self.wanted(old)
        };
        let mut auditd = None;
        let mut not_loaded = Vec::new();
        if self.live {
            let out = obs.run(3)?;
            if !out.success() {
                return Err(format!(
                    "cannot list the loaded audit rules (`auditctl -l`): {}",
                    out.message()
                ));
            }
            if let Some(k) = loaded(&String::from_utf8_lossy(&out.stdout)) {
                auditd = Some(k.locked);
                // A locked kernel cannot take the rules before reboot: not drift to fix now.
                if self.present && !k.locked {
                    not_loaded = self
                        .rules
                        .iter()
                        .filter(|(_, r)| !k.rules.contains(r))
                        .map(|(t, _)| t.clone())
                        .collect();
                }
            }
        }
        Ok(Plan {
            stat,
            parent,
            old,
            new,
            rule_changes,
            not_loaded,
            auditd,
        })
    }

    fn creates(&self, plan: &Plan) -> bool {
        plan.stat.is_none() && self.present
    }

    fn writes(&self, plan: &Plan) -> bool {
        self.creates(plan) || plan.new != plan.old
    }
}

/// A list parameter's items with their nodes, for errors that point at one item.
fn items<'a>(p: &Params<'a>, key: &'static str) -> Result<Vec<(&'a Node, String)>> {
    let Some(n) = p.node(key) else {
        return Ok(Vec::new());
    };
    let nodes: Vec<&Node> = match &n.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![n],
    };
    nodes
        .into_iter()
        .map(|i| match (&i.value, i.scalar_text()) {
            (Value::Seq(_) | Value::Map(_), _) | (_, None) => Err(p.error(
                i,
                format!("`{key}` must be a list of strings, found {}", i.type_name()),
            )),
            (_, Some(s)) if s.contains(['\n', '\r']) => {
                Err(p.error(i, "each audit rule must be a single line"))
            }
            (_, Some(s)) => Ok((i, s)),
        })
        .collect()
}

impl Resource for AuditRule {
    fn target(&self) -> String {
        self.file.clone()
    }

    fn paths(&self) -> Vec<&str> {
        vec![&self.file]
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v = vec![
            Probe::Stat(self.file.clone()),
            Probe::Read(self.file.clone()),
            Probe::Stat(self.parent()),
        ];
        if self.live {
            v.push(Probe::Run(LIST.into()));
        }
        v
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        let plan = self.plan(obs)?;
        let mut out = Vec::new();
        if self.creates(&plan) {
            out.extend(Meta::presence(
                None,
                "file",
                &Attrs {
                    mode: Some(NEW_MODE),
                    ..Attrs::default()
                },
                &Accounts::default(),
            ));
        }
        out.extend(plan.rule_changes.iter().cloned());
        if plan.new != plan.old {
            out.push(content_change(&self.file, plan.old, &plan.new));
        }
        for rule in &plan.not_loaded {
            out.push(Change::new("loaded rule", None, Some(rule.clone())));
        }
        if plan.auditd == Some(true) && self.writes(&plan) {
            out.push(Change::new(
                "loaded rules",
                None,
                Some("locked (-e 2) until reboot; the file takes effect at the next boot".into()),
            ));
        }
        Ok(out)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let plan = self.plan(obs)?;
        let writes = self.writes(&plan);
        if writes {
            if plan.stat.is_none() && plan.parent.is_none() {
                return Err(format!(
                    "cannot create {}: {} does not exist (install auditd first)",
                    self.file,
                    self.parent()
                ));
            }
            let attrs = Attrs {
                mode: plan.stat.is_none().then_some(NEW_MODE),
                ..Attrs::default()
            };
            t.write(&self.file, &plan.new, &attrs)
                .map_err(|e| format!("{}: {e}", self.file))?;
        }
        if plan.auditd == Some(false) && (writes || !plan.not_loaded.is_empty()) {
            let out = t
                .run(LOAD)
                .map_err(|e| format!("cannot run `{LOAD}`: {e}"))?;
            if !out.success() {
                return Err(format!(
                    "`{LOAD}` exited with status {}: {}",
                    out.status,
                    out.message()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Mutex;

    use super::{parse, Rule};
    use crate::resource::{Change, Observed, Resource};
    use crate::resources::testing::{build, build_err, converge, diff, whats};
    use crate::transport::{Local, Output, Transport};

    const RULES: &str = "etc/audit/rules.d/slice-docker.rules";

    fn root(content: Option<&str>) -> (tempfile::TempDir, Local) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/audit/rules.d")).unwrap();
        if let Some(c) = content {
            fs::write(dir.path().join(RULES), c).unwrap();
        }
        let t = Local::with_root(dir.path()).unwrap();
        (dir, t)
    }

    fn yaml(rules: &[&str], extra: &str) -> String {
        let list: Vec<String> = rules.iter().map(|r| format!("  - '{r}'\n")).collect();
        format!("rules:\n{}{extra}", list.concat())
    }

    /// Converges an offline root and returns the changes and the file.
    fn run(rules: &[&str], extra: &str, content: Option<&str>) -> (Vec<Change>, String) {
        let (dir, t) = root(content);
        let res = build("audit_rule", &yaml(rules, extra), false).unwrap();
        let changes = converge(res.as_ref(), &t, dir.path());
        (changes, fs::read_to_string(dir.path().join(RULES)).unwrap())
    }

    fn rule(before: Option<&str>, after: Option<&str>) -> Change {
        Change::new("rule", before.map(String::from), after.map(String::from))
    }

    fn same(a: &str, b: &str) -> bool {
        parse(a).unwrap() == parse(b).unwrap()
    }

    #[test]
    fn rules_compare_by_meaning_not_by_text() {
        assert!(same("-w /x -k docker -p wa", "-w /x -p aw -k docker"));
        assert!(same(
            "-w /etc/docker -p wa -k docker",
            "-w /etc/docker/ -p wa -k docker"
        ));
        assert!(same(
            "-w /usr/bin/dockerd -k docker",
            "-w /usr/bin/dockerd -p rwxa -k docker"
        ));
        assert!(same(
            "-a exit,always -F arch=b64 -S openat,open -F auid>=1000 -F auid!=unset -k access",
            "-a always,exit -F arch=x86_64 -S open -S openat -F auid!=4294967295 -F key=access -F auid>=1000"
        ));
        assert!(same(
            "-a always,exit -F path=/usr/bin/runc -F perm=x -k docker",
            "-w /usr/bin/runc -p x -k docker"
        ));
        assert!(same(
            "-a always,exit -F arch=b64 -S openat -F exit=-EACCES -F a2&0x40",
            "-a always,exit -F arch=b64 -S openat -F exit=-13 -F a2&64"
        ));
        assert!(same("-b   8192", "-b 8192"));
        // Different keys, permissions, lists, fields or operators are different rules.
        assert!(!same("-w /x -p wa -k docker", "-w /x -p wa -k dockerd"));
        assert!(!same("-w /x -p wa -k docker", "-w /x -p w -k docker"));
        assert!(!same("-w /x -p wa", "-w /x -p wa -k docker"));
        assert!(!same("-w /x", "-w /y"));
        assert!(!same("-a always,exit -S open", "-a never,exit -S open"));
        assert!(!same(
            "-a always,exit -S open -F auid>=1000",
            "-a always,exit -S open -F auid>1000"
        ));
        assert!(!same(
            "-a always,exit -S open",
            "-a always,exit -S open -S openat"
        ));
        assert!(!same("-e 1", "-e 2"));
        assert!(parse("-e 2").unwrap().locks());
    }

    #[test]
    fn bad_rules_are_explained() {
        let err = |r: &str| parse(r).unwrap_err();
        assert_eq!(err("-w"), "`-w` needs a value");
        assert_eq!(
            err("-w docker"),
            "`-w` needs an absolute path, found `docker`"
        );
        assert_eq!(
            err("-w /x -p rq"),
            "permissions are letters of rwxa, found `rq`"
        );
        assert_eq!(err("-w /x -S open"), "`-w` goes only with `-p` and `-k`");
        assert_eq!(err("-w /x -k a # comment"), "`#` is not an auditctl option");
        assert_eq!(
            err("-a always -S open"),
            "`-a` takes a list and an action such as always,exit, found `always`"
        );
        assert_eq!(
            err("-a always,exit -F auid"),
            "`-F` takes name, operator and value such as auid>=1000, found `auid`"
        );
        assert_eq!(
            err("-p wa -k docker"),
            "`-p`, `-S`, `-F` and `-C` need `-w` or `-a`"
        );
        assert_eq!(err("-a always,exit -b 10"), "`-b` does not go with `-a`");
        assert_eq!(err("--"), "`--` is not an auditctl option");
        assert!(matches!(parse("-D -k docker").unwrap(), Rule::Control(_)));
    }

    #[test]
    fn missing_rules_are_added_and_others_kept() {
        let before = "## local\n-w /etc/passwd -p wa -k identity\n-w /usr/bin/dockerd -k docker\n";
        let (changes, after) = run(
            &[
                "-w /usr/bin/dockerd -p rwxa -k docker",
                "-w /run/containerd -k docker",
            ],
            "",
            Some(before),
        );
        assert_eq!(
            after,
            "## local\n-w /etc/passwd -p wa -k identity\n-w /usr/bin/dockerd -k docker\n-w /run/containerd -k docker\n"
        );
        assert_eq!(whats(&changes), ["rule", "content"]);
        assert_eq!(changes[0], rule(None, Some("-w /run/containerd -k docker")));
    }

    #[test]
    fn a_rule_differing_in_key_or_permissions_is_rewritten_in_place() {
        let before = "-w /etc/docker -p wa -k dockerd\n-w /usr/bin/runc -p x -k docker\n-w /var/lib/docker -p w -k docker\n";
        let (changes, after) = run(
            &[
                "-w /etc/docker -p wa -k docker",
                "-w /usr/bin/runc -k docker -p x",
                "-w /var/lib/docker -p wa -k docker",
            ],
            "",
            Some(before),
        );
        assert_eq!(
            after,
            "-w /etc/docker -p wa -k docker\n-w /usr/bin/runc -p x -k docker\n-w /var/lib/docker -p wa -k docker\n"
        );
        assert_eq!(
            changes[..2],
            [
                rule(
                    Some("-w /etc/docker -p wa -k dockerd"),
                    Some("-w /etc/docker -p wa -k docker")
                ),
                rule(
                    Some("-w /var/lib/docker -p w -k docker"),
                    Some("-w /var/lib/docker -p wa -k docker")
                ),
            ]
        );
    }

    #[test]
    fn new_rules_go_before_the_lock_and_duplicates_go() {
        let before = "-D\n-b 8192\n-w /usr/bin/dockerd -k docker\n-w /usr/bin/dockerd -p rwxa -k docker\n-e 2\n";
        let (changes, after) = run(
            &[
                "-w /usr/bin/dockerd -k docker",
                "-w /usr/bin/runc -k docker",
            ],
            "",
            Some(before),
        );
        assert_eq!(
            after,
            "-D\n-b 8192\n-w /usr/bin/dockerd -k docker\n-w /usr/bin/runc -k docker\n-e 2\n"
        );
        assert_eq!(
            changes[..2],
            [
                rule(Some("-w /usr/bin/dockerd -p rwxa -k docker"), None),
                rule(None, Some("-w /usr/bin/runc -k docker")),
            ]
        );
    }

    #[test]
    fn exclusive_removes_every_other_rule_and_keeps_comments() {
        let before = "# managed\n-w /etc/docker -k docker\n-w /tmp -k junk\nnot a rule\n\n-a always,exit -S all -F key=x\n";
        let (changes, after) = run(
            &["-w /etc/docker -k docker"],
            "exclusive: true\n",
            Some(before),
        );
        assert_eq!(after, "# managed\n-w /etc/docker -k docker\n\n");
        assert_eq!(
            changes[..3],
            [
                rule(Some("-w /tmp -k junk"), None),
                rule(Some("not a rule"), None),
                rule(Some("-a always,exit -S all -F key=x"), None),
            ]
        );
        // Without exclusive those lines stay.
        let (_, kept) = run(&["-w /etc/docker -k docker"], "", Some(before));
        assert_eq!(kept, before);
    }

    #[test]
    fn absent_removes_the_listed_rules_however_written() {
        let before = "-w /etc/docker -p wa -k docker\n-w /usr/bin/runc -p rwxa -k docker\n";
        let (changes, after) = run(
            &["-w /usr/bin/runc -k docker"],
            "state: absent\n",
            Some(before),
        );
        assert_eq!(after, "-w /etc/docker -p wa -k docker\n");
        assert_eq!(
            changes[0],
            rule(Some("-w /usr/bin/runc -p rwxa -k docker"), None)
        );
        // Absent from a missing file: nothing to do, nothing created.
        let (dir, t) = root(None);
        let res = build("audit_rule", &yaml(&["-w /x"], "state: absent\n"), false).unwrap();
        assert_eq!(converge(res.as_ref(), &t, dir.path()), []);
        assert!(!dir.path().join(RULES).exists());
    }

    #[test]
    fn a_new_file_is_created_readable_by_root_only() {
        let (changes, after) = run(&["-w /usr/bin/dockerd -k docker"], "", None);
        assert_eq!(after, "-w /usr/bin/dockerd -k docker\n");
        assert_eq!(whats(&changes), ["state", "mode", "rule", "content"]);
        assert_eq!(changes[1].after.as_deref(), Some("0640"));
    }

    /// A live host: files under a temporary root, commands answered from a script and recorded.
    struct Host {
        local: Local,
        /// What `auditctl -s && auditctl -l` prints now.
        listing: Mutex<String>,
        /// What the listing becomes once rules are loaded.
        after_load: String,
        ran: Mutex<Vec<String>>,
        load_status: i32,
    }

    impl Transport for Host {
        fn name(&self) -> String {
            "host".into()
        }
        fn live(&self) -> bool {
            true
        }
        fn stat(&self, path: &str) -> std::io::Result<Option<crate::transport::Stat>> {
            self.local.stat(path)
        }
        fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
            self.local.read(path)
        }
        fn write(
            &self,
            path: &str,
            data: &[u8],
            attrs: &crate::transport::Attrs,
        ) -> std::io::Result<()> {
            self.local.write(path, data, attrs)
        }
        fn mkdir(&self, path: &str, attrs: &crate::transport::Attrs) -> std::io::Result<()> {
            self.local.mkdir(path, attrs)
        }
        fn set_attrs(&self, path: &str, attrs: &crate::transport::Attrs) -> std::io::Result<()> {
            self.local.set_attrs(path, attrs)
        }
        fn remove(&self, path: &str) -> std::io::Result<()> {
            self.local.remove(path)
        }
        fn run(&self, command: &str) -> std::io::Result<Output> {
            if command == super::LIST {
                return Ok(Output {
                    status: 0,
                    stdout: self.listing.lock().unwrap().clone().into_bytes(),
                    stderr: Vec::new(),
                });
            }
            self.ran.lock().unwrap().push(command.to_string());
            if self.load_status == 0 {
                *self.listing.lock().unwrap() = self.after_load.clone();
            }
            Ok(Output {
                status: self.load_status,
                stdout: Vec::new(),
                stderr: b"Error sending add rule data request (Rule exists)\n".to_vec(),
            })
        }
        fn lock(
            &self,
            _: &str,
            _: std::time::Duration,
        ) -> std::io::Result<Box<dyn std::any::Any + Send>> {
            Ok(Box::new(()))
        }
    }

    /// `auditctl -s` and `auditctl -l` as auditctl prints them (written from its listing code, not
    /// captured from a host): watches with all four permissions spelled out, directories with a
    /// trailing slash, keys of syscall rules as `-F key=`, an unset id as -1.
    const STATUS: &str = "enabled 1\nfailure 1\npid 612\nrate_limit 0\nbacklog_limit 8192\nlost 0\nbacklog 0\nbacklog_wait_time 60000\nbacklog_wait_time_actual 0\nloginuid_immutable 0 unlocked\n";
    const LISTED: &str = "-w /usr/bin/dockerd -p rwxa -k docker\n-w /run/containerd/ -p rwxa -k docker\n-w /etc/docker/ -p rwxa -k docker\n-a always,exit -F arch=b64 -S execve -F auid>=1000 -F auid!=-1 -F key=exec\n";

    fn host(dir: &tempfile::TempDir, listing: &str, after_load: &str, load_status: i32) -> Host {
        Host {
            local: Local::with_root(dir.path()).unwrap(),
            listing: Mutex::new(listing.into()),
            after_load: after_load.into(),
            ran: Mutex::new(Vec::new()),
            load_status,
        }
    }

    fn observe_diff(res: &dyn Resource, t: &dyn Transport) -> Result<Vec<Change>, String> {
        let probes = res.probes();
        let answers = t.observe(&probes);
        res.diff(&Observed {
            answers: &answers,
            probes: &probes,
        })
    }

    fn observe_apply(res: &dyn Resource, t: &dyn Transport) -> Result<(), String> {
        let probes = res.probes();
        let answers = t.observe(&probes);
        res.apply(
            &Observed {
                answers: &answers,
                probes: &probes,
            },
            t,
        )
    }

    const WANT: &[&str] = &[
        "-w /usr/bin/dockerd -k docker",
        "-w /run/containerd -k docker",
        "-w /etc/docker -k docker",
        "-a always,exit -F arch=b64 -S execve -F auid>=1000 -F auid!=unset -k exec",
    ];

    #[test]
    fn rules_already_loaded_as_auditctl_lists_them_are_in_sync() {
        let (dir, _) = root(Some(&(WANT.join("\n") + "\n")));
        let h = host(&dir, &format!("{STATUS}{LISTED}"), "", 0);
        let res = build("audit_rule", &yaml(WANT, ""), true).unwrap();
        assert_eq!(observe_diff(res.as_ref(), &h).unwrap(), []);
    }

    #[test]
    fn a_changed_file_is_loaded_with_augenrules_when_auditd_runs() {
        let (dir, _) = root(Some("-w /usr/bin/dockerd -k docker\n"));
        let h = host(
            &dir,
            &format!("{STATUS}-w /usr/bin/dockerd -p rwxa -k docker\n"),
            &format!("{STATUS}{LISTED}"),
            0,
        );
        let res = build("audit_rule", &yaml(WANT, ""), true).unwrap();
        let changes = observe_diff(res.as_ref(), &h).unwrap();
        assert_eq!(
            whats(&changes),
            [
                "rule",
                "rule",
                "rule",
                "content",
                "loaded rule",
                "loaded rule",
                "loaded rule"
            ]
        );
        assert_eq!(
            changes[4],
            Change::new(
                "loaded rule",
                None,
                Some("-w /run/containerd -k docker".into())
            )
        );
        observe_apply(res.as_ref(), &h).unwrap();
        assert_eq!(*h.ran.lock().unwrap(), ["augenrules --load"]);
        assert_eq!(observe_diff(res.as_ref(), &h).unwrap(), []);
        observe_apply(res.as_ref(), &h).unwrap();
        assert_eq!(
            h.ran.lock().unwrap().len(),
            1,
            "nothing to load the second time"
        );
    }

    #[test]
    fn rules_in_the_file_but_not_in_the_kernel_are_loaded() {
        let (dir, _) = root(Some(&(WANT.join("\n") + "\n")));
        let h = host(
            &dir,
            &format!("{STATUS}No rules\n"),
            &format!("{STATUS}{LISTED}"),
            0,
        );
        let res = build("audit_rule", &yaml(WANT, ""), true).unwrap();
        assert_eq!(
            whats(&observe_diff(res.as_ref(), &h).unwrap()),
            ["loaded rule"; 4]
        );
        observe_apply(res.as_ref(), &h).unwrap();
        assert_eq!(observe_diff(res.as_ref(), &h).unwrap(), []);
    }

    #[test]
    fn a_failed_load_fails_the_task() {
        let (dir, _) = root(None);
        let h = host(&dir, &format!("{STATUS}No rules\n"), "", 1);
        let res = build("audit_rule", &yaml(WANT, ""), true).unwrap();
        assert_eq!(
            observe_apply(res.as_ref(), &h).unwrap_err(),
            "`augenrules --load` exited with status 1: Error sending add rule data request (Rule exists)"
        );
    }

    #[test]
    fn a_locked_kernel_is_left_for_the_next_boot() {
        let (dir, _) = root(None);
        let locked = STATUS.replace("enabled 1", "enabled 2");
        let h = host(&dir, &format!("{locked}No rules\n"), "", 0);
        let res = build("audit_rule", &yaml(WANT, ""), true).unwrap();
        let changes = observe_diff(res.as_ref(), &h).unwrap();
        assert_eq!(
            changes.last().unwrap(),
            &Change::new(
                "loaded rules",
                None,
                Some("locked (-e 2) until reboot; the file takes effect at the next boot".into())
            )
        );
        observe_apply(res.as_ref(), &h).unwrap();
        assert!(
            h.ran.lock().unwrap().is_empty(),
            "no load into a locked kernel"
        );
        assert_eq!(observe_diff(res.as_ref(), &h).unwrap(), []);
    }

    #[test]
    fn without_auditd_only_the_file_counts() {
        let (dir, _) = root(None);
        let h = host(&dir, "auditd not running\n", "", 0);
        let res = build("audit_rule", &yaml(WANT, ""), true).unwrap();
        observe_apply(res.as_ref(), &h).unwrap();
        assert!(h.ran.lock().unwrap().is_empty());
        assert_eq!(observe_diff(res.as_ref(), &h).unwrap(), []);
    }

    #[test]
    fn the_shipped_cis_rules_parse() {
        // The list docs/resources.md ships for CIS Docker 1.6.0 1.1.3 to 1.1.18.
        let docs = include_str!("../../docs/resources.md");
        let rules: Vec<&str> = docs
            .lines()
            .filter_map(|l| {
                l.trim()
                    .strip_prefix("- \"")
                    .and_then(|r| r.strip_suffix('"'))
            })
            .filter(|r| r.starts_with("-w "))
            .collect();
        assert!(rules.len() >= 15, "{rules:?}");
        for r in rules {
            assert!(matches!(parse(r), Ok(Rule::Watch { .. })), "{r}");
        }
    }

    #[test]
    fn build_errors_point_at_the_rule() {
        assert_eq!(
            build_err("audit_rule", "rules:\n  - -w /x -k a\n  - -w /x -p rz\n"),
            "3:5: not an audit rule: permissions are letters of rwxa, found `rz`"
        );
        assert_eq!(
            build_err(
                "audit_rule",
                "rules:\n  - -w /x -p wa -k a\n  - -w /x -k a -p aw\n"
            ),
            "3:5: `-w /x -k a -p aw` is the same rule as `-w /x -p wa -k a`"
        );
        assert_eq!(
            build_err("audit_rule", "rules: [-w /x]\nfile: /etc/audit/audit.rules\n"),
            "2:7: /etc/audit/audit.rules is generated by augenrules from /etc/audit/rules.d; put the rules in a file there"
        );
        assert_eq!(
            build_err("audit_rule", "rules: [-w /x]\nfile: /etc/audit/rules.d/docker.conf\n"),
            "2:7: augenrules reads only files ending in .rules; `/etc/audit/rules.d/docker.conf` would be ignored"
        );
        assert_eq!(
            build_err(
                "audit_rule",
                "rules: [-w /x]\nstate: absent\nexclusive: true\n"
            ),
            "3:12: `exclusive` applies only with `state: present`"
        );
        assert_eq!(
            build_err("audit_rule", "file: /etc/audit/rules.d/a.rules\n"),
            "1:1: `audit_rule` needs `rules`"
        );
        assert_eq!(
            build_err("audit_rule", "rules:\n  - { w: /x }\n"),
            "2:5: `rules` must be a list of strings, found a mapping"
        );
    }

    #[test]
    fn target_paths_and_probes() {
        let res = build("audit_rule", "rules: [-w /x]\n", true).unwrap();
        assert_eq!(res.target(), "/etc/audit/rules.d/slice-docker.rules");
        assert_eq!(res.paths(), ["/etc/audit/rules.d/slice-docker.rules"]);
        assert_eq!(res.probes().len(), 4);
        let res = build("audit_rule", "rules: [-w /x]\n", false).unwrap();
        assert_eq!(res.probes().len(), 3, "an offline root runs no auditctl");
        // A file outside rules.d is allowed (audit.rules of a system without augenrules aside).
        assert!(build(
            "audit_rule",
            "rules: [-w /x]\nfile: /srv/audit/docker.txt\n",
            false
        )
        .is_ok());
    }

    #[test]
    fn diff_of_a_root_without_the_directory_reports_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let t = Local::with_root(dir.path()).unwrap();
        let res = build("audit_rule", "rules: [-w /x]\n", false).unwrap();
        assert_eq!(
            whats(&diff(res.as_ref(), &t).unwrap()),
            ["state", "mode", "rule", "content"]
        );
        assert_eq!(
            observe_apply(res.as_ref(), &t).unwrap_err(),
            "cannot create /etc/audit/rules.d/slice-docker.rules: /etc/audit/rules.d does not exist (install auditd first)"
        );
    }
}
