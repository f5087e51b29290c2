//! `docker_daemon`: the Docker daemon's settings in daemon.json, checked before they are written
//! and brought into the running daemon (reload or restart), and compared with what the running
//! daemon really does.
//!
//! - The file is edited key by key, like `json`: keys the task does not manage keep their values
//!   and order, and a document that already holds the values is never rewritten.
//! - Before the file is replaced, the new document is checked: by `dockerd --validate` with the
//!   flags the unit passes where the engine has it (Engine 23 and later), otherwise by a list of
//!   known keys and a check for keys the unit's flags already set (dockerd refuses to start when
//!   an option is given both ways, whatever the values).
//! - On a running daemon, keys dockerd reloads on SIGHUP are reloaded; any other key restarts it.
//!   A restart that fails puts the old file back and restarts again, so the host keeps a daemon.
//! - Check mode also reads the running daemon (`docker info`, the docker0 iptables rules): a file
//!   that says one thing while the daemon does another is drift (`effective icc: true → false`).

use serde_json::{Map, Value as J};

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::json::{merge, parse};
use crate::resources::line::content_change;
use crate::transport::script::quote;
use crate::transport::{Attrs, FileType, Output, Probe, Stat, Transport};

const DEFAULT_PATH: &str = "/etc/docker/daemon.json";
const UNIT: &str = "docker.service";
/// Where the Debian/Ubuntu and upstream packages put the unit (read only for an offline root).
const UNIT_FILES: [&str; 2] = [
    "/etc/systemd/system/docker.service",
    "/lib/systemd/system/docker.service",
];

/// Succeeds only while a dockerd process runs: the pid file alone may be stale. Effective-state
/// commands are chained after it so they never run against a stopped daemon, and never start
/// one (with docker.socket, talking to the socket would start dockerd).
const RUNNING: &str =
    "p=$(cat /var/run/docker.pid 2>/dev/null) && [ -n \"$p\" ] && [ -r /proc/\"$p\"/cmdline ]";

/// The keys daemon.json takes (dockerd's reference, Engine 20.10 to 27), for engines without
/// `--validate`. A key missing here is refused unless `allow_unknown_keys` is set.
const KNOWN_KEYS: &[&str] = &[
    "allow-nondistributable-artifacts",
    "api-cors-header",
    "authorization-plugins",
    "bip",
    "bip6",
    "bridge",
    "builder",
    "cdi-spec-dirs",
    "cgroup-parent",
    "cluster-advertise",
    "cluster-store",
    "cluster-store-opts",
    "containerd",
    "containerd-namespace",
    "containerd-plugins-namespace",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "cri-containerd",
    "data-root",
    "debug",
    "default-address-pools",
    "default-cgroupns-mode",
    "default-gateway",
    "default-gateway-v6",
    "default-ipc-mode",
    "default-network-opts",
    "default-runtime",
    "default-shm-size",
    "default-ulimits",
    "dns",
    "dns-opts",
    "dns-search",
    "exec-opts",
    "exec-root",
    "experimental",
    "features",
    "fixed-cidr",
    "fixed-cidr-v6",
    "group",
    "host-gateway-ip",
    "hosts",
    "http-proxy",
    "https-proxy",
    "icc",
    "init",
    "init-path",
    "insecure-registries",
    "ip",
    "ip-forward",
    "ip-masq",
    "ip6tables",
    "iptables",
    "ipv6",
    "labels",
    "live-restore",
    "log-driver",
    "log-format",
    "log-level",
    "log-opts",
    "max-concurrent-downloads",
    "max-concurrent-uploads",
    "max-download-attempts",
    "metrics-addr",
    "mtu",
    "network-control-plane-mtu",
    "no-new-privileges",
    "no-proxy",
    "node-generic-resources",
    "oom-score-adjust",
    "pidfile",
    "proxies",
    "raw-logs",
    "registry-mirrors",
    "rootless",
    "runtimes",
    "seccomp-profile",
    "selinux-enabled",
    "shutdown-timeout",
    "storage-driver",
    "storage-opts",
    "swarm-default-advertise-addr",
    "tls",
    "tlscacert",
    "tlscert",
    "tlskey",
    "tlsverify",
    "userland-proxy",
    "userland-proxy-path",
    "userns-remap",
];

/// Keys a running dockerd takes on SIGHUP; any other key needs a restart.
/// The API on TCP is root on the host for whoever reaches it: only with client certificates
/// verified (CIS Docker 2.7). Says why the settings fall short, if they do.
fn tcp_without_tls(settings: &Map<String, J>) -> Option<String> {
    let hosts = settings.get("hosts")?.as_array()?;
    let tcp: Vec<&str> = hosts
        .iter()
        .filter_map(J::as_str)
        .filter(|h| h.starts_with("tcp://"))
        .collect();
    if tcp.is_empty() {
        return None;
    }
    if settings.get("tlsverify") != Some(&J::Bool(true)) {
        return Some(format!("`hosts` opens the API on {} without `tlsverify: true`: anyone who reaches it controls the host", tcp.join(", ")));
    }
    let missing: Vec<&str> = ["tlscacert", "tlscert", "tlskey"]
        .into_iter()
        .filter(|k| !settings.contains_key(*k))
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!("`tlsverify: true` needs {} in `settings` (the files must not be the defaults in root's home)", missing.join(", ")))
    }
}

fn reloadable(key: &str) -> bool {
    matches!(
        key,
        "live-restore"
            | "authorization-plugins"
            | "insecure-registries"
            | "debug"
            | "labels"
            | "registry-mirrors"
            | "runtimes"
            | "default-runtime"
            | "shutdown-timeout"
            | "features"
            | "allow-nondistributable-artifacts"
    ) || key.starts_with("max-concurrent-")
}

