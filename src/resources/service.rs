//! `service`: a system service started at boot or not (`enabled`), running or stopped
//! (`state`), or restarted / reloaded as a handler.
//!
//! The backend follows the target's init system (`facts.init`): with systemd, `systemctl`;
//! without it, the init.d script, `update-rc.d` and `service`. Observation only reads: with
//! systemd one `systemctl is-enabled` + `is-active` probe per unit, shared by every task and
//! handler naming that unit; with init.d the script's `status` action and one listing of the
//! /etc/rc?.d start links shared by all init.d services of the host.
//!
//! An offline root (`--root`) runs nothing: only `enabled` can be managed there, and a task
//! that asks for a `state` is a build error (see `Service::build`).

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::at;
use crate::transport::script::quote;
use crate::transport::{Probe, Transport};

/// The suffixes systemd knows; a name without one of them is a `.service`.
const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
];

/// Where init.d services keep their start links; `S` links in these levels mean enabled.
const RC_LINKS: &str = "ls -1d /etc/rc[0-6S].d/S[0-9][0-9]* 2>/dev/null; true";
/// The runlevels a Debian system boots into (and rcS, run at every boot).
const BOOT_LEVELS: &[&str] = &["rc2.d", "rc3.d", "rc4.d", "rc5.d", "rcS.d"];

pub struct Service {
    /// As the task wrote it: `docker`.
    name: String,
    /// systemd: the unit (`docker.service`); init.d: the script's name (`docker`).
    unit: String,
    backend: Backend,
    enabled: Option<bool>,
    state: Option<State>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    /// `live: false`: an offline root, where only `systemctl enable/disable` work.
    Systemd {
        live: bool,
    },
    InitD {
        live: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Stopped,
    /// Actions, not states: they always run (handlers).
    Restarted,
    Reloaded,
}

/// What `systemctl is-enabled` (or the rc links) says about starting at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Boot {
    Enabled,
    /// `disabled`, or a state `systemctl enable` turns into `enabled` (the word is kept).
    Disabled(String),
    /// `masked`, `masked-runtime`: can be neither enabled nor started.
    Masked(String),
    /// `static`, `indirect`, `alias`, `generated`, `transient`: enable/disable cannot change it.
    Fixed(String),
    /// The unit does not exist (yet: a package task may install it).
    Missing,
}

/// Whether the service runs now, and the word to show for it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Activity {
    running: bool,
    shown: String,
}

struct Seen {
    boot: Boot,
    /// `None` in an offline root.
    activity: Option<Activity>,
}

