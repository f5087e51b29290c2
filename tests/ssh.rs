//! SLICE over real SSH against lab hosts (tests/lab): a fleet converging in parallel, sudo,
//! host keys, an unreachable host, large outputs, constant round trips, and the run lock.

#[path = "fleet/mod.rs"]
mod fleet;
#[path = "lab/mod.rs"]
mod lab;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleet::{host_key, Controller, Run};
use lab::{Host, Kind, Lab};

/// A playbook touching every kind that works over SSH without side effects on this machine:
/// net.* sysctls live only in the host's own network namespace.
const PLAYBOOK: &str = r#"
name: fleet
vars: { motd: "managed by SLICE" }
tasks:
  - name: app dir
    directory: { path: /srv/app, mode: "0750", owner: root, group: root }
  - name: app config
    file: { path: /srv/app/app.conf, content: "{{ motd }} on {{ inventory_hostname }}\n", mode: "0640" }
  - name: daemon.json
    json: { path: /etc/docker/daemon.json, set: { icc: false, log-opts: { max-size: 10m } } }
    after: docker dir
  - name: docker dir
    directory: { path: /etc/docker, mode: "0755" }
  - name: sshd root login
    line: { path: /etc/ssh/sshd_config, regexp: '^#?PermitRootLogin', line: PermitRootLogin prohibit-password }
  - name: syncookies
    sysctl: { name: net.ipv4.tcp_syncookies, value: 1, file: /etc/sysctl.d/90-slice.conf }
"#;

#[test]
fn five_hosts_converge_in_parallel() {
    let hosts: Vec<Host> = (0..5).map(|_| Lab::any_host(Kind::A).unwrap()).collect();
    let c = Controller::new(&hosts.iter().collect::<Vec<_>>());
    let names: Vec<String> = hosts.iter().map(Host::name).collect();
    let entries: Vec<(&str, &str, &str, bool)> = hosts
        .iter()
        .zip(&names)
        .map(|(h, n)| (n.as_str(), h.ip(), "root", false))
        .collect();
    let inv = c.inventory(&entries);
    let inv = inv.to_str().unwrap();
    c.write("site.yml", PLAYBOOK);

    let check = c.slice(&["check", "site.yml", "-i", inv]);
    check.expect(2);
    let doc_check = c.slice(&["check", "site.yml", "-i", inv, "--format", "json"]);
    let doc = doc_check.json();
    assert_eq!(doc["summary"]["hosts_failed"], 0);
    for h in doc["hosts"].as_array().unwrap() {
        assert_eq!(h["summary"]["drift"], 6, "{h}");
    }

    let t0 = Instant::now();
    let apply = c.slice(&["apply", "site.yml", "-i", inv]);
    apply.expect(0);
    eprintln!("apply on 5 hosts: {:?}", t0.elapsed());
    assert_eq!(
        apply.lines_starting("CHANGED").len(),
        30,
        "{}",
        apply.stdout
    );
    for (h, name) in hosts.iter().zip(&names) {
        assert_eq!(
            h.run("cat /srv/app/app.conf"),
            format!("managed by SLICE on {name}\n")
        );
        assert_eq!(
            h.run("stat -c '%a %U' /srv/app /srv/app/app.conf"),
            "750 root\n640 root\n"
        );
        assert_eq!(
            h.run("cat /etc/docker/daemon.json"),
            "{\n  \"icc\": false,\n  \"log-opts\": {\n    \"max-size\": \"10m\"\n  }\n}\n"
        );
        assert_eq!(
            h.run("grep -c '^PermitRootLogin prohibit-password$' /etc/ssh/sshd_config"),
            "1\n"
        );
        assert_eq!(h.run("cat /proc/sys/net/ipv4/tcp_syncookies"), "1\n");
    }

    c.slice(&["check", "site.yml", "-i", inv]).expect(0);
    let again = c.slice(&["apply", "site.yml", "-i", inv]);
    again.expect(0);
    assert!(
        again.lines_starting("CHANGED").is_empty(),
        "{}",
        again.stdout
    );
}

