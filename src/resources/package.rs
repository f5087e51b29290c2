//! `package`: packages installed (at any version or the newest) or removed, through apt or
//! dnf/yum, and what well-known packages bring (configuration paths, services) so that the tasks
//! configuring them are ordered after their installation.
//!
//! Observation costs one query for every package task of a host: the installed list and the
//! upgradable list are fixed commands, the same for every task, so the engine's batch asks each
//! once. A removal is simulated first (a probe asked only by `state: absent` tasks) and refused
//! when it would take away a package the system cannot run without. The parsers here are shared
//! with `patch`.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::resource::{normalize, BuildCtx, Change, Install, Observed, Params, Resource};
use crate::transport::{Output, Probe, Transport};

/// Every installed package with its state, version and how essential it is: one line each.
pub const DPKG_INSTALLED: &str = r"dpkg-query -W -f='${Package}\t${db:Status-Abbrev}\t${Version}\t${Essential}\t${Priority}\t${Protected}\n'";

/// Every installed package and its version, one line per installed instance.
pub const RPM_INSTALLED: &str = r"rpm -qa --qf '%{NAME}\t%{VERSION}-%{RELEASE}\n'";

/// What `apt-get upgrade` would do, without doing it or taking the lock. `--with-new-pkgs` lets
/// it install the new packages an upgrade depends on (a kernel's new ABI package), which plain
/// `upgrade` would keep back; it still never removes anything, unlike `dist-upgrade`. `apt list
/// --upgradable` is not used: apt itself warns that its output is not stable for scripts.
pub const APT_UPGRADES: &str =
    "LC_ALL=C apt-get -s -q -o Debug::NoLocking=1 --with-new-pkgs upgrade";

/// apt-get options for changes: wait for another package run instead of failing at once, and
/// keep locally changed configuration files without asking.
pub const APT_OPTS: &str = "-y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";

/// How apt-get is started for changes: no questions, messages that parse the same everywhere.
pub const APT_GET: &str = "LC_ALL=C DEBIAN_FRONTEND=noninteractive apt-get";

/// The package tool of a target, from `facts.pkg_manager`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Apt,
    /// dnf or yum (the command's name); both keep packages in the rpm database.
    Rpm(&'static str),
    /// Placeholder facts (`slice validate` has no host): the task builds, but cannot run.
    Unknown,
}

impl Backend {
    pub fn of(p: &Params, ctx: &BuildCtx) -> Result<Backend> {
        match ctx.facts.pkg_manager.as_str() {
            "apt" => Ok(Backend::Apt),
            "dnf" => Ok(Backend::Rpm("dnf")),
            "yum" => Ok(Backend::Rpm("yum")),
            "" => Ok(Backend::Unknown),
            _ => Err(Error::at(
                p.loc(),
                format!(
                    "`{}` needs a package manager, and none was found on this host (apt-get, dnf or yum)",
                    p.kind()
                ),
            )
            .with_help("skip the task on such hosts with `when: facts.pkg_manager != 'none'`")),
        }
    }

    /// The probe listing installed packages.
    pub fn installed_probe(self) -> Option<Probe> {
        match self {
            Backend::Apt => Some(Probe::Run(DPKG_INSTALLED.into())),
            Backend::Rpm(_) => Some(Probe::Run(RPM_INSTALLED.into())),
            Backend::Unknown => None,
        }
    }

    /// The probe listing available upgrades; with `security`, only security fixes (dnf; apt's
    /// list is filtered by origin afterwards, so both filters share one query).
    pub fn upgrades_probe(self, security: bool) -> Option<Probe> {
        match self {
            Backend::Apt => Some(Probe::Run(APT_UPGRADES.into())),
            Backend::Rpm(tool) if security => {
                Some(Probe::Run(format!("{tool} -q check-update --security")))
            }
            Backend::Rpm(tool) => Some(Probe::Run(format!("{tool} -q check-update"))),
            Backend::Unknown => None,
        }
    }

    /// The installed packages, from the answer to `installed_probe`.
    pub fn installed(
        self,
        out: &Output,
    ) -> std::result::Result<HashMap<String, Installed>, String> {
        if !out.success() {
            return Err(format!(
                "cannot list installed packages: {}",
                tail(&out.message(), 10)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(match self {
            Backend::Apt => parse_dpkg(&text),
            _ => parse_rpm(&text),
        })
    }

    /// The available upgrades, from the answer to `upgrades_probe`. dnf leaves `old` empty: the
    /// installed list has it.
    pub fn upgrades(self, out: &Output) -> std::result::Result<Vec<Upgrade>, String> {
        match self {
            Backend::Apt if out.success() => {
                Ok(AptSim::parse(&String::from_utf8_lossy(&out.stdout)).inst)
            }
            Backend::Apt => Err(format!(
                "cannot simulate an upgrade: {}",
                tail(&out.message(), 10)
            )),
            // check-update exits 100 when there are updates, 0 when there are none.
            Backend::Rpm(_) if matches!(out.status, 0 | 100) => {
                Ok(parse_check_update(&String::from_utf8_lossy(&out.stdout)))
            }
            Backend::Rpm(tool) => Err(format!(
                "cannot list updates (`{tool} check-update` exited with status {}): {}",
                out.status,
                tail(&out.message(), 10)
            )),
            Backend::Unknown => Ok(Vec::new()),
        }
    }
}

/// The host's package manager is not known: only `slice validate` builds such a task.
pub const UNKNOWN_BACKEND: &str = "the host's package manager is not known";

/// A package in the package database.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Installed {
    pub version: String,
    /// Installed and configured. dpkg also lists packages that are half installed or unpacked
    /// (an interrupted run); they are on disk, but not usable.
    pub ok: bool,
    /// dpkg's word for the state: `installed`, `half-configured`, …
    pub state: &'static str,
    /// Why removing it would break the system (dpkg's Essential, Protected, Priority fields).
    pub vital: Option<String>,
}

/// `dpkg-query` lines (see [`DPKG_INSTALLED`]): packages that are on disk. Removed ones and those
/// with only configuration files left count as absent and are not listed.
pub fn parse_dpkg(text: &str) -> HashMap<String, Installed> {
    let mut out: HashMap<String, Installed> = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let (Some(name), Some(abbrev)) = (f.first(), f.get(1)) else {
            continue;
        };
        // The abbreviation is desired state, current state, error flag: `ii `, `rc `, `iF `.
        let state = match abbrev.chars().nth(1) {
            Some('i') => "installed",
            Some('W') => "awaiting triggers",
            Some('t') => "pending triggers",
            Some('H') => "half-installed",
            Some('U') => "unpacked",
            Some('F') => "half-configured",
            _ => continue,
        };
        let field = |i: usize| f.get(i).map(|s| s.trim()).unwrap_or_default();
        let vital = if field(3) == "yes" {
            Some(format!("{name} is essential (Essential: yes)"))
        } else if field(5) == "yes" {
            Some(format!("{name} is protected (Protected: yes)"))
        } else if field(4) == "required" {
            Some(format!(
                "{name} is required by the system (Priority: required)"
            ))
        } else {
            None
        };
        let this = Installed {
            version: field(2).to_string(),
            ok: matches!(
                state,
                "installed" | "awaiting triggers" | "pending triggers"
            ),
            state,
            vital,
        };
        // Multi-arch packages appear once per architecture; one usable instance is enough.
        let e = out.entry(name.to_string()).or_insert_with(|| this.clone());
        if this.ok && !e.ok {
            e.version = this.version;
            e.ok = true;
            e.state = this.state;
        }
        if e.vital.is_none() {
            e.vital = this.vital;
        }
    }
    out
}

/// `rpm -qa` lines (see [`RPM_INSTALLED`]). A name installed several times (kernels, multilib)
/// lists every version.
pub fn parse_rpm(text: &str) -> HashMap<String, Installed> {
    let mut out: HashMap<String, Installed> = HashMap::new();
    for line in text.lines() {
        let Some((name, version)) = line.split_once('\t') else {
            continue;
        };
        let (name, version) = (name.trim(), version.trim());
        if name.is_empty() {
            continue;
        }
        let e = out.entry(name.to_string()).or_insert_with(|| Installed {
            ok: true,
            state: "installed",
            ..Installed::default()
        });
        if !e.version.split(", ").any(|v| v == version) {
            if !e.version.is_empty() {
                e.version.push_str(", ");
            }
            e.version.push_str(version);
        }
    }
    out
}

/// A newer version a package manager would install.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Upgrade {
    /// The package name, without an architecture.
    pub name: String,
    /// The installed version; `None` for a package the upgrade newly installs (apt), or when the
    /// tool does not say (dnf).
    pub old: Option<String>,
    pub new: String,
    /// Where the new version comes from: apt's origins (`Debian-Security:12/stable-security`),
    /// dnf's repository.
    pub origin: String,
}

