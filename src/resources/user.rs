//! `user`: a local account (uid, primary and supplementary groups, shell, home, password lock),
//! or no such account. Also the reading of /etc/passwd, /etc/group and /etc/shadow that `group`
//! shares.
//!
//! Observation reads the account files (the same probes for every user and group task of a
//! host, so a playbook with fifty accounts reads each file once). Changes are made with the
//! target's own useradd / usermod / userdel, which keep the files, their backups and locks
//! consistent the way the system expects; under `--root` they run chrooted, so the root needs
//! /bin/sh and those tools.

use crate::error::Result;
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::at;
use crate::transport::script::quote;
use crate::transport::{Probe, Transport};

pub(crate) const PASSWD: &str = "/etc/passwd";
pub(crate) const GROUP: &str = "/etc/group";
pub(crate) const SHADOW: &str = "/etc/shadow";
const GSHADOW: &str = "/etc/gshadow";
/// Where a no-login shell may be; the first that exists is given to system accounts.
const NOLOGIN: &[&str] = &["/usr/sbin/nologin", "/sbin/nologin"];

/// One line of /etc/passwd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    /// The password field: `x` when the hash is in /etc/shadow.
    pub password: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// One line of /etc/group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    pub name: String,
    pub gid: u32,
    /// Supplementary members, as listed (users whose primary group this is are not listed).
    pub members: Vec<String>,
}

/// Colon-separated fields of the lines of an account file. NIS lines (`+`, `-`), comments and
/// lines without a name are skipped; nothing here panics on any input.
pub(crate) fn records(data: Option<&[u8]>) -> Vec<Vec<String>> {
    String::from_utf8_lossy(data.unwrap_or_default())
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .filter(|f| f.first().is_some_and(|n| !n.is_empty()))
        .collect()
}

pub(crate) fn parse_passwd(data: Option<&[u8]>) -> Vec<PasswdEntry> {
    records(data)
        .into_iter()
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.clone(),
                password: f.get(1)?.clone(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).cloned().unwrap_or_default(),
                shell: f.get(6).cloned().unwrap_or_default(),
            })
        })
        .collect()
}

