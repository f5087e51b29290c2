//! `apparmor`: an AppArmor profile — its file in /etc/apparmor.d, checked with
//! `apparmor_parser -Q` before it is installed, the markers that fix its mode at boot
//! (`force-complain/`, `disable/`), and its mode in the running kernel (enforce or complain).
//!
//! A running kernel without AppArmor enforces nothing, whatever the files say. SLICE never
//! reports such a profile as loaded: by default (`require_loaded: true`) check mode shows it as a
//! difference ("loaded: no: the running kernel has no AppArmor → enforce") and apply, which can
//! install the file but not change the kernel, installs it and then fails saying so. Under
//! `--root` there is no running kernel and only the files are managed.

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::{at, content_change};
use crate::resources::{Accounts, Meta};
use crate::transport::script::quote;
use crate::transport::{Attrs, FileType, Output, Probe, Stat, Transport};

/// Where profiles live and where the parser looks for the boot-time markers.
const APPARMOR_D: &str = "/etc/apparmor.d";
/// `Y` when the running kernel has AppArmor enabled (the same file the facts read).
const ENABLED: &str = "/sys/module/apparmor/parameters/enabled";
/// The profiles the kernel has loaded, one `name (mode)` a line.
const PROFILES: &str = "/sys/kernel/security/apparmor/profiles";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Enforce,
    Complain,
}

impl Mode {
    /// As the kernel lists it in `PROFILES`.
    fn word(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Complain => "complain",
        }
    }
}

pub struct Apparmor {
    /// The profile's name as the kernel lists it: `docker-default`, `/usr/sbin/ntpd`.
    profile: String,
    /// `/etc/apparmor.d/<file>`; the file name is also the name of the markers.
    path: String,
    force_complain: String,
    disable: String,
    /// `None`: the file must already be there; only the mode is managed.
    content: Option<Vec<u8>>,
    mode: Mode,
    /// A running system: the kernel is asked and loaded into.
    live: bool,
    require_loaded: bool,
}

/// Probe positions (see `probes`).
const AT_STAT: usize = 0;
const AT_READ: usize = 1;
const AT_DIR: usize = 2;
const AT_COMPLAIN_DIR: usize = 3;
const AT_COMPLAIN: usize = 4;
const AT_DISABLE: usize = 5;
const AT_ENABLED: usize = 6;
const AT_PROFILES: usize = 7;

/// What the running kernel says about the profile.
#[derive(Debug, PartialEq)]
enum Kernel {
    /// An offline root: there is no running kernel to ask.
    Offline,
    /// The running kernel has no AppArmor (not built in, or booted with it off).
    Absent,
    /// Loaded in this mode (`enforce`, `complain`, `kill`, …), or not loaded.
    Loaded(Option<String>),
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan<'o> {
    stat: Option<&'o Stat>,
    old: &'o [u8],
    /// The file's contents differ from the wanted ones (or it does not exist).
    write: bool,
    dir_exists: bool,
    complain_dir_exists: bool,
    complain_marker: bool,
    disable_marker: bool,
    kernel: Kernel,
}

impl Apparmor {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let profile = p.str("profile")?;
        let mode = match p.choice("mode", &["enforce", "complain"], "enforce")? {
            "complain" => Mode::Complain,
            _ => Mode::Enforce,
        };
        let mut sources = Vec::new();
        if let Some(n) = p.node("content") {
            let text = n.scalar_text().ok_or_else(|| {
                p.error(
                    n,
                    format!("`content` must be a string, found {}", n.type_name()),
                )
            })?;
            sources.push((n, text.into_bytes()));
        }
        if let Some(n) = p.node("template") {
            let rel = n.scalar_text().unwrap_or_default();
            sources.push((n, ctx.files.template(&rel, &n.loc)?.into_bytes()));
        }
        if let Some(n) = p.node("source") {
            let rel = n.scalar_text().unwrap_or_default();
            sources.push((n, ctx.files.source(&rel, &n.loc)?));
        }
        if sources.len() > 1 {
            return Err(Error::at(
                &sources[1].0.loc,
                "give only one of `content`, `template` and `source`",
            ));
        }
        let require_loaded = p.opt_bool("require_loaded")?.unwrap_or(true);
        p.finish()?;

