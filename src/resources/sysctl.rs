//! `sysctl`: one kernel parameter, kept as the single active `name = value` line for its key in a
//! sysctl.d file, and set in the running kernel when the target is a live system.

use std::path::Path;

use crate::error::Result;
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::{at, content_change, Lines};
use crate::resources::{Accounts, Meta};
use crate::transport::{Attrs, FileType, Probe, Stat, Transport};

const DEFAULT_FILE: &str = "/etc/sysctl.d/90-slice.conf";

/// Parameters whose value 0 turns off the IP forwarding Docker's container networking needs, as
/// paths under /proc/sys.
const FORWARDING: &[&str] = &[
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv6/conf/all/forwarding",
];

pub struct Sysctl {
    /// As the task wrote it: `net.ipv4.ip_forward`.
    name: String,
    /// The path under /proc/sys: `net/ipv4/ip_forward`. Keys in files are compared by it.
    key: String,
    /// Whitespace runs collapsed, as values are compared.
    value: String,
    file: String,
    /// Also set the running kernel's value (only ever true on a live target).
    live: bool,
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan<'o> {
    /// `None`: the file does not exist and will be created.
    stat: Option<&'o Stat>,
    old: &'o [u8],
    new: Vec<u8>,
    /// The running value, when it differs from the wanted one.
    live: Option<String>,
}

impl Sysctl {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let name = p.str("name")?;
        let raw = p.str("value")?;
        let value = collapse(&raw);
        let file = p
            .opt_path("file")?
            .unwrap_or_else(|| DEFAULT_FILE.to_string());
        let live = p.opt_bool("live")?.unwrap_or(true) && ctx.live;
        let allow_breaking = p.opt_bool("allow_breaking_docker")?.unwrap_or(false);
        // Unknown keys first: a misspelt `allow_breaking_docker` should be named as such.
        p.finish()?;

        let key = proc_path(&name);
        let bad_name = name.is_empty()
            || name.starts_with(['.', '/', '-'])
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
            || key.split('/').any(|part| matches!(part, "" | "." | ".."));
        if bad_name {
            return Err(at(
                p,
                "name",
                format!("`{name}` is not a sysctl name such as net.ipv4.ip_forward"),
            ));
        }
        // Tabs separate multiple values; any other control character would break the file.
        if value.is_empty() || raw.contains(|c: char| c.is_control() && c != '\t') {
            return Err(at(
                p,
                "value",
                "`value` must be one line of text, not empty",
            ));
        }
        if !allow_breaking && value == "0" && FORWARDING.contains(&key.as_str()) {
            return Err(at(p, "value", format!("setting {name} to 0 turns off IP forwarding, which Docker needs for container networking"))
                .with_help("if this host really must not forward packets, add `allow_breaking_docker: true`"));
        }
        Ok(Box::new(Sysctl {
            name,
            key,
            value,
            file,
            live,
        }))
    }

    fn parent(&self) -> String {
        Path::new(&self.file)
            .parent()
            .map_or_else(|| "/".to_string(), |p| p.to_string_lossy().into_owned())
    }

    fn line(&self) -> String {
        format!("{} = {}", self.name, self.value)
    }

    /// The file with exactly one active line for the key: the last one kept (rewritten if its
    /// value differs), the others removed; or a new line at the end.
    fn wanted(&self, old: &[u8]) -> Vec<u8> {
        let mut lines = Lines::parse(old);
        let matches: Vec<usize> = (0..lines.len())
            .filter(|&i| entry(lines.body(i)).is_some_and(|(k, _)| k == self.key))
            .collect();
        match matches.split_last() {
            None => lines.insert(lines.len(), self.line().as_bytes()),
            Some((&last, others)) => {
                if entry(lines.body(last)).is_some_and(|(_, v)| v != self.value) {
                    lines.replace(last, self.line().as_bytes());
                }
                lines.remove_at(others);
            }
        }
        lines.join()
    }

    fn plan<'o>(&self, obs: &'o Observed) -> Result<Plan<'o>, String> {
        let stat = obs.stat(0)?;
        match (stat, obs.stat(2)?) {
            (Some(s), _) if s.kind != FileType::File => {
                return Err(format!(
                    "{} is {}, not a regular file; leaving it alone",
                    self.file,
                    s.kind.describe()
                ));
            }
            // A missing directory may be created by an earlier task (ordered first by the
            // graph); if it is still missing when applying, the write says so.
            (None, Some(d)) if matches!(d.kind, FileType::File | FileType::Other) => {
                return Err(format!(
                    "cannot create {}: {} is {}, not a directory",
                    self.file,
                    self.parent(),
                    d.kind.describe()
                ));
            }
            _ => {}
        }
        let old = match stat {
            Some(_) => obs.read(1)?.unwrap_or_default(),
            None => &[],
        };
        let live = if self.live {
            let now = obs
                .read(3)?
                .ok_or_else(|| format!("kernel has no sysctl {}", self.name))?;
            Some(collapse(&String::from_utf8_lossy(now))).filter(|v| *v != self.value)
        } else {
            None
        };
        Ok(Plan {
            stat,
            old,
            new: self.wanted(old),
            live,
        })
    }
}

