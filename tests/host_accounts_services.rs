//! `user`, `group` and `service` on real lab hosts over SSH (tests/lab): accounts and the
//! docker group's exact members in a kind a host, services under a real systemd in a kind b
//! host (start limit included), and the init.d fallback in a kind a host, which has no systemd.

#[path = "fleet/mod.rs"]
mod fleet;
#[path = "lab/mod.rs"]
mod lab;

use std::time::Instant;

use fleet::{Controller, Run};
use lab::{Host, Kind, Lab};

/// The indented lines under a task's report line (its changes and message).
fn body(run: &Run, header: &str) -> Vec<String> {
    let mut lines = run.stdout.lines().skip_while(|l| *l != header);
    assert!(
        lines.next().is_some(),
        "no line `{header}` in:\n{}",
        run.stdout
    );
    lines
        .take_while(|l| l.starts_with("          "))
        .map(|l| l.trim().to_string())
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A controller with an inventory of one host, logged in as root.
fn controller(h: &Host) -> (Controller, String) {
    let c = Controller::new(&[h]);
    let inv = c.inventory(&[("web", h.ip(), "root", false)]);
    let inv = inv.to_str().unwrap().to_string();
    (c, inv)
}

/// check → drift, apply → changed, check → clean, apply again → nothing changed.
fn converge(c: &Controller, inv: &str, playbook: &str, changed: usize) -> Run {
    c.slice(&["check", playbook, "-i", inv]).expect(2);
    let apply = c.slice(&["apply", playbook, "-i", inv]);
    apply.expect(0);
    assert_eq!(
        apply.lines_starting("CHANGED").len(),
        changed,
        "{}",
        apply.stdout
    );
    c.slice(&["check", playbook, "-i", inv]).expect(0);
    let again = c.slice(&["apply", playbook, "-i", inv]);
    again.expect(0);
    assert!(
        again.lines_starting("CHANGED").is_empty(),
        "{}",
        again.stdout
    );
    apply
}

const ACCOUNTS: &str = r#"
tasks:
  - name: alice
    user: { name: alice, shell: /bin/bash, home: /home/alice }
  - name: mallory
    user: { name: mallory }
  - name: docker group
    group: { name: docker, system: true, members: [alice, mallory] }
  - name: service account locked
    user: { name: svc, system: true }
"#;

const TRUSTED: &str = r#"
tasks:
  - name: only trusted users control Docker
    group: { name: docker, members: [alice] }
"#;

#[test]
fn users_and_the_docker_group_in_a_plain_host() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    // An account made by hand for a daemon, with a password and a login shell.
    h.run("useradd -m -s /bin/bash svc && echo 'svc:Sv3c-secret' | chpasswd");
    let (c, inv) = controller(&h);
    c.write("accounts.yml", ACCOUNTS);
    c.write("trusted.yml", TRUSTED);

    let before = h.exec_requests();
    let check = c.slice(&["check", "accounts.yml", "-i", &inv]);
    check.expect(2);
    // The lock, the facts, one observation for all four tasks; plus the read of the log.
    assert_eq!(h.exec_requests() - before, 4);
    assert_eq!(
        body(&check, "DRIFT   user[alice]  alice"),
        strings(&[
            "state: absent → present",
            "shell: /bin/bash",
            "home: /home/alice"
        ])
    );
    assert_eq!(
        body(&check, "DRIFT   group[docker]  docker group"),
        strings(&[
            "state: absent → present",
            "members: alice, mallory",
            "add member: alice (no user alice yet)",
            "add member: mallory (no user mallory yet)",
        ])
    );
    assert_eq!(
        body(&check, "DRIFT   user[svc]  service account locked"),
        strings(&["shell: /bin/bash → /usr/sbin/nologin", "locked: no → yes"])
    );

    converge(&c, &inv, "accounts.yml", 4);
    assert_eq!(
        h.run("getent passwd alice | cut -d: -f6,7; test -d /home/alice && echo home"),
        "/home/alice:/bin/bash\nhome\n"
    );
    assert_eq!(
        h.run("getent group docker | cut -d: -f4"),
        "alice,mallory\n"
    );
    let gid: u32 = h
        .run("getent group docker | cut -d: -f3")
        .trim()
        .parse()
        .unwrap();
    assert!(gid < 1000, "a system group, gid {gid}");
    assert_eq!(
        h.run("passwd -S svc | cut -d' ' -f2; getent passwd svc | cut -d: -f7"),
        "L\n/usr/sbin/nologin\n"
    );

    // Only the trusted user stays; check names the one who goes.
    let check = c.slice(&["check", "trusted.yml", "-i", &inv]);
    check.expect(2);
    assert_eq!(
        body(
            &check,
            "DRIFT   group[docker]  only trusted users control Docker"
        ),
        strings(&["members: alice, mallory → alice", "remove member: mallory"])
    );
    converge(&c, &inv, "trusted.yml", 1);
    assert_eq!(h.run("getent group docker | cut -d: -f4"), "alice\n");
    assert_eq!(h.run("id -nG mallory"), "mallory\n");

    // A user whose primary group is docker has its rights too: named, and apply fails.
    h.run("usermod -g docker mallory");
    let check = c.slice(&["check", "trusted.yml", "-i", &inv]);
    check.expect(2);
    assert_eq!(
        body(
            &check,
            "DRIFT   group[docker]  only trusted users control Docker"
        ),
        strings(&["primary member: mallory (not in `members`)"])
    );
    let apply = c.slice(&["apply", "trusted.yml", "-i", &inv]);
    apply.expect(4);
    assert_eq!(
        body(
            &apply,
            "FAIL    group[docker]  only trusted users control Docker"
        )[0],
        "mallory has docker as primary group and so its rights, but is not in `members`; \
         SLICE does not change another account's primary group: give mallory another one \
         (a `user` task with `group:`) or add mallory to `members`"
    );
    eprintln!("accounts on a kind a host: {:?}", t0.elapsed());
}