        let file = file_name(&profile).ok_or_else(|| {
            at(
                p,
                "profile",
                format!(
                    "`{profile}` is not a profile name such as docker-default or /usr/sbin/ntpd"
                ),
            )
        })?;
        let content = sources.pop().map(|(_, c)| c);
        if let Some(c) = &content {
            let text = String::from_utf8_lossy(c);
            let key = ["content", "template", "source"]
                .into_iter()
                .find(|k| p.node(k).is_some())
                .unwrap_or("content");
            let flags = declaration(&text, &profile).ok_or_else(|| {
                at(
                    p,
                    key,
                    format!(
                        "the profile text declares no profile `{profile}` (a line such as `profile {profile} {{`), \
                         so loading it would not load `{profile}`"
                    ),
                )
            })?;
            // The parser obeys the profile's own flags: `-r` would load it in complain mode
            // and it would never converge to enforce.
            if mode == Mode::Enforce && flags.iter().any(|f| f == "complain") {
                return Err(at(
                    p,
                    key,
                    format!("the profile text sets flags=(complain) on `{profile}`, which contradicts `mode: enforce`"),
                )
                .with_help("remove `complain` from the profile's flags, or set `mode: complain`"));
            }
        }
        Ok(Box::new(Apparmor {
            path: format!("{APPARMOR_D}/{file}"),
            force_complain: format!("{APPARMOR_D}/force-complain/{file}"),
            disable: format!("{APPARMOR_D}/disable/{file}"),
            profile,
            content,
            mode,
            live: ctx.live,
            require_loaded,
        }))
    }

    fn plan<'o>(&self, obs: &'o Observed) -> Result<Plan<'o>, String> {
        let stat = obs.stat(AT_STAT)?;
        if let Some(s) = stat.filter(|s| s.kind != FileType::File) {
            return Err(format!(
                "{} is {}, not a regular file; leaving it alone",
                self.path,
                s.kind.describe()
            ));
        }
        let (old, write) = match (&self.content, stat) {
            (None, None) => {
                return Err(format!(
                    "{} does not exist; give `content`, `source` or `template` to install it",
                    self.path
                ))
            }
            (None, Some(_)) => (&[][..], false),
            (Some(_), None) => (&[][..], true),
            (Some(c), Some(_)) => {
                let old = obs.read(AT_READ)?.unwrap_or_default();
                (old, old != c.as_slice())
            }
        };
        let kernel = if !self.live {
            Kernel::Offline
        } else if obs
            .read(AT_ENABLED)?
            .is_some_and(|v| v.trim_ascii_start().starts_with(b"Y"))
        {
            let profiles = obs.read(AT_PROFILES)?.ok_or_else(|| {
                format!(
                    "the running kernel has AppArmor, but {PROFILES} does not exist (is securityfs mounted?): \
                     cannot tell whether `{}` is loaded",
                    self.profile
                )
            })?;
            Kernel::Loaded(loaded_mode(
                &String::from_utf8_lossy(profiles),
                &self.profile,
            ))
        } else {
            Kernel::Absent
        };
        Ok(Plan {
            stat,
            old,
            write,
            dir_exists: obs.stat(AT_DIR)?.is_some_and(|s| s.kind == FileType::Dir),
            complain_dir_exists: obs
                .stat(AT_COMPLAIN_DIR)?
                .is_some_and(|s| s.kind == FileType::Dir),
            complain_marker: obs.stat(AT_COMPLAIN)?.is_some(),
            disable_marker: obs.stat(AT_DISABLE)?.is_some(),
            kernel,
        })
    }

    /// Whether the running kernel must (re)load the profile: it is not loaded in the wanted
    /// mode, or its file is about to change.
    fn needs_load(&self, plan: &Plan) -> bool {
        match &plan.kernel {
            Kernel::Loaded(m) => plan.write || m.as_deref() != Some(self.mode.word()),
            Kernel::Offline | Kernel::Absent => false,
        }
    }

    /// Runs `apparmor_parser -Q` (parse and compile, load nothing) on the new contents, written
    /// first to a dot file beside the profile: the parser skips dot files when it loads the
    /// directory at boot, and includes resolve as they will for the real file.
    fn check_parses(&self, t: &dyn Transport, content: &[u8]) -> Result<(), String> {
        let name = self.path.rsplit('/').next().unwrap_or_default();
        let tmp = format!("{APPARMOR_D}/.{name}.slice-check");
        let kept = format!("{} is left as it was", self.path);
        let private = Attrs {
            mode: Some(0o600),
            ..Attrs::default()
        };
        t.write(&tmp, content, &private)
            .map_err(|e| format!("cannot check the new profile: {tmp}: {e}; {kept}"))?;
        let cmd = format!("apparmor_parser -Q -K -- {}", quote(&tmp));
        let out = t.run(&cmd);
        let removed = t.remove(&tmp);
        let out = out.map_err(|e| format!("cannot run `{cmd}`: {e}; {kept}"))?;
        if out.status == 127 {
            return Err(format!(
                "apparmor_parser is not installed on the target (package apparmor), so the new \
                 profile cannot be checked; {kept}"
            ));
        }
        if !out.success() {
            return Err(format!(
                "the new profile does not parse; {kept}: {}",
                parser_message(&out, &tmp, &self.path)
            ));
        }
        removed.map_err(|e| format!("cannot remove {tmp}: {e}"))
    }

    /// Loads the installed file into the running kernel in the wanted mode.
    fn load(&self, t: &dyn Transport) -> Result<(), String> {
        let flag = match self.mode {
            Mode::Enforce => "",
            Mode::Complain => " -C",
        };
        let cmd = format!("apparmor_parser -r{flag} -- {}", quote(&self.path));
        let out = t
            .run(&cmd)
            .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
        match out.status {
            0 => Ok(()),
            127 => Err(format!(
                "apparmor_parser is not installed on the target (package apparmor), so `{}` cannot be loaded",
                self.profile
            )),
            s => Err(format!(
                "`{cmd}` exited with status {s}: {}",
                parser_message(&out, &self.path, &self.path)
            )),
        }
    }
}

