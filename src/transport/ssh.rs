//! A host over SSH (libssh2 through the ssh2 crate): one session per host, settings from
//! `ssh -G`, host keys checked against known_hosts, sudo for a non-root login, and a whole batch
//! of probes answered by one remote script in one round trip.

use std::any::Any;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use ssh2::{BlockDirections, CheckResult, HashType, HostKeyType, KnownHostFileKind, Session};

use super::script::{self, quote};
use super::{busy, Answer, Attrs, Login, Output, Probe, Stat, Transport};

/// What the inventory says about a host; everything else comes from `ssh -G`.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// The inventory name, also the alias `ssh -G` looks up in ~/.ssh/config.
    pub name: String,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub key_file: Option<String>,
    /// Run commands through sudo as this user (usually root).
    pub become_user: Option<String>,
}

/// Settings shared by every host of a run.
#[derive(Clone, Debug)]
pub struct Options {
    pub accept_new_host_keys: bool,
    pub connect_timeout: Duration,
    /// The longest any one remote command may take.
    pub command_timeout: Duration,
    /// An ssh_config file to use instead of ~/.ssh/config (`ssh -F`).
    pub ssh_config: Option<PathBuf>,
    /// Password for sudo, when the login user needs one (never printed).
    pub become_password: Option<String>,
    /// Passphrase for encrypted private keys; without it SLICE asks on the terminal.
    pub key_passphrase: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            accept_new_host_keys: false,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(600),
            ssh_config: None,
            become_password: None,
            key_passphrase: None,
        }
    }
}

/// The connection settings after `ssh -G` merged ssh_config with the inventory.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub hostname: String,
    pub port: u16,
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    pub connect_timeout: Option<Duration>,
    pub user_known_hosts: Vec<PathBuf>,
    pub global_known_hosts: Vec<PathBuf>,
    pub keepalive: Option<u32>,
}

pub struct Ssh {
    name: String,
    /// How this host was reached, to prove a new connection still works (`confirm_access`).
    target: Target,
    opts: Options,
    /// The login user.
    user: String,
    session: Session,
    /// A second handle on the socket, to wait for it while the session is non-blocking.
    socket: TcpStream,
    become_user: Option<String>,
    become_password: Option<String>,
    command_timeout: Duration,
    /// Serialises use of the session: one command at a time on this host.
    busy: Mutex<()>,
    /// The SFTP channel, opened on the first upload.
    sftp: Mutex<Option<ssh2::Sftp>>,
}

/// What `pump` sends and when it may stop early.
struct Pump<'a> {
    input: &'a [u8],
    /// Send EOF after the input (a command); keep stdin open (the lock's `cat`).
    close_input: bool,
    /// Stop as soon as stdout ends with this line.
    stop_at: Option<&'a [u8]>,
}

/// The longest a blocking libssh2 call may wait (channel open, close).
const BLOCKING_TIMEOUT_MS: u32 = 60_000;

/// Marks on sudo's standard error: its password prompt, and that the command has started.
const SUDO_PROMPT: &str = "[slice-sudo-password]";
const BECOME_OK: &str = "__SLICE_BECOME_OK__";

