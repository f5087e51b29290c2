//! `group`: a local group with its gid and, when `members` is given, exactly these supplementary
//! members; or no such group.
//!
//! `members` is exact because group membership is a grant: the `docker` group controls the
//! Docker daemon (root on the host), so it must hold the trusted users and nobody else. Anyone
//! else listed is removed, and check mode names them. Users whose *primary* group this is are
//! not listed in /etc/group but have its rights too: they are reported, and a task whose
//! `members` leaves them out fails after fixing the list (SLICE does not change another
//! account's primary group behind its back).

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::at;
use crate::resources::user::{
    id_param, list, name_param, names_param, parse_group, parse_passwd, run, GROUP, PASSWD, SHADOW,
};
use crate::transport::script::quote;
use crate::transport::{Probe, Transport};

const GSHADOW: &str = "/etc/gshadow";

pub struct Group {
    name: String,
    present: bool,
    gid: Option<u32>,
    system: bool,
    /// Exactly these supplementary members; `None`: not managed.
    members: Option<Vec<String>>,
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan {
    changes: Vec<Change>,
    cmds: Vec<String>,
    /// Why the group still differs after the commands: primary-group users outside `members`.
    unfixable: Option<String>,
}

impl Group {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let name = name_param(p, "group")?;
        let present = p.choice("state", &["present", "absent"], "present")? == "present";
        let gid = id_param(p, "gid")?;
        let system = p.opt_bool("system")?.unwrap_or(false);
        let members = names_param(p, "members", "user", false)?;
        p.finish()?;
        if !present {
            for (key, given) in [("gid", gid.is_some()), ("members", members.is_some())] {
                if given {
                    return Err(at(
                        p,
                        key,
                        format!("a group with `state: absent` takes no `{key}`"),
                    ));
                }
            }
            if name == "root" {
                return Err(Error::at(p.loc(), "refusing to remove the root group"));
            }
        }
        Ok(Box::new(Group {
            name,
            present,
            gid,
            system,
            members,
        }))
    }

    fn plan(&self, obs: &Observed) -> Result<Plan, String> {
        let users = parse_passwd(obs.read(0)?);
        let groups = parse_group(obs.read(1)?);
        let q = quote(&self.name);
        let have = groups.iter().find(|g| g.name == self.name);
        let mut plan = Plan {
            changes: Vec::new(),
            cmds: Vec::new(),
            unfixable: None,
        };
        // Users whose primary group this is (or will be, with the gid asked for).
        let gid = have.map(|g| g.gid).or(self.gid);
        let primary: Vec<String> = match gid {
            Some(gid) => users
                .iter()
                .filter(|u| u.gid == gid)
                .map(|u| u.name.clone())
                .collect(),
            None => Vec::new(),
        };

        if !self.present {
            if have.is_some() {
                if !primary.is_empty() {
                    return Err(format!(
                        "cannot remove group {}: it is the primary group of {}",
                        self.name,
                        primary.join(", ")
                    ));
                }
                plan.changes.push(Change::new(
                    "state",
                    Some("present".into()),
                    Some("absent".into()),
                ));
                plan.cmds.push(format!("groupdel {q}"));
            }
            return Ok(plan);
        }

        let now: Vec<String> = match have {
            Some(g) => {
                if let Some(want) = self.gid.filter(|w| *w != g.gid) {
                    plan.changes.push(Change::new(
                        "gid",
                        Some(g.gid.to_string()),
                        Some(want.to_string()),
                    ));
                    plan.cmds.push(format!("groupmod -g {want} {q}"));
                }
                let mut m = g.members.clone();
                m.dedup();
                m
            }
            None => {
                plan.changes.push(Change::new(
                    "state",
                    Some("absent".into()),
                    Some("present".into()),
                ));
                if let Some(gid) = self.gid {
                    plan.changes
                        .push(Change::new("gid", None, Some(gid.to_string())));
                }
                let system = if self.system { "--system " } else { "" };
                let gid = self.gid.map(|g| format!("-g {g} ")).unwrap_or_default();
                plan.cmds.push(format!("groupadd {system}{gid}{q}"));
                Vec::new()
            }
        };

        let Some(want) = &self.members else {
            return Ok(plan);
        };
        let removed: Vec<&String> = now.iter().filter(|m| !want.contains(m)).collect();
        let added: Vec<&String> = want.iter().filter(|m| !now.contains(m)).collect();
        if !removed.is_empty() || !added.is_empty() {
            if have.is_some() {
                plan.changes
                    .push(Change::new("members", Some(list(&now)), Some(list(want))));
            } else {
                plan.changes
                    .push(Change::new("members", None, Some(list(want))));
            }
            for m in &removed {
                plan.changes
                    .push(Change::new("remove member", None, Some(m.to_string())));
            }
            for m in &added {
                // An earlier task may create the account; if not, gpasswd says so.
                let note = if users.iter().any(|u| u.name == **m) {
                    String::new()
                } else {
                    format!(" (no user {m} yet)")
                };
                plan.changes
                    .push(Change::new("add member", None, Some(format!("{m}{note}"))));
            }
            plan.cmds
                .push(format!("gpasswd -M {} {q}", quote(&want.join(","))));
        }
        let outside: Vec<String> = primary.into_iter().filter(|u| !want.contains(u)).collect();
        if !outside.is_empty() {
            for u in &outside {
                plan.changes.push(Change::new(
                    "primary member",
                    None,
                    Some(format!("{u} (not in `members`)")),
                ));
            }
            let who = outside.join(", ");
            let (has, is) = if outside.len() == 1 {
                ("has", "is")
            } else {
                ("have", "are")
            };
            plan.unfixable = Some(format!(
                "{who} {has} {} as primary group and so its rights, but {is} not in `members`; \
                 SLICE does not change another account's primary group: give {who} another one \
                 (a `user` task with `group:`) or add {who} to `members`",
                self.name
            ));
        }
        Ok(plan)
    }
}

