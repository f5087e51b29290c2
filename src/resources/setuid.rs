//! `setuid`: no setuid or setgid files on local filesystems except an allowed few.
//!
//! Each search path is walked with `find -xdev` (a read-only probe that stays on the path's own
//! filesystem: no /proc, no network mounts, no container layers on a separate /var/lib/docker).
//! Every setuid or setgid regular file not on the allow list loses both bits with one
//! `chmod u-s,g-s`; nothing else about it changes.
//!
//! The default allow list is what a Docker host needs a non-root user to run with privilege:
//! sudo (administration, and SLICE's own `become`), su, passwd (users change their own
//! password), newuidmap and newgidmap (user namespaces for rootless Docker), PAM's unix_chkpwd
//! (password checks by processes that are not root) and D-Bus's activation helper (the system
//! bus starts services through it). Left out on purpose: mount/umount, chsh/chfn, newgrp,
//! gpasswd, crontab, wall/write, pkexec and ssh-keysign (host-based SSH authentication, which a
//! hardened sshd turns off); a server's users do not need them, and each is attack surface.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::Result;
use crate::resource::{normalize, BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::at;
use crate::transport::{Probe, Transport};

const DEFAULT_ALLOW: &[&str] = &[
    "/usr/bin/sudo",
    "/usr/bin/su",
    "/bin/su",
    "/usr/bin/passwd",
    "/usr/bin/newuidmap",
    "/usr/bin/newgidmap",
    "/usr/sbin/unix_chkpwd",
    "/sbin/unix_chkpwd",
    "/usr/lib/dbus-1.0/dbus-daemon-launch-helper",
    "/usr/libexec/dbus-1/dbus-daemon-launch-helper",
];

/// Taking sudo's bit away locks out every administrator who logs in as themselves, SLICE's
/// `become` included; SLICE refuses instead of doing it because of a short allow list.
const SUDO: &[&str] = &["/usr/bin/sudo", "/bin/sudo", "/usr/local/bin/sudo"];

/// Files per chmod command: far below any command line limit.
const CHUNK: usize = 1000;

pub struct Setuid {
    paths: Vec<String>,
    allow: GlobSet,
}

/// A setuid or setgid file the search found.
#[derive(Debug)]
struct Found {
    /// Lossy for a name that is not UTF-8 (`utf8` false).
    path: String,
    mode: u32,
    utf8: bool,
}

impl Setuid {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let mut paths = p.str_list("paths")?;
        let allow = p.str_list("allow")?;
        let allow_given = p.node("allow").is_some();
        let also = p.str_list("also_allow")?;
        p.finish()?;

        if paths.is_empty() {
            paths.push("/".into());
        }
        for path in &mut paths {
            if !path.starts_with('/') {
                return Err(at(
                    p,
                    "paths",
                    format!("`paths` must be absolute paths, found `{path}`"),
                ));
            }
            *path = normalize(path);
        }
        paths.sort();
        paths.dedup();
        let base: Vec<String> = if allow_given {
            allow
        } else {
            DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect()
        };
        let patterns = base
            .into_iter()
            .map(|pat| ("allow", pat))
            .chain(also.into_iter().map(|pat| ("also_allow", pat)));
        let mut set = GlobSetBuilder::new();
        for (key, pat) in patterns {
            if !pat.starts_with('/') {
                return Err(at(
                    p,
                    key,
                    format!("allowed files are absolute paths or globs, found `{pat}`"),
                ));
            }
            // `*` stays inside one directory; `**` crosses them.
            let glob = GlobBuilder::new(&pat)
                .literal_separator(true)
                .build()
                .map_err(|e| at(p, key, format!("`{pat}` is not a valid glob: {}", e.kind())))?;
            set.add(glob);
        }
        let allow = set
            .build()
            .map_err(|e| at(p, "allow", format!("the allow list is not valid: {e}")))?;
        Ok(Box::new(Setuid { paths, allow }))
    }

    /// The files found under every search path, each once, sorted.
    fn found(&self, obs: &Observed) -> Result<Vec<Found>, String> {
        let mut all: Vec<Found> = Vec::new();
        for (i, path) in self.paths.iter().enumerate() {
            let out = obs.run(i)?;
            if !out.success() && !only_vanished(&String::from_utf8_lossy(&out.stderr)) {
                return Err(format!(
                    "searching {path} for setuid files failed (status {}): {}",
                    out.status,
                    out.message()
                ));
            }
            all.extend(records(&out.stdout));
        }
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all.dedup_by(|a, b| a.path == b.path);
        Ok(all)
    }

    /// The found files that lose their bits.
    fn strip(&self, obs: &Observed) -> Result<Vec<Found>, String> {
        let strip: Vec<Found> = self
            .found(obs)?
            .into_iter()
            .filter(|f| !self.allow.is_match(&f.path))
            .collect();
        if let Some(s) = strip.iter().find(|f| SUDO.contains(&f.path.as_str())) {
            return Err(format!(
                "{} is not allowed to keep its setuid bit, but without it nobody can become root through sudo \
                 (SLICE's `become` neither); add it to `allow`, or remove the bit with a `command` task if that is really meant",
                s.path
            ));
        }
        Ok(strip)
    }
}

