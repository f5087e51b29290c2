//! `selinux`: SELinux's state and policy in /etc/selinux/config (every other line kept), the
//! running mode (`setenforce`), and booleans (`setsebool -P`).
//!
//! Some of it only a reboot can do: turning SELinux off, or on where the running kernel has none.
//! SLICE never reboots. It writes what it can, and reports the rest plainly: check mode shows the
//! running state as a difference, and apply fails with "reboot required: …" until the host runs
//! as asked. A running kernel without SELinux is never reported as enforcing anything.

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::{at, content_change, Lines};
use crate::resources::{Accounts, Meta};
use crate::transport::{Attrs, FileType, Probe, Stat, Transport};
use crate::yaml::Value;

const CONFIG: &str = "/etc/selinux/config";
const SELINUX_DIR: &str = "/etc/selinux";
/// `1` enforcing, `0` permissive; absent when the running kernel has no SELinux.
const ENFORCE: &str = "/sys/fs/selinux/enforce";
/// Read-only and the same text in every task, so a host answers it once per run.
const GETSEBOOL: &str = "getsebool -a";
/// Asks the next boot with SELinux to relabel every file (selinux-autorelabel).
const AUTORELABEL: &str = "/.autorelabel";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Enforcing,
    Permissive,
    Disabled,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Enforcing => "enforcing",
            State::Permissive => "permissive",
            State::Disabled => "disabled",
        }
    }

    /// One of the words of the `state` parameter.
    fn parse(value: &str) -> Option<State> {
        match value {
            "enforcing" => Some(State::Enforcing),
            "permissive" => Some(State::Permissive),
            "disabled" => Some(State::Disabled),
            _ => None,
        }
    }

    fn enabled(self) -> bool {
        self != State::Disabled
    }
}

pub struct Selinux {
    state: Option<State>,
    /// The SELINUXTYPE; required with an enabled `state`.
    policy: Option<String>,
    booleans: Vec<(String, bool)>,
    /// A running system: the kernel is asked and changed.
    live: bool,
    /// Create /.autorelabel when SELinux is switched on from disabled.
    relabel: bool,
}

/// Probe positions (see `probes`).
const AT_STAT: usize = 0;
const AT_READ: usize = 1;
const AT_POLICY: usize = 2;
const AT_RELABEL: usize = 3;
const AT_ENFORCE: usize = 4;
const AT_BOOLEANS: usize = 5;

/// SELinux in the running kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Running {
    /// An offline root: there is no running kernel.
    Offline,
    /// The running kernel has no SELinux (not built in, booted without it, or no policy).
    Absent,
    /// Enforcing or permissive.
    Mode(State),
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan<'o> {
    stat: Option<&'o Stat>,
    old: &'o [u8],
    /// The config as it should be; `None` when it is not to be written.
    new: Option<Vec<u8>>,
    /// The policy directory that does not exist, when `policy` names one.
    missing_policy: Option<String>,
    running: Running,
    /// `setenforce` argument.
    setenforce: Option<&'static str>,
    relabel: bool,
    /// Booleans to set: name, now, wanted.
    booleans: Vec<(String, bool, bool)>,
    /// Why the host will still differ after apply: a reboot is needed, or the kernel lacks SELinux.
    pending: Vec<String>,
}

impl Selinux {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let state = match p.node("state") {
            None => None,
            Some(_) => State::parse(p.choice(
                "state",
                &["enforcing", "permissive", "disabled"],
                "disabled",
            )?),
        };
        let policy = p.opt_str("policy")?;
        let booleans = booleans(p)?;
        let relabel = p.opt_bool("relabel")?.unwrap_or(true);
        p.finish()?;

