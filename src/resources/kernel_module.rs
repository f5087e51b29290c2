//! `kernel_module`: a kernel module kept from loading, by an `install NAME /bin/false` line (any
//! attempt to load it, even by its alias or as a dependency, runs /bin/false instead) and a
//! `blacklist NAME` line (no automatic loading by device alias) in a modprobe.d file.
//!
//! Several tasks may share one file: each edits only the lines of its own module. A module that
//! backs a filesystem mounted right now (vfat on an EFI system partition, squashfs for snaps) is
//! never blacklisted, and a loaded module is never unloaded: the running kernel is left alone.

use std::path::Path;

use crate::error::Result;
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::{at, content_change, Lines};
use crate::resources::{Accounts, Meta};
use crate::transport::{Attrs, FileType, Probe, Stat, Transport};

const DEFAULT_FILE: &str = "/etc/modprobe.d/slice-blacklist.conf";
const MOUNTS: &str = "/proc/self/mounts";
const MODULES: &str = "/proc/modules";

/// What the `install` line runs instead of loading the module.
const INSTEAD: &str = "/bin/false";

/// Modules a Docker host needs (as modprobe compares names: `-` as `_`): overlay2 storage,
/// container networking (veth pairs on a bridge, NAT and filtering through iptables or nftables)
/// and Swarm's overlay networks and routing mesh. Blacklisting one breaks Docker at the next boot.
const DOCKER_NEEDS: &[&str] = &[
    "overlay",
    "bridge",
    "br_netfilter",
    "veth",
    "nf_nat",
    "nf_conntrack",
    "ip_tables",
    "ip6_tables",
    "iptable_nat",
    "iptable_filter",
    "ip6table_nat",
    "ip6table_filter",
    "nf_tables",
    "nft_chain_nat",
    "xt_addrtype",
    "xt_conntrack",
    "xt_MASQUERADE",
    "vxlan",
    "ip_vs",
];

pub struct KernelModule {
    /// As the task wrote it.
    name: String,
    /// As modprobe compares names: dashes and underscores are the same character.
    key: String,
    blacklisted: bool,
    file: String,
    /// The target is running: its mounts and loaded modules can be read.
    live: bool,
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan<'o> {
    /// `None`: the file does not exist and will be created.
    stat: Option<&'o Stat>,
    parent: Option<&'o Stat>,
    old: &'o [u8],
    new: Vec<u8>,
    loaded: bool,
}

impl KernelModule {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let name = p.str("name")?;
        let blacklisted =
            p.choice("state", &["blacklisted", "allowed"], "blacklisted")? == "blacklisted";
        let file = p
            .opt_path("file")?
            .unwrap_or_else(|| DEFAULT_FILE.to_string());
        let allow_breaking = p.opt_bool("allow_breaking_docker")?.unwrap_or(false);
        p.finish()?;

