//! `firewall` flows against a real dockerd (docker.io 20.10 from the lab's offline repository,
//! iptables-nft) in one kind b lab host with a real systemd: two user networks that Docker
//! isolates from each other, a flow that lets one port through from `front` to `back` while
//! another stays blocked, Docker's own chains left as they were, the boot unit enabled and
//! ordered before docker, and the hook and the flow surviving `systemctl restart docker`.
//! All traffic is between containers inside the lab host; every command runs there over SSH.

#[path = "fleet/mod.rs"]
mod fleet;
#[path = "lab/mod.rs"]
mod lab;

use std::time::{Duration, Instant};

use fleet::{Controller, Run};
use lab::{Host, Kind, Lab};

const FRONT: &str = "172.30.1.0/24";
const BACK: &str = "172.30.2.0/24";
/// The server's fixed address on `back`.
const SERVER: &str = "172.30.2.10";

const PLAYBOOK: &str = "
name: firewall
tasks:
  - name: container flows
    firewall:
      backend: iptables
      flows:
        - { from: 172.30.1.0/24, to: 172.30.2.0/24, proto: tcp, port: 5432 }
";

/// A kind b host with docker.io running and the lab's busybox imported as `bb`.
fn docker_host() -> Host {
    let t0 = Instant::now();
    let h = Lab::any_host(Kind::B).unwrap();
    h.run("apt-get install -y -q docker.io >/dev/null 2>&1");
    h.run("for i in $(seq 50); do docker info >/dev/null 2>&1 && break; sleep 0.2; done; docker import /srv/lab-files/busybox-rootfs.tar bb >/dev/null");
    eprintln!("{}: docker up in {:?}", h.name(), t0.elapsed());
    h
}

/// Two user networks and a server on `back` answering `p5432` on 5432 and `p6000` on 6000
/// (busybox nc: `-ll -e` keeps listening). It restarts with dockerd.
fn networks_and_server(h: &Host) {
    h.run(&format!(
        "docker network create --subnet {FRONT} front >/dev/null && docker network create --subnet {BACK} back >/dev/null"
    ));
    h.run(&format!(
        "docker run -d --restart always --stop-timeout 1 --name srv --network back --ip {SERVER} bb sh -c 'nc -ll -p 6000 -e echo p6000 & nc -ll -p 5432 -e echo p5432' >/dev/null"
    ));
    server_ready(h);
}

/// Waits until the server answers on both ports, asked from inside its own container.
fn server_ready(h: &Host) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        let out = h.ssh(
            "docker exec srv sh -c 'nc 127.0.0.1 5432 </dev/null; nc 127.0.0.1 6000 </dev/null'",
        );
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("p5432") && text.contains("p6000") {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "server did not start: {}",
        h.run("docker ps -a; docker logs srv 2>&1 | tail")
    );
}

/// Whether a fresh container on `network` gets the server's answer on `port` (2 s timeout).
fn reaches(h: &Host, network: &str, port: u16) -> bool {
    let out = h.ssh(&format!(
        "docker run --rm --network {network} bb nc -w 2 {SERVER} {port} </dev/null"
    ));
    String::from_utf8_lossy(&out.stdout).contains(&format!("p{port}"))
}

/// Docker's own filter rules (FORWARD and the DOCKER* chains), SLICE's lines and counters left
/// out, in iptables-save's order.
fn docker_rules(h: &Host) -> Vec<String> {
    h.run("iptables-save -t filter")
        .lines()
        .filter(|l| {
            (l.starts_with(":DOCKER") || l.starts_with("-A DOCKER") || l.starts_with("-A FORWARD"))
                && !l.contains("SLICE")
        })
        .map(|l| match l.find(" [") {
            Some(i) if l.starts_with(':') => l[..i].to_string(),
            _ => l.to_string(),
        })
        .collect()
}

fn docker_user(h: &Host) -> Vec<String> {
    h.run("iptables -S DOCKER-USER")
        .lines()
        .map(str::to_string)
        .collect()
}