#[test]
fn a_sudo_user_becomes_root_with_or_without_a_password() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    c.write("site.yml", PLAYBOOK);
    let inv = c.inventory(&[("web", h.ip(), "lab", true)]);
    c.slice(&["apply", "site.yml", "-i", inv.to_str().unwrap()])
        .expect(0);
    // Written as root through sudo, not as the login user.
    assert_eq!(
        h.run("stat -c '%U %a' /srv/app/app.conf /etc/docker/daemon.json"),
        "root 640\nroot 644\n"
    );

    // labpw's sudo asks for a password: given in the environment it works; wrong, the host fails.
    let inv = c.inventory(&[("web", h.ip(), "labpw", true)]);
    let inv = inv.to_str().unwrap();
    let ok = Run::from(
        c.command(&["check", "site.yml", "-i", inv])
            .env("SLICE_BECOME_PASSWORD", "labpw-secret")
            .output()
            .unwrap(),
    );
    ok.expect(0);
    assert!(!ok.stdout.contains("labpw-secret") && !ok.stderr.contains("labpw-secret"));
    let bad = Run::from(
        c.command(&["check", "site.yml", "-i", inv])
            .env("SLICE_BECOME_PASSWORD", "wrong")
            .output()
            .unwrap(),
    );
    bad.expect(4);
    assert!(bad.stdout.contains("sudo refused on web"), "{}", bad.stdout);
    assert!(!bad.stdout.contains("wrong\n"));
    let none = c.slice(&["check", "site.yml", "-i", inv]);
    none.expect(4);
    assert!(none.stdout.contains("sudo"), "{}", none.stdout);
}

#[test]
fn host_keys_unknown_then_accepted_changed_always_refused() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[]);
    c.write("site.yml", PLAYBOOK);
    let inv = c.inventory(&[("web", h.ip(), "root", false)]);
    let inv = inv.to_str().unwrap();
    let fingerprint = {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(Lab::dir().join("base/etc/ssh/ssh_host_ed25519_key.pub"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };

    let unknown = c.slice(&["check", "site.yml", "-i", inv]);
    unknown.expect(4);
    assert!(
        unknown.stdout.contains(&format!(
            "unknown host key for web ({}): ssh-ed25519 {fingerprint}",
            h.ip()
        )),
        "{}",
        unknown.stdout
    );
    assert_eq!(fs::read_to_string(c.path("known_hosts")).unwrap(), "");

    c.slice(&["check", "site.yml", "-i", inv, "--accept-new-host-keys"])
        .expect(2);
    assert_eq!(
        fs::read_to_string(c.path("known_hosts")).unwrap(),
        format!("{} {}\n", h.ip(), host_key())
    );
    c.slice(&["check", "site.yml", "-i", inv]).expect(2);

    // Another key recorded for this address: refused, flag or not.
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtXNvmnbgXx3VDmfhPsRdU+ZmuUvuRtVWxcRZUcUrC9";
    fs::write(c.path("known_hosts"), format!("{} {other}\n", h.ip())).unwrap();
    for extra in [&[][..], &["--accept-new-host-keys"][..]] {
        let mut args = vec!["check", "site.yml", "-i", inv];
        args.extend_from_slice(extra);
        let changed = c.slice(&args);
        changed.expect(4);
        assert!(
            changed.stdout.contains(&format!(
                "the host key of web ({}) has CHANGED: it is now ssh-ed25519 {fingerprint}",
                h.ip()
            )),
            "{}",
            changed.stdout
        );
    }
    assert_eq!(
        fs::read_to_string(c.path("known_hosts")).unwrap(),
        format!("{} {other}\n", h.ip())
    );
}

#[test]
fn hashed_known_hosts_entries_are_understood() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    let hashed = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(c.path("known_hosts"))
        .output()
        .unwrap();
    assert!(hashed.status.success());
    let text = fs::read_to_string(c.path("known_hosts")).unwrap();
    assert!(text.starts_with("|1|") && !text.contains(h.ip()), "{text}");
    c.write("site.yml", PLAYBOOK);
    let inv = c.inventory(&[("web", h.ip(), "root", false)]);
    c.slice(&["check", "site.yml", "-i", inv.to_str().unwrap()])
        .expect(2);
}