        if state.is_none() && policy.is_none() && booleans.is_empty() {
            return Err(Error::at(
                p.loc(),
                "`selinux` needs `state`, `policy` or `booleans`",
            ));
        }
        if let Some(name) = &policy {
            let ok = !name.is_empty()
                && !name.starts_with(['.', '-'])
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !ok {
                return Err(at(
                    p,
                    "policy",
                    format!("`{name}` is not a policy name such as targeted"),
                ));
            }
        }
        if let (Some(s), None) = (state, &policy) {
            if s.enabled() {
                return Err(at(
                    p,
                    "state",
                    format!(
                        "`state: {}` needs `policy` (the SELINUXTYPE, such as targeted or default), \
                         which SLICE checks is installed before selecting it",
                        s.word()
                    ),
                ));
            }
        }
        if state == Some(State::Disabled) && !booleans.is_empty() {
            return Err(at(
                p,
                "booleans",
                "`booleans` cannot be set with `state: disabled`: they exist only while SELinux runs",
            ));
        }
        Ok(Box::new(Selinux {
            state,
            policy,
            booleans,
            live: ctx.live,
            relabel,
        }))
    }

    fn manages_config(&self) -> bool {
        self.state.is_some() || self.policy.is_some()
    }

    fn policy_dir(&self) -> Option<String> {
        self.policy.as_ref().map(|p| format!("{SELINUX_DIR}/{p}"))
    }

    /// The config lines this task manages.
    fn managed(&self) -> Vec<(Key, String)> {
        let mut v = Vec::new();
        if let Some(s) = self.state {
            v.push((Key::Selinux, s.word().to_string()));
        }
        if let Some(p) = &self.policy {
            v.push((Key::Type, p.clone()));
        }
        v
    }

    /// The config with exactly one line libselinux reads for each managed key: the one it reads
    /// now (the first `SELINUX=`, the last `SELINUXTYPE=`), rewritten if its value differs,
    /// the others removed, a missing one added at the end. Lines libselinux ignores stay.
    fn wanted(&self, old: &[u8]) -> Vec<u8> {
        let mut lines = Lines::parse(old);
        for (key, value) in self.managed() {
            let matches: Vec<usize> = (0..lines.len())
                .filter(|&i| key.value(lines.body(i)).is_some())
                .collect();
            let kept = match key {
                Key::Selinux => matches.first(),
                Key::Type => matches.last(),
            };
            let line = format!("{}={value}", key.name());
            match kept.copied() {
                None => lines.insert(lines.len(), line.as_bytes()),
                Some(k) => {
                    let same = key
                        .value(lines.body(k))
                        .is_some_and(|v| key.same(&v, &value));
                    if !same {
                        lines.replace(k, line.as_bytes());
                    }
                    let others: Vec<usize> = matches.into_iter().filter(|&i| i != k).collect();
                    lines.remove_at(&others);
                }
            }
        }
        lines.join()
    }

    fn plan<'o>(&self, obs: &'o Observed) -> Result<Plan<'o>, String> {
        let stat = obs.stat(AT_STAT)?;
        if let Some(s) = stat.filter(|s| s.kind != FileType::File) {
            return Err(format!(
                "{CONFIG} is {}, not a regular file; leaving it alone",
                s.kind.describe()
            ));
        }
        let old = match stat {
            Some(_) => obs.read(AT_READ)?.unwrap_or_default(),
            None => &[],
        };
        let configured = configured_state(old);
        // No config means SELinux is disabled at boot: nothing to write to keep it so. A config
        // is only created with a `policy`, whose folder (inside /etc/selinux) is checked below.
        let new = if !self.manages_config()
            || (stat.is_none() && self.policy.is_none() && !self.state.is_some_and(State::enabled))
        {
            None
        } else {
            Some(self.wanted(old)).filter(|n| stat.is_none() || n.as_slice() != old)
        };
        let missing_policy = match self.policy_dir() {
            Some(dir)
                if !obs
                    .stat(AT_POLICY)?
                    .is_some_and(|s| s.kind == FileType::Dir) =>
            {
                Some(dir)
            }
            _ => None,
        };
        let running = if !self.live {
            Running::Offline
        } else {
            match obs.read(AT_ENFORCE)? {
                None => Running::Absent,
                Some(v) if v.trim_ascii() == b"1" => Running::Mode(State::Enforcing),
                Some(_) => Running::Mode(State::Permissive),
            }
        };

        let mut pending = Vec::new();
        let mut setenforce = None;
        match (self.state, running) {
            (Some(want), Running::Mode(now)) if want.enabled() && want != now => {
                setenforce = Some(if want == State::Enforcing { "1" } else { "0" });
            }
            (Some(State::Disabled), Running::Mode(now)) => {
                // As close to off as a running kernel gets; off itself needs a reboot.
                if now == State::Enforcing {
                    setenforce = Some("0");
                }
                pending.push(format!(
                    "reboot required: {CONFIG} says SELINUX=disabled, which takes effect at the next boot; \
                     until then SELinux runs permissive (SLICE never reboots)"
                ));
            }
            (Some(want), Running::Absent) if want.enabled() => pending.push(format!(
                "reboot required: the running kernel has no SELinux; {CONFIG} says SELINUX={}, which takes \
                 effect only after a reboot into a kernel with SELinux enabled (SLICE never reboots)",
                want.word()
            )),
            _ => {}
        }
        let relabel = self.relabel
            && self.state.is_some_and(State::enabled)
            && !matches!(running, Running::Mode(_))
            && !configured.is_some_and(State::enabled)
            && obs.stat(AT_RELABEL)?.is_none();

        let mut booleans = Vec::new();
        if !self.booleans.is_empty() {
            match running {
                Running::Offline => {
                    return Err(
                        "SELinux booleans can only be read and set on a running system, not in an offline root"
                            .to_string(),
                    )
                }
                Running::Absent => pending.push(
                    "the running kernel has no SELinux, so its booleans cannot be set".to_string(),
                ),
                Running::Mode(_) => {
                    let out = obs.run(AT_BOOLEANS)?;
                    if out.status == 127 {
                        return Err(format!(
                            "cannot read SELinux booleans: getsebool is not installed \
                             (package selinux-utils on Debian, libselinux-utils on Red Hat): {}",
                            out.message()
                        ));
                    }
                    if !out.success() {
                        return Err(format!(
                            "cannot read SELinux booleans: `{GETSEBOOL}` exited with status {}: {}",
                            out.status,
                            out.message()
                        ));
                    }
                    let now = parse_getsebool(&String::from_utf8_lossy(&out.stdout));
                    for (name, want) in &self.booleans {
                        let have = now
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| *v)
                            .ok_or_else(|| {
                                format!("SELinux has no boolean `{name}` (`{GETSEBOOL}` does not list it)")
                            })?;
                        if have != *want {
                            booleans.push((name.clone(), have, *want));
                        }
                    }
                }
            }
        }
        Ok(Plan {
            stat,
            old,
            new,
            missing_policy,
            running,
            setenforce,
            relabel,
            booleans,
            pending,
        })
    }
}