impl Upgrade {
    /// Whether the new version comes from a security archive (`bookworm-security`,
    /// `jammy-security`, the `Debian-Security` label of older releases).
    pub fn is_security(&self) -> bool {
        self.origin.to_ascii_lowercase().contains("-security")
    }
}

/// What `apt-get -s` prints: packages it would install or upgrade, remove, and apt's own
/// warning about essential packages.
#[derive(Debug, Default, PartialEq)]
pub struct AptSim {
    pub inst: Vec<Upgrade>,
    /// (name, version) of each package it would remove.
    pub remv: Vec<(String, String)>,
    /// The packages under "WARNING: The following essential packages will be removed."
    pub essential: Vec<String>,
}

impl AptSim {
    pub fn parse(text: &str) -> AptSim {
        let mut sim = AptSim::default();
        let mut in_warning = false;
        for line in text.lines() {
            if line.starts_with("WARNING: The following essential packages will be removed") {
                in_warning = true;
                continue;
            }
            if in_warning {
                if line.starts_with("This should NOT be done") {
                    continue;
                }
                if line.starts_with(' ') {
                    sim.essential
                        .extend(line.split_whitespace().map(|s| base(s).to_string()));
                    continue;
                }
                in_warning = false;
            }
            if let Some(rest) = line.strip_prefix("Inst ") {
                if let Some(u) = inst_line(rest) {
                    sim.inst.push(u);
                }
            } else if let Some(rest) = line.strip_prefix("Remv ") {
                let mut parts = rest.splitn(2, ' ');
                let name = parts.next().unwrap_or_default();
                let version = parts
                    .next()
                    .and_then(|r| r.trim().strip_prefix('['))
                    .and_then(|r| r.split(']').next())
                    .unwrap_or_default();
                if !name.is_empty() {
                    sim.remv.push((base(name).to_string(), version.to_string()));
                }
            }
        }
        sim
    }
}

/// `NAME [OLD] (NEW ORIGIN, ORIGIN [ARCH]) …` after `Inst `; no `[OLD]` for a new package.
fn inst_line(rest: &str) -> Option<Upgrade> {
    let (name, rest) = rest.split_once(' ')?;
    let rest = rest.trim_start();
    let (old, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (old, r) = r.split_once(']')?;
            (Some(old.to_string()), r.trim_start())
        }
        None => (None, rest),
    };
    let (inner, _) = rest.strip_prefix('(')?.split_once(')')?;
    let (new, origin) = inner.split_once(' ').unwrap_or((inner, ""));
    // The origins end with the architecture in brackets: `Debian:12.5/stable [amd64]`.
    let origin = match origin.rfind(" [") {
        Some(i) => &origin[..i],
        None if origin.starts_with('[') => "",
        None => origin,
    };
    Some(Upgrade {
        name: base(name).to_string(),
        old,
        new: new.to_string(),
        origin: origin.trim().to_string(),
    })
}