/// The daemon.json key a dockerd flag sets (`-H` → `hosts`, `--label` → `labels`).
fn flag_key(flag: &str) -> Option<&'static str> {
    let key = match flag {
        "H" | "host" => "hosts",
        "l" => "log-level",
        "D" => "debug",
        "G" => "group",
        "s" => "storage-driver",
        "b" => "bridge",
        "p" => "pidfile",
        "g" | "graph" => "data-root",
        "label" => "labels",
        "insecure-registry" => "insecure-registries",
        "registry-mirror" => "registry-mirrors",
        "authorization-plugin" => "authorization-plugins",
        "log-opt" => "log-opts",
        "storage-opt" => "storage-opts",
        "default-ulimit" => "default-ulimits",
        "dns-opt" => "dns-opts",
        "exec-opt" => "exec-opts",
        "add-runtime" => "runtimes",
        "cluster-store-opt" => "cluster-store-opts",
        "default-address-pool" => "default-address-pools",
        "node-generic-resource" => "node-generic-resources",
        other => return KNOWN_KEYS.iter().find(|k| **k == other).copied(),
    };
    Some(key)
}

pub struct DockerDaemon {
    path: String,
    /// Merged into the document: objects key by key, anything else replaced whole.
    settings: Map<String, J>,
    restart: bool,
    allow_unknown_keys: bool,
    /// A running system: the daemon can be asked and restarted.
    live: bool,
    systemd: bool,
    /// Whether `dockerd --validate` exists, from the engine's version; `None`: ask dockerd.
    validate: Option<bool>,
}

/// What the host showed, read once from the answers.
struct Seen<'o> {
    stat: Option<&'o Stat>,
    old: &'o [u8],
    parent_exists: bool,
    /// The flags the unit starts dockerd with (the binary and `$VARIABLES` left out).
    unit_flags: Option<Vec<String>>,
    /// The running dockerd's command line; `None` when no dockerd runs (or not live).
    running: Option<Vec<String>>,
    validate: bool,
    info: Option<Map<String, J>>,
    iptables: Option<String>,
}

