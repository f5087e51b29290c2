//! `patch`: the host's pending updates installed (security fixes only, by default), and a reboot
//! after them when the playbook allows one.
//!
//! Check mode reports the pending updates as drift: how many, and which. They are read with the
//! same read-only query `package` uses for `state: latest`, so a host with both kinds of task is
//! asked once. Whether a reboot is required is read from the host (Debian:
//! /var/run/reboot-required; RHEL: `needs-restarting -r`). SLICE reboots only with `reboot: true`
//! on a running system, and then only after the run: the reboot waits for the run's lock, so no
//! later task is cut short.

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::package::{run, Backend, Upgrade, APT_GET, APT_OPTS, UNKNOWN_BACKEND};
use crate::transport::{Output, Probe, Transport};

/// Created by Debian and Ubuntu packages whose update needs a reboot to take effect; /run is a
/// tmpfs, so a reboot removes it.
const REBOOT_FILE: &str = "/var/run/reboot-required";
/// The packages that asked for it, one per line.
const REBOOT_PKGS: &str = "/var/run/reboot-required.pkgs";
/// RHEL: exits 1 when core packages (kernel, glibc, systemd, …) changed since boot, 0 when not.
const NEEDS_RESTARTING: &str = "LC_ALL=C needs-restarting -r";
/// The transient unit that reboots after the run; it exists from its scheduling to the reboot.
const REBOOT_UNIT: &str = "/run/systemd/transient/slice-reboot.service";
/// Schedules the reboot as a transient unit, outside the SSH session. It waits for the run locks
/// of both transports (SSH: /run/slice.lock, local: /run/lock/slice.lock), so it comes when the
/// run that scheduled it has finished; after an hour of waiting it gives up rather than cut a run
/// short, and the next run schedules it again.
const SCHEDULE_REBOOT: &str = "systemd-run --unit=slice-reboot --description='SLICE: reboot to finish patching' \
     /bin/sh -c 'flock -w 3600 /run/slice.lock true && flock -w 3600 /run/lock/slice.lock true && systemctl reboot'";

pub struct Patch {
    security_only: bool,
    /// `reboot: true`, on a running system.
    reboot: bool,
    backend: Backend,
}

/// Whether the host needs a reboot for updates already installed.
#[derive(Debug, PartialEq)]
enum Reboot {
    No,
    /// With the packages that asked for it, when the host says.
    Yes(Vec<String>),
    /// The host cannot tell (RHEL without `needs-restarting`).
    Unknown(String),
}

impl Reboot {
    fn describe(&self) -> String {
        match self {
            Reboot::No => "no".into(),
            Reboot::Yes(p) if p.is_empty() => "yes".into(),
            Reboot::Yes(p) => format!("yes ({})", p.join(", ")),
            Reboot::Unknown(why) => format!("unknown ({why})"),
        }
    }
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan {
    pending: Vec<Upgrade>,
    reboot_now: Reboot,
    /// A reboot is already scheduled by an earlier run.
    scheduled: bool,
}

impl Patch {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let security_only = p.opt_bool("security_only")?.unwrap_or(true);
        let reboot = p.opt_bool("reboot")?.unwrap_or(false);
        p.finish()?;
        let backend = Backend::of(p, ctx)?;
        // Only a running system reboots; an offline root has nothing to reboot.
        let reboot = reboot && ctx.live;
        if reboot && !matches!(ctx.facts.init.as_str(), "systemd" | "") {
            let at = p.node("reboot").map_or(p.loc(), |n| &n.loc);
            return Err(Error::at(
                at,
                format!(
                    "`reboot: true` needs systemd on the host to schedule the reboot, and its init is {}",
                    ctx.facts.init
                ),
            ));
        }
        Ok(Box::new(Patch {
            security_only,
            reboot,
            backend,
        }))
    }