fn show(r: &Run) -> String {
    format!("--- stdout\n{}\n--- stderr\n{}", r.stdout, r.stderr)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Everything up to and including the first apply; returns the host, the controller, the
/// inventory path and Docker's rules as they were before SLICE.
fn applied() -> (Host, Controller, String, Vec<String>) {
    let h = docker_host();
    networks_and_server(&h);
    let c = Controller::new(&[&h]);
    let inv = c.inventory(&[(&h.name(), h.ip(), "root", false)]);
    let inv = inv.to_str().unwrap().to_string();
    c.write("site.yml", PLAYBOOK);

    // Before SLICE: same network reaches both ports, Docker isolates front from back.
    assert!(reaches(&h, "back", 5432), "same network before SLICE");
    assert!(reaches(&h, "back", 6000), "same network before SLICE");
    assert!(
        !reaches(&h, "front", 5432),
        "Docker isolates user networks before SLICE"
    );
    let before = docker_rules(&h);
    assert!(
        before
            .iter()
            .any(|l| l.starts_with("-A DOCKER-ISOLATION-STAGE-2 -o br-") && l.ends_with("-j DROP")),
        "{before:#?}"
    );
    assert_eq!(
        docker_user(&h),
        ["-N DOCKER-USER", "-A DOCKER-USER -j RETURN"]
    );

    let check = c.slice(&["check", "site.yml", "-i", &inv]);
    check.expect(2);
    assert!(
        check.stdout.contains("SLICE-DOCKER-USER rule 1: (none) → -s 172.30.1.0/24 -d 172.30.2.0/24 -p tcp --dport 5432 -j ACCEPT"),
        "{}",
        show(&check)
    );
    let t0 = Instant::now();
    let apply = c.slice(&["apply", "site.yml", "-i", &inv]);
    apply.expect(0);
    eprintln!("apply: {:?}", t0.elapsed());
    (h, c, inv, before)
}

#[test]
fn a_flow_crosses_docker_isolation_for_one_port_only_survives_a_docker_restart_and_converges() {
    let t_all = Instant::now();
    let (h, c, inv, before) = applied();

    // What a user sees: the allowed port connects across networks, the other does not, and
    // traffic inside `back` is still left to Docker.
    assert!(reaches(&h, "front", 5432), "the flow front → back:5432");
    assert!(
        !reaches(&h, "front", 6000),
        "front → back:6000 stays blocked"
    );
    assert!(reaches(&h, "back", 6000), "inside back: left to Docker");

    // SLICE's hook first in DOCKER-USER, Docker's RETURN after it, Docker's chains as they were.
    assert_eq!(
        docker_user(&h),
        [
            "-N DOCKER-USER",
            "-A DOCKER-USER -j SLICE-DOCKER-USER",
            "-A DOCKER-USER -j RETURN"
        ]
    );
    assert_eq!(docker_rules(&h), before, "Docker's chains untouched");
    assert_eq!(
        h.run("iptables -S SLICE-DOCKER-USER"),
        "-N SLICE-DOCKER-USER\n\
         -A SLICE-DOCKER-USER -s 172.30.1.0/24 -d 172.30.2.0/24 -p tcp -m tcp --dport 5432 -j ACCEPT\n\
         -A SLICE-DOCKER-USER -s 172.30.1.0/24 -d 172.30.2.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A SLICE-DOCKER-USER -s 172.30.2.0/24 -d 172.30.1.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A SLICE-DOCKER-USER -s 172.30.1.0/24 -d 172.30.2.0/24 -j DROP\n\
         -A SLICE-DOCKER-USER -s 172.30.2.0/24 -d 172.30.1.0/24 -j DROP\n"
    );

    // Persistence: the rules file, and a unit systemd has enabled and orders before docker.
    h.run("iptables-restore --test --noflush /etc/slice/firewall.rules");
    assert_eq!(
        h.run("systemctl is-enabled slice-firewall.service"),
        "enabled\n"
    );
    let unit = h.run("systemctl cat slice-firewall.service");
    for line in [
        "DefaultDependencies=no",
        "Before=network-pre.target docker.service",
        "WantedBy=sysinit.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}:\n{unit}");
    }
    let after = h.run("systemctl show -p After docker.service");
    assert!(after.contains("slice-firewall.service"), "{after}");
    assert_eq!(
        h.run("readlink /etc/systemd/system/sysinit.target.wants/slice-firewall.service"),
        "/etc/systemd/system/slice-firewall.service\n"
    );

    // In sync; a second apply changes nothing.
    c.slice(&["check", "site.yml", "-i", &inv]).expect(0);
    let again = c.slice(&["apply", "site.yml", "-i", &inv]);
    again.expect(0);
    assert!(
        again.lines_starting("CHANGED").is_empty(),
        "{}",
        show(&again)
    );
    assert_eq!(docker_rules(&h), before);

    // A docker restart: dockerd rebuilds its rules and keeps DOCKER-USER as it finds it.
    let t0 = Instant::now();
    h.run("systemctl restart docker");
    server_ready(&h);
    eprintln!("docker restart, server back: {:?}", t0.elapsed());

    assert_eq!(
        docker_user(&h),
        [
            "-N DOCKER-USER",
            "-A DOCKER-USER -j SLICE-DOCKER-USER",
            "-A DOCKER-USER -j RETURN"
        ],
        "dockerd keeps DOCKER-USER with SLICE's hook first"
    );
    // dockerd rebuilds its rules; the order of the networks' rules may differ, their set not.
    assert_eq!(sorted(docker_rules(&h)), sorted(before.clone()));
    assert!(
        reaches(&h, "front", 5432),
        "the flow after a docker restart"
    );
    assert!(!reaches(&h, "front", 6000));
    c.slice(&["check", "site.yml", "-i", &inv]).expect(0);

    // The boot unit itself puts back what was lost: SLICE's chains and hook gone by hand, the
    // unit started as at boot (docker already running here).
    h.run("iptables -D DOCKER-USER -j SLICE-DOCKER-USER && iptables -F SLICE-DOCKER-USER && iptables -X SLICE-DOCKER-USER");
    assert!(!reaches(&h, "front", 5432), "isolation again without SLICE");
    c.slice(&["check", "site.yml", "-i", &inv]).expect(2);
    h.run("systemctl restart slice-firewall.service");
    assert_eq!(
        docker_user(&h)[1],
        "-A DOCKER-USER -j SLICE-DOCKER-USER",
        "the unit inserts the hook first"
    );
    assert!(reaches(&h, "front", 5432), "the flow after the unit ran");
    assert!(!reaches(&h, "front", 6000));
    c.slice(&["check", "site.yml", "-i", &inv]).expect(0);
    assert_eq!(sorted(docker_rules(&h)), sorted(before.clone()));
    eprintln!("whole test: {:?}", t_all.elapsed());
    h.down().unwrap();
}
