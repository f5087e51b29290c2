//! How SLICE touches a host: a small trait for reading, writing and running, and its implementations.
//!
//! The transport knows nothing about resources. Resources describe what they need to see as
//! [`Probe`]s; a transport answers a whole batch at once, so a remote one can gather a host's state
//! in a constant number of round trips.

pub mod local;
pub mod script;
pub mod ssh;

use std::any::Any;
use std::io;
use std::time::Duration;

pub use local::Local;
pub use ssh::Ssh;

/// A lock that is held by another run, with who holds it.
pub fn busy(holder: &str) -> io::Error {
    let who = holder.trim();
    let who = if who.is_empty() {
        "another SLICE run"
    } else {
        who
    };
    io::Error::new(
        io::ErrorKind::WouldBlock,
        format!("the host is locked by {who}"),
    )
}

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Other,
}

impl FileType {
    pub fn describe(self) -> &'static str {
        match self {
            FileType::File => "a regular file",
            FileType::Dir => "a directory",
            FileType::Symlink => "a symbolic link",
            FileType::Other => "a special file",
        }
    }
}

/// The metadata of a path, without following a final symbolic link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: FileType,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

/// Mode and ownership to give a path; `None` leaves that part as it is (or as created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Who SLICE is on a remote host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    /// The controller's address as the host sees it (the local end of the TCP connection).
    pub from: String,
}

/// The result of a command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// stderr (or stdout when stderr is empty), trimmed, for messages.
    pub fn message(&self) -> String {
        let err = String::from_utf8_lossy(&self.stderr);
        let text = if err.trim().is_empty() {
            String::from_utf8_lossy(&self.stdout)
        } else {
            err
        };
        text.trim().to_string()
    }
}

/// One thing a resource needs to observe.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Probe {
    Stat(String),
    Read(String),
    /// A read-only command (a guard such as `unless`).
    Run(String),
}

/// The answer to a [`Probe`]. "Absent" is a value (`None`), not an error.
#[derive(Clone, Debug)]
pub enum Answer {
    Stat(Option<Stat>),
    Read(Option<Vec<u8>>),
    Run(Output),
    Failed(String),
}

pub trait Transport: Send + Sync {
    /// How the target is named in reports: `localhost`, `localhost:/srv/image`, a host name.
    fn name(&self) -> String;

    /// Whether this is a running system (live kernel state such as /proc/sys is real), as opposed
    /// to an offline root directory.
    fn live(&self) -> bool;

    /// Proves that SLICE can still get in: a new connection, logged in, running a command,
    /// tried again until `within` has passed (a reloading sshd closes its socket for a moment).
    /// Local targets are always reachable.
    fn confirm_access(&self, _within: Duration) -> io::Result<()> {
        Ok(())
    }

    /// The user SLICE logs in as over SSH, and the address it connects from as the host sees it
    /// (for "would this change lock SLICE out?" checks). `None` for local targets.
    fn login(&self) -> Option<Login> {
        None
    }

    fn stat(&self, path: &str) -> io::Result<Option<Stat>>;

    /// The contents of a regular file; `None` when the path does not exist.
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>>;

    /// Replaces a file atomically: the path holds the old contents or the new ones, never a mix.
    /// Mode and owner are set before the file takes its place; unset parts keep the old file's.
    fn write(&self, path: &str, data: &[u8], attrs: &Attrs) -> io::Result<()>;

    fn mkdir(&self, path: &str, attrs: &Attrs) -> io::Result<()>;

    fn set_attrs(&self, path: &str, attrs: &Attrs) -> io::Result<()>;

    /// Removes a file, a symbolic link or an empty directory.
    fn remove(&self, path: &str) -> io::Result<()>;

    /// Runs a shell command on the target (inside the root directory when there is one).
    fn run(&self, command: &str) -> io::Result<Output>;

    /// Takes the target's run lock, so two SLICE runs on one host never interleave. Waits up to
    /// `wait` for another run to finish; then fails naming the holder. The lock is held until
    /// the returned guard is dropped.
    fn lock(&self, holder: &str, wait: Duration) -> io::Result<Box<dyn Any + Send>>;

    /// Answers a batch of probes, in order. Remote transports override this to use one round trip.
    fn observe(&self, probes: &[Probe]) -> Vec<Answer> {
        probes
            .iter()
            .map(|p| {
                let r = match p {
                    Probe::Stat(path) => self.stat(path).map(Answer::Stat),
                    Probe::Read(path) => self.read(path).map(Answer::Read),
                    Probe::Run(cmd) => self.run(cmd).map(Answer::Run),
                };
                r.unwrap_or_else(|e| Answer::Failed(e.to_string()))
            })
            .collect()
    }
}
