//! `mount`: the options of a mount point (nodev, nosuid, noexec on /tmp and the like) in
//! /etc/fstab and, on a running system, on the mounted filesystem; or a check that a path has a
//! filesystem of its own (/var/lib/docker, CIS Docker 1.1.1).
//!
//! /etc/fstab is edited in place: only the options field of the entry for the path changes, every
//! other byte stays. A mounted filesystem is fixed with `mount -o remount`; SLICE never mounts
//! over a directory, never unmounts and never repartitions: what it cannot do safely it reports
//! and fails, saying what the operator has to do.

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::kernel_module::unescape;
use crate::resources::line::{at, content_change, Lines};
use crate::transport::{Attrs, Probe, Transport};

const FSTAB: &str = "/etc/fstab";
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Options that undo each other; wanting one removes the others from the entry. Mount options
/// are read left to right, but removing a contradiction is clearer than relying on order.
const EXCLUSIVE: &[&[&str]] = &[
    &["ro", "rw"],
    &["nodev", "dev"],
    &["nosuid", "suid"],
    &["noexec", "exec"],
    &["auto", "noauto"],
    &["user", "nouser"],
    &["users", "nouser"],
    &["sync", "async"],
    &["mand", "nomand"],
    &["iversion", "noiversion"],
    &["lazytime", "nolazytime"],
    &["symfollow", "nosymfollow"],
    &["diratime", "nodiratime"],
    &["noatime", "relatime", "strictatime", "atime"],
    &["relatime", "norelatime"],
];

pub struct Mount {
    path: String,
    options: Vec<String>,
    separate: bool,
    /// For an entry SLICE may add: (source, filesystem type).
    new_entry: Option<(String, String)>,
    live: bool,
}

/// The last entry of /etc/fstab for a mount point: the one mount(8) ends up with.
struct Entry {
    line: usize,
    /// Byte range of the options field in the line, or `None` when the line has no such field.
    options_at: Option<(usize, usize)>,
    options: String,
}

/// A mounted filesystem, from /proc/self/mountinfo.
struct Mounted {
    /// The device (`major:minor`) of the filesystem.
    dev: String,
    dir: String,
    /// Per-mount flags: rw, nosuid, nodev, noexec, relatime, …
    options: String,
    fstype: String,
    source: String,
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan {
    changes: Vec<Change>,
    /// The new /etc/fstab, when it changes (`old` is `None` when the file does not exist).
    fstab: Option<(Option<Vec<u8>>, Vec<u8>)>,
    /// What is wrong that SLICE must not fix; apply fails with it.
    refuse: Option<String>,
    /// Options to remount the mounted filesystem with.
    remount: Option<String>,
    /// Set after the fstab write: the path is not mounted, so nothing live can change.
    not_mounted: Option<String>,
}

impl Mount {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let path = p.path("path")?;
        let options = p.str_list("options")?;
        let separate = p.opt_bool("separate")?.unwrap_or(false);
        let src = p.opt_str("src")?;
        let fstype = p.opt_str("fstype")?;
        p.finish()?;