impl Service {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let name = p.str("name")?;
        let enabled = p.opt_bool("enabled")?;
        let state = match p.opt_str("state")? {
            None => None,
            Some(_) => Some(
                match p.choice(
                    "state",
                    &["running", "stopped", "restarted", "reloaded"],
                    "running",
                )? {
                    "running" => State::Running,
                    "stopped" => State::Stopped,
                    "restarted" => State::Restarted,
                    _ => State::Reloaded,
                },
            ),
        };
        p.finish()?;
        if enabled.is_none() && state.is_none() {
            return Err(Error::at(p.loc(), "`service` needs `enabled` or `state`"));
        }
        // Placeholder facts (`slice validate`) have no init system: check the parameters as
        // for systemd, the common case.
        let backend = match ctx.facts.init.as_str() {
            "sysvinit" => Backend::InitD { live: ctx.live },
            "none" => {
                return Err(Error::at(
                    p.loc(),
                    "`service` needs systemd or /etc/init.d on the target, and it has neither",
                ))
            }
            _ => Backend::Systemd { live: ctx.live },
        };
        let unit = match backend {
            Backend::Systemd { .. } => systemd_unit(&name),
            Backend::InitD { .. } => initd_script(&name),
        }
        .ok_or_else(|| {
            at(
                p,
                "name",
                format!(
                    "`{name}` is not a service name such as docker{}",
                    match backend {
                        Backend::Systemd { .. } => " or docker.socket",
                        Backend::InitD { .. } =>
                            " (without systemd only init.d scripts can be managed)",
                    }
                ),
            )
        })?;
        if state.is_some() && !ctx.live {
            // An offline root runs nothing: there is no state to observe or change. Saying so
            // now, at the task, beats a report that claims a service is stopped or running.
            return Err(at(
                p,
                "state",
                "an offline root has no running services: only `enabled` can be managed there",
            )
            .with_help("run this task only on live hosts (`when: facts.live`), or drop `state`"));
        }
        Ok(Box::new(Service {
            name,
            unit,
            backend,
            enabled,
            state,
        }))
    }

    fn observe(&self, obs: &Observed) -> Result<Seen, String> {
        match self.backend {
            Backend::Systemd { live } => {
                let out = obs.run(0)?;
                let text = String::from_utf8_lossy(&out.stdout);
                let field = |key: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(key))
                        .map(str::trim)
                        .unwrap_or_default()
                        .to_string()
                };
                let boot = systemd_boot(&self.unit, &field("enabled "), &out.message())?;
                let activity = if live {
                    Some(systemd_activity(
                        &self.unit,
                        &field("active "),
                        &out.message(),
                    )?)
                } else {
                    None
                };
                Ok(Seen { boot, activity })
            }
            Backend::InitD { live } => {
                let script = obs.stat(0)?;
                let links = obs.run(1)?;
                let listing = String::from_utf8_lossy(&links.stdout);
                let boot = if script.is_none() {
                    Boot::Missing
                } else if rc_enabled(&self.unit, &listing) {
                    Boot::Enabled
                } else {
                    Boot::Disabled("disabled".into())
                };
                let activity = match (live, script) {
                    (false, _) => None,
                    (true, None) => Some(Activity {
                        running: false,
                        shown: "stopped".into(),
                    }),
                    (true, Some(_)) => Some(initd_activity(&self.unit, obs.run(2)?)?),
                };
                Ok(Seen { boot, activity })
            }
        }
    }

    /// The changes, and the commands that make them, in order.
    fn plan(&self, obs: &Observed) -> Result<(Vec<Change>, Vec<String>), String> {
        let seen = self.observe(obs)?;
        let mut changes = Vec::new();
        let mut cmds = Vec::new();
        let unit = &self.unit;
        if let Some(want) = self.enabled {
            match (&seen.boot, want) {
                (Boot::Enabled | Boot::Fixed(_), true)
                | (Boot::Disabled(_) | Boot::Masked(_) | Boot::Missing, false) => {}
                (Boot::Masked(w), true) => {
                    return Err(format!(
                        "{unit} is {w}: it cannot be enabled; unmask it first (`systemctl unmask {unit}`)"
                    ))
                }
                (Boot::Fixed(w), false) => return Err(cannot_disable(unit, w)),
                (Boot::Disabled(w), true) => {
                    let before = if w == "disabled" {
                        "no".to_string()
                    } else {
                        format!("no ({w})")
                    };
                    changes.push(Change::new("enabled", Some(before), Some("yes".into())));
                    cmds.push(self.enable_cmd(true));
                }
                (Boot::Missing, true) => {
                    changes.push(Change::new(
                        "enabled",
                        Some("no (no such service yet)".into()),
                        Some("yes".into()),
                    ));
                    cmds.push(self.enable_cmd(true));
                }
                (Boot::Enabled, false) => {
                    changes.push(Change::new(
                        "enabled",
                        Some("yes".into()),
                        Some("no".into()),
                    ));
                    cmds.push(self.enable_cmd(false));
                }
            }
        }
        let (Some(state), Some(act)) = (self.state, &seen.activity) else {
            return Ok((changes, cmds));
        };
        let masked = match &seen.boot {
            Boot::Masked(w) => Some(w),
            _ => None,
        };
        match state {
            State::Running if !act.running => {
                if let Some(w) = masked {
                    return Err(format!(
                        "{unit} is {w}: it cannot be started; unmask it first (`systemctl unmask {unit}`)"
                    ));
                }
                let before = if seen.boot == Boot::Missing {
                    "stopped (no such service yet)".to_string()
                } else {
                    act.shown.clone()
                };
                changes.push(Change::new("state", Some(before), Some("running".into())));
                cmds.push(self.action_cmd("start"));
            }
            State::Stopped if act.running => {
                changes.push(Change::new(
                    "state",
                    Some(act.shown.clone()),
                    Some("stopped".into()),
                ));
                cmds.push(self.action_cmd("stop"));
            }
            State::Running | State::Stopped => {}
            State::Restarted => {
                changes.push(Change::new("restart", None, Some(unit.clone())));
                cmds.push(self.action_cmd("restart"));
            }
            State::Reloaded if act.running => {
                changes.push(Change::new("reload", None, Some(unit.clone())));
                cmds.push(self.action_cmd("reload"));
            }
            State::Reloaded => {
                // Nothing runs that could reload: starting it reads the new configuration.
                changes.push(Change::new(
                    "start (not running, nothing to reload)",
                    None,
                    Some(unit.clone()),
                ));
                cmds.push(self.action_cmd("start"));
            }
        }
        Ok((changes, cmds))
    }

    fn enable_cmd(&self, on: bool) -> String {
        let q = quote(&self.unit);
        match (self.backend, on) {
            // Offline, systemctl finds no running manager and edits the symlinks itself.
            (Backend::Systemd { .. }, true) => format!("systemctl enable {q}"),
            (Backend::Systemd { .. }, false) => format!("systemctl disable {q}"),
            // `enable` only turns existing K links into S links; `defaults` first creates
            // them from the script's LSB header when the service never had any.
            (Backend::InitD { .. }, true) => {
                format!("update-rc.d {q} defaults && update-rc.d {q} enable")
            }
            (Backend::InitD { .. }, false) => format!("update-rc.d {q} disable"),
        }
    }

    /// `start`, `stop`, `restart` or `reload`, on a live target.
    fn action_cmd(&self, action: &str) -> String {
        let q = quote(&self.unit);
        match (self.backend, action) {
            // Before starting: a unit that failed, or was started too often lately, is refused
            // by its start limit ("start request repeated too quickly"); reset-failed clears the
            // failed state and the start-rate counter. Always doing it costs one quick call and
            // needs no second look at the unit; on a unit that is not loaded it fails, harmlessly.
            (Backend::Systemd { .. }, "start" | "restart") => {
                format!("systemctl reset-failed {q} 2>/dev/null; systemctl {action} {q}")
            }
            (Backend::Systemd { .. }, _) => format!("systemctl {action} {q}"),
            // `service` runs the script in a clean environment, as at boot.
            (Backend::InitD { .. }, _) => format!("service {q} {action}"),
        }
    }
}

/// The one command observing a unit: `enabled WORD` and, on a live system, `active WORD`.
/// systemctl's complaints go to stderr, where `systemd_boot` finds why a word is missing.
fn systemd_probe(unit: &str, live: bool) -> String {
    let q = quote(unit);
    if live {
        format!(
            "printf 'enabled %s\\nactive %s\\n' \"$(systemctl is-enabled {q} | head -n 1)\" \"$(systemctl is-active {q} | head -n 1)\""
        )
    } else {
        // No manager runs offline: is-active has nobody to ask.
        format!("printf 'enabled %s\\n' \"$(systemctl is-enabled {q} | head -n 1)\"")
    }
}