/// The find command for one search path: `MODE PATH\0` per file, so any file name survives.
fn search(path: &str) -> String {
    let q = shlex::try_quote(path).map_or_else(|_| "/".into(), |q| q.into_owned());
    format!(
        "[ -e {q} ] || exit 0; find {q} -xdev -type f \\( -perm -4000 -o -perm -2000 \\) \
         -exec sh -c 'for f; do printf \"%s %s\\0\" \"$(stat -c %a -- \"$f\")\" \"$f\"; done' sh {{}} +"
    )
}

/// Whether find's errors are only about files that disappeared while it walked (a busy /tmp).
fn only_vanished(stderr: &str) -> bool {
    let mut lines = stderr.lines().filter(|l| !l.trim().is_empty()).peekable();
    lines.peek().is_some() && lines.all(|l| l.trim_end().ends_with("No such file or directory"))
}

fn records(out: &[u8]) -> Vec<Found> {
    out.split(|b| *b == 0)
        .filter_map(|rec| {
            let sp = rec.iter().position(|b| *b == b' ')?;
            // A file gone before stat ran has no mode: it has no bits to remove either.
            let mode = u32::from_str_radix(std::str::from_utf8(&rec[..sp]).ok()?, 8).ok()?;
            let name = &rec[sp + 1..];
            if name.is_empty() {
                return None;
            }
            let (path, utf8) = match std::str::from_utf8(name) {
                Ok(s) => (s.to_string(), true),
                Err(_) => (String::from_utf8_lossy(name).into_owned(), false),
            };
            Some(Found { path, mode, utf8 })
        })
        .collect()
}

fn label(mode: u32) -> &'static str {
    match (mode & 0o4000 != 0, mode & 0o2000 != 0) {
        (true, true) => "setuid and setgid bits",
        (true, false) => "setuid bit",
        _ => "setgid bit",
    }
}

impl Resource for Setuid {
    fn target(&self) -> String {
        self.paths.join(",")
    }

    fn paths(&self) -> Vec<&str> {
        self.paths.iter().map(String::as_str).collect()
    }