        for o in &options {
            let ok = !o.is_empty()
                && !o.starts_with('#')
                && !o.contains(|c: char| c == ',' || c.is_whitespace() || c.is_control());
            if !ok {
                return Err(at(
                    p,
                    "options",
                    format!(
                        "`{o}` is not a mount option; give one option per list item, such as nodev"
                    ),
                ));
            }
        }
        for (i, a) in options.iter().enumerate() {
            if let Some(b) = options[i + 1..].iter().find(|b| undoes(a, b)) {
                return Err(at(
                    p,
                    "options",
                    format!("options `{a}` and `{b}` contradict each other"),
                ));
            }
        }
        if options.is_empty() && !separate {
            return Err(Error::at(
                p.loc(),
                "`mount` needs `options`, or `separate: true`",
            ));
        }
        let new_entry = match (src, fstype) {
            (None, None) => None,
            (Some(_), Some(_)) if separate => {
                return Err(at(
                    p,
                    "src",
                    "`separate: true` only checks; it never adds an fstab entry (that would hide the data below it)",
                ))
            }
            (Some(s), Some(t)) => {
                if s.is_empty() || s.contains(['\n', '\r']) {
                    return Err(at(p, "src", "`src` must be one line of text"));
                }
                if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c.is_control()) {
                    return Err(at(
                        p,
                        "fstype",
                        format!("`{t}` is not a filesystem type such as tmpfs"),
                    ));
                }
                Some((s, t))
            }
            (Some(_), None) => return Err(at(p, "src", "`src` needs `fstype` too")),
            (None, Some(_)) => return Err(at(p, "fstype", "`fstype` needs `src` too")),
        };
        Ok(Box::new(Mount {
            path,
            options,
            separate,
            new_entry,
            live: ctx.live,
        }))
    }

    /// The fstab line SLICE adds: `SRC PATH TYPE OPTIONS 0 0`.
    fn entry_line(&self, src: &str, fstype: &str) -> String {
        format!(
            "{} {} {fstype} {} 0 0",
            escape(src),
            escape(&self.path),
            self.options.join(",")
        )
    }

    fn plan(&self, obs: &Observed) -> Result<Plan, String> {
        let fstab = obs.read(0)?;
        let mounted = if self.live {
            let info = String::from_utf8_lossy(obs.read(1)?.unwrap_or_default()).into_owned();
            Some(mountinfo(&info))
        } else {
            None
        };
        let here = mounted
            .as_ref()
            .and_then(|m| m.iter().rev().find(|x| x.dir == self.path));
        let mut plan = Plan {
            changes: Vec::new(),
            fstab: None,
            refuse: None,
            remount: None,
            not_mounted: None,
        };
        let old = fstab.unwrap_or_default();
        let lines = Lines::parse(old);
        let entry = find_entry(&lines, &self.path);

        if self.separate {
            // A running system says it with its mounts; an offline root only with its fstab.
            let problem = match (&mounted, here) {
                (Some(all), None) => {
                    let under = containing(all, &self.path).map_or("/", |m| m.dir.as_str());
                    Some(format!(
                        "no ({} is on the filesystem mounted at {under})",
                        self.path
                    ))
                }
                // A directory bound from the filesystem above or from the root filesystem (or a
                // subvolume of one) is a mount point, but shares that filesystem's space.
                (Some(all), Some(m)) => {
                    let root = all.iter().rev().find(|x| x.dir == "/");
                    containing(all, &self.path)
                        .into_iter()
                        .chain(root)
                        .find(|up| up.dev == m.dev)
                        .map(|up| {
                            format!(
                                "no ({} is on the device of the filesystem mounted at {}, and shares its space)",
                                self.path, up.dir
                            )
                        })
                }
                (None, _) if entry.is_none() => {
                    Some("no (no fstab entry mounts one there)".to_string())
                }
                _ => None,
            };
            if let Some(p) = problem {
                plan.changes.push(Change::new(
                    "separate filesystem",
                    Some(p),
                    Some("yes".into()),
                ));
                plan.refuse = Some(format!(
                    "{} is not on a filesystem of its own, and SLICE never repartitions: create a partition or logical volume for it, \
                     move its data there, mount it at {} with an fstab entry, then run again",
                    self.path, self.path
                ));
                return Ok(plan);
            }
        }
        if self.options.is_empty() {
            return Ok(plan);
        }

        match (&entry, &self.new_entry) {
            (Some(e), _) => {
                let merged = merge(&e.options, &self.options);
                if merged != e.options {
                    let mut new_lines = Lines::parse(old);
                    let body = new_lines.body(e.line).to_vec();
                    let new_body = match e.options_at {
                        Some((s, end)) => [&body[..s], merged.as_bytes(), &body[end..]].concat(),
                        None => [&body[..], b" ", merged.as_bytes()].concat(),
                    };
                    new_lines.replace(e.line, &new_body);
                    let new = new_lines.join();
                    plan.changes.push(Change::new(
                        "fstab options",
                        Some(e.options.clone()),
                        Some(merged),
                    ));
                    plan.changes.push(content_change(FSTAB, old, &new));
                    plan.fstab = Some((fstab.map(<[u8]>::to_vec), new));
                }
            }
            (None, Some((src, fstype))) => {
                let line = self.entry_line(src, fstype);
                let mut new_lines = Lines::parse(old);
                new_lines.insert(new_lines.len(), line.as_bytes());
                let new = new_lines.join();
                plan.changes
                    .push(Change::new("fstab entry", None, Some(line)));
                plan.changes.push(content_change(FSTAB, old, &new));
                plan.fstab = Some((fstab.map(<[u8]>::to_vec), new));
            }
            (None, None) => {
                // What is mounted there now is the best hint for the entry to add.
                let hint = match here {
                    Some(m) => format!("give `src: {}` and `fstype: {}`", m.source, m.fstype),
                    None => "give `src` and `fstype`".to_string(),
                };
                plan.changes.push(Change::new(
                    "fstab entry",
                    Some("none".into()),
                    Some(format!("needed ({hint} to add one)")),
                ));
                plan.refuse = Some(format!(
                    "{FSTAB} has no entry for {}; {hint} to add one",
                    self.path
                ));
            }
        }

        if mounted.is_some() {
            match here {
                Some(m) => {
                    let live: Vec<String> = self
                        .options
                        .iter()
                        .filter(|o| live_flag(o))
                        .cloned()
                        .collect();
                    let flags: Vec<&str> = m.options.split(',').collect();
                    if !live.iter().all(|o| satisfied(o, &flags)) {
                        plan.changes.push(Change::new(
                            "mount options",
                            Some(m.options.clone()),
                            Some(merge(&m.options, &live)),
                        ));
                        plan.remount = Some(live.join(","));
                    }
                }
                None => {
                    plan.changes.push(Change::new(
                        "mounted",
                        Some("no".into()),
                        Some("yes".into()),
                    ));
                    plan.not_mounted = Some(format!(
                        "{} is not mounted now; the fstab entry takes effect when it is mounted (`mount {}`) or at the next boot. \
                         SLICE does not mount over a directory that may be in use",
                        self.path, self.path
                    ));
                }
            }
        }
        Ok(plan)
    }
}

