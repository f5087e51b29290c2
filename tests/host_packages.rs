//! `package` and `patch` on real Debian 12 lab hosts (tests/lab), driven over SSH like a user
//! would: packages installed and removed from the lab's offline repository, a removal that would
//! break the system refused with the host untouched, one package query however many tasks ask,
//! and a real upgrade of the lab's pending updates (all of them, then security fixes only, from
//! a repository labelled as Debian's security archive). Needs root and the lab image.

#[path = "fleet/mod.rs"]
mod fleet;
#[path = "lab/mod.rs"]
mod lab;

use std::time::Instant;

use fleet::{Controller, Run};
use lab::{Host, Kind, Lab};

/// A controller trusting the host, with an inventory naming it `web`, logged in as `user`.
fn controller(h: &Host, user: &str) -> (Controller, String) {
    let c = Controller::new(&[h]);
    let inv = c.inventory(&[("web", h.ip(), user, user != "root")]);
    let inv = inv.to_str().unwrap().to_string();
    (c, inv)
}

fn slice(c: &Controller, args: &[&str], inv: &str) -> Run {
    let mut v = args.to_vec();
    v.extend(["-i", inv]);
    c.slice(&v)
}

/// dpkg's view of a package: `ii 2.1.0-1`, or `absent` when dpkg does not have it.
fn state(h: &Host, pkg: &str) -> String {
    let out = h.ssh(&format!(
        "dpkg-query -W -f='${{db:Status-Abbrev}}${{Version}}' {pkg} 2>/dev/null"
    ));
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if text.is_empty() || text.starts_with("un") {
        "absent".into()
    } else {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// A digest of dpkg's database: any install, removal or upgrade changes it.
fn dpkg_db(h: &Host) -> String {
    h.run("sha256sum /var/lib/dpkg/status")
}

/// What `apt-get upgrade` would do on the host, as `name old → new` (the host's own answer,
/// independent of SLICE).
fn pending(h: &Host) -> Vec<String> {
    h.run("apt-get -s -o Debug::NoLocking=1 --with-new-pkgs upgrade")
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(" [")?;
            let (old, rest) = rest.split_once("] (")?;
            let new = rest.split(' ').next()?;
            Some(format!("{name} {old} → {new}"))
        })
        .collect()
}

/// The report's lines under the task line starting with `head`.
fn details<'a>(run: &'a Run, head: &str) -> Vec<&'a str> {
    run.stdout
        .lines()
        .skip_while(|l| !l.starts_with(head))
        .skip(1)
        .take_while(|l| l.starts_with("          "))
        .map(str::trim)
        .collect()
}

#[test]
fn packages_are_installed_and_removed_then_left_alone() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    // A package the minimal-OS list must take away, as a host might come with it.
    h.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static >/dev/null");
    let busybox = state(&h, "busybox-static");
    assert!(busybox.starts_with("ii "), "{busybox}");
    let (c, inv) = controller(&h, "root");
    c.write(
        "site.yml",
        "name: packages
tasks:
  - name: tools
    package: { name: [tree, curl] }
  - name: no legacy clients
    package: { names: [telnet, rsh-client, busybox-static], state: absent }
",
    );

    let check = slice(&c, &["check", "site.yml"], &inv);
    check.expect(2);
    assert_eq!(
        details(&check, "DRIFT   package[tree, curl]  tools"),
        [
            "package tree: absent → installed",
            "package curl: absent → installed"
        ],
        "{}",
        check.stdout
    );
    assert_eq!(
        details(
            &check,
            "DRIFT   package[telnet, rsh-client, busybox-static]  no legacy clients"
        ),
        [format!(
            "package busybox-static: installed {} → absent",
            busybox.trim_start_matches("ii ")
        )],
        "{}",
        check.stdout
    );
    // Check mode changed nothing.
    assert_eq!(state(&h, "tree"), "absent");
    assert!(state(&h, "busybox-static").starts_with("ii "));

    let json = slice(&c, &["check", "site.yml", "--format", "json"], &inv);
    json.expect(2);
    let doc = json.json();
    let tasks = doc["hosts"][0]["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["id"], "package[tree, curl]");
    assert_eq!(tasks[0]["status"], "drift");
    assert_eq!(tasks[0]["changes"][0]["what"], "package tree");
    assert_eq!(tasks[0]["changes"][0]["before"], "absent");
    assert_eq!(tasks[0]["changes"][0]["after"], "installed");
    assert_eq!(tasks[1]["changes"].as_array().unwrap().len(), 1);

    let t = Instant::now();
    let apply = slice(&c, &["apply", "site.yml"], &inv);
    apply.expect(0);
    eprintln!(
        "apply (install tree, curl; remove busybox-static): {:?}",
        t.elapsed()
    );
    assert_eq!(apply.lines_starting("CHANGED").len(), 2, "{}", apply.stdout);
    assert!(state(&h, "tree").starts_with("ii "));
    assert!(state(&h, "curl").starts_with("ii "));
    assert_eq!(state(&h, "busybox-static"), "absent");
    // Installed without recommends: curl recommends ca-certificates.
    assert_eq!(state(&h, "ca-certificates"), "absent");

    let again = slice(&c, &["check", "site.yml"], &inv);
    again.expect(0);
    assert_eq!(again.lines_starting("PASS").len(), 2, "{}", again.stdout);
    let db = dpkg_db(&h);
    let twice = slice(&c, &["apply", "site.yml"], &inv);
    twice.expect(0);
    assert!(
        twice.lines_starting("CHANGED").is_empty(),
        "{}",
        twice.stdout
    );
    assert_eq!(dpkg_db(&h), db, "a second apply touches no package");

    // Removing it again, curl stays.
    let tree = state(&h, "tree");
    c.write(
        "remove.yml",
        "tasks:\n  - name: no tree\n    package: { name: tree, state: absent }\n",
    );
    let check = slice(&c, &["check", "remove.yml"], &inv);
    check.expect(2);
    assert_eq!(
        details(&check, "DRIFT   package[tree]  no tree"),
        [format!(
            "package tree: installed {} → absent",
            tree.trim_start_matches("ii ")
        )]
    );
    slice(&c, &["apply", "remove.yml"], &inv).expect(0);
    assert_eq!(state(&h, "tree"), "absent");
    assert!(state(&h, "curl").starts_with("ii "));
    slice(&c, &["check", "remove.yml"], &inv).expect(0);
    eprintln!("packages test: {:?}", t0.elapsed());
}

