//! A small harness for running the `slice` binary against throwaway directories.
//!
//! Every test gets its own temporary directory: playbooks (and files beside them) are written
//! at its top, and `root/` inside it is an offline root for `--root`. `slice` runs with the
//! temporary directory as its working directory, so playbooks are named by relative paths and
//! error messages read `play.yml:3:5` whatever the temporary directory is called.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The path of a playbook shipped in this repository.
pub fn repo_playbook(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("playbooks")
        .join(name)
}

/// What a run of `slice` left: its exit code and its two output streams.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts the exit code, showing both streams when it is not the expected one.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Output {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

pub struct Slice {
    dir: tempfile::TempDir,
}

impl Default for Slice {
    fn default() -> Self {
        Slice::new()
    }
}

impl Slice {
    /// A fresh temporary directory holding an empty `root/`.
    pub fn new() -> Slice {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        // tempdir() makes 0700 directories; a root directory is normally 0755.
        fs::set_permissions(dir.path().join("root"), fs::Permissions::from_mode(0o755)).unwrap();
        Slice { dir }
    }

    /// The temporary directory (the working directory of every run).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The offline root directory, `root/` inside the temporary directory.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The root as `slice` names it in reports (`localhost:<canonical path>`).
    pub fn root_display(&self) -> String {
        fs::canonicalize(self.root()).unwrap().display().to_string()
    }

    /// Writes a file in the temporary directory (creating its folders) and returns its path.
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, contents).unwrap();
        p
    }

    /// Writes a file inside the root, with its folders (0755), and gives it `mode`.
    pub fn write_root(&self, rel: &str, contents: impl AsRef<[u8]>, mode: u32) -> PathBuf {
        let p = self.root().join(rel.trim_start_matches('/'));
        self.mkdir_root(p.parent().unwrap().strip_prefix(self.root()).unwrap());
        fs::write(&p, contents).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Creates a directory (and its parents) inside the root, every one 0755.
    pub fn mkdir_root(&self, rel: impl AsRef<Path>) {
        let mut p = self.root();
        for c in rel.as_ref().components() {
            p.push(c);
            if !p.exists() {
                fs::create_dir(&p).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }

    /// The text of a file inside the root.
    pub fn read_root(&self, rel: &str) -> String {
        fs::read_to_string(self.root().join(rel.trim_start_matches('/'))).unwrap()
    }

    /// The permission bits of a path inside the root.
    pub fn mode_in_root(&self, rel: &str) -> u32 {
        fs::symlink_metadata(self.root().join(rel.trim_start_matches('/')))
            .unwrap()
            .mode()
            & 0o7777
    }

    /// Runs `slice` with these arguments in the temporary directory.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = Command::new(env!("CARGO_BIN_EXE_slice"))
            .args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Output {
            code: out.status.code().expect("slice was killed by a signal"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Runs `slice <sub> <playbook> --root root <extra...>`.
    pub fn run_root(&self, sub: &str, playbook: impl AsRef<Path>, extra: &[&str]) -> Output {
        let mut args: Vec<std::ffi::OsString> = vec![sub.into(), playbook.as_ref().into()];
        args.push("--root".into());
        args.push(self.root().into());
        args.extend(extra.iter().map(Into::into));
        self.run(args)
    }

    /// Replaces what changes from run to run (timings, the temporary root's path).
    pub fn normalise(&self, text: &str) -> String {
        normalise(text).replace(&self.root_display(), "ROOT")
    }

    /// Everything under the root: path → (kind, mode, uid, gid, contents or link target).
    pub fn snapshot(&self) -> Snapshot {
        snapshot(&self.root())
    }
}

/// Replaces the timings of human reports (`in 0.3 ms`, `(1.2 ms, play.yml:3)`) with `X`.
pub fn normalise(text: &str) -> String {
    let re = regex::Regex::new(r"\d+\.\d+ ms").unwrap();
    re.replace_all(text, "X ms").into_owned()
}

/// A report split into tasks: each task's status line, and the lines under it with their
/// 10-space indent taken off.
pub fn sections(report: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in report.lines() {
        match line.strip_prefix("          ") {
            Some(body) => out
                .last_mut()
                .expect("an indented line before any task line")
                .1
                .push(body.to_string()),
            None => out.push((line.to_string(), Vec::new())),
        }
    }
    out
}

/// The lines of a report that are not indented: one per task, then the summary and exit code.
pub fn headers(report: &str) -> Vec<String> {
    sections(report).into_iter().map(|(h, _)| h).collect()
}

/// The body of the only task whose status line is exactly `header`.
#[track_caller]
pub fn body_of(report: &str, header: &str) -> Vec<String> {
    let found: Vec<Vec<String>> = sections(report)
        .into_iter()
        .filter(|(h, _)| h == header)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "no single task line `{header}` in\n{report}"
    );
    found.into_iter().next().unwrap()
}

#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub data: Vec<u8>,
}

pub type Snapshot = BTreeMap<PathBuf, Entry>;

/// Everything below `dir` (not following links), keyed by path relative to it.
pub fn snapshot(dir: &Path) -> Snapshot {
    fn walk(base: &Path, dir: &Path, out: &mut Snapshot) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let (kind, data) = if ft.is_symlink() {
                (
                    "symlink",
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if ft.is_dir() {
                ("dir", Vec::new())
            } else if ft.is_file() {
                ("file", fs::read(&p).unwrap())
            } else {
                ("other", Vec::new())
            };
            out.insert(
                p.strip_prefix(base).unwrap().to_path_buf(),
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    data,
                },
            );
            if kind == "dir" {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Snapshot::new();
    let m = fs::metadata(dir).unwrap();
    out.insert(
        PathBuf::new(),
        Entry {
            kind: "dir",
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            data: Vec::new(),
        },
    );
    walk(dir, dir, &mut out);
    out
}

/// Whether this process runs as root. The built-in playbooks ask for `owner: root`, which only
/// root can give a file, so tests that apply them are skipped (loudly) otherwise.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// For tests that need root: prints why the test is skipped and returns false when not root.
pub fn needs_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("SKIPPED {test}: the playbook asks for owner root, which only root can set");
    false
}
