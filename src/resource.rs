//! The one contract every kind of resource follows (validate, observe, diff, apply, verify) and the
//! table that registers the kinds.
//!
//! - validate: `build` turns a task's rendered parameters into a resource, or an error at file:line:col.
//! - observe: `probes` says what to read; the engine asks the transport for all tasks at once.
//! - diff: `diff` compares the answers with the desired state; no changes means in sync.
//! - apply: `apply` makes exactly those changes from the same answers.
//! - verify: the engine observes again after apply and fails a task whose diff is not empty.

use std::cell::RefCell;
use std::path::Path;

use serde::Serialize;

use crate::error::{suggest, Error, Loc, Result};
use crate::facts::Facts;
use crate::resources;
use crate::transport::{Answer, Output, Probe, Stat, Transport};
use crate::yaml::{Node, Value};

/// A kind of resource: its YAML name and how to build one from parameters.
pub struct Kind {
    pub name: &'static str,
    pub build: fn(&Params, &BuildCtx) -> Result<Box<dyn Resource>>,
}

/// Every kind SLICE knows, in one place. A kind's YAML name appears nowhere else.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "file",
        build: resources::file::File::build,
    },
    Kind {
        name: "directory",
        build: resources::directory::Directory::build,
    },
    Kind {
        name: "line",
        build: resources::line::Line::build,
    },
    Kind {
        name: "json",
        build: resources::json::Json::build,
    },
    Kind {
        name: "sysctl",
        build: resources::sysctl::Sysctl::build,
    },
    Kind {
        name: "command",
        build: resources::command::Command::build,
    },
    Kind {
        name: "package",
        build: resources::package::Package::build,
    },
    Kind {
        name: "patch",
        build: resources::patch::Patch::build,
    },
    Kind {
        name: "service",
        build: resources::service::Service::build,
    },
    Kind {
        name: "user",
        build: resources::user::User::build,
    },
    Kind {
        name: "group",
        build: resources::group::Group::build,
    },
    Kind {
        name: "mount",
        build: resources::mount::Mount::build,
    },
    Kind {
        name: "setuid",
        build: resources::setuid::Setuid::build,
    },
    Kind {
        name: "kernel_module",
        build: resources::kernel_module::KernelModule::build,
    },
    Kind {
        name: "audit_rule",
        build: resources::audit_rule::AuditRule::build,
    },
    Kind {
        name: "apparmor",
        build: resources::apparmor::Apparmor::build,
    },
    Kind {
        name: "selinux",
        build: resources::selinux::Selinux::build,
    },
    Kind {
        name: "docker_daemon",
        build: resources::docker_daemon::DockerDaemon::build,
    },
    Kind {
        name: "firewall",
        build: resources::firewall::Firewall::build,
    },
    Kind {
        name: "permissions",
        build: resources::permissions::Permissions::build,
    },
    Kind {
        name: "sshd",
        build: resources::sshd::Sshd::build,
    },
];

pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// One difference between the host and the playbook.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// What differs: `mode`, `content`, `key icc`, `would run`.
    pub what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// A unified diff, for contents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Change {
    pub fn new(what: impl Into<String>, before: Option<String>, after: Option<String>) -> Change {
        Change {
            what: what.into(),
            before,
            after,
            diff: None,
        }
    }

    pub fn with_diff(mut self, diff: Option<String>) -> Change {
        self.diff = diff;
        self
    }
}

pub trait Resource: Send + Sync {
    /// What the task manages, shown in brackets: `directory[/etc/docker]`.
    fn target(&self) -> String;

    /// Paths this resource writes, for implicit ordering after the tasks that create their parents.
    fn paths(&self) -> Vec<&str> {
        Vec::new()
    }

    /// A directory this resource creates; tasks writing below it are ordered after it.
    fn creates_dir(&self) -> Option<&str> {
        None
    }

    /// Packages this resource installs. Tasks that write inside their configuration paths, and
    /// the tasks that manage their services, are ordered after it.
    fn installs(&self) -> Vec<Install> {
        Vec::new()
    }

    /// The service (unit name, without `.service`) this resource manages.
    fn service(&self) -> Option<&str> {
        None
    }