#[test]
fn an_unreachable_host_fails_alone() {
    let a = Lab::any_host(Kind::A).unwrap();
    let b = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&a, &b]);
    c.write("site.yml", PLAYBOOK);
    // A port nothing listens on, inside a lab host: the connection is refused at once, and no
    // packet leaves the lab's own network.
    let mut text = fs::read_to_string(c.inventory(&[
        ("a", a.ip(), "root", false),
        ("gone", b.ip(), "root", false),
        ("b", b.ip(), "root", false),
    ]))
    .unwrap();
    text = text.replacen(
        "gone: { ansible_host",
        "gone: { ansible_port: 1, ansible_host",
        1,
    );
    let inv = c.write("inventory.yml", &text);
    let inv = inv.to_str().unwrap();
    let run = c.slice(&[
        "apply",
        "site.yml",
        "-i",
        inv,
        "--connect-timeout",
        "3",
        "--format",
        "json",
    ]);
    run.expect(4);
    let doc = run.json();
    let hosts = doc["hosts"].as_array().unwrap();
    assert_eq!(
        hosts
            .iter()
            .map(|h| h["host"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["a", "gone", "b"]
    );
    assert_eq!(
        hosts[1]["error"],
        format!(
            "cannot connect to {}:1: Connection refused (os error 111)",
            b.ip()
        )
    );
    for h in [&hosts[0], &hosts[2]] {
        assert_eq!(h["error"], serde_json::Value::Null);
        assert_eq!(h["summary"]["changed"], 6, "{h}");
    }
    assert_eq!(doc["summary"]["hosts_failed"], 1);
    assert_eq!(a.run("cat /srv/app/app.conf"), "managed by SLICE on a\n");
}

#[test]
fn megabytes_of_output_do_not_hang() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    // 3 MB on stdout and 3 MB on stderr, from the guard (check) and from the command (apply).
    let noisy =
        "head -c 3000000 /dev/zero | tr '\\\\0' o; head -c 3000000 /dev/zero | tr '\\\\0' e >&2";
    c.write(
        "site.yml",
        &format!("tasks:\n  - name: noisy\n    command: {{ run: \"{noisy}; touch /tmp/noisy-done\", unless: \"{noisy}; test -e /tmp/noisy-done\" }}\n"),
    );
    let inv = c.inventory(&[("web", h.ip(), "root", false)]);
    let inv = inv.to_str().unwrap();
    let t0 = Instant::now();
    c.slice(&["check", "site.yml", "-i", inv, "--command-timeout", "60"])
        .expect(2);
    c.slice(&["apply", "site.yml", "-i", inv, "--command-timeout", "60"])
        .expect(0);
    c.slice(&["check", "site.yml", "-i", inv, "--command-timeout", "60"])
        .expect(0);
    eprintln!("three runs with 6 MB of output each: {:?}", t0.elapsed());
}

/// A playbook of `n` tasks of several kinds, for counting round trips.
fn many_tasks(n: usize) -> String {
    let mut s = String::from("tasks:\n  - name: dir\n    directory: { path: /srv/many }\n");
    for i in 1..n {
        match i % 3 {
            0 => s.push_str(&format!("  - name: f{i}\n    file: {{ path: /srv/many/f{i}, content: \"{i}\\n\" }}\n")),
            1 => s.push_str(&format!("  - name: l{i}\n    line: {{ path: /srv/many/lines, line: \"line {i}\", create: true }}\n")),
            _ => s.push_str(&format!("  - name: j{i}\n    json: {{ path: /srv/many/j.json, set: {{ k{i}: {i} }} }}\n")),
        }
    }
    s
}

