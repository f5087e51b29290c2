//! The host-system kinds against real lab hosts (tests/lab, kind a) over SSH: setuid files,
//! modprobe.d files, audit rules files, and /etc/fstab with the host's own mounts.
//!
//! What a lab host cannot show (kernel modules loading, the kernel side of auditd, disks) is
//! covered by the unit tests on recorded files and command outputs in src/resources/.

#[path = "fleet/mod.rs"]
mod fleet;
#[path = "lab/mod.rs"]
mod lab;

use std::time::Instant;

use fleet::{Controller, Run};
use lab::{Host, Kind, Lab};
use serde_json::Value;

/// A controller trusting the host, with an inventory logging in as root.
fn controller(h: &Host) -> (Controller, String) {
    let c = Controller::new(&[h]);
    let inv = c.inventory(&[("h", h.ip(), "root", false)]);
    (c, inv.display().to_string())
}

fn json(c: &Controller, mode: &str, playbook: &str, inv: &str) -> (Run, Value) {
    let run = c.slice(&[mode, playbook, "-i", inv, "--format", "json"]);
    let doc = run.json();
    (run, doc)
}

/// The task of the first host with this name.
fn task<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["hosts"][0]["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no task `{name}` in {doc}"))
}

/// `what: before → after` for each change of a task (the content diff left out).
fn changes(t: &Value) -> Vec<String> {
    t["changes"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["what"] != "content")
                .map(|c| {
                    let s = |k: &str| c[k].as_str().map(String::from);
                    match (s("before"), s("after")) {
                        (Some(b), Some(a)) => format!("{}: {b} → {a}", c["what"].as_str().unwrap()),
                        (None, Some(a)) => format!("{}: {a}", c["what"].as_str().unwrap()),
                        (Some(b), None) => format!("{}: {b} → (none)", c["what"].as_str().unwrap()),
                        (None, None) => c["what"].as_str().unwrap().to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Applying again changes nothing, and check finds nothing.
fn settled(c: &Controller, playbook: &str, inv: &str) {
    c.slice(&["check", playbook, "-i", inv]).expect(0);
    let again = c.slice(&["apply", playbook, "-i", inv]);
    again.expect(0);
    assert!(
        again.lines_starting("CHANGED").is_empty(),
        "{}",
        again.stdout
    );
}

#[test]
fn setuid_bits_go_from_every_file_but_the_allowed_ones() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    h.run(
        "install -m 4755 /usr/bin/true /usr/local/bin/evil \
         && install -m 2755 /usr/bin/true '/usr/local/bin/group tool' \
         && install -m 4755 /usr/bin/true /usr/local/bin/keep \
         && mkdir -p /opt/x && install -m 6711 /usr/bin/true /opt/x/both \
         && install -m 4755 /usr/bin/true /var/lib/docker/other-fs",
    );
    let (c, inv) = controller(&h);
    c.write(
        "site.yml",
        "name: setuid\ntasks:\n  - name: setuid files\n    setuid: { also_allow: [/usr/local/bin/keep] }\n",
    );

    let (check, doc) = json(&c, "check", "site.yml", &inv);
    check.expect(2);
    let found = changes(task(&doc, "setuid files"));
    for want in [
        "setuid and setgid bits /opt/x/both: 6711 → 0711",
        "setuid bit /usr/local/bin/evil: 4755 → 0755",
        "setgid bit /usr/local/bin/group tool: 2755 → 0755",
        // Debian's own, not on the default list.
        "setuid bit /usr/bin/chfn: 4755 → 0755",
        "setuid bit /usr/bin/mount: 4755 → 0755",
        "setuid bit /usr/lib/openssh/ssh-keysign: 4755 → 0755",
        "setgid bit /usr/bin/chage: 2755 → 0755",
    ] {
        assert!(
            found.iter().any(|f| f == want),
            "{want} missing from {found:#?}"
        );
    }
    for kept in [
        "/usr/bin/sudo",
        "/usr/bin/passwd",
        "/usr/bin/su",
        "/usr/sbin/unix_chkpwd",
        "/usr/lib/dbus-1.0/dbus-daemon-launch-helper",
        "/usr/local/bin/keep",
        // On another filesystem: find -xdev never goes there.
        "/var/lib/docker/other-fs",
    ] {
        assert!(
            !found.iter().any(|f| f.contains(kept)),
            "{kept} listed: {found:#?}"
        );
    }
    let text = c.slice(&["check", "site.yml", "-i", &inv]);
    assert!(
        text.stdout
            .contains("          setuid bit /usr/local/bin/evil: 4755 → 0755\n"),
        "{}",
        text.stdout
    );

    c.slice(&["apply", "site.yml", "-i", &inv]).expect(0);
    assert_eq!(
        h.run(
            "stat -c '%a %n' /usr/local/bin/evil '/usr/local/bin/group tool' /opt/x/both \
             /usr/bin/chfn /usr/local/bin/keep /usr/bin/sudo /var/lib/docker/other-fs"
        ),
        "755 /usr/local/bin/evil\n755 /usr/local/bin/group tool\n711 /opt/x/both\n\
         755 /usr/bin/chfn\n4755 /usr/local/bin/keep\n4755 /usr/bin/sudo\n4755 /var/lib/docker/other-fs\n"
    );
    // sudo still works for an administrator.
    assert!(h.ssh_as("lab", "sudo -n true").status.success());
    settled(&c, "site.yml", &inv);
    eprintln!("setuid on a lab host: {:?}", t0.elapsed());
}

const MODPROBE: &str = r#"
name: modules
tasks:
  - name: no cramfs
    kernel_module: { name: cramfs }
  - name: no udf
    kernel_module: { name: udf }
  - name: jffs2 allowed again
    kernel_module: { name: jffs2, state: allowed }
  - name: usb storage
    kernel_module: { name: usb-storage, file: /etc/modprobe.d/usb.conf }
"#;

#[test]
fn modprobe_files_keep_other_lines_and_mounted_filesystems_are_protected() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    h.run(
        "mkdir -p /etc/modprobe.d && printf '# local settings\\noptions loop max_loop=64\\ninstall jffs2 /bin/true\\nblacklist jffs2\\n' \
         > /etc/modprobe.d/slice-blacklist.conf",
    );
    let (c, inv) = controller(&h);
    c.write("site.yml", MODPROBE);

    let (check, doc) = json(&c, "check", "site.yml", &inv);
    check.expect(2);
    for name in ["no cramfs", "no udf", "jffs2 allowed again", "usb storage"] {
        assert_eq!(task(&doc, name)["status"], "drift", "{name}");
    }
    c.slice(&["apply", "site.yml", "-i", &inv]).expect(0);
    assert_eq!(
        h.run("cat /etc/modprobe.d/slice-blacklist.conf"),
        "# local settings\noptions loop max_loop=64\ninstall cramfs /bin/false\nblacklist cramfs\ninstall udf /bin/false\nblacklist udf\n"
    );
    assert_eq!(
        h.run("stat -c %a /etc/modprobe.d/usb.conf && cat /etc/modprobe.d/usb.conf"),
        "644\ninstall usb-storage /bin/false\nblacklist usb-storage\n"
    );
    settled(&c, "site.yml", &inv);

    // ext4 holds /var/lib/docker and the lab's repository here: refused, nothing written.
    c.write(
        "ext4.yml",
        "name: ext4\ntasks:\n  - name: no ext4\n    kernel_module: { name: ext4, file: /etc/modprobe.d/ext4.conf }\n",
    );
    let (apply, doc) = json(&c, "apply", "ext4.yml", &inv);
    apply.expect(4);
    let msg = task(&doc, "no ext4")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.starts_with("not blacklisting ext4: it backs the filesystem mounted at ")
            && msg.contains("/var/lib/docker"),
        "{msg}"
    );
    assert_eq!(
        h.run("ls /etc/modprobe.d"),
        "slice-blacklist.conf\nusb.conf\n"
    );
    eprintln!("modprobe.d on a lab host: {:?}", t0.elapsed());
}

#[test]
fn audit_rules_files_are_edited_rule_by_rule() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    // auditd's package brings /etc/audit/rules.d and augenrules; its daemon cannot run here.
    h.run("DEBIAN_FRONTEND=noninteractive apt-get install -y -q auditd >/dev/null 2>&1");
    h.run(
        "printf '# keep me\\n-w /tmp -k junk\\n-w /etc/docker/daemon.json -p wa -k dockerd\\n-w /etc/containerd/config.toml -k docker -p aw\\n' \
         > /etc/audit/rules.d/extra.rules",
    );
    // The CIS list of docs/resources.md, for Debian's docker.io paths.
    let cis = [
        "-w /usr/sbin/dockerd -p wa -k docker",
        "-w /run/containerd -p wa -k docker",
        "-w /var/lib/docker -p wa -k docker",
        "-w /etc/docker -p wa -k docker",
        "-w /usr/lib/systemd/system/docker.service -p wa -k docker",
        "-w /usr/lib/systemd/system/docker.socket -p wa -k docker",
        "-w /etc/default/docker -p wa -k docker",
        "-w /usr/bin/containerd -p wa -k docker",
        "-w /usr/sbin/runc -p wa -k docker",
    ];
    let list: String = cis.iter().map(|r| format!("        - \"{r}\"\n")).collect();
    let (c, inv) = controller(&h);
    c.write(
        "site.yml",
        &format!(
            "name: audit\ntasks:\n  - name: docker rules\n    audit_rule:\n      rules:\n{list}\
             \n  - name: extra rules\n    audit_rule:\n      file: /etc/audit/rules.d/extra.rules\n      exclusive: true\n      rules:\n\
             \x20       - \"-w /etc/docker/daemon.json -k docker -p wa\"\n\
             \x20       - \"-w /etc/containerd/config.toml -p wa -k docker\"\n"
        ),
    );
    let (check, doc) = json(&c, "check", "site.yml", &inv);
    check.expect(2);
    let docker = changes(task(&doc, "docker rules"));
    assert_eq!(docker[..2], ["state: absent → file", "mode: 0640"]);
    assert_eq!(docker.len(), 2 + cis.len(), "{docker:#?}");
    assert_eq!(
        changes(task(&doc, "extra rules")),
        [
            "rule: -w /etc/docker/daemon.json -p wa -k dockerd → -w /etc/docker/daemon.json -k docker -p wa",
            "rule: -w /tmp -k junk → (none)",
        ]
    );

    c.slice(&["apply", "site.yml", "-i", &inv]).expect(0);
    assert_eq!(
        h.run("stat -c %a /etc/audit/rules.d/slice-docker.rules && cat /etc/audit/rules.d/slice-docker.rules"),
        format!("640\n{}\n", cis.join("\n"))
    );
    assert_eq!(
        h.run("cat /etc/audit/rules.d/extra.rules"),
        "# keep me\n-w /etc/docker/daemon.json -k docker -p wa\n-w /etc/containerd/config.toml -k docker -p aw\n"
    );
    // augenrules merges rules.d as auditd would load it at boot.
    h.run("augenrules >/dev/null 2>&1 || true");
    let merged = h.run("cat /etc/audit/audit.rules");
    for r in &cis {
        assert!(merged.contains(r), "{r} not in audit.rules:\n{merged}");
    }
    settled(&c, "site.yml", &inv);
    eprintln!("audit rules on a lab host: {:?}", t0.elapsed());
}

