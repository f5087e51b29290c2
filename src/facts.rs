//! Facts about a target that playbooks test in `when:`, use in templates (`facts.*`), and that
//! choose a resource's backend (apt or dnf, systemd or init.d). Gathered in one batch.

use serde::Serialize;

use crate::transport::{Answer, Probe, Transport};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Facts {
    pub hostname: String,
    /// `ID` from os-release: debian, ubuntu, rocky, …
    pub os_id: String,
    /// `VERSION_ID` from os-release: 12, 24.04, 9.4, …
    pub os_version: String,
    /// debian, redhat, suse, alpine, arch or unknown (from `ID` and `ID_LIKE`).
    pub os_family: String,
    pub os_name: String,
    /// A running system (false under `--root`).
    pub live: bool,
    /// apt, dnf, yum or none.
    pub pkg_manager: String,
    /// systemd (running as PID 1, or installed as init in an offline root), sysvinit, or none.
    pub init: String,
    pub docker: Docker,
    pub apparmor: Lsm,
    pub selinux: Lsm,
    /// What the target runs in: none, container, vm, or unknown; `virtualization_type` says
    /// which (docker, systemd-nspawn, kvm, …) where it is known.
    pub virtualization: String,
    pub virtualization_type: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Docker {
    pub installed: bool,
    pub running: bool,
    /// The engine's version (`dockerd --version`), when it could be asked.
    pub version: String,
}

/// A Linux security module's state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Lsm {
    /// The running kernel enforces it (never true for an offline root).
    pub enabled: bool,
    /// enforcing, permissive, complain, disabled or absent, as far as it can be known.
    pub mode: String,
    /// Its tools or configuration are installed on the target.
    pub installed: bool,
}

/// The probes, in the order `from_answers` reads them.
fn probes(live: bool) -> Vec<Probe> {
    let read = |p: &str| Probe::Read(p.to_string());
    let stat = |p: &str| Probe::Stat(p.to_string());
    let mut v = vec![
        read("/etc/os-release"),
        read("/usr/lib/os-release"),
        read(if live {
            "/proc/sys/kernel/hostname"
        } else {
            "/etc/hostname"
        }),
        stat("/usr/bin/apt-get"),
        stat("/usr/bin/dnf"),
        stat("/usr/bin/yum"),
        stat("/run/systemd/system"),
        stat("/lib/systemd/systemd"),
        stat("/usr/lib/systemd/systemd"),
        stat("/etc/init.d"),
        stat("/usr/bin/dockerd"),
        stat("/usr/sbin/dockerd"),
        stat("/run/docker.sock"),
        read("/sys/module/apparmor/parameters/enabled"),
        stat("/etc/apparmor.d"),
        read("/sys/fs/selinux/enforce"),
        read("/etc/selinux/config"),
        read("/run/systemd/container"),
        stat("/.dockerenv"),
        stat("/run/.containerenv"),
    ];
    if live {
        // Only a running system can answer commands; an offline root may not even have a shell.
        v.push(Probe::Run(
            "(command -v systemd-detect-virt >/dev/null && systemd-detect-virt) 2>/dev/null; true"
                .into(),
        ));
        v.push(Probe::Run(
            "(dockerd --version || docker --version) 2>/dev/null; true".into(),
        ));
    }
    v
}

impl Facts {
    /// Reads the facts through the transport, in one batch.
    pub fn gather(t: &dyn Transport) -> Facts {
        let live = t.live();
        let probes = probes(live);
        let answers = t.observe(&probes);
        Facts::from_answers(live, &answers)
    }

    /// Facts with every field present and empty, for validating without a host.
    pub fn placeholder() -> Facts {
        Facts::default()
    }