    fn probes(&self) -> Vec<Probe>;

    /// The changes needed; an `Err` is a task failure (with its reason).
    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String>;

    /// Makes the changes `diff` reports for the same observation.
    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String>;

    /// Something worth telling about the host as observed after apply, shown with the task
    /// (`reboot required: yes`). Only called when the task changed something.
    fn note(&self, _obs: &Observed) -> Option<String> {
        None
    }

    /// For a change that can cut SLICE's own way in (a firewall, sshd): shell commands that put
    /// back the state observed in `obs`. Over SSH the engine arms them on the host to run after a
    /// delay, applies, then confirms with a new connection and disarms them; if it cannot get
    /// back in, the host restores itself.
    fn revert(&self, _obs: &Observed) -> Option<String> {
        None
    }

    /// Whether observing again after apply must find no changes. Only a resource whose effect
    /// cannot be observed (a command without a guard) says no.
    fn verifiable(&self) -> bool {
        true
    }
}

/// A package a resource installs, and what the package brings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Install {
    pub package: String,
    /// Where the package keeps its configuration (`/etc/ssh` for openssh-server).
    pub config_paths: Vec<String>,
    /// Services the package provides (`ssh` for openssh-server).
    pub services: Vec<String>,
}

/// The answers to one resource's probes, in the order it asked.
pub struct Observed<'a> {
    pub answers: &'a [Answer],
    pub probes: &'a [Probe],
}

impl Observed<'_> {
    fn answer(&self, i: usize) -> Result<&Answer, String> {
        match self.answers.get(i) {
            Some(Answer::Failed(msg)) => {
                let what = match &self.probes[i] {
                    Probe::Stat(p) | Probe::Read(p) => p.as_str(),
                    Probe::Run(c) => c.as_str(),
                };
                Err(format!("cannot observe {what}: {msg}"))
            }
            Some(a) => Ok(a),
            None => Err("internal error: missing observation".to_string()),
        }
    }

    pub fn stat(&self, i: usize) -> Result<Option<&Stat>, String> {
        match self.answer(i)? {
            Answer::Stat(s) => Ok(s.as_ref()),
            _ => Err("internal error: expected a stat".to_string()),
        }
    }

    pub fn read(&self, i: usize) -> Result<Option<&[u8]>, String> {
        match self.answer(i)? {
            Answer::Read(d) => Ok(d.as_deref()),
            _ => Err("internal error: expected file contents".to_string()),
        }
    }

    pub fn run(&self, i: usize) -> Result<&Output, String> {
        match self.answer(i)? {
            Answer::Run(o) => Ok(o),
            _ => Err("internal error: expected a command result".to_string()),
        }
    }
}

/// Files a task refers to by relative path (templates, sources), found by the playbook layer.
pub trait Files {
    /// Renders a template file with the task's variables.
    fn template(&self, rel: &str, loc: &Loc) -> Result<String>;
    /// Reads a source file shipped beside the playbook or module.
    fn source(&self, rel: &str, loc: &Loc) -> Result<Vec<u8>>;
}

/// What a resource may know while it is built: the target's facts, nothing of its state.
pub struct BuildCtx<'a> {
    /// The target is a running system (live /proc/sys), not an offline root.
    pub live: bool,
    /// What the target is (package manager, init system, …): picks a resource's backend.
    pub facts: &'a Facts,
    pub files: &'a dyn Files,
}

/// A task's parameters, read key by key. Every key asked for is remembered, so `finish` can name
/// any key the kind does not know and suggest the nearest one.
pub struct Params<'a> {
    node: &'a Node,
    kind: &'static str,
    asked: RefCell<Vec<&'static str>>,
}

