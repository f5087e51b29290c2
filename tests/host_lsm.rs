//! `apparmor` and `selinux` over SSH on lab hosts (tests/lab), covering what the lab can show:
//! its kernel has neither AppArmor nor SELinux. So: the honest "no AppArmor / no SELinux in this
//! kernel" reports, a profile that is never installed without a real `apparmor_parser -Q` parse,
//! and /etc/selinux/config edits. Loading and booleans are covered by the unit tests on recorded
//! outputs (src/resources/{apparmor,selinux}.rs) and need the Vagrant lab for real.

#[path = "fleet/mod.rs"]
mod fleet;
#[path = "lab/mod.rs"]
mod lab;

use std::path::{Path, PathBuf};

use fleet::Controller;
use lab::{Host, Kind, Lab};
use serde_json::Value;

/// A playbook of one task.
fn playbook(task: &str) -> String {
    format!("name: lsm\ntasks:\n  - name: t\n{task}")
}

/// A controller for one host, logged in as `user` (with sudo unless root).
fn controller(h: &Host, user: &str) -> (Controller, PathBuf) {
    let c = Controller::new(&[h]);
    let inv = c.inventory(&[("h", h.ip(), user, user != "root")]);
    (c, inv)
}

/// Runs `slice MODE site.yml` with a JSON report; the exit code and the one task's report.
fn run(c: &Controller, inv: &Path, mode: &str, book: &str) -> (i32, Value) {
    c.write("site.yml", book);
    let inv = inv.to_str().unwrap();
    let r = c.slice(&[mode, "site.yml", "-i", inv, "--format", "json"]);
    let doc = r.json();
    assert_eq!(doc["hosts"][0]["error"], Value::Null, "{doc}");
    (r.code, doc["hosts"][0]["tasks"][0].clone())
}

fn whats(task: &Value) -> Vec<String> {
    task["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["what"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn change<'t>(task: &'t Value, what: &str) -> &'t Value {
    task["changes"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["what"] == what))
        .unwrap_or_else(|| panic!("no change `{what}` in {task}"))
}

/// A profile with a rule of each common kind, and the abstractions it includes: the parser
/// must find /etc/apparmor.d/tunables and abstractions on the host.
const PROFILE: &str = "#include <tunables/global>