/// `booleans`: a mapping of boolean names to true/false (or on/off).
fn booleans(p: &Params) -> Result<Vec<(String, bool)>> {
    let Some(n) = p.node("booleans") else {
        return Ok(Vec::new());
    };
    let Some(entries) = n.as_map() else {
        return Err(p.error(
            n,
            format!(
                "`booleans` must be a mapping of names to true or false, found {}",
                n.type_name()
            ),
        ));
    };
    let mut out: Vec<(String, bool)> = Vec::new();
    for (k, v) in entries {
        let name = k.scalar_text().unwrap_or_default();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(p.error(
                k,
                format!("`{name}` is not an SELinux boolean name such as container_manage_cgroup"),
            ));
        }
        let value = match &v.value {
            Value::Bool(b) => Some(*b),
            Value::Int(1) => Some(true),
            Value::Int(0) => Some(false),
            Value::Str(s) => match s.to_ascii_lowercase().as_str() {
                "on" | "true" => Some(true),
                "off" | "false" => Some(false),
                _ => None,
            },
            _ => None,
        };
        let Some(value) = value else {
            return Err(p.error(
                v,
                format!("boolean `{name}` must be true or false (or on, off)"),
            ));
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(p.error(k, format!("boolean `{name}` is given twice")));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// A key of /etc/selinux/config, read as libselinux reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Selinux,
    Type,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Selinux => "SELINUX",
            Key::Type => "SELINUXTYPE",
        }
    }

    /// The raw value of a line that sets this key, `None` for any other line. libselinux takes
    /// `SELINUX=` only at the very start of a line, as written, and `SELINUXTYPE=` after any
    /// blanks and in any case; neither strips quotes.
    fn value(self, line: &[u8]) -> Option<String> {
        let text = String::from_utf8_lossy(line);
        match self {
            Key::Selinux => text.strip_prefix("SELINUX=").map(str::to_string),
            Key::Type => {
                let t = text.trim_start();
                let tag = "SELINUXTYPE=";
                t.get(..tag.len())
                    .filter(|p| p.eq_ignore_ascii_case(tag))
                    .map(|_| t[tag.len()..].to_string())
            }
        }
    }

    /// Whether a line's raw value already says `want`.
    fn same(self, raw: &str, want: &str) -> bool {
        match self {
            Key::Selinux => raw.trim().eq_ignore_ascii_case(want),
            Key::Type => raw.trim_end() == want,
        }
    }
}

/// The state the config asks for at boot: the first `SELINUX=` line whose value libselinux
/// recognizes (it compares the start of the value, in any case); `None` without one.
fn configured_state(config: &[u8]) -> Option<State> {
    let lines = Lines::parse(config);
    (0..lines.len()).find_map(|i| {
        let raw = Key::Selinux.value(lines.body(i))?;
        let v = raw.trim_start().to_ascii_lowercase();
        [State::Enforcing, State::Permissive, State::Disabled]
            .into_iter()
            .find(|s| v.starts_with(s.word()))
    })
}

/// `name --> on` lines (with ` pending: off` when a change awaits a commit): the current values.
fn parse_getsebool(out: &str) -> Vec<(String, bool)> {
    out.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(" --> ")?;
            let value = match rest.split_whitespace().next()? {
                "on" => true,
                "off" => false,
                _ => return None,
            };
            Some((name.trim().to_string(), value))
        })
        .collect()
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Runs a command that must succeed.
fn run(t: &dyn Transport, cmd: &str) -> Result<(), String> {
    let out = t.run(cmd).map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if !out.success() {
        return Err(format!(
            "`{cmd}` exited with status {}: {}",
            out.status,
            out.message()
        ));
    }
    Ok(())
}

impl Resource for Selinux {
    fn target(&self) -> String {
        match (&self.state, &self.policy) {
            (Some(s), _) => s.word().to_string(),
            (None, Some(p)) => format!("policy {p}"),
            (None, None) => "booleans".to_string(),
        }
    }

