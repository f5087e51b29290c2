//! `sshd`: OpenSSH server settings in sshd_config (or a drop-in), validated by the target's own
//! sshd before the file is replaced, and checked so a change cannot lock SLICE's login out.
//!
//! sshd takes the FIRST value it reads for a keyword, and lines after a `Match` apply only to
//! matching connections. So each setting replaces the first active line for its keyword before
//! the first `Match` (or a commented default such as Debian's `#PermitRootLogin ...`, to keep the
//! file readable), else it is inserted before the first `Match` (or at the end). Later duplicates
//! are left alone: sshd ignores them.
//!
//! An `Include` above the edited line (Debian 12 has one at the top) is read first, so a drop-in
//! can win over sshd_config. The effective configuration is therefore read with `sshd -T` and
//! compared with the wanted values as sshd itself prints them (`sshd -T -f /dev/null -o K=V`):
//! a difference the file cannot fix is reported naming the drop-in that sets the keyword.
//!
//! Applying writes the new text to a temporary file beside the real one, has sshd check it
//! (`sshd -T -f TMP`: syntax and values), evaluates the login user against the would-be
//! settings (`-C user=…,host=…,addr=…`, with `id -Gn` for groups), then replaces the file and
//! reloads a running sshd (existing sessions survive a reload). An offline root is validated
//! with its own sshd when it has one, else written unvalidated with a note.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::{content_change, Lines};
use crate::resources::{Accounts, Meta};
use crate::transport::script::quote;
use crate::transport::{Attrs, FileType, Login, Output, Probe, Stat, Transport};
use crate::yaml::Value;

const MAIN: &str = "/etc/ssh/sshd_config";
const SSHD: &str = "/usr/sbin/sshd";
/// Where distributions keep drop-ins (Debian 12, Ubuntu, Fedora include `*.conf` from here).
const DROPINS: &str = "/etc/ssh/sshd_config.d";

/// Old keyword names and the name `sshd -T` prints for them.
const ALIASES: &[(&str, &str)] = &[
    (
        "challengeresponseauthentication",
        "kbdinteractiveauthentication",
    ),
    ("skeyauthentication", "kbdinteractiveauthentication"),
    ("pubkeyacceptedkeytypes", "pubkeyacceptedalgorithms"),
    ("hostbasedacceptedkeytypes", "hostbasedacceptedalgorithms"),
];