/// A package name without its `:arch` qualifier.
fn base(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

/// `dnf check-update` output: `NAME.ARCH  VERSION  REPO` lines (a long name alone on its line,
/// the rest on the next), up to the "Obsoleting Packages" section.
pub fn parse_check_update(text: &str) -> Vec<Upgrade> {
    let mut out: Vec<Upgrade> = Vec::new();
    let mut pending_name: Option<String> = None;
    for line in text.lines() {
        if line.to_ascii_lowercase().starts_with("obsoleting packages") {
            break;
        }
        let t: Vec<&str> = line.split_whitespace().collect();
        let (name, version, repo) = match (t.as_slice(), &pending_name) {
            ([n], _) if n.contains('.') && !line.starts_with(' ') => {
                pending_name = Some((*n).to_string());
                continue;
            }
            ([v, r], Some(n)) => (n.clone(), *v, *r),
            ([n, v, r], _) if n.contains('.') && !line.starts_with(' ') => {
                ((*n).to_string(), *v, *r)
            }
            _ => {
                pending_name = None;
                continue;
            }
        };
        pending_name = None;
        let name = name
            .rsplit_once('.')
            .map_or(name.as_str(), |(n, _)| n)
            .to_string();
        if out.iter().any(|u| u.name == name) {
            continue;
        }
        out.push(Upgrade {
            name,
            old: None,
            new: version.to_string(),
            origin: repo.to_string(),
        });
    }
    out
}

/// What `dnf remove --assumeno` prints: the packages it would remove, and its refusal.
#[derive(Debug, Default, PartialEq)]
pub struct DnfRemoval {
    /// Those asked for (the "Removing:" section).
    pub named: Vec<String>,
    /// Others that go with them (dependent packages, unused dependencies).
    pub others: Vec<String>,
    /// dnf's error, such as removing a protected package.
    pub error: Option<String>,
}

impl DnfRemoval {
    pub fn parse(text: &str) -> DnfRemoval {
        let mut r = DnfRemoval::default();
        let mut section: Option<bool> = None;
        let mut error: Vec<&str> = Vec::new();
        for line in text.lines() {
            // dnf 4 says `Error:`, dnf 5 `Failed to resolve the transaction:`.
            if line.starts_with("Error:")
                || line.starts_with("Failed to resolve the transaction")
                || !error.is_empty()
            {
                if line.trim().is_empty() || line.starts_with("(try to add") {
                    continue;
                }
                error.push(line.trim());
                continue;
            }
            if line.starts_with("Removing") && line.trim_end().ends_with(':') {
                section = Some(line.trim_end() == "Removing:");
                continue;
            }
            // Package rows start with one space; wrapped continuations with more.
            match section {
                Some(named) if line.starts_with(' ') && !line.starts_with("  ") => {
                    if let Some(n) = line.split_whitespace().next() {
                        if named {
                            r.named.push(n.to_string());
                        } else {
                            r.others.push(n.to_string());
                        }
                    }
                }
                Some(_) if line.starts_with("  ") => {}
                _ => section = None,
            }
        }
        if !error.is_empty() {
            let text = error.join(" ");
            let text = text
                .trim_start_matches("Error:")
                .trim_start_matches("Failed to resolve the transaction:");
            r.error = Some(text.trim().to_string());
        }
        r
    }
}

/// The last `n` lines of a message: apt and dnf put their reasons at the end.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a command that changes the host; a failure says what ran and why it failed.
pub fn run(t: &dyn Transport, what: &str, cmd: &str) -> std::result::Result<Output, String> {
    let out = t.run(cmd).map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.success() {
        return Err(format!(
            "{what} failed (exit status {}): {}",
            out.status,
            tail(&out.message(), 15)
        ));
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Present,
    Absent,
    Latest,
}

pub struct Package {
    names: Vec<String>,
    state: State,
    /// Extra configuration paths, for ordering the tasks that write there after this one.
    config: Vec<String>,
    backend: Backend,
}

/// What `diff` reports and `apply` does, worked out once from the observation.
#[derive(Debug, Default)]
struct Plan {
    changes: Vec<Change>,
    install: Vec<String>,
    upgrade: Vec<String>,
    remove: Vec<String>,
}

impl Package {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let mut names = p.str_list("name")?;
        let alias = p.str_list("names")?;
        if !names.is_empty() && !alias.is_empty() {
            let at = p.node("names").map_or(p.loc(), |n| &n.loc);
            return Err(Error::at(at, "give `name` or `names`, not both"));
        }
        names.extend(alias);
        let state = match p.choice("state", &["present", "absent", "latest"], "present")? {
            "absent" => State::Absent,
            "latest" => State::Latest,
            _ => State::Present,
        };
        let mut config = Vec::new();
        for c in p.str_list("config")? {
            if !c.starts_with('/') {
                let n = p.node("config").map_or(p.loc(), |n| &n.loc);
                return Err(Error::at(
                    n,
                    format!("`config` must list absolute paths, found `{c}`"),
                ));
            }
            config.push(normalize(&c));
        }
        p.finish()?;
        if names.is_empty() {
            return Err(Error::at(p.loc(), "`package` needs `name`"));
        }
        let key = if p.node("names").is_some() {
            "names"
        } else {
            "name"
        };
        let mut unique: Vec<String> = Vec::new();
        for n in names {
            if !valid_name(&n) {
                // Point at the list item itself when the names are a list.
                let node = p.node(key);
                let item = node.and_then(|l| match &l.value {
                    crate::yaml::Value::Seq(items) => items
                        .iter()
                        .find(|i| i.scalar_text().as_deref() == Some(n.as_str())),
                    _ => None,
                });
                let at = item.or(node).map_or(p.loc(), |n| &n.loc);
                return Err(Error::at(
                    at,
                    format!("`{n}` is not a package name (letters, digits and . _ + -; no versions or releases)"),
                ));
            }
            if !unique.contains(&n) {
                unique.push(n);
            }
        }
        let backend = Backend::of(p, ctx)?;
        Ok(Box::new(Package {
            names: unique,
            state,
            config,
            backend,
        }))
    }

    /// Simulates removing the named packages that are on disk, or prints nothing when none is.
    /// Names are checked at build time, so they need no quoting.
    fn removal_probe(&self) -> Option<Probe> {
        let names = self.names.join(" ");
        match self.backend {
            Backend::Apt => Some(Probe::Run(format!(
                "for p in {names}; do dpkg-query -W -f='${{db:Status-Status}}\\n' \"$p\" 2>/dev/null | \
                 grep -qvx -e not-installed -e config-files && set -- \"$@\" \"$p\"; done; \
                 [ \"$#\" -eq 0 ] || LC_ALL=C apt-get -s -q -o Debug::NoLocking=1 remove \"$@\""
            ))),
            // With every repository off, dnf looks only at what is installed: no network.
            Backend::Rpm(tool) => Some(Probe::Run(format!(
                "for p in {names}; do rpm -q --quiet \"$p\" && set -- \"$@\" \"$p\"; done; \
                 [ \"$#\" -eq 0 ] || LC_ALL=C {tool} -q --disablerepo='*' remove --assumeno \"$@\" 2>&1; true"
            ))),
            Backend::Unknown => None,
        }
    }

    fn plan(&self, obs: &Observed) -> std::result::Result<Plan, String> {
        if self.backend == Backend::Unknown {
            return Err(UNKNOWN_BACKEND.to_string());
        }
        let installed = self.backend.installed(obs.run(0)?)?;
        let mut plan = Plan::default();
        let change = |name: &str, before: String, after: &str| {
            Change::new(format!("package {name}"), Some(before), Some(after.into()))
        };
        let was = |name: &str| match installed.get(name).map(|i| i.version.as_str()) {
            Some(v) if !v.is_empty() => format!("installed {v}"),
            _ => "installed".to_string(),
        };
        match self.state {
            State::Present | State::Latest => {
                let upgrades = if self.state == State::Latest {
                    self.backend.upgrades(obs.run(1)?)?
                } else {
                    Vec::new()
                };
                for n in &self.names {
                    match installed.get(n) {
                        None => {
                            plan.changes.push(change(n, "absent".into(), "installed"));
                            plan.install.push(n.clone());
                        }
                        Some(i) if !i.ok => {
                            plan.changes.push(change(
                                n,
                                format!("{} {}", i.state, i.version),
                                "installed",
                            ));
                            plan.install.push(n.clone());
                        }
                        Some(i) => {
                            if let Some(u) = upgrades.iter().find(|u| &u.name == n) {
                                let old = u.old.clone().unwrap_or_else(|| i.version.clone());
                                plan.changes
                                    .push(change(n, old, &format!("{} (latest)", u.new)));
                                plan.upgrade.push(n.clone());
                            }
                        }
                    }
                }
            }
            State::Absent => {
                plan.remove = self
                    .names
                    .iter()
                    .filter(|n| installed.contains_key(*n))
                    .cloned()
                    .collect();
                if plan.remove.is_empty() {
                    return Ok(plan);
                }
                for n in &plan.remove {
                    plan.changes.push(change(n, was(n), "absent"));
                }
                let others = self.check_removal(&plan.remove, &installed, obs.run(1)?)?;
                for (n, why) in others {
                    plan.changes
                        .push(change(&n, was(&n), &format!("absent ({why})")));
                }
            }
        }
        Ok(plan)
    }

    /// Refuses a removal that would break the system; otherwise returns the other packages that
    /// go with the named ones, with why.
    fn check_removal(
        &self,
        remove: &[String],
        installed: &HashMap<String, Installed>,
        sim: &Output,
    ) -> std::result::Result<Vec<(String, &'static str)>, String> {
        let list = remove.join(", ");
        match self.backend {
            Backend::Apt => {
                if !sim.success() {
                    return Err(format!(
                        "refusing to remove {list}: apt cannot remove {} without breaking other packages: {}",
                        if remove.len() == 1 { "it" } else { "them" },
                        apt_problem(sim)
                    ));
                }
                let s = AptSim::parse(&String::from_utf8_lossy(&sim.stdout));
                if !s.essential.is_empty() {
                    return Err(format!(
                        "refusing to remove {list}: apt warns that this removes essential packages ({})",
                        s.essential.join(", ")
                    ));
                }
                for (name, _) in &s.remv {
                    if let Some(why) = installed.get(name).and_then(|i| i.vital.as_ref()) {
                        return Err(if remove.contains(name) {
                            format!("refusing to remove {list}: {why}")
                        } else {
                            format!(
                                "refusing to remove {list}: it would also remove {name}, and {why}"
                            )
                        });
                    }
                }
                Ok(s.remv
                    .into_iter()
                    .filter(|(n, _)| !remove.contains(n))
                    .map(|(n, _)| (n, "depends on a removed package"))
                    .collect())
            }
            Backend::Rpm(tool) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&sim.stdout),
                    String::from_utf8_lossy(&sim.stderr)
                );
                let r = DnfRemoval::parse(&text);
                if let Some(e) = r.error {
                    return Err(format!("refusing to remove {list}: {tool} says: {e}"));
                }
                Ok(r.others
                    .into_iter()
                    .filter(|n| !remove.contains(n))
                    .map(|n| (n, "goes with a removed package"))
                    .collect())
            }
            Backend::Unknown => Err(UNKNOWN_BACKEND.to_string()),
        }
    }
}

/// The reason apt gives for a simulation it could not do: its unmet dependencies and errors.
fn apt_problem(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<String> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("The following packages have unmet dependencies"))
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    lines.extend(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("E: "))
            .map(str::to_string),
    );
    if lines.is_empty() {
        return tail(&out.message(), 10);
    }
    lines.join("; ")
}

/// Debian and rpm package names: letters, digits and `. _ + -`, starting with a letter or digit.
/// Anything else (`name=1.2`, `name/bookworm`, spaces, shell syntax) is refused.
fn valid_name(n: &str) -> bool {
    n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// What a well-known package brings: configuration paths, and services on Debian and on RHEL.
struct Known {
    package: &'static str,
    config: &'static [&'static str],
    debian: &'static [&'static str],
    redhat: &'static [&'static str],
}