const RSYSLOG_OFF: &str = r#"
tasks:
  - name: no local syslog daemon
    service: { name: rsyslog, enabled: false, state: stopped }
"#;

/// `{conf}` is the drop-in's content: changing it notifies the restart.
const RSYSLOG_ON: &str = r#"
tasks:
  - name: syslog daemon
    service: { name: rsyslog, enabled: true, state: running }
  - name: rsyslog drop-in
    file: { path: /etc/rsyslog.d/50-slice.conf, content: "{conf}" }
    notify: restart rsyslog
handlers:
  - name: restart rsyslog
    service: { name: rsyslog, state: restarted }
"#;

const LIMITED_UNIT: &str = "[Unit]\nDescription=a unit that may start once in 5 minutes\n\
    StartLimitBurst=1\nStartLimitIntervalSec=300\n[Service]\nExecStart=/bin/sleep infinity\n";

/// `{n}` changes the trigger file's content, which notifies the restart.
const LIMITED: &str = r#"
tasks:
  - name: limited runs
    service: { name: limited, state: running }
  - name: trigger
    file: { path: /etc/limited.trigger, content: "{n}\n" }
    notify: restart limited
handlers:
  - name: restart limited
    service: { name: limited, state: restarted }
"#;

fn main_pid(h: &Host, unit: &str) -> String {
    h.run(&format!("systemctl show -p MainPID --value {unit}"))
        .trim()
        .to_string()
}

