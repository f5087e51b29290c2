//! `docker_daemon` against a real dockerd (docker.io 20.10 from the lab's offline repository) in
//! kind b lab hosts: icc=false proven by container traffic, a refused key rolled back with the
//! daemon still running, and live-restore keeping the old bridge rules (effective-state drift).

#[path = "fleet/mod.rs"]
mod fleet;
#[path = "lab/mod.rs"]
mod lab;

use std::time::Instant;

use fleet::{Controller, Run};
use lab::{Host, Kind, Lab};

/// A kind b host with docker.io running and the lab's busybox imported as `bb`.
fn docker_host() -> Host {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::B).unwrap();
    h.run("apt-get install -y -q docker.io >/dev/null 2>&1");
    h.run("for i in $(seq 50); do docker info >/dev/null 2>&1 && break; sleep 0.2; done; docker import /srv/lab-files/busybox-rootfs.tar bb >/dev/null");
    eprintln!("{}: docker up in {:?}", h.name(), t0.elapsed());
    h
}

fn controller(h: &Host) -> (Controller, String) {
    let c = Controller::new(&[h]);
    let inv = c.inventory(&[("web", h.ip(), "root", false)]);
    (c, inv.to_str().unwrap().to_string())
}

/// A container answering `hi` on port 8080 again and again; its address.
fn server(h: &Host, args: &str) -> String {
    h.run(&format!(
        "docker run -d --name srv {args} bb sh -c 'while :; do echo hi | nc -l -p 8080; done' >/dev/null"
    ));
    address(h)
}

fn address(h: &Host) -> String {
    h.run("for i in $(seq 50); do a=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' srv); [ -n \"$a\" ] && break; sleep 0.2; done; echo $a")
        .trim()
        .to_string()
}

/// Whether a second container reaches the server over the docker0 bridge.
fn reaches(h: &Host, ip: &str) -> bool {
    let out = h.ssh(&format!(
        "docker run --rm bb sh -c 'echo x | nc -w 2 {ip} 8080'"
    ));
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("hi")
}

fn show(r: &Run) -> String {
    format!("--- stdout\n{}\n--- stderr\n{}", r.stdout, r.stderr)
}

#[test]
fn icc_false_cuts_container_to_container_traffic() {
    let h = docker_host();
    let ip = server(&h, "--restart always");
    assert!(reaches(&h, &ip), "containers talk before the change");

    let (c, inv) = controller(&h);
    c.write(
        "site.yml",
        "tasks:\n  - name: no inter-container traffic\n    docker_daemon: { settings: { icc: false } }\n",
    );
    let check = c.slice(&["check", "site.yml", "-i", &inv]);
    check.expect(2);
    assert!(check.stdout.contains("key icc: false"), "{}", show(&check));
    assert!(
        check.stdout.contains("effective icc: true → false"),
        "{}",
        show(&check)
    );
    assert!(check.stdout.contains("the docker0 bridge still accepts container-to-container traffic (ACCEPT rule on docker0)"), "{}", show(&check));

    let t0 = Instant::now();
    let apply = c.slice(&["apply", "site.yml", "-i", &inv]);
    apply.expect(0);
    eprintln!("apply with a restart: {:?}", t0.elapsed());
    assert_eq!(apply.lines_starting("CHANGED").len(), 1, "{}", show(&apply));
    assert_eq!(
        h.run("cat /etc/docker/daemon.json"),
        "{\n  \"icc\": false\n}\n"
    );
    assert!(h
        .run("iptables-save -t filter")
        .contains("-A FORWARD -i docker0 -o docker0 -j DROP"));

    // The restart stopped the server; its restart policy brings it back on the new bridge.
    let ip = address(&h);
    assert!(!reaches(&h, &ip), "containers must not talk with icc=false");
    c.slice(&["check", "site.yml", "-i", &inv]).expect(0);
}