/// The lab host's fstab, as an installer might have left it: comments, tabs, several spaces.
const FSTAB: &str = "# /etc/fstab for the lab\n# <fs>\t<dir>\t<type>\t<options>\t<dump>\t<pass>\n\
UUID=abcd-1234\t/\text4\terrors=remount-ro\t0\t1\ntmpfs   /tmp   tmpfs   defaults,dev   0  0\n";

const MOUNTS: &str = r#"
name: mounts
tasks:
  - name: tmp
    mount: { path: /tmp, options: [nodev, nosuid, noexec] }
  - name: shm
    mount: { path: /dev/shm, options: [nodev, nosuid, noexec] }
  - name: docker partition
    mount: { path: /var/lib/docker, separate: true }
  - name: srv partition
    mount: { path: /srv/data, separate: true }
"#;

#[test]
fn fstab_is_edited_in_place_and_mounted_options_are_checked() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    let fstab = write_fstab(&h, FSTAB);
    let (c, inv) = controller(&h);
    c.write("site.yml", MOUNTS);

    let (check, doc) = json(&c, "check", "site.yml", &inv);
    check.expect(2);
    assert_eq!(
        changes(task(&doc, "tmp")),
        [
            "fstab options: defaults,dev → defaults,nodev,nosuid,noexec",
            "mounted: no → yes",
        ]
    );
    assert_eq!(
        changes(task(&doc, "shm")),
        [
            "fstab entry: none → needed (give `src: tmpfs` and `fstype: tmpfs` to add one)",
            "mount options: rw,relatime → rw,relatime,nodev,nosuid,noexec",
        ]
    );
    assert_eq!(task(&doc, "docker partition")["status"], "pass");
    assert_eq!(
        changes(task(&doc, "srv partition")),
        ["separate filesystem: no (/srv/data is on the filesystem mounted at /) → yes"]
    );

    // Apply: fstab edited for /tmp, which is not mounted here; the rest refused with reasons.
    let (apply, doc) = json(&c, "apply", "site.yml", &inv);
    apply.expect(4);
    let msg = |name: &str| {
        task(&doc, name)["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(msg("tmp").starts_with("/tmp is not mounted now; the fstab entry takes effect when it is mounted (`mount /tmp`) or at the next boot"), "{}", msg("tmp"));
    assert_eq!(
        msg("shm"),
        "/etc/fstab has no entry for /dev/shm; give `src: tmpfs` and `fstype: tmpfs` to add one"
    );
    assert!(
        msg("srv partition").contains("SLICE never repartitions"),
        "{}",
        msg("srv partition")
    );
    assert_eq!(task(&doc, "docker partition")["status"], "pass");
    let edited = fstab.replace("defaults,dev   0", "defaults,nodev,nosuid,noexec   0");
    assert_eq!(
        h.run("cat /etc/fstab"),
        edited,
        "only the options of /tmp changed"
    );
    assert!(!h
        .run("grep ' /dev/shm ' /proc/self/mountinfo")
        .contains("noexec"));

    // With src and fstype the entry is added, and the mounted /dev/shm (private to this host's
    // mount namespace) is remounted.
    c.write(
        "shm.yml",
        "name: shm\ntasks:\n  - name: shm\n    mount: { path: /dev/shm, options: [nodev, nosuid, noexec], src: tmpfs, fstype: tmpfs }\n",
    );
    let (apply, doc) = json(&c, "apply", "shm.yml", &inv);
    apply.expect(0);
    assert_eq!(
        changes(task(&doc, "shm")),
        [
            "fstab entry: tmpfs /dev/shm tmpfs nodev,nosuid,noexec 0 0",
            "mount options: rw,relatime → rw,relatime,nodev,nosuid,noexec",
        ]
    );
    assert_eq!(
        h.run("cat /etc/fstab"),
        format!("{edited}tmpfs /dev/shm tmpfs nodev,nosuid,noexec 0 0\n")
    );
    let shm = h.run("grep ' /dev/shm ' /proc/self/mountinfo");
    assert!(shm.contains(" rw,nosuid,nodev,noexec,relatime "), "{shm}");
    settled(&c, "shm.yml", &inv);
    eprintln!("fstab and mounts on a lab host: {:?}", t0.elapsed());
}

/// Writes the host's /etc/fstab (its own, in its overlay) and returns what was written.
fn write_fstab(h: &Host, text: &str) -> String {
    let out = h
        .ssh_command("root")
        .arg("cat > /etc/fstab")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .ok_or_else(|| std::io::Error::other("no stdin"))?
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(h.run("cat /etc/fstab"), text);
    text.to_string()
}