    fn probes(&self) -> Vec<Probe> {
        self.paths.iter().map(|p| Probe::Run(search(p))).collect()
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        Ok(self
            .strip(obs)?
            .iter()
            .map(|f| {
                Change::new(
                    format!("{} {}", label(f.mode), f.path),
                    Some(format!("{:04o}", f.mode)),
                    Some(format!("{:04o}", f.mode & !0o6000)),
                )
            })
            .collect())
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let strip = self.strip(obs)?;
        let (names, odd): (Vec<&Found>, Vec<&Found>) = strip.iter().partition(|f| f.utf8);
        for chunk in names.chunks(CHUNK) {
            let mut cmd = String::from("chmod u-s,g-s --");
            for f in chunk {
                let q = shlex::try_quote(&f.path)
                    .map_err(|e| format!("cannot quote {}: {e}", f.path))?;
                cmd.push(' ');
                cmd.push_str(&q);
            }
            let out = t.run(&cmd).map_err(|e| format!("cannot run chmod: {e}"))?;
            if !out.success() {
                return Err(format!(
                    "chmod u-s,g-s exited with status {}: {}",
                    out.status,
                    out.message()
                ));
            }
        }
        if !odd.is_empty() {
            let list: Vec<&str> = odd.iter().map(|f| f.path.as_str()).collect();
            return Err(format!(
                "file names that are not UTF-8 cannot be passed to chmod by SLICE; remove their bits by hand: {}",
                list.join(", ")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::{only_vanished, records};
    use crate::resource::{Change, Observed};
    use crate::resources::testing::{build, build_err, converge, diff};
    use crate::transport::{Local, Output, Probe};

    fn file(dir: &Path, name: impl AsRef<OsStr>, mode: u32) {
        let p = dir.join(name.as_ref());
        fs::write(&p, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(dir: &Path, name: impl AsRef<OsStr>) -> u32 {
        fs::metadata(dir.join(name.as_ref()))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    /// Runs the real find against a temporary directory of this machine (nothing outside it is
    /// read or changed): setuid and setgid files, one allowed, names with spaces and newlines.
    #[test]
    fn the_search_finds_every_name_and_apply_strips_all_but_the_allowed() {
        let dir = tempfile::tempdir().unwrap();
        // A quote in the search path: the probe must quote it for the shell.
        let d = dir.path().canonicalize().unwrap().join("it's here");
        fs::create_dir_all(d.join("bin")).unwrap();
        file(&d, "bin/tool", 0o4755);
        file(&d, "bin/allowed", 0o4755);
        file(&d, "bin/group tool", 0o2755);
        file(&d, "bin/both\nlines", 0o6750);
        file(&d, "bin/plain", 0o755);
        file(&d, "bin/sticky", 0o1755);
        fs::create_dir(d.join("setgid-dir")).unwrap();
        fs::set_permissions(d.join("setgid-dir"), fs::Permissions::from_mode(0o2775)).unwrap();
        let yaml = format!(
            "paths: [\"{}\"]\nallow: [\"{}/bin/allow*\"]\n",
            d.display(),
            d.display()
        );
        let res = build("setuid", &yaml, true).unwrap();
        let t = Local::new();
        let changes = converge(res.as_ref(), &t, Path::new("/"));
        let p = |n: &str| format!("{}/bin/{n}", d.display());
        assert_eq!(
            changes,
            [
                Change::new(
                    format!("setuid and setgid bits {}", p("both\nlines")),
                    Some("6750".into()),
                    Some("0750".into())
                ),
                Change::new(
                    format!("setgid bit {}", p("group tool")),
                    Some("2755".into()),
                    Some("0755".into())
                ),
                Change::new(
                    format!("setuid bit {}", p("tool")),
                    Some("4755".into()),
                    Some("0755".into())
                ),
            ]
        );
        assert_eq!(mode(&d, "bin/tool"), 0o755);
        assert_eq!(mode(&d, "bin/group tool"), 0o755);
        assert_eq!(mode(&d, "bin/both\nlines"), 0o750);
        assert_eq!(mode(&d, "bin/allowed"), 0o4755, "allowed: kept");
        assert_eq!(mode(&d, "bin/sticky"), 0o1755, "other bits: kept");
        assert_eq!(mode(&d, "setgid-dir"), 0o2775, "directories are not files");
    }

    #[test]
    fn a_name_that_is_not_utf8_is_reported_and_left_for_the_operator() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        let odd = OsStr::from_bytes(b"odd\xff");
        file(&d, odd, 0o4755);
        file(&d, "tool", 0o4755);
        let res = build("setuid", &format!("paths: ['{}']\n", d.display()), true).unwrap();
        let t = Local::new();
        let changes = diff(res.as_ref(), &t).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(
            changes[0].what,
            format!("setuid bit {}/odd\u{fffd}", d.display())
        );
        let err = crate::resources::testing::apply(res.as_ref(), &t).unwrap_err();
        assert!(
            err.starts_with("file names that are not UTF-8 cannot be passed to chmod by SLICE"),
            "{err}"
        );
        assert_eq!(mode(&d, "tool"), 0o755, "the others are fixed all the same");
        assert_eq!(mode(&d, odd), 0o4755);
    }

    #[test]
    fn a_missing_search_path_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let res = build(
            "setuid",
            &format!("paths: ['{}/nowhere']\n", dir.path().display()),
            true,
        )
        .unwrap();
        assert_eq!(diff(res.as_ref(), &Local::new()).unwrap(), []);
    }

    /// Answers as recorded for these tests (the format the probe prints), not from a host.
    fn observed(
        res: &dyn crate::resource::Resource,
        outputs: Vec<Output>,
    ) -> Result<Vec<Change>, String> {
        let probes = res.probes();
        let answers: Vec<_> = outputs
            .into_iter()
            .map(crate::transport::Answer::Run)
            .collect();
        res.diff(&Observed {
            answers: &answers,
            probes: &probes,
        })
    }

    fn ok(stdout: &[u8]) -> Output {
        Output {
            status: 0,
            stdout: stdout.to_vec(),
            stderr: Vec::new(),
        }
    }

    const DEBIAN: &[u8] = b"4755 /usr/bin/chfn\x004755 /usr/bin/gpasswd\x004755 /usr/bin/mount\x004755 /usr/bin/newgrp\x004755 /usr/bin/passwd\x004755 /usr/bin/su\x004755 /usr/bin/sudo\x004755 /usr/bin/umount\x002755 /usr/bin/chage\x002755 /usr/bin/expiry\x002755 /usr/sbin/unix_chkpwd\x004754 /usr/lib/dbus-1.0/dbus-daemon-launch-helper\x004755 /usr/lib/openssh/ssh-keysign\x00";

    #[test]
    fn the_default_allow_list_keeps_what_a_docker_host_needs() {
        let res = build("setuid", "{}\n", true).unwrap();
        let changes = observed(res.as_ref(), vec![ok(DEBIAN)]).unwrap();
        let whats: Vec<&str> = changes.iter().map(|c| c.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "setgid bit /usr/bin/chage",
                "setuid bit /usr/bin/chfn",
                "setgid bit /usr/bin/expiry",
                "setuid bit /usr/bin/gpasswd",
                "setuid bit /usr/bin/mount",
                "setuid bit /usr/bin/newgrp",
                "setuid bit /usr/bin/umount",
                "setuid bit /usr/lib/openssh/ssh-keysign",
            ]
        );
        // also_allow adds to the defaults; allow replaces them.
        let res = build(
            "setuid",
            "also_allow: ['/usr/bin/*mount', /usr/bin/ch*]\n",
            true,
        )
        .unwrap();
        assert_eq!(observed(res.as_ref(), vec![ok(DEBIAN)]).unwrap().len(), 4);
        let res = build("setuid", "allow: ['/usr/**']\n", true).unwrap();
        assert_eq!(observed(res.as_ref(), vec![ok(DEBIAN)]).unwrap(), []);
        // `*` does not cross a directory.
        let res = build("setuid", "allow: ['/usr/bin/sudo', '/usr/*']\n", true).unwrap();
        assert_eq!(observed(res.as_ref(), vec![ok(DEBIAN)]).unwrap().len(), 12);
    }

    #[test]
    fn sudo_never_loses_its_bit_to_a_short_allow_list() {
        let res = build("setuid", "allow: [/usr/bin/passwd]\n", true).unwrap();
        let err = observed(res.as_ref(), vec![ok(DEBIAN)]).unwrap_err();
        assert!(err.starts_with("/usr/bin/sudo is not allowed to keep its setuid bit, but without it nobody can become root through sudo"), "{err}");
    }

    #[test]
    fn several_paths_are_searched_and_each_file_counted_once() {
        let res = build("setuid", "paths: [/, /home/, /]\n", true).unwrap();
        assert_eq!(res.target(), "/,/home");
        assert_eq!(res.probes().len(), 2);
        let changes = observed(
            res.as_ref(),
            vec![
                ok(b"4755 /home/a/x\x004755 /usr/bin/sudo\x00"),
                ok(b"4755 /home/a/x\x00"),
            ],
        )
        .unwrap();
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn find_errors_fail_the_task_unless_files_only_vanished() {
        let res = build("setuid", "{}\n", true).unwrap();
        let vanished = Output {
            status: 1,
            stdout: b"4755 /usr/bin/x\x00".to_vec(),
            stderr: b"find: '/tmp/tmp.X1': No such file or directory\n".to_vec(),
        };
        assert_eq!(observed(res.as_ref(), vec![vanished]).unwrap().len(), 1);
        let denied = Output {
            status: 1,
            stdout: Vec::new(),
            stderr: b"find: '/root': Permission denied\n".to_vec(),
        };
        assert_eq!(
            observed(res.as_ref(), vec![denied]).unwrap_err(),
            "searching / for setuid files failed (status 1): find: '/root': Permission denied"
        );
        assert!(!only_vanished(""));
        assert!(!only_vanished("find: not found\n"));
    }

    #[test]
    fn garbage_output_never_panics() {
        for out in [
            &b""[..],
            b"\x00\x00",
            b"x",
            b"4755",
            b"4755 ",
            b"9999 /x\x00",
            b" /x\x00",
            b"4755 /a\x00garbage",
        ] {
            let _ = records(out);
        }
        assert_eq!(records(b"4755 /a b\x00 /gone\x002755 /c")[1].path, "/c");
    }

    #[test]
    fn the_probe_is_one_read_only_find_per_path() {
        let res = build("setuid", "paths: [/srv/it's]\n", true).unwrap();
        let Probe::Run(cmd) = &res.probes()[0] else {
            panic!("a command")
        };
        let q = shlex::try_quote("/srv/it's").unwrap();
        assert!(
            cmd.starts_with(&format!("[ -e {q} ] || exit 0; find {q} -xdev -type f")),
            "{cmd}"
        );
        assert!(!cmd.contains("chmod"));
    }

    #[test]
    fn build_errors_point_at_the_parameter() {
        assert_eq!(
            build_err("setuid", "paths: [usr]\n"),
            "1:8: `paths` must be absolute paths, found `usr`"
        );
        assert_eq!(
            build_err("setuid", "allow: [sudo]\n"),
            "1:8: allowed files are absolute paths or globs, found `sudo`"
        );
        assert_eq!(
            build_err("setuid", "also_allow: ['/usr/bin/[']\n"),
            "1:13: `/usr/bin/[` is not a valid glob: unclosed character class; missing ']'"
        );
        assert_eq!(
            build_err("setuid", "alow: [/x]\n"),
            "1:1: unknown key `alow` for `setuid`"
        );
    }
}