/// One way the running daemon differs from the wanted settings.
struct Effective {
    key: &'static str,
    now: String,
    want: String,
    why: String,
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan {
    new_doc: Map<String, J>,
    keys: Vec<Change>,
    /// Top-level keys whose value changes in the file.
    changed: Vec<String>,
    new_text: Option<String>,
    effective: Vec<Effective>,
}

impl DockerDaemon {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let path = p.opt_path("path")?.unwrap_or_else(|| DEFAULT_PATH.into());
        let restart = p.opt_bool("restart")?.unwrap_or(true);
        let allow_unknown_keys = p.opt_bool("allow_unknown_keys")?.unwrap_or(false);
        let Some(node) = p.node("settings") else {
            return Err(Error::at(
                p.loc(),
                "`docker_daemon` needs `settings` (a mapping of daemon.json keys to values)",
            ));
        };
        let settings = match node.to_json() {
            J::Object(m) if !m.is_empty() => m,
            _ => {
                return Err(p.error(
                    node,
                    format!(
                        "`settings` of `docker_daemon` must be a mapping of daemon.json keys to values, found {}",
                        node.type_name()
                    ),
                ))
            }
        };
        if !allow_unknown_keys {
            if let Some(k) = settings.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
                let e = p.error(
                    node,
                    format!("`{k}` is not a daemon.json key dockerd knows"),
                );
                return Err(
                    match crate::error::suggest(k, KNOWN_KEYS.iter().copied()) {
                        Some(s) => e.with_help(format!("did you mean `{s}`? (set `allow_unknown_keys: true` for a key newer than this list)")),
                        None => e.with_help("set `allow_unknown_keys: true` for a key newer than SLICE's list"),
                    },
                );
            }
        }
        if let Some(why) = tcp_without_tls(&settings) {
            return Err(p.error(node, why).with_help(
                "set `tlsverify: true` with `tlscacert`, `tlscert` and `tlskey`, or listen on the unix socket only",
            ));
        }
        let d = DockerDaemon {
            path,
            settings,
            restart,
            allow_unknown_keys,
            live: ctx.live,
            systemd: ctx.facts.init == "systemd",
            validate: major(&ctx.facts.docker.version).map(|m| m >= 23),
        };
        p.finish()?;
        Ok(Box::new(d))
    }

    fn parent(&self) -> String {
        match self.path.rsplit_once('/') {
            Some(("", _)) | None => "/".into(),
            Some((dir, _)) => dir.into(),
        }
    }

    fn unit_probes(&self) -> Vec<Probe> {
        if self.live && self.systemd {
            vec![Probe::Run(format!(
                "systemctl cat {UNIT} 2>/dev/null; true"
            ))]
        } else {
            UNIT_FILES
                .iter()
                .map(|f| Probe::Read((*f).into()))
                .collect()
        }
    }

    fn cmdline_probe() -> Probe {
        Probe::Run(format!(
            "{RUNNING} && tr '\\0' '\\n' < /proc/\"$p\"/cmdline"
        ))
    }

    fn validate_probe() -> Probe {
        Probe::Run(
            "command -v dockerd >/dev/null && dockerd --help 2>&1 | grep -q -e '--validate' && echo yes; true"
                .into(),
        )
    }

    /// The read-only probes of the running daemon's effective state.
    fn effective_probes() -> Vec<Probe> {
        vec![
            Probe::Run(format!(
                "{RUNNING} && docker info --format '{{{{json .}}}}'"
            )),
            Probe::Run(format!("{RUNNING} && iptables-save -t filter")),
        ]
    }

    fn seen<'o>(&self, obs: &'o Observed) -> Result<Seen<'o>, String> {
        let at = |p: &Probe| obs.probes.iter().position(|q| q == p);
        let stat = obs.stat(0)?;
        if let Some(s) = stat.filter(|s| s.kind != FileType::File) {
            return Err(format!(
                "{} is {}, not a regular file; leaving it alone",
                self.path,
                s.kind.describe()
            ));
        }
        let old = match stat {
            Some(_) => obs.read(1)?.unwrap_or_default(),
            None => &[],
        };
        let parent_exists = obs.stat(2)?.is_some();
        let mut unit_flags = None;
        for p in self.unit_probes() {
            let Some(i) = at(&p) else { continue };
            let text = match p {
                Probe::Run(_) => Some(String::from_utf8_lossy(&obs.run(i)?.stdout).into_owned()),
                _ => obs
                    .read(i)?
                    .map(|d| String::from_utf8_lossy(d).into_owned()),
            };
            if let Some(flags) = text.as_deref().and_then(exec_start_flags) {
                unit_flags = Some(flags);
                break;
            }
        }
        let mut running = None;
        let mut validate = self.validate.unwrap_or(false);
        let mut info = None;
        let mut iptables = None;
        if self.live {
            if let Some(i) = at(&Self::cmdline_probe()) {
                running = dockerd_argv(obs.run(i)?);
            }
            if let Some(i) = at(&Self::validate_probe()) {
                validate = String::from_utf8_lossy(&obs.run(i)?.stdout).trim() == "yes";
            }
            let eff = Self::effective_probes();
            if running.is_some() {
                if let Some(i) = at(&eff[0]) {
                    info = parse_info(obs.run(i)?);
                }
                if let Some(i) = at(&eff[1]) {
                    let o = obs.run(i)?;
                    iptables = o
                        .success()
                        .then(|| String::from_utf8_lossy(&o.stdout).into_owned());
                }
            }
        }
        Ok(Seen {
            stat,
            old,
            parent_exists,
            unit_flags,
            running,
            validate,
            info,
            iptables,
        })
    }

    fn plan(&self, seen: &Seen) -> Result<Plan, String> {
        let old_doc = parse(&self.path, seen.old)?;
        let mut new_doc = old_doc.clone();
        let mut keys = Vec::new();
        merge(&mut new_doc, &self.settings, &mut Vec::new(), &mut keys);
        let changed = self
            .settings
            .keys()
            .filter(|k| old_doc.get(*k) != new_doc.get(*k))
            .cloned()
            .collect();
        let new_text = if seen.stat.is_none() || new_doc != old_doc {
            let text = serde_json::to_string_pretty(&J::Object(new_doc.clone()))
                .map_err(|e| format!("{}: {e}", self.path))?;
            Some(text + "\n")
        } else {
            None
        };
        // With `restart: false` only the file is managed: the daemon is not expected to follow.
        let effective = match &seen.running {
            Some(_) if self.restart => effective(&self.settings, seen),
            _ => Vec::new(),
        };
        Ok(Plan {
            new_doc,
            keys,
            changed,
            new_text,
            effective,
        })
    }

    /// The checks that need no dockerd: keys the unit's flags also set always, unknown keys when
    /// dockerd cannot validate the file itself.
    fn static_checks(&self, doc: &Map<String, J>, seen: &Seen) -> Result<(), String> {
        // The unit says what the next start passes; the running command line counts where the
        // unit could not be read.
        let (flags, from_unit): (Vec<String>, bool) = match (&seen.unit_flags, &seen.running) {
            (Some(f), _) => (f.clone(), true),
            (None, Some(argv)) => (argv.iter().skip(1).cloned().collect(), false),
            (None, None) => (Vec::new(), false),
        };
        let clashes: Vec<(String, &str)> = flag_keys(&flags)
            .into_iter()
            .filter(|(_, k)| doc.contains_key(*k))
            .collect();
        if let Some((flag, key)) = clashes.first() {
            let source = if from_unit {
                format!("the {UNIT} unit starts dockerd with `{flag}`")
            } else {
                format!("the running dockerd was started with `{flag}`")
            };
            return Err(format!(
                "`{key}` in {} clashes with a flag: {source}, and dockerd refuses to start when an option is set both ways \
                 (whatever the values); leaving {} alone. Remove the flag with a drop-in \
                 (/etc/systemd/system/{UNIT}.d/*.conf: `ExecStart=` then `ExecStart=/usr/sbin/dockerd` without it), \
                 or do not set `{key}`",
                self.path, self.path
            ));
        }
        if !seen.validate && !self.allow_unknown_keys {
            if let Some(k) = doc.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
                return Err(format!(
                    "{} would hold `{k}`, which is not a daemon.json key dockerd knows; this engine has no \
                     `dockerd --validate` to ask, so SLICE refuses it (dockerd would not start). Remove the key, \
                     or set `allow_unknown_keys: true`",
                    self.path
                ));
            }
        }
        Ok(())
    }

    /// `dockerd --validate` of the new text, with the flags the unit passes.
    fn validate(&self, text: &str, seen: &Seen, t: &dyn Transport) -> Result<(), String> {
        let mut flags = Vec::new();
        let mut it = seen.unit_flags.iter().flatten();
        while let Some(f) = it.next() {
            // The file under test replaces the unit's own --config-file.
            if f == "--config-file" {
                it.next();
            } else if !f.starts_with("--config-file=") {
                flags.push(quote(f));
            }
        }
        let cmd = format!(
            "f=$(mktemp) || exit 1; printf '%s' {} > \"$f\"; dockerd --validate --config-file \"$f\" {} 2>&1; r=$?; rm -f \"$f\"; exit $r",
            quote(text),
            flags.join(" ")
        );
        let out = t
            .run(&cmd)
            .map_err(|e| format!("cannot run dockerd --validate: {e}"))?;
        if out.success() {
            Ok(())
        } else {
            Err(format!(
                "dockerd --validate refused the new {}: {}; leaving the file as it is",
                self.path,
                out.message()
            ))
        }
    }

    fn service_cmd(&self, action: &str) -> String {
        match (self.systemd, action) {
            // A daemon that failed, or restarted often lately, is refused by its start limit:
            // reset-failed clears both.
            (true, "restart") => {
                format!("systemctl reset-failed {UNIT} 2>/dev/null; systemctl restart {UNIT}")
            }
            (true, _) => format!("systemctl {action} {UNIT}"),
            (false, "reload") => format!("{RUNNING} && kill -HUP \"$p\""),
            (false, _) => format!("service docker {action}"),
        }
    }

    /// The restart failed: the old file back, the daemon started again, and why it failed.
    fn roll_back(&self, seen: &Seen, t: &dyn Transport, failed: &Output) -> String {
        let reason = t
            .run(&format!(
                "journalctl -u {UNIT} -n 40 --no-pager -o cat 2>/dev/null | grep -iE 'unable to configure|failed to start|error' | tail -n 2"
            ))
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let reason = if reason.is_empty() {
            failed.message()
        } else {
            reason.replace('\n', "; ")
        };
        let back = match seen.stat {
            Some(_) => t.write(&self.path, seen.old, &Attrs::default()),
            None => t.remove(&self.path),
        };
        let state = match back {
            Err(e) => format!(
                "could not put the old {} back ({e}); docker is down",
                self.path
            ),
            Ok(()) => match t.run(&self.service_cmd("restart")) {
                Ok(o) if o.success() => {
                    format!("the old {} is back and docker runs with it", self.path)
                }
                Ok(o) => format!(
                    "the old {} is back, but docker did not start with it either: {}",
                    self.path,
                    o.message()
                ),
                Err(e) => format!("the old {} is back; cannot restart docker: {e}", self.path),
            },
        };
        format!(
            "docker did not restart with the new {}: {reason}; {state}",
            self.path
        )
    }
}

