//! Facts about a target that playbooks can test in `when:` and use in templates (`facts.*`).

use serde::Serialize;

use crate::transport::{Answer, Probe, Transport};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Facts {
    pub hostname: String,
    /// `ID` from os-release: debian, ubuntu, rocky, …
    pub os_id: String,
    /// `VERSION_ID` from os-release: 12, 24.04, 9.4, …
    pub os_version: String,
    /// debian, redhat, suse, alpine, arch or unknown (from `ID` and `ID_LIKE`).
    pub os_family: String,
    pub os_name: String,
    /// A running system (false under `--root`).
    pub live: bool,
}

impl Facts {
    /// Reads the facts through the transport, in one batch.
    pub fn gather(t: &dyn Transport) -> Facts {
        let hostname_path = if t.live() {
            "/proc/sys/kernel/hostname"
        } else {
            "/etc/hostname"
        };
        let probes = [
            Probe::Read("/etc/os-release".into()),
            Probe::Read("/usr/lib/os-release".into()),
            Probe::Read(hostname_path.into()),
        ];
        let answers = t.observe(&probes);
        let text = |i: usize| match answers.get(i) {
            Some(Answer::Read(Some(d))) => Some(String::from_utf8_lossy(d).into_owned()),
            _ => None,
        };
        let os_release = text(0).or_else(|| text(1)).unwrap_or_default();
        let mut f = Facts::from_os_release(&os_release);
        f.hostname = text(2).map(|s| s.trim().to_string()).unwrap_or_default();
        f.live = t.live();
        f
    }

    /// Facts with every field present and empty, for validating without a host.
    pub fn placeholder() -> Facts {
        Facts::default()
    }

    fn from_os_release(text: &str) -> Facts {
        let get = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().trim_matches('"').trim_matches('\'').to_string())
                .unwrap_or_default()
        };
        let id = get("ID");
        let like = get("ID_LIKE");
        let words: Vec<&str> = std::iter::once(id.as_str())
            .chain(like.split_whitespace())
            .collect();
        let family = ["debian", "rhel", "fedora", "suse", "alpine", "arch"]
            .iter()
            .find(|f| {
                words
                    .iter()
                    .any(|w| w == *f || (**f == "suse" && w.contains("suse")))
            })
            .map(|f| match *f {
                "rhel" | "fedora" => "redhat",
                other => other,
            })
            .unwrap_or("unknown");
        Facts {
            os_id: id.clone(),
            os_version: get("VERSION_ID"),
            os_family: family.to_string(),
            os_name: get("PRETTY_NAME"),
            ..Facts::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_gives_family() {
        let f = Facts::from_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
        );
        assert_eq!(
            (
                f.os_id.as_str(),
                f.os_version.as_str(),
                f.os_family.as_str()
            ),
            ("debian", "12", "debian")
        );
        let f = Facts::from_os_release(
            "ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n",
        );
        assert_eq!(f.os_family, "redhat");
        let f = Facts::from_os_release("ID=ubuntu\nID_LIKE=debian\n");
        assert_eq!(f.os_family, "debian");
        assert_eq!(Facts::from_os_release("").os_family, "unknown");
    }
}