    fn from_answers(live: bool, a: &[Answer]) -> Facts {
        let text = |i: usize| match a.get(i) {
            Some(Answer::Read(Some(d))) => Some(String::from_utf8_lossy(d).trim().to_string()),
            _ => None,
        };
        let exists = |i: usize| matches!(a.get(i), Some(Answer::Stat(Some(_))));
        let run = |i: usize| match a.get(i) {
            Some(Answer::Run(o)) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            _ => String::new(),
        };
        let mut f = Facts::from_os_release(&text(0).or_else(|| text(1)).unwrap_or_default());
        f.hostname = text(2).unwrap_or_default();
        f.live = live;
        f.pkg_manager = if exists(3) {
            "apt"
        } else if exists(4) {
            "dnf"
        } else if exists(5) {
            "yum"
        } else {
            "none"
        }
        .into();
        let systemd_installed = exists(7) || exists(8);
        f.init = if (live && exists(6)) || (!live && systemd_installed) {
            "systemd"
        } else if exists(9) {
            "sysvinit"
        } else {
            "none"
        }
        .into();
        f.docker = Docker {
            installed: exists(10) || exists(11),
            running: live && exists(12),
            version: docker_version(&run(21)),
        };
        let aa_kernel = live && text(13).is_some_and(|v| v.starts_with('Y'));
        f.apparmor = Lsm {
            enabled: aa_kernel,
            mode: if aa_kernel { "enforcing" } else { "absent" }.into(),
            installed: exists(14),
        };
        let se_kernel = live && text(15).is_some();
        let configured = text(16)
            .and_then(|c| {
                c.lines().find_map(|l| {
                    l.trim()
                        .strip_prefix("SELINUX=")
                        .map(|v| v.trim().to_lowercase())
                })
            })
            .unwrap_or_default();
        f.selinux = Lsm {
            enabled: se_kernel && text(15).as_deref() == Some("1"),
            mode: match (se_kernel, text(15).as_deref()) {
                (true, Some("1")) => "enforcing".into(),
                (true, _) => "permissive".into(),
                (false, _) if configured.is_empty() => "absent".into(),
                (false, _) => "disabled".into(),
            },
            installed: !configured.is_empty(),
        };
        let detected = run(20);
        let container = text(17).filter(|s| !s.is_empty());
        let (virt, kind) = if let Some(c) = container {
            ("container", c)
        } else if exists(18) {
            ("container", "docker".to_string())
        } else if exists(19) {
            ("container", "podman".to_string())
        } else if !live {
            ("unknown", String::new())
        } else if detected.is_empty() || detected == "none" {
            ("none", String::new())
        } else if CONTAINERS.contains(&detected.as_str()) {
            ("container", detected)
        } else {
            ("vm", detected)
        };
        f.virtualization = virt.into();
        f.virtualization_type = kind;
        f
    }

    fn from_os_release(text: &str) -> Facts {
        let get = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().trim_matches('"').trim_matches('\'').to_string())
                .unwrap_or_default()
        };
        let id = get("ID");
        let like = get("ID_LIKE");
        let words: Vec<&str> = std::iter::once(id.as_str())
            .chain(like.split_whitespace())
            .collect();
        let family = ["debian", "rhel", "fedora", "suse", "alpine", "arch"]
            .iter()
            .find(|f| {
                words
                    .iter()
                    .any(|w| w == *f || (**f == "suse" && w.contains("suse")))
            })
            .map(|f| match *f {
                "rhel" | "fedora" => "redhat",
                other => other,
            })
            .unwrap_or("unknown");
        Facts {
            os_id: id.clone(),
            os_version: get("VERSION_ID"),
            os_family: family.to_string(),
            os_name: get("PRETTY_NAME"),
            ..Facts::default()
        }
    }

    /// The facts as people read them, one per line.
    pub fn describe(&self) -> String {
        let yes = |b: bool, y: &str, n: &str| if b { y.to_string() } else { n.to_string() };
        let lsm = |l: &Lsm, what: &str| {
            if l.enabled {
                format!("{what} {}", l.mode)
            } else if l.installed {
                format!("installed, not enforced by the running kernel ({})", l.mode)
            } else {
                "not present".to_string()
            }
        };
        let docker = if self.docker.installed {
            let v = if self.docker.version.is_empty() {
                String::new()
            } else {
                format!(" {}", self.docker.version)
            };
            format!(
                "installed{v}, {}",
                yes(self.docker.running, "running", "not running")
            )
        } else {
            "not installed".to_string()
        };
        let virt = match self.virtualization_type.as_str() {
            "" => self.virtualization.clone(),
            t => format!("{} ({t})", self.virtualization),
        };
        [
            ("hostname", self.hostname.clone()),
            (
                "os",
                format!(
                    "{} ({} {}, family {})",
                    self.os_name, self.os_id, self.os_version, self.os_family
                ),
            ),
            ("live", yes(self.live, "yes", "no (offline root)")),
            ("packages", self.pkg_manager.clone()),
            ("init", self.init.clone()),
            ("docker", docker),
            ("apparmor", lsm(&self.apparmor, "enabled,")),
            ("selinux", lsm(&self.selinux, "enabled,")),
            ("virtualization", virt),
        ]
        .iter()
        .map(|(k, v)| format!("  {k:<15} {v}\n"))
        .collect()
    }
}