pub(crate) fn parse_group(data: Option<&[u8]>) -> Vec<GroupEntry> {
    records(data)
        .into_iter()
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?.clone(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// (name, password field) pairs of /etc/shadow.
fn parse_shadow(data: Option<&[u8]>) -> Vec<(String, String)> {
    records(data)
        .into_iter()
        .filter_map(|f| Some((f.first()?.clone(), f.get(1)?.clone())))
        .collect()
}

/// A user or group name the shadow tools accept and a shell cannot misread: letters, digits,
/// `_`, `.`, `-` (not first), an optional final `$` (Samba machine accounts), at most 32
/// characters, and not all digits (it would read as an id).
pub(crate) fn valid_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    !body.is_empty()
        && name.len() <= 32
        && !body.starts_with(['-', '.'])
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !body.chars().all(|c| c.is_ascii_digit())
}

/// A name parameter, checked.
pub(crate) fn name_param(p: &Params, what: &str) -> Result<String> {
    let name = p.str("name")?;
    if !valid_name(&name) {
        return Err(at(
            p,
            "name",
            format!(
                "`{name}` is not a valid {what} name (letters, digits, `_`, `.`, `-`; at most 32)"
            ),
        ));
    }
    Ok(name)
}

/// A numeric id parameter (uid, gid): 0 to 4294967294 (-1 means "no id" to the kernel).
pub(crate) fn id_param(p: &Params, key: &'static str) -> Result<Option<u32>> {
    let Some(text) = p.opt_str(key)? else {
        return Ok(None);
    };
    match text.parse::<u32>() {
        Ok(id) if id != u32::MAX => Ok(Some(id)),
        _ => Err(at(
            p,
            key,
            format!("`{key}` must be a number from 0 to 4294967294, found `{text}`"),
        )),
    }
}

/// A list of names (groups, members), checked and without duplicates; `None` when not given.
pub(crate) fn names_param(
    p: &Params,
    key: &'static str,
    what: &str,
    ids: bool,
) -> Result<Option<Vec<String>>> {
    if p.node(key).is_none() {
        return Ok(None);
    }
    let mut out: Vec<String> = Vec::new();
    for n in p.str_list(key)? {
        let numeric = ids && !n.is_empty() && n.chars().all(|c| c.is_ascii_digit());
        if !numeric && !valid_name(&n) {
            return Err(at(
                p,
                key,
                format!("`{n}` in `{key}` is not a valid {what} name"),
            ));
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(Some(out))
}

/// An absolute path that fits in a passwd field: no `:`, no line break.
fn field_path(p: &Params, key: &'static str) -> Result<Option<String>> {
    let path = p.opt_path(key)?;
    if path
        .as_deref()
        .is_some_and(|s| s.contains([':', '\n', '\r']))
    {
        return Err(at(
            p,
            key,
            format!("`{key}` cannot contain `:` or a line break (it is a field of /etc/passwd)"),
        ));
    }
    Ok(path)
}

/// "a, b", or "(none)" for an empty list.
pub(crate) fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(", ")
    }
}

/// Runs one command on the target; a failure is the task's failure.
pub(crate) fn run(t: &dyn Transport, cmd: &str) -> Result<(), String> {
    let out = t.run(cmd).map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if !out.success() {
        let msg = out.message();
        return Err(format!(
            "`{cmd}` exited with status {}: {}",
            out.status,
            if msg.is_empty() { "(no message)" } else { &msg }
        ));
    }
    Ok(())
}

pub struct User {
    name: String,
    present: bool,
    uid: Option<u32>,
    /// The primary group: a name or a gid.
    group: Option<String>,
    /// Exactly these supplementary groups; `None`: not managed.
    groups: Option<Vec<String>>,
    shell: Option<String>,
    home: Option<String>,
    system: bool,
    /// The password locked (true) or usable (false); system accounts default to locked.
    locked: Option<bool>,
}

/// The account databases as observed.
struct Db {
    users: Vec<PasswdEntry>,
    groups: Vec<GroupEntry>,
    /// `None` when the task does not look at passwords.
    shadow: Option<Vec<(String, String)>>,
    /// The no-login shell this target has.
    nologin: String,
}

impl User {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let name = name_param(p, "user")?;
        let present = p.choice("state", &["present", "absent"], "present")? == "present";
        let uid = id_param(p, "uid")?;
        let group = p.opt_str("group")?;
        if let Some(g) = &group {
            let numeric = !g.is_empty() && g.chars().all(|c| c.is_ascii_digit());
            if !numeric && !valid_name(g) {
                return Err(at(p, "group", format!("`{g}` is not a valid group name")));
            }
        }
        let groups = names_param(p, "groups", "group", true)?;
        let shell = field_path(p, "shell")?;
        let home = field_path(p, "home")?;
        let system = p.opt_bool("system")?.unwrap_or(false);
        let locked = p.opt_bool("locked")?;
        p.finish()?;
        if !present {
            let given = [
                ("uid", uid.is_some()),
                ("group", group.is_some()),
                ("groups", groups.is_some()),
                ("shell", shell.is_some()),
                ("home", home.is_some()),
                ("locked", locked.is_some()),
            ];
            if let Some((key, _)) = given.iter().find(|(_, g)| *g) {
                return Err(at(
                    p,
                    key,
                    format!("a user with `state: absent` takes no `{key}`"),
                ));
            }
            if name == "root" || uid == Some(0) {
                return Err(at(p, "name", "refusing to remove root"));
            }
        }
        Ok(Box::new(User {
            name,
            present,
            uid,
            group,
            groups,
            shell,
            home,
            system,
            locked: locked.or(system.then_some(true)),
        }))
    }

    fn wants_nologin(&self) -> bool {
        self.system && self.shell.is_none()
    }

    fn db(&self, obs: &Observed) -> Result<Db, String> {
        let mut at = 2;
        let shadow = if self.locked.is_some() {
            at += 1;
            Some(parse_shadow(obs.read(2)?))
        } else {
            None
        };
        let mut nologin = NOLOGIN[0].to_string();
        if self.wants_nologin() {
            for (k, path) in NOLOGIN.iter().enumerate() {
                if obs.stat(at + k)?.is_some() {
                    nologin = path.to_string();
                    break;
                }
            }
        }
        Ok(Db {
            users: parse_passwd(obs.read(0)?),
            groups: parse_group(obs.read(1)?),
            shadow,
            nologin,
        })
    }

    /// The changes, and the one command that makes them.
    fn plan(&self, obs: &Observed) -> Result<(Vec<Change>, Option<String>), String> {
        let db = self.db(obs)?;
        let q = quote(&self.name);
        let have = db.users.iter().find(|u| u.name == self.name);
        let Some(have) = have else {
            if !self.present {
                return Ok((Vec::new(), None));
            }
            return self.create(&db).map(|(c, cmd)| (c, Some(cmd)));
        };
        if !self.present {
            return Ok((
                vec![Change::new(
                    "state",
                    Some("present".into()),
                    Some("absent".into()),
                )],
                Some(format!("userdel {q}")),
            ));
        }
        let mut changes = Vec::new();
        let mut args: Vec<String> = Vec::new();
        if let Some(uid) = self.uid.filter(|u| *u != have.uid) {
            changes.push(Change::new(
                "uid",
                Some(have.uid.to_string()),
                Some(uid.to_string()),
            ));
            args.push(format!("-u {uid}"));
        }
        if let Some(g) = &self.group {
            let same = match group_gid(&db.groups, g) {
                Some(gid) => gid == have.gid,
                None => false,
            };
            if !same {
                changes.push(Change::new(
                    "group",
                    Some(group_name(&db.groups, have.gid)),
                    Some(g.clone()),
                ));
                args.push(format!("-g {}", quote(g)));
            }
        }
        if let Some(want) = &self.groups {
            let want = sorted_names(&db.groups, want);
            let now = supplementary(&db.groups, &self.name);
            if want != now {
                changes.push(Change::new("groups", Some(list(&now)), Some(list(&want))));
                args.push(format!("-G {}", quote(&want.join(","))));
            }
        }
        if let Some(shell) = &self.shell {
            if *shell != have.shell {
                changes.push(Change::new(
                    "shell",
                    Some(have.shell.clone()),
                    Some(shell.clone()),
                ));
                args.push(format!("-s {}", quote(shell)));
            }
        } else if self.wants_nologin() && !is_nologin(&have.shell) {
            changes.push(Change::new(
                "shell",
                Some(have.shell.clone()),
                Some(db.nologin.clone()),
            ));
            args.push(format!("-s {}", quote(&db.nologin)));
        }
        if let Some(home) = self.home.as_ref().filter(|h| **h != have.home) {
            changes.push(Change::new(
                "home",
                Some(have.home.clone()),
                Some(home.clone()),
            ));
            args.push(format!("-d {}", quote(home)));
        }
        if let Some(want) = self.locked {
            let field = password_field(&db, have);
            let now = is_locked(&field);
            if want && !now {
                changes.push(Change::new("locked", Some("no".into()), Some("yes".into())));
                args.push("-L".into());
            } else if !want && now {
                let behind = field.trim_start_matches('!');
                if behind.is_empty() || behind.starts_with('*') || !field.starts_with('!') {
                    return Err(format!(
                        "cannot unlock {}: there is no password behind the lock, and SLICE sets no passwords; \
                         set one on the host (`passwd {}`) or drop `locked: false`",
                        self.name, self.name
                    ));
                }
                changes.push(Change::new("locked", Some("yes".into()), Some("no".into())));
                args.push("-U".into());
            }
        }
        let cmd = (!args.is_empty()).then(|| format!("usermod {} {q}", args.join(" ")));
        Ok((changes, cmd))
    }

    fn create(&self, db: &Db) -> Result<(Vec<Change>, String), String> {
        if self.locked == Some(false) {
            return Err(format!(
                "cannot create {} unlocked (`locked: false`): a new account has no password, and SLICE sets none",
                self.name
            ));
        }
        let mut changes = vec![Change::new(
            "state",
            Some("absent".into()),
            Some("present".into()),
        )];
        let mut args: Vec<String> = Vec::new();
        if self.system {
            args.push("--system".into());
        }
        if let Some(uid) = self.uid {
            changes.push(Change::new("uid", None, Some(uid.to_string())));
            args.push(format!("-u {uid}"));
        }
        match &self.group {
            Some(g) => {
                changes.push(Change::new("group", None, Some(g.clone())));
                args.push(format!("-g {}", quote(g)));
            }
            // useradd would make a group of the user's name and fail because one exists: that
            // group is the one the account would get, so it becomes its primary group.
            None if db.groups.iter().any(|g| g.name == self.name) => {
                changes.push(Change::new("group", None, Some(self.name.clone())));
                args.push(format!("-g {}", quote(&self.name)));
            }
            None => {}
        }
        if let Some(want) = self.groups.as_ref().filter(|g| !g.is_empty()) {
            let want = sorted_names(&db.groups, want);
            changes.push(Change::new("groups", None, Some(list(&want))));
            args.push(format!("-G {}", quote(&want.join(","))));
        }
        let shell = self
            .shell
            .clone()
            .or_else(|| self.wants_nologin().then(|| db.nologin.clone()));
        if let Some(s) = shell {
            changes.push(Change::new("shell", None, Some(s.clone())));
            args.push(format!("-s {}", quote(&s)));
        }
        if let Some(h) = &self.home {
            changes.push(Change::new("home", None, Some(h.clone())));
            args.push(format!("-d {}", quote(h)));
        }
        // A person's account gets its home (from /etc/skel); a system account none.
        args.push(if self.system { "-M" } else { "-m" }.into());
        if self.locked == Some(true) {
            changes.push(Change::new("locked", None, Some("yes".into())));
            // The password field itself: no hash, so no password can ever match.
            args.push("-p '!'".into());
        }
        Ok((
            changes,
            format!("useradd {} {}", args.join(" "), quote(&self.name)),
        ))
    }
}