/// Values sshd parses case-insensitively (flags, modes, log levels, facilities).
const WORDS: &[&str] = &[
    "yes",
    "no",
    "prohibit-password",
    "without-password",
    "forced-commands-only",
    "any",
    "none",
    "all",
    "local",
    "remote",
    "inet",
    "inet6",
    "delayed",
    "sandbox",
    "point-to-point",
    "ethernet",
    "quiet",
    "fatal",
    "error",
    "info",
    "verbose",
    "debug",
    "debug1",
    "debug2",
    "debug3",
    "daemon",
    "user",
    "auth",
    "authpriv",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

pub struct Sshd {
    settings: Vec<Setting>,
    path: String,
    force: bool,
    /// A running system: `sshd -T` is read and sshd reloaded after a change.
    live: bool,
    /// What apply did worth telling (a forced lock-out, the reload), for `note`.
    notes: Mutex<Vec<String>>,
}

struct Setting {
    /// As the task wrote it, and as it is written to the file: `PermitRootLogin`.
    keyword: String,
    /// Lower case, as sshd compares keywords.
    key: String,
    value: String,
}

impl Setting {
    fn line(&self) -> String {
        format!("{} {}", self.keyword, self.value)
    }

    /// The name `sshd -T` prints for this keyword.
    fn printed(&self) -> &str {
        ALIASES
            .iter()
            .find(|(old, _)| *old == self.key)
            .map_or(self.key.as_str(), |(_, new)| new)
    }
}

/// A keyword whose effective value is not the wanted one.
struct Drift {
    keyword: String,
    now: String,
    want: String,
    /// Drop-in lines that set the keyword (`file:line`), which sshd reads first.
    elsewhere: Vec<String>,
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan<'o> {
    stat: Option<&'o Stat>,
    old: &'o [u8],
    new: Vec<u8>,
    /// /usr/sbin/sshd exists on the target.
    sshd: bool,
    drifts: Vec<Drift>,
    /// `sshd -T` fails on the configuration as it is: its message.
    broken: Option<String>,
}

impl Sshd {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let path = p.opt_path("path")?.unwrap_or_else(|| MAIN.to_string());
        let force = p.opt_bool("force")?.unwrap_or(false);
        let node = p
            .node("settings")
            .ok_or_else(|| Error::at(p.loc(), "`sshd` needs `settings`"))?;
        p.finish()?;
        let Some(map) = node.as_map() else {
            return Err(p.error(
                node,
                format!(
                    "`settings` must be a mapping of sshd keywords to values, found {}",
                    node.type_name()
                ),
            ));
        };
        if map.is_empty() {
            return Err(p.error(node, "`settings` is empty: name at least one keyword"));
        }
        let mut settings: Vec<Setting> = Vec::new();
        for (k, v) in map {
            let keyword = k.scalar_text().unwrap_or_default();
            let key = keyword.to_ascii_lowercase();
            let word = !keyword.is_empty()
                && keyword.starts_with(|c: char| c.is_ascii_alphabetic())
                && keyword.chars().all(|c| c.is_ascii_alphanumeric());
            if !word {
                return Err(p.error(
                    k,
                    format!("`{keyword}` is not an sshd keyword such as PermitRootLogin"),
                ));
            }
            if matches!(key.as_str(), "match" | "include") {
                return Err(p.error(k, format!("`{keyword}` cannot be managed by `sshd`: it changes how the rest of the file is read"))
                    .with_help("manage a whole drop-in with `file`, or a single line with `line`"));
            }
            if settings.iter().any(|s| s.key == key) {
                return Err(p.error(
                    k,
                    format!("`{keyword}` is given twice (sshd keywords ignore case)"),
                ));
            }
            let value = match &v.value {
                // YAML's true/false are sshd's yes/no.
                Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
                Value::Seq(_) | Value::Map(_) | Value::Null => {
                    return Err(p.error(
                        v,
                        format!(
                            "`{keyword}` must be a single value, found {}",
                            v.type_name()
                        ),
                    ))
                }
                _ => v.scalar_text().unwrap_or_default(),
            };
            let value = collapse(&value);
            // sshd ends a line at a token starting with `#`; a control character would split it.
            let bad = value.is_empty()
                || value.contains(|c: char| c.is_control())
                || value.split(' ').any(|w| w.starts_with('#'));
            if bad {
                return Err(p.error(
                    v,
                    format!("the value of `{keyword}` must be one line of text, not empty, with no word starting with `#`"),
                ));
            }
            settings.push(Setting {
                keyword,
                key,
                value,
            });
        }
        Ok(Box::new(Sshd {
            settings,
            path,
            force,
            live: ctx.live,
            notes: Mutex::new(Vec::new()),
        }))
    }

    fn main(&self) -> bool {
        self.path == MAIN
    }

    fn tmp(&self) -> String {
        let p = Path::new(&self.path);
        let dir = p
            .parent()
            .map_or_else(|| "/".to_string(), |d| d.to_string_lossy().into_owned());
        let name = p
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        // A dot name with a foreign suffix: no `Include …/*.conf` glob picks it up.
        format!("{}/.{name}.slice-new", dir.trim_end_matches('/'))
    }

    /// `-o 'K V'` for every setting, as sshd reads command-line options before its files.
    fn options(&self) -> String {
        self.settings
            .iter()
            .map(|s| format!("-o {}", quote(&s.line())))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The wanted values as sshd prints them, whatever the file holds.
    fn canonical_probe(&self) -> String {
        format!("{SSHD} -T -f /dev/null {}", self.options())
    }

    /// Drop-in lines setting a managed keyword (sshd reads them where the Include stands).
    fn dropins_probe(&self) -> String {
        let mut keys: Vec<&str> = Vec::new();
        for s in &self.settings {
            keys.push(&s.key);
            keys.push(s.printed());
        }
        keys.sort_unstable();
        keys.dedup();
        let re = format!("^[[:space:]]*({})([[:space:]]|=)", keys.join("|"));
        format!(
            "grep -EiH -- {} {DROPINS}/*.conf 2>/dev/null; true",
            quote(&re)
        )
    }

    /// The file with every setting in place.
    fn wanted(&self, old: &[u8]) -> Vec<u8> {
        let mut lines = Lines::parse(old);
        for s in &self.settings {
            let n = lines.len();
            let mut first_match = n;
            let mut active = None;
            let mut commented = None;
            let mut commented_open = true;
            for i in 0..n {
                let text = String::from_utf8_lossy(lines.body(i)).into_owned();
                if let Some((k, v)) = directive(&text) {
                    if k == "match" {
                        first_match = i;
                        break;
                    }
                    if k == s.key && active.is_none() {
                        active = Some((i, v));
                    }
                } else if let Some(rest) = text.trim_start().strip_prefix('#') {
                    // `#PermitRootLogin yes` or `# PermitRootLogin yes`; an indented one belongs
                    // to a commented block.
                    let rest = rest.strip_prefix(' ').unwrap_or(rest);
                    if rest.starts_with([' ', '\t']) {
                        continue;
                    }
                    match directive(rest) {
                        // Debian's file ends with a commented `#Match` example: the lines
                        // after it are not defaults to replace.
                        Some((k, _)) if k == "match" => commented_open = false,
                        Some((k, _)) if k == s.key && commented.is_none() && commented_open => {
                            commented = Some(i);
                        }
                        _ => {}
                    }
                }
            }
            match (active, commented) {
                (Some((i, v)), _) => {
                    if !same_value(&v, &s.value) {
                        lines.replace(i, s.line().as_bytes());
                    }
                }
                (None, Some(i)) => lines.replace(i, s.line().as_bytes()),
                (None, None) => lines.insert(first_match, s.line().as_bytes()),
            }
        }
        lines.join()
    }

    fn plan<'o>(&self, obs: &'o Observed) -> Result<Plan<'o>, String> {
        let stat = obs.stat(0)?;
        if let Some(s) = stat.filter(|s| s.kind != FileType::File) {
            return Err(format!(
                "{} is {}, not a regular file; leaving it alone",
                self.path,
                s.kind.describe()
            ));
        }
        let sshd = obs.stat(2)?.is_some();
        if self.live && !sshd {
            return Err(format!(
                "sshd is not installed on the target (no {SSHD}): install openssh-server first"
            ));
        }
        let old = match stat {
            Some(_) => obs.read(1)?.unwrap_or_default(),
            None => &[],
        };
        let new = self.wanted(old);
        let mut drifts = Vec::new();
        let mut broken = None;
        if self.live {
            let effective = obs.run(3)?;
            let canonical = obs.run(4)?;
            let dropins = String::from_utf8_lossy(&obs.run(5)?.stdout).into_owned();
            if !effective.success() {
                broken = Some(message(effective));
            } else if canonical.success() {
                // An invalid wanted value makes `canonical` fail: apply's validation says why.
                drifts = self.drifts(&parse_t(effective), &parse_t(canonical), &dropins);
            }
        }
        Ok(Plan {
            stat,
            old,
            new,
            sshd,
            drifts,
            broken,
        })
    }

    fn drifts(
        &self,
        effective: &[(String, String)],
        canonical: &[(String, String)],
        dropins: &str,
    ) -> Vec<Drift> {
        let mut out = Vec::new();
        for s in &self.settings {
            let name = s.printed();
            let want = values(canonical, name);
            // Keywords `sshd -T` does not print cannot be compared.
            if want.is_empty() {
                continue;
            }
            let now = values(effective, name);
            if now != want {
                let elsewhere = dropins
                    .lines()
                    .filter(|l| {
                        let mut parts = l.splitn(2, ':');
                        let file = parts.next().unwrap_or_default();
                        let line = parts.next().unwrap_or_default();
                        file != self.path
                            && directive(line).is_some_and(|(k, _)| k == s.key || k == name)
                    })
                    .map(str::to_string)
                    .collect();
                out.push(Drift {
                    keyword: s.keyword.clone(),
                    now: now.join(" "),
                    want: want.join(" "),
                    elsewhere,
                });
            }
        }
        out
    }

    /// Why `sshd` would still not use the wanted values after this file is written.
    fn overridden(&self, drifts: &[Drift]) -> String {
        let parts: Vec<String> = drifts
            .iter()
            .map(|d| {
                let whence = if d.elsewhere.is_empty() {
                    "set earlier by an Include or another file sshd reads first".to_string()
                } else {
                    format!("set first in {}", d.elsewhere.join(", "))
                };
                format!(
                    "{} would be `{}`, not `{}` ({whence})",
                    d.keyword, d.now, d.want
                )
            })
            .collect();
        format!(
            "sshd reads another value first: {}; fix that file, or manage it with `path:`",
            parts.join("; ")
        )
    }

    /// Validates the new text in a temporary file, checks the login, then replaces the file.
    fn replace(&self, plan: &Plan, t: &dyn Transport) -> Result<(), String> {
        let attrs = Attrs {
            mode: plan.stat.is_none().then_some(0o644),
            ..Attrs::default()
        };
        let err = |e: std::io::Error| format!("{}: {e}", self.path);
        if !plan.sshd {
            // Only an offline root gets here (plan refuses a live target without sshd).
            if let Ok(mut n) = self.notes.lock() {
                n.push(format!(
                    "{} written unvalidated: the root has no {SSHD}",
                    self.path
                ));
            }
            return t.write(&self.path, &plan.new, &attrs).map_err(err);
        }
        let tmp = self.tmp();
        t.write(
            &tmp,
            &plan.new,
            &Attrs {
                mode: Some(0o600),
                ..Attrs::default()
            },
        )
        .map_err(|e| format!("{tmp}: {e}"))?;
        let checked = self.check(&tmp, t);
        // The temporary file goes whatever the outcome; failing to remove it is not the news.
        let _ = t.remove(&tmp);
        checked?;
        t.write(&self.path, &plan.new, &attrs).map_err(err)
    }

    /// sshd's verdict on the candidate at `tmp`, then the lock-out check.
    fn check(&self, tmp: &str, t: &dyn Transport) -> Result<(), String> {
        let cmd = format!("{SSHD} -T -f {}", quote(tmp));
        let out = sh(t, &cmd)?;
        if !out.success() {
            return Err(format!(
                "sshd refuses the new {}, which is left unchanged: {}",
                self.path,
                message(&out).replace(tmp, &self.path)
            ));
        }
        if self.main() {
            let would = parse_t(&out);
            let canonical = sh(t, &self.canonical_probe())?;
            if canonical.success() {
                let drifts = self.drifts(&would, &parse_t(&canonical), "");
                if !drifts.is_empty() {
                    let grep = sh(t, &self.dropins_probe())?;
                    let drifts = self.drifts(
                        &would,
                        &parse_t(&canonical),
                        &String::from_utf8_lossy(&grep.stdout),
                    );
                    return Err(self.overridden(&drifts));
                }
            }
        }
        let Some(login) = t.login().filter(|_| self.live) else {
            return Ok(());
        };
        let ctx = format!(
            "user={},host={},addr={}",
            login.user, login.from, login.from
        );
        // A drop-in is read with the main file: its settings on the command line come first,
        // as the Include at the top of sshd_config would read them.
        let cmd = if self.main() {
            format!("{SSHD} -T -f {} -C {}", quote(tmp), quote(&ctx))
        } else {
            format!("{SSHD} -T -C {} {}", quote(&ctx), self.options())
        };
        let out = sh(t, &cmd)?;
        if !out.success() {
            return Err(format!(
                "cannot evaluate the new settings for {}: {}",
                login.user,
                message(&out).replace(tmp, &self.path)
            ));
        }
        let groups = sh(t, &format!("id -Gn {}", quote(&login.user)))?;
        let groups: Vec<String> = String::from_utf8_lossy(&groups.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let reasons = lockout(&login, &groups, &parse_t(&out));
        if reasons.is_empty() {
            return Ok(());
        }
        let why = reasons.join("; ");
        if self.force {
            if let Ok(mut n) = self.notes.lock() {
                n.push(format!("FORCED: new SSH logins as {} will be refused ({why}); existing sessions keep working", login.user));
            }
            return Ok(());
        }
        Err(format!(
            "refusing to lock out {}, the user SLICE logs in as: {why}; {} is unchanged (set `force: true` to apply anyway)",
            login.user, self.path
        ))
    }

    /// Reloads a running sshd so new connections get the new settings.
    fn reload(&self, t: &dyn Transport) -> Result<(), String> {
        let out = sh(t, RELOAD)?;
        if !out.success() {
            return Err(format!(
                "{} is written but reloading sshd failed: {}",
                self.path,
                message(&out)
            ));
        }
        let how = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let note = if how == "not running" {
            "sshd is not running: not reloaded".to_string()
        } else {
            format!("sshd reloaded ({how})")
        };
        if let Ok(mut n) = self.notes.lock() {
            n.push(note);
        }
        Ok(())
    }
}

