//! Driving `slice` against lab hosts over SSH from a throw-away controller directory: an
//! ssh_config and known_hosts of its own, inventories and playbooks, never ~/.ssh.
//! Use with `#[path = "lab/mod.rs"] mod lab;` and `#[path = "fleet/mod.rs"] mod fleet;`.

#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use crate::lab::{Host, Lab};

/// A temporary controller: ssh_config, known_hosts, inventory and playbooks, never ~/.ssh.
pub struct Controller {
    dir: tempfile::TempDir,
}

impl Controller {
    /// With `trust`, known_hosts already holds the lab's host key for these hosts.
    pub fn new(trust: &[&Host]) -> Controller {
        Lab::image().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let c = Controller { dir };
        fs::write(
            c.path("ssh_config"),
            format!(
                "Host *\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  IdentityFile {}\n  IdentitiesOnly yes\n",
                c.path("known_hosts").display(),
                Lab::key_path().display()
            ),
        )
        .unwrap();
        let lines: String = trust
            .iter()
            .map(|h| format!("{} {}\n", h.ip(), host_key()))
            .collect();
        fs::write(c.path("known_hosts"), lines).unwrap();
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, text).unwrap();
        p
    }

    /// An inventory: (name, host, user, become).
    pub fn inventory(&self, hosts: &[(&str, &str, &str, bool)]) -> PathBuf {
        let mut s = String::from("all:\n  hosts:\n");
        for (name, ip, user, sudo) in hosts {
            s.push_str(&format!("    {name}: {{ ansible_host: {ip}, ansible_user: {user}, ansible_become: {sudo} }}\n"));
        }
        self.write("inventory.yml", &s)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slice"));
        cmd.args(args)
            .arg("--ssh-config")
            .arg(self.path("ssh_config"))
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("NO_COLOR", "1")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("SLICE_BECOME_PASSWORD")
            .stdin(Stdio::null());
        cmd
    }

    pub fn slice(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().unwrap();
        Run::from(out)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn lines_starting(&self, word: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with(word))
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// The lab image's ed25519 host key, as a known_hosts key field (`ssh-ed25519 AAAA…`).
pub fn host_key() -> String {
    let pubkey =
        fs::read_to_string(Lab::dir().join("base/etc/ssh/ssh_host_ed25519_key.pub")).unwrap();
    pubkey
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}
