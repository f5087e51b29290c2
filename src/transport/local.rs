//! The local machine, or an offline root directory on it (`--root DIR`).
//!
//! Under a root every path resolves inside it the way it would after a chroot: absolute symbolic
//! links are taken relative to the root and `..` never climbs above it. Commands run chrooted.

use std::any::Any;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use super::{busy, Attrs, FileType, Output, Stat, Transport};

/// Symbolic links followed in one path before giving up, as the kernel does (ELOOP).
const MAX_LINKS: usize = 40;

pub struct Local {
    root: Option<PathBuf>,
}

impl Local {
    /// The running machine itself.
    pub fn new() -> Local {
        Local { root: None }
    }

    /// An offline root directory: an image being prepared, a mounted disk.
    pub fn with_root(root: &Path) -> io::Result<Local> {
        let root = fs::canonicalize(root)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "the root is not a directory",
            ));
        }
        Ok(Local { root: Some(root) })
    }

    /// Maps a target path to a path on this machine. `follow_final` decides whether a symbolic
    /// link in the last component is followed (reads and writes) or not (stat, remove).
    fn resolve(&self, path: &str, follow_final: bool) -> io::Result<PathBuf> {
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path}: paths on the target must be absolute"),
            ));
        }
        let Some(root) = &self.root else {
            return Ok(p.to_path_buf());
        };
        let mut rel = PathBuf::new();
        // Components still to walk, last one on top.
        let mut todo: Vec<OsString> = components(p);
        let mut links = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                rel.pop();
                continue;
            }
            let candidate = root.join(&rel).join(&c);
            let last = todo.is_empty();
            let is_link = fs::symlink_metadata(&candidate)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            if is_link && (!last || follow_final) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::other(format!(
                        "{path}: too many levels of symbolic links"
                    )));
                }
                let target = fs::read_link(&candidate)?;
                if target.is_absolute() {
                    rel.clear();
                }
                todo.extend(components(&target));
            } else {
                rel.push(&c);
            }
        }
        Ok(root.join(rel))
    }
}

impl Local {
    /// The run lock lives on this machine's /run/lock (a tmpfs, gone at reboot): one for the
    /// machine itself, one per root directory, so an image is never written into for a lock.
    fn lock_path(&self) -> PathBuf {
        let dir = Path::new("/run/lock");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        match &self.root {
            None => dir.join("slice.lock"),
            Some(root) => {
                let hash = Sha256::digest(root.as_os_str().as_encoded_bytes());
                let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
                dir.join(format!("slice-root-{hex}.lock"))
            }
        }
    }
}

impl Default for Local {
    fn default() -> Self {
        Local::new()
    }
}