/// The systemd unit for a name: `docker` → `docker.service`; `None` when it is no unit name.
fn systemd_unit(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['-', '.', '@'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.@-\\".contains(c));
    if !ok {
        return None;
    }
    let typed = name
        .rsplit_once('.')
        .is_some_and(|(stem, t)| !stem.is_empty() && UNIT_TYPES.contains(&t));
    Some(if typed {
        name.to_string()
    } else {
        format!("{name}.service")
    })
}

/// The init.d script for a name: `ssh` or `ssh.service` → `ssh`; other unit types are systemd's.
fn initd_script(name: &str) -> Option<String> {
    let script = name.strip_suffix(".service").unwrap_or(name);
    let ok = !script.is_empty()
        && script.len() <= 255
        && !script.starts_with(['-', '.'])
        && script
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
        && !script
            .rsplit_once('.')
            .is_some_and(|(_, t)| UNIT_TYPES.contains(&t));
    ok.then(|| script.to_string())
}

/// `systemctl is-enabled`'s word (empty when it printed none), as in systemctl(1).
fn systemd_boot(unit: &str, word: &str, err: &str) -> Result<Boot, String> {
    Ok(match word {
        "enabled" => Boot::Enabled,
        // Runtime links vanish at reboot, and a linked unit file is not started at boot.
        "disabled" | "enabled-runtime" | "linked" | "linked-runtime" => {
            Boot::Disabled(word.to_string())
        }
        "masked" | "masked-runtime" => Boot::Masked(word.to_string()),
        "static" | "indirect" | "alias" | "generated" | "transient" => {
            Boot::Fixed(word.to_string())
        }
        "not-found" => Boot::Missing,
        // systemd 252 prints nothing and says why on stderr.
        "" if err.contains("No such file or directory") => Boot::Missing,
        "bad" => return Err(format!("{unit} has a unit file systemd cannot parse")),
        "" => {
            return Err(format!(
                "cannot ask systemd about {unit}: {}",
                or_nothing(err)
            ))
        }
        w => {
            return Err(format!(
                "systemd says {unit} is `{w}`, which SLICE does not know"
            ))
        }
    })
}

/// `systemctl is-active`'s word.
fn systemd_activity(unit: &str, word: &str, err: &str) -> Result<Activity, String> {
    let (running, shown) = match word {
        "active" => (true, "running"),
        // Starting or reloading: it is on its way up, and `systemctl start` would only wait.
        "activating" | "reloading" | "refreshing" => (true, word),
        "inactive" => (false, "stopped"),
        "failed" | "deactivating" | "maintenance" => (false, word),
        "" => {
            return Err(format!(
                "cannot ask systemd whether {unit} runs: {}",
                or_nothing(err)
            ))
        }
        w => {
            return Err(format!(
                "systemd says {unit} is `{w}`, which SLICE does not know"
            ))
        }
    };
    Ok(Activity {
        running,
        shown: shown.to_string(),
    })
}

/// The LSB exit codes of `/etc/init.d/NAME status`.
fn initd_activity(script: &str, out: &crate::transport::Output) -> Result<Activity, String> {
    let shown = match out.status {
        0 => return Ok(Activity {
            running: true,
            shown: "running".into(),
        }),
        3 => "stopped",
        // 1: dead, but its pid file remains; 2: dead, but its lock file remains.
        1 | 2 => "dead",
        s => {
            return Err(format!(
                "cannot tell whether {script} runs: `/etc/init.d/{script} status` exited with status {s}: {}",
                or_nothing(&out.message())
            ))
        }
    };
    Ok(Activity {
        running: false,
        shown: shown.into(),
    })
}

/// Whether a start link for the script exists in a runlevel the system boots into.
fn rc_enabled(script: &str, listing: &str) -> bool {
    listing.lines().any(|l| {
        let mut parts = l.trim().rsplit('/');
        let (Some(link), Some(dir)) = (parts.next(), parts.next()) else {
            return false;
        };
        let name = link
            .strip_prefix('S')
            .filter(|r| r.len() > 2 && r.as_bytes()[..2].iter().all(u8::is_ascii_digit))
            .map(|r| &r[2..]);
        BOOT_LEVELS.contains(&dir) && name == Some(script)
    })
}

fn cannot_disable(unit: &str, word: &str) -> String {
    let why = match word {
        "static" => "it has no [Install] section and starts only when another unit needs it; mask it to keep it from starting",
        "alias" => "it is another name of a unit: name that unit instead",
        "indirect" => "it is enabled through another unit (Also=): disable that one",
        _ => "it is made at run time, not by a unit file systemctl can disable",
    };
    format!("{unit} is {word}: it cannot be disabled; {why}")
}

fn or_nothing(msg: &str) -> &str {
    if msg.is_empty() {
        "(no message)"
    } else {
        msg
    }
}

impl Resource for Service {
    fn target(&self) -> String {
        self.name.clone()
    }

    fn service(&self) -> Option<&str> {
        match self.backend {
            Backend::Systemd { .. } => Some(
                self.unit
                    .strip_suffix(".service")
                    .unwrap_or(self.unit.as_str()),
            ),
            Backend::InitD { .. } => Some(&self.unit),
        }
    }

    fn probes(&self) -> Vec<Probe> {
        match self.backend {
            // Every task and handler naming the unit asks exactly this, so it runs once.
            Backend::Systemd { live } => vec![Probe::Run(systemd_probe(&self.unit, live))],
            Backend::InitD { live } => {
                let mut v = vec![
                    Probe::Stat(format!("/etc/init.d/{}", self.unit)),
                    Probe::Run(RC_LINKS.into()),
                ];
                if live {
                    // LSB: `status` only reads (0 running, 3 stopped).
                    v.push(Probe::Run(format!(
                        "{} status",
                        quote(&format!("/etc/init.d/{}", self.unit))
                    )));
                }
                v
            }
        }
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        Ok(self.plan(obs)?.0)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let (_, cmds) = self.plan(obs)?;
        for cmd in cmds {
            let out = t
                .run(&cmd)
                .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
            if !out.success() {
                return Err(format!(
                    "`{cmd}` exited with status {}: {}",
                    out.status,
                    or_nothing(&out.message())
                ));
            }
        }
        Ok(())
    }

    /// A restart or reload leaves nothing to observe afterwards.
    fn verifiable(&self) -> bool {
        !matches!(self.state, Some(State::Restarted | State::Reloaded))
    }
}

#[cfg(test)]
mod tests {
    use std::any::Any;
    use std::collections::BTreeMap;
    use std::io;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::facts::Facts;
    use crate::resource::Change;
    use crate::resources::testing::{build_with, debian_facts, whats};
    use crate::resources::user::fake::{apply, diff};
    use crate::transport::{Answer, Attrs, FileType, Output, Stat};

    /// Outputs of the live probe recorded on a lab host (Debian 12, systemd 252): stdout, stderr.
    const RECORDED: &[(&str, &str, &str)] = &[
        ("ssh.service", "enabled enabled\nactive active\n", ""),
        ("dbus.service", "enabled static\nactive active\n", ""),
        ("sshd.service", "enabled alias\nactive active\n", ""),
        ("limited.service", "enabled disabled\nactive active\n", ""),
        ("boom.service", "enabled static\nactive failed\n", ""),
        (
            "systemd-networkd.service",
            "enabled masked\nactive inactive\n",
            "",
        ),
        (
            "nope.service",
            "enabled \nactive inactive\n",
            "Failed to get unit file state for nope.service: No such file or directory\n",
        ),
    ];

    /// A unit as the simulated systemd holds it.
    #[derive(Clone)]
    struct Unit {
        enabled: String,
        active: String,
        /// Its start limit is reached: a start without reset-failed is refused.
        limited: bool,
    }

    /// A host's init system, simulated: systemd (live or offline) or init.d scripts. It answers
    /// the probes SLICE sends with outputs in the recorded format, and changes its state for
    /// the commands, so a test sees check, apply, verify and a second apply.
    struct Init {
        systemd: bool,
        live: bool,
        units: Mutex<BTreeMap<String, Unit>>,
        log: Mutex<Vec<String>>,
    }

    impl Init {
        fn systemd(live: bool, units: &[(&str, &str, &str)]) -> Init {
            Init {
                systemd: true,
                live,
                units: Mutex::new(
                    units
                        .iter()
                        .map(|(n, e, a)| {
                            (
                                n.to_string(),
                                Unit {
                                    enabled: e.to_string(),
                                    active: a.to_string(),
                                    limited: false,
                                },
                            )
                        })
                        .collect(),
                ),
                log: Mutex::new(Vec::new()),
            }
        }

        /// init.d scripts: (name, enabled, running).
        fn initd(scripts: &[(&str, bool, bool)]) -> Init {
            let units: Vec<(&str, &str, &str)> = scripts
                .iter()
                .map(|(n, e, r)| {
                    (
                        *n,
                        if *e { "enabled" } else { "disabled" },
                        if *r { "active" } else { "inactive" },
                    )
                })
                .collect();
            Init {
                systemd: false,
                ..Init::systemd(true, &units)
            }
        }

        fn unit(&self, name: &str) -> Option<Unit> {
            self.units.lock().unwrap().get(name).cloned()
        }

        fn limit(&self, name: &str) {
            if let Some(u) = self.units.lock().unwrap().get_mut(name) {
                u.limited = true;
            }
        }

        fn commands(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }

        fn set(&self, name: &str, f: impl FnOnce(&mut Unit)) {
            if let Some(u) = self.units.lock().unwrap().get_mut(name) {
                f(u);
            }
        }

        /// One simple command (no `;` or `&&`).
        fn simple(&self, cmd: &str) -> Output {
            let w = shlex::split(cmd).unwrap_or_default();
            let w: Vec<&str> = w.iter().map(String::as_str).collect();
            let ok = Output::default();
            let fail = |msg: String| Output {
                status: 1,
                stdout: Vec::new(),
                stderr: msg.into_bytes(),
            };
            let (tool, action, name) = match w.as_slice() {
                ["systemctl", a, n] | ["update-rc.d", n, a] | ["service", n, a] => (w[0], *a, *n),
                _ => return fail(format!("unexpected command `{cmd}`")),
            };
            let Some(unit) = self.unit(name) else {
                return fail(match tool {
                    "systemctl" => {
                        format!("Failed to {action} unit: Unit file {name} does not exist.")
                    }
                    _ => format!("{name}: unrecognized service"),
                });
            };
            let running = unit.active == "active";
            match action {
                "enable" => self.set(name, |u| u.enabled = "enabled".into()),
                "disable" => self.set(name, |u| u.enabled = "disabled".into()),
                "defaults" => {}
                "reset-failed" => self.set(name, |u| {
                    u.limited = false;
                    if u.active == "failed" {
                        u.active = "inactive".into();
                    }
                }),
                "start" | "restart" if unit.limited => {
                    self.set(name, |u| u.active = "failed".into());
                    return fail(format!(
                        "Job for {name} failed because start of the service was attempted too often."
                    ));
                }
                "start" | "restart" => self.set(name, |u| u.active = "active".into()),
                "stop" => self.set(name, |u| u.active = "inactive".into()),
                "reload" if !running => {
                    return fail(format!("{name} is not active, cannot reload."))
                }
                "reload" => {}
                _ => return fail(format!("unexpected command `{cmd}`")),
            }
            ok
        }

        fn probe(&self, cmd: &str) -> Option<Output> {
            let out = |stdout: String, stderr: String, status: i32| Output {
                status,
                stdout: stdout.into_bytes(),
                stderr: stderr.into_bytes(),
            };
            if self.systemd {
                let name = cmd.split("is-enabled '").nth(1)?.split('\'').next()?;
                if cmd != systemd_probe(name, self.live) {
                    return None;
                }
                let (e, a, err) = match self.unit(name) {
                    Some(u) => (u.enabled, u.active, String::new()),
                    None => (
                        String::new(),
                        "inactive".into(),
                        format!(
                            "Failed to get unit file state for {name}: No such file or directory\n"
                        ),
                    ),
                };
                let stdout = if self.live {
                    format!("enabled {e}\nactive {a}\n")
                } else {
                    format!("enabled {e}\n")
                };
                return Some(out(stdout, err, 0));
            }
            if cmd == RC_LINKS {
                let units = self.units.lock().unwrap();
                let mut s = String::new();
                for (n, u) in units.iter() {
                    let (letter, dirs) = if u.enabled == "enabled" {
                        ("S", ["rc2.d", "rc3.d", "rc4.d", "rc5.d"])
                    } else {
                        ("K", ["rc2.d", "rc3.d", "rc4.d", "rc5.d"])
                    };
                    for d in dirs {
                        if letter == "S" {
                            s.push_str(&format!("/etc/{d}/S01{n}\n"));
                        }
                    }
                }
                s.push_str("/etc/rcS.d/S01procps\n");
                return Some(out(s, String::new(), 0));
            }
            let name = cmd
                .strip_prefix("'/etc/init.d/")?
                .strip_suffix("' status")?;
            Some(match self.unit(name) {
                Some(u) if u.active == "active" => {
                    out(format!("{name} is running.\n"), String::new(), 0)
                }
                Some(_) => out(
                    format!("{name} is not running ... failed!\n"),
                    String::new(),
                    3,
                ),
                None => out(
                    String::new(),
                    format!("sh: 1: /etc/init.d/{name}: not found\n"),
                    127,
                ),
            })
        }
    }

    impl Transport for Init {
        fn name(&self) -> String {
            "fake".into()
        }
        fn live(&self) -> bool {
            self.live
        }
        fn stat(&self, path: &str) -> io::Result<Option<Stat>> {
            let name = path.strip_prefix("/etc/init.d/").unwrap_or_default();
            Ok(self.unit(name).map(|_| Stat {
                kind: FileType::File,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 1,
            }))
        }
        fn read(&self, _: &str) -> io::Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn write(&self, _: &str, _: &[u8], _: &Attrs) -> io::Result<()> {
            Err(io::Error::other("services write no files"))
        }
        fn mkdir(&self, _: &str, _: &Attrs) -> io::Result<()> {
            Err(io::Error::other("services write no files"))
        }
        fn set_attrs(&self, _: &str, _: &Attrs) -> io::Result<()> {
            Err(io::Error::other("services write no files"))
        }
        fn remove(&self, _: &str) -> io::Result<()> {
            Err(io::Error::other("services write no files"))
        }
        fn run(&self, cmd: &str) -> io::Result<Output> {
            if let Some(o) = self.probe(cmd) {
                return Ok(o);
            }
            self.log.lock().unwrap().push(cmd.to_string());
            // `a; b` runs both, `a && b` stops at a failure: as sh does, for these commands.
            let mut last = Output::default();
            for part in cmd.split("; ") {
                for sub in part.split(" && ") {
                    last = self.simple(sub.trim_end_matches(" 2>/dev/null"));
                    if !last.success() {
                        break;
                    }
                }
            }
            Ok(last)
        }
        fn lock(&self, _: &str, _: Duration) -> io::Result<Box<dyn Any + Send>> {
            Ok(Box::new(()))
        }
    }

    fn facts(init: &str, live: bool) -> Facts {
        Facts {
            init: init.into(),
            live,
            ..debian_facts()
        }
    }

    fn svc(yaml: &str) -> Box<dyn Resource> {
        build_with("service", yaml, &facts("systemd", true)).unwrap()
    }

    /// Check, apply, check clean, apply again running nothing: the first check's changes.
    fn converge(res: &dyn Resource, t: &Init) -> Vec<Change> {
        let changes = diff(res, t).expect("diff");
        apply(res, t).expect("apply");
        assert_eq!(
            diff(res, t).expect("diff after apply"),
            [],
            "in sync after apply"
        );
        let n = t.commands().len();
        apply(res, t).expect("second apply");
        assert_eq!(t.commands().len(), n, "a second apply runs nothing");
        changes
    }

    fn change(what: &str, before: &str, after: &str) -> Change {
        Change::new(what, Some(before.into()), Some(after.into()))
    }

    fn err(init: &str, live: bool, yaml: &str) -> String {
        match build_with("service", yaml, &facts(init, live)) {
            Ok(_) => panic!("expected a build error for {yaml}"),
            Err(e) => {
                let loc = e.loc.expect("error has a location");
                let help = e.help.map(|h| format!(" (help: {h})")).unwrap_or_default();
                format!("{}:{}: {}{help}", loc.line, loc.col, e.message)
            }
        }
    }

    #[test]
    fn recorded_systemctl_answers_are_understood() {
        let seen = |unit: &str| -> std::result::Result<(Boot, Activity), String> {
            let (_, stdout, stderr) = RECORDED.iter().find(|r| r.0 == unit).unwrap();
            let res = svc(&format!("name: {unit}\nstate: running\n"));
            let answers = [Answer::Run(Output {
                status: 0,
                stdout: stdout.as_bytes().to_vec(),
                stderr: stderr.as_bytes().to_vec(),
            })];
            let probes = res.probes();
            let s = Service {
                name: unit.into(),
                unit: unit.into(),
                backend: Backend::Systemd { live: true },
                enabled: None,
                state: None,
            };
            let seen = s.observe(&Observed {
                answers: &answers,
                probes: &probes,
            })?;
            Ok((seen.boot, seen.activity.unwrap()))
        };
        let act = |running: bool, shown: &str| Activity {
            running,
            shown: shown.into(),
        };
        assert_eq!(
            seen("ssh.service").unwrap(),
            (Boot::Enabled, act(true, "running"))
        );
        assert_eq!(
            seen("dbus.service").unwrap(),
            (Boot::Fixed("static".into()), act(true, "running"))
        );
        assert_eq!(
            seen("sshd.service").unwrap(),
            (Boot::Fixed("alias".into()), act(true, "running"))
        );
        assert_eq!(
            seen("boom.service").unwrap(),
            (Boot::Fixed("static".into()), act(false, "failed"))
        );
        assert_eq!(
            seen("systemd-networkd.service").unwrap(),
            (Boot::Masked("masked".into()), act(false, "stopped"))
        );
        assert_eq!(
            seen("nope.service").unwrap(),
            (Boot::Missing, act(false, "stopped"))
        );
        assert_eq!(
            systemd_boot("x.service", "not-found", "").unwrap(),
            Boot::Missing
        );
        assert_eq!(
            systemd_boot("x.service", "enabled-runtime", "").unwrap(),
            Boot::Disabled("enabled-runtime".into())
        );
        assert_eq!(
            systemd_boot("x.service", "", "sh: 1: systemctl: not found").unwrap_err(),
            "cannot ask systemd about x.service: sh: 1: systemctl: not found"
        );
        assert_eq!(
            systemd_boot("x.service", "bad", "").unwrap_err(),
            "x.service has a unit file systemd cannot parse"
        );
        assert_eq!(
            systemd_activity("x.service", "", "System has not been booted with systemd as init system (PID 1). Can't operate.").unwrap_err(),
            "cannot ask systemd whether x.service runs: System has not been booted with systemd as init system (PID 1). Can't operate."
        );
        assert!(systemd_activity("x.service", "exploded", "").is_err());
    }

    #[test]
    fn garbage_answers_never_panic() {
        let res = svc("name: docker\nenabled: true\nstate: running\n");
        let probes = res.probes();
        for stdout in [
            &b""[..],
            b"enabled",
            b"active active\n",
            b"\xff\xfe\n",
            b"enabled enabled\nactive \n",
            b"enabled enabled\nenabled disabled\nactive active\nactive inactive\n",
        ] {
            let answers = [Answer::Run(Output {
                status: 0,
                stdout: stdout.to_vec(),
                stderr: Vec::new(),
            })];
            let _ = res.diff(&Observed {
                answers: &answers,
                probes: &probes,
            });
        }
        let failed = [Answer::Failed("connection lost".into())];
        assert!(res
            .diff(&Observed {
                answers: &failed,
                probes: &probes,
            })
            .unwrap_err()
            .ends_with("connection lost"));
    }

    #[test]
    fn names_become_units() {
        assert_eq!(systemd_unit("docker").as_deref(), Some("docker.service"));
        assert_eq!(
            systemd_unit("docker.service").as_deref(),
            Some("docker.service")
        );
        assert_eq!(
            systemd_unit("docker.socket").as_deref(),
            Some("docker.socket")
        );
        assert_eq!(
            systemd_unit("getty@tty1").as_deref(),
            Some("getty@tty1.service")
        );
        assert_eq!(
            systemd_unit("hwclock.sh").as_deref(),
            Some("hwclock.sh.service")
        );
        for bad in [
            "", "-x", "a b", "x;reboot", "../x", "a/b", ".service", "$(id)",
        ] {
            assert_eq!(systemd_unit(bad), None, "{bad}");
        }
        assert_eq!(initd_script("ssh.service").as_deref(), Some("ssh"));
        assert_eq!(initd_script("hwclock.sh").as_deref(), Some("hwclock.sh"));
        assert_eq!(initd_script("docker.socket"), None);
        assert_eq!(
            svc("name: docker\nenabled: true\n").service(),
            Some("docker")
        );
        assert_eq!(
            svc("name: docker.service\nenabled: true\n").service(),
            Some("docker")
        );
        assert_eq!(
            svc("name: docker.socket\nenabled: true\n").service(),
            Some("docker.socket")
        );
        assert_eq!(svc("name: docker\nenabled: true\n").target(), "docker");
    }

    #[test]
    fn build_errors_point_at_the_parameter() {
        assert_eq!(
            err("systemd", true, "name: docker\n"),
            "1:1: `service` needs `enabled` or `state`"
        );
        assert_eq!(
            err("systemd", true, "name: docker\nstate: started\n"),
            "2:8: `state` must be one of running, stopped, restarted, reloaded, found `started`"
        );
        assert_eq!(
            err("systemd", true, "name: 'x; reboot'\nenabled: true\n"),
            "1:8: `x; reboot` is not a service name such as docker or docker.socket"
        );
        assert_eq!(
            err("systemd", true, "name: docker\nenabled: yes\n"),
            "2:10: `enabled` of `service` must be true or false, found a string"
        );
        assert_eq!(
            err("systemd", true, "name: docker\nenable: true\n"),
            "2:1: unknown key `enable` for `service` (help: did you mean `enabled`?)"
        );
        assert_eq!(
            err("sysvinit", true, "name: docker.socket\nenabled: true\n"),
            "1:7: `docker.socket` is not a service name such as docker (without systemd only init.d scripts can be managed)"
        );
        assert_eq!(
            err("none", true, "name: docker\nenabled: true\n"),
            "1:1: `service` needs systemd or /etc/init.d on the target, and it has neither"
        );
        // Validation without a host has no init system: the parameters are still checked.
        assert!(build_with(
            "service",
            "name: docker\nstate: running\n",
            &facts("", true)
        )
        .is_ok());
    }

    #[test]
    fn an_offline_root_manages_only_enabled() {
        for state in ["running", "stopped", "restarted", "reloaded"] {
            assert_eq!(
                err("systemd", false, &format!("name: docker\nenabled: true\nstate: {state}\n")),
                format!("3:8: an offline root has no running services: only `enabled` can be managed there (help: run this task only on live hosts (`when: facts.live`), or drop `state`)")
            );
        }
        let t = Init::systemd(false, &[("docker.service", "disabled", "")]);
        let res = build_with(
            "service",
            "name: docker\nenabled: true\n",
            &facts("systemd", false),
        )
        .unwrap();
        assert_eq!(
            res.probes(),
            [Probe::Run(
                "printf 'enabled %s\\n' \"$(systemctl is-enabled 'docker.service' | head -n 1)\""
                    .into()
            )]
        );
        assert_eq!(converge(res.as_ref(), &t), [change("enabled", "no", "yes")]);
        assert_eq!(t.commands(), ["systemctl enable 'docker.service'"]);
    }

    #[test]
    fn enabled_and_running_converge() {
        let t = Init::systemd(true, &[("docker.service", "disabled", "inactive")]);
        let res = svc("name: docker\nenabled: true\nstate: running\n");
        assert_eq!(
            converge(res.as_ref(), &t),
            [
                change("enabled", "no", "yes"),
                change("state", "stopped", "running")
            ]
        );
        assert_eq!(
            t.commands(),
            [
                "systemctl enable 'docker.service'",
                "systemctl reset-failed 'docker.service' 2>/dev/null; systemctl start 'docker.service'",
            ]
        );
        let res = svc("name: docker\nenabled: false\nstate: stopped\n");
        assert_eq!(
            converge(res.as_ref(), &t),
            [
                change("enabled", "yes", "no"),
                change("state", "running", "stopped")
            ]
        );
        assert_eq!(
            t.commands()[2..],
            [
                "systemctl disable 'docker.service'",
                "systemctl stop 'docker.service'"
            ]
        );
    }

    #[test]
    fn a_failed_unit_at_its_start_limit_is_started() {
        let t = Init::systemd(true, &[("limited.service", "enabled", "failed")]);
        t.limit("limited.service");
        let res = svc("name: limited\nstate: running\n");
        assert_eq!(
            converge(res.as_ref(), &t),
            [change("state", "failed", "running")]
        );
        // The same unit, limited again: a restart goes through too.
        t.limit("limited.service");
        let restart = svc("name: limited\nstate: restarted\n");
        assert!(!restart.verifiable());
        assert_eq!(
            diff(restart.as_ref(), &t).unwrap(),
            [Change::new("restart", None, Some("limited.service".into()))]
        );
        apply(restart.as_ref(), &t).unwrap();
        assert_eq!(t.unit("limited.service").unwrap().active, "active");
        assert_eq!(
            t.commands().last().unwrap(),
            "systemctl reset-failed 'limited.service' 2>/dev/null; systemctl restart 'limited.service'"
        );
        // What it would be without reset-failed: refused.
        t.limit("limited.service");
        assert!(!t.simple("systemctl restart 'limited.service'").success());
    }

    #[test]
    fn restart_and_reload_always_run() {
        let t = Init::systemd(
            true,
            &[
                ("docker.service", "enabled", "active"),
                ("cron.service", "enabled", "inactive"),
            ],
        );
        for _ in 0..2 {
            let res = svc("name: docker\nstate: reloaded\n");
            assert_eq!(
                diff(res.as_ref(), &t).unwrap(),
                [Change::new("reload", None, Some("docker.service".into()))]
            );
            apply(res.as_ref(), &t).unwrap();
        }
        assert_eq!(t.commands(), ["systemctl reload 'docker.service'"; 2]);
        // Nothing runs: starting it reads the new configuration.
        let res = svc("name: cron\nstate: reloaded\n");
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [Change::new(
                "start (not running, nothing to reload)",
                None,
                Some("cron.service".into())
            )]
        );
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(t.unit("cron.service").unwrap().active, "active");
        // A restart handler and an `enabled` task on one unit ask the same probe: it runs once.
        assert_eq!(
            svc("name: docker\nstate: restarted\n").probes(),
            svc("name: docker.service\nenabled: true\n").probes()
        );
    }

    #[test]
    fn masked_static_and_missing_units() {
        let t = Init::systemd(
            true,
            &[
                ("systemd-networkd.service", "masked", "inactive"),
                ("dbus.service", "static", "active"),
            ],
        );
        assert_eq!(
            diff(svc("name: systemd-networkd\nenabled: true\n").as_ref(), &t).unwrap_err(),
            "systemd-networkd.service is masked: it cannot be enabled; unmask it first (`systemctl unmask systemd-networkd.service`)"
        );
        assert_eq!(
            diff(svc("name: systemd-networkd\nstate: running\n").as_ref(), &t).unwrap_err(),
            "systemd-networkd.service is masked: it cannot be started; unmask it first (`systemctl unmask systemd-networkd.service`)"
        );
        assert_eq!(
            diff(
                svc("name: systemd-networkd\nenabled: false\nstate: stopped\n").as_ref(),
                &t
            )
            .unwrap(),
            []
        );
        assert_eq!(
            diff(
                svc("name: dbus\nenabled: true\nstate: running\n").as_ref(),
                &t
            )
            .unwrap(),
            []
        );
        assert_eq!(
            diff(svc("name: dbus\nenabled: false\n").as_ref(), &t).unwrap_err(),
            "dbus.service is static: it cannot be disabled; it has no [Install] section and starts only when another unit needs it; mask it to keep it from starting"
        );
        // Not installed yet: drift (a package task may bring it); apply says what systemctl says.
        let res = svc("name: docker\nenabled: true\nstate: running\n");
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [
                change("enabled", "no (no such service yet)", "yes"),
                change("state", "stopped (no such service yet)", "running")
            ]
        );
        assert_eq!(
            apply(res.as_ref(), &t).unwrap_err(),
            "`systemctl enable 'docker.service'` exited with status 1: Failed to enable unit: Unit file docker.service does not exist."
        );
        assert_eq!(
            diff(
                svc("name: docker\nenabled: false\nstate: stopped\n").as_ref(),
                &t
            )
            .unwrap(),
            []
        );
    }

    #[test]
    fn initd_services_without_systemd() {
        let t = Init::initd(&[("dbus", false, false), ("ssh", true, true)]);
        let f = facts("sysvinit", true);
        let res = build_with("service", "name: dbus\nenabled: true\nstate: running\n", &f).unwrap();
        assert_eq!(
            res.probes(),
            [
                Probe::Stat("/etc/init.d/dbus".into()),
                Probe::Run(RC_LINKS.into()),
                Probe::Run("'/etc/init.d/dbus' status".into())
            ]
        );
        assert_eq!(
            converge(res.as_ref(), &t),
            [
                change("enabled", "no", "yes"),
                change("state", "stopped", "running")
            ]
        );
        let res = build_with(
            "service",
            "name: dbus\nenabled: false\nstate: stopped\n",
            &f,
        )
        .unwrap();
        assert_eq!(
            converge(res.as_ref(), &t),
            [
                change("enabled", "yes", "no"),
                change("state", "running", "stopped")
            ]
        );
        assert_eq!(
            t.commands(),
            [
                "update-rc.d 'dbus' defaults && update-rc.d 'dbus' enable",
                "service 'dbus' start",
                "update-rc.d 'dbus' disable",
                "service 'dbus' stop",
            ]
        );
        let ssh = build_with(
            "service",
            "name: ssh.service\nenabled: true\nstate: running\n",
            &f,
        )
        .unwrap();
        assert_eq!(diff(ssh.as_ref(), &t).unwrap(), []);
        let restart = build_with("service", "name: ssh\nstate: restarted\n", &f).unwrap();
        assert_eq!(whats(&diff(restart.as_ref(), &t).unwrap()), ["restart"]);
        apply(restart.as_ref(), &t).unwrap();
        assert_eq!(t.commands().last().unwrap(), "service 'ssh' restart");
        // No script: not enabled, not running; enabling it fails as update-rc.d does.
        let res = build_with("service", "name: docker\nenabled: true\n", &f).unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [change("enabled", "no (no such service yet)", "yes")]
        );
        assert!(apply(res.as_ref(), &t)
            .unwrap_err()
            .contains("docker: unrecognized service"));
    }

    #[test]
    fn initd_status_codes_and_links() {
        let out = |status| Output {
            status,
            stdout: Vec::new(),
            stderr: b"Usage: /etc/init.d/x {start|stop}".to_vec(),
        };
        assert!(initd_activity("x", &out(0)).unwrap().running);
        assert_eq!(initd_activity("x", &out(3)).unwrap().shown, "stopped");
        assert_eq!(initd_activity("x", &out(1)).unwrap().shown, "dead");
        assert_eq!(
            initd_activity("x", &out(4)).unwrap_err(),
            "cannot tell whether x runs: `/etc/init.d/x status` exited with status 4: Usage: /etc/init.d/x {start|stop}"
        );
        // Recorded in a lab host (kind a): dbus disabled (K links only), ssh enabled.
        let listing = "/etc/rc2.d/S01ssh\n/etc/rc2.d/S01sudo\n/etc/rc3.d/S01ssh\n/etc/rcS.d/S01hwclock.sh\n/etc/rcS.d/S01procps\n";
        assert!(rc_enabled("ssh", listing));
        assert!(rc_enabled("hwclock.sh", listing));
        assert!(!rc_enabled("dbus", listing));
        assert!(!rc_enabled("ss", listing));
        assert!(!rc_enabled(
            "ssh",
            "/etc/rc0.d/S01ssh\n/etc/rc2.d/K01ssh\nS\n/\n"
        ));
    }
}