#[test]
fn removing_what_the_system_needs_is_refused_and_the_host_untouched() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    let (c, inv) = controller(&h, "root");
    c.write(
        "site.yml",
        "tasks:
  - name: no coreutils
    package: { name: coreutils, state: absent }
  - name: no dpkg
    package: { name: dpkg, state: absent }
  - name: no tzdata
    package: { name: tzdata, state: absent }
  - name: no tree
    package: { name: tree, state: absent }
",
    );
    let db = dpkg_db(&h);
    let want = [
        (
            "coreutils",
            "refusing to remove coreutils: apt warns that this removes essential packages (coreutils)",
        ),
        (
            "dpkg",
            "refusing to remove dpkg: apt cannot remove it without breaking other packages: dash : Depends: dpkg",
        ),
        // Not essential, so apt would remove it without a word; its priority says otherwise.
        (
            "tzdata",
            "refusing to remove tzdata: tzdata is required by the system (Priority: required)",
        ),
    ];
    for mode in ["check", "apply"] {
        let run = slice(&c, &[mode, "site.yml"], &inv);
        run.expect(4);
        for (pkg, msg) in want {
            let lines = details(&run, &format!("FAIL    package[{pkg}]  no {pkg}"));
            assert!(
                lines.first().is_some_and(|l| l.starts_with(msg)),
                "{mode} {pkg}: {}",
                run.stdout
            );
        }
        // The task with nothing to remove is unaffected by the others' refusal.
        let ok = if mode == "check" {
            "PASS    "
        } else {
            "OK      "
        };
        assert_eq!(
            run.lines_starting(&format!("{ok}package[tree]")).len(),
            1,
            "{}",
            run.stdout
        );
    }
    assert_eq!(dpkg_db(&h), db, "nothing was removed");
    for pkg in ["coreutils", "dpkg", "tzdata"] {
        assert!(state(&h, pkg).starts_with("ii "), "{pkg}");
    }
    let json = slice(&c, &["check", "site.yml", "--format", "json"], &inv);
    let doc = json.json();
    assert_eq!(doc["summary"]["fail"], 3);
    assert_eq!(doc["hosts"][0]["tasks"][0]["status"], "fail");
    assert_eq!(doc["hosts"][0]["tasks"][0]["message"], want[0].1);
    eprintln!("refusal test: {:?}", t0.elapsed());
}

#[test]
fn latest_upgrades_an_outdated_package_only() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    let (c, inv) = controller(&h, "root");
    let before = pending(&h);
    let ssl = before
        .iter()
        .find(|p| p.starts_with("libssl3 "))
        .expect("the lab repository has a newer libssl3")
        .clone();
    c.write(
        "site.yml",
        "tasks:\n  - name: newest openssl\n    package: { name: [libssl3, curl], state: latest }\n",
    );
    let check = slice(&c, &["check", "site.yml"], &inv);
    check.expect(2);
    let (_, versions) = ssl.split_once(' ').unwrap();
    assert_eq!(
        details(&check, "DRIFT   package[libssl3, curl]  newest openssl"),
        [
            format!("package libssl3: {versions} (latest)"),
            "package curl: absent → installed".to_string()
        ],
        "{}",
        check.stdout
    );
    slice(&c, &["apply", "site.yml"], &inv).expect(0);
    let new = ssl.rsplit(' ').next().unwrap();
    assert_eq!(state(&h, "libssl3"), format!("ii {new}"));
    // Only libssl3 was upgraded: every other pending update still is.
    let after = pending(&h);
    assert_eq!(after.len(), before.len() - 1, "{after:?}");
    slice(&c, &["check", "site.yml"], &inv).expect(0);
    eprintln!("latest test: {:?}", t0.elapsed());
}