#[test]
fn observing_a_host_takes_the_same_round_trips_for_10_and_100_tasks() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    let inv = c.inventory(&[("web", h.ip(), "root", false)]);
    let inv = inv.to_str().unwrap();
    let mut counts = Vec::new();
    for n in [10, 100] {
        c.write(&format!("p{n}.yml"), &many_tasks(n));
        let before = h.exec_requests();
        let run = c.slice(&["check", &format!("p{n}.yml"), "-i", inv]);
        run.expect(2);
        assert_eq!(run.lines_starting("DRIFT").len(), n, "{}", run.stdout);
        counts.push(h.exec_requests() - before);
    }
    eprintln!("exec requests for a check of 10 and of 100 tasks: {counts:?}");
    assert_eq!(counts[0], counts[1]);
    // Each count includes the earlier read of the log itself; the rest is SLICE's: the run lock,
    // the facts, and one observation of every task.
    assert_eq!(counts[0] - 1, 3, "{counts:?}");
}

#[test]
fn two_runs_on_one_host_never_interleave() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    c.write(
        "slow.yml",
        "tasks:\n  - name: slow\n    command: { run: \"echo start $$ >> /tmp/runs; sleep 2; echo end $$ >> /tmp/runs\" }\n",
    );
    let inv = c.inventory(&[("web", h.ip(), "root", false)]);
    let inv = inv.to_str().unwrap();

    let first = c.spawn(&["apply", "slow.yml", "-i", inv]);
    std::thread::sleep(Duration::from_millis(500));
    // Waiting long enough, the second run goes after the first.
    let second = c.spawn(&["apply", "slow.yml", "-i", inv, "--lock-wait", "30"]);
    assert_eq!(Run::from(first.wait_with_output().unwrap()).code, 0);
    assert_eq!(Run::from(second.wait_with_output().unwrap()).code, 0);
    let log = h.run("cat /tmp/runs");
    let words: Vec<&str> = log.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(words, ["start", "end", "start", "end"], "{log}");

    // Not waiting long enough, the second run is refused and names the holder.
    let first = c.spawn(&["apply", "slow.yml", "-i", inv]);
    std::thread::sleep(Duration::from_millis(500));
    let refused = c.slice(&["apply", "slow.yml", "-i", inv, "--lock-wait", "1"]);
    refused.expect(4);
    let pid = first.id();
    assert!(
        refused
            .stdout
            .contains(&format!("the host is locked by slice (pid {pid})")),
        "{}",
        refused.stdout
    );
    assert_eq!(Run::from(first.wait_with_output().unwrap()).code, 0);
    assert_eq!(h.run("grep -c start /tmp/runs"), "3\n");
}

#[test]
fn the_vagrant_inventory_is_read_unchanged() {
    let inv = Path::new(env!("CARGO_MANIFEST_DIR")).join("vagrant/inventory.yml");
    let out = Command::new(env!("CARGO_BIN_EXE_slice"))
        .args(["validate", "-i"])
        .arg(&inv)
        .output()
        .unwrap();
    let run = Run::from(out);
    run.expect(0);
    assert_eq!(run.stdout, "builtin:playbooks/container-host.yml: valid (23 tasks, 1 handler, modules: docker-daemon) for 3 hosts\n");
}

#[test]
fn writes_keep_attributes_and_leave_no_temporary_files() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    h.run("mkdir -p /srv/real && printf 'old\\n' > /srv/real/app.conf && chown lab:lab /srv/real/app.conf && chmod 0604 /srv/real/app.conf");
    // As root the data goes over SFTP; as `lab` with sudo, through sudo's stdin.
    for (user, sudo, content) in [("root", false, "over sftp"), ("lab", true, "through sudo")] {
        c.write("site.yml", &format!("tasks:\n  - name: app\n    file: {{ path: /srv/real/app.conf, content: \"{content}\\n\" }}\n"));
        let inv = c.inventory(&[("web", h.ip(), user, sudo)]);
        c.slice(&["apply", "site.yml", "-i", inv.to_str().unwrap()])
            .expect(0);
        assert_eq!(h.run("cat /srv/real/app.conf"), format!("{content}\n"));
        // Mode and owner the task does not set are the old file's.
        assert_eq!(h.run("stat -c '%U %a' /srv/real/app.conf"), "lab 604\n");
        assert_eq!(h.run("find / -xdev -name '*.slice-tmp' | wc -l"), "0\n");
    }
}