const KNOWN: &[Known] = &[
    Known {
        package: "openssh-server",
        config: &["/etc/ssh"],
        debian: &["ssh"],
        redhat: &["sshd"],
    },
    Known {
        package: "docker.io",
        config: &["/etc/docker", "/etc/default/docker"],
        debian: &["docker"],
        redhat: &["docker"],
    },
    Known {
        package: "docker-ce",
        config: &["/etc/docker"],
        debian: &["docker"],
        redhat: &["docker"],
    },
    Known {
        package: "containerd",
        config: &["/etc/containerd"],
        debian: &["containerd"],
        redhat: &["containerd"],
    },
    Known {
        package: "containerd.io",
        config: &["/etc/containerd"],
        debian: &["containerd"],
        redhat: &["containerd"],
    },
    Known {
        package: "auditd",
        config: &["/etc/audit"],
        debian: &["auditd"],
        redhat: &["auditd"],
    },
    // RHEL's name for auditd.
    Known {
        package: "audit",
        config: &["/etc/audit"],
        debian: &[],
        redhat: &["auditd"],
    },
    Known {
        package: "apparmor",
        config: &["/etc/apparmor.d", "/etc/apparmor"],
        debian: &["apparmor"],
        redhat: &[],
    },
    Known {
        package: "sudo",
        config: &["/etc/sudoers", "/etc/sudoers.d"],
        debian: &[],
        redhat: &[],
    },
    Known {
        package: "rsyslog",
        config: &["/etc/rsyslog.conf", "/etc/rsyslog.d"],
        debian: &["rsyslog"],
        redhat: &["rsyslog"],
    },
    Known {
        package: "chrony",
        config: &["/etc/chrony", "/etc/chrony.conf", "/etc/sysconfig/chronyd"],
        debian: &["chrony"],
        redhat: &["chronyd"],
    },
    Known {
        package: "ntp",
        config: &["/etc/ntp.conf", "/etc/ntp"],
        debian: &["ntp"],
        redhat: &["ntpd"],
    },
    Known {
        package: "ntpsec",
        config: &["/etc/ntpsec"],
        debian: &["ntpsec"],
        redhat: &["ntpd"],
    },
    Known {
        package: "systemd-timesyncd",
        config: &[
            "/etc/systemd/timesyncd.conf",
            "/etc/systemd/timesyncd.conf.d",
        ],
        debian: &["systemd-timesyncd"],
        redhat: &["systemd-timesyncd"],
    },
    Known {
        package: "nftables",
        config: &[
            "/etc/nftables.conf",
            "/etc/nftables",
            "/etc/sysconfig/nftables.conf",
        ],
        debian: &["nftables"],
        redhat: &["nftables"],
    },
    Known {
        package: "iptables-persistent",
        config: &["/etc/iptables"],
        debian: &["netfilter-persistent"],
        redhat: &[],
    },
    Known {
        package: "netfilter-persistent",
        config: &["/etc/iptables", "/etc/default/netfilter-persistent"],
        debian: &["netfilter-persistent"],
        redhat: &[],
    },
    Known {
        package: "iptables-services",
        config: &[
            "/etc/sysconfig/iptables",
            "/etc/sysconfig/ip6tables",
            "/etc/sysconfig/iptables-config",
            "/etc/sysconfig/ip6tables-config",
        ],
        debian: &[],
        redhat: &["iptables", "ip6tables"],
    },
    Known {
        package: "firewalld",
        config: &["/etc/firewalld"],
        debian: &["firewalld"],
        redhat: &["firewalld"],
    },
    Known {
        package: "fail2ban",
        config: &["/etc/fail2ban"],
        debian: &["fail2ban"],
        redhat: &["fail2ban"],
    },
    Known {
        package: "cron",
        config: &[
            "/etc/crontab",
            "/etc/cron.d",
            "/etc/cron.hourly",
            "/etc/cron.daily",
            "/etc/cron.weekly",
            "/etc/cron.monthly",
        ],
        debian: &["cron"],
        redhat: &[],
    },
    Known {
        package: "cronie",
        config: &[
            "/etc/crontab",
            "/etc/cron.d",
            "/etc/cron.hourly",
            "/etc/cron.daily",
            "/etc/cron.weekly",
            "/etc/cron.monthly",
        ],
        debian: &[],
        redhat: &["crond"],
    },
    Known {
        package: "aide",
        config: &["/etc/aide", "/etc/aide.conf"],
        debian: &[],
        redhat: &[],
    },
    Known {
        package: "logrotate",
        config: &["/etc/logrotate.conf", "/etc/logrotate.d"],
        debian: &[],
        redhat: &[],
    },
    Known {
        package: "unattended-upgrades",
        config: &[
            "/etc/apt/apt.conf.d/50unattended-upgrades",
            "/etc/apt/apt.conf.d/20auto-upgrades",
        ],
        debian: &["unattended-upgrades"],
        redhat: &[],
    },
    Known {
        package: "dnf-automatic",
        config: &["/etc/dnf/automatic.conf"],
        debian: &[],
        redhat: &[],
    },
    Known {
        package: "libpam-pwquality",
        config: &[
            "/etc/security/pwquality.conf",
            "/etc/security/pwquality.conf.d",
        ],
        debian: &[],
        redhat: &[],
    },
    Known {
        package: "libpwquality",
        config: &[
            "/etc/security/pwquality.conf",
            "/etc/security/pwquality.conf.d",
        ],
        debian: &[],
        redhat: &[],
    },
    Known {
        package: "postfix",
        config: &["/etc/postfix"],
        debian: &["postfix"],
        redhat: &["postfix"],
    },
];

impl Resource for Package {
    fn target(&self) -> String {
        self.names.join(", ")
    }

    fn installs(&self) -> Vec<Install> {
        if self.state == State::Absent {
            return Vec::new();
        }
        self.names
            .iter()
            .map(|n| {
                let known = KNOWN.iter().find(|k| k.package == n);
                let mut config_paths: Vec<String> = known
                    .map(|k| k.config.iter().map(|c| c.to_string()).collect())
                    .unwrap_or_default();
                config_paths.extend(self.config.iter().cloned());
                let services = known
                    .map(|k| match self.backend {
                        Backend::Rpm(_) => k.redhat,
                        _ => k.debian,
                    })
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                Install {
                    package: n.clone(),
                    config_paths,
                    services,
                }
            })
            .collect()
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v: Vec<Probe> = self.backend.installed_probe().into_iter().collect();
        match self.state {
            State::Present => {}
            State::Latest => v.extend(self.backend.upgrades_probe(false)),
            State::Absent => v.extend(self.removal_probe()),
        }
        v
    }