impl<'a> Params<'a> {
    pub fn new(node: &'a Node, kind: &'static str) -> Result<Params<'a>> {
        if node.as_map().is_none() {
            return Err(Error::at(
                &node.loc,
                format!(
                    "`{kind}` takes a mapping of parameters, found {}",
                    node.type_name()
                ),
            ));
        }
        Ok(Params {
            node,
            kind,
            asked: RefCell::new(Vec::new()),
        })
    }

    pub fn loc(&self) -> &Loc {
        &self.node.loc
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The node of a parameter, if given (a null counts as not given).
    pub fn node(&self, key: &'static str) -> Option<&'a Node> {
        self.asked.borrow_mut().push(key);
        self.node
            .get(key)
            .filter(|n| !matches!(n.value, Value::Null))
    }

    pub fn error(&self, node: &Node, msg: impl Into<String>) -> Error {
        Error::at(&node.loc, msg)
    }

    fn type_error(&self, key: &str, node: &Node, want: &str) -> Error {
        Error::at(
            &node.loc,
            format!(
                "`{key}` of `{}` must be {want}, found {}",
                self.kind,
                node.type_name()
            ),
        )
    }

    fn missing(&self, key: &str) -> Error {
        Error::at(&self.node.loc, format!("`{}` needs `{key}`", self.kind))
    }

    /// A scalar as text (numbers and booleans are taken as written).
    pub fn opt_str(&self, key: &'static str) -> Result<Option<String>> {
        match self.node(key) {
            None => Ok(None),
            Some(n) => match &n.value {
                Value::Seq(_) | Value::Map(_) => Err(self.type_error(key, n, "a string")),
                _ => Ok(n.scalar_text()),
            },
        }
    }

    pub fn str(&self, key: &'static str) -> Result<String> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// An absolute path on the target.
    pub fn opt_path(&self, key: &'static str) -> Result<Option<String>> {
        let Some(s) = self.opt_str(key)? else {
            return Ok(None);
        };
        if !Path::new(&s).is_absolute() {
            let n = self.node(key).unwrap_or(self.node);
            return Err(self.error(n, format!("`{key}` must be an absolute path, found `{s}`")));
        }
        Ok(Some(normalize(&s)))
    }

    pub fn path(&self, key: &'static str) -> Result<String> {
        self.opt_path(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_bool(&self, key: &'static str) -> Result<Option<bool>> {
        match self.node(key) {
            None => Ok(None),
            Some(n) => match n.value {
                Value::Bool(b) => Ok(Some(b)),
                _ => Err(self.type_error(key, n, "true or false")),
            },
        }
    }

    /// A permission mode in octal: `"0644"`, `0644`, `"644"`, or `"u=rw,g=r,o=r"` is not accepted.
    pub fn opt_mode(&self, key: &'static str) -> Result<Option<u32>> {
        let Some(n) = self.node(key) else {
            return Ok(None);
        };
        let text = match &n.value {
            Value::Str(s) => s.clone(),
            Value::Int(_) => n.raw.clone().unwrap_or_default(),
            _ => return Err(self.type_error(key, n, "an octal mode such as \"0644\"")),
        };
        let digits = text.strip_prefix("0o").unwrap_or(&text);
        match u32::from_str_radix(digits, 8) {
            Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(Some(m)),
            _ => Err(self.error(
                n,
                format!(
                    "`{key}` of `{}` must be an octal mode such as \"0644\", found `{text}`",
                    self.kind
                ),
            )),
        }
    }

    /// One of a fixed set of words, with a default.
    pub fn choice(
        &self,
        key: &'static str,
        choices: &[&'static str],
        default: &'static str,
    ) -> Result<&'static str> {
        let Some(s) = self.opt_str(key)? else {
            return Ok(default);
        };
        match choices.iter().find(|c| **c == s) {
            Some(c) => Ok(c),
            None => {
                let n = self.node(key).unwrap_or(self.node);
                Err(self.error(
                    n,
                    format!("`{key}` must be one of {}, found `{s}`", choices.join(", ")),
                ))
            }
        }
    }

    /// A list of scalars; a single scalar counts as a list of one.
    pub fn str_list(&self, key: &'static str) -> Result<Vec<String>> {
        let Some(n) = self.node(key) else {
            return Ok(Vec::new());
        };
        match &n.value {
            Value::Seq(items) => items
                .iter()
                .map(|i| {
                    i.scalar_text()
                        .ok_or_else(|| self.type_error(key, i, "a list of strings"))
                })
                .collect(),
            _ => n
                .scalar_text()
                .map(|s| vec![s])
                .ok_or_else(|| self.type_error(key, n, "a list of strings")),
        }
    }

    /// Fails on any key that was never asked for, suggesting the nearest known one.
    pub fn finish(&self) -> Result<()> {
        let asked = self.asked.borrow();
        for (k, _) in self.node.as_map().unwrap_or_default() {
            let key = k.as_str().unwrap_or_default();
            if !asked.contains(&key) {
                let mut known: Vec<&str> = asked.clone();
                known.sort_unstable();
                known.dedup();
                let e = Error::at(&k.loc, format!("unknown key `{key}` for `{}`", self.kind));
                return Err(match suggest(key, known.iter().copied()) {
                    Some(s) => e.with_help(format!("did you mean `{s}`?")),
                    None => e.with_help(format!("`{}` takes: {}", self.kind, known.join(", "))),
                });
            }
        }
        Ok(())
    }
}

/// Removes `.`, duplicate and trailing slashes: `/etc//docker/` names `/etc/docker`.
pub fn normalize(path: &str) -> String {
    let mut out = String::new();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Texts larger than this (both sides together) are not diffed line by line.
const MAX_DIFF_INPUT: usize = 1 << 20;

/// A unified diff of two texts, labelled with the path; `None` when they are equal.
pub fn text_diff(path: &str, before: &str, after: &str) -> Option<String> {
    if before == after {
        return None;
    }
    if before.len() + after.len() > MAX_DIFF_INPUT {
        // A diff of this size helps nobody and costs seconds; say what changed instead.
        return Some(format!(
            "--- {path} (now)\n+++ {path} (wanted)\n(contents differ: {} → {} bytes; too large to show)\n",
            before.len(),
            after.len()
        ));
    }
    let diff = similar::TextDiff::from_lines(before, after);
    let mut out = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (now)"), &format!("{path} (wanted)"))
        .to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Source;

    fn node(text: &str) -> Node {
        crate::yaml::parse(&Source::new("t.yml", text)).unwrap()
    }

    #[test]
    fn kinds_are_unique() {
        let mut names: Vec<_> = KINDS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
    }

    #[test]
    fn unknown_key_suggests_the_nearest() {
        let n = node("path: /etc/x\nregex: a\n");
        let p = Params::new(&n, "line").unwrap();
        p.path("path").unwrap();
        p.opt_str("regexp").unwrap();
        p.opt_str("line").unwrap();
        let e = p.finish().unwrap_err();
        assert_eq!(e.message, "unknown key `regex` for `line`");
        assert_eq!(e.help.as_deref(), Some("did you mean `regexp`?"));
        assert_eq!(e.loc.unwrap().line, 2);
    }

    #[test]
    fn modes_are_octal_however_written() {
        let n = node("a: 0644\nb: \"0600\"\nc: '755'\nd: 0999\ne: [1]\n");
        let p = Params::new(&n, "file").unwrap();
        assert_eq!(p.opt_mode("a").unwrap(), Some(0o644));
        assert_eq!(p.opt_mode("b").unwrap(), Some(0o600));
        assert_eq!(p.opt_mode("c").unwrap(), Some(0o755));
        assert!(p.opt_mode("d").is_err());
        assert!(p.opt_mode("e").is_err());
    }

    #[test]
    fn paths_must_be_absolute_and_are_normalized() {
        let n = node("a: etc/x\nb: /etc//docker/\n");
        let p = Params::new(&n, "file").unwrap();
        assert!(p.path("a").unwrap_err().message.contains("absolute"));
        assert_eq!(p.path("b").unwrap(), "/etc/docker");
    }

    #[test]
    fn large_texts_are_summarised_not_diffed() {
        let big = "x\n".repeat(MAX_DIFF_INPUT);
        let d = text_diff("/f", "", &big).unwrap();
        assert_eq!(d, format!("--- /f (now)\n+++ /f (wanted)\n(contents differ: 0 → {} bytes; too large to show)\n", big.len()));
        assert_eq!(
            text_diff("/f", "a\n", "b\n").unwrap(),
            "--- /f (now)\n+++ /f (wanted)\n@@ -1 +1 @@\n-a\n+b\n"
        );
    }
}