/// The major version of `20.10.24+dfsg1` or `26.1.5`.
fn major(version: &str) -> Option<u32> {
    version.split('.').next()?.trim().parse().ok()
}

/// The flags of the unit's (last) ExecStart, without the binary and unexpanded `$VARIABLES`.
fn exec_start_flags(unit: &str) -> Option<Vec<String>> {
    let joined = unit.replace("\\\n", " ");
    let mut last = None;
    for line in joined.lines() {
        if let Some(v) = line.trim().strip_prefix("ExecStart=") {
            // An empty ExecStart= in a drop-in clears the earlier ones.
            last = Some(v.trim().to_string()).filter(|v| !v.is_empty());
        }
    }
    let cmd = last?;
    let cmd = cmd.trim_start_matches(['-', '@', '+', '!', ':']);
    Some(
        cmd.split_whitespace()
            .skip(1)
            .filter(|w| !w.starts_with('$'))
            .map(String::from)
            .collect(),
    )
}

/// The argv of a running dockerd from `/proc/PID/cmdline` (one argument a line).
fn dockerd_argv(out: &Output) -> Option<Vec<String>> {
    if !out.success() {
        return None;
    }
    let argv: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    // A stale pid file may name another process now.
    argv.first()
        .is_some_and(|a| a.ends_with("dockerd"))
        .then_some(argv)
}

/// The daemon.json keys set by flags, with the flag as written.
fn flag_keys(flags: &[String]) -> Vec<(String, &'static str)> {
    flags
        .iter()
        .filter_map(|f| {
            let name = if let Some(long) = f.strip_prefix("--") {
                long.split('=').next().unwrap_or_default()
            } else if let Some(short) = f.strip_prefix('-') {
                short.get(..1).unwrap_or_default()
            } else {
                return None;
            };
            flag_key(name).map(|k| (f.clone(), k))
        })
        .collect()
}

fn parse_info(out: &Output) -> Option<Map<String, J>> {
    if !out.success() {
        return None;
    }
    match serde_json::from_slice(&out.stdout) {
        Ok(J::Object(m)) => Some(m),
        _ => None,
    }
}

/// Whether the docker0 bridge lets containers talk to each other, from `iptables-save`: the
/// first ACCEPT or DROP rule from docker0 to docker0. `None`: no such rule (no bridge, or
/// `iptables: false`), so nothing can be said.
fn bridge_icc(iptables: &str) -> Option<bool> {
    iptables.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        // `! -o docker0` (traffic leaving the bridge) is not traffic between its containers.
        let has = |a: &str, b: &str| {
            (0..w.len().saturating_sub(1))
                .any(|i| w[i] == a && w[i + 1] == b && (i == 0 || w[i - 1] != "!"))
        };
        if !(has("-i", "docker0") && has("-o", "docker0")) {
            return None;
        }
        if has("-j", "ACCEPT") {
            Some(true)
        } else if has("-j", "DROP") {
            Some(false)
        } else {
            None
        }
    })
}