#[test]
fn services_under_systemd() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::B).unwrap();
    // From the lab's offline repository; its postinst enables and starts the daemon.
    h.run("apt-get install -y -q rsyslog >/dev/null 2>&1");
    let (c, inv) = controller(&h);
    c.write("off.yml", RSYSLOG_OFF);
    c.write("on.yml", &RSYSLOG_ON.replace("{conf}", "# one\\n"));
    c.write("on2.yml", &RSYSLOG_ON.replace("{conf}", "# two\\n"));

    let check = c.slice(&["check", "off.yml", "-i", &inv]);
    check.expect(2);
    assert_eq!(
        body(&check, "DRIFT   service[rsyslog]  no local syslog daemon"),
        strings(&["enabled: yes → no", "state: running → stopped"])
    );
    converge(&c, &inv, "off.yml", 1);
    let state = h.ssh("systemctl is-enabled rsyslog; systemctl is-active rsyslog");
    assert_eq!(
        String::from_utf8_lossy(&state.stdout),
        "disabled\ninactive\n"
    );

    let check = c.slice(&["check", "on.yml", "-i", &inv]);
    check.expect(2);
    assert_eq!(
        body(&check, "DRIFT   service[rsyslog]  syslog daemon"),
        strings(&["enabled: no → yes", "state: stopped → running"])
    );
    // Check mode shows the handler it would run.
    assert_eq!(
        body(&check, "DRIFT   service[rsyslog]  restart rsyslog"),
        strings(&["restart: rsyslog.service"])
    );
    // The service, the file and the handler change; then all is in sync (the handler skips).
    converge(&c, &inv, "on.yml", 3);
    assert_eq!(
        h.run("systemctl is-enabled rsyslog; systemctl is-active rsyslog"),
        "enabled\nactive\n"
    );
    let pid = main_pid(&h, "rsyslog");
    let apply = c.slice(&["apply", "on2.yml", "-i", &inv]);
    apply.expect(0);
    assert_eq!(
        apply.lines_starting("CHANGED"),
        [
            "CHANGED file[/etc/rsyslog.d/50-slice.conf]  rsyslog drop-in",
            "CHANGED service[rsyslog]  restart rsyslog"
        ]
    );
    assert_ne!(
        main_pid(&h, "rsyslog"),
        pid,
        "the handler restarted rsyslog"
    );
    assert_eq!(h.run("systemctl is-active rsyslog"), "active\n");

    // A unit that may start once in five minutes: started once, a plain restart is refused.
    h.run(&format!(
        "printf '{LIMITED_UNIT}' > /etc/systemd/system/limited.service && systemctl daemon-reload && systemctl start limited"
    ));
    let refused = h.ssh("systemctl restart limited");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("attempted too often"));
    assert_eq!(
        String::from_utf8_lossy(&h.ssh("systemctl is-active limited").stdout),
        "failed\n"
    );
    c.write("limited1.yml", &LIMITED.replace("{n}", "1"));
    c.write("limited2.yml", &LIMITED.replace("{n}", "2"));
    let check = c.slice(&["check", "limited1.yml", "-i", &inv]);
    check.expect(2);
    assert_eq!(
        body(&check, "DRIFT   service[limited]  limited runs"),
        strings(&["state: failed → running"])
    );
    // Started (the limit reset first), then restarted by the handler: the second start within
    // the limit's five minutes, which only goes through because of reset-failed.
    let apply = c.slice(&["apply", "limited1.yml", "-i", &inv]);
    apply.expect(0);
    assert_eq!(apply.lines_starting("CHANGED").len(), 3, "{}", apply.stdout);
    let pid = main_pid(&h, "limited");
    let apply = c.slice(&["apply", "limited2.yml", "-i", &inv]);
    apply.expect(0);
    assert_eq!(
        apply.lines_starting("CHANGED"),
        [
            "CHANGED file[/etc/limited.trigger]  trigger",
            "CHANGED service[limited]  restart limited"
        ]
    );
    assert_eq!(h.run("systemctl is-active limited"), "active\n");
    assert_ne!(main_pid(&h, "limited"), pid);
    // The limit is still in force for anyone who restarts without resetting it.
    assert!(!h.ssh("systemctl restart limited").status.success());
    eprintln!("services on a kind b host: {:?}", t0.elapsed());
}

const INITD: &str = r##"
tasks:
  - name: message bus not at boot, but running now
    service: { name: dbus, enabled: false, state: running }
  - name: sshd config marker
    line: { path: /etc/ssh/sshd_config, line: "# managed by SLICE" }
    notify: restart ssh
handlers:
  - name: restart ssh
    service: { name: ssh, state: restarted }
"##;

const INITD_BACK: &str = r#"
tasks:
  - name: message bus at boot, stopped now
    service: { name: dbus.service, enabled: true, state: stopped }
  - name: sshd runs
    service: { name: ssh, enabled: true, state: running }
"#;

