//! `sshd` over real SSH against a lab host (kind a: real sshd under tini): hardening applied and
//! sshd reloaded with new logins still working, an invalid value refused with sshd's own
//! message, and settings that would lock out the login user refused before the file changes.

#[path = "fleet/mod.rs"]
mod fleet;
#[path = "lab/mod.rs"]
mod lab;

use fleet::Controller;
use lab::{Host, Kind, Lab};

/// Applies one `sshd` task as `user` (with sudo when not root); the run's result.
fn sshd_task(c: &Controller, h: &Host, user: &str, params: &str, verb: &str) -> fleet::Run {
    c.inventory(&[("web", h.ip(), user, user != "root")]);
    c.write(
        "site.yml",
        &format!("name: sshd\ntasks:\n  - name: sshd\n    sshd: {params}\n"),
    );
    c.slice(&[verb, "site.yml", "-i", "inventory.yml"])
}

/// Read through `lab`'s sudo, which works whatever root's login allows.
fn config(h: &Host) -> String {
    h.run_as("lab", "sudo -n cat /etc/ssh/sshd_config")
}

#[test]
fn sshd_settings_are_validated_and_never_lock_the_login_out() {
    let h = Lab::any_host(Kind::A).unwrap();
    let c = Controller::new(&[&h]);
    let pid = h.run("cat /run/sshd.pid");

    // (a) Hardening as root: applied, sshd reloaded (SIGHUP: same pid), a new login works.
    let hardening = "{ settings: { PermitRootLogin: prohibit-password, PasswordAuthentication: \"no\", X11Forwarding: \"no\", MaxAuthTries: 4 } }";
    let run = sshd_task(&c, &h, "root", hardening, "apply");
    run.expect(0);
    assert!(run.stdout.contains("sshd reloaded"), "{}", run.stdout);
    let text = config(&h);
    for line in [
        "\nPermitRootLogin prohibit-password\n",
        "\nPasswordAuthentication no\n",
        "\nX11Forwarding no\n",
        "\nMaxAuthTries 4\n",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    assert!(!text.contains("X11Forwarding yes"));
    assert_eq!(h.run("cat /run/sshd.pid"), pid, "reloaded, not restarted");
    assert!(h.run("grep -c 'Received SIGHUP' /var/log/sshd.log").trim() != "0");
    assert_eq!(
        h.run("echo fresh"),
        "fresh\n",
        "a new ssh login still works"
    );
    assert_eq!(
        h.run("sshd -T | grep -E '^(maxauthtries|x11forwarding) '"),
        "maxauthtries 4\nx11forwarding no\n"
    );
    sshd_task(&c, &h, "root", hardening, "check").expect(0);

    // (b) An invalid value: sshd's message, the file kept, no temporary file left behind.
    let before = config(&h);
    let run = sshd_task(
        &c,
        &h,
        "root",
        "{ settings: { MaxAuthTries: lots } }",
        "apply",
    );
    run.expect(4);
    assert!(
        run.stdout.contains("sshd refuses the new /etc/ssh/sshd_config, which is left unchanged: /etc/ssh/sshd_config line")
            && run.stdout.contains("MaxAuthTries integer value invalid."),
        "{}",
        run.stdout
    );
    assert_eq!(config(&h), before);
    assert_eq!(h.run("ls -A /etc/ssh | grep -c slice-new || true"), "0\n");

    // (c) Root logins off while SLICE is root: refused, file unchanged.
    let no_root = "{ settings: { PermitRootLogin: \"no\" } }";
    let run = sshd_task(&c, &h, "root", no_root, "apply");
    run.expect(4);
    assert!(
        run.stdout.contains(
            "refusing to lock out root, the user SLICE logs in as: PermitRootLogin no refuses root"
        ) && run.stdout.contains("set `force: true` to apply anyway"),
        "{}",
        run.stdout
    );
    assert_eq!(config(&h), before);
    // As `lab` with sudo the same change is fine, and the host then refuses new root logins.
    sshd_task(&c, &h, "lab", no_root, "apply").expect(0);
    assert!(config(&h).contains("\nPermitRootLogin no\n"));
    let root = h.ssh("true");
    assert!(!root.status.success(), "root login still accepted");
    assert!(
        String::from_utf8_lossy(&root.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&root.stderr)
    );
    assert_eq!(h.run_as("lab", "echo still"), "still\n");

    // (d) AllowUsers without the login user: refused for lab.
    let run = sshd_task(
        &c,
        &h,
        "lab",
        "{ settings: { AllowUsers: somebody } }",
        "apply",
    );
    run.expect(4);
    assert!(
        run.stdout.contains("refusing to lock out lab, the user SLICE logs in as: AllowUsers somebody does not include lab"),
        "{}",
        run.stdout
    );
    assert!(!config(&h).contains("AllowUsers"));

    // Restore root logins, through lab, and prove them.
    sshd_task(
        &c,
        &h,
        "lab",
        "{ settings: { PermitRootLogin: prohibit-password } }",
        "apply",
    )
    .expect(0);
    assert_eq!(h.run("echo back"), "back\n");
    h.down().unwrap();
}