/// The settings the running daemon does not follow, as far as it shows them.
fn effective(settings: &Map<String, J>, seen: &Seen) -> Vec<Effective> {
    let mut out = Vec::new();
    let info = seen.info.as_ref();
    let live_restore = info
        .and_then(|i| i.get("LiveRestoreEnabled"))
        .and_then(J::as_bool)
        .unwrap_or(false);
    let containers = info
        .and_then(|i| i.get("ContainersRunning"))
        .and_then(J::as_u64)
        .unwrap_or(0);
    if let (Some(J::Bool(want)), Some(now)) = (
        settings.get("icc"),
        seen.iptables.as_deref().and_then(bridge_icc),
    ) {
        if *want != now {
            let (rule, does) = if now {
                ("ACCEPT", "still accepts")
            } else {
                ("DROP", "still drops")
            };
            let mut why = format!(
                "icc: {want} in daemon.json, but the docker0 bridge {does} container-to-container traffic ({rule} rule on docker0)"
            );
            if live_restore && containers > 0 {
                why.push_str(&format!(
                    "\nlive-restore is on and {containers} container(s) run: dockerd keeps the bridge as it was while they run. \
                     Stop the containers and restart docker, or restart it with live-restore off"
                ));
            } else {
                why.push_str("\nrestart docker to apply it");
            }
            out.push(Effective {
                key: "icc",
                now: now.to_string(),
                want: want.to_string(),
                why,
            });
        }
    }
    if let (Some(J::Bool(want)), Some(now)) = (
        settings.get("live-restore"),
        info.and_then(|i| i.get("LiveRestoreEnabled"))
            .and_then(J::as_bool),
    ) {
        if *want != now {
            out.push(Effective {
                key: "live-restore",
                now: now.to_string(),
                want: want.to_string(),
                why: format!("live-restore: {want} in daemon.json, but docker info says LiveRestoreEnabled: {now}\nreload docker to apply it"),
            });
        }
    }
    if let (Some(J::String(want)), Some(now)) = (
        settings.get("log-driver"),
        info.and_then(|i| i.get("LoggingDriver"))
            .and_then(J::as_str),
    ) {
        if want != now {
            out.push(Effective {
                key: "log-driver",
                now: now.to_string(),
                want: want.clone(),
                why: format!("log-driver: {want} in daemon.json, but docker info says LoggingDriver: {now}\nrestart docker to apply it"),
            });
        }
    }
    if let (Some(J::String(want)), Some(opts)) = (
        settings.get("userns-remap"),
        info.and_then(|i| i.get("SecurityOptions"))
            .and_then(J::as_array),
    ) {
        let now = opts.iter().any(|o| o.as_str() == Some("name=userns"));
        if now == want.is_empty() {
            out.push(Effective {
                key: "userns-remap",
                now: if now { "on" } else { "off" }.into(),
                want: if want.is_empty() { "off" } else { "on" }.into(),
                why: format!("userns-remap: \"{want}\" in daemon.json, but docker info's SecurityOptions {} name=userns\nrestart docker to apply it", if now { "has" } else { "lacks" }),
            });
        }
    }
    out
}

impl Resource for DockerDaemon {
    fn target(&self) -> String {
        self.path.clone()
    }

    fn paths(&self) -> Vec<&str> {
        vec![&self.path]
    }