/// Whether two options cannot both hold.
fn undoes(a: &str, b: &str) -> bool {
    if a == b {
        return false;
    }
    let key = |o: &str| o.split_once('=').map(|(k, _)| k.to_string());
    if let (Some(x), Some(y)) = (key(a), key(b)) {
        return x == y;
    }
    EXCLUSIVE
        .iter()
        .any(|group| group.contains(&a) && group.contains(&b))
}

/// The options with every wanted one present: contradicting ones removed (and another value of
/// a `key=value` option), missing ones appended. Unchanged text when nothing is missing.
fn merge(current: &str, wanted: &[String]) -> String {
    let have: Vec<&str> = current.split(',').filter(|o| !o.is_empty()).collect();
    let missing = wanted.iter().any(|w| !have.contains(&w.as_str()))
        || have.iter().any(|h| wanted.iter().any(|w| undoes(w, h)));
    if !missing {
        return current.to_string();
    }
    let mut out: Vec<&str> = have
        .into_iter()
        .filter(|h| !wanted.iter().any(|w| undoes(w, h)))
        .collect();
    for w in wanted {
        if !out.contains(&w.as_str()) {
            out.push(w);
        }
    }
    out.join(",")
}

/// Options the kernel shows as per-mount flags in /proc/self/mountinfo, so a running system can
/// be checked for them. Others (filesystem options such as size=, or fstab-only ones such as
/// nofail) are kept in fstab and take effect at the next mount.
fn live_flag(o: &str) -> bool {
    matches!(
        o,
        "ro" | "rw"
            | "nodev"
            | "dev"
            | "nosuid"
            | "suid"
            | "noexec"
            | "exec"
            | "noatime"
            | "atime"
            | "relatime"
            | "norelatime"
            | "strictatime"
            | "nodiratime"
            | "diratime"
            | "nosymfollow"
            | "symfollow"
    )
}

/// Whether the mounted flags give option `o`. Positive options are the absence of the negative
/// flag (the kernel shows `nodev`, never `dev`).
fn satisfied(o: &str, flags: &[&str]) -> bool {
    let has = |f: &str| flags.contains(&f);
    match o {
        "dev" | "suid" | "exec" | "atime" | "diratime" | "symfollow" => !has(&format!("no{o}")),
        "norelatime" => !has("relatime"),
        "strictatime" => !has("noatime") && !has("relatime"),
        _ => has(o),
    }
}

/// The last active entry of fstab for `path`.
fn find_entry(lines: &Lines, path: &str) -> Option<Entry> {
    let mut found = None;
    for i in 0..lines.len() {
        let body = lines.body(i);
        let fields = spans(body);
        if fields.len() < 3 || body[fields[0].0] == b'#' {
            continue;
        }
        let (s, e) = fields[1];
        let dir = unescape(&String::from_utf8_lossy(&body[s..e]));
        if normalize(&dir) != path {
            continue;
        }
        let options_at = fields.get(3).copied();
        let options = options_at.map_or_else(
            || "defaults".to_string(),
            |(s, e)| String::from_utf8_lossy(&body[s..e]).into_owned(),
        );
        found = Some(Entry {
            line: i,
            options_at,
            options,
        });
    }
    found
}