/// Runs a command; only failing to run it at all is an error here.
fn sh(t: &dyn Transport, cmd: &str) -> Result<Output, String> {
    t.run(cmd).map_err(|e| format!("cannot run `{cmd}`: {e}"))
}

fn message(out: &Output) -> String {
    let m = out.message();
    if m.is_empty() {
        format!("exit status {}", out.status)
    } else {
        m
    }
}

/// The keyword (lower case) and value of an active directive; `None` for comments and blanks.
fn directive(line: &str) -> Option<(String, String)> {
    let text = line.trim();
    if text.is_empty() || text.starts_with('#') {
        return None;
    }
    let end = text.find(|c: char| c.is_whitespace() || c == '=')?;
    let key = &text[..end];
    if !key.chars().all(|c| c.is_ascii_alphanumeric()) || key.is_empty() {
        return None;
    }
    let rest = text[end..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    Some((key.to_ascii_lowercase(), collapse(rest)))
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a value in the file already says what is wanted, as sshd would read both.
fn same_value(have: &str, want: &str) -> bool {
    let norm = |v: &str| {
        let v = collapse(v);
        let lower = v.to_ascii_lowercase();
        if WORDS.contains(&lower.as_str()) {
            // sshd's own synonym: `without-password` is the old name.
            if lower == "without-password" {
                "prohibit-password".to_string()
            } else {
                lower
            }
        } else {
            v
        }
    };
    norm(have) == norm(want)
}

/// `sshd -T` output as (keyword, value) pairs; list keywords appear once per value.
fn parse_t(out: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(' ')?;
            Some((k.to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}

fn values(t: &[(String, String)], key: &str) -> Vec<String> {
    t.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// sshd's `*` and `?` wildcards.
fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point: linear memory, no recursion on any input.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `addr` is in a network written `ADDR/BITS`.
fn in_cidr(net: &str, addr: &str) -> bool {
    let Some((base, bits)) = net.split_once('/') else {
        return false;
    };
    let (Ok(base), Ok(addr), Ok(bits)) = (
        base.parse::<IpAddr>(),
        addr.parse::<IpAddr>(),
        bits.parse::<u32>(),
    ) else {
        return false;
    };
    match (base, addr) {
        (IpAddr::V4(b), IpAddr::V4(a)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(b) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(b), IpAddr::V6(a)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(b) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// An AllowUsers/DenyUsers pattern: `user` or `user@host`, host by name, address or CIDR.
fn user_matches(pattern: &str, login: &Login) -> bool {
    match pattern.rsplit_once('@') {
        None => wildcard(pattern, &login.user),
        Some((user, host)) => {
            wildcard(user, &login.user)
                && host
                    .split(',')
                    .any(|h| wildcard(h, &login.from) || in_cidr(h, &login.from))
        }
    }
}

/// Why settings (`sshd -T -C` output for the login) would refuse the login user; empty: they
/// would not.
fn lockout(login: &Login, groups: &[String], t: &[(String, String)]) -> Vec<String> {
    let one = |k: &str| values(t, k).into_iter().next().unwrap_or_default();
    let user = &login.user;
    let mut why = Vec::new();
    let root_login = one("permitrootlogin");
    if user == "root" && matches!(root_login.as_str(), "no" | "forced-commands-only") {
        why.push(format!("PermitRootLogin {root_login} refuses root"));
    }
    if one("pubkeyauthentication") == "no" {
        why.push(format!(
            "PubkeyAuthentication no refuses the key SLICE logs in with as {user}"
        ));
    }
    let deny = values(t, "denyusers");
    if let Some(p) = deny.iter().find(|p| user_matches(p, login)) {
        why.push(format!("DenyUsers {p} matches {user}"));
    }
    let allow = values(t, "allowusers");
    if !allow.is_empty() && !allow.iter().any(|p| user_matches(p, login)) {
        why.push(format!(
            "AllowUsers {} does not include {user}",
            allow.join(" ")
        ));
    }
    let deny = values(t, "denygroups");
    if let Some(p) = deny.iter().find(|p| groups.iter().any(|g| wildcard(p, g))) {
        why.push(format!("DenyGroups {p} matches a group of {user}"));
    }
    let allow = values(t, "allowgroups");
    if !allow.is_empty() && !allow.iter().any(|p| groups.iter().any(|g| wildcard(p, g))) {
        why.push(format!(
            "AllowGroups {} includes none of {user}'s groups ({})",
            allow.join(" "),
            if groups.is_empty() {
                "none known".to_string()
            } else {
                groups.join(" ")
            }
        ));
    }
    let methods = one("authenticationmethods");
    if !methods.is_empty() && methods != "any" {
        // SLICE authenticates with a key alone: some list must be `publickey` by itself.
        let ok = methods
            .split_whitespace()
            .any(|list| list.split(',').all(|m| m == "publickey"));
        if !ok {
            why.push(format!(
                "AuthenticationMethods {methods} asks more than the key SLICE logs in with as {user}"
            ));
        }
    }
    why
}

/// Reloads whichever sshd runs, and says how.
const RELOAD: &str = "pid=$(cat /run/sshd.pid 2>/dev/null); \
    if [ -d /run/systemd/system ] && systemctl is-active --quiet ssh 2>/dev/null; then systemctl reload ssh && echo 'systemctl reload ssh'; \
    elif [ -d /run/systemd/system ] && systemctl is-active --quiet sshd 2>/dev/null; then systemctl reload sshd && echo 'systemctl reload sshd'; \
    elif [ -n \"$pid\" ] && kill -0 \"$pid\" 2>/dev/null; then kill -HUP \"$pid\" && echo 'SIGHUP to the pid in /run/sshd.pid'; \
    else echo 'not running'; fi";

impl Resource for Sshd {
    fn target(&self) -> String {
        self.path.clone()
    }

    fn paths(&self) -> Vec<&str> {
        vec![&self.path]
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v = vec![
            Probe::Stat(self.path.clone()),
            Probe::Read(self.path.clone()),
            Probe::Stat(SSHD.to_string()),
        ];
        if self.live {
            // Read-only: the configuration as sshd would read it for a new connection (Match
            // blocks aside), the wanted values in sshd's own spelling, drop-ins setting them.
            v.push(Probe::Run(format!("{SSHD} -T")));
            v.push(Probe::Run(self.canonical_probe()));
            v.push(Probe::Run(self.dropins_probe()));
        }
        v
    }

    /// The file as observed (or no file), and sshd reloaded with it.
    fn revert(&self, obs: &Observed) -> Option<String> {
        use base64::Engine as _;
        let path = crate::transport::script::quote(&self.path);
        let restore = match obs.read(1).ok()? {
            Some(old) => format!(
                "printf '%s' '{}' | base64 -d > {path}.slice-revert && mv -f {path}.slice-revert {path}",
                base64::engine::general_purpose::STANDARD.encode(old)
            ),
            None => format!("rm -f {path}"),
        };
        Some(format!("{restore}; {RELOAD}"))
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
        if plan.new != plan.old {
            out.push(content_change(&self.path, plan.old, &plan.new));
        }
        if let Some(msg) = &plan.broken {
            out.push(Change::new(
                "sshd -T",
                Some(format!("fails: {msg}")),
                Some("valid".into()),
            ));
        }
        for d in &plan.drifts {
            let what = if d.elsewhere.is_empty() {
                format!("effective {}", d.keyword)
            } else {
                format!(
                    "effective {} (set first in {})",
                    d.keyword,
                    d.elsewhere.join(", ")
                )
            };
            out.push(Change::new(what, Some(d.now.clone()), Some(d.want.clone())));
        }
        Ok(out)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let plan = self.plan(obs)?;
        if let Ok(mut n) = self.notes.lock() {
            n.clear();
        }
        if plan.stat.is_some() && plan.new == plan.old {
            if !plan.drifts.is_empty() {
                return Err(self.overridden(&plan.drifts));
            }
            if let Some(msg) = plan.broken {
                return Err(format!(
                    "{} already holds these settings, but sshd fails on the configuration: {msg}",
                    self.path
                ));
            }
            return Ok(());
        }
        self.replace(&plan, t)?;
        if self.live {
            self.reload(t)?;
        }
        Ok(())
    }

    fn note(&self, _obs: &Observed) -> Option<String> {
        let n = self.notes.lock().ok()?;
        (!n.is_empty()).then(|| n.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use std::any::Any;
    use std::collections::BTreeMap;
    use std::io;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::facts::Facts;
    use crate::resources::testing::{self, build_err, build_with, debian_facts, whats};
    use crate::transport::Output;

    /// Debian 12's stock sshd_config (openssh-server 1:9.2p1-2), as on the lab hosts, trimmed
    /// of a few comment lines: the Include at the top, commented defaults, a commented Match.
    const DEBIAN: &str = "\
# This is the sshd server system-wide configuration file.  See
# sshd_config(5) for more information.

Include /etc/ssh/sshd_config.d/*.conf

#Port 22
#AddressFamily any

# Authentication:

#LoginGraceTime 2m
#PermitRootLogin prohibit-password
#StrictModes yes
#MaxAuthTries 6
#MaxSessions 10

#PubkeyAuthentication yes

# To disable tunneled clear text passwords, change to no here!
#PasswordAuthentication yes
#PermitEmptyPasswords no

# Change to yes to enable challenge-response passwords (beware issues with
# some PAM modules and threads)
KbdInteractiveAuthentication no

UsePAM yes

#AllowAgentForwarding yes
X11Forwarding yes
PrintMotd no

# Allow client to pass locale environment variables
AcceptEnv LANG LC_*

# override default of no subsystems
Subsystem	sftp	/usr/lib/openssh/sftp-server

# Example of overriding settings on a per-user basis
#Match User anoncvs
#	X11Forwarding no
#	AllowTcpForwarding no
#	PermitTTY no
#	ForceCommand cvs server
";

    /// The first lines of `sshd -T` on a lab host (Debian 12, stock configuration).
    const SSHD_T: &str =
        "port 22\naddressfamily any\nlistenaddress [::]:22\nlistenaddress 0.0.0.0:22\n\
        usepam yes\nlogingracetime 120\nx11displayoffset 10\nmaxauthtries 6\nmaxsessions 10\n\
        clientaliveinterval 0\nclientalivecountmax 3\npermitrootlogin without-password\n\
        pubkeyauthentication yes\nkbdinteractiveauthentication no\npasswordauthentication yes\n\
        x11forwarding yes\nauthenticationmethods any\n";

    /// A fake Debian host whose `sshd -T`/`-t` reads its in-memory files the way sshd does:
    /// `-o` options first, then the file with its Include expanded in place, first value wins,
    /// nothing after the first Match (the fake ignores `-C`).
    struct Host {
        files: Mutex<BTreeMap<String, String>>,
        login: Option<Login>,
        groups: String,
        log: Mutex<Vec<String>>,
    }

    impl Host {
        fn new(main: &str, login: Option<(&str, &str)>) -> Host {
            let mut files = BTreeMap::new();
            files.insert(MAIN.to_string(), main.to_string());
            files.insert(SSHD.to_string(), String::new());
            Host {
                files: Mutex::new(files),
                login: login.map(|(u, _)| Login {
                    user: u.into(),
                    from: "10.200.7.1".into(),
                }),
                groups: login.map_or(String::new(), |(_, g)| g.to_string()),
                log: Mutex::new(Vec::new()),
            }
        }

        fn file(&self, p: &str) -> Option<String> {
            self.files.lock().unwrap().get(p).cloned()
        }

        fn put(&self, p: &str, text: &str) {
            self.files.lock().unwrap().insert(p.into(), text.into());
        }

        fn commands(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }

        /// What changed the host: writes, removals and reloads (probes only read).
        fn actions(&self) -> usize {
            self.commands()
                .iter()
                .filter(|c| {
                    c.starts_with("write ") || c.starts_with("remove ") || c.starts_with("pid=")
                })
                .count()
        }

        /// The directives sshd would read from `file`, as (origin, key, value).
        fn read_config(&self, file: &str, out: &mut Vec<(String, String, String)>) {
            let text = if file == "/dev/null" {
                String::new()
            } else {
                self.file(file).unwrap_or_default()
            };
            for (n, line) in text.lines().enumerate() {
                let Some((k, v)) = directive(line) else {
                    continue;
                };
                if k == "match" {
                    return;
                }
                if k == "include" {
                    let dir = v.trim_end_matches("/*.conf").to_string();
                    let inc: Vec<String> = self
                        .files
                        .lock()
                        .unwrap()
                        .keys()
                        .filter(|p| p.starts_with(&format!("{dir}/")) && p.ends_with(".conf"))
                        .cloned()
                        .collect();
                    for f in inc {
                        self.read_config(&f, out);
                    }
                    continue;
                }
                out.push((format!("{file} line {}", n + 1), k, v));
            }
        }

        fn sshd_t(&self, words: &[String]) -> Output {
            let mut file = MAIN.to_string();
            let mut dirs = Vec::new();
            let mut i = 2;
            while i < words.len() {
                match words[i].as_str() {
                    "-f" => file = words.get(i + 1).cloned().unwrap_or_default(),
                    "-o" => {
                        if let Some((k, v)) = directive(words.get(i + 1).map_or("", |s| s)) {
                            dirs.push(("command-line line 0".to_string(), k, v));
                        }
                    }
                    _ => {
                        i += 1;
                        continue;
                    }
                }
                i += 2;
            }
            self.read_config(&file, &mut dirs);
            let mut eff: Vec<(String, String)> = [
                ("permitrootlogin", "without-password"),
                ("maxauthtries", "6"),
                ("pubkeyauthentication", "yes"),
                ("passwordauthentication", "yes"),
                ("x11forwarding", "no"),
                ("kbdinteractiveauthentication", "no"),
                ("authenticationmethods", "any"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let mut seen: Vec<String> = Vec::new();
            for (origin, k, v) in dirs {
                let k = ALIASES
                    .iter()
                    .find(|(o, _)| *o == k)
                    .map_or(k.clone(), |(_, n)| n.to_string());
                if k == "maxauthtries" && v.parse::<u32>().is_err() {
                    return fail(&format!("{origin}: MaxAuthTries integer value invalid."));
                }
                if seen.contains(&k) {
                    continue;
                }
                seen.push(k.clone());
                let v = match v.to_ascii_lowercase().as_str() {
                    "prohibit-password" | "without-password" => "without-password".to_string(),
                    "yes" | "no" => v.to_ascii_lowercase(),
                    _ => v,
                };
                eff.retain(|(ek, _)| *ek != k);
                if matches!(
                    k.as_str(),
                    "allowusers" | "denyusers" | "allowgroups" | "denygroups"
                ) {
                    for w in v.split_whitespace() {
                        eff.push((k.clone(), w.to_string()));
                    }
                } else {
                    eff.push((k, v));
                }
            }
            let text: String = eff.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
            Output {
                status: 0,
                stdout: text.into_bytes(),
                stderr: Vec::new(),
            }
        }

        fn grep(&self, words: &[String]) -> Output {
            let re = words.get(3).cloned().unwrap_or_default();
            let keys: Vec<String> = re
                .split_once("*(")
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(k, _)| k.split('|').map(str::to_string).collect())
                .unwrap_or_default();
            let mut out = String::new();
            for (p, text) in self.files.lock().unwrap().iter() {
                if !(p.starts_with(&format!("{DROPINS}/")) && p.ends_with(".conf")) {
                    continue;
                }
                for l in text.lines() {
                    if directive(l).is_some_and(|(k, _)| keys.contains(&k)) {
                        out.push_str(&format!("{p}:{l}\n"));
                    }
                }
            }
            Output {
                status: 0,
                stdout: out.into_bytes(),
                stderr: Vec::new(),
            }
        }
    }

    fn fail(msg: &str) -> Output {
        Output {
            status: 255,
            stdout: Vec::new(),
            stderr: format!("{msg}\n").into_bytes(),
        }
    }

    impl Transport for Host {
        fn name(&self) -> String {
            "fake".into()
        }
        fn live(&self) -> bool {
            true
        }
        fn login(&self) -> Option<Login> {
            self.login.clone()
        }
        fn stat(&self, path: &str) -> io::Result<Option<Stat>> {
            Ok(self.file(path).map(|c| Stat {
                kind: FileType::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: c.len() as u64,
            }))
        }
        fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
            Ok(self.file(path).map(String::into_bytes))
        }
        fn write(&self, path: &str, data: &[u8], _: &Attrs) -> io::Result<()> {
            self.log.lock().unwrap().push(format!("write {path}"));
            self.put(path, &String::from_utf8_lossy(data));
            Ok(())
        }
        fn mkdir(&self, _: &str, _: &Attrs) -> io::Result<()> {
            Err(io::Error::other("not here"))
        }
        fn set_attrs(&self, _: &str, _: &Attrs) -> io::Result<()> {
            Err(io::Error::other("not here"))
        }
        fn remove(&self, path: &str) -> io::Result<()> {
            self.log.lock().unwrap().push(format!("remove {path}"));
            self.files.lock().unwrap().remove(path);
            Ok(())
        }
        fn run(&self, command: &str) -> io::Result<Output> {
            self.log.lock().unwrap().push(command.to_string());
            if command.starts_with("pid=$(cat /run/sshd.pid") {
                return Ok(Output {
                    status: 0,
                    stdout: b"SIGHUP to the pid in /run/sshd.pid\n".to_vec(),
                    stderr: Vec::new(),
                });
            }
            let words = shlex::split(command).unwrap_or_default();
            Ok(match words.first().map(String::as_str) {
                Some(SSHD) if words.get(1).map(String::as_str) == Some("-T") => self.sshd_t(&words),
                Some("grep") => self.grep(&words),
                Some("id") => Output {
                    status: 0,
                    stdout: format!("{}\n", self.groups).into_bytes(),
                    stderr: Vec::new(),
                },
                _ => fail("sh: 1: not found"),
            })
        }
        fn lock(&self, _: &str, _: Duration) -> io::Result<Box<dyn Any + Send>> {
            Ok(Box::new(()))
        }
    }

    fn sshd(yaml: &str) -> Box<dyn Resource> {
        build_with("sshd", yaml, &debian_facts()).unwrap()
    }

    /// Check, apply, check clean, apply again writing nothing: the first check's changes.
    fn converge(res: &dyn Resource, host: &Host) -> Vec<Change> {
        let changes = testing::diff(res, host).expect("diff");
        testing::apply(res, host).expect("apply");
        assert_eq!(testing::diff(res, host).expect("diff after"), [], "in sync");
        let n = host.actions();
        testing::apply(res, host).expect("second apply");
        assert_eq!(host.actions(), n, "a second apply does nothing");
        changes
    }

    fn note(res: &dyn Resource, host: &Host) -> Option<String> {
        let probes = res.probes();
        let answers = host.observe(&probes);
        res.note(&Observed {
            answers: &answers,
            probes: &probes,
        })
    }

    const HARDENING: &str =
        "settings:\n  PermitRootLogin: \"no\"\n  PasswordAuthentication: no\n  \
        X11Forwarding: false\n  MaxAuthTries: 4\n  AllowGroups: sshusers sudo\n";

    #[test]
    fn debian_stock_file_is_edited_in_place_and_sshd_reloaded() {
        let host = Host::new(DEBIAN, Some(("lab", "lab sudo")));
        let res = sshd(HARDENING);
        let changes = testing::diff(res.as_ref(), &host).unwrap();
        testing::apply(res.as_ref(), &host).unwrap();
        assert_eq!(
            note(res.as_ref(), &host).as_deref(),
            Some("sshd reloaded (SIGHUP to the pid in /run/sshd.pid)")
        );
        assert_eq!(converge(res.as_ref(), &host), []);
        assert_eq!(
            whats(&changes),
            [
                "content",
                "effective PermitRootLogin",
                "effective PasswordAuthentication",
                "effective X11Forwarding",
                "effective MaxAuthTries",
                "effective AllowGroups",
            ]
        );
        assert_eq!(
            changes[1],
            Change::new(
                "effective PermitRootLogin",
                Some("without-password".into()),
                Some("no".into())
            )
        );
        assert_eq!(
            changes[5],
            Change::new(
                "effective AllowGroups",
                Some(String::new()),
                Some("sshusers sudo".into())
            )
        );
        let after = host.file(MAIN).unwrap();
        let want = DEBIAN
            .replace("#PermitRootLogin prohibit-password", "PermitRootLogin no")
            .replace("#MaxAuthTries 6", "MaxAuthTries 4")
            .replace("#PasswordAuthentication yes", "PasswordAuthentication no")
            .replace("X11Forwarding yes", "X11Forwarding no")
            + "AllowGroups sshusers sudo\n";
        assert_eq!(after, want);
        // The commented Match example keeps its own `#\tX11Forwarding no`.
        assert!(after.contains("#Match User anoncvs\n#\tX11Forwarding no\n"));
        let cmds = host.commands();
        let tmp = "/etc/ssh/.sshd_config.slice-new";
        assert!(cmds.contains(&format!("write {tmp}")), "{cmds:?}");
        assert!(cmds.contains(&format!("remove {tmp}")), "{cmds:?}");
        assert!(
            cmds.contains(&format!(
                "{SSHD} -T -f '{tmp}' -C 'user=lab,host=10.200.7.1,addr=10.200.7.1'"
            )),
            "{cmds:?}"
        );
        assert!(cmds.contains(&"id -Gn 'lab'".to_string()), "{cmds:?}");
        assert!(host.file(tmp).is_none());
    }

    #[test]
    fn match_blocks_and_duplicates() {
        let text = "PermitRootLogin yes\nPort 22\npermitrootlogin=no\n\nMatch User bob\n  PasswordAuthentication yes\n  PermitRootLogin yes\n";
        let host = Host::new(text, None);
        let res = sshd(
            "settings:\n  permitrootlogin: Prohibit-Password\n  PasswordAuthentication: 'no'\n",
        );
        converge(res.as_ref(), &host);
        assert_eq!(
            host.file(MAIN).unwrap(),
            "permitrootlogin Prohibit-Password\nPort 22\npermitrootlogin=no\n\nPasswordAuthentication no\nMatch User bob\n  PasswordAuthentication yes\n  PermitRootLogin yes\n"
        );
        // `without-password` is the old name of the same value, in any case.
        let host = Host::new("PermitRootLogin Without-Password\n", None);
        let res = sshd("settings: { PermitRootLogin: prohibit-password }\n");
        assert_eq!(testing::diff(res.as_ref(), &host).unwrap(), []);
    }

    #[test]
    fn a_root_login_is_not_locked_out_unless_forced() {
        let host = Host::new(DEBIAN, Some(("root", "root")));
        let res = sshd("settings: { PermitRootLogin: \"no\" }\n");
        let err = testing::apply(res.as_ref(), &host).unwrap_err();
        assert_eq!(
            err,
            "refusing to lock out root, the user SLICE logs in as: PermitRootLogin no refuses root; \
             /etc/ssh/sshd_config is unchanged (set `force: true` to apply anyway)"
        );
        assert_eq!(host.file(MAIN).unwrap(), DEBIAN);
        assert!(host.file("/etc/ssh/.sshd_config.slice-new").is_none());

        let res = sshd("settings: { PermitRootLogin: \"no\" }\nforce: true\n");
        testing::apply(res.as_ref(), &host).unwrap();
        assert!(host.file(MAIN).unwrap().contains("\nPermitRootLogin no\n"));
        assert_eq!(
            note(res.as_ref(), &host).unwrap(),
            "FORCED: new SSH logins as root will be refused (PermitRootLogin no refuses root); \
             existing sessions keep working; sshd reloaded (SIGHUP to the pid in /run/sshd.pid)"
        );
    }

    #[test]
    fn allow_users_without_the_login_is_refused() {
        let host = Host::new(DEBIAN, Some(("lab", "lab sudo")));
        let res = sshd("settings: { AllowUsers: somebody }\n");
        let err = testing::apply(res.as_ref(), &host).unwrap_err();
        assert!(
            err.contains("AllowUsers somebody does not include lab"),
            "{err}"
        );
        assert_eq!(host.file(MAIN).unwrap(), DEBIAN);
    }

    #[test]
    fn an_invalid_value_is_refused_with_sshds_message() {
        let host = Host::new(DEBIAN, Some(("lab", "lab")));
        let res = sshd("settings: { MaxAuthTries: lots }\n");
        // The content drift shows; the invalid value cannot be compared with the effective one.
        assert_eq!(
            whats(&testing::diff(res.as_ref(), &host).unwrap()),
            ["content"]
        );
        let err = testing::apply(res.as_ref(), &host).unwrap_err();
        assert_eq!(
            err,
            "sshd refuses the new /etc/ssh/sshd_config, which is left unchanged: \
             /etc/ssh/sshd_config line 14: MaxAuthTries integer value invalid."
        );
        assert_eq!(host.file(MAIN).unwrap(), DEBIAN);
        assert!(host.file("/etc/ssh/.sshd_config.slice-new").is_none());
    }

    #[test]
    fn a_dropin_read_first_is_named_and_a_dropin_path_works() {
        let host = Host::new(DEBIAN, Some(("lab", "lab")));
        host.put(
            "/etc/ssh/sshd_config.d/10-cloud.conf",
            "PasswordAuthentication yes\n",
        );
        let res = sshd("settings: { PasswordAuthentication: \"no\" }\n");
        let err = testing::apply(res.as_ref(), &host).unwrap_err();
        assert_eq!(
            err,
            "sshd reads another value first: PasswordAuthentication would be `yes`, not `no` \
             (set first in /etc/ssh/sshd_config.d/10-cloud.conf:PasswordAuthentication yes); \
             fix that file, or manage it with `path:`"
        );
        assert_eq!(host.file(MAIN).unwrap(), DEBIAN);
        // The line is right but another file wins: drift, naming that file.
        host.put(MAIN, &format!("{DEBIAN}PasswordAuthentication no\n"));
        assert_eq!(
            testing::diff(res.as_ref(), &host).unwrap(),
            [Change::new(
                "effective PasswordAuthentication (set first in /etc/ssh/sshd_config.d/10-cloud.conf:PasswordAuthentication yes)",
                Some("yes".into()),
                Some("no".into())
            )]
        );
        assert!(testing::apply(res.as_ref(), &host)
            .unwrap_err()
            .starts_with("sshd reads another value first"));

        // A drop-in that sorts first wins; it is created whole.
        let res = sshd(
            "path: /etc/ssh/sshd_config.d/05-slice.conf\nsettings: { PasswordAuthentication: \"no\" }\n",
        );
        let changes = converge(res.as_ref(), &host);
        assert_eq!(
            whats(&changes),
            ["state", "mode", "content", "effective PasswordAuthentication (set first in /etc/ssh/sshd_config.d/10-cloud.conf:PasswordAuthentication yes)"]
        );
        assert_eq!(
            host.file("/etc/ssh/sshd_config.d/05-slice.conf").unwrap(),
            "PasswordAuthentication no\n"
        );
        assert!(host.commands().iter().any(
            |c| c.contains("-T -C 'user=lab") && c.ends_with("-o 'PasswordAuthentication no'")
        ));
    }

    #[test]
    fn recorded_sshd_t_output_is_read_per_keyword() {
        let out = Output {
            status: 0,
            stdout: SSHD_T.as_bytes().to_vec(),
            stderr: Vec::new(),
        };
        let t = parse_t(&out);
        assert_eq!(values(&t, "permitrootlogin"), ["without-password"]);
        assert_eq!(values(&t, "listenaddress"), ["[::]:22", "0.0.0.0:22"]);
        let login = Login {
            user: "root".into(),
            from: "10.200.7.1".into(),
        };
        assert!(lockout(&login, &[], &t).is_empty());
    }

    #[test]
    fn lockout_rules_follow_sshd() {
        let t = |s: &str| -> Vec<(String, String)> {
            s.lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let lab = Login {
            user: "lab".into(),
            from: "10.200.7.1".into(),
        };
        let groups = ["lab".to_string(), "sudo".to_string()];
        let none: Vec<String> = Vec::new();
        assert_eq!(lockout(&lab, &groups, &t("allowusers l?b")), none);
        assert_eq!(
            lockout(&lab, &groups, &t("allowusers lab@10.200.0.0/16")),
            none
        );
        assert_eq!(
            lockout(&lab, &groups, &t("allowusers lab@10.200.7.*")),
            none
        );
        assert_eq!(
            lockout(
                &lab,
                &groups,
                &t("allowusers lab@10.9.0.0/16\nallowusers ops")
            ),
            ["AllowUsers lab@10.9.0.0/16 ops does not include lab"]
        );
        assert_eq!(
            lockout(&lab, &groups, &t("denyusers *")),
            ["DenyUsers * matches lab"]
        );
        assert_eq!(lockout(&lab, &groups, &t("allowgroups s*")), none);
        assert_eq!(
            lockout(&lab, &groups, &t("allowgroups admins")),
            ["AllowGroups admins includes none of lab's groups (lab sudo)"]
        );
        assert_eq!(
            lockout(&lab, &groups, &t("denygroups sudo")),
            ["DenyGroups sudo matches a group of lab"]
        );
        assert_eq!(
            lockout(&lab, &groups, &t("authenticationmethods publickey,password")),
            ["AuthenticationMethods publickey,password asks more than the key SLICE logs in with as lab"]
        );
        assert_eq!(
            lockout(
                &lab,
                &groups,
                &t("authenticationmethods publickey,password publickey")
            ),
            none
        );
        assert_eq!(
            lockout(
                &lab,
                &groups,
                &t("pubkeyauthentication no\npermitrootlogin no")
            ),
            ["PubkeyAuthentication no refuses the key SLICE logs in with as lab"]
        );
        let root = Login {
            user: "root".into(),
            ..lab
        };
        assert_eq!(
            lockout(&root, &[], &t("permitrootlogin forced-commands-only")),
            ["PermitRootLogin forced-commands-only refuses root"]
        );
        assert!(wildcard("a*b*c", "aXbYc") && !wildcard("a*b", "ac") && wildcard("*", ""));
        assert!(!in_cidr("10.0.0.0/40", "10.0.0.1") && in_cidr("::/0", "fe80::1"));
    }

    #[test]
    fn an_offline_root_without_sshd_is_written_unvalidated() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/ssh")).unwrap();
        std::fs::write(dir.path().join("etc/ssh/sshd_config"), DEBIAN).unwrap();
        let t = crate::transport::Local::with_root(dir.path()).unwrap();
        let facts = Facts {
            live: false,
            ..debian_facts()
        };
        let res = build_with("sshd", "settings: { X11Forwarding: \"no\" }\n", &facts).unwrap();
        assert_eq!(res.probes().len(), 3, "an offline root runs no sshd -T");
        testing::apply(res.as_ref(), &t).unwrap();
        let after = std::fs::read_to_string(dir.path().join("etc/ssh/sshd_config")).unwrap();
        assert!(after.contains("\nX11Forwarding no\n"));
        let probes = res.probes();
        let answers = t.observe(&probes);
        assert_eq!(
            res.note(&Observed {
                answers: &answers,
                probes: &probes
            })
            .as_deref(),
            Some("/etc/ssh/sshd_config written unvalidated: the root has no /usr/sbin/sshd")
        );
        assert_eq!(testing::diff(res.as_ref(), &t).unwrap(), []);
    }

    #[test]
    fn a_live_target_without_sshd_fails_clearly() {
        let host = Host::new(DEBIAN, None);
        host.files.lock().unwrap().remove(SSHD);
        let res = sshd("settings: { X11Forwarding: \"no\" }\n");
        assert_eq!(
            testing::diff(res.as_ref(), &host).unwrap_err(),
            "sshd is not installed on the target (no /usr/sbin/sshd): install openssh-server first"
        );
    }

    #[test]
    fn build_errors_point_at_the_setting() {
        assert_eq!(
            build_err("sshd", "force: true\n"),
            "1:1: `sshd` needs `settings`"
        );
        assert_eq!(
            build_err("sshd", "settings: [PermitRootLogin]\n"),
            "1:11: `settings` must be a mapping of sshd keywords to values, found a list"
        );
        assert_eq!(
            build_err("sshd", "settings:\n  Permit-Root: no\n"),
            "2:3: `Permit-Root` is not an sshd keyword such as PermitRootLogin"
        );
        assert_eq!(
            build_err("sshd", "settings:\n  Match: User bob\n"),
            "2:3: `Match` cannot be managed by `sshd`: it changes how the rest of the file is read"
        );
        assert_eq!(
            build_err(
                "sshd",
                "settings:\n  X11Forwarding: no\n  x11forwarding: yes\n"
            ),
            "3:3: `x11forwarding` is given twice (sshd keywords ignore case)"
        );
        assert_eq!(
            build_err("sshd", "settings:\n  Banner: \"/etc/issue #x\"\n"),
            "2:12: the value of `Banner` must be one line of text, not empty, with no word starting with `#`"
        );
        assert_eq!(
            build_err("sshd", "settings: { Banner: [a] }\n"),
            "1:21: `Banner` must be a single value, found a list"
        );
        assert_eq!(
            build_err("sshd", "settings: { X: 1 }\nforse: true\n"),
            "2:1: unknown key `forse` for `sshd`"
        );
        assert_eq!(
            build_err("sshd", "settings: { X: 1 }\npath: sshd_config\n"),
            "2:7: `path` must be an absolute path, found `sshd_config`"
        );
    }
}