#[test]
fn every_package_task_of_a_host_shares_one_query() {
    let h = Lab::any_host(Kind::A).unwrap();
    // Wrappers earlier in PATH log every call of the query tools, then run the real ones.
    h.run(
        r#"for t in dpkg-query apt-get; do
cat > /usr/local/bin/$t <<EOF
#!/bin/sh
printf '%s\n' "\$*" >> /tmp/$t.log
exec /usr/bin/$t "\$@"
EOF
chmod 755 /usr/local/bin/$t
done"#,
    );
    let (c, inv) = controller(&h, "root");
    c.write(
        "site.yml",
        "tasks:
  - { name: a, package: { name: tree } }
  - { name: b, package: { name: curl } }
  - { name: c, package: { name: [libssl3, libexpat1], state: latest } }
  - { name: d, package: { name: zlib1g, state: latest } }
  - { name: e, package: { name: [telnet, tree], state: absent } }
  - { name: f, patch: { security_only: false } }
  - { name: g, patch: {} }
",
    );
    let check = slice(&c, &["check", "site.yml"], &inv);
    check.expect(2);
    // tree and curl to install, libssl3, libexpat1 and zlib1g outdated, updates pending; no
    // security update in the lab, and neither telnet nor tree to remove.
    assert_eq!(check.lines_starting("DRIFT").len(), 5, "{}", check.stdout);
    assert_eq!(check.lines_starting("PASS").len(), 2, "{}", check.stdout);
    let dpkg_log = h.run("cat /tmp/dpkg-query.log");
    let apt_log = h.run("cat /tmp/apt-get.log");
    eprintln!("dpkg-query calls:\n{dpkg_log}apt-get calls:\n{apt_log}");
    // The installed list once for five package tasks; the upgrade simulation once for two
    // `latest` tasks and two patch tasks.
    assert_eq!(
        dpkg_log
            .lines()
            .filter(|l| l.contains("${Package}"))
            .count(),
        1
    );
    assert_eq!(
        apt_log
            .lines()
            .filter(|l| l.ends_with("--with-new-pkgs upgrade"))
            .count(),
        1
    );
    // Only the removal task simulates a removal, for the names that are installed (none here).
    assert!(!apt_log.contains("remove"), "{apt_log}");
}

#[test]
fn patch_installs_every_pending_update() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    // Through sudo, as a fleet is usually patched.
    let (c, inv) = controller(&h, "lab");
    let want = pending(&h);
    assert!(!want.is_empty(), "the lab image has pending updates");
    let reboot_before = h.ssh("test -e /var/run/reboot-required").status.success();

    // The lab's repository is flat: no update comes from a security archive.
    c.write(
        "security.yml",
        "tasks:\n  - name: security fixes\n    patch: {}\n",
    );
    let check = slice(&c, &["check", "security.yml"], &inv);
    check.expect(0);
    assert_eq!(
        check
            .lines_starting("PASS    patch[security updates]  security fixes")
            .len(),
        1,
        "{}",
        check.stdout
    );

    c.write(
        "site.yml",
        "tasks:\n  - name: patch everything\n    patch: { security_only: false }\n",
    );
    let t = Instant::now();
    let check = slice(&c, &["check", "site.yml"], &inv);
    check.expect(2);
    eprintln!("patch check ({} pending): {:?}", want.len(), t.elapsed());
    let lines = details(&check, "DRIFT   patch[all updates]  patch everything");
    assert_eq!(
        lines,
        [
            format!("pending updates: {} pending → 0 pending", want.len()),
            format!("upgrade: {}", want.join(", ")),
            format!(
                "reboot required now: {}",
                if reboot_before { "yes" } else { "no" }
            ),
        ],
        "{}",
        check.stdout
    );
    let doc = slice(&c, &["check", "site.yml", "--format", "json"], &inv).json();
    let change = &doc["hosts"][0]["tasks"][0]["changes"][0];
    assert_eq!(change["what"], "pending updates");
    assert_eq!(change["before"], format!("{} pending", want.len()));

    let t = Instant::now();
    let apply = slice(&c, &["apply", "site.yml"], &inv);
    apply.expect(0);
    eprintln!("patch apply ({} updates): {:?}", want.len(), t.elapsed());
    assert_eq!(
        apply.lines_starting("CHANGED patch[all updates]").len(),
        1,
        "{}",
        apply.stdout
    );
    assert_eq!(pending(&h), Vec::<String>::new());
    for p in &want {
        let (name, rest) = p.split_once(' ').unwrap();
        let new = rest.rsplit(' ').next().unwrap();
        assert_eq!(state(&h, name), format!("ii {new}"), "{p}");
    }
    // No package of the lab's updates asks for a reboot, and SLICE says so after applying.
    assert!(!h.ssh("test -e /var/run/reboot-required").status.success());
    assert!(
        apply.stdout.contains("\n          reboot required: no\n"),
        "{}",
        apply.stdout
    );

    slice(&c, &["check", "site.yml"], &inv).expect(0);
    let db = dpkg_db(&h);
    let again = slice(&c, &["apply", "site.yml"], &inv);
    again.expect(0);
    assert!(
        again.lines_starting("CHANGED").is_empty(),
        "{}",
        again.stdout
    );
    assert_eq!(dpkg_db(&h), db);
    eprintln!("patch test: {:?}", t0.elapsed());
}

