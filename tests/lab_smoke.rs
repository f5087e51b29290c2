//! The lab itself works: hosts of both kinds start, answer over ssh as root and as the sudo
//! users, install from the offline repository, and go away again. Needs root and the lab
//! image (built on first use, about 2 minutes); see tests/lab/README.md.

#[path = "lab/mod.rs"]
mod lab;

use lab::{Kind, Lab};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What every host offers, whatever its kind.
fn common_checks(host: &lab::Host) {
    assert_eq!(host.run("hostname").trim(), host.name());
    host.run("true");
    assert_eq!(host.run("id -un").trim(), "root");

    // `lab`: sudo without a password; `labpw`: sudo that wants its password.
    host.run_as("lab", "sudo -n true");
    let no_password = host.ssh_as("labpw", "sudo -n true");
    assert!(
        !no_password.status.success(),
        "sudo -n must fail for labpw, whose sudo asks for a password"
    );
    host.run_as("labpw", "echo labpw-secret | sudo -S -p '' true");

    // sshd logs one line per exec request; this call and the two before it are three.
    let before = host.exec_requests();
    host.run("true");
    host.run("true");
    assert_eq!(host.exec_requests(), before + 3);

    // The machine's kernel settings are out of reach; the host's own network ones are not.
    let mounts = host.run("cat /proc/self/mountinfo");
    let proc_sys = mounts
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/proc/sys"))
        .expect("/proc/sys is a mount of its own");
    assert!(
        proc_sys
            .split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "/proc/sys must be read-only in a host: {proc_sys}"
    );
    host.run("sysctl -q -w net.ipv4.conf.all.log_martians=1");

    // No way out but this machine's end of the veth.
    assert!(!host.run("ip route").contains("default"));
}

#[test]
fn kind_a_host_answers_and_installs_offline() -> TestResult {
    let host = Lab::any_host(Kind::A)?;
    assert!(host.ip().starts_with("10.200."));
    common_checks(&host);

    host.run("apt-get install -y -q tree");
    assert!(host.run("tree --version").contains("tree"));
    // Files come from the host's own layer: a fresh host would not have tree.
    host.run("test -x /usr/bin/tree");
    host.down()?;
    Ok(())
}

#[test]
fn kind_b_host_boots_systemd() -> TestResult {
    let host = Lab::any_host(Kind::B)?;
    let state = host.ssh("systemctl is-system-running");
    let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
    assert!(
        state == "running" || state == "degraded",
        "systemd is {state:?}"
    );
    common_checks(&host);
    host.run("systemctl is-active ssh");
    assert_eq!(host.run("cat /proc/1/comm").trim(), "systemd");
    Ok(())
}