/// Byte ranges of the whitespace-separated fields of a line.
fn spans(line: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, b) in line.iter().enumerate() {
        match (b.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, line.len()));
    }
    out
}

fn normalize(dir: &str) -> String {
    if dir.starts_with('/') {
        crate::resource::normalize(dir)
    } else {
        dir.to_string()
    }
}

/// Spaces, tabs and backslashes written as fstab's octal escapes.
fn escape(field: &str) -> String {
    field
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
}

/// The mounts of /proc/self/mountinfo, in order (a later one over the same directory is on top).
fn mountinfo(text: &str) -> Vec<Mounted> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().skip(6).position(|x| *x == "-")? + 6;
            Some(Mounted {
                dev: f.get(2)?.to_string(),
                dir: unescape(f.get(4)?),
                options: f.get(5)?.to_string(),
                fstype: f.get(sep + 1)?.to_string(),
                source: unescape(f.get(sep + 2)?),
            })
        })
        .collect()
}

/// The mount holding `path` from above: the longest mounted proper prefix (the topmost of
/// several on one directory).
fn containing<'m>(mounts: &'m [Mounted], path: &str) -> Option<&'m Mounted> {
    mounts
        .iter()
        .filter(|m| {
            let d = m.dir.as_str();
            path != d && (d == "/" || path.strip_prefix(d).is_some_and(|r| r.starts_with('/')))
        })
        .max_by_key(|m| m.dir.len())
}

impl Resource for Mount {
    fn target(&self) -> String {
        self.path.clone()
    }