profile slice-test flags=(attach_disconnected,mediate_deleted) {
  #include <abstractions/base>
  network inet tcp,
  capability net_bind_service,
  file,
  deny mount,
  deny /proc/sys/kernel/** w,
}
";

fn apparmor_task(extra: &str, content: &str) -> String {
    let indented: String = content.lines().map(|l| format!("        {l}\n")).collect();
    playbook(&format!(
        "    apparmor:\n      profile: slice-test\n{extra}      content: |\n{indented}"
    ))
}

/// The host's AppArmor userspace, from the lab's offline repository.
fn install_apparmor(h: &Host) {
    h.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q apparmor");
    h.run("command -v apparmor_parser");
}

/// No apparmor package on the host: check mode says the kernel has no AppArmor; apply never
/// installs a profile it could not parse, whether /etc/apparmor.d is missing or the parser is.
#[test]
fn apparmor_without_a_parser_is_refused_and_never_installed() {
    let h = Lab::any_host(Kind::A).unwrap();
    let (c, inv) = controller(&h, "root");
    let book = apparmor_task("", PROFILE);

    let (code, task) = run(&c, &inv, "check", &book);
    assert_eq!(code, 2, "{task}");
    assert_eq!(task["status"], "drift");
    assert_eq!(whats(&task), ["state", "mode", "content", "loaded"]);
    let loaded = change(&task, "loaded");
    assert_eq!(loaded["before"], "no: the running kernel has no AppArmor");
    assert_eq!(loaded["after"], "enforce");

    let (code, task) = run(&c, &inv, "apply", &book);
    assert_eq!(code, 4, "{task}");
    assert_eq!(task["status"], "fail");
    assert_eq!(
        task["message"],
        "/etc/apparmor.d does not exist (is the apparmor package installed?), so the new profile \
         cannot be checked; /etc/apparmor.d/slice-test is not installed unchecked"
    );

    // The folder without the parser (a half-removed apparmor): refused all the same.
    h.run("mkdir /etc/apparmor.d");
    let (code, task) = run(&c, &inv, "apply", &book);
    assert_eq!(code, 4, "{task}");
    assert_eq!(
        task["message"],
        "apparmor_parser is not installed on the target (package apparmor), so the new profile \
         cannot be checked; /etc/apparmor.d/slice-test is left as it was"
    );
    assert_eq!(
        h.run("ls -A /etc/apparmor.d | wc -l").trim(),
        "0",
        "nothing installed, no file left over from the check"
    );
}

/// The real parser on a host whose kernel has no AppArmor: good profiles are installed after
/// `apparmor_parser -Q` and reported as enforced by nothing; bad ones keep the old file.
/// Through sudo, as a fleet normally logs in.
#[test]
fn apparmor_profiles_are_parsed_for_real_before_they_are_installed() {
    let h = Lab::any_host(Kind::A).unwrap();
    install_apparmor(&h);
    let (c, inv) = controller(&h, "lab");
    let book = apparmor_task("", PROFILE);

    let (code, task) = run(&c, &inv, "apply", &book);
    assert_eq!(code, 4, "{task}");
    assert_eq!(
        task["message"],
        "the running kernel has no AppArmor: the profile file /etc/apparmor.d/slice-test is in place \
         but nothing enforces it (skip such hosts with `when: facts.apparmor.enabled`, or set \
         `require_loaded: false` to manage only the file)"
    );
    assert_eq!(h.run("cat /etc/apparmor.d/slice-test"), PROFILE);
    assert_eq!(
        h.run("stat -c '%a %U' /etc/apparmor.d/slice-test"),
        "644 root\n"
    );
    // Still not enforced by anything: never in sync.
    let (code, task) = run(&c, &inv, "check", &book);
    assert_eq!((code, whats(&task)), (2, vec!["loaded".to_string()]));

    // A syntax error, and an include that does not exist: the parser's word, the old file kept.
    let bad = PROFILE.replace("deny mount,", "deny mount,\n  this is not a rule,");
    let (code, task) = run(&c, &inv, "apply", &apparmor_task("", &bad));
    assert_eq!(code, 4, "{task}");
    let msg = task["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "the new profile does not parse; /etc/apparmor.d/slice-test is left as it was: \
             AppArmor parser error for /etc/apparmor.d/slice-test in profile /etc/apparmor.d/slice-test at line 9: syntax error"
        ),
        "{msg}"
    );
    let missing = PROFILE.replace("<abstractions/base>", "<abstractions/no-such-thing>");
    let (_, task) = run(&c, &inv, "apply", &apparmor_task("", &missing));
    let msg = task["message"].as_str().unwrap();
    assert!(
        msg.ends_with("Could not open 'abstractions/no-such-thing'"),
        "{msg}"
    );
    assert_eq!(h.run("cat /etc/apparmor.d/slice-test"), PROFILE);
    assert_eq!(
        h.run("ls -A /etc/apparmor.d | grep -c slice || true")
            .trim(),
        "1",
        "no file left over from the checks"
    );

    // Opting out of the kernel: only the files, complain mode kept by the parser's marker.
    let book = apparmor_task(
        "      mode: complain\n      require_loaded: false\n",
        PROFILE,
    );
    let (code, task) = run(&c, &inv, "apply", &book);
    assert_eq!(
        (code, task["status"].as_str()),
        (0, Some("changed")),
        "{task}"
    );
    assert_eq!(whats(&task), ["force-complain"]);
    h.run("test -f /etc/apparmor.d/force-complain/slice-test");
    let (code, _) = run(&c, &inv, "check", &book);
    assert_eq!(code, 0);
    // The parser itself takes the marker: it would load the profile in complain mode.
    let out = h.run("apparmor_parser -Q -K /etc/apparmor.d/slice-test 2>&1");
    assert!(out.contains("forcing complain mode"), "{out}");
}

/// /etc/selinux/config on a Debian host whose kernel has no SELinux: a policy that is not
/// installed is never selected; once it is, the config is written, a relabel is asked for, and
/// the task says plainly that a reboot is needed — on every run, since SLICE never reboots.
#[test]
fn selinux_config_is_edited_honestly_without_selinux_in_the_kernel() {
    let h = Lab::any_host(Kind::A).unwrap();
    let (c, inv) = controller(&h, "lab");
    // libsemanage-common is in the image: /etc/selinux exists, with no config and no policy.
    assert_eq!(h.run("ls /etc/selinux"), "semanage.conf\n");
    let book = playbook(
        "    selinux:\n      state: permissive\n      policy: default\n      booleans: { container_manage_cgroup: true }\n",
    );

    let (code, task) = run(&c, &inv, "check", &book);
    assert_eq!(code, 2, "{task}");
    assert_eq!(
        whats(&task),
        [
            "policy",
            "state",
            "mode",
            "content",
            "autorelabel",
            "running",
            "booleans"
        ]
    );
    assert_eq!(
        change(&task, "policy")["before"],
        "not installed: /etc/selinux/default does not exist"
    );
    assert_eq!(
        change(&task, "running")["before"],
        "disabled: the running kernel has no SELinux"
    );
    let (code, task) = run(&c, &inv, "apply", &book);
    assert_eq!(code, 4);
    assert_eq!(
        task["message"],
        "the SELinux policy `default` is not installed (/etc/selinux/default does not exist), so nothing \
         is changed and /etc/selinux/config is left as it is"
    );
    h.run("test ! -e /etc/selinux/config && test ! -e /.autorelabel");

    // What selinux-policy-default would install, as far as SLICE looks.
    h.run("mkdir -p /etc/selinux/default/policy");
    let (code, task) = run(&c, &inv, "apply", &book);
    assert_eq!(code, 4, "{task}");
    assert_eq!(
        task["message"],
        "reboot required: the running kernel has no SELinux; /etc/selinux/config says SELINUX=permissive, \
         which takes effect only after a reboot into a kernel with SELinux enabled (SLICE never reboots); \
         the running kernel has no SELinux, so its booleans cannot be set"
    );
    assert_eq!(
        h.run("cat /etc/selinux/config"),
        "SELINUX=permissive\nSELINUXTYPE=default\n"
    );
    assert_eq!(
        h.run("stat -c '%a %U %s' /etc/selinux/config /.autorelabel"),
        "644 root 39\n644 root 0\n"
    );
    let (code, task) = run(&c, &inv, "check", &book);
    assert_eq!(code, 2);
    assert_eq!(
        whats(&task),
        ["running", "booleans"],
        "never reported in sync"
    );
}

/// An existing config keeps every other line; `disabled` is what this kernel already is, so
/// that converges with no reboot.
#[test]
fn selinux_disabled_edits_one_line_and_converges() {
    let h = Lab::any_host(Kind::A).unwrap();
    let (c, inv) = controller(&h, "root");
    let before = "# This file controls the state of SELinux on the system.\n\
                  # SELINUX= can take one of these three values:\n\
                  SELINUX=enforcing\n\
                  # SELINUXTYPE= can take one of these three values:\n\
                  SELINUXTYPE=targeted\n\
                  SELINUX=permissive\n";
    let mut child = h
        .ssh_command("root")
        .arg("cat > /etc/selinux/config")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(before.as_bytes())
            .unwrap();
    }
    assert!(child.wait().unwrap().success());
    let book = playbook("    selinux: { state: disabled }\n");

    let (code, task) = run(&c, &inv, "check", &book);
    assert_eq!((code, whats(&task)), (2, vec!["content".to_string()]));
    let diff = change(&task, "content")["diff"].as_str().unwrap();
    assert!(
        diff.contains("-SELINUX=enforcing\n+SELINUX=disabled\n"),
        "{diff}"
    );
    let (code, task) = run(&c, &inv, "apply", &book);
    assert_eq!(
        (code, task["status"].as_str()),
        (0, Some("changed")),
        "{task}"
    );
    assert_eq!(
        h.run("cat /etc/selinux/config"),
        before
            .replace("SELINUX=enforcing", "SELINUX=disabled")
            .replace("SELINUX=permissive\n", "")
    );
    let (code, task) = run(&c, &inv, "check", &book);
    assert_eq!((code, task["status"].as_str()), (0, Some("pass")));
    h.run("test ! -e /.autorelabel");
}