    /// `security updates` or `updates`.
    fn what(&self) -> &'static str {
        if self.security_only {
            "security updates"
        } else {
            "updates"
        }
    }

    fn plan(&self, obs: &Observed) -> std::result::Result<Plan, String> {
        let mut pending = self.backend.upgrades(obs.run(0)?)?;
        let reboot_now = match self.backend {
            Backend::Apt => match obs.stat(1)? {
                None => Reboot::No,
                Some(_) => Reboot::Yes(lines(obs.read(2)?.unwrap_or_default())),
            },
            Backend::Rpm(_) => {
                let installed = self.backend.installed(obs.run(2)?)?;
                for u in &mut pending {
                    u.old = installed.get(&u.name).map(|i| i.version.clone());
                }
                needs_restarting(obs.run(1)?)
            }
            Backend::Unknown => return Err(UNKNOWN_BACKEND.to_string()),
        };
        // dnf filters security updates itself (`--security`); apt's list is filtered by origin.
        if self.security_only && self.backend == Backend::Apt {
            pending.retain(Upgrade::is_security);
        }
        let scheduled = self.reboot && obs.stat(3)?.is_some();
        Ok(Plan {
            pending,
            reboot_now,
            scheduled,
        })
    }

    /// The command installing the pending updates.
    fn upgrade_command(&self, pending: &[Upgrade]) -> (String, String) {
        match self.backend {
            Backend::Apt if self.security_only => {
                // Only the security updates, by name. `apt-get install` marks what it names as
                // installed by hand, which would keep libraries from being autoremoved later:
                // the marks of automatically installed ones are put back, and new packages (the
                // dependencies an update brings) are marked automatic.
                let (ups, new): (Vec<&Upgrade>, Vec<&Upgrade>) =
                    pending.iter().partition(|u| u.old.is_some());
                let names = |v: &[&Upgrade]| {
                    v.iter()
                        .map(|u| u.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let (ups, new) = (names(&ups), names(&new));
                let all = [ups.as_str(), new.as_str()]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
                let mut auto = Vec::new();
                if !new.is_empty() {
                    auto.push(new.clone());
                }
                if !ups.is_empty() {
                    auto.push(format!("$(apt-mark showauto {ups})"));
                }
                (
                    format!("`apt-get install {all}`"),
                    format!(
                        "set -- {}; {APT_GET} {APT_OPTS} install {all} && \
                         if [ \"$#\" -gt 0 ]; then apt-mark auto \"$@\" >/dev/null; fi",
                        auto.join(" ")
                    ),
                )
            }
            Backend::Apt => (
                "`apt-get upgrade`".into(),
                format!("{APT_GET} {APT_OPTS} --with-new-pkgs upgrade"),
            ),
            Backend::Rpm(tool) => {
                let security = if self.security_only {
                    " --security"
                } else {
                    ""
                };
                (
                    format!("`{tool} upgrade{security}`"),
                    format!("LC_ALL=C {tool} -y -q upgrade{security}"),
                )
            }
            Backend::Unknown => (String::new(), String::new()),
        }
    }

    /// Whether the host needs a reboot now, asked again after the upgrade.
    fn reboot_needed(&self, t: &dyn Transport) -> std::result::Result<bool, String> {
        match self.backend {
            Backend::Apt => t
                .stat(REBOOT_FILE)
                .map(|s| s.is_some())
                .map_err(|e| format!("cannot read {REBOOT_FILE}: {e}")),
            Backend::Rpm(_) => {
                let out = t
                    .run(NEEDS_RESTARTING)
                    .map_err(|e| format!("cannot run needs-restarting: {e}"))?;
                match needs_restarting(&out) {
                    Reboot::No => Ok(false),
                    Reboot::Yes(_) => Ok(true),
                    Reboot::Unknown(why) => {
                        Err(format!("cannot tell whether a reboot is required: {why}"))
                    }
                }
            }
            Backend::Unknown => Err(UNKNOWN_BACKEND.to_string()),
        }
    }
}

/// `needs-restarting -r`: status 1 and the packages as `  * name` lines, or 0.
fn needs_restarting(out: &Output) -> Reboot {
    match out.status {
        0 => Reboot::No,
        1 => Reboot::Yes(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().strip_prefix("* "))
                .map(|s| s.trim().to_string())
                .collect(),
        ),
        127 => Reboot::Unknown("needs-restarting is not installed: it comes with dnf-utils".into()),
        s => Reboot::Unknown(format!(
            "needs-restarting exited with status {s}: {}",
            out.message()
        )),
    }
}