#[test]
fn init_d_services_without_systemd() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    let (c, inv) = controller(&h);
    c.write("initd.yml", INITD);
    c.write("back.yml", INITD_BACK);
    let facts = c.slice(&["facts", "-i", &inv, "--format", "json"]);
    facts.expect(0);
    assert_eq!(facts.json()["web"]["init"], "sysvinit");

    let check = c.slice(&["check", "initd.yml", "-i", &inv]);
    check.expect(2);
    assert_eq!(
        body(
            &check,
            "DRIFT   service[dbus]  message bus not at boot, but running now"
        ),
        strings(&["enabled: yes → no", "state: stopped → running"])
    );
    assert_eq!(
        body(&check, "DRIFT   service[ssh]  restart ssh"),
        strings(&["restart: ssh"])
    );
    let sshd = h.run("cat /run/sshd.pid");
    converge(&c, &inv, "initd.yml", 3);
    assert_eq!(
        h.run("ls /etc/rc2.d /etc/rc5.d | grep dbus; /etc/init.d/dbus status"),
        "K01dbus\nK01dbus\ndbus is running.\n"
    );
    assert_ne!(
        h.run("cat /run/sshd.pid"),
        sshd,
        "the handler restarted sshd"
    );

    let check = c.slice(&["check", "back.yml", "-i", &inv]);
    check.expect(2);
    assert_eq!(
        body(
            &check,
            "DRIFT   service[dbus.service]  message bus at boot, stopped now"
        ),
        strings(&["enabled: no → yes", "state: running → stopped"])
    );
    assert!(check.stdout.contains("PASS    service[ssh]  sshd runs"));
    converge(&c, &inv, "back.yml", 1);
    let status = h.ssh("ls /etc/rc2.d | grep dbus; /etc/init.d/dbus status");
    assert_eq!(status.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        "S01dbus\ndbus is not running ... failed!\n"
    );
    eprintln!("init.d services on a kind a host: {:?}", t0.elapsed());
}

const IMAGE: &str = r#"
tasks:
  - name: ssh at boot in the image
    service: { name: ssh, enabled: true }
  - name: image account
    user: { name: builder, system: true }
  - name: image docker group
    group: { name: docker, system: true, members: [builder] }
"#;

/// `slice --root` on an offline root, run inside a lab host (so nothing of this machine is
/// touched): the host's /usr bound in, a copy of its /etc. systemctl, useradd and gpasswd run
/// chrooted in it; the host's own accounts and units stay as they are.
#[test]
fn an_offline_root_inside_a_host() {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::A).unwrap();
    let mut copy = h.ssh_command("root");
    copy.arg("cat > /usr/local/bin/slice && chmod 755 /usr/local/bin/slice")
        .stdin(std::fs::File::open(env!("CARGO_BIN_EXE_slice")).unwrap());
    assert!(copy.status().unwrap().success());
    h.run(
        "mkdir -p /srv/root/usr /srv/root/var/lib /srv/root/var/log /srv/root/var/mail /srv/root/tmp \
         && cd /srv/root && for d in bin sbin lib lib64; do ln -s usr/$d $d; done \
         && cp -a /etc /srv/root/ && mount --bind /usr /srv/root/usr \
         && chroot /srv/root systemctl disable ssh.service 2>/dev/null",
    );
    h.run(&format!("cat > /tmp/image.yml <<'EOF'\n{IMAGE}EOF"));
    let slice = |mode: &str| h.ssh(&format!("slice {mode} /tmp/image.yml --root /srv/root"));
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();

    let check = slice("check");
    assert_eq!(check.status.code(), Some(2), "{}", text(&check));
    assert!(text(&check)
        .contains("DRIFT   service[ssh]  ssh at boot in the image\n          enabled: no → yes\n"));
    assert!(text(&check).contains(
        "DRIFT   user[builder]  image account\n          state: absent → present\n          shell: /usr/sbin/nologin\n          locked: yes\n"
    ));
    let apply = slice("apply");
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert_eq!(
        text(&apply).matches("CHANGED").count(),
        3,
        "{}",
        text(&apply)
    );
    let check = slice("check");
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));

    assert_eq!(
        h.run(
            "chroot /srv/root systemctl is-enabled ssh.service; systemctl is-enabled ssh.service"
        ),
        "enabled\nenabled\n"
    );
    assert_eq!(
        h.run("grep -c '^builder:' /srv/root/etc/passwd; grep -c '^builder:' /etc/passwd || true"),
        "1\n0\n"
    );
    assert_eq!(
        h.run("grep '^docker:' /srv/root/etc/group | cut -d: -f4; grep '^builder:' /srv/root/etc/shadow | cut -d: -f2"),
        "builder\n!\n"
    );

    // A running state means nothing in an image: an error at the task, before anything runs.
    h.run("printf 'tasks:\\n  - name: ssh runs\\n    service: { name: ssh, state: running }\\n' > /tmp/bad.yml");
    let bad = h.ssh("slice check /tmp/bad.yml --root /srv/root");
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.starts_with("error: an offline root has no running services: only `enabled` can be managed there\n --> /tmp/bad.yml:3:34\n"),
        "{err}"
    );
    assert!(err
        .contains("help: run this task only on live hosts (`when: facts.live`), or drop `state`"));
    eprintln!("offline root in a kind a host: {:?}", t0.elapsed());
}
