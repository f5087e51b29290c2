//! No lock-out: a firewall or sshd change applied over SSH that cuts SLICE off is undone by the
//! host itself after `--revert-after` seconds, and a change that keeps SLICE in stays.

#[path = "fleet/mod.rs"]
mod fleet;
#[path = "lab/mod.rs"]
mod lab;

use std::time::Instant;

use fleet::Controller;
use lab::{Kind, Lab};

const REVERT: &str = "4";

#[test]
fn a_firewall_that_blocks_ssh_is_undone_by_the_host() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    // Drop everything new on INPUT, and no rule for SSH: the established session survives, a
    // new connection does not.
    c.write(
        "site.yml",
        "tasks:\n  - name: walls\n    firewall: { backend: iptables, input_policy: drop, allow_lockout: true, input: [ { action: allow, proto: tcp, port: 8080 } ] }\n",
    );
    let inv = c.inventory(&[("web", h.ip(), "root", false)]);
    let t0 = Instant::now();
    let run = c.slice(&[
        "apply",
        "site.yml",
        "-i",
        inv.to_str().unwrap(),
        "--revert-after",
        REVERT,
        "--connect-timeout",
        "3",
    ]);
    run.expect(4);
    assert!(
        run.stdout
            .contains("this change cut SLICE's access to the host (a new connection failed:"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("after 4s the host put the previous state back and SLICE can log in again"),
        "{}",
        run.stdout
    );
    eprintln!("lock-out detected and undone in {:?}", t0.elapsed());
    // The host is reachable and SLICE's chain holds nothing any more, its hook gone.
    assert_eq!(h.run("iptables -S SLICE-INPUT"), "-N SLICE-INPUT\n");
    assert_eq!(h.run("iptables -S INPUT | grep -c SLICE || true"), "0\n");
}

#[test]
fn an_sshd_change_that_refuses_slice_is_undone_by_the_host() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    let before = h.run("sha256sum /etc/ssh/sshd_config");
    // Forced past the lock-out check on purpose: the host must still come back.
    c.write(
        "site.yml",
        "tasks:\n  - name: no root\n    sshd: { settings: { PermitRootLogin: \"no\" }, force: true }\n",
    );
    let inv = c.inventory(&[("web", h.ip(), "root", false)]);
    let run = c.slice(&[
        "apply",
        "site.yml",
        "-i",
        inv.to_str().unwrap(),
        "--revert-after",
        REVERT,
    ]);
    run.expect(4);
    assert!(
        run.stdout
            .contains("this change cut SLICE's access to the host"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("SLICE can log in again"),
        "{}",
        run.stdout
    );
    assert_eq!(h.run("sha256sum /etc/ssh/sshd_config"), before);
    // Root logs in again (the helper's own ssh is a new connection as root).
    assert_eq!(h.run("echo back"), "back\n");
}

#[test]
fn a_change_that_keeps_slice_in_stays() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    c.write(
        "site.yml",
        "tasks:\n  - name: walls\n    firewall: { backend: iptables, input_policy: drop, input: [ { action: allow, proto: tcp, port: 22 } ] }\n",
    );
    let inv = c.inventory(&[("web", h.ip(), "root", false)]);
    let inv = inv.to_str().unwrap();
    c.slice(&["apply", "site.yml", "-i", inv, "--revert-after", REVERT])
        .expect(0);
    // Well past the revert delay, the timer was disarmed: the rules are still in place.
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert!(h
        .run("iptables -S SLICE-INPUT")
        .contains("--dport 22 -j ACCEPT"));
    assert_eq!(
        h.run("iptables -S INPUT | grep -c 'SLICE-INPUT' || true"),
        "1\n"
    );
    c.slice(&["check", "site.yml", "-i", inv]).expect(0);
}