#[test]
fn logs_in_with_an_agent_or_an_encrypted_key() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    c.write(
        "site.yml",
        "tasks:\n  - name: marker\n    file: { path: /srv/marker, content: \"x\\n\" }\n",
    );
    let inv = c.inventory(&[("web", h.ip(), "root", false)]);
    let inv = inv.to_str().unwrap();

    // An encrypted key that the host trusts, and an ssh_config that names only it.
    let key = c.path("locked_key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "open sesame", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let pubkey = fs::read_to_string(key.with_extension("pub")).unwrap();
    h.run(&format!(
        "echo '{}' >> /root/.ssh/authorized_keys",
        pubkey.trim()
    ));
    let config = fs::read_to_string(c.path("ssh_config")).unwrap().replace(
        &Lab::key_path().display().to_string(),
        &key.display().to_string(),
    );
    fs::write(c.path("ssh_config"), config).unwrap();

    let without = c.slice(&["check", "site.yml", "-i", inv]);
    without.expect(4);
    assert!(
        without.stdout.contains("refused to log in root@"),
        "{}",
        without.stdout
    );
    let with = Run::from(
        c.command(&["check", "site.yml", "-i", inv])
            .env("SLICE_SSH_PASSPHRASE", "open sesame")
            .output()
            .unwrap(),
    );
    with.expect(2);
    assert!(!with.stdout.contains("open sesame"));

    // An agent holding the lab key: no key file needed at all.
    let config = fs::read_to_string(c.path("ssh_config"))
        .unwrap()
        .replace(&key.display().to_string(), "/nonexistent/key");
    fs::write(c.path("ssh_config"), config).unwrap();
    let sock = c.path("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(Lab::key_path())
        .env("SSH_AUTH_SOCK", &sock)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(added.success());
    let via_agent = Run::from(
        c.command(&["check", "site.yml", "-i", inv])
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap(),
    );
    let _ = agent.kill();
    let _ = agent.wait();
    via_agent.expect(2);
}

#[test]
fn facts_of_a_systemd_host_and_a_light_one() {
    let b = Lab::any_host(Kind::B).unwrap();
    let a = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&a, &b]);
    let inv = c.inventory(&[
        ("booted", b.ip(), "root", false),
        ("light", a.ip(), "lab", true),
    ]);
    let run = c.slice(&["facts", "-i", inv.to_str().unwrap(), "--format", "json"]);
    run.expect(0);
    let doc = run.json();
    // Light hosts are bare namespaces, which systemd-detect-virt calls `container-other`.
    for (name, init, virt) in [
        ("booted", "systemd", "systemd-nspawn"),
        ("light", "sysvinit", "container-other"),
    ] {
        let f = &doc[name];
        assert_eq!(f["os_id"], "debian", "{f}");
        assert_eq!(f["os_version"], "12");
        assert_eq!(f["pkg_manager"], "apt");
        assert_eq!(f["init"], init, "{name}: {f}");
        assert_eq!(f["live"], true);
        assert_eq!(f["docker"]["installed"], false);
        assert_eq!(f["selinux"]["enabled"], false);
        assert_eq!(f["virtualization"], "container", "{name}: {f}");
        assert_eq!(f["virtualization_type"], virt, "{name}: {f}");
    }
    assert_eq!(doc["booted"]["hostname"], b.name());
    let human = c.slice(&["facts", "-i", inv.to_str().unwrap()]);
    assert!(
        human.stdout.contains("  init            systemd\n"),
        "{}",
        human.stdout
    );
}