        // Module names are file names without `.ko`; anything else could not name a module and
        // would put arbitrary words on a modprobe.d line.
        let valid = !name.is_empty()
            && name.len() <= 56
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(at(
                p,
                "name",
                format!("`{name}` is not a kernel module name such as cramfs"),
            ));
        }
        if !file.ends_with(".conf") {
            return Err(at(
                p,
                "file",
                format!("modprobe reads only files ending in .conf; `{file}` would be ignored"),
            ));
        }
        let key = canonical(&name);
        if blacklisted && !allow_breaking && DOCKER_NEEDS.contains(&key.as_str()) {
            return Err(at(
                p,
                "name",
                format!("Docker needs the {name} module (storage or container networking); blacklisting it breaks Docker at the next boot"),
            )
            .with_help("if this host runs no Docker, add `allow_breaking_docker: true`"));
        }
        Ok(Box::new(KernelModule {
            name,
            key,
            blacklisted,
            file,
            live: ctx.live,
        }))
    }

    fn parent(&self) -> String {
        Path::new(&self.file)
            .parent()
            .map_or_else(|| "/".to_string(), |p| p.to_string_lossy().into_owned())
    }

    /// The file with this module's lines as wanted and every other line kept: one `install`
    /// and one `blacklist` line (the last ones kept, rewritten where they differ, duplicates
    /// removed; missing ones added at the end), or none of them.
    fn wanted(&self, old: &[u8]) -> Vec<u8> {
        let mut lines = Lines::parse(old);
        let install = format!("install {} {INSTEAD}", self.name);
        let blacklist = format!("blacklist {}", self.name);
        for (directive, line) in [("install", &install), ("blacklist", &blacklist)] {
            let matches: Vec<usize> = (0..lines.len())
                .filter(|&i| self.directive_of(lines.body(i)) == Some(directive))
                .collect();
            if !self.blacklisted {
                lines.remove_at(&matches);
                continue;
            }
            match matches.split_last() {
                None => lines.insert(lines.len(), line.as_bytes()),
                Some((&last, others)) => {
                    if !same_words(lines.body(last), line) {
                        lines.replace(last, line.as_bytes());
                    }
                    lines.remove_at(others);
                }
            }
        }
        lines.join()
    }

    /// `install` or `blacklist` when the line is that directive for this module.
    fn directive_of(&self, line: &[u8]) -> Option<&'static str> {
        let text = String::from_utf8_lossy(line);
        let mut words = text.split_whitespace();
        let directive = match words.next()? {
            "install" => "install",
            "blacklist" => "blacklist",
            _ => return None,
        };
        (canonical(words.next()?) == self.key).then_some(directive)
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
        let mut loaded = false;
        if self.live {
            let mounts = String::from_utf8_lossy(obs.read(3)?.unwrap_or_default()).into_owned();
            let backing = mounted_with(&mounts, &self.key);
            if self.blacklisted && !backing.is_empty() {
                return Err(format!(
                    "not blacklisting {}: it backs the filesystem mounted at {}, which could not be mounted after the next boot",
                    self.name,
                    backing.join(", ")
                ));
            }
            let modules = String::from_utf8_lossy(obs.read(4)?.unwrap_or_default()).into_owned();
            loaded = modules
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .any(|m| canonical(m) == self.key);
        }
        let old = match stat {
            Some(_) => obs.read(1)?.unwrap_or_default(),
            None => &[],
        };
        // Allowing a module in a file that does not exist: nothing to write.
        let new = if stat.is_none() && !self.blacklisted {
            Vec::new()
        } else {
            self.wanted(old)
        };
        Ok(Plan {
            stat,
            parent,
            old,
            new,
            loaded,
        })
    }

    fn creates(&self, plan: &Plan) -> bool {
        plan.stat.is_none() && self.blacklisted
    }
}

/// A module name as modprobe compares it.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Whether a line says the same as `want`, word for word (spacing aside, and the module name as
/// modprobe compares it).
fn same_words(line: &[u8], want: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split_whitespace()
            .enumerate()
            .map(|(i, w)| if i == 1 { canonical(w) } else { w.to_string() })
            .collect()
    };
    words(&String::from_utf8_lossy(line)) == words(want)
}

/// The filesystem types a module provides: mostly its own name, with the known exceptions.
fn fs_types(module: &str) -> Vec<&str> {
    match module {
        "fat" => vec!["vfat", "msdos"],
        "freevxfs" => vec!["vxfs"],
        "isofs" => vec!["iso9660"],
        "ext4" => vec!["ext4", "ext3", "ext2"],
        "nfs" => vec!["nfs", "nfs4"],
        "nfsv4" => vec!["nfs4"],
        "cifs" => vec!["cifs", "smb3"],
        "fuse" => vec!["fuse", "fuseblk"],
        m => vec![m],
    }
}

