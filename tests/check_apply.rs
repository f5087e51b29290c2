//! The main cycle as a user runs it: check, apply, apply again, check again, on temporary roots
//! (or, for handlers, on local paths that all lie inside a temporary directory).

mod common;

use std::fs;
use std::path::Path;

use common::{body_of, headers, needs_root, repo_playbook, Slice};
use serde_json::Value;

const SSHD: &str = "#PermitRootLogin prohibit-password\nPasswordAuthentication no\n";
const DAEMON: &str = r#"{"debug": true, "icc": true}"#;

/// A root as a fresh image might have it: an sshd_config with the default commented out, and a
/// daemon.json with a key of its own and one that must change.
fn example_root() -> Slice {
    let s = Slice::new();
    s.write_root("etc/ssh/sshd_config", SSHD, 0o644);
    s.write_root("etc/docker/daemon.json", DAEMON, 0o644);
    s
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn example_playbook_check_apply_converges() {
    if !needs_root("example_playbook_check_apply_converges") {
        return;
    }
    let s = example_root();
    let pb = repo_playbook("example.yml");

    let check = s.run_root("check", &pb, &[]);
    check.expect_code(2);
    assert_eq!(check.stderr, "");
    let report = s.normalise(&check.stdout);
    assert_eq!(
        headers(&report),
        lines(&[
            "PASS    directory[/etc/docker]  docker-daemon: /etc/docker owned by root, not writable by others  [SLICE-DOCKER-ETC-DIR, CIS docker-1.6.0 3.5, 3.6]",
            "DRIFT   directory[/etc/profile.d]  docker-daemon: /etc/profile.d",
            "DRIFT   file[/etc/profile.d/docker-content-trust.sh]  docker-daemon: content trust for login shells  [SLICE-DOCKER-CONTENT-TRUST]",
            "SKIP    permissions[docker-daemon: docker socket only for root and the docker group]  docker-daemon: docker socket only for root and the docker group  [SLICE-DOCKER-SOCKET, CIS docker-1.6.0 3.15, 3.16]",
            "SKIP    permissions[docker-daemon: containerd socket only for root]  docker-daemon: containerd socket only for root  [SLICE-CONTAINERD-SOCKET, CIS docker-1.6.0 3.23, 3.24]",
            "SKIP    permissions[docker-daemon: docker.service unit not writable by others]  docker-daemon: docker.service unit not writable by others  [SLICE-DOCKER-SERVICE-UNIT, CIS docker-1.6.0 3.1, 3.2]",
            "SKIP    permissions[docker-daemon: docker.socket unit not writable by others]  docker-daemon: docker.socket unit not writable by others  [SLICE-DOCKER-SOCKET-UNIT, CIS docker-1.6.0 3.3, 3.4]",
            "PASS    permissions[/etc/default/docker]  docker-daemon: docker defaults file not writable by others  [SLICE-DOCKER-DEFAULTS-FILE, CIS docker-1.6.0 3.19, 3.20, 3.21, 3.22]",
            "SKIP    permissions[docker-daemon: TLS CA certificate read-only, owned by root]  docker-daemon: TLS CA certificate read-only, owned by root  [SLICE-DOCKER-TLS-CA, CIS docker-1.6.0 3.9, 3.10]",
            "SKIP    permissions[docker-daemon: TLS server certificate read-only, owned by root]  docker-daemon: TLS server certificate read-only, owned by root  [SLICE-DOCKER-TLS-CERT, CIS docker-1.6.0 3.11, 3.12]",
            "SKIP    permissions[docker-daemon: TLS private key readable by root only]  docker-daemon: TLS private key readable by root only  [SLICE-DOCKER-TLS-KEY, CIS docker-1.6.0 3.13, 3.14]",
            "PASS    directory[/etc/docker]  docker config dir",
            "DRIFT   json[/etc/docker/daemon.json]  docker-daemon: inter-container traffic restricted  [SLICE-DOCKER-ICC, CIS docker-1.6.0 2.2]",
            "DRIFT   json[/etc/docker/daemon.json]  docker-daemon: log level  [SLICE-DOCKER-LOG-LEVEL, CIS docker-1.6.0 2.3]",
            "DRIFT   json[/etc/docker/daemon.json]  docker-daemon: no new privileges  [SLICE-DOCKER-NO-NEW-PRIVILEGES, CIS docker-1.6.0 2.14]",
            "DRIFT   json[/etc/docker/daemon.json]  docker-daemon: live restore  [SLICE-DOCKER-LIVE-RESTORE, CIS docker-1.6.0 2.15]",
            "DRIFT   json[/etc/docker/daemon.json]  docker-daemon: userland proxy off  [SLICE-DOCKER-USERLAND-PROXY, CIS docker-1.6.0 2.16]",
            "DRIFT   json[/etc/docker/daemon.json]  daemon.json hardening",
            "DRIFT   line[/etc/ssh/sshd_config]  no root login over ssh",
            "SKIP    command[restart docker]  restart docker",
            "localhost:ROOT: 20 tasks, 3 pass, 9 drift, 0 fail, 8 skip in X ms",
            "exit code 2",
        ])
    );
    // The module's icc task: one key change, then the file as it would be written.
    assert_eq!(
        body_of(
            &report,
            "DRIFT   json[/etc/docker/daemon.json]  docker-daemon: inter-container traffic restricted  [SLICE-DOCKER-ICC, CIS docker-1.6.0 2.2]"
        ),
        lines(&[
            "key icc: true → false",
            "--- /etc/docker/daemon.json (now)",
            "+++ /etc/docker/daemon.json (wanted)",
            "@@ -1 +1,4 @@",
            r#"-{"debug": true, "icc": true}"#,
            r"\ No newline at end of file",
            "+{",
            r#"+  "debug": true,"#,
            r#"+  "icc": false"#,
            "+}",
        ])
    );
    let hardening = body_of(
        &report,
        "DRIFT   json[/etc/docker/daemon.json]  daemon.json hardening",
    );
    assert_eq!(
        hardening[..3],
        lines(&[
            "key icc: true → false",
            r#"key log-level: "info""#,
            "key no-new-privileges: true",
        ])
    );
    assert_eq!(
        body_of(
            &report,
            "DRIFT   line[/etc/ssh/sshd_config]  no root login over ssh"
        ),
        lines(&[
            "--- /etc/ssh/sshd_config (now)",
            "+++ /etc/ssh/sshd_config (wanted)",
            "@@ -1,2 +1,2 @@",
            "-#PermitRootLogin prohibit-password",
            "+PermitRootLogin no",
            " PasswordAuthentication no",
        ])
    );
    assert_eq!(
        body_of(&report, "SKIP    command[restart docker]  restart docker"),
        lines(&["when: facts.live is false"])
    );

    let apply = s.run_root("apply", &pb, &[]);
    apply.expect_code(0);
    assert_eq!(apply.stderr, "");
    let report = s.normalise(&apply.stdout);
    assert_eq!(
        headers(&report),
        lines(&[
            "OK      directory[/etc/docker]  docker-daemon: /etc/docker owned by root, not writable by others  [SLICE-DOCKER-ETC-DIR, CIS docker-1.6.0 3.5, 3.6]",
            "CHANGED directory[/etc/profile.d]  docker-daemon: /etc/profile.d",
            "CHANGED file[/etc/profile.d/docker-content-trust.sh]  docker-daemon: content trust for login shells  [SLICE-DOCKER-CONTENT-TRUST]",
            "SKIP    permissions[docker-daemon: docker socket only for root and the docker group]  docker-daemon: docker socket only for root and the docker group  [SLICE-DOCKER-SOCKET, CIS docker-1.6.0 3.15, 3.16]",
            "SKIP    permissions[docker-daemon: containerd socket only for root]  docker-daemon: containerd socket only for root  [SLICE-CONTAINERD-SOCKET, CIS docker-1.6.0 3.23, 3.24]",
            "SKIP    permissions[docker-daemon: docker.service unit not writable by others]  docker-daemon: docker.service unit not writable by others  [SLICE-DOCKER-SERVICE-UNIT, CIS docker-1.6.0 3.1, 3.2]",
            "SKIP    permissions[docker-daemon: docker.socket unit not writable by others]  docker-daemon: docker.socket unit not writable by others  [SLICE-DOCKER-SOCKET-UNIT, CIS docker-1.6.0 3.3, 3.4]",
            "OK      permissions[/etc/default/docker]  docker-daemon: docker defaults file not writable by others  [SLICE-DOCKER-DEFAULTS-FILE, CIS docker-1.6.0 3.19, 3.20, 3.21, 3.22]",
            "SKIP    permissions[docker-daemon: TLS CA certificate read-only, owned by root]  docker-daemon: TLS CA certificate read-only, owned by root  [SLICE-DOCKER-TLS-CA, CIS docker-1.6.0 3.9, 3.10]",
            "SKIP    permissions[docker-daemon: TLS server certificate read-only, owned by root]  docker-daemon: TLS server certificate read-only, owned by root  [SLICE-DOCKER-TLS-CERT, CIS docker-1.6.0 3.11, 3.12]",
            "SKIP    permissions[docker-daemon: TLS private key readable by root only]  docker-daemon: TLS private key readable by root only  [SLICE-DOCKER-TLS-KEY, CIS docker-1.6.0 3.13, 3.14]",
            "OK      directory[/etc/docker]  docker config dir",
            "CHANGED json[/etc/docker/daemon.json]  docker-daemon: inter-container traffic restricted  [SLICE-DOCKER-ICC, CIS docker-1.6.0 2.2]",
            "CHANGED json[/etc/docker/daemon.json]  docker-daemon: log level  [SLICE-DOCKER-LOG-LEVEL, CIS docker-1.6.0 2.3]",
            "CHANGED json[/etc/docker/daemon.json]  docker-daemon: no new privileges  [SLICE-DOCKER-NO-NEW-PRIVILEGES, CIS docker-1.6.0 2.14]",
            "CHANGED json[/etc/docker/daemon.json]  docker-daemon: live restore  [SLICE-DOCKER-LIVE-RESTORE, CIS docker-1.6.0 2.15]",
            "CHANGED json[/etc/docker/daemon.json]  docker-daemon: userland proxy off  [SLICE-DOCKER-USERLAND-PROXY, CIS docker-1.6.0 2.16]",
            // The module's tasks already set what this task asks for.
            "OK      json[/etc/docker/daemon.json]  daemon.json hardening",
            "CHANGED line[/etc/ssh/sshd_config]  no root login over ssh",
            "SKIP    command[restart docker]  restart docker",
            "localhost:ROOT: 20 tasks, 4 ok, 8 changed, 0 fail, 8 skip in X ms",
            "exit code 0",
        ])
    );
    // Apply mode walks the tasks in order: each one's change is against what the one before wrote.
    assert_eq!(
        body_of(
            &report,
            "CHANGED json[/etc/docker/daemon.json]  docker-daemon: log level  [SLICE-DOCKER-LOG-LEVEL, CIS docker-1.6.0 2.3]"
        ),
        lines(&[
            r#"key log-level: "info""#,
            "--- /etc/docker/daemon.json (now)",
            "+++ /etc/docker/daemon.json (wanted)",
            "@@ -1,4 +1,5 @@",
            " {",
            r#"   "debug": true,"#,
            r#"-  "icc": false"#,
            r#"+  "icc": false,"#,
            r#"+  "log-level": "info""#,
            " }",
        ])
    );

    // The key daemon.json had of its own stays first; managed keys follow in task order.
    assert_eq!(
        s.read_root("etc/docker/daemon.json"),
        "{\n  \"debug\": true,\n  \"icc\": false,\n  \"log-level\": \"info\",\n  \"no-new-privileges\": true,\n  \"live-restore\": true,\n  \"userland-proxy\": false\n}\n"
    );
    assert_eq!(
        s.read_root("etc/ssh/sshd_config"),
        "PermitRootLogin no\nPasswordAuthentication no\n"
    );
    assert_eq!(
        s.read_root("etc/profile.d/docker-content-trust.sh"),
        "# Managed by SLICE (module docker-daemon): changes here are reported as drift and overwritten.\n\
         # Docker Content Trust: docker pull/run/build accept only signed images.\n\
         export DOCKER_CONTENT_TRUST=1\n"
    );

    let again = s.run_root("apply", &pb, &[]);
    again.expect_code(0);
    let report = s.normalise(&again.stdout);
    assert!(
        !report.lines().any(|l| l.starts_with("CHANGED")),
        "{report}"
    );
    assert!(
        report.contains(
            "localhost:ROOT: 20 tasks, 12 ok, 0 changed, 0 fail, 8 skip in X ms\nexit code 0\n"
        ),
        "{report}"
    );

    let check = s.run_root("check", &pb, &[]);
    check.expect_code(0);
    let report = s.normalise(&check.stdout);
    let hs = headers(&report);
    let (tasks, tail) = hs.split_at(hs.len() - 2);
    assert_eq!(tasks.len(), 20);
    for h in tasks {
        assert!(
            h.starts_with("PASS    ") || h.starts_with("SKIP    "),
            "{h}"
        );
    }
    assert_eq!(
        tail,
        lines(&[
            "localhost:ROOT: 20 tasks, 12 pass, 0 drift, 0 fail, 8 skip in X ms",
            "exit code 0",
        ])
    );
}

#[test]
fn builtin_container_host_on_an_empty_root() {
    if !needs_root("builtin_container_host_on_an_empty_root") {
        return;
    }
    let s = Slice::new();
    let root = s.root();
    let root = root.to_str().unwrap();

    let check = s.run(["check", "--root", root]);
    check.expect_code(2);
    let report = s.normalise(&check.stdout);
    assert!(
        report.ends_with(
            "localhost:ROOT: 24 tasks, 1 pass, 15 drift, 0 fail, 8 skip in X ms\nexit code 2\n"
        ),
        "{report}"
    );
    assert_eq!(
        body_of(
            &report,
            "DRIFT   directory[/etc/docker]  docker-daemon: /etc/docker owned by root, not writable by others  [SLICE-DOCKER-ETC-DIR, CIS docker-1.6.0 3.5, 3.6]"
        ),
        lines(&[
            "state: absent → directory",
            "parent directories: /etc",
            "mode: 0755",
            "owner: root",
            "group: root",
        ])
    );
    // Check mode created nothing.
    assert_eq!(fs::read_dir(s.root()).unwrap().count(), 0);

    let apply = s.run(["apply", "--root", root]);
    apply.expect_code(0);
    assert!(
        s.normalise(&apply.stdout).ends_with(
            "localhost:ROOT: 24 tasks, 1 ok, 15 changed, 0 fail, 8 skip in X ms\nexit code 0\n"
        ),
        "{}",
        apply.stdout
    );

    let check = s.run(["check", "--root", root]);
    check.expect_code(0);
    let report = s.normalise(&check.stdout);
    assert!(
        report.ends_with(
            "localhost:ROOT: 24 tasks, 16 pass, 0 drift, 0 fail, 8 skip in X ms\nexit code 0\n"
        ),
        "{report}"
    );

    for (path, mode) in [
        ("etc", 0o755),
        ("etc/docker", 0o755),
        ("etc/docker/daemon.json", 0o644),
        ("etc/profile.d", 0o755),
        ("etc/profile.d/docker-content-trust.sh", 0o644),
        ("etc/sysctl.d", 0o755),
        ("etc/sysctl.d/90-slice-container-host.conf", 0o644),
    ] {
        assert_eq!(s.mode_in_root(path), mode, "mode of {path}");
    }
    assert_eq!(
        s.read_root("etc/docker/daemon.json"),
        "{\n  \"icc\": false,\n  \"log-level\": \"info\",\n  \"no-new-privileges\": true,\n  \"live-restore\": true,\n  \"userland-proxy\": false\n}\n"
    );
    assert_eq!(
        s.read_root("etc/sysctl.d/90-slice-container-host.conf"),
        "net.ipv4.ip_forward = 1\n\
         net.ipv4.conf.all.accept_redirects = 0\n\
         net.ipv4.conf.all.send_redirects = 0\n\
         net.ipv4.conf.all.accept_source_route = 0\n\
         net.ipv4.tcp_syncookies = 1\n\
         net.ipv4.conf.all.log_martians = 1\n"
    );
}

/// Two plain files, no owner: runs as any user.
const TWO_FILES: &str = "\
tasks:
  - name: motd
    file: { path: /etc/motd, content: \"authorised use only\\n\", mode: \"0644\" }
  - name: issue
    file: { path: /etc/issue, content: \"hello\\n\" }
";

#[test]
fn detailed_exitcodes_say_whether_apply_changed_something() {
    let s = Slice::new();
    s.mkdir_root("etc");
    s.write("play.yml", TWO_FILES);

    let first = s.run_root("apply", "play.yml", &["--detailed-exitcodes"]);
    first.expect_code(2);
    assert!(first.stdout.ends_with("exit code 2\n"), "{}", first.stdout);
    assert_eq!(s.read_root("etc/motd"), "authorised use only\n");

    let second = s.run_root("apply", "play.yml", &["--detailed-exitcodes"]);
    second.expect_code(0);
    assert!(
        second.stdout.ends_with("exit code 0\n"),
        "{}",
        second.stdout
    );

    // One file drifts back: 2 again, and without the flag a change is still success.
    s.write_root("etc/issue", "tampered\n", 0o644);
    s.run_root("apply", "play.yml", &[]).expect_code(0);
    s.write_root("etc/issue", "tampered\n", 0o644);
    s.run_root("apply", "play.yml", &["--detailed-exitcodes"])
        .expect_code(2);
}

#[test]
fn json_report_has_the_documented_schema() {
    if !needs_root("json_report_has_the_documented_schema") {
        return;
    }
    let s = example_root();
    let pb = repo_playbook("example.yml");
    let out = s.run_root("check", &pb, &["--format", "json"]);
    out.expect_code(2);
    assert_eq!(out.stderr, "");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();

    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        keys(&doc),
        ["slice", "mode", "playbook", "exit_code", "summary", "hosts"]
    );
    assert_eq!(doc["slice"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["mode"], "check");
    assert_eq!(doc["playbook"], pb.to_str().unwrap());
    assert_eq!(doc["exit_code"], 2);
    let summary = serde_json::json!({
        "tasks": 20, "pass": 3, "drift": 9, "changed": 0, "fail": 0, "skip": 8, "deselected": 0,
        "hosts_failed": 0
    });
    assert_eq!(doc["summary"], summary);
    assert_eq!(
        keys(&doc["summary"]),
        [
            "tasks",
            "pass",
            "drift",
            "changed",
            "fail",
            "skip",
            "deselected",
            "hosts_failed"
        ]
    );

    let hosts = doc["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1);
    let host = &hosts[0];
    assert_eq!(host["host"], format!("localhost:{}", s.root_display()));
    assert_eq!(host["summary"], summary);
    assert_eq!(host["error"], Value::Null);
    let tasks = host["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 20);
    for t in tasks {
        assert_eq!(
            keys(t),
            [
                "name",
                "id",
                "kind",
                "source",
                "handler",
                "control",
                "cis",
                "level",
                "status",
                "changes",
                "message",
                "duration_ms"
            ],
            "{t}"
        );
        assert!(t["duration_ms"].as_f64().unwrap() >= 0.0, "{t}");
        assert!(t["cis"].is_object(), "{t}");
        assert!(
            ["pass", "drift", "skip"].contains(&t["status"].as_str().unwrap()),
            "{t}"
        );
        let changes = t["changes"].as_array().unwrap();
        assert_eq!(changes.is_empty(), t["status"] != "drift", "{t}");
        for c in changes {
            let ks = keys(c);
            assert_eq!(ks[0], "what", "{c}");
            assert!(
                ks == ["what", "before", "after"]
                    || ks == ["what", "after"]
                    || ks == ["what", "diff"],
                "unexpected change shape {c}"
            );
        }
    }

    let icc = tasks
        .iter()
        .find(|t| t["name"] == "docker-daemon: inter-container traffic restricted")
        .unwrap();
    assert_eq!(icc["id"], "json[/etc/docker/daemon.json]");
    assert_eq!(icc["kind"], "json");
    assert_eq!(icc["handler"], false);
    assert_eq!(icc["control"], "SLICE-DOCKER-ICC");
    assert_eq!(icc["cis"], serde_json::json!({"docker-1.6.0": "2.2"}));
    assert_eq!(icc["level"], "must");
    assert_eq!(icc["status"], "drift");
    assert_eq!(icc["message"], Value::Null);
    assert!(
        icc["source"]
            .as_str()
            .unwrap()
            .contains("modules/docker-daemon/module.yml:"),
        "{icc}"
    );
    let changes = icc["changes"].as_array().unwrap();
    assert_eq!(
        changes[0],
        serde_json::json!({"what": "key icc", "before": "true", "after": "false"})
    );
    assert_eq!(changes[1]["what"], "content");
    assert_eq!(
        changes[1]["diff"],
        "--- /etc/docker/daemon.json (now)\n+++ /etc/docker/daemon.json (wanted)\n@@ -1 +1,4 @@\n\
         -{\"debug\": true, \"icc\": true}\n\\ No newline at end of file\n+{\n+  \"debug\": true,\n+  \"icc\": false\n+}\n"
    );

    let ssh = tasks
        .iter()
        .find(|t| t["name"] == "no root login over ssh")
        .unwrap();
    assert_eq!(
        ssh["source"],
        format!("{}:17", pb.display()),
        "the task's name is on line 17 of example.yml"
    );
    assert_eq!(ssh["control"], Value::Null);
    assert_eq!(ssh["level"], Value::Null);
    assert_eq!(ssh["cis"], serde_json::json!({}));

    let handler = tasks
        .iter()
        .find(|t| t["name"] == "restart docker")
        .unwrap();
    assert_eq!(handler["handler"], true);
    assert_eq!(handler["status"], "skip");
    assert_eq!(handler["message"], "when: facts.live is false");

    // Apply's document says "apply" and counts changes.
    let apply = s.run_root("apply", &pb, &["--format", "json"]);
    apply.expect_code(0);
    let doc: Value = serde_json::from_str(&apply.stdout).unwrap();
    assert_eq!(doc["mode"], "apply");
    assert_eq!(
        doc["summary"],
        serde_json::json!({
            "tasks": 20, "pass": 4, "drift": 0, "changed": 8, "fail": 0, "skip": 8, "deselected": 0,
            "hosts_failed": 0
        })
    );
}

#[test]
fn output_option_writes_the_report_to_a_file() {
    let s = Slice::new();
    s.mkdir_root("etc");
    s.write("play.yml", TWO_FILES);

    let to_stdout = s.run_root("check", "play.yml", &[]);
    to_stdout.expect_code(2);

    let to_file = s.run_root("check", "play.yml", &["--output", "report.txt"]);
    to_file.expect_code(2);
    assert_eq!(to_file.stdout, "");
    assert_eq!(to_file.stderr, "");
    let written = fs::read_to_string(s.path().join("report.txt")).unwrap();
    assert_eq!(s.normalise(&written), s.normalise(&to_stdout.stdout));
    assert!(
        written.starts_with("DRIFT   file[/etc/motd]  motd\n"),
        "{written}"
    );

    let json = s.run_root(
        "check",
        "play.yml",
        &["-o", "report.json", "--format", "json"],
    );
    json.expect_code(2);
    assert_eq!(json.stdout, "");
    let doc: Value =
        serde_json::from_str(&fs::read_to_string(s.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(doc["summary"]["drift"], 2);
}

const TAGGED: &str = "\
vars:
  flag: true
tasks:
  - name: ssh banner
    file: { path: /etc/ssh-banner, content: \"ssh\\n\" }
    tags: [ssh]
  - name: docker flag
    json: { path: /etc/flags.json, set: { flag: \"{{ flag }}\" } }
    tags: docker
  - name: untagged
    file: { path: /etc/untagged, content: \"u\\n\" }
";

#[test]
fn tags_select_tasks_and_extra_vars_override() {
    let s = Slice::new();
    s.mkdir_root("etc");
    s.write("play.yml", TAGGED);

    let out = s.run_root(
        "check",
        "play.yml",
        &["--tags", "docker", "-e", "flag=false"],
    );
    out.expect_code(2);
    assert_eq!(
        s.normalise(&out.stdout),
        "\
DRIFT   json[/etc/flags.json]  docker flag
          state: absent → file
          mode: 0644
          key flag: false
          --- /etc/flags.json (now)
          +++ /etc/flags.json (wanted)
          @@ -0,0 +1,3 @@
          +{
          +  \"flag\": false
          +}
localhost:ROOT: 1 task, 0 pass, 1 drift, 0 fail, 0 skip, 2 not selected in X ms
exit code 2
"
    );

    // The value is YAML: a boolean, not the string "false".
    let json = s.run_root(
        "check",
        "play.yml",
        &["--tags", "docker", "-e", "flag=false", "--format", "json"],
    );
    let doc: Value = serde_json::from_str(&json.stdout).unwrap();
    let change = &doc["hosts"][0]["tasks"][0]["changes"][2];
    assert_eq!(change["what"], "key flag");
    assert_eq!(change["after"], "false");
    assert_eq!(doc["summary"]["deselected"], 2);

    // Several tags, comma-separated: both tagged tasks, not the untagged one.
    let out = s.run_root(
        "apply",
        "play.yml",
        &["--tags", "ssh,docker", "-e", "flag=false"],
    );
    out.expect_code(0);
    assert_eq!(
        headers(&s.normalise(&out.stdout)),
        lines(&[
            "CHANGED file[/etc/ssh-banner]  ssh banner",
            "CHANGED json[/etc/flags.json]  docker flag",
            "localhost:ROOT: 2 tasks, 0 ok, 2 changed, 0 fail, 0 skip, 1 not selected in X ms",
            "exit code 0",
        ])
    );
    assert_eq!(s.read_root("etc/flags.json"), "{\n  \"flag\": false\n}\n");
    assert!(!s.root().join("etc/untagged").exists());

    // Without -e the playbook's own value holds.
    let out = s.run_root("check", "play.yml", &["--tags", "docker"]);
    out.expect_code(2);
    assert_eq!(
        body_of(&out.stdout, "DRIFT   json[/etc/flags.json]  docker flag")[0],
        "key flag: false → true"
    );
}

#[test]
fn handlers_run_once_after_all_tasks_and_only_when_notified() {
    // Local run (no --root): every path the playbook names is inside the temporary directory.
    let s = Slice::new();
    let d = s.path().join("local");
    fs::create_dir(&d).unwrap();
    let d = d.to_str().unwrap();
    fs::write(format!("{d}/three.conf"), "3\n").unwrap();
    s.write(
        "handlers.yml",
        format!(
            "\
tasks:
  - name: conf one
    file: {{ path: {d}/one.conf, content: \"1\\n\" }}
    notify: reload
  - name: conf two
    file: {{ path: {d}/two.conf, content: \"2\\n\" }}
    notify: reload
  - name: conf three
    file: {{ path: {d}/three.conf, content: \"3\\n\" }}
    notify: other
  - name: last
    file: {{ path: {d}/last, content: \"written last\\n\" }}
handlers:
  - name: reload
    command: {{ run: \"cat {d}/last >> {d}/reload.log\" }}
  - name: other
    command: {{ run: \"echo other >> {d}/other.log\", creates: {d}/other.log }}
"
        ),
    );

    let check = s.run(["check", "handlers.yml"]);
    check.expect_code(2);
    assert!(!Path::new(&format!("{d}/reload.log")).exists());
    assert_eq!(
        headers(&check.stdout)[4..6],
        lines(&[
            &format!("DRIFT   command[cat {d}/last >> {d}/reload.log]  reload"),
            &format!("SKIP    command[echo other >> {d}/other.log]  other"),
        ])
    );

    let apply = s.run(["apply", "handlers.yml"]);
    apply.expect_code(0);
    let report = s.normalise(&apply.stdout);
    assert_eq!(
        headers(&report),
        lines(&[
            &format!("CHANGED file[{d}/one.conf]  conf one"),
            &format!("CHANGED file[{d}/two.conf]  conf two"),
            &format!("OK      file[{d}/three.conf]  conf three"),
            &format!("CHANGED file[{d}/last]  last"),
            &format!("CHANGED command[cat {d}/last >> {d}/reload.log]  reload"),
            &format!("SKIP    command[echo other >> {d}/other.log]  other"),
            "localhost: 6 tasks, 1 ok, 4 changed, 0 fail, 1 skip in X ms",
            "exit code 0",
        ])
    );
    assert_eq!(
        body_of(
            &report,
            &format!("SKIP    command[echo other >> {d}/other.log]  other")
        ),
        lines(&["not notified"])
    );
    // Notified twice, run once; and after `last`, which is written after both notifiers.
    assert_eq!(
        fs::read_to_string(format!("{d}/reload.log")).unwrap(),
        "written last\n"
    );
    assert!(!Path::new(&format!("{d}/other.log")).exists());

    let again = s.run(["apply", "handlers.yml"]);
    again.expect_code(0);
    let report = s.normalise(&again.stdout);
    assert!(!report.contains("CHANGED"), "{report}");
    assert_eq!(
        body_of(
            &report,
            &format!("SKIP    command[cat {d}/last >> {d}/reload.log]  reload")
        ),
        lines(&["not notified"])
    );
    assert_eq!(
        fs::read_to_string(format!("{d}/reload.log")).unwrap(),
        "written last\n"
    );

    // A change to three.conf notifies `other`, whose `creates:` guard makes it verifiable.
    fs::write(format!("{d}/three.conf"), "changed\n").unwrap();
    let third = s.run(["apply", "handlers.yml"]);
    third.expect_code(0);
    assert_eq!(
        headers(&third.stdout)[4..6],
        lines(&[
            &format!("SKIP    command[cat {d}/last >> {d}/reload.log]  reload"),
            &format!("CHANGED command[echo other >> {d}/other.log]  other"),
        ])
    );
    assert_eq!(
        fs::read_to_string(format!("{d}/other.log")).unwrap(),
        "other\n"
    );
    assert_eq!(
        fs::read_to_string(format!("{d}/reload.log")).unwrap(),
        "written last\n"
    );
}

const FAILING: &str = "\
tasks:
  - name: sshd setting
    line: { path: /etc/ssh/sshd_config, line: PermitRootLogin no }
  - name: after sshd
    file: { path: /etc/after, content: \"a\\n\" }
    after: sshd setting
  - name: after after
    file: { path: /etc/after2, content: \"b\\n\" }
    after: after sshd
  - name: independent
    file: { path: /etc/independent, content: \"i\\n\" }
";

#[test]
fn a_failed_task_skips_what_depends_on_it_and_nothing_else() {
    let s = Slice::new();
    s.mkdir_root("etc");
    s.write("fail.yml", FAILING);

    let out = s.run_root("apply", "fail.yml", &[]);
    out.expect_code(4);
    assert_eq!(out.stderr, "");
    assert_eq!(
        s.normalise(&out.stdout),
        "\
FAIL    line[/etc/ssh/sshd_config]  sshd setting
          /etc/ssh/sshd_config does not exist; set `create: true` to create it
SKIP    file[/etc/after]  after sshd
          depends on `sshd setting`, which did not succeed
SKIP    file[/etc/after2]  after after
          depends on `after sshd`, which did not succeed
CHANGED file[/etc/independent]  independent
          state: absent → file
          mode: 0644
          --- /etc/independent (now)
          +++ /etc/independent (wanted)
          @@ -0,0 +1 @@
          +i
localhost:ROOT: 4 tasks, 0 ok, 1 changed, 1 fail, 2 skip in X ms
exit code 4
"
    );
    assert_eq!(s.read_root("etc/independent"), "i\n");
    assert!(!s.root().join("etc/after").exists());
    assert!(!s.root().join("etc/after2").exists());
    assert!(!s.root().join("etc/ssh").exists());

    // Failures and changes together: 6 with --detailed-exitcodes.
    fs::remove_file(s.root().join("etc/independent")).unwrap();
    let out = s.run_root("apply", "fail.yml", &["--detailed-exitcodes"]);
    out.expect_code(6);
    assert!(out.stdout.ends_with("exit code 6\n"), "{}", out.stdout);

    // Check mode reports the failure and the drift of the others: 4 + 2.
    let out = s.run_root("check", "fail.yml", &[]);
    out.expect_code(6);
    assert_eq!(
        headers(&s.normalise(&out.stdout)),
        lines(&[
            "FAIL    line[/etc/ssh/sshd_config]  sshd setting",
            "DRIFT   file[/etc/after]  after sshd",
            "DRIFT   file[/etc/after2]  after after",
            "PASS    file[/etc/independent]  independent",
            "localhost:ROOT: 4 tasks, 1 pass, 2 drift, 1 fail, 0 skip in X ms",
            "exit code 6",
        ])
    );
}

/// A file written first whose directory is created by a task written after it.
const ORDERED: &str = "\
tasks:
  - name: app config
    file: { path: /srv/app/app.conf, content: \"x=1\\n\" }
  - name: app dir
    directory: { path: /srv/app, mode: \"0750\" }
  - name: marker
    command: { run: \"true\", creates: /srv/app/.done }
    after: app config
";

#[test]
fn plan_graph_and_validate() {
    let s = Slice::new();
    s.write("plan.yml", ORDERED);

    let plan = s.run_root("plan", "plan.yml", &[]);
    plan.expect_code(0);
    assert_eq!(plan.stderr, "");
    assert_eq!(
        s.normalise(&plan.stdout),
        "\
plan for plan.yml on localhost:ROOT
   1. directory[/srv/app]  app dir  (plan.yml:4)
   2. file[/srv/app/app.conf]  app config  (plan.yml:2)
        after: app dir
   3. command[true]  marker  (plan.yml:6)
        after: app config
"
    );

    let plan = s.run_root("plan", "plan.yml", &["--format", "json"]);
    plan.expect_code(0);
    let doc: Value = serde_json::from_str(&plan.stdout).unwrap();
    let names: Vec<&str> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app dir", "app config", "marker"]);
    assert_eq!(doc["tasks"][1]["after"], serde_json::json!(["app dir"]));

    let dot = s.run_root("graph", "plan.yml", &["--format", "dot"]);
    dot.expect_code(0);
    assert_eq!(
        dot.stdout,
        r#"digraph slice {
  rankdir=LR;
  node [shape=box, fontname="monospace"];
  t1 [label="directory[/srv/app]\napp dir"];
  t0 [label="file[/srv/app/app.conf]\napp config"];
  t2 [label="command[true]\nmarker"];
  t0 -> t2 [label="after"];
  t1 -> t0 [label="inside /srv/app"];
}
"#
    );

    // Nothing was created by any of these.
    assert_eq!(fs::read_dir(s.root()).unwrap().count(), 0);

    let valid = s.run_root("validate", "plan.yml", &[]);
    valid.expect_code(0);
    assert_eq!(valid.stdout, "plan.yml: valid (3 tasks, 0 handlers)\n");
    assert_eq!(valid.stderr, "");
    let valid = s.run(["validate", "plan.yml"]);
    valid.expect_code(0);
    assert_eq!(valid.stdout, "plan.yml: valid (3 tasks, 0 handlers)\n");
}

#[test]
fn validate_reads_no_host_but_wants_an_existing_root() {
    let s = Slice::new();
    // Check would fail this task (no such file); validate does not look.
    s.write(
        "v.yml",
        "\
tasks:
  - name: sshd setting
    line: { path: /etc/ssh/sshd_config, line: PermitRootLogin no }
  - name: only on debian
    file: { path: /etc/debian-only, content: \"x\\n\" }
    when: facts.os_id == \"debian\"
",
    );
    let before = s.snapshot();
    let out = s.run_root("validate", "v.yml", &[]);
    out.expect_code(0);
    assert_eq!(out.stdout, "v.yml: valid (2 tasks, 0 handlers)\n");
    assert_eq!(s.snapshot(), before);
    s.run_root("check", "v.yml", &[]).expect_code(4);

    // A root that does not exist is refused, by validate as by every other command.
    let out = s.run(["validate", "v.yml", "--root", "no-such-root"]);
    out.expect_code(1);
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, "error: no-such-root is not a directory\n");
    let out = s.run(["plan", "v.yml", "--root", "no-such-root"]);
    out.expect_code(1);
    assert_eq!(
        out.stderr,
        "error: cannot use no-such-root as the root directory: No such file or directory (os error 2)\n"
    );
}

/// One task of each kind that can run in check mode against a root, all drifting.
const EVERY_KIND: &str = "\
tasks:
  - name: motd
    file: { path: /etc/motd, content: \"new\\n\", mode: \"0644\" }
  - name: app dir
    directory: { path: /srv/app/data, mode: \"0750\" }
  - name: daemon
    json: { path: /etc/docker/daemon.json, set: { icc: false }, remove: debug }
  - name: sshd
    line: { path: /etc/ssh/sshd_config, regexp: '^#?PermitRootLogin', line: PermitRootLogin no }
  - name: forwarding
    sysctl: { name: net.ipv4.ip_forward, value: 1, file: /etc/sysctl.d/90-test.conf }
  - name: marker
    command: { run: \"touch /etc/marker\", creates: /etc/marker }
  - name: removed
    file: { path: /etc/old.conf, state: absent }
";

#[test]
fn check_changes_nothing() {
    let s = Slice::new();
    s.write_root("etc/motd", "old\n", 0o600);
    s.write_root("etc/docker/daemon.json", DAEMON, 0o640);
    s.write_root("etc/ssh/sshd_config", SSHD, 0o644);
    s.write_root(
        "etc/sysctl.d/90-test.conf",
        "net.ipv4.ip_forward = 0\n",
        0o644,
    );
    s.write_root("etc/old.conf", "stale\n", 0o644);
    s.write("every.yml", EVERY_KIND);

    let before = s.snapshot();
    let out = s.run_root("check", "every.yml", &[]);
    out.expect_code(2);
    let report = s.normalise(&out.stdout);
    assert!(
        report.ends_with(
            "localhost:ROOT: 7 tasks, 0 pass, 7 drift, 0 fail, 0 skip in X ms\nexit code 2\n"
        ),
        "{report}"
    );
    assert_eq!(
        body_of(&report, "DRIFT   file[/etc/motd]  motd")[0],
        "mode: 0600 → 0644"
    );
    assert_eq!(s.snapshot(), before);

    // The same playbook does change the root when applied: the snapshot can tell. The command
    // cannot run: the root has no /bin/sh to run it with (commands run chrooted).
    let apply = s.run_root("apply", "every.yml", &[]);
    apply.expect_code(4);
    assert_ne!(s.snapshot(), before);
    let report = s.normalise(&apply.stdout);
    assert_eq!(
        body_of(&report, "FAIL    command[touch /etc/marker]  marker"),
        lines(&[
            "cannot run `touch /etc/marker`: ROOT has no /bin/sh to run commands with",
            "run (/etc/marker does not exist): touch /etc/marker",
        ])
    );
    assert!(
        report.ends_with(
            "localhost:ROOT: 7 tasks, 0 ok, 6 changed, 1 fail, 0 skip in X ms\nexit code 4\n"
        ),
        "{report}"
    );
    assert_eq!(
        s.read_root("etc/docker/daemon.json"),
        "{\n  \"icc\": false\n}\n"
    );
    assert_eq!(s.mode_in_root("etc/docker/daemon.json"), 0o640);
    assert_eq!(s.mode_in_root("srv/app/data"), 0o750);
    assert_eq!(s.mode_in_root("srv/app"), 0o755);
    assert_eq!(
        s.read_root("etc/sysctl.d/90-test.conf"),
        "net.ipv4.ip_forward = 1\n"
    );
    assert!(!s.root().join("etc/old.conf").exists());

    // Only the command still differs.
    let check = s.run_root("check", "every.yml", &[]);
    check.expect_code(2);
    assert!(
        s.normalise(&check.stdout).ends_with(
            "localhost:ROOT: 7 tasks, 6 pass, 1 drift, 0 fail, 0 skip in X ms\nexit code 2\n"
        ),
        "{}",
        check.stdout
    );
}