    fn service(&self) -> Option<&str> {
        Some("docker")
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v = vec![
            Probe::Stat(self.path.clone()),
            Probe::Read(self.path.clone()),
            Probe::Stat(self.parent()),
        ];
        v.extend(self.unit_probes());
        if self.live {
            v.push(Self::cmdline_probe());
            if self.validate.is_none() {
                v.push(Self::validate_probe());
            }
            v.extend(Self::effective_probes());
        }
        v
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        let seen = self.seen(obs)?;
        let plan = self.plan(&seen)?;
        let mut out = plan.keys;
        if let Some(new) = &plan.new_text {
            self.static_checks(&plan.new_doc, &seen)?;
            out.push(content_change(&self.path, seen.old, new.as_bytes()));
        }
        for e in plan.effective {
            out.push(
                Change::new(format!("effective {}", e.key), Some(e.now), Some(e.want))
                    .with_diff(Some(e.why + "\n")),
            );
        }
        Ok(out)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let seen = self.seen(obs)?;
        let plan = self.plan(&seen)?;
        if let Some(new) = &plan.new_text {
            self.static_checks(&plan.new_doc, &seen)?;
            if seen.validate {
                self.validate(new, &seen, t)?;
            }
            if !seen.parent_exists {
                t.mkdir(
                    &self.parent(),
                    &Attrs {
                        mode: Some(0o755),
                        ..Attrs::default()
                    },
                )
                .map_err(|e| format!("{}: {e}", self.parent()))?;
            }
            let attrs = Attrs {
                mode: seen.stat.is_none().then_some(0o644),
                ..Attrs::default()
            };
            t.write(&self.path, new.as_bytes(), &attrs)
                .map_err(|e| format!("{}: {e}", self.path))?;
        }
        if seen.running.is_none() || !self.restart {
            return Ok(());
        }
        // Keys whose value changed in the file or that the daemon does not follow yet.
        let mut keys: Vec<&str> = plan.changed.iter().map(String::as_str).collect();
        keys.extend(plan.effective.iter().map(|e| e.key));
        if keys.is_empty() {
            return Ok(());
        }
        let stuck = plan
            .effective
            .iter()
            .find(|e| e.why.contains("live-restore is on"));
        if plan.new_text.is_none() && keys.iter().all(|k| *k == "icc") {
            if let Some(e) = stuck {
                // Restarting again changes nothing while live-restore keeps the bridge.
                return Err(e.why.replace('\n', "; "));
            }
        }
        let action = if keys.iter().all(|k| reloadable(k)) {
            "reload"
        } else {
            "restart"
        };
        let out = t
            .run(&self.service_cmd(action))
            .map_err(|e| format!("cannot {action} docker: {e}"))?;
        if !out.success() {
            if action == "restart" && plan.new_text.is_some() {
                return Err(self.roll_back(&seen, t, &out));
            }
            return Err(format!("docker did not {action}: {}", out.message()));
        }
        // A restart that leaves containers on the old bridge is not the change asked for.
        if keys.contains(&"icc") {
            let probes = Self::effective_probes();
            let answers = t.observe(&probes);
            let after = Observed {
                answers: &answers,
                probes: &probes,
            };
            let iptables = after
                .run(1)
                .ok()
                .filter(|o| o.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            let now = Seen {
                info: after.run(0).ok().and_then(parse_info),
                iptables,
                ..seen
            };
            if let Some(e) = effective(&self.settings, &now)
                .into_iter()
                .find(|e| e.key == "icc")
            {
                return Err(format!(
                    "{} changed and docker restarted, but {}",
                    self.path,
                    e.why.replace('\n', "; ")
                ));
            }
        }
        Ok(())
    }

    fn note(&self, obs: &Observed) -> Option<String> {
        let seen = self.seen(obs).ok()?;
        if !self.live {
            Some("offline root: only the file was written; dockerd reads it when it starts".into())
        } else if seen.running.is_none() {
            Some("dockerd is not running: only the file was written; it takes effect when docker starts".into())
        } else if !self.restart {
            Some("restart: false — the running daemon keeps its old settings until docker is restarted".into())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_tcp_listener_needs_verified_client_certificates() {
        let err = |yaml: &str| crate::resources::testing::build_err("docker_daemon", yaml);
        assert_eq!(
            err("settings:\n  hosts: [\"unix:///var/run/docker.sock\", \"tcp://0.0.0.0:2376\"]\n"),
            "2:3: `hosts` opens the API on tcp://0.0.0.0:2376 without `tlsverify: true`: anyone who reaches it controls the host"
        );
        assert_eq!(
            err("settings:\n  hosts: [\"tcp://10.0.0.1:2376\"]\n  tlsverify: true\n  tlscert: /etc/docker/tls/cert.pem\n"),
            "2:3: `tlsverify: true` needs tlscacert, tlskey in `settings` (the files must not be the defaults in root's home)"
        );
        let ok = "settings:\n  hosts: [\"tcp://10.0.0.1:2376\"]\n  tlsverify: true\n  tlscacert: /etc/docker/tls/ca.pem\n  tlscert: /etc/docker/tls/cert.pem\n  tlskey: /etc/docker/tls/key.pem\n";
        assert!(crate::resources::testing::build("docker_daemon", ok, false).is_ok());
    }
    use std::fs;
    use std::path::Path;

    use super::{bridge_icc, exec_start_flags, flag_keys};
    use crate::facts::{Docker, Facts};
    use crate::resource::Resource;
    use crate::resources::apparmor::fake::{output, FakeHost};
    use crate::resources::testing::{apply, build_with, debian_facts, diff, whats};
    use crate::transport::Output;

    const FILE: &str = "etc/docker/daemon.json";

    /// `iptables-save -t filter` of Docker 20.10 with icc on (recorded in a lab host).
    const IPT_ICC_TRUE: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        :DOCKER - [0:0]\n:DOCKER-ISOLATION-STAGE-1 - [0:0]\n:DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n\
        -A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
        -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A FORWARD -o docker0 -j DOCKER\n\
        -A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n-A FORWARD -i docker0 -o docker0 -j ACCEPT\n\
        -A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2\n\
        -A DOCKER-ISOLATION-STAGE-1 -j RETURN\n-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP\n\
        -A DOCKER-ISOLATION-STAGE-2 -j RETURN\n-A DOCKER-USER -j RETURN\nCOMMIT\n";

    fn ipt_icc_false() -> String {
        IPT_ICC_TRUE.replace(
            "-A FORWARD -i docker0 -o docker0 -j ACCEPT",
            "-A FORWARD -i docker0 -o docker0 -j DROP",
        )
    }

    /// `docker info --format '{{json .}}'`, trimmed to the fields SLICE reads.
    fn info(live_restore: bool, running: u32) -> String {
        format!(
            r#"{{"ID":"X4QK","Containers":{running},"ContainersRunning":{running},"Driver":"overlay2","LoggingDriver":"json-file","LiveRestoreEnabled":{live_restore},"SecurityOptions":["name=apparmor","name=seccomp,profile=default","name=cgroupns"],"ServerVersion":"20.10.24+dfsg1"}}"#
        )
    }

    const UNIT_TEXT: &str = "# /lib/systemd/system/docker.service\n[Service]\nType=notify\nEnvironmentFile=-/etc/default/docker\n\
        ExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS\nExecReload=/bin/kill -s HUP $MAINPID\n";

    /// What the fake dockerd host answers.
    #[derive(Clone)]
    struct Daemon {
        running: bool,
        unit: &'static str,
        info: String,
        iptables: String,
        validate: Output,
    }

    impl Default for Daemon {
        fn default() -> Daemon {
            Daemon {
                running: true,
                unit: UNIT_TEXT,
                info: info(false, 0),
                iptables: IPT_ICC_TRUE.into(),
                validate: output(0, "configuration OK\n", ""),
            }
        }
    }

    /// A host whose dockerd refuses to restart with a file holding `bogus` (as 20.10 does with
    /// an unknown key), and answers the rest from `d`.
    fn host(dir: &Path, d: Daemon) -> FakeHost {
        FakeHost::new(dir, move |cmd, root| {
            let file = fs::read_to_string(root.join(FILE)).unwrap_or_default();
            if cmd.contains("systemctl cat") {
                output(0, d.unit, "")
            } else if !d.running && cmd.contains("/cmdline") {
                // Every effective-state probe is guarded by the running check.
                output(1, "", "")
            } else if cmd.contains("docker info") {
                output(0, &d.info, "")
            } else if cmd.contains("iptables-save") {
                output(0, &d.iptables, "")
            } else if cmd.contains("/cmdline") {
                output(0, "/usr/sbin/dockerd\n-H\nfd://\n", "")
            } else if cmd.contains("dockerd --validate") {
                d.validate.clone()
            } else if cmd.contains("systemctl restart") && file.contains("bogus") {
                output(1, "", "Job for docker.service failed because the control process exited with error code.\n")
            } else if cmd.contains("journalctl") {
                output(0, "unable to configure the Docker daemon with file /etc/docker/daemon.json: the following directives don't match any configuration option: bogus\n", "")
            } else {
                output(0, "", "")
            }
        })
    }

    fn facts(version: &str) -> Facts {
        Facts {
            docker: Docker {
                installed: true,
                running: true,
                version: version.into(),
            },
            ..debian_facts()
        }
    }

    fn root(content: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/docker")).unwrap();
        if let Some(c) = content {
            fs::write(dir.path().join(FILE), c).unwrap();
        }
        dir
    }

    fn res(yaml: &str, version: &str) -> Box<dyn Resource> {
        build_with("docker_daemon", yaml, &facts(version)).unwrap()
    }

    fn changing(h: &FakeHost) -> Vec<String> {
        h.commands()
            .into_iter()
            .filter(|c| {
                c.contains("systemctl restart")
                    || c.contains("systemctl reload")
                    || c.contains("--validate")
            })
            .collect()
    }

    fn build_err(yaml: &str) -> String {
        match build_with("docker_daemon", yaml, &facts("20.10.24+dfsg1")) {
            Ok(_) => panic!("expected a build error"),
            Err(e) => format!(
                "{}{}",
                e.message,
                e.help.map(|h| format!(" ({h})")).unwrap_or_default()
            ),
        }
    }

    #[test]
    fn unknown_keys_are_refused_when_the_task_is_read() {
        assert_eq!(
            build_err("settings: {icc: false, live-restor: true}\n"),
            "`live-restor` is not a daemon.json key dockerd knows (did you mean `live-restore`? (set `allow_unknown_keys: true` for a key newer than this list))"
        );
        assert_eq!(
            build_err("path: /etc/docker/daemon.json\n"),
            "`docker_daemon` needs `settings` (a mapping of daemon.json keys to values)"
        );
        assert!(build_err("settings: [icc]\n").contains("must be a mapping"));
        assert!(build_with(
            "docker_daemon",
            "settings: {new-thing: 1}\nallow_unknown_keys: true\n",
            &facts("20.10.24+dfsg1")
        )
        .is_ok());
    }

    #[test]
    fn a_restart_key_restarts_and_unmanaged_keys_stay() {
        let dir = root(Some(
            r#"{"storage-driver": "overlay2", "log-opts": {"max-file": "3"}}"#,
        ));
        let h = host(dir.path(), Daemon::default());
        let r = res(
            "settings:\n  icc: false\n  log-opts: {max-size: 10m}\n",
            "20.10.24+dfsg1",
        );
        let changes = diff(r.as_ref(), &h).unwrap();
        assert_eq!(
            whats(&changes),
            [
                "key icc",
                "key log-opts.max-size",
                "content",
                "effective icc"
            ]
        );
        assert_eq!(changes[3].before.as_deref(), Some("true"));
        assert_eq!(changes[3].after.as_deref(), Some("false"));
        assert_eq!(
            changes[3].diff.as_deref(),
            Some("icc: false in daemon.json, but the docker0 bridge still accepts container-to-container traffic (ACCEPT rule on docker0)\nrestart docker to apply it\n")
        );
        // The fake's bridge never changes: the apply must say the restart did not take.
        let err = apply(r.as_ref(), &h).unwrap_err();
        assert!(err.contains("changed and docker restarted, but icc: false in daemon.json, but the docker0 bridge still accepts"), "{err}");
        assert_eq!(
            fs::read_to_string(dir.path().join(FILE)).unwrap(),
            "{\n  \"storage-driver\": \"overlay2\",\n  \"log-opts\": {\n    \"max-file\": \"3\",\n    \"max-size\": \"10m\"\n  },\n  \"icc\": false\n}\n"
        );
        // 20.10 has no --validate: nothing but the restart, after reset-failed.
        assert_eq!(
            changing(&h),
            ["systemctl reset-failed docker.service 2>/dev/null; systemctl restart docker.service"]
        );

        // Once the bridge drops the traffic, all is in sync.
        let h = host(
            dir.path(),
            Daemon {
                iptables: ipt_icc_false(),
                ..Daemon::default()
            },
        );
        assert_eq!(diff(r.as_ref(), &h).unwrap(), []);
    }

    #[test]
    fn reload_only_keys_reload() {
        let dir = root(Some("{}"));
        let h = host(dir.path(), Daemon::default());
        let r = res(
            "settings: {live-restore: true, max-concurrent-downloads: 3}\n",
            "20.10.24+dfsg1",
        );
        // docker info says live-restore is off, as the file did.
        let changes = diff(r.as_ref(), &h).unwrap();
        assert_eq!(
            whats(&changes),
            [
                "key live-restore",
                "key max-concurrent-downloads",
                "content",
                "effective live-restore"
            ]
        );
        apply(r.as_ref(), &h).unwrap();
        assert_eq!(changing(&h), ["systemctl reload docker.service"]);
        let h = host(
            dir.path(),
            Daemon {
                info: info(true, 0),
                ..Daemon::default()
            },
        );
        assert_eq!(diff(r.as_ref(), &h).unwrap(), []);
    }

    #[test]
    fn a_stopped_daemon_gets_only_the_file() {
        let dir = root(None);
        let h = host(
            dir.path(),
            Daemon {
                running: false,
                ..Daemon::default()
            },
        );
        let r = res("settings: {icc: false}\n", "20.10.24+dfsg1");
        assert_eq!(
            whats(&diff(r.as_ref(), &h).unwrap()),
            ["key icc", "content"]
        );
        apply(r.as_ref(), &h).unwrap();
        assert_eq!(changing(&h), Vec::<String>::new());
        assert_eq!(
            fs::read_to_string(dir.path().join(FILE)).unwrap(),
            "{\n  \"icc\": false\n}\n"
        );
        let probes = r.probes();
        let answers = crate::transport::Transport::observe(&h, &probes);
        let obs = crate::resource::Observed {
            answers: &answers,
            probes: &probes,
        };
        assert_eq!(
            r.note(&obs).as_deref(),
            Some("dockerd is not running: only the file was written; it takes effect when docker starts")
        );
        assert_eq!(r.diff(&obs).unwrap(), []);
    }

    #[test]
    fn hosts_clash_with_the_units_fd_flag() {
        let dir = root(Some("{}"));
        let h = host(dir.path(), Daemon::default());
        let r = res(
            "settings: {hosts: ['unix:///var/run/docker.sock']}\n",
            "20.10.24+dfsg1",
        );
        let err = diff(r.as_ref(), &h).unwrap_err();
        assert!(
            err.starts_with("`hosts` in /etc/docker/daemon.json clashes with a flag: the docker.service unit starts dockerd with `-H`, and dockerd refuses to start"),
            "{err}"
        );
        assert!(err.contains("ExecStart="), "{err}");
        assert!(apply(r.as_ref(), &h).is_err());
        assert_eq!(fs::read_to_string(dir.path().join(FILE)).unwrap(), "{}");
        assert_eq!(changing(&h), Vec::<String>::new());

        // Without a readable unit, the running daemon's command line tells.
        let h = host(
            dir.path(),
            Daemon {
                unit: "",
                ..Daemon::default()
            },
        );
        assert!(diff(r.as_ref(), &h)
            .unwrap_err()
            .contains("the running dockerd was started with `-H`"));

        // A drop-in that clears ExecStart and starts dockerd without -H: no clash.
        let h = host(
            dir.path(),
            Daemon {
                unit: "[Service]\nExecStart=/usr/sbin/dockerd -H fd://\n# /etc/systemd/system/docker.service.d/hosts.conf\n[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd --containerd=/run/containerd/containerd.sock\n",
                ..Daemon::default()
            },
        );
        assert_eq!(
            whats(&diff(r.as_ref(), &h).unwrap()),
            ["key hosts", "content"]
        );
    }

    #[test]
    fn old_engines_refuse_unknown_keys_already_in_the_file() {
        let dir = root(Some(r#"{"bogus": 1}"#));
        let h = host(dir.path(), Daemon::default());
        let r = res("settings: {icc: false}\n", "20.10.24+dfsg1");
        let err = apply(r.as_ref(), &h).unwrap_err();
        assert!(
            err.contains("would hold `bogus`, which is not a daemon.json key dockerd knows"),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(FILE)).unwrap(),
            r#"{"bogus": 1}"#
        );
    }

    #[test]
    fn a_failed_restart_puts_the_old_file_back() {
        let old = "{\n  \"log-level\": \"info\"\n}\n";
        let dir = root(Some(old));
        let h = host(dir.path(), Daemon::default());
        let r = res(
            "settings: {bogus: true}\nallow_unknown_keys: true\n",
            "20.10.24+dfsg1",
        );
        let err = apply(r.as_ref(), &h).unwrap_err();
        assert_eq!(
            err,
            "docker did not restart with the new /etc/docker/daemon.json: unable to configure the Docker daemon with file \
             /etc/docker/daemon.json: the following directives don't match any configuration option: bogus; \
             the old /etc/docker/daemon.json is back and docker runs with it"
        );
        assert_eq!(fs::read_to_string(dir.path().join(FILE)).unwrap(), old);
        assert_eq!(
            h.commands()
                .iter()
                .filter(|c| c.contains("systemctl restart"))
                .count(),
            2
        );
    }

    #[test]
    fn new_engines_validate_with_the_units_flags() {
        let dir = root(Some("{}"));
        let h = host(dir.path(), Daemon::default());
        let r = res("settings: {no-new-privileges: true}\n", "26.1.5+dfsg1");
        apply(r.as_ref(), &h).unwrap();
        let cmds = changing(&h);
        assert_eq!(cmds.len(), 2, "{cmds:?}");
        assert!(
            cmds[0].contains("dockerd --validate --config-file \"$f\" '-H' 'fd://' 2>&1"),
            "{}",
            cmds[0]
        );
        assert!(cmds[0].contains(r#""no-new-privileges": true"#));
        assert!(cmds[1].contains("systemctl restart docker.service"));

        let dir = root(Some("{}"));
        let h = host(
            dir.path(),
            Daemon {
                validate: output(1, "unable to configure the Docker daemon with file /tmp/tmp.x: the following directives don't match any configuration option: no-new-privilege\n", ""),
                ..Daemon::default()
            },
        );
        let err = apply(r.as_ref(), &h).unwrap_err();
        assert!(
            err.starts_with(
                "dockerd --validate refused the new /etc/docker/daemon.json: unable to configure"
            ),
            "{err}"
        );
        assert_eq!(fs::read_to_string(dir.path().join(FILE)).unwrap(), "{}");
        assert_eq!(changing(&h).len(), 1);
    }

    #[test]
    fn live_restore_keeps_the_bridge_and_apply_says_so() {
        let dir = root(Some("{\"live-restore\": true, \"icc\": false}"));
        let h = host(
            dir.path(),
            Daemon {
                info: info(true, 2),
                ..Daemon::default()
            },
        );
        let r = res("settings: {icc: false}\n", "20.10.24+dfsg1");
        let changes = diff(r.as_ref(), &h).unwrap();
        assert_eq!(whats(&changes), ["effective icc"]);
        let why = changes[0].diff.as_deref().unwrap();
        assert!(
            why.contains("live-restore is on and 2 container(s) run"),
            "{why}"
        );
        // A restart would not help: none is made, and the task fails with the advice.
        let err = apply(r.as_ref(), &h).unwrap_err();
        assert!(
            err.contains("Stop the containers and restart docker"),
            "{err}"
        );
        assert_eq!(changing(&h), Vec::<String>::new());
    }

    #[test]
    fn recorded_outputs_are_read() {
        assert_eq!(bridge_icc(IPT_ICC_TRUE), Some(true));
        assert_eq!(bridge_icc(&ipt_icc_false()), Some(false));
        assert_eq!(bridge_icc("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"), None);
        assert_eq!(
            exec_start_flags(UNIT_TEXT),
            Some(vec!["-H".to_string(), "fd://".to_string()])
        );
        assert_eq!(
            exec_start_flags("ExecStart=/usr/bin/dockerd \\\n  -H fd:// --containerd=/run/containerd/containerd.sock\n"),
            Some(vec!["-H".into(), "fd://".into(), "--containerd=/run/containerd/containerd.sock".into()])
        );
        assert_eq!(exec_start_flags("ExecStart=/x\nExecStart=\n"), None);
        let flags: Vec<String> = [
            "-H",
            "fd://",
            "--containerd=/run/c.sock",
            "--label",
            "a=b",
            "--icc=false",
            "-Dl",
            "x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let keys: Vec<&str> = flag_keys(&flags).into_iter().map(|(_, k)| k).collect();
        assert_eq!(keys, ["hosts", "containerd", "labels", "icc", "debug"]);
    }
}