    fn diff(&self, obs: &Observed) -> std::result::Result<Vec<Change>, String> {
        Ok(self.plan(obs)?.changes)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> std::result::Result<(), String> {
        let plan = self.plan(obs)?;
        let mut cmds: Vec<(String, String)> = Vec::new();
        match self.backend {
            Backend::Apt => {
                // One apt-get run installs the missing packages and upgrades the outdated ones.
                let names: Vec<&str> = plan
                    .install
                    .iter()
                    .chain(&plan.upgrade)
                    .map(String::as_str)
                    .collect();
                if !names.is_empty() {
                    let names = names.join(" ");
                    cmds.push((
                        format!("`apt-get install {names}`"),
                        format!("{APT_GET} {APT_OPTS} install --no-install-recommends {names}"),
                    ));
                }
                if !plan.remove.is_empty() {
                    // No --allow-remove-essential: apt refuses an essential package by itself too.
                    let names = plan.remove.join(" ");
                    cmds.push((
                        format!("`apt-get remove {names}`"),
                        format!("{APT_GET} {APT_OPTS} remove {names}"),
                    ));
                }
            }
            Backend::Rpm(tool) => {
                for (verb, list) in [
                    ("install", &plan.install),
                    ("upgrade", &plan.upgrade),
                    ("remove", &plan.remove),
                ] {
                    if !list.is_empty() {
                        let names = list.join(" ");
                        cmds.push((
                            format!("`{tool} {verb} {names}`"),
                            format!("LC_ALL=C {tool} -y -q {verb} {names}"),
                        ));
                    }
                }
            }
            Backend::Unknown => return Err(UNKNOWN_BACKEND.to_string()),
        }
        if cmds.is_empty() {
            return Ok(());
        }
        // One command for the task: dnf's install and upgrade steps are joined, so the task
        // costs one round trip whatever it changes.
        let what = cmds
            .iter()
            .map(|(w, _)| w.as_str())
            .collect::<Vec<_>>()
            .join(" and ");
        let cmd = cmds
            .iter()
            .map(|(_, c)| c.as_str())
            .collect::<Vec<_>>()
            .join(" && ");
        run(t, &what, &cmd).map(|_| ())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io;
    use std::sync::Mutex;

    use super::*;
    use crate::facts::Facts;
    use crate::resources::testing::{build_with, debian_facts};
    use crate::transport::{Answer, Attrs, FileType, Stat};

    /// A host that answers commands from recorded outputs (the first entry whose text the
    /// command contains), and remembers the commands that change it.
    pub(crate) struct Fake {
        outputs: Vec<(&'static str, Output)>,
        files: Vec<(&'static str, &'static str)>,
        changes: Mutex<Vec<String>>,
    }

    pub(crate) fn ok(stdout: &str) -> Output {
        Output {
            status: 0,
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    pub(crate) fn status(status: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    impl Fake {
        pub(crate) fn new() -> Fake {
            Fake {
                outputs: Vec::new(),
                files: Vec::new(),
                changes: Mutex::new(Vec::new()),
            }
        }

        pub(crate) fn on(mut self, needle: &'static str, out: Output) -> Fake {
            self.outputs.push((needle, out));
            self
        }

        pub(crate) fn with_file(mut self, path: &'static str, content: &'static str) -> Fake {
            self.files.push((path, content));
            self
        }

        fn file(&self, path: &str) -> Option<&'static str> {
            self.files.iter().find(|(p, _)| *p == path).map(|(_, c)| *c)
        }

        pub(crate) fn changes(&self) -> Vec<String> {
            self.changes.lock().unwrap().clone()
        }

        fn answer(&self, cmd: &str) -> Output {
            self.outputs
                .iter()
                .find(|(n, _)| cmd.contains(n))
                .map(|(_, o)| o.clone())
                .unwrap_or_default()
        }
    }

    impl Transport for Fake {
        fn name(&self) -> String {
            "fake".into()
        }
        fn live(&self) -> bool {
            true
        }
        fn stat(&self, path: &str) -> io::Result<Option<Stat>> {
            Ok(self.file(path).map(|_| Stat {
                kind: FileType::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: 0,
            }))
        }
        fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
            Ok(self.file(path).map(|c| c.as_bytes().to_vec()))
        }
        fn write(&self, _: &str, _: &[u8], _: &Attrs) -> io::Result<()> {
            Err(io::Error::other("no writes here"))
        }
        fn mkdir(&self, _: &str, _: &Attrs) -> io::Result<()> {
            Err(io::Error::other("no writes here"))
        }
        fn set_attrs(&self, _: &str, _: &Attrs) -> io::Result<()> {
            Err(io::Error::other("no writes here"))
        }
        fn remove(&self, _: &str) -> io::Result<()> {
            Err(io::Error::other("no writes here"))
        }
        fn run(&self, cmd: &str) -> io::Result<Output> {
            self.changes.lock().unwrap().push(cmd.to_string());
            Ok(self.answer(cmd))
        }
        fn lock(
            &self,
            _: &str,
            _: std::time::Duration,
        ) -> io::Result<Box<dyn std::any::Any + Send>> {
            Ok(Box::new(()))
        }
        /// Observing never counts as a change.
        fn observe(&self, probes: &[Probe]) -> Vec<Answer> {
            probes
                .iter()
                .map(|p| match p {
                    Probe::Stat(path) => Answer::Stat(self.stat(path).unwrap()),
                    Probe::Read(path) => Answer::Read(self.read(path).unwrap()),
                    Probe::Run(cmd) => Answer::Run(self.answer(cmd)),
                })
                .collect()
        }
    }

    pub(crate) fn diff(res: &dyn Resource, t: &Fake) -> std::result::Result<Vec<Change>, String> {
        let probes = res.probes();
        let answers = t.observe(&probes);
        res.diff(&Observed {
            answers: &answers,
            probes: &probes,
        })
    }

    pub(crate) fn apply(res: &dyn Resource, t: &Fake) -> std::result::Result<(), String> {
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

    /// Human lines as the report prints them: `what: before → after`.
    pub(crate) fn lines(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match (&c.before, &c.after) {
                (Some(b), Some(a)) => format!("{}: {b} → {a}", c.what),
                (None, Some(a)) => format!("{}: {a}", c.what),
                (Some(b), None) => format!("{}: {b} → (none)", c.what),
                (None, None) => c.what.clone(),
            })
            .collect()
    }

    pub(crate) fn rocky_facts() -> Facts {
        Facts {
            os_id: "rocky".into(),
            os_version: "9.4".into(),
            os_family: "redhat".into(),
            pkg_manager: "dnf".into(),
            ..debian_facts()
        }
    }

    fn apt(yaml: &str) -> Box<dyn Resource> {
        build_with("package", yaml, &debian_facts()).unwrap()
    }

    fn dnf(yaml: &str) -> Box<dyn Resource> {
        build_with("package", yaml, &rocky_facts()).unwrap()
    }

    fn build_error(yaml: &str, facts: &Facts) -> String {
        match build_with("package", yaml, facts) {
            Ok(_) => panic!("expected a build error for {yaml:?}"),
            Err(e) => {
                let loc = e.loc.expect("a location");
                format!("{}:{}: {}", loc.line, loc.col, e.message)
            }
        }
    }

    /// `dpkg-query` (DPKG_INSTALLED) on a lab host (Debian 12) after installing curl and
    /// rsyslog and removing rsyslog again (`rc`: only its configuration files are left); a
    /// selection of its 173 lines. The `iF` line (an interrupted configuration) is made up.
    const DPKG: &str = "apt\tii \t2.6.1\tno\trequired\tno
base-files\tii \t12.4+deb12u15\tyes\trequired\tno
coreutils\tii \t9.1-1\tyes\trequired\tno
curl\tii \t7.88.1-10+deb12u15\tno\toptional\tno
dpkg\tii \t1.21.23\tyes\trequired\tno
e2fsprogs\tii \t1.47.0-2+b2\tno\trequired\tno
init-system-helpers\tii \t1.65.2+deb12u1\tyes\trequired\tno
libc6\tii \t2.36-9+deb12u14\tno\toptional\tno
libcurl4\tii \t7.88.1-10+deb12u15\tno\toptional\tno
libexpat1\tii \t2.5.0-1+deb12u2\tno\toptional\tno
libssl3\tii \t3.0.20-1~deb12u2\tno\toptional\tno
libsystemd0\tii \t252.39-1~deb12u2\tno\toptional\tno
openssh-server\tii \t1:9.2p1-2+deb12u10\tno\toptional\tno
rsyslog\trc \t8.2302.0-1+deb12u2\tno\toptional\tno
sudo\tii \t1.9.13p3-1+deb12u4\tno\toptional\tno
tzdata\tii \t2026b-0+deb12u1\tno\trequired\tno
auditd\tiF \t1:3.0.9-1\tno\toptional\tno
";

    /// `apt-get -s remove coreutils` on the same host: apt's own warning.
    const SIM_REMOVE_COREUTILS: &str = "Reading package lists...
Building dependency tree...
Reading state information...
The following packages were automatically installed and are no longer required:
  libestr0 libfastjson4 liblognorm5
Use 'apt autoremove' to remove them.
The following packages will be REMOVED:
  coreutils
WARNING: The following essential packages will be removed.
This should NOT be done unless you know exactly what you are doing!
  coreutils
0 upgraded, 0 newly installed, 1 to remove and 18 not upgraded.
Remv coreutils [9.1-1]
";

    /// `apt-get -s remove dpkg`: apt cannot even work out a removal (status 100).
    const SIM_REMOVE_DPKG_OUT: &str = "Reading package lists...
Building dependency tree...
Reading state information...
Some packages could not be installed. This may mean that you have
requested an impossible situation or if you are using the unstable
distribution that some required packages have not yet been created
or been moved out of Incoming.
The following information may help to resolve the situation:

The following packages have unmet dependencies:
 dash : Depends: dpkg (>= 1.19.1) but it is not going to be installed
 grep : Depends: dpkg (>= 1.15.4) but it is not going to be installed or
                 install-info but it is not installable
 perl-base : PreDepends: dpkg (>= 1.17.17) but it is not going to be installed
";
    const SIM_REMOVE_DPKG_ERR: &str =
        "E: Error, pkgProblemResolver::Resolve generated breaks, this may be caused by held packages.\n";

    /// `apt-get -s remove libcurl4`: curl depends on it and goes too.
    const SIM_REMOVE_LIBCURL: &str = "Reading package lists...
Building dependency tree...
Reading state information...
The following packages were automatically installed and are no longer required:
  libbrotli1 libestr0 libfastjson4 libldap-2.5-0 liblognorm5 libnghttp2-14
  libpsl5 librtmp1 libsasl2-2 libsasl2-modules-db libssh2-1
Use 'apt autoremove' to remove them.
The following packages will be REMOVED:
  curl libcurl4
0 upgraded, 0 newly installed, 2 to remove and 18 not upgraded.
Remv curl [7.88.1-10+deb12u15]
Remv libcurl4 [7.88.1-10+deb12u15]
";

    /// `apt-get -s install --no-install-recommends tree curl` on a fresh lab host.
    const SIM_INSTALL: &str = "Reading package lists...
Building dependency tree...
The following NEW packages will be installed:
  curl libbrotli1 libcurl4 libldap-2.5-0 libnghttp2-14 libpsl5 librtmp1
  libsasl2-2 libsasl2-modules-db libssh2-1 tree
0 upgraded, 11 newly installed, 0 to remove and 18 not upgraded.
Inst libbrotli1 (1.0.9-2+deb12u1 localhost [amd64])
Inst libcurl4 (7.88.1-10+deb12u15 localhost [amd64])
Inst curl (7.88.1-10+deb12u15 localhost [amd64])
Inst tree (2.1.0-1 localhost [amd64])
Conf libbrotli1 (1.0.9-2+deb12u1 localhost [amd64])
Conf libcurl4 (7.88.1-10+deb12u15 localhost [amd64])
Conf curl (7.88.1-10+deb12u15 localhost [amd64])
Conf tree (2.1.0-1 localhost [amd64])
";

    /// Part of `apt-get -s --with-new-pkgs upgrade` on a lab host (the flat repository has no
    /// origin but `localhost`).
    pub(crate) const SIM_UPGRADE: &str = "Reading package lists...
Building dependency tree...
Calculating upgrade...
The following packages will be upgraded:
  libexpat1 libpam-modules-bin libssl3 tzdata
4 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.
Inst libpam-modules-bin [1.5.2-6+deb12u2] (1.5.2-6+deb12u3 localhost [amd64]) [libpam-modules:amd64 on libpam-modules-bin:amd64] [libpam-modules:amd64 ]
Conf libpam-modules-bin (1.5.2-6+deb12u3 localhost [amd64]) [libpam-modules:amd64 ]
Inst libssl3 [3.0.20-1~deb12u2] (3.0.22-1~deb12u2 localhost [amd64])
Inst libexpat1 [2.5.0-1+deb12u2] (2.5.0-1+deb12u5 localhost [amd64])
Inst tzdata [2026b-0+deb12u1] (2026f-0+deb12u1 localhost [all])
Conf libssl3 (3.0.22-1~deb12u2 localhost [amd64])
Conf libexpat1 (2.5.0-1+deb12u5 localhost [amd64])
Conf tzdata (2026f-0+deb12u1 localhost [all])
";

    const INSTALLED: &str = "dpkg-query -W -f='${Package}";
    const UPGRADE_SIM: &str = "--with-new-pkgs upgrade";
    const REMOVE_SIM: &str = "remove \"$@\"";

    fn debian(remove_sim: Output) -> Fake {
        Fake::new()
            .on(INSTALLED, ok(DPKG))
            .on(UPGRADE_SIM, ok(SIM_UPGRADE))
            .on(REMOVE_SIM, remove_sim)
    }

    #[test]
    fn dpkg_query_output_is_read() {
        let m = parse_dpkg(DPKG);
        assert!(!m.contains_key("rsyslog"), "only configuration files left");
        let curl = &m["curl"];
        assert_eq!(
            (curl.version.as_str(), curl.ok, curl.vital.as_deref()),
            ("7.88.1-10+deb12u15", true, None)
        );
        assert_eq!(
            m["coreutils"].vital.as_deref(),
            Some("coreutils is essential (Essential: yes)")
        );
        assert_eq!(
            m["apt"].vital.as_deref(),
            Some("apt is required by the system (Priority: required)")
        );
        let auditd = &m["auditd"];
        assert_eq!((auditd.ok, auditd.state), (false, "half-configured"));
        // Multi-arch: one line per architecture; a usable one wins, whatever the order.
        let m = parse_dpkg("libc6\tiU \t2.36-9\tno\toptional\tyes\nlibc6\tii \t2.36-9+deb12u14\tno\toptional\tno\n");
        assert_eq!(
            (m["libc6"].ok, m["libc6"].version.as_str()),
            (true, "2.36-9+deb12u14")
        );
        assert_eq!(
            m["libc6"].vital.as_deref(),
            Some("libc6 is protected (Protected: yes)")
        );
    }

    #[test]
    fn apt_simulations_are_read() {
        let s = AptSim::parse(SIM_INSTALL);
        let names: Vec<&str> = s.inst.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["libbrotli1", "libcurl4", "curl", "tree"]);
        assert_eq!(
            s.inst[3],
            Upgrade {
                name: "tree".into(),
                old: None,
                new: "2.1.0-1".into(),
                origin: "localhost".into()
            }
        );
        let s = AptSim::parse(SIM_UPGRADE);
        assert_eq!(s.inst.len(), 4);
        assert_eq!(
            s.inst[0],
            Upgrade {
                name: "libpam-modules-bin".into(),
                old: Some("1.5.2-6+deb12u2".into()),
                new: "1.5.2-6+deb12u3".into(),
                origin: "localhost".into()
            }
        );
        let s = AptSim::parse(SIM_REMOVE_COREUTILS);
        assert_eq!(s.essential, ["coreutils"]);
        assert_eq!(s.remv, [("coreutils".to_string(), "9.1-1".to_string())]);
        assert!(s.inst.is_empty());
        let s = AptSim::parse(SIM_REMOVE_LIBCURL);
        assert!(s.essential.is_empty());
        assert_eq!(s.remv.len(), 2);
        // A multi-arch name loses its architecture.
        let s = AptSim::parse("Inst libc6:i386 [2.36-9] (2.36-9+deb12u4 Debian:12.5/stable, Debian-Security:12/stable-security [i386])\n");
        assert_eq!(s.inst[0].name, "libc6");
        assert_eq!(
            s.inst[0].origin,
            "Debian:12.5/stable, Debian-Security:12/stable-security"
        );
        assert!(s.inst[0].is_security());
    }

    #[test]
    fn parameters_are_checked() {
        let f = debian_facts();
        assert_eq!(apt("name: tree\n").target(), "tree");
        assert_eq!(apt("name: [tree, curl, tree]\n").target(), "tree, curl");
        assert_eq!(apt("names: [tree, curl]\n").target(), "tree, curl");
        assert_eq!(
            build_error("name: tree\nnames: [curl]\n", &f),
            "2:8: give `name` or `names`, not both"
        );
        assert_eq!(
            build_error("state: present\n", &f),
            "1:1: `package` needs `name`"
        );
        assert_eq!(build_error("name: []\n", &f), "1:1: `package` needs `name`");
        assert_eq!(
            build_error("name: [tree, 'curl=7.88']\n", &f),
            "1:15: `curl=7.88` is not a package name (letters, digits and . _ + -; no versions or releases)"
        );
        assert_eq!(
            build_error("name: 'tree; reboot'\n", &f),
            "1:8: `tree; reboot` is not a package name (letters, digits and . _ + -; no versions or releases)"
        );
        assert_eq!(
            build_error("name: '-y'\n", &f),
            "1:8: `-y` is not a package name (letters, digits and . _ + -; no versions or releases)"
        );
        assert_eq!(
            build_error("name: tree\nstate: installed\n", &f),
            "2:8: `state` must be one of present, absent, latest, found `installed`"
        );
        assert_eq!(
            build_error("name: tree\nconfig: [etc/tree]\n", &f),
            "2:9: `config` must list absolute paths, found `etc/tree`"
        );
        let e = build_with("package", "name: tree\nstat: absent\n", &f)
            .err()
            .unwrap();
        assert_eq!(e.message, "unknown key `stat` for `package`");
        assert_eq!(e.help.as_deref(), Some("did you mean `state`?"));
    }

    #[test]
    fn a_host_without_a_package_manager_is_a_build_error() {
        let facts = Facts {
            pkg_manager: "none".into(),
            ..debian_facts()
        };
        let e = build_with("package", "name: tree\n", &facts).err().unwrap();
        assert_eq!(
            e.message,
            "`package` needs a package manager, and none was found on this host (apt-get, dnf or yum)"
        );
        assert!(e.help.unwrap().contains("facts.pkg_manager"));
        // Validating without a host (placeholder facts) builds, but never pretends to observe.
        let res = build_with("package", "name: tree\n", &Facts::placeholder()).unwrap();
        assert!(res.probes().is_empty());
        assert_eq!(
            diff(res.as_ref(), &Fake::new()).unwrap_err(),
            UNKNOWN_BACKEND
        );
    }

    #[test]
    fn present_installs_what_is_missing_in_one_command() {
        let t = debian(ok(""));
        let res = apt("name: [tree, curl, auditd, telnet]\n");
        assert_eq!(
            lines(&diff(res.as_ref(), &t).unwrap()),
            [
                "package tree: absent → installed",
                "package auditd: half-configured 1:3.0.9-1 → installed",
                "package telnet: absent → installed",
            ]
        );
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(
            t.changes(),
            ["LC_ALL=C DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install --no-install-recommends tree auditd telnet"]
        );
        // Nothing to do: nothing runs.
        let t = debian(ok(""));
        let res = apt("name: [curl, openssh-server]\n");
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
        apply(res.as_ref(), &t).unwrap();
        assert!(t.changes().is_empty());
    }

    #[test]
    fn latest_upgrades_outdated_packages() {
        let t = debian(ok(""));
        let res = apt("name: [libssl3, curl, tree]\nstate: latest\n");
        assert_eq!(
            lines(&diff(res.as_ref(), &t).unwrap()),
            [
                "package libssl3: 3.0.20-1~deb12u2 → 3.0.22-1~deb12u2 (latest)",
                "package tree: absent → installed",
            ]
        );
        apply(res.as_ref(), &t).unwrap();
        let cmds = t.changes();
        assert_eq!(cmds.len(), 1);
        assert!(
            cmds[0].ends_with("install --no-install-recommends tree libssl3"),
            "{cmds:?}"
        );
    }

    #[test]
    fn absent_removes_and_names_what_goes_with_it() {
        let t = debian(ok(SIM_REMOVE_LIBCURL));
        let res = apt("name: [libcurl4, rsyslog, telnet]\nstate: absent\n");
        assert_eq!(
            lines(&diff(res.as_ref(), &t).unwrap()),
            [
                "package libcurl4: installed 7.88.1-10+deb12u15 → absent",
                "package curl: installed 7.88.1-10+deb12u15 → absent (depends on a removed package)",
            ]
        );
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(
            t.changes(),
            ["LC_ALL=C DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold remove libcurl4"]
        );
        // Only absent packages: the simulation (which then prints nothing) is not consulted.
        let t = debian(status(100, "", "E: Unable to locate package telnet\n"));
        let res = apt("name: [rsyslog, telnet]\nstate: absent\n");
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
    }

    #[test]
    fn removing_what_the_system_needs_is_refused() {
        let cases = [
            (
                "coreutils",
                ok(SIM_REMOVE_COREUTILS),
                "refusing to remove coreutils: apt warns that this removes essential packages (coreutils)",
            ),
            (
                "dpkg",
                status(100, SIM_REMOVE_DPKG_OUT, SIM_REMOVE_DPKG_ERR),
                "refusing to remove dpkg: apt cannot remove it without breaking other packages: \
                 dash : Depends: dpkg (>= 1.19.1) but it is not going to be installed; \
                 grep : Depends: dpkg (>= 1.15.4) but it is not going to be installed or; \
                 install-info but it is not installable; \
                 perl-base : PreDepends: dpkg (>= 1.17.17) but it is not going to be installed; \
                 E: Error, pkgProblemResolver::Resolve generated breaks, this may be caused by held packages.",
            ),
            // Not Essential, so apt does not warn, but Priority: required.
            (
                "e2fsprogs",
                ok("Remv e2fsprogs [1.47.0-2+b2]\n"),
                "refusing to remove e2fsprogs: e2fsprogs is required by the system (Priority: required)",
            ),
            // Removing a library would take a required package with it.
            (
                "libsystemd0",
                ok("Remv apt [2.6.1]\nRemv libsystemd0 [252.39-1~deb12u2]\n"),
                "refusing to remove libsystemd0: it would also remove apt, and apt is required by the system (Priority: required)",
            ),
        ];
        for (name, sim, want) in cases {
            let t = debian(sim);
            let res = apt(&format!("name: {name}\nstate: absent\n"));
            assert_eq!(diff(res.as_ref(), &t).unwrap_err(), want);
            // Apply refuses the same way, before running anything.
            assert_eq!(apply(res.as_ref(), &t).unwrap_err(), want);
            assert!(t.changes().is_empty());
        }
    }

    #[test]
    fn every_package_task_shares_one_query() {
        let present = apt("name: tree\n");
        let latest = apt("name: [curl, libssl3]\nstate: latest\n");
        let absent = apt("name: telnet\nstate: absent\n");
        let (p, l, a) = (present.probes(), latest.probes(), absent.probes());
        assert_eq!(p, [Probe::Run(DPKG_INSTALLED.into())]);
        assert_eq!(
            l,
            [
                Probe::Run(DPKG_INSTALLED.into()),
                Probe::Run(APT_UPGRADES.into())
            ]
        );
        assert_eq!(a[0], p[0]);
        assert!(matches!(&a[1], Probe::Run(c) if c.starts_with("for p in telnet; do dpkg-query")));
        let patch = build_with("patch", "security_only: false\n", &debian_facts()).unwrap();
        assert!(
            patch.probes().contains(&l[1]),
            "patch shares the upgrade list"
        );
        // The same on dnf hosts.
        let present = dnf("name: tree\n");
        let latest = dnf("name: curl\nstate: latest\n");
        assert_eq!(present.probes(), [Probe::Run(RPM_INSTALLED.into())]);
        assert_eq!(latest.probes()[1], Probe::Run("dnf -q check-update".into()));
        let patch = build_with("patch", "security_only: false\n", &rocky_facts()).unwrap();
        let pp = patch.probes();
        assert!(pp.contains(&latest.probes()[0]) && pp.contains(&latest.probes()[1]));
    }

    #[test]
    fn installs_name_configuration_and_services() {
        let res = apt("name: [openssh-server, tree]\nconfig: [/etc/tree.d/]\n");
        assert_eq!(
            res.installs(),
            [
                Install {
                    package: "openssh-server".into(),
                    config_paths: vec!["/etc/ssh".into(), "/etc/tree.d".into()],
                    services: vec!["ssh".into()],
                },
                Install {
                    package: "tree".into(),
                    config_paths: vec!["/etc/tree.d".into()],
                    services: vec![],
                },
            ]
        );
        assert_eq!(
            dnf("name: openssh-server\n").installs()[0].services,
            ["sshd"]
        );
        assert_eq!(dnf("name: chrony\n").installs()[0].services, ["chronyd"]);
        let docker = apt("name: docker.io\n").installs();
        assert_eq!(docker[0].services, ["docker"]);
        assert!(docker[0].config_paths.contains(&"/etc/docker".to_string()));
        let sudo = apt("name: sudo\nstate: latest\n").installs();
        assert_eq!(sudo[0].config_paths, ["/etc/sudoers", "/etc/sudoers.d"]);
        // A removal installs nothing, so nothing is ordered after it.
        assert_eq!(apt("name: rsyslog\nstate: absent\n").installs(), []);
    }

    /// `rpm -qa` (RPM_INSTALLED) on Rocky 9, a selection: two kernels are installed at once.
    const RPM: &str = "kernel-core\t5.14.0-427.13.1.el9_4
curl\t7.76.1-29.el9_4
openssl-libs\t3.0.7-27.el9
kernel-core\t5.14.0-427.24.1.el9_4
systemd\t252-32.el9_4
tree\t1.8.0-10.el9
gpg-pubkey\tfd431d51-4ae0493b
";

    /// `dnf -q check-update` on Rocky 9: the list, a name too long for its column, and the
    /// obsoletes section that follows (not updates of their own).
    pub(crate) const CHECK_UPDATE: &str = "
curl.x86_64                          7.76.1-29.el9_4.1              baseos
kernel-core.x86_64                   5.14.0-427.31.1.el9_4          baseos
openssl-libs.x86_64                  1:3.0.7-28.el9_4               baseos
python3-setuptools-wheel-long-name.noarch
                                     53.0.0-12.el9_4.1              baseos
Obsoleting Packages
grub2-tools.x86_64                   1:2.06-82.el9_4                baseos
    grub2-tools.x86_64               1:2.06-80.el9                  @baseos
";

    #[test]
    fn rpm_and_dnf_output_is_read() {
        let m = parse_rpm(RPM);
        assert_eq!(
            m["kernel-core"].version,
            "5.14.0-427.13.1.el9_4, 5.14.0-427.24.1.el9_4"
        );
        assert!(m["curl"].ok && m["curl"].vital.is_none());
        let u = parse_check_update(CHECK_UPDATE);
        let names: Vec<(&str, &str)> = u
            .iter()
            .map(|u| (u.name.as_str(), u.new.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("curl", "7.76.1-29.el9_4.1"),
                ("kernel-core", "5.14.0-427.31.1.el9_4"),
                ("openssl-libs", "1:3.0.7-28.el9_4"),
                ("python3-setuptools-wheel-long-name", "53.0.0-12.el9_4.1"),
            ]
        );
        assert_eq!(u[0].origin, "baseos");
        // dnf5 heads the list with a word and writes "Obsoleting packages".
        let u = parse_check_update("Upgrades\nvim-minimal.x86_64  2:9.1.083-1.fc41  updates\n\nObsoleting packages\nfoo.noarch 1-1 updates\n");
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].name, "vim-minimal");
    }

    /// `dnf remove --assumeno` refusing a protected package (dnf 4, as CentOS Stream 9 prints
    /// it), and listing dependents it would remove too.
    const DNF_PROTECTED: &str = "Error: \n Problem: The operation would result in removing the following protected packages: systemd-udev\n(try to add '--skip-broken' to skip uninstallable packages or '--nobest' to use not only best candidate packages)\n";
    const DNF_REMOVE: &str =
        "================================================================================
 Package              Arch        Version                  Repository     Size
================================================================================
Removing:
 curl                 x86_64      7.76.1-29.el9_4          @baseos       496 k
Removing dependent packages:
 python3-pycurl-with-a-long-name
                      x86_64      7.43.0.6-8.el9           @appstream    541 k
 tree                 x86_64      1.8.0-10.el9             @baseos       113 k
Removing unused dependencies:
 libpsl               x86_64      0.21.1-5.el9             @baseos        73 k

Transaction Summary
================================================================================
Remove  4 Packages

Freed space: 1.2 M
Operation aborted.
";

    #[test]
    fn dnf_removals_are_simulated_and_protected_packages_refused() {
        let r = DnfRemoval::parse(DNF_REMOVE);
        assert_eq!(r.named, ["curl"]);
        assert_eq!(
            r.others,
            ["python3-pycurl-with-a-long-name", "tree", "libpsl"]
        );
        assert_eq!(r.error, None);

        let t = Fake::new()
            .on("rpm -qa", ok(RPM))
            .on("--assumeno", ok(DNF_PROTECTED));
        let res = dnf("name: systemd\nstate: absent\n");
        assert_eq!(
            diff(res.as_ref(), &t).unwrap_err(),
            "refusing to remove systemd: dnf says: Problem: The operation would result in removing the following protected packages: systemd-udev"
        );
        assert!(apply(res.as_ref(), &t).is_err());
        assert!(t.changes().is_empty());
        // dnf 5 words its refusal differently.
        let r = DnfRemoval::parse("Failed to resolve the transaction:\nProblem: The operation would result in removing the following protected packages: python3-dnf\n");
        assert!(r
            .error
            .unwrap()
            .ends_with("protected packages: python3-dnf"));

        let t = Fake::new()
            .on("rpm -qa", ok(RPM))
            .on("--assumeno", ok(DNF_REMOVE));
        let res = dnf("name: curl\nstate: absent\n");
        assert_eq!(
            lines(&diff(res.as_ref(), &t).unwrap()),
            [
                "package curl: installed 7.76.1-29.el9_4 → absent",
                "package python3-pycurl-with-a-long-name: installed → absent (goes with a removed package)",
                "package tree: installed 1.8.0-10.el9 → absent (goes with a removed package)",
                "package libpsl: installed → absent (goes with a removed package)",
            ]
        );
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(t.changes(), ["LC_ALL=C dnf -y -q remove curl"]);
    }

    #[test]
    fn dnf_installs_and_upgrades_in_one_command() {
        let t = Fake::new()
            .on("rpm -qa", ok(RPM))
            .on("check-update", status(100, CHECK_UPDATE, ""));
        let res = dnf("name: [curl, tree, nginx]\nstate: latest\n");
        assert_eq!(
            lines(&diff(res.as_ref(), &t).unwrap()),
            [
                "package curl: 7.76.1-29.el9_4 → 7.76.1-29.el9_4.1 (latest)",
                "package nginx: absent → installed",
            ]
        );
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(
            t.changes(),
            ["LC_ALL=C dnf -y -q install nginx && LC_ALL=C dnf -y -q upgrade curl"]
        );
        // check-update failing (status 1: no network, broken repository) fails the task.
        let t = Fake::new().on("rpm -qa", ok(RPM)).on(
            "check-update",
            status(
                1,
                "",
                "Error: Failed to download metadata for repo 'baseos'\n",
            ),
        );
        assert_eq!(
            diff(res.as_ref(), &t).unwrap_err(),
            "cannot list updates (`dnf check-update` exited with status 1): Error: Failed to download metadata for repo 'baseos'"
        );
    }

    #[test]
    fn failures_say_what_ran_and_why() {
        let t = debian(ok("")).on(
            "apt-get -y",
            status(
                100,
                "Reading package lists...\n",
                "E: Unable to locate package telnet\n",
            ),
        );
        let res = apt("name: telnet\n");
        assert_eq!(
            apply(res.as_ref(), &t).unwrap_err(),
            "`apt-get install telnet` failed (exit status 100): E: Unable to locate package telnet"
        );
        let t = Fake::new().on(INSTALLED, status(127, "", "sh: 1: dpkg-query: not found\n"));
        assert_eq!(
            diff(res.as_ref(), &t).unwrap_err(),
            "cannot list installed packages: sh: 1: dpkg-query: not found"
        );
    }

    #[test]
    fn odd_output_never_panics() {
        let junk = [
            "",
            "\n\n",
            "Inst",
            "Inst x",
            "Inst x [",
            "Inst x [1] (",
            "Inst x [1] (2",
            "Inst x (2 [amd64])",
            "Remv",
            "Remv x [",
            "WARNING: The following essential packages will be removed.\n",
            "x\t",
            "\t\t\t\t\t\t\t",
            "a.b\n   c\nd.e f",
            "Removing:\n x\nError:",
            "é\u{0}\t😀\n",
        ];
        for j in junk {
            let _ = parse_dpkg(j);
            let _ = parse_rpm(j);
            let _ = AptSim::parse(j);
            let _ = parse_check_update(j);
            let _ = DnfRemoval::parse(j);
            let _ = tail(j, 3);
        }
        assert_eq!(AptSim::parse("Inst x (2 [amd64])\n").inst[0].origin, "");
        assert_eq!(AptSim::parse("Inst x [1] (2\n").inst, []);
    }
}
