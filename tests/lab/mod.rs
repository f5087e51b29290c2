//! SLICE's lab of real Debian 12 hosts, for integration tests (see `tests/lab/README.md`).
//!
//! ```ignore
//! #[path = "lab/mod.rs"]
//! mod lab;
//! use lab::{Kind, Lab};
//!
//! #[test]
//! fn something_on_a_real_host() -> Result<(), Box<dyn std::error::Error>> {
//!     let host = Lab::any_host(Kind::A)?; // builds the image on first use, starts, waits
//!     host.run("apt-get install -y tree"); // panics with both streams if it fails
//!     Ok(())
//! } // the host is torn down here, also when the test panics
//! ```
//!
//! Every function that starts something returns a [`LabError`] when the lab cannot run here
//! (not root, a missing tool, no namespaces, no mirror for the first image build): a test
//! that uses the lab fails with that message; it never passes by skipping.
//!
//! Host indexes: [`Lab::any_host`] lets `lab.sh up auto` pick a free index in 100..=250 under
//! a lock in the lab folder, so tests in parallel threads and in parallel test processes never
//! collide. [`Lab::host`] takes a fixed index; fixed indexes belong in 1..=99, and two tests
//! must not pick the same one (the second fails with "in use").

#![allow(dead_code)]

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Why the lab could not do what a test asked. Its `Debug` is the plain message, so that a
/// test returning `Result` (or calling `expect`) shows it readably.
pub struct LabError(String);

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabError {}

pub type Result<T> = std::result::Result<T, LabError>;

/// What runs inside a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// netns + chroot, sshd under tini: 0.2 s to start, a few MiB. No systemd (`systemctl`
    /// can enable/disable but not start/stop/restart).
    A,
    /// systemd-nspawn --boot: a real systemd, about 1 s to start, about 13 MiB.
    B,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::A => "a",
            Kind::B => "b",
        }
    }
}

/// The lab as a whole: its script, its folder and its key.
pub struct Lab;

/// How long `wait` gives a host to answer (seconds); SLICE_LAB_WAIT overrides it.
const DEFAULT_WAIT_SECONDS: u32 = 90;

impl Lab {
    /// `tests/lab/lab.sh` of this checkout.
    pub fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/lab.sh")
    }

    /// The lab's cache and state folder (SLICE_LAB, else /var/tmp/slice-lab).
    pub fn dir() -> PathBuf {
        std::env::var_os("SLICE_LAB")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/slice-lab"))
    }

    /// The private key that logs in as root, `lab` and `labpw` on every host.
    pub fn key_path() -> PathBuf {
        Lab::dir().join("image/id_ed25519")
    }

    /// Makes sure this machine can run the lab and that the image is built: `lab.sh check`,
    /// then `lab.sh image` (about 2 minutes the first time on a machine, a no-op after).
    /// Runs once per test process; every later call returns the first call's result.
    pub fn image() -> Result<()> {
        static ONCE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
        ONCE.get_or_init(|| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return Err(
                    "the lab needs root (it creates network namespaces, veths, cgroups \
                            and mounts): run this test as root, as CI does"
                        .to_string(),
                );
            }
            let check = lab_command(&["check"])
                .output()
                .map_err(|e| spawn_error("check", e))?;
            if !check.status.success() {
                return Err(format!(
                    "the lab cannot run on this machine:\n{}",
                    String::from_utf8_lossy(&check.stderr).trim_end()
                ));
            }
            // The build's few progress lines go straight to the terminal (and its last log
            // lines on failure), so a two-minute first build is not silent.
            let status = lab_command(&["image"])
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .status()
                .map_err(|e| spawn_error("image", e))?;
            if !status.success() {
                return Err(format!(
                    "`lab.sh image` failed ({status}); its output is above, the full log is \
                     {}/build/build.log",
                    Lab::dir().display()
                ));
            }
            Ok(())
        })
        .clone()
        .map_err(LabError)
    }

    /// Starts host `h{idx}` (10.200.idx.2) of the given kind and waits until it answers over
    /// ssh. Fixed indexes should be in 1..=99; prefer [`Lab::any_host`] in tests.
    pub fn host(idx: u8, kind: Kind) -> Result<Host> {
        Lab::image()?;
        if idx == 0 || idx > 250 {
            return Err(LabError(format!("host index must be 1..=250, not {idx}")));
        }
        let out = lab_output(&["up", &idx.to_string(), kind.arg()])?;
        Host::started(idx, kind, out)
    }

    /// Starts a host at a free index (100..=250) picked by the lab under its lock, and waits
    /// until it answers over ssh.
    pub fn any_host(kind: Kind) -> Result<Host> {
        Lab::image()?;
        let out = lab_output(&["up", "auto", kind.arg()])?;
        let idx = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(|l| l.trim().parse::<u8>().ok())
            .ok_or_else(|| {
                LabError(format!(
                    "`lab.sh up auto` printed no host index:\n{}",
                    describe(&out)
                ))
            })?;
        Host::started(idx, kind, out)
    }

    /// The ssh options every lab connection uses (key, no known_hosts, no prompts), for
    /// handing to a program under test that runs ssh itself.
    pub fn ssh_options() -> Vec<String> {
        let key = Lab::key_path();
        let mut v = vec![
            "-F".to_string(),
            "/dev/null".to_string(),
            "-i".to_string(),
            key.display().to_string(),
        ];
        for o in [
            "IdentitiesOnly=yes",
            "BatchMode=yes",
            "UserKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=no",
            "LogLevel=ERROR",
            "ConnectTimeout=5",
            "ServerAliveInterval=5",
            "ServerAliveCountMax=6",
        ] {
            v.push("-o".to_string());
            v.push(o.to_string());
        }
        v
    }
}

