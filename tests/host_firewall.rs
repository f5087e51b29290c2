//! `firewall` on real lab hosts (kind a): traffic from this machine's end of the host's own veth
//! is let through or dropped as the rules say, SSH stays open, Docker's chains are untouched,
//! and check/apply converge. Every iptables command runs inside the host, over SSH.

#[path = "fleet/mod.rs"]
mod fleet;
#[path = "lab/mod.rs"]
mod lab;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fleet::Controller;
use lab::{Host, Kind, Lab};

const PLAYBOOK: &str = r#"
name: firewall
tasks:
  - name: host firewall
    firewall:
      backend: iptables
      input_policy: drop
      input:
        - { action: allow, proto: tcp, port: 22, comment: ssh }
        - { action: allow, proto: tcp, port: [8080, '9000:9001'], comment: web }
        - { action: allow, proto: icmp }
      containers:
        - { action: deny, source: 10.99.0.0/16, comment: quarantined }
      flows:
        - { from: 172.18.0.0/16, to: 172.19.0.0/16, proto: tcp, port: 5432 }
"#;

/// Whether a TCP connection from this machine to the host's port opens within a second. Only
/// the host's own veth address is ever dialled.
fn connects(h: &Host, port: u16) -> bool {
    let addr: SocketAddr = format!("{}:{port}", h.ip()).parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// Starts listeners on the host (python's http.server, as the image has python3).
fn listen(h: &Host, ports: &[u16]) {
    for p in ports {
        h.run(&format!(
            "cd /tmp && (setsid python3 -m http.server {p} --bind 0.0.0.0 >/dev/null 2>&1 &) ; true"
        ));
    }
    // Wait until each listens, seen from inside the host (no firewall on loopback).
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let out = h.run("ss -ltnH");
        if ports.iter().all(|p| out.contains(&format!(":{p} "))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("listeners did not start: {}", h.run("ss -ltn"));
}

/// Fake chains in the layout Docker gives them, with a rule each, made before SLICE runs.
const FAKE_DOCKER: &str = "iptables -N DOCKER && iptables -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp --dport 80 -j ACCEPT \
&& iptables -N DOCKER-ISOLATION-STAGE-1 && iptables -A DOCKER-ISOLATION-STAGE-1 -j RETURN \
&& iptables -N DOCKER-USER && iptables -A DOCKER-USER -j RETURN && iptables -A FORWARD -j DOCKER-USER";

fn docker_chains(h: &Host) -> String {
    h.run("iptables-save -t filter | grep -E '^(:DOCKER|-A DOCKER)' | grep -v SLICE | sed 's/\\[[0-9:]*\\]//'")
}

#[test]
fn firewall_filters_real_traffic_and_converges() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    let inv = c.inventory(&[(&h.name(), h.ip(), "root", false)]);
    let inv = inv.to_str().unwrap();
    c.write("site.yml", PLAYBOOK);
    h.run(FAKE_DOCKER);
    let docker_before = docker_chains(&h);
    assert!(
        docker_before.contains("-A DOCKER-ISOLATION-STAGE-1 -j RETURN"),
        "{docker_before}"
    );
    listen(&h, &[8080, 8081, 9001]);
    assert!(connects(&h, 8081), "open before the firewall");

    let t0 = Instant::now();
    let check = c.slice(&["check", "site.yml", "-i", inv]);
    check.expect(2);
    assert!(
        check.stdout.contains("SLICE-INPUT rule 1"),
        "{}",
        check.stdout
    );
    c.slice(&["apply", "site.yml", "-i", inv]).expect(0);
    eprintln!("check + apply: {:?}", t0.elapsed());

    // Allowed ports connect, another does not; SSH still works (each `run` is a new login).
    assert!(connects(&h, 8080));
    assert!(connects(&h, 9001));
    assert!(!connects(&h, 8081), "port 8081 must be dropped");
    assert_eq!(h.run("echo still in"), "still in\n");

    let saved = h.run("iptables-save -t filter");
    assert!(saved.contains("-A INPUT -j SLICE-INPUT\n"), "{saved}");
    assert!(saved.contains("-A SLICE-INPUT -j DROP\n"), "{saved}");
    assert!(
        saved.contains(
            "-A SLICE-DOCKER-USER -s 10.99.0.0/16 -m comment --comment quarantined -j DROP\n"
        ),
        "{saved}"
    );
    // Our hook is first in DOCKER-USER, Docker's RETURN still after it.
    let user: Vec<&str> = saved
        .lines()
        .filter(|l| l.starts_with("-A DOCKER-USER "))
        .collect();
    assert_eq!(
        user,
        [
            "-A DOCKER-USER -j SLICE-DOCKER-USER",
            "-A DOCKER-USER -j RETURN"
        ]
    );
    assert_eq!(
        docker_chains(&h),
        docker_before,
        "Docker's chains untouched"
    );

    // Persistence: the restore file holds only SLICE's chains and passes iptables' own test.
    let rules = h.run("cat /etc/slice/firewall.rules");
    assert!(
        rules.contains(":SLICE-INPUT - [0:0]\n:SLICE-DOCKER-USER - [0:0]\n"),
        "{rules}"
    );
    assert!(!rules.contains(":DOCKER"), "{rules}");
    h.run("iptables-restore --test --noflush /etc/slice/firewall.rules");
    assert_eq!(h.run("stat -c %a /etc/slice/firewall.rules"), "600\n");
    // Kind a runs no systemd (its init is tini), so SLICE writes no unit there; the unit and
    // its enabling are covered by unit tests on an offline root.
    assert_eq!(
        h.run("test -e /etc/systemd/system/slice-firewall.service || echo none"),
        "none\n"
    );

    // In sync; a second apply changes nothing.
    c.slice(&["check", "site.yml", "-i", inv]).expect(0);
    let again = c.slice(&["apply", "site.yml", "-i", inv]);
    again.expect(0);
    assert!(
        again.lines_starting("CHANGED").is_empty(),
        "{}",
        again.stdout
    );
    assert_eq!(
        docker_chains(&h),
        docker_before,
        "Docker's chains untouched after a second apply"
    );

    // Drift: a rule removed by hand and a duplicate hook are found and repaired.
    h.run("iptables -D SLICE-INPUT -p tcp --dport 8080 -m multiport --dports 8080 -j ACCEPT 2>/dev/null; iptables -D SLICE-INPUT 2 && iptables -A INPUT -j SLICE-INPUT");
    assert!(!connects(&h, 8080));
    let drift = c.slice(&["check", "site.yml", "-i", inv]);
    drift.expect(2);
    assert!(
        drift.stdout.contains("SLICE-INPUT rule 2"),
        "{}",
        drift.stdout
    );
    assert!(
        drift.stdout.contains("INPUT jump to SLICE-INPUT"),
        "{}",
        drift.stdout
    );
    c.slice(&["apply", "site.yml", "-i", inv]).expect(0);
    assert!(connects(&h, 8080));
    assert_eq!(h.run("iptables -S INPUT | grep -c SLICE-INPUT"), "1\n");
    c.slice(&["check", "site.yml", "-i", inv]).expect(0);
    assert_eq!(docker_chains(&h), docker_before);
    h.down().unwrap();
}

#[test]
fn nftables_backend_filters_and_converges() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    let inv = c.inventory(&[(&h.name(), h.ip(), "root", false)]);
    let inv = inv.to_str().unwrap();
    c.write(
        "site.yml",
        &PLAYBOOK.replace("backend: iptables", "backend: nftables"),
    );
    h.run(FAKE_DOCKER);
    let docker_before = docker_chains(&h);
    listen(&h, &[8080, 8081]);
    c.slice(&["check", "site.yml", "-i", inv]).expect(2);
    c.slice(&["apply", "site.yml", "-i", inv]).expect(0);
    assert!(connects(&h, 8080));
    assert!(!connects(&h, 8081), "port 8081 must be dropped");
    assert_eq!(h.run("echo still in"), "still in\n");
    assert_eq!(docker_chains(&h), docker_before);
    h.run("nft -c -f /etc/slice/firewall.nft");
    c.slice(&["check", "site.yml", "-i", inv]).expect(0);
    let again = c.slice(&["apply", "site.yml", "-i", inv]);
    again.expect(0);
    assert!(
        again.lines_starting("CHANGED").is_empty(),
        "{}",
        again.stdout
    );
    h.down().unwrap();
}