/// The mount points (from /proc/self/mounts) of filesystems the module provides.
fn mounted_with(mounts: &str, module: &str) -> Vec<String> {
    let types = fs_types(module);
    let mut out: Vec<String> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            // FUSE filesystems show as fuse.sshfs and the like.
            let base = fstype.split('.').next().unwrap_or(fstype);
            let hit = types.contains(&fstype) || (module == "fuse" && base == "fuse");
            hit.then(|| unescape(dir))
        })
        .collect();
    out.dedup();
    out
}

/// A mount table field with its octal escapes (`\040` for a space) decoded.
pub(crate) fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| {
            b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Resource for KernelModule {
    fn target(&self) -> String {
        self.name.clone()
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
            v.push(Probe::Read(MOUNTS.into()));
            v.push(Probe::Read(MODULES.into()));
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
                &Attrs::default(),
                &Accounts::default(),
            ));
        }
        if plan.new != plan.old {
            out.push(content_change(&self.file, plan.old, &plan.new));
        }
        // Only beside a change of the file: SLICE never unloads a module, so a loaded one alone
        // is not drift it could ever fix.
        if !out.is_empty() && self.blacklisted && plan.loaded {
            out.push(Change::new(
                "loaded now",
                None,
                Some("yes (unloads at reboot or with modprobe -r)".into()),
            ));
        }
        Ok(out)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let plan = self.plan(obs)?;
        if plan.new == plan.old && !self.creates(&plan) {
            return Ok(());
        }
        if plan.stat.is_none() && plan.parent.is_none() {
            return Err(format!(
                "cannot create {}: {} does not exist (a `directory` task can create it)",
                self.file,
                self.parent()
            ));
        }
        let attrs = Attrs {
            mode: plan.stat.is_none().then_some(0o644),
            ..Attrs::default()
        };
        t.write(&self.file, &plan.new, &attrs)
            .map_err(|e| format!("{}: {e}", self.file))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::resource::Change;
    use crate::resources::testing::{build, build_err, content_diff, converge, diff, whats};
    use crate::transport::Local;

    const CONF: &str = "etc/modprobe.d/slice-blacklist.conf";

    /// A root with /etc/modprobe.d (holding the default file when `content` is given) and,
    /// for live targets, a recorded /proc/self/mounts and /proc/modules.
    fn root(content: Option<&str>, mounts: &str, modules: &str) -> (tempfile::TempDir, Local) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/modprobe.d")).unwrap();
        fs::create_dir_all(dir.path().join("proc/self")).unwrap();
        fs::write(dir.path().join("proc/self/mounts"), mounts).unwrap();
        fs::write(dir.path().join("proc/modules"), modules).unwrap();
        if let Some(c) = content {
            fs::write(dir.path().join(CONF), c).unwrap();
        }
        let t = Local::with_root(dir.path()).unwrap();
        (dir, t)
    }

    /// /proc/self/mounts and /proc/modules as on a UEFI host with a snap and an sshfs mount (written
    /// in the kernel's format for these tests, not captured from a host).
    const MOUNTS: &str = "\
/dev/sda2 / ext4 rw,relatime,errors=remount-ro 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=401000k,mode=755 0 0
/dev/sda1 /boot/efi vfat rw,relatime,fmask=0077,dmask=0077,codepage=437,iocharset=ascii,shortname=mixed,utf8,errors=remount-ro 0 0
/dev/loop0 /snap/core22/1380 squashfs ro,nodev,relatime,errors=continue 0 0
sshfs#me@nas: /mnt/my\\040nas fuse.sshfs rw,nosuid,nodev,relatime,user_id=0,group_id=0 0 0
";
    const MODULES: &str = "\
vfat 24576 1 - Live 0x0000000000000000
fat 86016 1 vfat, Live 0x0000000000000000
usb_storage 77824 0 - Live 0x0000000000000000
";

    fn run(yaml: &str, content: Option<&str>, live: bool) -> (Vec<Change>, String) {
        let (dir, t) = root(content, MOUNTS, MODULES);
        let res = build("kernel_module", yaml, live).unwrap();
        let changes = converge(res.as_ref(), &t, dir.path());
        (changes, fs::read_to_string(dir.path().join(CONF)).unwrap())
    }

    #[test]
    fn a_new_file_gets_both_lines() {
        let (changes, after) = run("name: cramfs\n", None, true);
        assert_eq!(after, "install cramfs /bin/false\nblacklist cramfs\n");
        assert_eq!(whats(&changes), ["state", "mode", "content"]);
        assert_eq!(
            content_diff(&changes),
            "--- /etc/modprobe.d/slice-blacklist.conf (now)\n+++ /etc/modprobe.d/slice-blacklist.conf (wanted)\n\
             @@ -0,0 +1,2 @@\n+install cramfs /bin/false\n+blacklist cramfs\n"
        );
    }

    #[test]
    fn tasks_sharing_a_file_edit_only_their_own_lines() {
        let before = "# dev-sec\ninstall cramfs /bin/false\nblacklist cramfs\noptions usb_storage delay_use=3\ninstall hfs /bin/true\n";
        let (changes, after) = run("name: hfs\n", Some(before), true);
        assert_eq!(
            after,
            "# dev-sec\ninstall cramfs /bin/false\nblacklist cramfs\noptions usb_storage delay_use=3\ninstall hfs /bin/false\nblacklist hfs\n"
        );
        assert_eq!(whats(&changes), ["content"]);
        // The next task on the same file leaves hfs alone.
        let (_, again) = run("name: udf\n", Some(&after), true);
        assert_eq!(
            again,
            format!("{after}install udf /bin/false\nblacklist udf\n")
        );
    }

    #[test]
    fn dashes_and_underscores_name_the_same_module_and_duplicates_go() {
        let before = "blacklist usb-storage\ninstall usb_storage /bin/true\n  install   usb-storage   /bin/false\n";
        let (_, after) = run("name: usb_storage\n", Some(before), false);
        assert_eq!(
            after, "blacklist usb-storage\n  install   usb-storage   /bin/false\n",
            "right lines are kept as written; the earlier duplicate goes"
        );
    }

    #[test]
    fn allowed_removes_only_this_modules_lines() {
        let before =
            "install cramfs /bin/false\nblacklist cramfs\ninstall udf /bin/false\nblacklist udf\n";
        let (changes, after) = run("name: cramfs\nstate: allowed\n", Some(before), true);
        assert_eq!(after, "install udf /bin/false\nblacklist udf\n");
        assert_eq!(whats(&changes), ["content"]);
        // Allowing a module in a file that does not exist is in sync, and creates nothing.
        let (dir, t) = root(None, MOUNTS, MODULES);
        let res = build("kernel_module", "name: cramfs\nstate: allowed\n", true).unwrap();
        assert_eq!(converge(res.as_ref(), &t, dir.path()), []);
        assert!(!dir.path().join(CONF).exists());
    }

    #[test]
    fn a_module_backing_a_mounted_filesystem_is_never_blacklisted() {
        let (_dir, t) = root(None, MOUNTS, MODULES);
        for (name, at) in [
            ("vfat", "/boot/efi"),
            ("fat", "/boot/efi"),
            ("squashfs", "/snap/core22/1380"),
            ("fuse", "/mnt/my nas"),
        ] {
            let res = build("kernel_module", &format!("name: {name}\n"), true).unwrap();
            assert_eq!(
                diff(res.as_ref(), &t).unwrap_err(),
                format!("not blacklisting {name}: it backs the filesystem mounted at {at}, which could not be mounted after the next boot")
            );
        }
        // An offline root has no mounts to protect; allowing is always fine.
        let (changes, _) = run("name: vfat\n", None, false);
        assert_eq!(whats(&changes), ["state", "mode", "content"]);
        let res = build("kernel_module", "name: vfat\nstate: allowed\n", true).unwrap();
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
    }

    #[test]
    fn a_loaded_module_is_reported_beside_the_change_never_unloaded() {
        let (changes, _) = run("name: usb-storage\n", None, true);
        assert_eq!(
            changes.last().unwrap(),
            &Change::new(
                "loaded now",
                None,
                Some("yes (unloads at reboot or with modprobe -r)".into())
            )
        );
        // Once the file is right the task is in sync, loaded or not: SLICE never unloads.
        let (_dir, t) = root(
            Some("install usb_storage /bin/false\nblacklist usb_storage\n"),
            MOUNTS,
            MODULES,
        );
        let res = build("kernel_module", "name: usb_storage\n", true).unwrap();
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
    }

    #[test]
    fn a_missing_directory_is_drift_until_apply_finds_it_still_missing() {
        let dir = tempfile::tempdir().unwrap();
        let t = Local::with_root(dir.path()).unwrap();
        let res = build("kernel_module", "name: cramfs\n", false).unwrap();
        assert_eq!(
            whats(&diff(res.as_ref(), &t).unwrap()),
            ["state", "mode", "content"]
        );
        let probes = res.probes();
        let answers = crate::transport::Transport::observe(&t, &probes);
        let obs = crate::resource::Observed {
            answers: &answers,
            probes: &probes,
        };
        assert_eq!(
            res.apply(&obs, &t).unwrap_err(),
            "cannot create /etc/modprobe.d/slice-blacklist.conf: /etc/modprobe.d does not exist (a `directory` task can create it)"
        );
    }

    #[test]
    fn build_errors_point_at_the_parameter() {
        assert_eq!(
            build_err("kernel_module", "name: 'cramfs /bin/true'\n"),
            "1:8: `cramfs /bin/true` is not a kernel module name such as cramfs"
        );
        assert_eq!(
            build_err(
                "kernel_module",
                "name: cramfs\nfile: /etc/modprobe.d/hardening\n"
            ),
            "2:7: modprobe reads only files ending in .conf; `/etc/modprobe.d/hardening` would be ignored"
        );
        assert_eq!(
            build_err("kernel_module", "name: cramfs\nstate: absent\n"),
            "2:8: `state` must be one of blacklisted, allowed, found `absent`"
        );
        assert_eq!(
            build_err("kernel_module", "name: br-netfilter\n"),
            "1:7: Docker needs the br-netfilter module (storage or container networking); blacklisting it breaks Docker at the next boot"
        );
        assert!(build(
            "kernel_module",
            "name: overlay\nallow_breaking_docker: true\n",
            false
        )
        .is_ok());
        assert!(build("kernel_module", "name: overlay\nstate: allowed\n", false).is_ok());
        assert_eq!(
            build_err("kernel_module", "name: cramfs\nfiel: /x.conf\n"),
            "2:1: unknown key `fiel` for `kernel_module`"
        );
    }

    #[test]
    fn mount_fields_are_unescaped() {
        assert_eq!(super::unescape("/mnt/my\\040nas"), "/mnt/my nas");
        assert_eq!(super::unescape("/a\\134b"), "/a\\b");
        assert_eq!(super::unescape("/x\\9"), "/x\\9");
        assert_eq!(super::unescape("\\"), "\\");
        assert_eq!(super::unescape("\\477"), "\\477", "not a byte: kept");
    }

    #[test]
    fn target_and_paths() {
        let res = build(
            "kernel_module",
            "name: cramfs\nfile: /etc/modprobe.d/cis.conf\n",
            true,
        )
        .unwrap();
        assert_eq!(res.target(), "cramfs");
        assert_eq!(res.paths(), ["/etc/modprobe.d/cis.conf"]);
        assert_eq!(res.probes().len(), 5);
        let res = build("kernel_module", "name: cramfs\n", false).unwrap();
        assert_eq!(res.probes().len(), 3, "no /proc for an offline root");
    }
}