impl Resource for Group {
    fn target(&self) -> String {
        self.name.clone()
    }

    /// The account files: later account tasks observe them again after this one.
    fn paths(&self) -> Vec<&str> {
        vec![PASSWD, GROUP, SHADOW, GSHADOW]
    }

    fn probes(&self) -> Vec<Probe> {
        // The same two reads as every `user` task: a host's accounts are read once.
        vec![Probe::Read(PASSWD.into()), Probe::Read(GROUP.into())]
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        Ok(self.plan(obs)?.changes)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let plan = self.plan(obs)?;
        for cmd in &plan.cmds {
            run(t, cmd)?;
        }
        match plan.unfixable {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::resource::{Change, Resource};
    use crate::resources::testing::{build, build_err, whats};
    use crate::resources::user::fake::{apply, converge, diff, Host};

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        lab:x:1000:1000::/home/lab:/bin/bash\n\
        alice:x:1001:1001::/home/alice:/bin/bash\n\
        mallory:x:1002:1002::/home/mallory:/bin/bash\n";
    const GROUP_TEXT: &str =
        "root:x:0:\nsudo:x:27:lab\nusers:x:100:\nlab:x:1000:\nalice:x:1001:\nmallory:x:1002:\n";

    fn host() -> Host {
        Host::new(PASSWD_TEXT, GROUP_TEXT, "")
    }

    fn group(yaml: &str) -> Box<dyn Resource> {
        build("group", yaml, true).unwrap()
    }

    fn change(what: &str, before: Option<&str>, after: &str) -> Change {
        Change::new(what, before.map(String::from), Some(after.into()))
    }

    fn docker_line(h: &Host) -> String {
        h.file("/etc/group")
            .lines()
            .find(|l| l.starts_with("docker:"))
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn the_docker_group_holds_exactly_the_trusted_users() {
        let h = host();
        let create = group("name: docker\nsystem: true\nmembers: [alice, mallory]\n");
        assert_eq!(
            converge(create.as_ref(), &h),
            [
                change("state", Some("absent"), "present"),
                change("members", None, "alice, mallory"),
                change("add member", None, "alice"),
                change("add member", None, "mallory"),
            ]
        );
        assert_eq!(docker_line(&h), "docker:x:999:alice,mallory");
        let trusted = group("name: docker\nmembers: [alice]\n");
        assert_eq!(
            converge(trusted.as_ref(), &h),
            [
                change("members", Some("alice, mallory"), "alice"),
                change("remove member", None, "mallory"),
            ]
        );
        assert_eq!(docker_line(&h), "docker:x:999:alice");
        assert_eq!(
            h.commands(),
            [
                "groupadd --system 'docker'",
                "gpasswd -M 'alice,mallory' 'docker'",
                "gpasswd -M 'alice' 'docker'",
            ]
        );
        let nobody = group("name: docker\nmembers: []\n");
        assert_eq!(
            converge(nobody.as_ref(), &h),
            [
                change("members", Some("alice"), "(none)"),
                change("remove member", None, "alice"),
            ]
        );
        assert_eq!(docker_line(&h), "docker:x:999:");
        // Without `members`, membership is not managed.
        h.setup("gpasswd -M mallory docker");
        assert_eq!(diff(group("name: docker\n").as_ref(), &h).unwrap(), []);
    }

    #[test]
    fn a_primary_group_member_outside_the_list_is_named_and_fails_apply() {
        let h = host();
        h.setup("groupadd -g 990 docker");
        h.setup("gpasswd -M alice,lab docker");
        h.setup("usermod -g docker mallory");
        let res = group("name: docker\nmembers: [alice]\n");
        assert_eq!(
            diff(res.as_ref(), &h).unwrap(),
            [
                change("members", Some("alice, lab"), "alice"),
                change("remove member", None, "lab"),
                change("primary member", None, "mallory (not in `members`)"),
            ]
        );
        // The list is fixed, then the task fails naming what SLICE leaves to the playbook.
        let why =
            "mallory has docker as primary group and so its rights, but is not in `members`; \
                   SLICE does not change another account's primary group: give mallory another one \
                   (a `user` task with `group:`) or add mallory to `members`";
        assert_eq!(apply(res.as_ref(), &h).unwrap_err(), why);
        assert_eq!(docker_line(&h), "docker:x:990:alice");
        assert_eq!(whats(&diff(res.as_ref(), &h).unwrap()), ["primary member"]);
        assert_eq!(apply(res.as_ref(), &h).unwrap_err(), why);
        // Declared as a member, a primary user is trusted like the others.
        let res = group("name: docker\nmembers: [alice, mallory]\n");
        assert_eq!(
            converge(res.as_ref(), &h),
            [
                change("members", Some("alice"), "alice, mallory"),
                change("add member", None, "mallory"),
            ]
        );
    }

    #[test]
    fn gid_changes_and_removal() {
        let h = host();
        h.setup("groupadd -g 990 docker");
        let res = group("name: docker\ngid: 991\n");
        assert_eq!(
            converge(res.as_ref(), &h),
            [change("gid", Some("990"), "991")]
        );
        let gone = group("name: docker\nstate: absent\n");
        assert_eq!(
            converge(gone.as_ref(), &h),
            [change("state", Some("present"), "absent")]
        );
        assert_eq!(
            h.commands(),
            ["groupmod -g 991 'docker'", "groupdel 'docker'"]
        );
        assert_eq!(
            diff(group("name: alice\nstate: absent\n").as_ref(), &h).unwrap_err(),
            "cannot remove group alice: it is the primary group of alice"
        );
        let new = group("name: ops\ngid: 1500\nmembers: [ghost]\n");
        assert_eq!(
            diff(new.as_ref(), &h).unwrap(),
            [
                change("state", Some("absent"), "present"),
                change("gid", None, "1500"),
                change("members", None, "ghost"),
                change("add member", None, "ghost (no user ghost yet)"),
            ]
        );
        assert_eq!(
            apply(new.as_ref(), &h).unwrap_err(),
            "`gpasswd -M 'ghost' 'ops'` exited with status 1: gpasswd: user 'ghost' does not exist"
        );
    }

    #[test]
    fn build_errors_point_at_the_parameter() {
        assert_eq!(
            build_err("group", "name: 'docker;id'\n"),
            "1:8: `docker;id` is not a valid group name (letters, digits, `_`, `.`, `-`; at most 32)"
        );
        assert_eq!(
            build_err("group", "name: docker\nmembers: [alice, '-x']\n"),
            "2:10: `-x` in `members` is not a valid user name"
        );
        assert_eq!(
            build_err("group", "name: docker\nmembers: [alice, 1000]\n"),
            "2:10: `1000` in `members` is not a valid user name"
        );
        assert_eq!(
            build_err("group", "name: docker\nstate: absent\nmembers: []\n"),
            "3:10: a group with `state: absent` takes no `members`"
        );
        assert_eq!(
            build_err("group", "name: docker\ngid: x\n"),
            "2:6: `gid` must be a number from 0 to 4294967294, found `x`"
        );
        assert_eq!(
            build_err("group", "name: root\nstate: absent\n"),
            "1:1: refusing to remove the root group"
        );
        assert_eq!(
            build_err("group", "name: docker\nmember: [a]\n"),
            "2:1: unknown key `member` for `group`"
        );
        let g = group("name: docker\nmembers: alice\n");
        assert_eq!(g.target(), "docker");
        assert!(g.paths().contains(&"/etc/group"));
    }
}