/// Makes a second repository in the host, labelled as Debian's security archive, holding the
/// newest versions of `pkgs` from the lab repository, and updates apt's lists.
const SECURITY_REPO: &str = r#"set -e
mkdir -p /var/local/sec-repo
cd /var/local/sec-repo
python3 - "$@" <<'PY'
import subprocess, sys
want = set(sys.argv[1:])
best = {}
for s in open('/srv/lab-repo/Packages').read().strip().split('\n\n'):
    f = dict(l.split(': ', 1) for l in s.splitlines() if ': ' in l and not l.startswith(' '))
    p = f.get('Package')
    if p in want and (p not in best or subprocess.run(['dpkg', '--compare-versions', f['Version'], 'gt', best[p][0]]).returncode == 0):
        best[p] = (f['Version'], s, f['Filename'])
with open('Packages', 'w') as out:
    for v, s, fn in best.values():
        out.write(s + '\n\n')
        name = fn[2:] if fn.startswith('./') else fn
        subprocess.run(['ln', '-sf', '/srv/lab-repo/' + name, name], check=True)
PY
{
  printf 'Origin: Debian\nLabel: Debian-Security\nSuite: stable-security\nCodename: bookworm-security\nVersion: 12\nDate: %s\nSHA256:\n' "$(LC_ALL=C date -u -R)"
  printf ' %s %s Packages\n' "$(sha256sum Packages | cut -d' ' -f1)" "$(wc -c < Packages)"
} > Release
echo 'deb [trusted=yes] file:/var/local/sec-repo ./' > /etc/apt/sources.list.d/security.list
apt-get update -q >/dev/null
"#;

#[test]
fn patch_security_only_installs_only_security_updates() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    let mut sh = h.ssh_command("root");
    sh.args(["bash", "-s", "libssl3", "libexpat1", "tzdata"])
        .stdin(std::process::Stdio::piped());
    let mut child = sh.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(SECURITY_REPO.as_bytes())
            .unwrap();
    }
    assert!(
        child.wait().unwrap().success(),
        "security repository set up"
    );
    // An automatically installed library stays so after its security update.
    h.run("apt-mark auto libexpat1 >/dev/null");
    let all = pending(&h);
    let security: Vec<&String> = all
        .iter()
        .filter(|p| {
            ["libssl3 ", "libexpat1 ", "tzdata "]
                .iter()
                .any(|n| p.starts_with(n))
        })
        .collect();
    assert_eq!(security.len(), 3, "{all:?}");

    let (c, inv) = controller(&h, "root");
    c.write(
        "site.yml",
        "tasks:\n  - name: security fixes\n    patch: {}\n",
    );
    let check = slice(&c, &["check", "site.yml"], &inv);
    check.expect(2);
    let lines = details(&check, "DRIFT   patch[security updates]  security fixes");
    assert_eq!(lines[0], "pending security updates: 3 pending → 0 pending");
    assert_eq!(
        lines[1],
        format!(
            "upgrade: {}",
            security
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    );
    let apply = slice(&c, &["apply", "site.yml"], &inv);
    apply.expect(0);
    assert_eq!(apply.lines_starting("CHANGED").len(), 1, "{}", apply.stdout);
    // The three security updates are in; every other update is still pending.
    let left = pending(&h);
    assert_eq!(left.len(), all.len() - 3, "{left:?}");
    assert!(!left.iter().any(|p| security.contains(&p)), "{left:?}");
    assert_eq!(h.run("apt-mark showauto libexpat1 libssl3"), "libexpat1\n");
    slice(&c, &["check", "site.yml"], &inv).expect(0);
    eprintln!("security patch test: {:?}", t0.elapsed());
}