/// Normal and `..` components of a path, reversed (so `pop` yields them in order).
fn components(p: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn stat_of(m: &fs::Metadata) -> Stat {
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_dir() {
        FileType::Dir
    } else if ft.is_file() {
        FileType::File
    } else {
        FileType::Other
    };
    Stat {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
    }
}

fn apply_attrs(path: &Path, attrs: &Attrs) -> io::Result<()> {
    // Owner first: chown clears setuid/setgid bits, so the mode must come after it.
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::chown(path, attrs.uid, attrs.gid)?;
    }
    if let Some(mode) = attrs.mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

impl Transport for Local {
    fn name(&self) -> String {
        match &self.root {
            None => "localhost".to_string(),
            Some(r) => format!("localhost:{}", r.display()),
        }
    }

    fn live(&self) -> bool {
        self.root.is_none()
    }

    fn stat(&self, path: &str) -> io::Result<Option<Stat>> {
        let p = self.resolve(path, false)?;
        Ok(not_found_is_none(fs::symlink_metadata(p))?.map(|m| stat_of(&m)))
    }

    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        let p = self.resolve(path, true)?;
        not_found_is_none(fs::read(p))
    }

    fn write(&self, path: &str, data: &[u8], attrs: &Attrs) -> io::Result<()> {
        let p = self.resolve(path, true)?;
        let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path}: not a file path"),
            ));
        };
        let old = not_found_is_none(fs::metadata(&p))?;
        if old.as_ref().is_some_and(|m| !m.is_file()) {
            return Err(io::Error::other(format!(
                "{path} exists and is not a regular file"
            )));
        }
        // Unset attributes keep the old file's; a new file gets 0644.
        let keep = Attrs {
            mode: Some(
                attrs
                    .mode
                    .or(old.as_ref().map(|m| m.mode() & 0o7777))
                    .unwrap_or(0o644),
            ),
            uid: attrs.uid.or(old.as_ref().map(|m| m.uid())),
            gid: attrs.gid.or(old.as_ref().map(|m| m.gid())),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".slice-tmp")
            .tempfile_in(dir)?;
        tmp.write_all(data)?;
        apply_attrs(tmp.path(), &keep)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&p).map_err(|e| e.error)?;
        // The rename itself must reach the disk too.
        fs::File::open(dir)?.sync_all()
    }

    fn mkdir(&self, path: &str, attrs: &Attrs) -> io::Result<()> {
        let p = self.resolve(path, false)?;
        fs::create_dir(&p)?;
        let attrs = Attrs {
            mode: Some(attrs.mode.unwrap_or(0o755)),
            ..*attrs
        };
        apply_attrs(&p, &attrs)
    }

    fn set_attrs(&self, path: &str, attrs: &Attrs) -> io::Result<()> {
        apply_attrs(&self.resolve(path, true)?, attrs)
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        let p = self.resolve(path, false)?;
        let m = fs::symlink_metadata(&p)?;
        if m.is_dir() {
            fs::remove_dir(&p)
        } else {
            fs::remove_file(&p)
        }
    }

    fn lock(&self, holder: &str, wait: Duration) -> io::Result<Box<dyn Any + Send>> {
        let path = self.lock_path();
        let deadline = Instant::now() + wait;
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut held) => {
                    // Name the holder inside the lock file, for whoever waits next.
                    held.set_len(0)?;
                    held.write_all(holder.as_bytes())?;
                    return Ok(Box::new(held));
                }
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    if Instant::now() >= deadline {
                        return Err(busy(&fs::read_to_string(&path).unwrap_or_default()));
                    }
                    file = f;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err((_, e)) => return Err(e.into()),
            }
        }
    }

    fn run(&self, command: &str) -> io::Result<Output> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(command).stdin(Stdio::null());
        if let Some(root) = self.root.clone() {
            if !root.join("bin/sh").exists() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} has no /bin/sh to run commands with", root.display()),
                ));
            }
            // SAFETY: chroot and chdir are async-signal-safe system calls, made in the child
            // between fork and exec with no allocation.
            unsafe {
                cmd.pre_exec(move || {
                    nix::unistd::chroot(&root)?;
                    nix::unistd::chdir("/")?;
                    Ok(())
                });
            }
        }
        let out = cmd.output()?;
        Ok(Output {
            status: out.status.code().unwrap_or(128 + 9),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_under_a_root_never_escape_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::write(root.join("usr/lib/os-release"), "ID=test\n").unwrap();
        // An absolute link inside the image points inside the image, not at this machine.
        symlink("/usr/lib/os-release", root.join("etc/os-release")).unwrap();
        symlink("../../../../../../etc", root.join("etc/up")).unwrap();
        let t = Local::with_root(root).unwrap();
        assert_eq!(t.read("/etc/os-release").unwrap().unwrap(), b"ID=test\n");
        let real_root = fs::canonicalize(root).unwrap();
        assert_eq!(
            t.resolve("/../../etc/passwd", true).unwrap(),
            real_root.join("etc/passwd")
        );
        assert_eq!(
            t.resolve("/etc/up/passwd", true).unwrap(),
            real_root.join("etc/passwd")
        );
        assert_eq!(
            t.stat("/etc/os-release").unwrap().unwrap().kind,
            FileType::Symlink
        );
    }

    #[test]
    fn symlink_loops_are_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/a", dir.path().join("b")).unwrap();
        symlink("/b", dir.path().join("a")).unwrap();
        let t = Local::with_root(dir.path()).unwrap();
        assert!(t.read("/a").is_err());
    }

    #[test]
    fn write_is_atomic_and_keeps_the_old_mode() {
        let dir = tempfile::tempdir().unwrap();
        let t = Local::with_root(dir.path()).unwrap();
        t.write(
            "/f",
            b"one",
            &Attrs {
                mode: Some(0o600),
                ..Attrs::default()
            },
        )
        .unwrap();
        t.write("/f", b"two", &Attrs::default()).unwrap();
        let st = t.stat("/f").unwrap().unwrap();
        assert_eq!((st.mode, st.kind), (0o600, FileType::File));
        assert_eq!(t.read("/f").unwrap().unwrap(), b"two");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file stays behind");
    }

    #[test]
    fn missing_parent_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let t = Local::with_root(dir.path()).unwrap();
        let e = t.write("/no/such/f", b"x", &Attrs::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn relative_paths_are_refused() {
        assert!(Local::new().stat("etc/passwd").is_err());
    }

    #[test]
    fn a_second_lock_waits_then_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let t = Local::with_root(dir.path()).unwrap();
        let held = t.lock("run A (pid 1)", Duration::ZERO).unwrap();
        let e = t.lock("run B", Duration::from_millis(120)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(e.to_string(), "the host is locked by run A (pid 1)");
        drop(held);
        assert!(t.lock("run B", Duration::ZERO).is_ok());
    }
}