/// A running lab host. Dropping it tears the host down (also during a panic's unwinding).
pub struct Host {
    idx: u8,
    kind: Kind,
    ip: String,
    down: bool,
}

impl Host {
    /// After a successful `up`: wait until the host answers; on failure, tear it down.
    fn started(idx: u8, kind: Kind, up: Output) -> Result<Host> {
        if !up.status.success() {
            // `up` removes what it had started itself. No guard here: when the index was in
            // use, tearing it down would stop somebody else's host.
            return Err(LabError(format!(
                "lab.sh up {idx} {} failed:\n{}",
                kind.arg(),
                describe(&up)
            )));
        }
        // From here on the host is ours: the guard tears it down if waiting fails.
        let host = Host {
            idx,
            kind,
            ip: format!("10.200.{idx}.2"),
            down: false,
        };
        let wait = std::env::var("SLICE_LAB_WAIT").unwrap_or(DEFAULT_WAIT_SECONDS.to_string());
        let out = lab_output(&["wait", &idx.to_string(), &wait])?;
        if !out.status.success() {
            return Err(LabError(format!(
                "host h{idx} (kind {}) did not come up:\n{}",
                kind.arg(),
                describe(&out)
            )));
        }
        Ok(host)
    }

    pub fn idx(&self) -> u8 {
        self.idx
    }

    /// The host's address, 10.200.IDX.2 (this machine is 10.200.IDX.1 on the other end).
    pub fn ip(&self) -> &str {
        &self.ip
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The host's hostname, `h{idx}`.
    pub fn name(&self) -> String {
        format!("h{}", self.idx)
    }

    /// An `ssh` command logged in as `user` (root, lab, labpw), ready for the remote command.
    pub fn ssh_command(&self, user: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(Lab::ssh_options())
            .arg(format!("{user}@{}", self.ip))
            .arg("--")
            .stdin(Stdio::null());
        c
    }

    /// Runs a shell command on the host as root.
    pub fn ssh(&self, cmd: &str) -> Output {
        self.ssh_as("root", cmd)
    }

    /// Runs a shell command on the host as `user`.
    pub fn ssh_as(&self, user: &str, cmd: &str) -> Output {
        self.ssh_command(user)
            .arg(cmd)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ssh (apt-get install openssh-client): {e}"))
    }

    /// Runs a command as root, panics (showing both streams) unless it succeeds; its stdout.
    #[track_caller]
    pub fn run(&self, cmd: &str) -> String {
        self.run_as("root", cmd)
    }

    /// Runs a command as `user`, panics (showing both streams) unless it succeeds; its stdout.
    #[track_caller]
    pub fn run_as(&self, user: &str, cmd: &str) -> String {
        let out = self.ssh_as(user, cmd);
        assert!(
            out.status.success(),
            "on {} as {user}: `{cmd}` failed\n{}",
            self.name(),
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many exec requests (`ssh host CMD`) sshd has served since the host started, not
    /// counting the one that reads the log. sshd logs one "Starting session: command" line
    /// per exec request (LogLevel VERBOSE to /var/log/sshd.log).
    pub fn exec_requests(&self) -> usize {
        let n = self.run("grep -c 'Starting session: command' /var/log/sshd.log || true");
        n.trim().parse::<usize>().unwrap_or(0).saturating_sub(1)
    }

    /// Tears the host down now and reports a failure (Drop can only print it).
    pub fn down(mut self) -> Result<()> {
        self.down = true;
        let out = lab_output(&["down", &self.idx.to_string()])?;
        if out.status.success() {
            Ok(())
        } else {
            Err(LabError(format!(
                "lab.sh down {} failed:\n{}",
                self.idx,
                describe(&out)
            )))
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        match lab_output(&["down", &self.idx.to_string()]) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("lab.sh down {} failed:\n{}", self.idx, describe(&out)),
            Err(e) => eprintln!("{e}"),
        }
    }
}

/// `bash lab.sh ARGS` with this process as the owner of whatever it starts: if the process
/// dies before its guards run, `lab.sh up auto` reclaims those hosts later.
fn lab_command(args: &[&str]) -> Command {
    let mut c = Command::new("bash");
    c.arg(Lab::script())
        .args(args)
        .env("SLICE_LAB_OWNER", std::process::id().to_string())
        .stdin(Stdio::null());
    c
}

fn lab_output(args: &[&str]) -> Result<Output> {
    lab_command(args)
        .output()
        .map_err(|e| LabError(spawn_error(&args.join(" "), e)))
}

fn spawn_error(what: &str, e: std::io::Error) -> String {
    format!("cannot run `bash {} {what}`: {e}", Lab::script().display())
}

fn describe(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}