/// Non-empty lines, trimmed.
fn lines(data: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(data)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.dedup();
    v
}

impl Resource for Patch {
    fn target(&self) -> String {
        if self.security_only {
            "security updates".into()
        } else {
            "all updates".into()
        }
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v: Vec<Probe> = self
            .backend
            .upgrades_probe(self.security_only)
            .into_iter()
            .collect();
        match self.backend {
            Backend::Apt => {
                v.push(Probe::Stat(REBOOT_FILE.into()));
                v.push(Probe::Read(REBOOT_PKGS.into()));
            }
            Backend::Rpm(_) => {
                v.push(Probe::Run(NEEDS_RESTARTING.into()));
                // dnf's list has no installed versions; the shared installed list does.
                v.extend(self.backend.installed_probe());
            }
            Backend::Unknown => return v,
        }
        if self.reboot {
            v.push(Probe::Stat(REBOOT_UNIT.into()));
        }
        v
    }

    /// After the updates: whether the host now needs a reboot (and whether one is scheduled).
    fn note(&self, obs: &Observed) -> Option<String> {
        let plan = self.plan(obs).ok()?;
        Some(match (&plan.reboot_now, plan.scheduled) {
            (_, true) => "reboot scheduled after this run".to_string(),
            (r, false) => format!("reboot required: {}", r.describe()),
        })
    }