impl Ssh {
    /// Connects, checks the host key and logs in.
    pub fn connect(target: &Target, opts: &Options) -> Result<Ssh, String> {
        let r = resolve(target, opts);
        let timeout = r.connect_timeout.unwrap_or(opts.connect_timeout);
        let where_ = format!("{}:{}", r.hostname, r.port);
        let addrs: Vec<_> = (r.hostname.as_str(), r.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {where_}: {e}"))?
            .collect();
        let mut last = format!("no address for {where_}");
        let mut socket = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) => last = format!("cannot connect to {where_}: {e}"),
            }
        }
        let socket = socket.ok_or(last)?;
        let _ = socket.set_nodelay(true);
        let mut session = Session::new().map_err(|e| e.to_string())?;
        session.set_tcp_stream(socket.try_clone().map_err(|e| e.to_string())?);
        session.set_timeout(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
        session
            .handshake()
            .map_err(|e| format!("SSH handshake with {where_} failed: {e}"))?;
        check_host_key(&session, &target.name, &r, opts)?;
        authenticate(&session, &target.name, &r, target.key_file.as_deref(), opts)?;
        // Commands run non-blocking with their own deadline; this bounds the few blocking calls
        // (opening a channel, its close) on a host that stopped answering.
        session.set_timeout(BLOCKING_TIMEOUT_MS);
        session.set_keepalive(true, r.keepalive.unwrap_or(15));
        let become_user = target
            .become_user
            .clone()
            .filter(|u| *u != r.user || r.user != "root");
        Ok(Ssh {
            name: target.name.clone(),
            target: target.clone(),
            opts: Options {
                // A fresh login must not wait as long as a first contact may.
                connect_timeout: opts.connect_timeout.min(Duration::from_secs(10)),
                ..opts.clone()
            },
            user: r.user.clone(),
            session,
            socket,
            become_user,
            become_password: opts.become_password.clone(),
            command_timeout: opts.command_timeout,
            busy: Mutex::new(()),
            sftp: Mutex::new(None),
        })
    }

    /// `command` as the remote login shell should run it: through sudo when becoming another user.
    fn wrap(&self, command: &str) -> String {
        match (&self.become_user, &self.become_password) {
            (None, _) => command.to_string(),
            (Some(u), None) => format!("sudo -n -H -u {} -- sh -c {}", quote(u), quote(command)),
            (Some(u), Some(_)) => format!(
                "sudo -S -H -p {} -u {} -- sh -c {}",
                quote(SUDO_PROMPT),
                quote(u),
                quote(&format!("echo {BECOME_OK} >&2; {command}"))
            ),
        }
    }

    /// Runs `command` with `input` on its standard input, reading stdout and stderr together so
    /// that neither can fill up and stall the other. One channel: one round trip.
    pub fn exec(&self, command: &str, input: &[u8]) -> io::Result<Output> {
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + self.command_timeout;
        self.session.set_blocking(false);
        let result = self.start(command, deadline).and_then(|(mut ch, early)| {
            let io = Pump {
                input,
                close_input: true,
                stop_at: None,
            };
            let (stdout, mut stderr) = self.pump(&mut ch, io, deadline)?;
            stderr.splice(0..0, early);
            Ok((ch, stdout, stderr))
        });
        self.session.set_blocking(true);
        let (mut ch, stdout, stderr) = result?;
        let _ = ch.wait_close();
        let status = ch.exit_status().map_err(ssh_err)?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Opens a channel and starts `command`. With a sudo password, answers sudo's prompt and
    /// waits until the command itself runs, so its stdin carries only its own input. Returns the
    /// channel and what the command already wrote to stderr. The session must be non-blocking.
    fn start(&self, command: &str, deadline: Instant) -> io::Result<(ssh2::Channel, Vec<u8>)> {
        let mut ch = loop {
            match self.session.channel_session() {
                Ok(ch) => break ch,
                Err(e) if would_block(&e) => self.wait_socket(deadline)?,
                Err(e) => return Err(ssh_err(e)),
            }
        };
        let wrapped = self.wrap(command);
        loop {
            match ch.exec(&wrapped) {
                Ok(()) => break,
                Err(e) if would_block(&e) => self.wait_socket(deadline)?,
                Err(e) => return Err(ssh_err(e)),
            }
        }
        if self.become_user.is_none() || self.become_password.is_none() {
            return Ok((ch, Vec::new()));
        }
        let mut stderr = Vec::new();
        let mut answered = false;
        let mut buf = [0u8; 4096];
        loop {
            let mut progress = false;
            match ch.stderr().read(&mut buf) {
                Ok(n) if n > 0 => {
                    stderr.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let text = String::from_utf8_lossy(&stderr).into_owned();
            if let Some(at) = text.find(BECOME_OK) {
                let cut = text[at..].find('\n').map_or(text.len(), |n| at + n + 1);
                stderr.drain(..cut);
                return Ok((ch, stderr));
            }
            let prompts = text.matches(SUDO_PROMPT).count();
            if prompts > usize::from(answered) || (ch.eof() && !progress) {
                if prompts == 1 && !answered {
                    let pw = self.become_password.clone().unwrap_or_default();
                    self.write_all(&mut ch, format!("{pw}\n").as_bytes(), deadline)?;
                    answered = true;
                    continue;
                }
                // Asked again, or sudo gave up: the password was refused.
                let _ = ch.close();
                let msg = text.replace(SUDO_PROMPT, "");
                let msg = msg.trim();
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "sudo refused on {}: {}",
                        self.name,
                        if msg.is_empty() {
                            "wrong password"
                        } else {
                            msg
                        }
                    ),
                ));
            }
            if Instant::now() > deadline {
                return Err(self.timed_out());
            }
            if !progress {
                self.wait_socket(deadline)?;
            }
        }
    }

    fn write_all(
        &self,
        ch: &mut ssh2::Channel,
        mut data: &[u8],
        deadline: Instant,
    ) -> io::Result<()> {
        while !data.is_empty() {
            match ch.write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_socket(deadline)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "a command on {} took longer than {:?}",
                self.name, self.command_timeout
            ),
        )
    }

    /// Moves data in both directions until both output streams end, or until stdout ends with
    /// the `stop_at` line.
    fn pump(
        &self,
        ch: &mut ssh2::Channel,
        io: Pump,
        deadline: Instant,
    ) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0;
        let mut eof_sent = !io.close_input && io.input.is_empty();
        let (mut out_done, mut err_done) = (false, false);
        while !(out_done && err_done) {
            let mut progress = false;
            if !eof_sent {
                if sent < io.input.len() {
                    match ch.write(&io.input[sent..]) {
                        Ok(n) => {
                            sent += n;
                            progress |= n > 0;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                if sent == io.input.len() {
                    if !io.close_input {
                        eof_sent = true;
                    } else {
                        match ch.send_eof() {
                            Ok(()) => {
                                eof_sent = true;
                                progress = true;
                            }
                            Err(e) if would_block(&e) => {}
                            Err(e) => return Err(ssh_err(e)),
                        }
                    }
                }
            }
            for (done, stream, sink) in [
                (&mut out_done, 0, &mut stdout),
                (&mut err_done, 1, &mut stderr),
            ] {
                if *done {
                    continue;
                }
                match ch.stream(stream).read(&mut buf) {
                    Ok(0) => *done = ch.eof(),
                    Ok(n) => {
                        sink.extend_from_slice(&buf[..n]);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if io.stop_at.is_some_and(|end| stdout.ends_with(end)) {
                break;
            }
            // After the remote end's EOF nothing more can arrive: whatever libssh2 still holds
            // is read on the next turn without waiting for the socket.
            if ch.eof() && !progress {
                break;
            }
            if Instant::now() > deadline {
                let _ = ch.close();
                return Err(self.timed_out());
            }
            if !progress {
                // A long quiet command must not let a NAT or firewall drop the connection.
                let _ = self.session.keepalive_send();
                self.wait_socket(deadline)?;
            }
        }
        Ok((stdout, stderr))
    }

    /// Sleeps until the socket is ready in the direction libssh2 is waiting for. (Waiting for
    /// "writable" otherwise would spin: the socket nearly always is.)
    fn wait_socket(&self, deadline: Instant) -> io::Result<()> {
        let flags = match self.session.block_directions() {
            BlockDirections::Inbound | BlockDirections::None => PollFlags::POLLIN,
            BlockDirections::Outbound => PollFlags::POLLOUT,
            BlockDirections::Both => PollFlags::POLLIN | PollFlags::POLLOUT,
        };
        let fd: BorrowedFd = self.socket.as_fd();
        // libssh2 may already hold data read along with an earlier packet, which the socket
        // will not announce again: a short cap bounds that wait.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(20));
        let mut fds = [PollFd::new(fd, flags)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(20);
        poll(&mut fds, PollTimeout::from(ms)).map_err(io::Error::from)?;
        Ok(())
    }

    /// Copies `data` over SFTP into a new temporary file beside `path` (beside the file a final
    /// symbolic link points to, as local writes follow it). Returns (target, temporary file).
    fn upload(&self, path: &str, data: &[u8]) -> io::Result<(String, String)> {
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let mut cached = self.sftp.lock().unwrap_or_else(|p| p.into_inner());
        let sftp = match cached.take() {
            Some(s) => cached.insert(s),
            None => cached.insert(self.session.sftp().map_err(ssh_err)?),
        };
        let p = Path::new(path);
        let target = match sftp.lstat(p) {
            Ok(st) if st.file_type().is_symlink() => sftp.realpath(p).map_err(ssh_err)?,
            _ => p.to_path_buf(),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = target.with_file_name(format!(".{name}.{}.slice-tmp", unique()));
        let flags = ssh2::OpenFlags::WRITE | ssh2::OpenFlags::EXCLUSIVE;
        let mut f = sftp
            .open_mode(&tmp, flags, 0o600, ssh2::OpenType::File)
            .map_err(ssh_err)?;
        let written = f.write_all(data);
        // fsync@openssh.com where the server has it; the finishing script syncs too.
        let _ = f.fsync();
        drop(f);
        if let Err(e) = written {
            let _ = sftp.unlink(&tmp);
            return Err(e);
        }
        Ok((target.display().to_string(), tmp.display().to_string()))
    }

    /// Runs a small shell script (the command line) with the data on stdin; fails on non-zero.
    fn script(&self, what: &str, command: &str, input: &[u8]) -> io::Result<Output> {
        let out = self.exec(command, input)?;
        if !out.success() {
            return Err(io::Error::other(format!("{what}: {}", out.message())));
        }
        Ok(out)
    }
}

/// A name part no other upload of this process (or of another run, most likely) uses.
fn unique() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{nanos:08x}{n:x}", std::process::id())
}

fn would_block(e: &ssh2::Error) -> bool {
    e.code() == ssh2::ErrorCode::Session(-37)
}

fn ssh_err(e: ssh2::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// `chown`/`chmod` arguments for attributes (owner first: chown clears setuid bits).
fn attr_commands(attrs: &Attrs, var: &str) -> String {
    let mut s = String::new();
    match (attrs.uid, attrs.gid) {
        (Some(u), Some(g)) => s.push_str(&format!("chown {u}:{g} -- {var} && ")),
        (Some(u), None) => s.push_str(&format!("chown {u} -- {var} && ")),
        (None, Some(g)) => s.push_str(&format!("chgrp {g} -- {var} && ")),
        (None, None) => {}
    }
    if let Some(m) = attrs.mode {
        s.push_str(&format!("chmod {m:o} -- {var} && "));
    }
    s.push_str("true");
    s
}

/// Refuses to replace anything but a regular file (`$p`).
const REGULAR_ONLY: &str = "if [ -e \"$p\" ] && [ ! -f \"$p\" ]; then echo \"$p exists and is not a regular file\" >&2; exit 1; fi";

/// Gives the temporary file `$t` its attributes (the old file's where not asked for), syncs it
/// and renames it over `$p`.
fn finish_write(attrs: &Attrs) -> String {
    format!(
        "if [ -e \"$p\" ]; then chown --reference=\"$p\" -- \"$t\" && chmod --reference=\"$p\" -- \"$t\"; else chmod 644 -- \"$t\"; fi; \
         {}; sync -- \"$t\" 2>/dev/null || true; mv -f -- \"$t\" \"$p\"; trap - EXIT",
        attr_commands(attrs, "\"$t\"")
    )
}

impl Transport for Ssh {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn live(&self) -> bool {
        true
    }

    fn confirm_access(&self, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let opts = Options {
                connect_timeout: self
                    .opts
                    .connect_timeout
                    .min(left.max(Duration::from_secs(1))),
                ..self.opts.clone()
            };
            let attempt = Ssh::connect(&self.target, &opts)
                .map_err(io::Error::other)
                .and_then(|fresh| fresh.exec("true", b""));
            let err = match attempt {
                Ok(out) if out.success() => return Ok(()),
                Ok(out) => io::Error::other(format!(
                    "logged in, but a command failed: {}",
                    out.message()
                )),
                Err(e) => e,
            };
            if Instant::now() + Duration::from_millis(300) >= deadline {
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn login(&self) -> Option<Login> {
        Some(Login {
            user: self.user.clone(),
            from: self
                .socket
                .local_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
        })
    }

    fn stat(&self, path: &str) -> io::Result<Option<Stat>> {
        match self.observe(&[Probe::Stat(path.into())]).pop() {
            Some(Answer::Stat(s)) => Ok(s),
            Some(Answer::Failed(e)) => Err(io::Error::other(e)),
            _ => Err(io::Error::other("unexpected answer")),
        }
    }

    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        match self.observe(&[Probe::Read(path.into())]).pop() {
            Some(Answer::Read(d)) => Ok(d),
            Some(Answer::Failed(e)) => Err(io::Error::other(e)),
            _ => Err(io::Error::other("unexpected answer")),
        }
    }

    fn write(&self, path: &str, data: &[u8], attrs: &Attrs) -> io::Result<()> {
        // Logged in as the user who owns the result: the data goes over SFTP. Becoming another
        // user, SFTP would write as the wrong one, so the data goes through sudo on stdin.
        // Either way a temporary file beside the target is renamed over it: atomic.
        if self.become_user.is_some() {
            let name = Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().replace('\'', ""))
                .unwrap_or_default();
            let cmd = format!(
                "set -e; p=$(readlink -f -- {q}) || p={q}; {check}; \
                 t=$(mktemp -- \"$(dirname -- \"$p\")/\".{name}.XXXXXX.slice-tmp); trap 'rm -f -- \"$t\"' EXIT; \
                 cat > \"$t\"; {finish}",
                q = quote(path),
                check = REGULAR_ONLY,
                finish = finish_write(attrs)
            );
            return self
                .script(
                    &format!("cannot write {path}"),
                    &format!("sh -c {}", quote(&cmd)),
                    data,
                )
                .map(|_| ());
        }
        let (target, tmp) = self
            .upload(path, data)
            .map_err(|e| io::Error::other(format!("cannot write {path}: {e}")))?;
        let cmd = format!(
            "set -e; p={q}; t={tq}; trap 'rm -f -- \"$t\"' EXIT; {check}; {finish}",
            q = quote(&target),
            tq = quote(&tmp),
            check = REGULAR_ONLY,
            finish = finish_write(attrs)
        );
        self.script(
            &format!("cannot write {path}"),
            &format!("sh -c {}", quote(&cmd)),
            b"",
        )
        .map(|_| ())
    }

    fn mkdir(&self, path: &str, attrs: &Attrs) -> io::Result<()> {
        let attrs = Attrs {
            mode: Some(attrs.mode.unwrap_or(0o755)),
            ..*attrs
        };
        let cmd = format!(
            "mkdir -- {q} && {}",
            attr_commands(&attrs, &quote(path)),
            q = quote(path)
        );
        self.script(
            &format!("cannot create {path}"),
            &format!("sh -c {}", quote(&cmd)),
            b"",
        )
        .map(|_| ())
    }

    fn set_attrs(&self, path: &str, attrs: &Attrs) -> io::Result<()> {
        let cmd = attr_commands(attrs, &quote(path));
        self.script(
            &format!("cannot change {path}"),
            &format!("sh -c {}", quote(&cmd)),
            b"",
        )
        .map(|_| ())
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        let cmd = format!("p={q}; if [ -d \"$p\" ] && [ ! -L \"$p\" ]; then rmdir -- \"$p\"; else rm -f -- \"$p\"; fi", q = quote(path));
        self.script(
            &format!("cannot remove {path}"),
            &format!("sh -c {}", quote(&cmd)),
            b"",
        )
        .map(|_| ())
    }

    fn run(&self, command: &str) -> io::Result<Output> {
        self.exec(
            &format!("cd / && sh -c {} < /dev/null", quote(command)),
            b"",
        )
    }

    fn lock(&self, holder: &str, wait: Duration) -> io::Result<Box<dyn Any + Send>> {
        // flock(1) holds the lock for as long as this channel stays open: `cat` waits for the
        // end of its input, which comes when SLICE drops the guard or the connection dies.
        let cmd = format!(
            "exec 9>>/run/slice.lock; if flock -w {} 9; then printf '%s\\n' {} > /run/slice.lock; echo SLICE_LOCKED; cat > /dev/null; \
             else echo SLICE_BUSY; cat /run/slice.lock; fi",
            wait.as_secs().max(1),
            quote(holder)
        );
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + wait + Duration::from_secs(30);
        self.session.set_blocking(false);
        let result = self.start(&cmd, deadline).and_then(|(mut ch, _)| {
            let io = Pump {
                input: b"",
                close_input: false,
                stop_at: Some(b"SLICE_LOCKED\n"),
            };
            let (stdout, stderr) = self.pump(&mut ch, io, deadline)?;
            Ok((ch, stdout, stderr))
        });
        self.session.set_blocking(true);
        let (ch, stdout, stderr) = result?;
        let text = String::from_utf8_lossy(&stdout);
        match text.split_once('\n') {
            Some(("SLICE_LOCKED", _)) => Ok(Box::new(LockChannel(ch))),
            Some(("SLICE_BUSY", who)) => Err(busy(who)),
            _ => Err(io::Error::other(format!(
                "cannot take the run lock on {}: {}",
                self.name,
                String::from_utf8_lossy(&stderr).trim()
            ))),
        }
    }

    fn observe(&self, probes: &[Probe]) -> Vec<Answer> {
        if probes.is_empty() {
            return Vec::new();
        }
        match self.exec("sh -s", script::build(probes).as_bytes()) {
            Ok(out) if out.status == 0 || !out.stdout.is_empty() => {
                script::parse(probes, &out.stdout)
            }
            Ok(out) => {
                vec![Answer::Failed(format!("observing failed: {}", out.message())); probes.len()]
            }
            Err(e) => vec![Answer::Failed(e.to_string()); probes.len()],
        }
    }
}

/// The open channel that holds a host's run lock; closing it releases the lock.
struct LockChannel(ssh2::Channel);

impl Drop for LockChannel {
    fn drop(&mut self) {
        let _ = self.0.send_eof();
        let _ = self.0.close();
    }
}

/// Asks `ssh -G` how to reach the host, so ~/.ssh/config (Host blocks, Match, Include) applies
/// exactly as for `ssh`. Inventory values are passed as options and win, as in Ansible.
pub fn resolve(target: &Target, opts: &Options) -> Resolved {
    let mut cmd = Command::new("ssh");
    cmd.arg("-G");
    if let Some(f) = &opts.ssh_config {
        cmd.arg("-F").arg(f);
    }
    if let Some(p) = target.port {
        cmd.arg("-p").arg(p.to_string());
    }
    if let Some(u) = &target.user {
        cmd.arg("-l").arg(u);
    }
    if let Some(a) = &target.address {
        cmd.arg("-o").arg(format!("HostName={a}"));
    }
    cmd.arg(&target.name);
    let text = cmd
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let mut r = parse_ssh_g(text.as_deref().unwrap_or_default());
    // Without an ssh binary (or when it refuses), fall back to the inventory and defaults.
    if text.is_none() {
        r.hostname = target
            .address
            .clone()
            .unwrap_or_else(|| target.name.clone());
        r.port = target.port.unwrap_or(22);
        if let Some(u) = &target.user {
            r.user = u.clone();
        }
    }
    r
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn expand(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None => PathBuf::from(p),
    }
}

/// Reads `ssh -G` output (`key value` lines, keys in lower case).
pub fn parse_ssh_g(text: &str) -> Resolved {
    let mut r = Resolved {
        hostname: String::new(),
        port: 22,
        user: std::env::var("USER").unwrap_or_else(|_| "root".into()),
        identity_files: Vec::new(),
        connect_timeout: None,
        user_known_hosts: vec![home().join(".ssh/known_hosts")],
        global_known_hosts: vec![PathBuf::from("/etc/ssh/ssh_known_hosts")],
        keepalive: None,
    };
    let mut ids = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(' ') else {
            continue;
        };
        let v = v.trim();
        match k {
            "hostname" => r.hostname = v.to_string(),
            "port" => r.port = v.parse().unwrap_or(22),
            "user" => r.user = v.to_string(),
            "identityfile" => ids.push(expand(v)),
            "connecttimeout" => r.connect_timeout = v.parse().ok().map(Duration::from_secs),
            "userknownhostsfile" => r.user_known_hosts = v.split_whitespace().map(expand).collect(),
            "globalknownhostsfile" => {
                r.global_known_hosts = v.split_whitespace().map(expand).collect()
            }
            "serveraliveinterval" => r.keepalive = v.parse().ok().filter(|n| *n > 0),
            _ => {}
        }
    }
    if ids.is_empty() {
        ids = ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .map(|n| home().join(".ssh").join(n))
            .collect();
    }
    r.identity_files = ids;
    r
}

fn key_type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// `SHA256:…`, the fingerprint `ssh` and `ssh-keygen -l` print.
fn fingerprint(session: &Session) -> String {
    let hash = session.host_key_hash(HashType::Sha256).unwrap_or_default();
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)
    )
}

/// The host's key must be in a known_hosts file (hashed entries too). Unknown: refused unless
/// the user accepts new keys, and then recorded. Changed: always refused.
fn check_host_key(
    session: &Session,
    name: &str,
    r: &Resolved,
    opts: &Options,
) -> Result<(), String> {
    let (key, ktype) = session
        .host_key()
        .ok_or_else(|| format!("{name} sent no host key"))?;
    let mut kh = session.known_hosts().map_err(|e| e.to_string())?;
    for file in r.user_known_hosts.iter().chain(&r.global_known_hosts) {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        {
            // Lines libssh2 cannot read (@cert-authority, unknown key types) are skipped.
            let _ = kh.read_str(line, KnownHostFileKind::OpenSSH);
        }
    }
    let fp = fingerprint(session);
    let kname = key_type_name(ktype);
    let at = if r.port == 22 {
        r.hostname.clone()
    } else {
        format!("[{}]:{}", r.hostname, r.port)
    };
    match kh.check_port(&r.hostname, r.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(format!(
            "the host key of {name} ({at}) has CHANGED: it is now {kname} {fp}. Someone may be intercepting the \
             connection, or the host was reinstalled; check, remove the old key from known_hosts, and run again"
        )),
        CheckResult::NotFound if opts.accept_new_host_keys => {
            let file = r.user_known_hosts.first().cloned().unwrap_or_else(|| home().join(".ssh/known_hosts"));
            let line = format!("{at} {kname} {}\n", base64::engine::general_purpose::STANDARD.encode(key));
            append_known_host(&file, &line).map_err(|e| format!("cannot record the host key of {name} in {}: {e}", file.display()))
        }
        CheckResult::NotFound => Err(format!(
            "unknown host key for {name} ({at}): {kname} {fp}. Check it, then run again with --accept-new-host-keys to record it"
        )),
        CheckResult::Failure => Err(format!("cannot check the host key of {name}")),
    }
}

fn append_known_host(file: &Path, line: &str) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = file.parent() {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    // Several hosts may record keys at once: one append each, under a process-wide lock.
    static APPEND: Mutex<()> = Mutex::new(());
    let _one = APPEND.lock().unwrap_or_else(|p| p.into_inner());
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)?;
    f.write_all(line.as_bytes())
}

/// Passphrases typed once per key file, shared by every host of the run.
fn passphrases() -> &'static Mutex<HashMap<PathBuf, String>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn authenticate(
    session: &Session,
    name: &str,
    r: &Resolved,
    key_file: Option<&str>,
    opts: &Options,
) -> Result<(), String> {
    let user = &r.user;
    let mut tried = Vec::new();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        if session.userauth_agent(user).is_ok() && session.authenticated() {
            return Ok(());
        }
        tried.push("the SSH agent".to_string());
    }
    let mut keys: Vec<PathBuf> = key_file.map(expand).into_iter().collect();
    keys.extend(r.identity_files.iter().cloned());
    keys.dedup();
    for key in keys.iter().filter(|k| k.is_file()) {
        tried.push(key.display().to_string());
        if session.userauth_pubkey_file(user, None, key, None).is_ok() && session.authenticated() {
            return Ok(());
        }
        if !is_encrypted(key) {
            continue;
        }
        let cached = passphrases().lock().ok().and_then(|c| c.get(key).cloned());
        let pass = match cached.or_else(|| opts.key_passphrase.clone()) {
            Some(p) => Some(p),
            None => prompt(&format!("Passphrase for {}: ", key.display())),
        };
        if let Some(p) = pass {
            if session
                .userauth_pubkey_file(user, None, key, Some(&p))
                .is_ok()
                && session.authenticated()
            {
                if let Ok(mut c) = passphrases().lock() {
                    c.insert(key.clone(), p);
                }
                return Ok(());
            }
        }
    }
    Err(format!(
        "{name} refused to log in {user}@{}:{} (tried {})",
        r.hostname,
        r.port,
        if tried.is_empty() {
            "no key: none found".to_string()
        } else {
            tried.join(", ")
        }
    ))
}