/// The /proc/sys path of a name. As in sysctl.d(5): when the first separator is a dot, dots and
/// slashes swap (`net.ipv4.conf.eth0/10.forwarding`); when it is a slash, the name is the path.
fn proc_path(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name[i..].starts_with('.') => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

/// The /proc/sys path and value of an active `key = value` line; `None` for comments and others.
fn entry(line: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_start();
    if text.starts_with(['#', ';']) {
        return None;
    }
    let (key, value) = text.split_once('=')?;
    // A leading `-` only tells systemd-sysctl to ignore a failure; the key is the same.
    let key = key.trim();
    let key = key.strip_prefix('-').unwrap_or(key);
    Some((proc_path(key), collapse(value)))
}

/// Whitespace runs as single spaces, trimmed: the kernel prints multiple values tab-separated.
fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Resource for Sysctl {
    fn target(&self) -> String {
        self.name.clone()
    }

    fn paths(&self) -> Vec<&str> {
        vec![&self.file]
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v = vec![
            Probe::Stat(self.file.clone()),
            Probe::Read(self.file.clone()),
            Probe::Stat(self.parent()),
        ];
        if self.live {
            v.push(Probe::Read(format!("/proc/sys/{}", self.key)));
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
        if plan.new != plan.old {
            out.push(content_change(&self.file, plan.old, &plan.new));
        }
        if let Some(now) = plan.live {
            out.push(Change::new(
                "live value",
                Some(now),
                Some(self.value.clone()),
            ));
        }
        Ok(out)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let plan = self.plan(obs)?;
        // The running kernel first: a value it refuses is then never written for the next boot.
        if plan.live.is_some() {
            let arg = format!("{}={}", self.name, self.value);
            let quoted =
                shlex::try_quote(&arg).map_err(|e| format!("cannot quote `{arg}`: {e}"))?;
            let cmd = format!("sysctl -w {quoted}");
            let out = t
                .run(&cmd)
                .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
            if !out.success() {
                return Err(format!(
                    "`{cmd}` exited with status {}: {}",
                    out.status,
                    out.message()
                ));
            }
        }
        if plan.stat.is_none() || plan.new != plan.old {
            let attrs = Attrs {
                mode: plan.stat.is_none().then_some(0o644),
                ..Attrs::default()
            };
            t.write(&self.file, &plan.new, &attrs)
                .map_err(|e| format!("{}: {e}", self.file))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::resource::Change;
    use crate::resources::testing::{build, build_err, content_diff, converge, diff, whats};
    use crate::transport::Local;

    const CONF: &str = "etc/sysctl.d/90-slice.conf";

    fn root(content: Option<&str>) -> (tempfile::TempDir, Local) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/sysctl.d")).unwrap();
        if let Some(c) = content {
            fs::write(dir.path().join(CONF), c).unwrap();
        }
        let t = Local::with_root(dir.path()).unwrap();
        (dir, t)
    }

    /// Builds for an offline root (no live value), converges, and returns the changes and file.
    fn run(yaml: &str, content: Option<&str>) -> (Vec<Change>, String) {
        let (dir, t) = root(content);
        let res = build("sysctl", yaml, false).unwrap();
        let changes = converge(res.as_ref(), &t, dir.path());
        (changes, fs::read_to_string(dir.path().join(CONF)).unwrap())
    }

    #[test]
    fn a_missing_file_is_created_with_the_line() {
        let (changes, after) = run("name: net.ipv4.conf.all.rp_filter\nvalue: 1\n", None);
        assert_eq!(after, "net.ipv4.conf.all.rp_filter = 1\n");
        assert_eq!(
            changes,
            [
                Change::new("state", Some("absent".into()), Some("file".into())),
                Change::new("mode", None, Some("0644".into())),
                Change::new("content", None, None).with_diff(Some(
                    "--- /etc/sysctl.d/90-slice.conf (now)\n+++ /etc/sysctl.d/90-slice.conf (wanted)\n@@ -0,0 +1 @@\n+net.ipv4.conf.all.rp_filter = 1\n"
                        .into()
                )),
            ]
        );
    }

    #[test]
    fn duplicates_collapse_to_the_last_line() {
        let before = "# hardening\nnet.ipv4.conf.all.rp_filter=0\nkernel.kptr_restrict = 2\n; old\n  net/ipv4/conf/all/rp_filter = 2\n# net.ipv4.conf.all.rp_filter = 0\n";
        let (changes, after) = run(
            "name: net.ipv4.conf.all.rp_filter\nvalue: 1\n",
            Some(before),
        );
        assert_eq!(
            after,
            "# hardening\nkernel.kptr_restrict = 2\n; old\nnet.ipv4.conf.all.rp_filter = 1\n# net.ipv4.conf.all.rp_filter = 0\n"
        );
        assert_eq!(whats(&changes), ["content"]);
    }

    #[test]
    fn a_right_value_in_another_layout_is_kept() {
        let (_dir, t) = root(Some(
            "-net/ipv4/tcp_rmem=4096\t87380   6291456\nfs.protected_symlinks = 1\n",
        ));
        let res = build(
            "sysctl",
            "name: net.ipv4.tcp_rmem\nvalue: 4096 87380 6291456\n",
            false,
        )
        .unwrap();
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
        // Once a duplicate appears, only the last line stays.
        let (_, after) = run(
            "name: fs.protected_symlinks\nvalue: 1\n",
            Some("fs/protected_symlinks=0\nfs.protected_symlinks=1"),
        );
        assert_eq!(after, "fs.protected_symlinks=1");
    }

    #[test]
    fn a_new_key_is_appended_after_an_unterminated_line() {
        let (changes, after) = run(
            "name: kernel/kptr_restrict\nvalue: 2\n",
            Some("vm.swappiness = 10"),
        );
        assert_eq!(after, "vm.swappiness = 10\nkernel/kptr_restrict = 2\n");
        assert_eq!(
            content_diff(&changes),
            "--- /etc/sysctl.d/90-slice.conf (now)\n+++ /etc/sysctl.d/90-slice.conf (wanted)\n@@ -1 +1,2 @@\n-vm.swappiness = 10\n\\ No newline at end of file\n+vm.swappiness = 10\n+kernel/kptr_restrict = 2\n"
        );
    }

    #[test]
    fn slash_and_dot_names_are_the_same_key() {
        assert_eq!(
            super::proc_path("net.ipv4.ip_forward"),
            "net/ipv4/ip_forward"
        );
        assert_eq!(
            super::proc_path("net/ipv4/ip_forward"),
            "net/ipv4/ip_forward"
        );
        assert_eq!(
            super::proc_path("net.ipv4.conf.eth0/10.forwarding"),
            "net/ipv4/conf/eth0.10/forwarding"
        );
        assert_eq!(
            super::proc_path("net/ipv4/conf/eth0.10/forwarding"),
            "net/ipv4/conf/eth0.10/forwarding"
        );
        let (_, after) = run(
            "name: net/ipv4/conf/eth0.10/forwarding\nvalue: 1\n",
            Some("net.ipv4.conf.eth0/10.forwarding = 0\n"),
        );
        assert_eq!(after, "net/ipv4/conf/eth0.10/forwarding = 1\n");
    }

    #[test]
    fn a_missing_directory_is_drift_until_apply_finds_it_still_missing() {
        let dir = tempfile::tempdir().unwrap();
        let t = Local::with_root(dir.path()).unwrap();
        let res = build("sysctl", "name: vm.swappiness\nvalue: 10\n", false).unwrap();
        // An earlier task may create /etc/sysctl.d, so check mode reports what would be written.
        let changes = diff(res.as_ref(), &t).unwrap();
        assert_eq!(whats(&changes), ["state", "mode", "content"]);
        let probes = res.probes();
        let answers = crate::transport::Transport::observe(&t, &probes);
        let obs = crate::resource::Observed {
            answers: &answers,
            probes: &probes,
        };
        let err = res.apply(&obs, &t).unwrap_err();
        assert!(err.starts_with("/etc/sysctl.d/90-slice.conf: "), "{err}");
    }

    #[test]
    fn forwarding_off_is_refused_unless_allowed() {
        assert_eq!(
            build_err("sysctl", "name: net.ipv4.ip_forward\nvalue: 0\n"),
            "2:8: setting net.ipv4.ip_forward to 0 turns off IP forwarding, which Docker needs for container networking"
        );
        assert_eq!(
            build_err("sysctl", "name: net/ipv6/conf/all/forwarding\nvalue: '0'\n"),
            "2:9: setting net/ipv6/conf/all/forwarding to 0 turns off IP forwarding, which Docker needs for container networking"
        );
        let (_, after) = run(
            "name: net.ipv4.ip_forward\nvalue: 0\nallow_breaking_docker: true\n",
            None,
        );
        assert_eq!(after, "net.ipv4.ip_forward = 0\n");
        assert!(build("sysctl", "name: net.ipv4.ip_forward\nvalue: 1\n", false).is_ok());
    }

    #[test]
    fn build_errors_point_at_the_parameter() {
        for bad in [
            "../../etc/shadow",
            ".net.x",
            "net..x",
            "net.ipv4.*.rp_filter",
            "net x",
            "-net.x",
            "net.x.",
        ] {
            let e = build_err("sysctl", &format!("name: '{bad}'\nvalue: 1\n"));
            assert_eq!(
                e,
                format!("1:8: `{bad}` is not a sysctl name such as net.ipv4.ip_forward")
            );
        }
        assert_eq!(
            build_err("sysctl", "name: vm.swappiness\nvalue: ''\n"),
            "2:8: `value` must be one line of text, not empty"
        );
        assert_eq!(
            build_err("sysctl", "name: vm.swappiness\nvalue: \"1\\n2\"\n"),
            "2:9: `value` must be one line of text, not empty"
        );
        assert_eq!(
            build_err("sysctl", "name: vm.swappiness\n"),
            "1:1: `sysctl` needs `value`"
        );
        assert_eq!(
            build_err("sysctl", "name: vm.swappiness\nvalue: 1\nfile: x.conf\n"),
            "3:7: `file` must be an absolute path, found `x.conf`"
        );
        assert_eq!(
            build_err(
                "sysctl",
                "name: net.ipv4.ip_forward\nvalue: 0\nallow_breaking_dockr: true\n"
            ),
            "3:1: unknown key `allow_breaking_dockr` for `sysctl`"
        );
    }

    #[test]
    fn an_offline_root_has_no_live_value() {
        // `live: true` is the default, but a root directory has no running kernel to ask.
        let res = build(
            "sysctl",
            "name: vm.swappiness\nvalue: 10\nfile: /etc/sysctl.conf\n",
            false,
        )
        .unwrap();
        assert!(!res
            .probes()
            .iter()
            .any(|p| matches!(p, crate::transport::Probe::Read(p) if p.starts_with("/proc"))));
        assert_eq!(res.target(), "vm.swappiness");
        assert_eq!(res.paths(), ["/etc/sysctl.conf"]);
    }

    #[test]
    fn the_live_value_is_compared_after_collapsing_whitespace() {
        // A fake /proc/sys under a root stands in for the kernel; only diff runs, never apply.
        let (dir, t) = root(Some(
            "net.ipv4.ip_forward = 1\nnet.ipv4.tcp_rmem = 4096 87380 6291456\n",
        ));
        fs::create_dir_all(dir.path().join("proc/sys/net/ipv4")).unwrap();
        fs::write(dir.path().join("proc/sys/net/ipv4/ip_forward"), "0\n").unwrap();
        fs::write(
            dir.path().join("proc/sys/net/ipv4/tcp_rmem"),
            "4096\t87380\t6291456\n",
        )
        .unwrap();

        let res = build("sysctl", "name: net.ipv4.ip_forward\nvalue: 1\n", true).unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [Change::new(
                "live value",
                Some("0".into()),
                Some("1".into())
            )]
        );
        let res = build(
            "sysctl",
            "name: net.ipv4.tcp_rmem\nvalue: 4096 87380 6291456\n",
            true,
        )
        .unwrap();
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
        let res = build(
            "sysctl",
            "name: net.ipv4.tcp_rmem\nvalue: 4096 87380 6291456\nlive: false\n",
            true,
        )
        .unwrap();
        assert_eq!(
            res.probes().len(),
            3,
            "`live: false` does not read /proc/sys"
        );
        let res = build("sysctl", "name: net.ipv4.no_such_thing\nvalue: 1\n", true).unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap_err(),
            "kernel has no sysctl net.ipv4.no_such_thing"
        );
    }
}