/// `systemd-detect-virt` names of container managers (anything else it names is a VM).
const CONTAINERS: &[&str] = &[
    "container-other",
    "openvz",
    "lxc",
    "lxc-libvirt",
    "systemd-nspawn",
    "docker",
    "podman",
    "rkt",
    "wsl",
    "proot",
    "pouch",
];

/// `Docker version 20.10.24+dfsg1, build 297e128` → `20.10.24+dfsg1`.
fn docker_version(out: &str) -> String {
    out.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(2))
        .map(|v| v.trim_end_matches(',').to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Output, Stat};

    #[test]
    fn os_release_gives_family() {
        let f = Facts::from_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        assert_eq!(
            (
                f.os_id.as_str(),
                f.os_version.as_str(),
                f.os_family.as_str()
            ),
            ("debian", "12", "debian")
        );
        let f = Facts::from_os_release(
            "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n",
        );
        assert_eq!(f.os_family, "redhat");
        let f = Facts::from_os_release("ID=ubuntu\nID_LIKE=debian\n");
        assert_eq!(f.os_family, "debian");
        assert_eq!(Facts::from_os_release("").os_family, "unknown");
    }

    fn stat() -> Answer {
        Answer::Stat(Some(Stat {
            kind: crate::transport::FileType::File,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 1,
        }))
    }

    /// Answers as recorded from a Rocky 9 VM with SELinux enforcing and Docker CE running.
    #[test]
    fn a_recorded_rocky_vm() {
        let p = probes(true);
        let mut a: Vec<Answer> = p
            .iter()
            .map(|p| match p {
                Probe::Stat(_) => Answer::Stat(None),
                Probe::Read(_) => Answer::Read(None),
                Probe::Run(_) => Answer::Run(Output::default()),
            })
            .collect();
        a[0] = Answer::Read(Some(b"NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\nPRETTY_NAME=\"Rocky Linux 9.4 (Blue Onyx)\"\n".to_vec()));
        a[2] = Answer::Read(Some(b"rocky9\n".to_vec()));
        a[4] = stat();
        a[6] = stat();
        a[8] = stat();
        a[10] = stat();
        a[12] = stat();
        a[15] = Answer::Read(Some(b"1".to_vec()));
        a[16] = Answer::Read(Some(
            b"# comment\nSELINUX=enforcing\nSELINUXTYPE=targeted\n".to_vec(),
        ));
        a[20] = Answer::Run(Output {
            status: 0,
            stdout: b"kvm\n".to_vec(),
            stderr: Vec::new(),
        });
        a[21] = Answer::Run(Output {
            status: 0,
            stdout: b"Docker version 27.3.1, build ce12230\n".to_vec(),
            stderr: Vec::new(),
        });
        let f = Facts::from_answers(true, &a);
        assert_eq!(
            (
                f.os_family.as_str(),
                f.pkg_manager.as_str(),
                f.init.as_str()
            ),
            ("redhat", "dnf", "systemd")
        );
        assert_eq!(
            (
                f.docker.installed,
                f.docker.running,
                f.docker.version.as_str()
            ),
            (true, true, "27.3.1")
        );
        assert_eq!(
            (f.selinux.enabled, f.selinux.mode.as_str()),
            (true, "enforcing")
        );
        assert_eq!(
            (f.apparmor.enabled, f.apparmor.mode.as_str()),
            (false, "absent")
        );
        assert_eq!(
            (f.virtualization.as_str(), f.virtualization_type.as_str()),
            ("vm", "kvm")
        );
    }

    /// An offline root: nothing live is claimed, whatever files it holds.
    #[test]
    fn an_offline_root_claims_nothing_live() {
        let p = probes(false);
        let mut a: Vec<Answer> = p.iter().map(|_| Answer::Stat(None)).collect();
        a[3] = stat();
        a[7] = stat();
        a[10] = stat();
        a[13] = Answer::Read(Some(b"Y".to_vec()));
        a[14] = stat();
        let f = Facts::from_answers(false, &a);
        assert_eq!(
            (f.pkg_manager.as_str(), f.init.as_str()),
            ("apt", "systemd")
        );
        assert!(f.docker.installed && !f.docker.running);
        assert!(!f.apparmor.enabled && f.apparmor.installed);
        assert_eq!(f.virtualization, "unknown");
    }
}