#[test]
fn an_unknown_key_is_refused_and_the_daemon_keeps_the_old_file() {
    let h = docker_host();
    let old = "{\n  \"log-level\": \"info\"\n}\n";
    h.run(&format!(
        "printf '%s' '{old}' > /etc/docker/daemon.json && systemctl restart docker"
    ));
    let pid = h.run("cat /var/run/docker.pid");
    let (c, inv) = controller(&h);

    // Refused when the playbook is read: the key is not one dockerd knows.
    c.write(
        "site.yml",
        "tasks:\n  - name: daemon\n    docker_daemon: { settings: { icc: false, no-new-privilege: true } }\n",
    );
    let r = c.slice(&["apply", "site.yml", "-i", &inv]);
    assert_ne!(r.code, 0, "{}", show(&r));
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("`no-new-privilege` is not a daemon.json key dockerd knows"),
        "{}",
        show(&r)
    );
    assert!(
        all.contains("did you mean `no-new-privileges`?"),
        "{}",
        show(&r)
    );
    assert_eq!(h.run("cat /etc/docker/daemon.json"), old);
    assert_eq!(h.run("cat /var/run/docker.pid"), pid, "not restarted");

    // Let through on purpose: dockerd 20.10 refuses it, SLICE puts the old file back.
    c.write(
        "site.yml",
        "tasks:\n  - name: daemon\n    docker_daemon: { settings: { no-new-privilege: true }, allow_unknown_keys: true }\n",
    );
    let r = c.slice(&["apply", "site.yml", "-i", &inv]);
    assert_ne!(r.code, 0, "{}", show(&r));
    assert!(
        r.stdout
            .contains("docker did not restart with the new /etc/docker/daemon.json"),
        "{}",
        show(&r)
    );
    assert!(
        r.stdout.contains(
            "the following directives don't match any configuration option: no-new-privilege"
        ),
        "{}",
        show(&r)
    );
    assert!(
        r.stdout
            .contains("the old /etc/docker/daemon.json is back and docker runs with it"),
        "{}",
        show(&r)
    );
    assert_eq!(h.run("cat /etc/docker/daemon.json"), old);
    assert_eq!(h.run("systemctl is-active docker"), "active\n");
    h.run("docker run --rm bb true");
}

#[test]
fn live_restore_keeps_the_old_bridge_and_check_says_so() {
    let h = docker_host();
    h.run("printf '{\"live-restore\": true}\\n' > /etc/docker/daemon.json && systemctl restart docker");
    let ip = server(&h, "");
    assert!(reaches(&h, &ip));

    let (c, inv) = controller(&h);
    c.write(
        "site.yml",
        "tasks:\n  - name: daemon\n    docker_daemon: { settings: { live-restore: true, icc: false } }\n",
    );
    let apply = c.slice(&["apply", "site.yml", "-i", &inv]);
    assert_ne!(apply.code, 0, "{}", show(&apply));
    assert!(
        apply.stdout.contains("/etc/docker/daemon.json changed and docker restarted, but icc: false in daemon.json, but the docker0 bridge still accepts container-to-container traffic"),
        "{}",
        show(&apply)
    );
    assert!(
        apply
            .stdout
            .contains("live-restore is on and 1 container(s) run"),
        "{}",
        show(&apply)
    );
    assert_eq!(
        h.run("cat /etc/docker/daemon.json"),
        "{\n  \"live-restore\": true,\n  \"icc\": false\n}\n"
    );
    // What SLICE reported is what the host does: the running container is still reachable.
    assert!(reaches(&h, &ip), "live-restore keeps the old bridge rules");

    let check = c.slice(&["check", "site.yml", "-i", &inv]);
    check.expect(2);
    assert!(
        check.stdout.contains("effective icc: true → false"),
        "{}",
        show(&check)
    );
    assert!(
        check.stdout.contains(
            "Stop the containers and restart docker, or restart it with live-restore off"
        ),
        "{}",
        show(&check)
    );
    // Applying again restarts nothing: it fails with the same advice.
    let pid = h.run("cat /var/run/docker.pid");
    let again = c.slice(&["apply", "site.yml", "-i", &inv]);
    assert_ne!(again.code, 0);
    assert_eq!(h.run("cat /var/run/docker.pid"), pid);

    // Following the advice: with the container stopped, a restart builds the bridge anew.
    h.run("docker rm -f srv >/dev/null && systemctl restart docker");
    c.slice(&["check", "site.yml", "-i", &inv]).expect(0);
}