    fn paths(&self) -> Vec<&str> {
        vec![FSTAB]
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v = vec![Probe::Read(FSTAB.into())];
        if self.live {
            v.push(Probe::Read(MOUNTINFO.into()));
        }
        v
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        Ok(self.plan(obs)?.changes)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let plan = self.plan(obs)?;
        if let Some(why) = plan.refuse {
            return Err(why);
        }
        if let Some((old, new)) = &plan.fstab {
            let attrs = Attrs {
                mode: old.is_none().then_some(0o644),
                ..Attrs::default()
            };
            t.write(FSTAB, new, &attrs)
                .map_err(|e| format!("{FSTAB}: {e}"))?;
        }
        if let Some(opts) = &plan.remount {
            let path = shlex::try_quote(&self.path)
                .map_err(|e| format!("cannot quote {}: {e}", self.path))?;
            let cmd = format!("mount -o remount,{opts} {path}");
            let out = t
                .run(&cmd)
                .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
            if !out.success() {
                return Err(format!(
                    "`{cmd}` exited with status {}: {}",
                    out.status,
                    out.message()
                ));
            }
        }
        match plan.not_mounted {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Mutex;

    use super::{merge, mountinfo};
    use crate::resource::{Change, Observed, Resource};
    use crate::resources::testing::{build, build_err, converge, diff, whats};
    use crate::transport::{Attrs, Local, Output, Stat, Transport};

    /// An fstab as the Debian installer writes it, with a CRLF-free mix of tabs and spaces.
    const FSTAB: &str = "\
# /etc/fstab: static file system information.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
UUID=0a3c-root /               ext4    errors=remount-ro 0       1
UUID=7f1e-var  /var            ext4    defaults        0       2
tmpfs\t/tmp\ttmpfs\tdefaults,dev,size=2G\t0\t0
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0
";

    /// /proc/self/mountinfo in the kernel's format (written for these tests): / and /var on
    /// disks, /tmp a tmpfs without nodev, /dev/shm with nosuid,nodev only, /var/lib/docker
    /// bound from another disk, /var/lib/registry bound from a directory of the root disk.
    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
23 22 8:2 / /var rw,relatime shared:2 - ext4 /dev/sda2 rw
24 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 22 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4012345k,nr_inodes=1003086,mode=755
26 25 0:22 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw
27 22 0:23 / /tmp rw,relatime shared:5 - tmpfs tmpfs rw,size=2097152k
28 23 8:3 /docker /var/lib/docker rw,relatime shared:6 - ext4 /dev/sdb1 rw
29 22 0:24 / /mnt/my\\040disk rw,relatime shared:7 - ext4 /dev/sdc1 rw
30 22 8:1 /srv/registry /var/lib/registry rw,relatime shared:8 - ext4 /dev/sda1 rw
";

    fn root(fstab: Option<&str>, info: Option<&str>) -> (tempfile::TempDir, Local) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        if let Some(f) = fstab {
            fs::write(dir.path().join("etc/fstab"), f).unwrap();
        }
        if let Some(i) = info {
            fs::create_dir_all(dir.path().join("proc/self")).unwrap();
            fs::write(dir.path().join("proc/self/mountinfo"), i).unwrap();
        }
        let t = Local::with_root(dir.path()).unwrap();
        (dir, t)
    }

    fn fstab_of(dir: &tempfile::TempDir) -> String {
        fs::read_to_string(dir.path().join("etc/fstab")).unwrap()
    }

    /// An offline root: only /etc/fstab counts.
    fn run(yaml: &str, fstab: Option<&str>) -> (Vec<Change>, String) {
        let (dir, t) = root(fstab, None);
        let res = build("mount", yaml, false).unwrap();
        let changes = converge(res.as_ref(), &t, dir.path());
        (changes, fstab_of(&dir))
    }

    #[test]
    fn only_the_options_field_of_the_entry_changes() {
        let (changes, after) = run(
            "path: /tmp\noptions: [nodev, nosuid, noexec]\n",
            Some(FSTAB),
        );
        assert_eq!(
            after,
            FSTAB.replace(
                "tmpfs\t/tmp\ttmpfs\tdefaults,dev,size=2G\t0\t0",
                "tmpfs\t/tmp\ttmpfs\tdefaults,size=2G,nodev,nosuid,noexec\t0\t0"
            )
        );
        assert_eq!(
            changes[0],
            Change::new(
                "fstab options",
                Some("defaults,dev,size=2G".into()),
                Some("defaults,size=2G,nodev,nosuid,noexec".into())
            )
        );
        assert_eq!(whats(&changes), ["fstab options", "content"]);
    }

    #[test]
    fn spacing_and_other_entries_are_kept_byte_for_byte() {
        let (_, after) = run("path: /var/\noptions: [nodev]\n", Some(FSTAB));
        assert_eq!(
            after,
            FSTAB.replace(
                "UUID=7f1e-var  /var            ext4    defaults        0       2",
                "UUID=7f1e-var  /var            ext4    defaults,nodev        0       2"
            )
        );
        // Options already there (in any order, among others) are in sync.
        let (dir, t) = root(Some(FSTAB), None);
        let res = build(
            "mount",
            "path: /media/cdrom0\noptions: [noauto, user]\n",
            false,
        )
        .unwrap();
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
        drop(dir);
    }

    #[test]
    fn key_value_options_replace_their_old_value() {
        let (_, after) = run("path: /tmp\noptions: [size=512M, mode=1777]\n", Some(FSTAB));
        assert!(
            after.contains("tmpfs\t/tmp\ttmpfs\tdefaults,dev,size=512M,mode=1777\t0\t0"),
            "{after}"
        );
        assert_eq!(
            merge("rw,noatime,relatime", &["strictatime".into()]),
            "rw,strictatime"
        );
        assert_eq!(merge("defaults", &["ro".into()]), "defaults,ro");
        assert_eq!(
            merge("rw,nodev", &["nodev".into()]),
            "rw,nodev",
            "unchanged text"
        );
    }

    #[test]
    fn the_last_entry_for_a_mount_point_is_the_one_edited() {
        let fstab = "tmpfs /tmp tmpfs defaults 0 0\n/dev/sdb1 /tmp/ ext4 rw\n#tmpfs /tmp tmpfs nodev 0 0\n/dev/sdc1 /srv";
        let (_, after) = run("path: /tmp\noptions: [nodev]\n", Some(fstab));
        assert_eq!(
            after,
            "tmpfs /tmp tmpfs defaults 0 0\n/dev/sdb1 /tmp/ ext4 rw,nodev\n#tmpfs /tmp tmpfs nodev 0 0\n/dev/sdc1 /srv"
        );
        // An entry without an options field gets one.
        let (_, after) = run("path: /tmp\noptions: [nodev]\n", Some("tmpfs /tmp tmpfs\n"));
        assert_eq!(after, "tmpfs /tmp tmpfs defaults,nodev\n");
    }

    #[test]
    fn without_an_entry_drift_is_reported_and_apply_adds_none() {
        let (dir, t) = root(Some(FSTAB), None);
        let res = build("mount", "path: /var/tmp\noptions: [nodev, noexec]\n", false).unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [Change::new(
                "fstab entry",
                Some("none".into()),
                Some("needed (give `src` and `fstype` to add one)".into())
            )]
        );
        let err = crate::resources::testing::apply(res.as_ref(), &t).unwrap_err();
        assert_eq!(
            err,
            "/etc/fstab has no entry for /var/tmp; give `src` and `fstype` to add one"
        );
        assert_eq!(fstab_of(&dir), FSTAB, "nothing written");
    }