    fn paths(&self) -> Vec<&str> {
        if self.manages_config() {
            vec![CONFIG]
        } else {
            Vec::new()
        }
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v = vec![
            Probe::Stat(CONFIG.into()),
            Probe::Read(CONFIG.into()),
            // Without a policy to check, a probe the config's own stat already answers.
            Probe::Stat(self.policy_dir().unwrap_or_else(|| CONFIG.into())),
            Probe::Stat(AUTORELABEL.into()),
        ];
        if self.live {
            v.push(Probe::Read(ENFORCE.into()));
            if !self.booleans.is_empty() {
                v.push(Probe::Run(GETSEBOOL.into()));
            }
        }
        v
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        let plan = self.plan(obs)?;
        let mut out = Vec::new();
        if let (Some(dir), Some(p)) = (&plan.missing_policy, &self.policy) {
            out.push(Change::new(
                "policy",
                Some(format!("not installed: {dir} does not exist")),
                Some(p.clone()),
            ));
        }
        if let Some(new) = &plan.new {
            if plan.stat.is_none() {
                out.extend(Meta::presence(
                    None,
                    "file",
                    &Attrs::default(),
                    &Accounts::default(),
                ));
            }
            out.push(content_change(CONFIG, plan.old, new));
        }
        if plan.relabel {
            out.push(Change::new(
                "autorelabel",
                Some("absent".into()),
                Some(format!(
                    "{AUTORELABEL} (the first boot with SELinux relabels every file)"
                )),
            ));
        }
        match (self.state, plan.running) {
            (Some(want), Running::Mode(now)) if want != now => {
                let after = if want.enabled() {
                    want.word().to_string()
                } else {
                    "disabled (after a reboot)".to_string()
                };
                out.push(Change::new("running", Some(now.word().into()), Some(after)));
            }
            (Some(want), Running::Absent) if want.enabled() => out.push(Change::new(
                "running",
                Some("disabled: the running kernel has no SELinux".into()),
                Some(format!("{} (after a reboot)", want.word())),
            )),
            _ => {}
        }
        if plan.running == Running::Absent && !self.booleans.is_empty() {
            let want: Vec<String> = self
                .booleans
                .iter()
                .map(|(n, v)| format!("{n}={}", on_off(*v)))
                .collect();
            out.push(Change::new(
                "booleans",
                Some("unknown: the running kernel has no SELinux".into()),
                Some(want.join(", ")),
            ));
        }
        for (name, have, want) in &plan.booleans {
            out.push(Change::new(
                format!("boolean {name}"),
                Some(on_off(*have).into()),
                Some(on_off(*want).into()),
            ));
        }
        Ok(out)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let plan = self.plan(obs)?;
        if let (Some(dir), Some(p)) = (&plan.missing_policy, &self.policy) {
            // A config naming a policy that is not there leaves the next boot without one.
            return Err(format!(
                "the SELinux policy `{p}` is not installed ({dir} does not exist), so nothing is changed \
                 and {CONFIG} is left as it is"
            ));
        }
        // The running kernel first: a mode it refuses is then never written for the next boot.
        if let Some(arg) = plan.setenforce {
            run(t, &format!("setenforce {arg}"))?;
        }
        if let Some(new) = &plan.new {
            let attrs = Attrs {
                mode: plan.stat.is_none().then_some(0o644),
                ..Attrs::default()
            };
            t.write(CONFIG, new, &attrs)
                .map_err(|e| format!("{CONFIG}: {e}"))?;
        }
        if plan.relabel {
            let attrs = Attrs {
                mode: Some(0o644),
                ..Attrs::default()
            };
            t.write(AUTORELABEL, b"", &attrs)
                .map_err(|e| format!("{AUTORELABEL}: {e}"))?;
        }
        if !plan.booleans.is_empty() {
            let pairs: Vec<String> = plan
                .booleans
                .iter()
                .map(|(n, _, want)| format!("{n}={}", on_off(*want)))
                .collect();
            run(t, &format!("setsebool -P {}", pairs.join(" ")))?;
        }
        if plan.pending.is_empty() {
            Ok(())
        } else {
            Err(plan.pending.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::resources::testing;
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::facts::Facts;
    use crate::resources::apparmor::fake::{output, FakeHost};
    use crate::resources::testing::{build_err, build_with, content_diff, debian_facts, whats};
    use crate::transport::Output;

    /// /etc/selinux/config as Rocky Linux 9 ships it.
    const ROCKY: &str = "\
# This file controls the state of SELinux on the system.
# SELINUX= can take one of these three values:
#     enforcing - SELinux security policy is enforced.
#     permissive - SELinux prints warnings instead of enforcing.
#     disabled - No SELinux policy is loaded.
# See also:
# https://docs.fedoraproject.org/en-US/quick-docs/getting-started-with-selinux/#getting-started-with-selinux-selinux-states-and-modes
#
# NOTE: In earlier Fedora kernel builds, SELINUX=disabled would also
# fully disable SELinux during boot. If you need a system with SELinux
# fully disabled instead of SELinux running with no policy loaded, you
# need to pass selinux=0 to the kernel command line. You can use grubby
# to persistently set the bootloader to boot with selinux=0:
#
#    grubby --update-kernel ALL --args selinux=0
#
# To revert back to SELinux enabled:
#
#    grubby --update-kernel ALL --remove-args selinux
#
SELINUX=enforcing
# SELINUXTYPE= can take one of these three values:
#     targeted - Targeted processes are protected,
#     minimum - Modification of targeted policy. Only selected processes are protected.
#     mls - Multi Level Security protection.
SELINUXTYPE=targeted

";

    /// `getsebool -a` on a Rocky 9 host (a few of its 350 lines), one change pending.
    const GETSEBOOL_OUT: &str = "\
abrt_anon_write --> off
container_connect_any --> off
container_manage_cgroup --> off
container_use_cephfs --> off
httpd_can_network_connect --> off pending: on
virt_sandbox_use_all_caps --> on
virt_use_nfs --> on
";

    fn facts(live: bool) -> Facts {
        Facts {
            live,
            ..debian_facts()
        }
    }

    /// A root with /etc/selinux holding `config` (none when `None`) and the `targeted`
    /// policy, and, when `enforce` is given, a running SELinux with that /sys/fs/selinux/enforce.
    fn root(config: Option<&str>, enforce: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/selinux/targeted/policy")).unwrap();
        fs::write(dir.path().join("etc/selinux/semanage.conf"), "").unwrap();
        if let Some(c) = config {
            fs::write(dir.path().join("etc/selinux/config"), c).unwrap();
        }
        if let Some(e) = enforce {
            fs::create_dir_all(dir.path().join("sys/fs/selinux")).unwrap();
            fs::write(dir.path().join("sys/fs/selinux/enforce"), e).unwrap();
        }
        dir
    }

    fn config(root: &Path) -> String {
        fs::read_to_string(root.join("etc/selinux/config")).unwrap()
    }

    /// Answers as the SELinux tools would, keeping their state in the root: `setenforce`
    /// writes /sys/fs/selinux/enforce, booleans live in a file `getsebool -a` prints.
    fn tools(cmd: &str, root: &Path) -> Output {
        let bools = root.join("booleans");
        if !bools.exists() {
            fs::write(&bools, GETSEBOOL_OUT).unwrap();
        }
        let enforce = root.join("sys/fs/selinux/enforce");
        match cmd.split(' ').collect::<Vec<_>>().as_slice() {
            ["setenforce", v] if enforce.exists() => {
                fs::write(&enforce, v).unwrap();
                output(0, "", "")
            }
            ["setenforce", _] => output(1, "", "setenforce: SELinux is disabled\n"),
            ["getsebool", "-a"] if enforce.exists() => {
                output(0, &fs::read_to_string(&bools).unwrap(), "")
            }
            ["getsebool", "-a"] => output(1, "", "getsebool:  SELinux is disabled\n"),
            ["setsebool", "-P", pairs @ ..] => {
                let mut text = fs::read_to_string(&bools).unwrap();
                for pair in pairs {
                    let (n, v) = pair.split_once('=').unwrap();
                    let line = text
                        .lines()
                        .find(|l| l.starts_with(&format!("{n} -->")))
                        .unwrap()
                        .to_string();
                    text = text.replace(&line, &format!("{n} --> {v}"));
                }
                fs::write(&bools, text).unwrap();
                output(0, "", "")
            }
            _ => output(127, "", &format!("sh: 1: {cmd}: not found\n")),
        }
    }

    #[test]
    fn enforcing_to_permissive_edits_one_line_and_the_running_mode() {
        let dir = root(Some(ROCKY), Some("1"));
        let host = FakeHost::new(dir.path(), tools);
        let res = build_with(
            "selinux",
            "state: permissive\npolicy: targeted\n",
            &facts(true),
        )
        .unwrap();
        let changes = testing::diff(res.as_ref(), &host).unwrap();
        assert_eq!(whats(&changes), ["content", "running"]);
        assert!(content_diff(&changes).contains("-SELINUX=enforcing\n+SELINUX=permissive\n"));
        assert_eq!(
            changes[1],
            Change::new(
                "running",
                Some("enforcing".into()),
                Some("permissive".into())
            )
        );
        testing::apply(res.as_ref(), &host).unwrap();
        assert_eq!(host.commands(), ["setenforce 0"]);
        assert_eq!(
            config(dir.path()),
            ROCKY.replace("SELINUX=enforcing", "SELINUX=permissive"),
            "every other byte is kept"
        );
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), []);
        testing::apply(res.as_ref(), &host).unwrap();
        assert_eq!(host.commands().len(), 1, "in sync: nothing is run");

        let res = build_with(
            "selinux",
            "state: enforcing\npolicy: targeted\n",
            &facts(true),
        )
        .unwrap();
        testing::apply(res.as_ref(), &host).unwrap();
        assert_eq!(host.commands()[1], "setenforce 1");
        assert_eq!(config(dir.path()), ROCKY);
    }

    #[test]
    fn booleans_are_read_once_and_set_together() {
        let dir = root(Some(ROCKY), Some("1"));
        let host = FakeHost::new(dir.path(), tools);
        let res = build_with(
            "selinux",
            "booleans:\n  container_manage_cgroup: true\n  virt_use_nfs: off\n  virt_sandbox_use_all_caps: on\n  httpd_can_network_connect: false\n",
            &facts(true),
        )
        .unwrap();
        assert_eq!(
            res.probes().last(),
            Some(&Probe::Run("getsebool -a".into()))
        );
        assert_eq!(res.paths(), Vec::<&str>::new());
        assert_eq!(res.target(), "booleans");
        let changes = testing::diff(res.as_ref(), &host).unwrap();
        assert_eq!(
            changes,
            [
                Change::new(
                    "boolean container_manage_cgroup",
                    Some("off".into()),
                    Some("on".into())
                ),
                Change::new(
                    "boolean virt_use_nfs",
                    Some("on".into()),
                    Some("off".into())
                ),
            ],
            "the current value counts, not the pending one"
        );
        testing::apply(res.as_ref(), &host).unwrap();
        assert_eq!(
            host.commands().last().unwrap(),
            "setsebool -P container_manage_cgroup=on virt_use_nfs=off"
        );
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), []);
        assert_eq!(config(dir.path()), ROCKY, "the config is not touched");
    }

    #[test]
    fn an_unknown_boolean_or_missing_getsebool_fails() {
        let dir = root(Some(ROCKY), Some("1"));
        let host = FakeHost::new(dir.path(), tools);
        let res = build_with(
            "selinux",
            "booleans: { no_such_bool: true }\n",
            &facts(true),
        )
        .unwrap();
        assert_eq!(
            testing::diff(res.as_ref(), &host).unwrap_err(),
            "SELinux has no boolean `no_such_bool` (`getsebool -a` does not list it)"
        );
        let host = FakeHost::new(dir.path(), |_, _| {
            output(127, "", "sh: 1: getsebool: not found\n")
        });
        assert_eq!(
            testing::diff(res.as_ref(), &host).unwrap_err(),
            "cannot read SELinux booleans: getsebool is not installed (package selinux-utils on Debian, \
             libselinux-utils on Red Hat): sh: 1: getsebool: not found"
        );
    }

    #[test]
    fn disabling_a_running_selinux_needs_a_reboot_and_says_so() {
        let dir = root(Some(ROCKY), Some("1"));
        let host = FakeHost::new(dir.path(), tools);
        let res = build_with("selinux", "state: disabled\n", &facts(true)).unwrap();
        let changes = testing::diff(res.as_ref(), &host).unwrap();
        assert_eq!(whats(&changes), ["content", "running"]);
        assert_eq!(
            changes[1],
            Change::new(
                "running",
                Some("enforcing".into()),
                Some("disabled (after a reboot)".into())
            )
        );
        let err = testing::apply(res.as_ref(), &host).unwrap_err();
        assert_eq!(
            err,
            "reboot required: /etc/selinux/config says SELINUX=disabled, which takes effect at the next boot; \
             until then SELinux runs permissive (SLICE never reboots)"
        );
        assert_eq!(host.commands(), ["setenforce 0"], "never a reboot");
        assert!(config(dir.path()).contains("\nSELINUX=disabled\n"));
        // Until the reboot, the host still differs, and says why.
        assert_eq!(
            testing::diff(res.as_ref(), &host).unwrap(),
            [Change::new(
                "running",
                Some("permissive".into()),
                Some("disabled (after a reboot)".into())
            )]
        );
        assert!(testing::apply(res.as_ref(), &host)
            .unwrap_err()
            .starts_with("reboot required: "));
        assert_eq!(
            host.commands().len(),
            1,
            "permissive already: no setenforce"
        );

        // After the reboot: no /sys/fs/selinux.
        fs::remove_dir_all(dir.path().join("sys")).unwrap();
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), []);
    }

    /// A Debian host like the lab's: libsemanage's /etc/selinux/semanage.conf, a policy
    /// package's folder, no config, and a kernel without SELinux.
    #[test]
    fn without_selinux_in_the_kernel_enabling_is_pending_forever_and_honest() {
        let dir = root(None, None);
        fs::create_dir(dir.path().join("etc/selinux/default")).unwrap();
        let host = FakeHost::new(dir.path(), tools);
        let res = build_with(
            "selinux",
            "state: permissive\npolicy: default\nbooleans: { container_manage_cgroup: true }\n",
            &facts(true),
        )
        .unwrap();
        let changes = testing::diff(res.as_ref(), &host).unwrap();
        assert_eq!(
            whats(&changes),
            [
                "state",
                "mode",
                "content",
                "autorelabel",
                "running",
                "booleans"
            ]
        );
        assert_eq!(
            changes[4],
            Change::new(
                "running",
                Some("disabled: the running kernel has no SELinux".into()),
                Some("permissive (after a reboot)".into())
            )
        );
        assert_eq!(
            changes[5],
            Change::new(
                "booleans",
                Some("unknown: the running kernel has no SELinux".into()),
                Some("container_manage_cgroup=on".into())
            )
        );
        let err = testing::apply(res.as_ref(), &host).unwrap_err();
        assert_eq!(
            err,
            "reboot required: the running kernel has no SELinux; /etc/selinux/config says SELINUX=permissive, \
             which takes effect only after a reboot into a kernel with SELinux enabled (SLICE never reboots); \
             the running kernel has no SELinux, so its booleans cannot be set"
        );
        assert_eq!(
            config(dir.path()),
            "SELINUX=permissive\nSELINUXTYPE=default\n"
        );
        assert!(dir.path().join(".autorelabel").is_file());
        assert!(
            host.commands().iter().all(|c| c == "getsebool -a"),
            "observed (the tool refuses), but no setenforce, no setsebool: {:?}",
            host.commands()
        );
        assert_eq!(
            whats(&testing::diff(res.as_ref(), &host).unwrap()),
            ["running", "booleans"]
        );

        // Disabled is what such a kernel already is; no config is needed to say so.
        let res = build_with("selinux", "state: disabled\n", &facts(true)).unwrap();
        let bare = root(None, None);
        let host = FakeHost::new(bare.path(), tools);
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), []);
    }

    #[test]
    fn a_policy_that_is_not_installed_is_never_selected() {
        let dir = root(Some(ROCKY), Some("1"));
        let host = FakeHost::new(dir.path(), tools);
        let res = build_with("selinux", "state: enforcing\npolicy: mls\n", &facts(true)).unwrap();
        let changes = testing::diff(res.as_ref(), &host).unwrap();
        assert_eq!(
            changes[0],
            Change::new(
                "policy",
                Some("not installed: /etc/selinux/mls does not exist".into()),
                Some("mls".into())
            ),
            "check mode shows it: an earlier task may still install it"
        );
        let err = testing::apply(res.as_ref(), &host).unwrap_err();
        assert_eq!(
            err,
            "the SELinux policy `mls` is not installed (/etc/selinux/mls does not exist), so nothing is changed \
             and /etc/selinux/config is left as it is"
        );
        assert_eq!(config(dir.path()), ROCKY);
        assert!(host.commands().is_empty());
        // Once the policy is there, it is selected.
        fs::create_dir(dir.path().join("etc/selinux/mls")).unwrap();
        testing::apply(res.as_ref(), &host).unwrap();
        assert!(config(dir.path()).contains("\nSELINUXTYPE=mls\n"));
    }

    /// libselinux reads `SELINUX=` only at the start of a line and takes the first it
    /// recognizes; `SELINUXTYPE=` in any case after blanks, the last one. SLICE keeps the
    /// line libselinux reads, removes the other ones it would read, and leaves the rest.
    #[test]
    fn the_lines_libselinux_reads_are_the_ones_edited() {
        let before =
            "selinux=disabled\n# SELINUX=disabled\nSELINUX=\"permissive\"\n SELINUXTYPE=targeted\n\
                      SELINUX=Enforcing\nselinuxtype=mls\nSETLOCALDEFS=0\n";
        assert_eq!(configured_state(before.as_bytes()), Some(State::Enforcing));
        let dir = root(Some(before), None);
        let t = crate::transport::Local::with_root(dir.path()).unwrap();
        let res = build_with(
            "selinux",
            "state: enforcing\npolicy: targeted\n",
            &facts(false),
        )
        .unwrap();
        let changes = testing::diff(res.as_ref(), &t).unwrap();
        assert_eq!(whats(&changes), ["content"]);
        testing::apply(res.as_ref(), &t).unwrap();
        assert_eq!(
            config(dir.path()),
            "selinux=disabled\n# SELINUX=disabled\nSELINUX=enforcing\nSELINUXTYPE=targeted\nSETLOCALDEFS=0\n"
        );
        assert_eq!(testing::diff(res.as_ref(), &t).unwrap(), []);
        assert!(
            !dir.path().join(".autorelabel").exists(),
            "SELinux was already enabled in the config: no relabel"
        );

        // Values in another case, or with blanks after them, already say the same.
        let dir = root(Some("SELINUX= Permissive  \nSELINUXTYPE=targeted \n"), None);
        let t = crate::transport::Local::with_root(dir.path()).unwrap();
        let res = build_with(
            "selinux",
            "state: permissive\npolicy: targeted\n",
            &facts(false),
        )
        .unwrap();
        assert_eq!(testing::diff(res.as_ref(), &t).unwrap(), []);
    }

    #[test]
    fn an_offline_root_gets_the_config_and_a_relabel_but_no_booleans() {
        let dir = root(Some("SELINUX=disabled\nSELINUXTYPE=targeted\n"), None);
        let t = crate::transport::Local::with_root(dir.path()).unwrap();
        let res = build_with(
            "selinux",
            "state: enforcing\npolicy: targeted\n",
            &facts(false),
        )
        .unwrap();
        assert!(!res
            .probes()
            .iter()
            .any(|p| matches!(p, Probe::Read(p) if p.starts_with("/sys"))));
        let changes = testing::diff(res.as_ref(), &t).unwrap();
        assert_eq!(whats(&changes), ["content", "autorelabel"]);
        testing::apply(res.as_ref(), &t).unwrap();
        assert_eq!(
            config(dir.path()),
            "SELINUX=enforcing\nSELINUXTYPE=targeted\n"
        );
        assert_eq!(testing::diff(res.as_ref(), &t).unwrap(), []);
        assert!(dir.path().join(".autorelabel").is_file());

        let res = build_with(
            "selinux",
            "state: enforcing\npolicy: targeted\nrelabel: false\n",
            &facts(false),
        )
        .unwrap();
        let other = root(Some("SELINUX=disabled\n"), None);
        let t = crate::transport::Local::with_root(other.path()).unwrap();
        assert_eq!(
            whats(&testing::diff(res.as_ref(), &t).unwrap()),
            ["content"]
        );

        let res = build_with(
            "selinux",
            "booleans: { virt_use_nfs: true }\n",
            &facts(false),
        )
        .unwrap();
        assert_eq!(
            testing::diff(res.as_ref(), &t).unwrap_err(),
            "SELinux booleans can only be read and set on a running system, not in an offline root"
        );
    }

    #[test]
    fn without_selinux_installed_the_config_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        let t = crate::transport::Local::with_root(dir.path()).unwrap();
        let res = build_with("selinux", "state: disabled\n", &facts(false)).unwrap();
        assert_eq!(testing::diff(res.as_ref(), &t).unwrap(), []);
        let res = build_with(
            "selinux",
            "state: disabled\npolicy: targeted\n",
            &facts(false),
        )
        .unwrap();
        assert_eq!(
            whats(&testing::diff(res.as_ref(), &t).unwrap()),
            ["policy", "state", "mode", "content"]
        );
        assert!(testing::apply(res.as_ref(), &t)
            .unwrap_err()
            .starts_with("the SELinux policy `targeted` is not installed"));
        assert!(!dir.path().join("etc/selinux").exists());
    }

    #[test]
    fn a_config_that_is_not_a_file_is_left_alone() {
        let dir = root(None, None);
        fs::create_dir(dir.path().join("etc/selinux/config")).unwrap();
        let t = crate::transport::Local::with_root(dir.path()).unwrap();
        let res = build_with("selinux", "state: disabled\n", &facts(false)).unwrap();
        assert_eq!(
            testing::diff(res.as_ref(), &t).unwrap_err(),
            "/etc/selinux/config is a directory, not a regular file; leaving it alone"
        );
    }

    #[test]
    fn getsebool_output_is_parsed_leniently() {
        let parsed = parse_getsebool(GETSEBOOL_OUT);
        assert_eq!(parsed.len(), 7);
        assert!(parsed.contains(&("httpd_can_network_connect".into(), false)));
        assert!(parsed.contains(&("virt_use_nfs".into(), true)));
        assert_eq!(
            parse_getsebool("getsebool:  SELinux is disabled\n\n --> \nx --> maybe\n"),
            []
        );
    }

    #[test]
    fn build_errors_point_at_the_parameter() {
        assert_eq!(
            build_err("selinux", "state: enforcing\n"),
            "1:8: `state: enforcing` needs `policy` (the SELINUXTYPE, such as targeted or default), \
             which SLICE checks is installed before selecting it"
        );
        assert_eq!(
            build_err("selinux", "state: on\n"),
            "1:8: `state` must be one of enforcing, permissive, disabled, found `on`"
        );
        assert_eq!(
            build_err("selinux", "policy: ../x\n"),
            "1:9: `../x` is not a policy name such as targeted"
        );
        assert_eq!(
            build_err("selinux", "booleans: [a]\n"),
            "1:11: `booleans` must be a mapping of names to true or false, found a list"
        );
        assert_eq!(
            build_err("selinux", "booleans: { 'a;b': true }\n"),
            "1:14: `a;b` is not an SELinux boolean name such as container_manage_cgroup"
        );
        assert_eq!(
            build_err("selinux", "booleans: { a: maybe }\n"),
            "1:16: boolean `a` must be true or false (or on, off)"
        );
        assert_eq!(
            build_err("selinux", "state: disabled\nbooleans: { a: true }\n"),
            "2:11: `booleans` cannot be set with `state: disabled`: they exist only while SELinux runs"
        );
        assert_eq!(
            build_err("selinux", "relabel: true\n"),
            "1:1: `selinux` needs `state`, `policy` or `booleans`"
        );
        assert_eq!(
            build_err("selinux", "state: disabled\nboolean: { a: true }\n"),
            "2:1: unknown key `boolean` for `selinux`"
        );
    }
}