/// The file under /etc/apparmor.d for a profile: its name, or for a profile named by the path it
/// confines, that path without the first slash and with dots for slashes (`/usr/sbin/ntpd` is
/// `usr.sbin.ntpd`), as distributions name them. `None` for names that make no safe file name.
fn file_name(profile: &str) -> Option<String> {
    let ok_chars = profile
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-+/".contains(c));
    let file = match profile.strip_prefix('/') {
        Some(rest) => rest.replace('/', "."),
        None if profile.contains('/') => return None,
        None => profile.to_string(),
    };
    let bad = !ok_chars
        || file.is_empty()
        || file.starts_with(['.', '-'])
        || profile.contains("//")
        || profile.split('/').any(|p| p == "." || p == "..")
        || profile.ends_with('/');
    (!bad).then_some(file)
}

/// The flags of the line declaring `name` (`profile name flags=(a,b) {`, or `name {` for a
/// path-named profile); `None` when no line declares it.
fn declaration(text: &str, name: &str) -> Option<Vec<String>> {
    let quoted = format!("\"{name}\"");
    text.lines().find_map(|line| {
        let l = line.trim_start();
        let l = l
            .strip_prefix("profile")
            .filter(|r| r.starts_with([' ', '\t']))
            .map_or(l, str::trim_start);
        let rest = l
            .strip_prefix(quoted.as_str())
            .or_else(|| l.strip_prefix(name))?;
        if !(rest.is_empty() || rest.starts_with([' ', '\t', '{'])) {
            return None;
        }
        Some(flags(rest))
    })
}