/// The password field: from /etc/shadow when the account has a line there.
fn password_field(db: &Db, user: &PasswdEntry) -> String {
    db.shadow
        .as_ref()
        .and_then(|s| s.iter().find(|(n, _)| *n == user.name))
        .map_or_else(|| user.password.clone(), |(_, p)| p.clone())
}

/// No password can log in: a lock mark (`!`) or no hash at all (`*`). An empty field is not
/// locked: it lets anyone in without a password.
fn is_locked(field: &str) -> bool {
    field.starts_with(['!', '*'])
}

/// A shell that refuses logins.
fn is_nologin(shell: &str) -> bool {
    shell.ends_with("/nologin") || matches!(shell, "/bin/false" | "/usr/bin/false")
}

/// The gid of a group given by name or number.
pub(crate) fn group_gid(groups: &[GroupEntry], g: &str) -> Option<u32> {
    groups
        .iter()
        .find(|e| e.name == g)
        .map(|e| e.gid)
        .or_else(|| g.parse().ok())
}

fn group_name(groups: &[GroupEntry], gid: u32) -> String {
    groups
        .iter()
        .find(|g| g.gid == gid)
        .map_or_else(|| gid.to_string(), |g| g.name.clone())
}

/// Group names (numbers resolved where a group has that gid), sorted.
fn sorted_names(groups: &[GroupEntry], names: &[String]) -> Vec<String> {
    let mut v: Vec<String> = names
        .iter()
        .map(|n| match n.parse::<u32>() {
            Ok(gid) => group_name(groups, gid),
            Err(_) => n.clone(),
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The groups listing a user as a member, sorted.
fn supplementary(groups: &[GroupEntry], user: &str) -> Vec<String> {
    let mut v: Vec<String> = groups
        .iter()
        .filter(|g| g.members.iter().any(|m| m == user))
        .map(|g| g.name.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

impl Resource for User {
    fn target(&self) -> String {
        self.name.clone()
    }

    /// The account files (so later account tasks observe again), and the home it may create.
    fn paths(&self) -> Vec<&str> {
        let mut v = vec![PASSWD, GROUP, SHADOW, GSHADOW];
        if let Some(h) = &self.home {
            v.push(h);
        }
        v
    }

    /// Files a later task writes into the home (`~/.ssh/authorized_keys`) wait for the account.
    fn creates_dir(&self) -> Option<&str> {
        self.home
            .as_deref()
            .filter(|_| self.present && !self.system)
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v = vec![Probe::Read(PASSWD.into()), Probe::Read(GROUP.into())];
        // Only tasks that manage the lock read the hashes (and need the rights to).
        if self.locked.is_some() {
            v.push(Probe::Read(SHADOW.into()));
        }
        if self.wants_nologin() {
            v.extend(NOLOGIN.iter().map(|p| Probe::Stat(p.to_string())));
        }
        v
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        Ok(self.plan(obs)?.0)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        match self.plan(obs)?.1 {
            Some(cmd) => run(t, &cmd),
            None => Ok(()),
        }
    }
}

/// A stand-in for a host's account tools in unit tests: /etc/passwd, /etc/group and
/// /etc/shadow in memory, changed by the useradd / usermod / userdel / groupadd / groupmod /
/// groupdel / gpasswd command lines SLICE sends, the way the shadow tools change them. The lab
/// tests (tests/host_accounts_services.rs) run the real tools.
#[cfg(test)]
pub(crate) mod fake {
    use std::any::Any;
    use std::collections::BTreeMap;
    use std::io;
    use std::sync::Mutex;
    use std::time::Duration;

    use crate::resource::{Change, Observed, Resource};
    use crate::transport::{Attrs, FileType, Output, Probe, Stat, Transport};

    pub struct Host {
        pub files: Mutex<BTreeMap<String, String>>,
        /// Every command run, in order.
        pub log: Mutex<Vec<String>>,
    }

    fn fail(msg: &str) -> Output {
        Output {
            status: 1,
            stdout: Vec::new(),
            stderr: msg.as_bytes().to_vec(),
        }
    }

    impl Host {
        pub fn new(passwd: &str, group: &str, shadow: &str) -> Host {
            let mut files = BTreeMap::new();
            files.insert("/etc/passwd".to_string(), passwd.to_string());
            files.insert("/etc/group".to_string(), group.to_string());
            files.insert("/etc/shadow".to_string(), shadow.to_string());
            files.insert("/usr/sbin/nologin".to_string(), String::new());
            Host {
                files: Mutex::new(files),
                log: Mutex::new(Vec::new()),
            }
        }

        pub fn file(&self, path: &str) -> String {
            self.files
                .lock()
                .unwrap()
                .get(path)
                .cloned()
                .unwrap_or_default()
        }

        pub fn commands(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }

        fn lines(&self, path: &str) -> Vec<Vec<String>> {
            self.file(path)
                .lines()
                .map(|l| l.split(':').map(str::to_string).collect())
                .collect()
        }

        fn store(&self, path: &str, lines: &[Vec<String>]) {
            let text: String = lines.iter().map(|f| f.join(":") + "\n").collect();
            self.files.lock().unwrap().insert(path.to_string(), text);
        }

        fn gid_of(&self, g: &str) -> Option<String> {
            self.lines("/etc/group")
                .into_iter()
                .find(|f| f[0] == g || f[2] == g)
                .map(|f| f[2].clone())
        }

        fn next_id(&self, path: &str, system: bool) -> String {
            let used: Vec<u32> = self
                .lines(path)
                .iter()
                .filter_map(|f| f.get(2)?.parse().ok())
                .collect();
            if system {
                (100..1000).rev().find(|i| !used.contains(i))
            } else {
                (1000..60000).find(|i| !used.contains(i))
            }
            .unwrap()
            .to_string()
        }

        /// Sets exactly these supplementary groups for a user.
        fn set_groups(&self, user: &str, groups: &str) -> Result<(), String> {
            let want: Vec<&str> = groups.split(',').filter(|g| !g.is_empty()).collect();
            let mut lines = self.lines("/etc/group");
            for w in &want {
                if !lines.iter().any(|f| f[0] == *w) {
                    return Err(format!("usermod: group '{w}' does not exist"));
                }
            }
            for f in &mut lines {
                let mut members: Vec<String> = f[3]
                    .split(',')
                    .filter(|m| !m.is_empty() && *m != user)
                    .map(str::to_string)
                    .collect();
                if want.contains(&f[0].as_str()) {
                    members.push(user.to_string());
                }
                f[3] = members.join(",");
            }
            self.store("/etc/group", &lines);
            Ok(())
        }

        /// Prepares the host with a command, unlogged: `h.setup("groupadd docker")`.
        pub fn setup(&self, command: &str) {
            let words = shlex::split(command).unwrap_or_default();
            self.exec(&words).unwrap();
        }

        fn exec(&self, words: &[String]) -> Result<(), String> {
            let (tool, rest) = words.split_first().ok_or("empty command")?;
            let mut opts: BTreeMap<&str, String> = BTreeMap::new();
            let mut name = None;
            let mut i = 0;
            while i < rest.len() {
                let w = rest[i].as_str();
                // gpasswd's -M takes the member list; useradd's -M and -m are flags.
                let flag = matches!(w, "--system" | "-m" | "-L" | "-U")
                    || (w == "-M" && tool != "gpasswd");
                match w {
                    _ if flag => {
                        opts.insert(w, String::new());
                    }
                    _ if w.starts_with('-') => {
                        let v = rest.get(i + 1).ok_or("missing option value")?;
                        opts.insert(w, v.clone());
                        i += 1;
                    }
                    _ => name = Some(w.to_string()),
                }
                i += 1;
            }
            let name = name.ok_or("no name")?;
            let mut passwd = self.lines("/etc/passwd");
            let mut shadow = self.lines("/etc/shadow");
            let mut group = self.lines("/etc/group");
            let user_at = passwd.iter().position(|f| f[0] == name);
            let group_at = group.iter().position(|f| f[0] == name);
            match tool.as_str() {
                "useradd" => {
                    if user_at.is_some() {
                        return Err(format!("useradd: user '{name}' already exists"));
                    }
                    let system = opts.contains_key("--system");
                    let uid = opts
                        .get("-u")
                        .cloned()
                        .unwrap_or_else(|| self.next_id("/etc/passwd", system));
                    let gid = match opts.get("-g") {
                        Some(g) => self
                            .gid_of(g)
                            .ok_or(format!("useradd: group '{g}' does not exist"))?,
                        None if group_at.is_some() => {
                            return Err(format!("useradd: group {name} exists - if you want to add this user to that group, use -g."))
                        }
                        None => {
                            let gid = self.next_id("/etc/group", system);
                            group.push(vec![name.clone(), "x".into(), gid.clone(), String::new()]);
                            self.store("/etc/group", &group);
                            gid
                        }
                    };
                    let home = opts.get("-d").cloned().unwrap_or(format!("/home/{name}"));
                    let shell = opts.get("-s").cloned().unwrap_or("/bin/sh".into());
                    passwd.push(vec![
                        name.clone(),
                        "x".into(),
                        uid,
                        gid,
                        String::new(),
                        home,
                        shell,
                    ]);
                    let pw = opts.get("-p").cloned().unwrap_or("!".into());
                    shadow.push(vec![
                        name.clone(),
                        pw,
                        "20000".into(),
                        "0".into(),
                        "99999".into(),
                        "7".into(),
                        String::new(),
                        String::new(),
                        String::new(),
                    ]);
                    self.store("/etc/passwd", &passwd);
                    self.store("/etc/shadow", &shadow);
                    if let Some(g) = opts.get("-G") {
                        self.set_groups(&name, g)?;
                    }
                }
                "usermod" => {
                    let at = user_at.ok_or(format!("usermod: user '{name}' does not exist"))?;
                    if let Some(g) = opts.get("-g") {
                        passwd[at][3] = self
                            .gid_of(g)
                            .ok_or(format!("usermod: group '{g}' does not exist"))?;
                    }
                    for (opt, field) in [("-u", 2), ("-d", 5), ("-s", 6)] {
                        if let Some(v) = opts.get(opt) {
                            passwd[at][field] = v.clone();
                        }
                    }
                    if let Some(s) = shadow.iter_mut().find(|f| f[0] == name) {
                        if opts.contains_key("-L") && !s[1].starts_with('!') {
                            s[1] = format!("!{}", s[1]);
                        }
                        if opts.contains_key("-U") {
                            s[1] = s[1].trim_start_matches('!').to_string();
                        }
                    }
                    self.store("/etc/passwd", &passwd);
                    self.store("/etc/shadow", &shadow);
                    if let Some(g) = opts.get("-G") {
                        self.set_groups(&name, g)?;
                    }
                }
                "userdel" => {
                    let at = user_at.ok_or(format!("userdel: user '{name}' does not exist"))?;
                    passwd.remove(at);
                    shadow.retain(|f| f[0] != name);
                    self.store("/etc/passwd", &passwd);
                    self.store("/etc/shadow", &shadow);
                    self.set_groups(&name, "")?;
                }
                "groupadd" => {
                    if group_at.is_some() {
                        return Err(format!("groupadd: group '{name}' already exists"));
                    }
                    let gid = opts.get("-g").cloned().unwrap_or_else(|| {
                        self.next_id("/etc/group", opts.contains_key("--system"))
                    });
                    group.push(vec![name, "x".into(), gid, String::new()]);
                    self.store("/etc/group", &group);
                }
                "groupmod" => {
                    let at = group_at.ok_or(format!("groupmod: group '{name}' does not exist"))?;
                    if let Some(gid) = opts.get("-g") {
                        let old = group[at][2].clone();
                        group[at][2] = gid.clone();
                        // Users keep the group as their primary group.
                        for f in &mut passwd {
                            if f[3] == old {
                                f[3] = gid.clone();
                            }
                        }
                    }
                    self.store("/etc/group", &group);
                    self.store("/etc/passwd", &passwd);
                }
                "groupdel" => {
                    let at = group_at.ok_or(format!("groupdel: group '{name}' does not exist"))?;
                    if let Some(u) = passwd.iter().find(|f| f[3] == group[at][2]) {
                        return Err(format!(
                            "groupdel: cannot remove the primary group of user '{}'",
                            u[0]
                        ));
                    }
                    group.remove(at);
                    self.store("/etc/group", &group);
                }
                "gpasswd" => {
                    let at = group_at.ok_or(format!(
                        "gpasswd: group '{name}' does not exist in /etc/group"
                    ))?;
                    let members = opts.get("-M").ok_or("only gpasswd -M")?;
                    for m in members.split(',').filter(|m| !m.is_empty()) {
                        if !passwd.iter().any(|f| f[0] == m) {
                            return Err(format!("gpasswd: user '{m}' does not exist"));
                        }
                    }
                    group[at][3] = members.clone();
                    self.store("/etc/group", &group);
                }
                t => return Err(format!("sh: 1: {t}: not found")),
            }
            Ok(())
        }
    }

    impl Transport for Host {
        fn name(&self) -> String {
            "fake".into()
        }
        fn live(&self) -> bool {
            true
        }
        fn stat(&self, path: &str) -> io::Result<Option<Stat>> {
            Ok(self.files.lock().unwrap().get(path).map(|c| Stat {
                kind: FileType::File,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: c.len() as u64,
            }))
        }
        fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
            Ok(self
                .files
                .lock()
                .unwrap()
                .get(path)
                .map(|c| c.clone().into_bytes()))
        }
        fn write(&self, _: &str, _: &[u8], _: &Attrs) -> io::Result<()> {
            Err(io::Error::other("account tasks write through the tools"))
        }
        fn mkdir(&self, _: &str, _: &Attrs) -> io::Result<()> {
            Err(io::Error::other("not here"))
        }
        fn set_attrs(&self, _: &str, _: &Attrs) -> io::Result<()> {
            Err(io::Error::other("not here"))
        }
        fn remove(&self, _: &str) -> io::Result<()> {
            Err(io::Error::other("not here"))
        }
        fn run(&self, command: &str) -> io::Result<Output> {
            self.log.lock().unwrap().push(command.to_string());
            let words = shlex::split(command).unwrap_or_default();
            Ok(match self.exec(&words) {
                Ok(()) => Output::default(),
                Err(e) => fail(&e),
            })
        }
        fn lock(&self, _: &str, _: Duration) -> io::Result<Box<dyn Any + Send>> {
            Ok(Box::new(()))
        }
    }

    pub fn diff(res: &dyn Resource, t: &dyn Transport) -> Result<Vec<Change>, String> {
        let probes: Vec<Probe> = res.probes();
        let answers = t.observe(&probes);
        res.diff(&Observed {
            answers: &answers,
            probes: &probes,
        })
    }

    pub fn apply(res: &dyn Resource, t: &dyn Transport) -> Result<(), String> {
        let probes: Vec<Probe> = res.probes();
        let answers = t.observe(&probes);
        res.apply(
            &Observed {
                answers: &answers,
                probes: &probes,
            },
            t,
        )
    }

    /// Check (the changes), apply, check clean, apply again with no command: the changes.
    pub fn converge(res: &dyn Resource, host: &Host) -> Vec<Change> {
        let changes = diff(res, host).expect("diff");
        apply(res, host).expect("apply");
        assert_eq!(
            diff(res, host).expect("diff after apply"),
            [],
            "in sync after apply"
        );
        let before = host.commands().len();
        apply(res, host).expect("second apply");
        assert_eq!(host.commands().len(), before, "a second apply runs nothing");
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{apply, converge, diff, Host};
    use super::*;
    use crate::resources::testing::{build, build_err};
    use crate::transport::Answer;

    /// Recorded from the lab image (Debian 12), trimmed; labpw's hash shortened.
    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        sync:x:4:65534:sync:/bin:/bin/sync\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        messagebus:x:100:101::/nonexistent:/usr/sbin/nologin\n\
        sshd:x:101:65534::/run/sshd:/usr/sbin/nologin\n\
        lab:x:1000:1000::/home/lab:/bin/bash\n\
        labpw:x:1001:1001::/home/labpw:/bin/bash\n";
    const GROUP_TEXT: &str = "root:x:0:\nadm:x:4:\nsudo:x:27:lab,labpw\nusers:x:100:\n\
        nogroup:x:65534:\nmessagebus:x:101:\nlab:x:1000:\nlabpw:x:1001:\n";
    const SHADOW_TEXT: &str = "root:*:20788:0:99999:7:::\n\
        daemon:*:20788:0:99999:7:::\n\
        sync:*:20788:0:99999:7:::\n\
        nobody:*:20788:0:99999:7:::\n\
        messagebus:!:20788::::::\n\
        sshd:!:20788::::::\n\
        lab:!:20788:0:99999:7:::\n\
        labpw:$y$j9T$b082CdVg6dk9QmdFKkpyW.$xSOV:20788:0:99999:7:::\n";

    fn host() -> Host {
        Host::new(PASSWD_TEXT, GROUP_TEXT, SHADOW_TEXT)
    }

    fn user(yaml: &str) -> Box<dyn Resource> {
        build("user", yaml, true).unwrap()
    }

    fn change(what: &str, before: Option<&str>, after: &str) -> Change {
        Change::new(what, before.map(String::from), Some(after.into()))
    }

    fn line<'a>(text: &'a str, name: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_default()
    }

    #[test]
    fn recorded_account_files_parse() {
        let users = parse_passwd(Some(PASSWD_TEXT.as_bytes()));
        assert_eq!(users.len(), 8);
        assert_eq!(
            users[6],
            PasswdEntry {
                name: "lab".into(),
                password: "x".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/lab".into(),
                shell: "/bin/bash".into()
            }
        );
        let groups = parse_group(Some(GROUP_TEXT.as_bytes()));
        assert_eq!(groups[2].members, ["lab", "labpw"]);
        assert!(groups[0].members.is_empty());
        let shadow = parse_shadow(Some(SHADOW_TEXT.as_bytes()));
        assert!(is_locked(&shadow[0].1) && is_locked(&shadow[6].1) && !is_locked(&shadow[7].1));
        // Broken lines are skipped, never a panic.
        let odd = b"+::::::\n#c\n:x:1:1::/:/bin/sh\nbad:x:notanumber:1::/:\nshort:x\n\xff\xfe:x:5:5\nok:x:7:7\n";
        assert_eq!(
            parse_passwd(Some(odd))
                .iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>(),
            ["\u{fffd}\u{fffd}", "ok"]
        );
        assert_eq!(
            parse_group(Some(b"g:x:5:a,,b, c\nh:x:6\n"))[0].members,
            ["a", "b", "c"]
        );
        assert!(parse_passwd(None).is_empty());
    }

    #[test]
    fn a_new_user_with_groups_and_shell() {
        let h = host();
        h.setup("groupadd docker");
        let res = user(
            "name: alice\nuid: 1500\ngroups: [docker, sudo]\nshell: /bin/bash\nhome: /home/alice\n",
        );
        assert_eq!(
            converge(res.as_ref(), &h),
            [
                change("state", Some("absent"), "present"),
                change("uid", None, "1500"),
                change("groups", None, "docker, sudo"),
                change("shell", None, "/bin/bash"),
                change("home", None, "/home/alice"),
            ]
        );
        assert_eq!(
            h.commands(),
            ["useradd -u 1500 -G 'docker,sudo' -s '/bin/bash' -d '/home/alice' -m 'alice'"]
        );
        assert_eq!(
            line(&h.file(PASSWD), "alice"),
            "alice:x:1500:1003::/home/alice:/bin/bash"
        );
        assert_eq!(line(&h.file(GROUP), "docker"), "docker:x:1002:alice");
        assert_eq!(line(&h.file(GROUP), "sudo"), "sudo:x:27:lab,labpw,alice");
        assert_eq!(res.creates_dir(), Some("/home/alice"));
        assert!(res.paths().contains(&"/etc/passwd") && res.paths().contains(&"/home/alice"));
    }

    #[test]
    fn a_system_account_is_locked_with_a_nologin_shell() {
        let h = host();
        // labpw was made by hand for a service and has a password and a login shell.
        let res = user("name: labpw\nsystem: true\n");
        assert_eq!(
            converge(res.as_ref(), &h),
            [
                change("shell", Some("/bin/bash"), "/usr/sbin/nologin"),
                change("locked", Some("no"), "yes"),
            ]
        );
        assert_eq!(h.commands(), ["usermod -s '/usr/sbin/nologin' -L 'labpw'"]);
        assert!(line(&h.file(SHADOW), "labpw").starts_with("labpw:!$y$"));
        // Other no-login shells and `*` count: sync's /bin/sync does not.
        assert_eq!(
            diff(user("name: daemon\nsystem: true\n").as_ref(), &h).unwrap(),
            []
        );
        assert_eq!(
            diff(user("name: sync\nsystem: true\n").as_ref(), &h).unwrap(),
            [change("shell", Some("/bin/sync"), "/usr/sbin/nologin")]
        );
        // A new system account: --system, no home, locked.
        let res = user("name: svc\nsystem: true\n");
        assert_eq!(
            converge(res.as_ref(), &h),
            [
                change("state", Some("absent"), "present"),
                change("shell", None, "/usr/sbin/nologin"),
                change("locked", None, "yes"),
            ]
        );
        assert_eq!(
            h.commands()[1],
            "useradd --system -s '/usr/sbin/nologin' -M -p '!' 'svc'"
        );
        assert_eq!(res.creates_dir(), None);
        // An explicit shell wins over the no-login default.
        let res = user("name: svc\nsystem: true\nshell: /bin/false\n");
        assert_eq!(
            converge(res.as_ref(), &h),
            [change("shell", Some("/usr/sbin/nologin"), "/bin/false")]
        );
    }

    #[test]
    fn the_nologin_shell_is_the_one_the_host_has() {
        let h = host();
        h.files.lock().unwrap().remove("/usr/sbin/nologin");
        h.files
            .lock()
            .unwrap()
            .insert("/sbin/nologin".into(), String::new());
        let res = user("name: lab\nsystem: true\nlocked: false\n");
        assert_eq!(
            res.probes(),
            [
                Probe::Read(PASSWD.into()),
                Probe::Read(GROUP.into()),
                Probe::Read(SHADOW.into()),
                Probe::Stat("/usr/sbin/nologin".into()),
                Probe::Stat("/sbin/nologin".into()),
            ]
        );
        assert_eq!(
            diff(res.as_ref(), &h).unwrap_err(),
            "cannot unlock lab: there is no password behind the lock, and SLICE sets no passwords; set one on the host (`passwd lab`) or drop `locked: false`"
        );
        let res = user("name: labpw\nsystem: true\nlocked: false\n");
        assert_eq!(
            converge(res.as_ref(), &h),
            [change("shell", Some("/bin/bash"), "/sbin/nologin")]
        );
    }

    #[test]
    fn lock_and_unlock() {
        let h = host();
        let lock = user("name: labpw\nlocked: true\n");
        assert_eq!(
            converge(lock.as_ref(), &h),
            [change("locked", Some("no"), "yes")]
        );
        let unlock = user("name: labpw\nlocked: false\n");
        assert_eq!(
            converge(unlock.as_ref(), &h),
            [change("locked", Some("yes"), "no")]
        );
        assert_eq!(h.commands(), ["usermod -L 'labpw'", "usermod -U 'labpw'"]);
        assert!(line(&h.file(SHADOW), "labpw").starts_with("labpw:$y$"));
        assert_eq!(
            diff(user("name: new\nlocked: false\n").as_ref(), &h).unwrap_err(),
            "cannot create new unlocked (`locked: false`): a new account has no password, and SLICE sets none"
        );
        // Only tasks that manage the lock read /etc/shadow, so only they need the rights to.
        assert_eq!(user("name: lab\nshell: /bin/sh\n").probes().len(), 2);
        let probes = lock.probes();
        let answers = [
            Answer::Read(Some(PASSWD_TEXT.as_bytes().to_vec())),
            Answer::Read(Some(GROUP_TEXT.as_bytes().to_vec())),
            Answer::Failed("Permission denied".into()),
        ];
        assert_eq!(
            lock.diff(&Observed {
                answers: &answers,
                probes: &probes
            })
            .unwrap_err(),
            "cannot observe /etc/shadow: Permission denied"
        );
    }

    #[test]
    fn supplementary_groups_are_exact() {
        let h = host();
        h.setup("groupadd docker");
        let res = user("name: labpw\ngroups: [docker]\n");
        assert_eq!(
            converge(res.as_ref(), &h),
            [change("groups", Some("sudo"), "docker")]
        );
        assert_eq!(line(&h.file(GROUP), "sudo"), "sudo:x:27:lab");
        assert_eq!(line(&h.file(GROUP), "docker"), "docker:x:1002:labpw");
        let none = user("name: labpw\ngroups: []\n");
        assert_eq!(
            converge(none.as_ref(), &h),
            [change("groups", Some("docker"), "(none)")]
        );
        assert_eq!(
            h.commands(),
            ["usermod -G 'docker' 'labpw'", "usermod -G '' 'labpw'"]
        );
        // Numbers name groups by gid.
        assert_eq!(
            diff(user("name: lab\ngroups: [27]\n").as_ref(), &h).unwrap(),
            []
        );
    }

    #[test]
    fn uid_primary_group_and_home_change() {
        let h = host();
        let res = user("name: lab\nuid: 1100\ngroup: users\nhome: /srv/lab\nshell: /bin/sh\n");
        assert_eq!(
            converge(res.as_ref(), &h),
            [
                change("uid", Some("1000"), "1100"),
                change("group", Some("lab"), "users"),
                change("shell", Some("/bin/bash"), "/bin/sh"),
                change("home", Some("/home/lab"), "/srv/lab"),
            ]
        );
        assert_eq!(
            h.commands(),
            ["usermod -u 1100 -g 'users' -s '/bin/sh' -d '/srv/lab' 'lab'"]
        );
        assert_eq!(
            diff(user("name: lab\ngroup: 100\n").as_ref(), &h).unwrap(),
            []
        );
        // A group that does not exist yet: drift in check; apply fails as usermod does.
        let res = user("name: lab\ngroup: docker\n");
        assert_eq!(
            diff(res.as_ref(), &h).unwrap(),
            [change("group", Some("users"), "docker")]
        );
        assert_eq!(
            apply(res.as_ref(), &h).unwrap_err(),
            "`usermod -g 'docker' 'lab'` exited with status 1: usermod: group 'docker' does not exist"
        );
    }

    #[test]
    fn a_same_named_group_becomes_the_primary_group() {
        let h = host();
        h.setup("groupadd alice");
        let res = user("name: alice\n");
        assert_eq!(
            converge(res.as_ref(), &h),
            [
                change("state", Some("absent"), "present"),
                change("group", None, "alice")
            ]
        );
        assert_eq!(h.commands()[0], "useradd -g 'alice' -m 'alice'");
    }

    #[test]
    fn absent_users_are_removed() {
        let h = host();
        let res = user("name: labpw\nstate: absent\n");
        assert_eq!(
            converge(res.as_ref(), &h),
            [change("state", Some("present"), "absent")]
        );
        assert_eq!(h.commands(), ["userdel 'labpw'"]);
        assert_eq!(line(&h.file(GROUP), "sudo"), "sudo:x:27:lab");
        assert_eq!(
            diff(user("name: ghost\nstate: absent\n").as_ref(), &h).unwrap(),
            []
        );
    }

    #[test]
    fn build_errors_point_at_the_parameter() {
        assert_eq!(
            build_err("user", "name: '-rf'\n"),
            "1:8: `-rf` is not a valid user name (letters, digits, `_`, `.`, `-`; at most 32)"
        );
        assert_eq!(
            build_err("user", "name: 'a b'\n"),
            "1:8: `a b` is not a valid user name (letters, digits, `_`, `.`, `-`; at most 32)"
        );
        assert_eq!(
            build_err("user", "name: '1234'\n"),
            "1:8: `1234` is not a valid user name (letters, digits, `_`, `.`, `-`; at most 32)"
        );
        assert!(build("user", "name: host$\n", true).is_ok());
        assert_eq!(
            build_err("user", "name: a\nuid: -1\n"),
            "2:6: `uid` must be a number from 0 to 4294967294, found `-1`"
        );
        assert_eq!(
            build_err("user", "name: a\nuid: 4294967295\n"),
            "2:6: `uid` must be a number from 0 to 4294967294, found `4294967295`"
        );
        assert_eq!(
            build_err("user", "name: a\nshell: bash\n"),
            "2:8: `shell` must be an absolute path, found `bash`"
        );
        assert_eq!(
            build_err("user", "name: a\nhome: '/a:b'\n"),
            "2:8: `home` cannot contain `:` or a line break (it is a field of /etc/passwd)"
        );
        assert_eq!(
            build_err("user", "name: a\ngroups: [docker, 'x,y']\n"),
            "2:9: `x,y` in `groups` is not a valid group name"
        );
        assert_eq!(
            build_err("user", "name: a\ngroup: 'a:b'\n"),
            "2:9: `a:b` is not a valid group name"
        );
        assert_eq!(
            build_err("user", "name: a\nstate: absent\nshell: /bin/sh\n"),
            "3:8: a user with `state: absent` takes no `shell`"
        );
        assert_eq!(
            build_err("user", "name: root\nstate: absent\n"),
            "1:7: refusing to remove root"
        );
        assert_eq!(
            build_err("user", "name: a\nlocked: yes\n"),
            "2:9: `locked` of `user` must be true or false, found a string"
        );
        assert_eq!(
            build_err("user", "name: a\nshel: /bin/sh\n"),
            "2:1: unknown key `shel` for `user`"
        );
    }

    #[test]
    fn user_and_group_tasks_share_their_reads() {
        let u = user("name: a\nlocked: true\n");
        let g = build("group", "name: docker\nmembers: [a]\n", true).unwrap();
        assert_eq!(u.probes()[..2], g.probes()[..]);
        assert_eq!(u.probes()[2], Probe::Read(SHADOW.into()));
    }
}