    #[test]
    fn with_src_and_fstype_the_entry_is_added() {
        let (changes, after) = run(
            "path: /var/tmp\noptions: [nodev, nosuid, noexec]\nsrc: tmpfs\nfstype: tmpfs\n",
            Some(FSTAB),
        );
        assert_eq!(
            after,
            format!("{FSTAB}tmpfs /var/tmp tmpfs nodev,nosuid,noexec 0 0\n")
        );
        assert_eq!(
            changes[0],
            Change::new(
                "fstab entry",
                None,
                Some("tmpfs /var/tmp tmpfs nodev,nosuid,noexec 0 0".into())
            )
        );
        // A missing fstab is created; a path with a space is escaped.
        let (_, after) = run(
            "path: /mnt/my disk\noptions: [nodev]\nsrc: LABEL=data\nfstype: ext4\n",
            None,
        );
        assert_eq!(after, "LABEL=data /mnt/my\\040disk ext4 nodev 0 0\n");
        let (dir, t) = root(Some(&after), None);
        let res = build("mount", "path: /mnt/my disk\noptions: [nodev]\n", false).unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [],
            "the escaped entry is found again"
        );
        drop(dir);
    }

    #[test]
    fn live_options_are_read_from_mountinfo() {
        let (_dir, t) = root(Some(FSTAB), Some(MOUNTINFO));
        let res = build(
            "mount",
            "path: /tmp\noptions: [nodev, nosuid, noexec, size=2G]\n",
            true,
        )
        .unwrap();
        let changes = diff(res.as_ref(), &t).unwrap();
        assert_eq!(
            whats(&changes),
            ["fstab options", "content", "mount options"]
        );
        assert_eq!(
            changes[2],
            Change::new(
                "mount options",
                Some("rw,relatime".into()),
                Some("rw,relatime,nodev,nosuid,noexec".into())
            )
        );
        // /proc already has them all, and `exec` is the absence of noexec.
        let fstab = "proc /proc proc nosuid,nodev,noexec 0 0\n/dev/sdb1 /var/lib/docker ext4 defaults 0 2\n";
        let (_dir, t) = root(Some(fstab), Some(MOUNTINFO));
        let res = build(
            "mount",
            "path: /proc\noptions: [nodev, nosuid, noexec]\n",
            true,
        )
        .unwrap();
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
        let res = build(
            "mount",
            "path: /var/lib/docker\noptions: [exec, rw]\n",
            true,
        )
        .unwrap();
        assert_eq!(
            whats(&diff(res.as_ref(), &t).unwrap()),
            ["fstab options", "content"],
            "the mounted filesystem has them already"
        );
    }

    #[test]
    fn an_entry_for_a_path_mounted_without_one_gets_a_hint() {
        let (_dir, t) = root(Some(FSTAB), Some(MOUNTINFO));
        let res = build(
            "mount",
            "path: /dev/shm\noptions: [nodev, nosuid, noexec]\n",
            true,
        )
        .unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [
                Change::new(
                    "fstab entry",
                    Some("none".into()),
                    Some("needed (give `src: tmpfs` and `fstype: tmpfs` to add one)".into())
                ),
                Change::new(
                    "mount options",
                    Some("rw,nosuid,nodev".into()),
                    Some("rw,nosuid,nodev,noexec".into())
                ),
            ]
        );
    }

    #[test]
    fn separate_is_checked_never_fixed() {
        let (_dir, t) = root(Some(FSTAB), Some(MOUNTINFO));
        let res = build("mount", "path: /var/lib/docker\nseparate: true\n", true).unwrap();
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
        // Bound from a directory of the root filesystem: a mount point, not its own filesystem.
        let res = build("mount", "path: /var/lib/registry\nseparate: true\n", true).unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [Change::new(
                "separate filesystem",
                Some(
                    "no (/var/lib/registry is on the device of the filesystem mounted at /, and shares its space)"
                        .into()
                ),
                Some("yes".into())
            )]
        );
        let res = build("mount", "path: /var/lib/containerd\nseparate: true\n", true).unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [Change::new(
                "separate filesystem",
                Some("no (/var/lib/containerd is on the filesystem mounted at /var)".into()),
                Some("yes".into())
            )]
        );
        let err = crate::resources::testing::apply(res.as_ref(), &t).unwrap_err();
        assert!(err.starts_with("/var/lib/containerd is not on a filesystem of its own, and SLICE never repartitions: create a partition"), "{err}");
        // An offline root can only tell from its fstab.
        let (_dir, t) = root(Some(FSTAB), None);
        let res = build("mount", "path: /var\nseparate: true\n", false).unwrap();
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
        let res = build(
            "mount",
            "path: /var/lib/docker\nseparate: true\noptions: [nodev]\n",
            false,
        )
        .unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [Change::new(
                "separate filesystem",
                Some("no (no fstab entry mounts one there)".into()),
                Some("yes".into())
            )]
        );
    }

    #[test]
    fn mountinfo_fields_are_parsed_with_optional_fields_and_escapes() {
        let m = mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 9);
        assert_eq!(m[8].dev, "8:1");
        assert_eq!(
            (m[7].dir.as_str(), m[7].source.as_str()),
            ("/mnt/my disk", "/dev/sdc1")
        );
        assert_eq!(
            (m[4].options.as_str(), m[4].fstype.as_str()),
            ("rw,nosuid,nodev", "tmpfs")
        );
        let no_optional = mountinfo("30 22 0:25 / /run rw,nosuid - tmpfs tmpfs rw\ngarbage\n\n");
        assert_eq!(no_optional.len(), 1);
        assert_eq!(no_optional[0].fstype, "tmpfs");
    }

    /// A live host whose mounts are a file in a temporary root: a remount rewrites the file.
    struct Host {
        local: Local,
        dir: std::path::PathBuf,
        ran: Mutex<Vec<String>>,
    }

    impl Transport for Host {
        fn name(&self) -> String {
            "host".into()
        }
        fn live(&self) -> bool {
            true
        }
        fn stat(&self, path: &str) -> std::io::Result<Option<Stat>> {
            self.local.stat(path)
        }
        fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
            self.local.read(path)
        }
        fn write(&self, path: &str, data: &[u8], attrs: &Attrs) -> std::io::Result<()> {
            self.local.write(path, data, attrs)
        }
        fn mkdir(&self, path: &str, attrs: &Attrs) -> std::io::Result<()> {
            self.local.mkdir(path, attrs)
        }
        fn set_attrs(&self, path: &str, attrs: &Attrs) -> std::io::Result<()> {
            self.local.set_attrs(path, attrs)
        }
        fn remove(&self, path: &str) -> std::io::Result<()> {
            self.local.remove(path)
        }
        fn run(&self, command: &str) -> std::io::Result<Output> {
            self.ran.lock().unwrap().push(command.to_string());
            let info = self.dir.join("proc/self/mountinfo");
            let text = fs::read_to_string(&info)?;
            fs::write(
                &info,
                text.replace("/tmp rw,relatime", "/tmp rw,nosuid,nodev,noexec,relatime"),
            )?;
            Ok(Output::default())
        }
        fn lock(
            &self,
            _: &str,
            _: std::time::Duration,
        ) -> std::io::Result<Box<dyn std::any::Any + Send>> {
            Ok(Box::new(()))
        }
    }

    fn observe_apply(res: &dyn Resource, t: &dyn Transport) -> Result<Vec<Change>, String> {
        let probes = res.probes();
        let answers = t.observe(&probes);
        let obs = Observed {
            answers: &answers,
            probes: &probes,
        };
        let changes = res.diff(&obs)?;
        res.apply(&obs, t)?;
        Ok(changes)
    }

    #[test]
    fn a_live_mount_is_remounted_after_fstab_is_written() {
        let (dir, local) = root(Some(FSTAB), Some(MOUNTINFO));
        let h = Host {
            local,
            dir: dir.path().to_path_buf(),
            ran: Mutex::new(Vec::new()),
        };
        let res = build(
            "mount",
            "path: /tmp\noptions: [nodev, nosuid, noexec]\n",
            true,
        )
        .unwrap();
        let changes = observe_apply(res.as_ref(), &h).unwrap();
        assert_eq!(
            whats(&changes),
            ["fstab options", "content", "mount options"]
        );
        assert_eq!(
            *h.ran.lock().unwrap(),
            ["mount -o remount,nodev,nosuid,noexec /tmp"]
        );
        assert!(fstab_of(&dir).contains("defaults,size=2G,nodev,nosuid,noexec"));
        assert_eq!(
            observe_apply(res.as_ref(), &h).unwrap(),
            [],
            "in sync after"
        );
        assert_eq!(h.ran.lock().unwrap().len(), 1, "no second remount");
    }

    #[test]
    fn a_path_not_mounted_now_fails_after_the_fstab_write() {
        let (dir, local) = root(Some(FSTAB), Some(MOUNTINFO));
        let h = Host {
            local,
            dir: dir.path().to_path_buf(),
            ran: Mutex::new(Vec::new()),
        };
        let res = build(
            "mount",
            "path: /var/tmp\noptions: [nodev]\nsrc: tmpfs\nfstype: tmpfs\n",
            true,
        )
        .unwrap();
        let err = observe_apply(res.as_ref(), &h).unwrap_err();
        assert!(err.starts_with("/var/tmp is not mounted now; the fstab entry takes effect when it is mounted (`mount /var/tmp`) or at the next boot"), "{err}");
        assert!(fstab_of(&dir).ends_with("tmpfs /var/tmp tmpfs nodev 0 0\n"));
        assert!(h.ran.lock().unwrap().is_empty(), "nothing mounted");
        let probes = res.probes();
        let answers = h.observe(&probes);
        assert_eq!(
            res.diff(&Observed {
                answers: &answers,
                probes: &probes
            })
            .unwrap(),
            [Change::new(
                "mounted",
                Some("no".into()),
                Some("yes".into())
            )]
        );
    }

    #[test]
    fn build_errors_point_at_the_parameter() {
        assert_eq!(
            build_err("mount", "path: /tmp\n"),
            "1:1: `mount` needs `options`, or `separate: true`"
        );
        assert_eq!(
            build_err("mount", "path: /tmp\noptions: [nodev, noexec, exec]\n"),
            "2:10: options `noexec` and `exec` contradict each other"
        );
        assert_eq!(
            build_err("mount", "path: /tmp\noptions: [size=1G, size=2G]\n"),
            "2:10: options `size=1G` and `size=2G` contradict each other"
        );
        assert_eq!(
            build_err("mount", "path: /tmp\noptions: 'nodev,nosuid'\n"),
            "2:11: `nodev,nosuid` is not a mount option; give one option per list item, such as nodev"
        );
        assert_eq!(
            build_err("mount", "path: /tmp\noptions: [nodev]\nsrc: tmpfs\n"),
            "3:6: `src` needs `fstype` too"
        );
        assert_eq!(
            build_err("mount", "path: /var/lib/docker\nseparate: true\nsrc: /dev/sdb1\nfstype: ext4\n"),
            "3:6: `separate: true` only checks; it never adds an fstab entry (that would hide the data below it)"
        );
        assert_eq!(
            build_err(
                "mount",
                "path: /tmp\noptions: [nodev]\nsrc: tmpfs\nfstype: 'tmp fs'\n"
            ),
            "4:10: `tmp fs` is not a filesystem type such as tmpfs"
        );
        assert_eq!(
            build_err("mount", "path: tmp\noptions: [nodev]\n"),
            "1:7: `path` must be an absolute path, found `tmp`"
        );
    }

    #[test]
    fn target_paths_and_probes() {
        let res = build("mount", "path: /tmp/\noptions: [nodev]\n", true).unwrap();
        assert_eq!(res.target(), "/tmp");
        assert_eq!(res.paths(), ["/etc/fstab"]);
        assert_eq!(res.probes().len(), 2);
        let res = build("mount", "path: /tmp\noptions: [nodev]\n", false).unwrap();
        assert_eq!(
            res.probes().len(),
            1,
            "an offline root has no mounts to read"
        );
    }
}