    fn diff(&self, obs: &Observed) -> std::result::Result<Vec<Change>, String> {
        let plan = self.plan(obs)?;
        let mut v = Vec::new();
        if !plan.pending.is_empty() {
            let names: Vec<String> = plan
                .pending
                .iter()
                .map(|u| match &u.old {
                    Some(old) => format!("{} {old} → {}", u.name, u.new),
                    None => format!("{} {} (new)", u.name, u.new),
                })
                .collect();
            v.push(Change::new(
                format!("pending {}", self.what()),
                Some(format!("{} pending", plan.pending.len())),
                Some("0 pending".into()),
            ));
            v.push(Change::new("upgrade", None, Some(names.join(", "))));
            if self.reboot {
                let when = if plan.scheduled {
                    "already scheduled"
                } else {
                    "after this run, if the updates require one"
                };
                v.push(Change::new("reboot", None, Some(when.into())));
            } else {
                v.push(Change::new(
                    "reboot required now",
                    None,
                    Some(plan.reboot_now.describe()),
                ));
            }
        } else if self.reboot && !plan.scheduled {
            match &plan.reboot_now {
                Reboot::No => {}
                Reboot::Yes(_) => v.push(Change::new(
                    "reboot",
                    Some(format!("required: {}", plan.reboot_now.describe())),
                    Some("after this run".into()),
                )),
                Reboot::Unknown(why) => {
                    return Err(format!("cannot tell whether a reboot is required: {why}"))
                }
            }
        }
        Ok(v)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> std::result::Result<(), String> {
        let plan = self.plan(obs)?;
        if !plan.pending.is_empty() {
            let (what, cmd) = self.upgrade_command(&plan.pending);
            run(t, &what, &cmd)?;
        }
        // Whether the updates need a reboot is known only once they are installed.
        if self.reboot && !plan.scheduled && self.reboot_needed(t)? {
            run(t, "scheduling the reboot (systemd-run)", SCHEDULE_REBOOT)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::Facts;
    use crate::resources::package::tests::{
        apply, diff, lines, ok, rocky_facts, status, Fake, CHECK_UPDATE, SIM_UPGRADE,
    };
    use crate::resources::testing::{build_with, debian_facts};

    /// `apt-get -s --with-new-pkgs upgrade` on a lab host (Debian 12) with a second repository
    /// whose Release file says `Label: Debian-Security`, `Suite: stable-security`, holding the
    /// new versions of libssl3, libexpat1 and tzdata: apt names both origins of those three.
    const SIM_SECURITY: &str = "Reading package lists...
Building dependency tree...
Calculating upgrade...
The following packages will be upgraded:
  apt libapt-pkg6.0 libexpat1 liblzma5 libpam-modules libpam-modules-bin
  libpam-runtime libpam0g libpcre2-8-0 libpython3.11-minimal
  libpython3.11-stdlib libssl3 libzstd1 perl-base python3.11
  python3.11-minimal tzdata zlib1g
18 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.
Inst perl-base [5.36.0-7+deb12u3] (5.36.0-7+deb12u4 localhost [amd64])
Conf perl-base (5.36.0-7+deb12u4 localhost [amd64])
Inst liblzma5 [5.4.1-1+deb12u1] (5.4.1-1+deb12u2 localhost [amd64])
Conf liblzma5 (5.4.1-1+deb12u2 localhost [amd64])
Inst libzstd1 [1.5.4+dfsg2-5] (1.5.4+dfsg2-5+deb12u1 localhost [amd64])
Conf libzstd1 (1.5.4+dfsg2-5+deb12u1 localhost [amd64])
Inst zlib1g [1:1.2.13.dfsg-1] (1:1.2.13.dfsg-1+deb12u1 localhost [amd64])
Conf zlib1g (1:1.2.13.dfsg-1+deb12u1 localhost [amd64])
Inst libapt-pkg6.0 [2.6.1] (2.6.2 localhost [amd64])
Conf libapt-pkg6.0 (2.6.2 localhost [amd64])
Inst apt [2.6.1] (2.6.2 localhost [amd64])
Conf apt (2.6.2 localhost [amd64])
Inst libpam0g [1.5.2-6+deb12u2] (1.5.2-6+deb12u3 localhost [amd64])
Conf libpam0g (1.5.2-6+deb12u3 localhost [amd64])
Inst libpam-modules-bin [1.5.2-6+deb12u2] (1.5.2-6+deb12u3 localhost [amd64]) [libpam-modules:amd64 on libpam-modules-bin:amd64] [libpam-modules:amd64 ]
Conf libpam-modules-bin (1.5.2-6+deb12u3 localhost [amd64]) [libpam-modules:amd64 ]
Inst libpam-modules [1.5.2-6+deb12u2] (1.5.2-6+deb12u3 localhost [amd64])
Conf libpam-modules (1.5.2-6+deb12u3 localhost [amd64])
Inst libssl3 [3.0.20-1~deb12u2] (3.0.22-1~deb12u2 localhost, Debian-Security:12/stable-security [amd64])
Inst python3.11 [3.11.2-6+deb12u8] (3.11.2-6+deb12u9 localhost [amd64]) []
Inst python3.11-minimal [3.11.2-6+deb12u8] (3.11.2-6+deb12u9 localhost [amd64]) []
Inst libpython3.11-stdlib [3.11.2-6+deb12u8] (3.11.2-6+deb12u9 localhost [amd64]) []
Inst libpython3.11-minimal [3.11.2-6+deb12u8] (3.11.2-6+deb12u9 localhost [amd64])
Inst libexpat1 [2.5.0-1+deb12u2] (2.5.0-1+deb12u5 localhost, Debian-Security:12/stable-security [amd64])
Inst libpam-runtime [1.5.2-6+deb12u2] (1.5.2-6+deb12u3 localhost [all])
Conf libpam-runtime (1.5.2-6+deb12u3 localhost [all])
Inst libpcre2-8-0 [10.42-1] (10.42-1+deb12u2 localhost [amd64])
Conf libpcre2-8-0 (10.42-1+deb12u2 localhost [amd64])
Inst tzdata [2026b-0+deb12u1] (2026f-0+deb12u1 localhost, Debian-Security:12/stable-security [all])
Conf libssl3 (3.0.22-1~deb12u2 localhost, Debian-Security:12/stable-security [amd64])
Conf python3.11 (3.11.2-6+deb12u9 localhost [amd64])
Conf python3.11-minimal (3.11.2-6+deb12u9 localhost [amd64])
Conf libpython3.11-stdlib (3.11.2-6+deb12u9 localhost [amd64])
Conf libpython3.11-minimal (3.11.2-6+deb12u9 localhost [amd64])
Conf libexpat1 (2.5.0-1+deb12u5 localhost, Debian-Security:12/stable-security [amd64])
Conf tzdata (2026f-0+deb12u1 localhost, Debian-Security:12/stable-security [all])
";

    /// A kernel security update as Debian 12 ships it: the meta package is upgraded and pulls a
    /// new ABI package, which `--with-new-pkgs` installs (lines in apt's format).
    const SIM_KERNEL: &str =
        "Inst linux-image-6.1.0-22-amd64 (6.1.94-1 Debian-Security:12/stable-security [amd64])
Inst linux-image-amd64 [6.1.90-1] (6.1.94-1 Debian-Security:12/stable-security [amd64])
Inst libc-bin [2.36-9+deb12u4] (2.36-9+deb12u7 Debian:12.6/stable [amd64])
Conf linux-image-6.1.0-22-amd64 (6.1.94-1 Debian-Security:12/stable-security [amd64])
Conf linux-image-amd64 (6.1.94-1 Debian-Security:12/stable-security [amd64])
";

    const APT_SIM: &str = "--with-new-pkgs upgrade";
    const FULL_UPGRADE: &str = "LC_ALL=C DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --with-new-pkgs upgrade";

    fn patch(yaml: &str) -> Box<dyn Resource> {
        build_with("patch", yaml, &debian_facts()).unwrap()
    }

    #[test]
    fn security_only_takes_the_updates_from_security_archives() {
        let t = Fake::new().on(APT_SIM, ok(SIM_SECURITY));
        let res = patch("{}\n");
        assert_eq!(res.target(), "security updates");
        assert_eq!(
            lines(&diff(res.as_ref(), &t).unwrap()),
            [
                "pending security updates: 3 pending → 0 pending",
                "upgrade: libssl3 3.0.20-1~deb12u2 → 3.0.22-1~deb12u2, libexpat1 2.5.0-1+deb12u2 → 2.5.0-1+deb12u5, tzdata 2026b-0+deb12u1 → 2026f-0+deb12u1",
                "reboot required now: no",
            ]
        );
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(
            t.changes(),
            ["set -- $(apt-mark showauto libssl3 libexpat1 tzdata); LC_ALL=C DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install libssl3 libexpat1 tzdata && if [ \"$#\" -gt 0 ]; then apt-mark auto \"$@\" >/dev/null; fi"]
        );
        // A flat repository without origins (the lab's) has no security updates at all.
        let t = Fake::new().on(APT_SIM, ok(SIM_UPGRADE));
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
    }

    #[test]
    fn a_kernel_update_brings_a_new_package_marked_automatic() {
        let t = Fake::new()
            .on(APT_SIM, ok(SIM_KERNEL))
            .with_file(REBOOT_FILE, "")
            .with_file(REBOOT_PKGS, "libc6\nlibc6\nlinux-image-6.1.0-21-amd64\n");
        let res = patch("security_only: true\n");
        assert_eq!(
            lines(&diff(res.as_ref(), &t).unwrap()),
            [
                "pending security updates: 2 pending → 0 pending",
                "upgrade: linux-image-6.1.0-22-amd64 6.1.94-1 (new), linux-image-amd64 6.1.90-1 → 6.1.94-1",
                "reboot required now: yes (libc6, linux-image-6.1.0-21-amd64)",
            ]
        );
        apply(res.as_ref(), &t).unwrap();
        let cmds = t.changes();
        assert!(
            cmds[0].starts_with(
                "set -- linux-image-6.1.0-22-amd64 $(apt-mark showauto linux-image-amd64); "
            ) && cmds[0].contains(" install linux-image-amd64 linux-image-6.1.0-22-amd64 && "),
            "{cmds:?}"
        );
        // `reboot: false`: whatever the host says, nothing reboots it.
        assert_eq!(cmds.len(), 1);
    }

    #[test]
    fn all_updates_upgrade_everything_in_one_command() {
        let t = Fake::new().on(APT_SIM, ok(SIM_SECURITY));
        let res = patch("security_only: false\n");
        assert_eq!(res.target(), "all updates");
        let changes = diff(res.as_ref(), &t).unwrap();
        assert_eq!(
            lines(&changes)[0],
            "pending updates: 18 pending → 0 pending"
        );
        assert_eq!(changes[1].after.as_deref().unwrap().split(", ").count(), 18);
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(t.changes(), [FULL_UPGRADE]);
    }

    #[test]
    fn nothing_pending_is_in_sync_even_when_a_reboot_is_due() {
        let nothing = "Reading package lists...\nBuilding dependency tree...\nCalculating upgrade...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n";
        let t = Fake::new()
            .on(APT_SIM, ok(nothing))
            .with_file(REBOOT_FILE, "");
        for yaml in ["{}\n", "security_only: false\n"] {
            let res = patch(yaml);
            assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
            apply(res.as_ref(), &t).unwrap();
        }
        assert!(t.changes().is_empty());
        // An interrupted dpkg run makes apt refuse to simulate: a failure, not "in sync".
        let t = Fake::new().on(
            APT_SIM,
            status(100, "", "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem.\n"),
        );
        assert_eq!(
            diff(patch("{}\n").as_ref(), &t).unwrap_err(),
            "cannot simulate an upgrade: E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem."
        );
    }

    #[test]
    fn reboot_true_reboots_after_the_run_when_required() {
        let res = patch("security_only: false\nreboot: true\n");
        assert!(res.probes().contains(&Probe::Stat(REBOOT_UNIT.into())));
        // Updates pending: the reboot is decided after they are installed.
        let t = Fake::new()
            .on(APT_SIM, ok(SIM_UPGRADE))
            .with_file(REBOOT_FILE, "");
        assert_eq!(
            lines(&diff(res.as_ref(), &t).unwrap())[2],
            "reboot: after this run, if the updates require one"
        );
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(t.changes(), [FULL_UPGRADE, SCHEDULE_REBOOT]);
        // …and not when the updates do not require one.
        let t = Fake::new().on(APT_SIM, ok(SIM_UPGRADE));
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(t.changes(), [FULL_UPGRADE]);
        // Nothing pending, but an earlier upgrade left a reboot due.
        let t = Fake::new()
            .with_file(REBOOT_FILE, "")
            .with_file(REBOOT_PKGS, "linux-image-6.1.0-22-amd64\n");
        assert_eq!(
            lines(&diff(res.as_ref(), &t).unwrap()),
            ["reboot: required: yes (linux-image-6.1.0-22-amd64) → after this run"]
        );
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(t.changes(), [SCHEDULE_REBOOT]);
        // Once scheduled, it is in sync (and verification after apply finds it so).
        let t = Fake::new()
            .with_file(REBOOT_FILE, "")
            .with_file(REBOOT_UNIT, "");
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
        apply(res.as_ref(), &t).unwrap();
        assert!(t.changes().is_empty());
    }

    #[test]
    fn only_a_running_systemd_host_is_rebooted() {
        let offline = Facts {
            live: false,
            ..debian_facts()
        };
        let res = build_with("patch", "reboot: true\n", &offline).unwrap();
        assert!(!res.probes().contains(&Probe::Stat(REBOOT_UNIT.into())));
        let t = Fake::new().with_file(REBOOT_FILE, "");
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
        apply(res.as_ref(), &t).unwrap();
        assert!(t.changes().is_empty());

        let sysv = Facts {
            init: "sysvinit".into(),
            ..debian_facts()
        };
        let e = build_with("patch", "reboot: true\n", &sysv).err().unwrap();
        assert_eq!(
            e.message,
            "`reboot: true` needs systemd on the host to schedule the reboot, and its init is sysvinit"
        );
        assert_eq!(e.loc.unwrap().line, 1);
        // Without a reboot the init system does not matter.
        assert!(build_with("patch", "reboot: false\n", &sysv).is_ok());
        let e = build_with("patch", "reboot: yes please\n", &sysv)
            .err()
            .unwrap();
        assert_eq!(
            e.message,
            "`reboot` of `patch` must be true or false, found a string"
        );
        let e = build_with("patch", "security: true\n", &debian_facts())
            .err()
            .unwrap();
        assert_eq!(e.message, "unknown key `security` for `patch`");
        let none = Facts {
            pkg_manager: "none".into(),
            ..debian_facts()
        };
        assert!(build_with("patch", "{}\n", &none).is_err());
    }

    /// `rpm -qa` for the packages of CHECK_UPDATE.
    const RPM: &str =
        "curl\t7.76.1-29.el9_4\nkernel-core\t5.14.0-427.24.1.el9_4\nopenssl-libs\t3.0.7-27.el9\n";

    /// `needs-restarting -r` after a kernel and glibc update (status 1).
    const NEEDS_REBOOT: &str = "Core libraries or services have been updated since boot-up:
  * glibc
  * kernel

Reboot is required to fully utilize these updates.
More information: https://access.redhat.com/solutions/27943
";

    #[test]
    fn dnf_lists_security_updates_itself() {
        let res = build_with("patch", "{}\n", &rocky_facts()).unwrap();
        assert_eq!(
            res.probes(),
            [
                Probe::Run("dnf -q check-update --security".into()),
                Probe::Run(NEEDS_RESTARTING.into()),
                Probe::Run(crate::resources::package::RPM_INSTALLED.into()),
            ]
        );
        let t = Fake::new()
            .on("check-update", status(100, CHECK_UPDATE, ""))
            .on("rpm -qa", ok(RPM))
            .on("needs-restarting", status(1, NEEDS_REBOOT, ""));
        assert_eq!(
            lines(&diff(res.as_ref(), &t).unwrap()),
            [
                "pending security updates: 4 pending → 0 pending",
                "upgrade: curl 7.76.1-29.el9_4 → 7.76.1-29.el9_4.1, kernel-core 5.14.0-427.24.1.el9_4 → 5.14.0-427.31.1.el9_4, \
                 openssl-libs 3.0.7-27.el9 → 1:3.0.7-28.el9_4, python3-setuptools-wheel-long-name 53.0.0-12.el9_4.1 (new)",
                "reboot required now: yes (glibc, kernel)",
            ]
        );
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(t.changes(), ["LC_ALL=C dnf -y -q upgrade --security"]);

        let yum = Facts {
            pkg_manager: "yum".into(),
            ..rocky_facts()
        };
        let res = build_with("patch", "security_only: false\nreboot: true\n", &yum).unwrap();
        assert_eq!(res.probes()[0], Probe::Run("yum -q check-update".into()));
        apply(res.as_ref(), &t).unwrap();
        assert_eq!(
            t.changes()[1..],
            [
                "LC_ALL=C yum -y -q upgrade",
                NEEDS_RESTARTING,
                SCHEDULE_REBOOT
            ]
        );
    }

    #[test]
    fn without_needs_restarting_the_reboot_state_is_unknown() {
        let t = Fake::new()
            .on("check-update", status(0, "", ""))
            .on("rpm -qa", ok(RPM))
            .on(
                "needs-restarting",
                status(127, "", "sh: 1: needs-restarting: not found\n"),
            );
        let quiet = build_with("patch", "{}\n", &rocky_facts()).unwrap();
        assert_eq!(diff(quiet.as_ref(), &t).unwrap(), []);
        let reboot = build_with("patch", "reboot: true\n", &rocky_facts()).unwrap();
        assert_eq!(
            diff(reboot.as_ref(), &t).unwrap_err(),
            "cannot tell whether a reboot is required: needs-restarting is not installed: it comes with dnf-utils"
        );
    }
}