/// The words in `flags=(…)` of a declaration's remainder.
fn flags(rest: &str) -> Vec<String> {
    let Some(i) = rest.find("flags") else {
        return Vec::new();
    };
    let after = rest[i + "flags".len()..].trim_start();
    let Some(after) = after.strip_prefix('=') else {
        return Vec::new();
    };
    let Some(inner) = after.trim_start().strip_prefix('(') else {
        return Vec::new();
    };
    let inner = inner.split(')').next().unwrap_or_default();
    inner
        .split([',', ' ', '\t'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The mode `name` is loaded in, from the kernel's profile list (`name (mode)` lines).
fn loaded_mode(profiles: &str, name: &str) -> Option<String> {
    profiles.lines().find_map(|l| {
        let (n, m) = l.trim_end().rsplit_once(" (")?;
        (n == name).then(|| m.strip_suffix(')').unwrap_or(m).to_string())
    })
}

/// The parser's complaint, without its notes about the cache (printed on every run on a kernel
/// without AppArmor), naming the real file instead of the temporary one.
fn parser_message(out: &Output, tmp: &str, path: &str) -> String {
    let text = out.message().replace(tmp, path);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("Cache read/write disabled"))
        .collect();
    if lines.is_empty() {
        text
    } else {
        lines.join("\n")
    }
}

impl Resource for Apparmor {
    fn target(&self) -> String {
        self.profile.clone()
    }

    fn paths(&self) -> Vec<&str> {
        vec![&self.path]
    }

    fn probes(&self) -> Vec<Probe> {
        let stat = |p: &str| Probe::Stat(p.to_string());
        let mut v = vec![
            stat(&self.path),
            match self.content {
                Some(_) => Probe::Read(self.path.clone()),
                // Contents do not matter; do not read them.
                None => stat(&self.path),
            },
            stat(APPARMOR_D),
            stat(&format!("{APPARMOR_D}/force-complain")),
            stat(&self.force_complain),
            stat(&self.disable),
        ];
        if self.live {
            v.push(Probe::Read(ENABLED.into()));
            v.push(Probe::Read(PROFILES.into()));
        }
        v
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        let plan = self.plan(obs)?;
        let mut out = Vec::new();
        if plan.stat.is_none() {
            out.extend(Meta::presence(
                None,
                "file",
                &Attrs::default(),
                &Accounts::default(),
            ));
        }
        if let (true, Some(c)) = (plan.write, &self.content) {
            out.push(content_change(&self.path, plan.old, c));
        }
        if plan.disable_marker {
            out.push(Change::new(
                "disabled",
                Some(format!("yes ({})", self.disable)),
                Some("no".into()),
            ));
        }
        match (self.mode, plan.complain_marker) {
            (Mode::Complain, false) => out.push(Change::new(
                "force-complain",
                Some("absent".into()),
                Some(self.force_complain.clone()),
            )),
            (Mode::Enforce, true) => out.push(Change::new(
                "force-complain",
                Some(self.force_complain.clone()),
                Some("absent".into()),
            )),
            _ => {}
        }
        let want = self.mode.word().to_string();
        match &plan.kernel {
            Kernel::Absent if self.require_loaded => out.push(Change::new(
                "loaded",
                Some("no: the running kernel has no AppArmor".into()),
                Some(want),
            )),
            Kernel::Loaded(None) => out.push(Change::new("loaded", Some("no".into()), Some(want))),
            Kernel::Loaded(Some(m)) if *m != want => {
                out.push(Change::new("mode", Some(m.clone()), Some(want)))
            }
            _ => {}
        }
        Ok(out)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let plan = self.plan(obs)?;
        if let (true, Some(c)) = (plan.write, &self.content) {
            if !plan.dir_exists {
                return Err(format!(
                    "{APPARMOR_D} does not exist (is the apparmor package installed?), so the new \
                     profile cannot be checked; {} is not installed unchecked",
                    self.path
                ));
            }
            self.check_parses(t, c)?;
            let attrs = Attrs {
                mode: plan.stat.is_none().then_some(0o644),
                ..Attrs::default()
            };
            t.write(&self.path, c, &attrs)
                .map_err(|e| format!("{}: {e}", self.path))?;
        }
        if plan.disable_marker {
            t.remove(&self.disable)
                .map_err(|e| format!("{}: {e}", self.disable))?;
        }
        match (self.mode, plan.complain_marker) {
            (Mode::Complain, false) => {
                let dir = format!("{APPARMOR_D}/force-complain");
                if !plan.complain_dir_exists {
                    t.mkdir(&dir, &Attrs::default())
                        .map_err(|e| format!("{dir}: {e}"))?;
                }
                // The parser only asks whether the marker exists; an empty file does.
                t.write(&self.force_complain, b"", &Attrs::default())
                    .map_err(|e| format!("{}: {e}", self.force_complain))?;
            }
            (Mode::Enforce, true) => t
                .remove(&self.force_complain)
                .map_err(|e| format!("{}: {e}", self.force_complain))?,
            _ => {}
        }
        if self.needs_load(&plan) {
            self.load(t)?;
        }
        if plan.kernel == Kernel::Absent && self.require_loaded {
            return Err(format!(
                "the running kernel has no AppArmor: the profile file {} is in place but nothing enforces it \
                 (skip such hosts with `when: facts.apparmor.enabled`, or set `require_loaded: false` to manage only the file)",
                self.path
            ));
        }
        Ok(())
    }
}

/// A stand-in for a host in unit tests: files in a temporary root (through [`Local`]), and
/// commands answered by the test, each one recorded. Shared with the `selinux` tests.
///
/// [`Local`]: crate::transport::Local
#[cfg(test)]
pub(crate) mod fake {
    use std::any::Any;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::time::Duration;

    use crate::transport::{Attrs, Local, Output, Stat, Transport};

    type Answerer = dyn Fn(&str, &Path) -> Output + Send + Sync;

    pub struct FakeHost {
        root: PathBuf,
        files: Local,
        answer: Box<Answerer>,
        pub commands: Mutex<Vec<String>>,
    }

    impl FakeHost {
        /// `answer` gets each command and the root (to change files as the command would).
        pub fn new(
            root: &Path,
            answer: impl Fn(&str, &Path) -> Output + Send + Sync + 'static,
        ) -> FakeHost {
            FakeHost {
                root: root.to_path_buf(),
                files: Local::with_root(root).unwrap(),
                answer: Box::new(answer),
                commands: Mutex::new(Vec::new()),
            }
        }

        pub fn commands(&self) -> Vec<String> {
            self.commands.lock().unwrap().clone()
        }
    }

    pub fn output(status: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            status,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    impl Transport for FakeHost {
        fn name(&self) -> String {
            "fake".into()
        }
        fn live(&self) -> bool {
            true
        }
        fn stat(&self, path: &str) -> io::Result<Option<Stat>> {
            self.files.stat(path)
        }
        fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
            self.files.read(path)
        }
        fn write(&self, path: &str, data: &[u8], attrs: &Attrs) -> io::Result<()> {
            self.files.write(path, data, attrs)
        }
        fn mkdir(&self, path: &str, attrs: &Attrs) -> io::Result<()> {
            self.files.mkdir(path, attrs)
        }
        fn set_attrs(&self, path: &str, attrs: &Attrs) -> io::Result<()> {
            self.files.set_attrs(path, attrs)
        }
        fn remove(&self, path: &str) -> io::Result<()> {
            self.files.remove(path)
        }
        fn run(&self, command: &str) -> io::Result<Output> {
            self.commands.lock().unwrap().push(command.to_string());
            Ok((self.answer)(command, &self.root))
        }
        fn lock(&self, _: &str, _: Duration) -> io::Result<Box<dyn Any + Send>> {
            Ok(Box::new(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::resources::testing;
    use std::fs;
    use std::path::Path;

    use super::fake::{output, FakeHost};
    use super::*;
    use crate::facts::Facts;
    use crate::resources::testing::{build_err, build_with, debian_facts, whats};
    use crate::transport::Local;

    /// A profile as Docker's docker-default is written, shortened.
    const PROFILE: &str = "#include <tunables/global>\n\n\
        profile docker-default flags=(attach_disconnected,mediate_deleted) {\n  \
        #include <abstractions/base>\n  network,\n  capability,\n  file,\n  umount,\n  deny mount,\n}\n";

    /// Recorded from `apparmor_parser -Q -K` (3.0.8, Debian 12) in a lab host, whose kernel
    /// has no AppArmor: the cache note comes on every run, success or not.
    const CACHE_NOTE: &str = "Cache read/write disabled: interface file missing. (Kernel needs AppArmor 2.4 compatibility patch.)\n";
    const PARSE_ERROR: &str = "AppArmor parser error for /etc/apparmor.d/.docker-default.slice-check in profile \
        /etc/apparmor.d/.docker-default.slice-check at line 5: syntax error, unexpected TOK_ID, expecting TOK_MODE\n";

    /// A kernel profile list as a Debian host with Docker shows it.
    const LOADED: &str =
        "docker-default (enforce)\n/usr/sbin/ntpd (complain)\nnvidia_modprobe (enforce)\n\
        nvidia_modprobe//kmod (enforce)\nlsb_release (enforce)\n";

    fn facts(live: bool) -> Facts {
        Facts {
            live,
            ..debian_facts()
        }
    }

    /// A root with /etc/apparmor.d (and its marker folders) and, when `kernel` is given, a
    /// /sys saying AppArmor is enabled with that list of loaded profiles.
    fn root(kernel: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for d in ["etc/apparmor.d/force-complain", "etc/apparmor.d/disable"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        if let Some(list) = kernel {
            set_kernel(dir.path(), list);
        }
        dir
    }

    fn set_kernel(root: &Path, list: &str) {
        let sys = root.join("sys/module/apparmor/parameters");
        fs::create_dir_all(&sys).unwrap();
        fs::write(sys.join("enabled"), "Y\n").unwrap();
        let sec = root.join("sys/kernel/security/apparmor");
        fs::create_dir_all(&sec).unwrap();
        fs::write(sec.join("profiles"), list).unwrap();
    }

    /// Answers as apparmor_parser would: `-Q` fails on a rule it does not know, `-r` loads
    /// (appending to the kernel's list, in the mode -C or force-complain asks for).
    fn parser(cmd: &str, root: &Path) -> Output {
        let path = cmd.rsplit(' ').next().unwrap().trim_matches('\'');
        let text = fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap_or_default();
        if cmd.starts_with("apparmor_parser -Q -K -- ") {
            if text.contains("this is not a rule") {
                return output(1, "", &format!("{CACHE_NOTE}{PARSE_ERROR}"));
            }
            return output(0, "", CACHE_NOTE);
        }
        if cmd.starts_with("apparmor_parser -r") {
            let profiles = root.join("sys/kernel/security/apparmor/profiles");
            let list = fs::read_to_string(&profiles).unwrap();
            let name = path.rsplit('/').next().unwrap();
            let forced = root
                .join("etc/apparmor.d/force-complain")
                .join(name)
                .exists();
            let mode = if cmd.contains(" -C ") || forced {
                "complain"
            } else {
                "enforce"
            };
            let kept: String = list
                .lines()
                .filter(|l| !l.starts_with("docker-default "))
                .map(|l| format!("{l}\n"))
                .collect();
            fs::write(profiles, format!("{kept}docker-default ({mode})\n")).unwrap();
            return output(0, "", "");
        }
        output(127, "", &format!("sh: 1: {cmd}: not found\n"))
    }

    fn yaml(extra: &str) -> String {
        let content = PROFILE.replace('\n', "\\n");
        format!("profile: docker-default\ncontent: \"{content}\"\n{extra}")
    }

    #[test]
    fn a_new_profile_is_parsed_installed_and_loaded() {
        let dir = root(Some(
            LOADED.replace("docker-default (enforce)\n", "").as_str(),
        ));
        let host = FakeHost::new(dir.path(), parser);
        let res = build_with("apparmor", &yaml(""), &facts(true)).unwrap();
        let changes = testing::diff(res.as_ref(), &host).unwrap();
        assert_eq!(whats(&changes), ["state", "mode", "content", "loaded"]);
        assert_eq!(
            changes[3],
            Change::new("loaded", Some("no".into()), Some("enforce".into()))
        );
        testing::apply(res.as_ref(), &host).unwrap();
        assert_eq!(
            host.commands(),
            [
                "apparmor_parser -Q -K -- '/etc/apparmor.d/.docker-default.slice-check'",
                "apparmor_parser -r -- '/etc/apparmor.d/docker-default'",
            ]
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("etc/apparmor.d/docker-default")).unwrap(),
            PROFILE
        );
        assert!(
            !dir.path()
                .join("etc/apparmor.d/.docker-default.slice-check")
                .exists(),
            "the file checked is removed"
        );
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), []);
        // In sync: a second apply neither parses nor loads.
        testing::apply(res.as_ref(), &host).unwrap();
        assert_eq!(host.commands().len(), 2);
    }

    #[test]
    fn a_profile_that_does_not_parse_keeps_the_old_file() {
        let dir = root(Some(LOADED));
        let old = "# the old one\n";
        fs::write(dir.path().join("etc/apparmor.d/docker-default"), old).unwrap();
        let host = FakeHost::new(dir.path(), parser);
        let bad = "profile docker-default {\\n  file,\\n  this is not a rule,\\n}\\n";
        let res = build_with(
            "apparmor",
            &format!("profile: docker-default\ncontent: \"{bad}\"\n"),
            &facts(true),
        )
        .unwrap();
        assert_eq!(
            whats(&testing::diff(res.as_ref(), &host).unwrap()),
            ["content"],
            "check mode cannot know it does not parse: it reports the change"
        );
        let err = testing::apply(res.as_ref(), &host).unwrap_err();
        assert_eq!(
            err,
            "the new profile does not parse; /etc/apparmor.d/docker-default is left as it was: \
             AppArmor parser error for /etc/apparmor.d/docker-default in profile /etc/apparmor.d/docker-default \
             at line 5: syntax error, unexpected TOK_ID, expecting TOK_MODE"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("etc/apparmor.d/docker-default")).unwrap(),
            old
        );
        assert_eq!(host.commands().len(), 1, "nothing is loaded");
        let left: Vec<_> = fs::read_dir(dir.path().join("etc/apparmor.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!left.iter().any(|n| n.contains("slice")), "{left:?}");
    }

    #[test]
    fn a_missing_parser_refuses_to_install() {
        let dir = root(None);
        let host = FakeHost::new(dir.path(), |cmd, _| {
            output(
                127,
                "",
                &format!("sh: 1: {}: not found\n", cmd.split(' ').next().unwrap()),
            )
        });
        let res = build_with("apparmor", &yaml(""), &facts(true)).unwrap();
        let err = testing::apply(res.as_ref(), &host).unwrap_err();
        assert_eq!(
            err,
            "apparmor_parser is not installed on the target (package apparmor), so the new profile \
             cannot be checked; /etc/apparmor.d/docker-default is left as it was"
        );
        assert!(!dir.path().join("etc/apparmor.d/docker-default").exists());

        // Without /etc/apparmor.d the parser is surely missing too: not even tried.
        let bare = tempfile::tempdir().unwrap();
        fs::create_dir(bare.path().join("etc")).unwrap();
        let host = FakeHost::new(bare.path(), parser);
        let err = testing::apply(res.as_ref(), &host).unwrap_err();
        assert_eq!(
            err,
            "/etc/apparmor.d does not exist (is the apparmor package installed?), so the new profile \
             cannot be checked; /etc/apparmor.d/docker-default is not installed unchecked"
        );
        assert!(host.commands().is_empty());
    }

    #[test]
    fn without_apparmor_in_the_kernel_it_is_never_reported_loaded() {
        // A live host whose kernel has no AppArmor: no /sys/module/apparmor at all.
        let dir = root(None);
        let host = FakeHost::new(dir.path(), parser);
        let res = build_with("apparmor", &yaml(""), &facts(true)).unwrap();
        let changes = testing::diff(res.as_ref(), &host).unwrap();
        assert_eq!(whats(&changes), ["state", "mode", "content", "loaded"]);
        assert_eq!(
            changes[3],
            Change::new(
                "loaded",
                Some("no: the running kernel has no AppArmor".into()),
                Some("enforce".into())
            )
        );
        let err = testing::apply(res.as_ref(), &host).unwrap_err();
        assert_eq!(
            err,
            "the running kernel has no AppArmor: the profile file /etc/apparmor.d/docker-default is in place \
             but nothing enforces it (skip such hosts with `when: facts.apparmor.enabled`, or set \
             `require_loaded: false` to manage only the file)"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("etc/apparmor.d/docker-default")).unwrap(),
            PROFILE,
            "the file is installed (after parsing) all the same"
        );
        assert_eq!(
            host.commands(),
            ["apparmor_parser -Q -K -- '/etc/apparmor.d/.docker-default.slice-check'"],
            "nothing is loaded into a kernel that cannot take it"
        );
        // The file is in place; the kernel still is not: still a difference, still a failure.
        assert_eq!(
            whats(&testing::diff(res.as_ref(), &host).unwrap()),
            ["loaded"]
        );
        assert!(testing::apply(res.as_ref(), &host).is_err());

        // A kernel booted with apparmor=0 says N: the same.
        let sys = dir.path().join("sys/module/apparmor/parameters");
        fs::create_dir_all(&sys).unwrap();
        fs::write(sys.join("enabled"), "N\n").unwrap();
        assert_eq!(
            whats(&testing::diff(res.as_ref(), &host).unwrap()),
            ["loaded"]
        );

        // Opting out: only the file is managed, and it is in place.
        let res = build_with("apparmor", &yaml("require_loaded: false\n"), &facts(true)).unwrap();
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), []);
        testing::apply(res.as_ref(), &host).unwrap();
    }

    #[test]
    fn an_offline_root_manages_only_files() {
        let dir = root(Some("docker-default (complain)\n"));
        let host = FakeHost::new(dir.path(), parser);
        let res = build_with("apparmor", &yaml(""), &facts(false)).unwrap();
        assert!(!res
            .probes()
            .iter()
            .any(|p| matches!(p, Probe::Read(p) if p.starts_with("/sys"))));
        assert_eq!(
            whats(&testing::diff(res.as_ref(), &host).unwrap()),
            ["state", "mode", "content"]
        );
        testing::apply(res.as_ref(), &host).unwrap();
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), []);
        assert_eq!(host.commands().len(), 1, "parsed, never loaded");
    }

    #[test]
    fn the_loaded_mode_is_observed_and_changed() {
        let dir = root(Some(LOADED));
        fs::write(dir.path().join("etc/apparmor.d/docker-default"), PROFILE).unwrap();
        let host = FakeHost::new(dir.path(), parser);
        let res = build_with("apparmor", &yaml(""), &facts(true)).unwrap();
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), [], "in sync");

        let res = build_with("apparmor", &yaml("mode: complain\n"), &facts(true)).unwrap();
        let changes = testing::diff(res.as_ref(), &host).unwrap();
        assert_eq!(
            changes,
            [
                Change::new(
                    "force-complain",
                    Some("absent".into()),
                    Some("/etc/apparmor.d/force-complain/docker-default".into())
                ),
                Change::new("mode", Some("enforce".into()), Some("complain".into())),
            ]
        );
        testing::apply(res.as_ref(), &host).unwrap();
        assert_eq!(
            host.commands(),
            ["apparmor_parser -r -C -- '/etc/apparmor.d/docker-default'"],
            "the file did not change: not parsed again, only loaded"
        );
        assert!(dir
            .path()
            .join("etc/apparmor.d/force-complain/docker-default")
            .is_file());
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), []);

        // Back to enforce: the marker goes before loading, or the parser would force complain.
        let res = build_with("apparmor", &yaml(""), &facts(true)).unwrap();
        assert_eq!(
            whats(&testing::diff(res.as_ref(), &host).unwrap()),
            ["force-complain", "mode"]
        );
        testing::apply(res.as_ref(), &host).unwrap();
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), []);
        assert!(!dir
            .path()
            .join("etc/apparmor.d/force-complain/docker-default")
            .exists());
    }

    #[test]
    fn a_disabled_profile_is_enabled() {
        let dir = root(Some(""));
        fs::write(dir.path().join("etc/apparmor.d/docker-default"), PROFILE).unwrap();
        fs::write(dir.path().join("etc/apparmor.d/disable/docker-default"), "").unwrap();
        let host = FakeHost::new(dir.path(), parser);
        let res = build_with("apparmor", "profile: docker-default\n", &facts(true)).unwrap();
        assert_eq!(
            testing::diff(res.as_ref(), &host).unwrap(),
            [
                Change::new(
                    "disabled",
                    Some("yes (/etc/apparmor.d/disable/docker-default)".into()),
                    Some("no".into())
                ),
                Change::new("loaded", Some("no".into()), Some("enforce".into())),
            ]
        );
        testing::apply(res.as_ref(), &host).unwrap();
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), []);
        assert!(!dir
            .path()
            .join("etc/apparmor.d/disable/docker-default")
            .exists());
    }

    #[test]
    fn without_content_the_file_must_exist() {
        let dir = root(Some(""));
        let t = Local::with_root(dir.path()).unwrap();
        let res = build_with("apparmor", "profile: /usr/sbin/ntpd\n", &facts(true)).unwrap();
        assert_eq!(res.paths(), ["/etc/apparmor.d/usr.sbin.ntpd"]);
        assert_eq!(
            testing::diff(res.as_ref(), &t).unwrap_err(),
            "/etc/apparmor.d/usr.sbin.ntpd does not exist; give `content`, `source` or `template` to install it"
        );
    }

    #[test]
    fn a_kernel_with_apparmor_but_no_securityfs_cannot_be_judged() {
        let dir = root(Some(""));
        fs::remove_file(dir.path().join("sys/kernel/security/apparmor/profiles")).unwrap();
        let t = Local::with_root(dir.path()).unwrap();
        let res = build_with("apparmor", &yaml(""), &facts(true)).unwrap();
        assert_eq!(
            testing::diff(res.as_ref(), &t).unwrap_err(),
            "the running kernel has AppArmor, but /sys/kernel/security/apparmor/profiles does not exist \
             (is securityfs mounted?): cannot tell whether `docker-default` is loaded"
        );
    }

    #[test]
    fn a_path_in_place_of_the_file_is_left_alone() {
        let dir = root(None);
        fs::create_dir(dir.path().join("etc/apparmor.d/docker-default")).unwrap();
        let t = Local::with_root(dir.path()).unwrap();
        let res = build_with("apparmor", &yaml(""), &facts(false)).unwrap();
        assert_eq!(
            testing::diff(res.as_ref(), &t).unwrap_err(),
            "/etc/apparmor.d/docker-default is a directory, not a regular file; leaving it alone"
        );
    }

    #[test]
    fn the_kernel_list_is_read_by_exact_name() {
        assert_eq!(
            loaded_mode(LOADED, "docker-default").as_deref(),
            Some("enforce")
        );
        assert_eq!(
            loaded_mode(LOADED, "/usr/sbin/ntpd").as_deref(),
            Some("complain")
        );
        assert_eq!(
            loaded_mode(LOADED, "nvidia_modprobe").as_deref(),
            Some("enforce")
        );
        assert_eq!(loaded_mode(LOADED, "docker"), None);
        assert_eq!(loaded_mode("a b (kill)\n", "a b").as_deref(), Some("kill"));
        assert_eq!(loaded_mode("garbage\n\n(\n", "x"), None);
    }

    #[test]
    fn declarations_and_their_flags_are_found() {
        assert_eq!(
            declaration(PROFILE, "docker-default"),
            Some(vec!["attach_disconnected".into(), "mediate_deleted".into()])
        );
        assert_eq!(declaration(PROFILE, "docker"), None);
        assert_eq!(
            declaration("/usr/sbin/ntpd flags=(complain) {\n}\n", "/usr/sbin/ntpd"),
            Some(vec!["complain".into()])
        );
        assert_eq!(
            declaration("  profile \"my app\"{\n", "my app"),
            Some(vec![])
        );
        assert_eq!(
            declaration(
                "profile ntpd /usr/sbin/ntpd flags = ( complain, attach_disconnected ) {",
                "ntpd"
            ),
            Some(vec!["complain".into(), "attach_disconnected".into()])
        );
        assert_eq!(declaration("# profile x {\n", "x"), None);
        assert_eq!(declaration("profilex {\n", "x"), None);
    }

    #[test]
    fn file_names_follow_the_distributions() {
        assert_eq!(
            file_name("docker-default").as_deref(),
            Some("docker-default")
        );
        assert_eq!(
            file_name("/usr/sbin/ntpd").as_deref(),
            Some("usr.sbin.ntpd")
        );
        for bad in [
            "",
            "/",
            "a/b",
            "../x",
            ".x",
            "/usr//x",
            "/usr/../x",
            "a b",
            "-r",
            "x;rm",
            "/usr/",
        ] {
            assert_eq!(file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn build_errors_point_at_the_parameter() {
        assert_eq!(
            build_err("apparmor", "profile: ../../etc/shadow\n"),
            "1:10: `../../etc/shadow` is not a profile name such as docker-default or /usr/sbin/ntpd"
        );
        assert_eq!(
            build_err("apparmor", "profile: x\nmode: audit\n"),
            "2:7: `mode` must be one of enforce, complain, found `audit`"
        );
        assert_eq!(
            build_err("apparmor", "profile: x\ncontent: 'profile y {}'\n"),
            "2:11: the profile text declares no profile `x` (a line such as `profile x {`), so loading it would not load `x`"
        );
        assert_eq!(
            build_err("apparmor", "profile: x\ncontent: 'profile x flags=(complain) {}'\n"),
            "2:11: the profile text sets flags=(complain) on `x`, which contradicts `mode: enforce`"
        );
        assert!(build_with(
            "apparmor",
            "profile: x\nmode: complain\ncontent: 'profile x flags=(complain) {}'\n",
            &facts(true)
        )
        .is_ok());
        assert_eq!(
            build_err("apparmor", "profile: x\nrequire_enforced: false\n"),
            "2:1: unknown key `require_enforced` for `apparmor`"
        );
        assert_eq!(
            build_err("apparmor", "mode: enforce\n"),
            "1:1: `apparmor` needs `profile`"
        );
    }

    #[test]
    fn the_target_is_the_profile() {
        let res = build_with("apparmor", "profile: /usr/bin/man\n", &facts(true)).unwrap();
        assert_eq!(res.target(), "/usr/bin/man");
    }
}