/// Whether a private key file needs a passphrase (PEM `ENCRYPTED`, or an OpenSSH key whose
/// cipher is not `none`).
fn is_encrypted(key: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(key) else {
        return false;
    };
    if text.contains("ENCRYPTED") {
        return true;
    }
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    match base64::engine::general_purpose::STANDARD.decode(body.trim()) {
        Ok(bytes) => {
            // "openssh-key-v1\0", then a length-prefixed cipher name.
            let rest = bytes.get(15..).unwrap_or_default();
            let len = rest
                .get(..4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
            rest.get(4..4 + len).is_some_and(|c| c != b"none")
        }
        Err(_) => false,
    }
}

/// Asks on the terminal, one prompt at a time across threads; `None` without a terminal.
fn prompt(question: &str) -> Option<String> {
    use std::io::IsTerminal;
    static ONE: Mutex<()> = Mutex::new(());
    if !std::io::stdin().is_terminal() {
        return None;
    }
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    rpassword::prompt_password(question).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_g_output_is_read() {
        let r = parse_ssh_g(
            "host web1\nhostname 10.200.1.2\nport 2222\nuser lab\nidentityfile /k/one\nidentityfile /k/two\n\
             connecttimeout 7\nuserknownhostsfile /kh/a /kh/b\nglobalknownhostsfile /etc/ssh/ssh_known_hosts\nserveraliveinterval 0\n",
        );
        assert_eq!(r.hostname, "10.200.1.2");
        assert_eq!(r.port, 2222);
        assert_eq!(r.user, "lab");
        assert_eq!(
            r.identity_files,
            vec![PathBuf::from("/k/one"), PathBuf::from("/k/two")]
        );
        assert_eq!(r.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(
            r.user_known_hosts,
            vec![PathBuf::from("/kh/a"), PathBuf::from("/kh/b")]
        );
        assert_eq!(r.keepalive, None);
    }

    #[test]
    fn attributes_become_chown_then_chmod() {
        let a = Attrs {
            mode: Some(0o4755),
            uid: Some(0),
            gid: Some(5),
        };
        assert_eq!(
            attr_commands(&a, "\"$t\""),
            "chown 0:5 -- \"$t\" && chmod 4755 -- \"$t\" && true"
        );
        assert_eq!(attr_commands(&Attrs::default(), "x"), "true");
    }

    #[test]
    fn encrypted_keys_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        let locked = dir.path().join("locked");
        let ok = |args: &[&str]| {
            Command::new("ssh-keygen")
                .args(args)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if !ok(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            plain.to_str().unwrap(),
        ]) {
            panic!("ssh-keygen is needed for this test (openssh-client)");
        }
        assert!(ok(&[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "secret words",
            "-f",
            locked.to_str().unwrap()
        ]));
        assert!(!is_encrypted(&plain));
        assert!(is_encrypted(&locked));
    }
}
