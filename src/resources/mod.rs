//! The kinds of resource, one file each, and the ownership and mode handling they share.

pub mod apparmor;
pub mod audit_rule;
pub mod command;
pub mod directory;
pub mod docker_daemon;
pub mod file;
pub mod firewall;
pub mod group;
pub mod json;
pub mod kernel_module;
pub mod line;
pub mod mount;
pub mod package;
pub mod patch;
pub mod permissions;
pub mod selinux;
pub mod service;
pub mod setuid;
pub mod sshd;
pub mod sysctl;
#[cfg(test)]
pub mod testing;
pub mod user;

use crate::error::Result;
use crate::resource::{Change, Observed, Params};
use crate::transport::{Attrs, Probe, Stat};

/// The mode, owner and group a task asks for. Names are looked up in the target's own
/// /etc/passwd and /etc/group (never this machine's), so an offline root is judged by its files.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

use user::{GROUP, PASSWD};

impl Meta {
    pub fn from_params(p: &Params) -> Result<Meta> {
        Ok(Meta {
            mode: p.opt_mode("mode")?,
            owner: p.opt_str("owner")?,
            group: p.opt_str("group")?,
        })
    }

    /// The account databases to read; always both, so changes can show names on either side.
    pub fn probes(&self) -> Vec<Probe> {
        if self.owner.is_none() && self.group.is_none() {
            return Vec::new();
        }
        vec![Probe::Read(PASSWD.into()), Probe::Read(GROUP.into())]
    }

    /// Resolves names to ids from the answers at `at` (where `probes()` were placed).
    pub fn resolve(&self, obs: &Observed, at: usize) -> Result<(Attrs, Accounts), String> {
        let accounts = if self.probes().is_empty() {
            Accounts::default()
        } else {
            Accounts {
                users: parse_db(obs.read(at)?),
                groups: parse_db(obs.read(at + 1)?),
            }
        };
        let uid = match &self.owner {
            None => None,
            Some(o) => Some(
                accounts
                    .id(&accounts.users, o)
                    .ok_or_else(|| format!("user `{o}` does not exist in {PASSWD}"))?,
            ),
        };
        let gid = match &self.group {
            None => None,
            Some(g) => Some(
                accounts
                    .id(&accounts.groups, g)
                    .ok_or_else(|| format!("group `{g}` does not exist in {GROUP}"))?,
            ),
        };
        Ok((
            Attrs {
                mode: self.mode,
                uid,
                gid,
            },
            accounts,
        ))
    }

    /// What differs between the wanted attributes and what the path has.
    pub fn changes(want: &Attrs, have: &Stat, accounts: &Accounts) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some(m) = want.mode.filter(|m| *m != have.mode) {
            out.push(Change::new(
                "mode",
                Some(format!("{:04o}", have.mode)),
                Some(format!("{m:04o}")),
            ));
        }
        if let Some(u) = want.uid.filter(|u| *u != have.uid) {
            out.push(Change::new(
                "owner",
                Some(accounts.name(&accounts.users, have.uid)),
                Some(accounts.name(&accounts.users, u)),
            ));
        }
        if let Some(g) = want.gid.filter(|g| *g != have.gid) {
            out.push(Change::new(
                "group",
                Some(accounts.name(&accounts.groups, have.gid)),
                Some(accounts.name(&accounts.groups, g)),
            ));
        }
        out
    }

    /// The attributes to set on an existing path: only the parts that differ.
    pub fn fixes(want: &Attrs, have: &Stat) -> Attrs {
        Attrs {
            mode: want.mode.filter(|m| *m != have.mode),
            uid: want.uid.filter(|u| *u != have.uid),
            gid: want.gid.filter(|g| *g != have.gid),
        }
    }

    /// Probes for a file whose contents a resource edits: stat and read of the path, then the
    /// account databases (so `Meta::resolve` takes its answers from index 2).
    pub fn file_probes(&self, path: &str) -> Vec<Probe> {
        let mut v = vec![Probe::Stat(path.to_string()), Probe::Read(path.to_string())];
        v.extend(self.probes());
        v
    }

    /// What differs in a path's existence and attributes: its creation as `what` (`file`,
    /// `directory`), or the attributes that differ on the existing path.
    pub fn presence(
        stat: Option<&Stat>,
        what: &str,
        want: &Attrs,
        accounts: &Accounts,
    ) -> Vec<Change> {
        match stat {
            Some(s) => Meta::changes(want, s, accounts),
            None => {
                let default_mode = if what == "directory" { 0o755 } else { 0o644 };
                let mut v = vec![Change::new(
                    "state",
                    Some("absent".into()),
                    Some(what.into()),
                )];
                v.extend(Meta::creation(want, default_mode, accounts));
                v
            }
        }
    }

    /// Changes to report for a path that does not exist yet.
    fn creation(want: &Attrs, default_mode: u32, accounts: &Accounts) -> Vec<Change> {
        let mut out = vec![Change::new(
            "mode",
            None,
            Some(format!("{:04o}", want.mode.unwrap_or(default_mode))),
        )];
        if let Some(u) = want.uid {
            out.push(Change::new(
                "owner",
                None,
                Some(accounts.name(&accounts.users, u)),
            ));
        }
        if let Some(g) = want.gid {
            out.push(Change::new(
                "group",
                None,
                Some(accounts.name(&accounts.groups, g)),
            ));
        }
        out
    }
}

/// Users or groups of the target: (name, id) pairs from a passwd- or group-style file.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    users: Vec<(String, u32)>,
    groups: Vec<(String, u32)>,
}

impl Accounts {
    fn id(&self, db: &[(String, u32)], name: &str) -> Option<u32> {
        if let Ok(n) = name.parse::<u32>() {
            return Some(n);
        }
        db.iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
            // root is uid/gid 0 by definition, even in a root directory without account files.
            .or((name == "root").then_some(0))
    }

    fn name(&self, db: &[(String, u32)], id: u32) -> String {
        match db.iter().find(|(_, i)| *i == id) {
            Some((n, _)) => n.clone(),
            None if id == 0 => "root".to_string(),
            None => id.to_string(),
        }
    }
}

/// (name, id) of each account: the third field is the uid in passwd and the gid in group.
fn parse_db(data: Option<&[u8]>) -> Vec<(String, u32)> {
    user::records(data)
        .into_iter()
        .filter_map(|f| Some((f.first()?.clone(), f.get(2)?.parse().ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_files_are_read_by_name_and_id() {
        let users = parse_db(Some(
            b"root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken\n",
        ));
        let a = Accounts {
            users,
            groups: Vec::new(),
        };
        assert_eq!(a.id(&a.users, "alice"), Some(1000));
        assert_eq!(a.id(&a.users, "42"), Some(42));
        assert_eq!(a.id(&a.users, "bob"), None);
        assert_eq!(a.name(&a.users, 1000), "alice");
        assert_eq!(a.name(&a.users, 7), "7");
        assert_eq!(Accounts::default().id(&[], "root"), Some(0));
    }
}
