//! A batch of probes as one POSIX shell script, and the parser of its answer: how a remote host
//! is observed in a single round trip.
//!
//! Each probe writes one record to standard output: a header line `@@ <index> <kind> ...`, then,
//! for records that carry data, that data base64-encoded on lines of its own. Base64 keeps any
//! file contents safe in a line-based answer and costs one process per file read.

use base64::Engine as _;

use super::{Answer, FileType, Output, Probe, Stat};

/// The script answering `probes`, in order. It needs sh, stat, base64, head, tr and mktemp.
pub fn build(probes: &[Probe]) -> String {
    let mut s = String::from(
        "set +e\nexport LC_ALL=C\nt=$(mktemp -d) || exit 97\ntrap 'rm -rf \"$t\"' EXIT\n\
         err() { head -c 300 \"$t/e\" | tr '\\n' ' '; }\n",
    );
    for (i, p) in probes.iter().enumerate() {
        match p {
            Probe::Stat(path) => s.push_str(&format!(
                "p={q}\nif st=$(stat -c '%f %u %g %s' -- \"$p\" 2>\"$t/e\"); then printf '@@ {i} S %s\\n' \"$st\"; \
                 elif [ -e \"$p\" ] || [ -L \"$p\" ]; then printf '@@ {i} F %s\\n' \"$(err)\"; else printf '@@ {i} N\\n'; fi\n",
                q = quote(path)
            )),
            // A failed read after the header is reported by a second record for the same probe.
            Probe::Read(path) => s.push_str(&format!(
                "p={q}\nif [ -f \"$p\" ]; then printf '@@ {i} R\\n'; base64 -w0 -- \"$p\" 2>\"$t/e\"; rc=$?; echo; \
                 [ $rc = 0 ] || printf '@@ {i} F %s\\n' \"$(err)\"; \
                 elif [ -e \"$p\" ]; then printf '@@ {i} F %s\\n' 'Is a directory or not a regular file'; else printf '@@ {i} N\\n'; fi\n",
                q = quote(path)
            )),
            Probe::Run(cmd) => s.push_str(&format!(
                "(cd / && sh -c {q}) > \"$t/o\" 2> \"$t/e\" < /dev/null\nprintf '@@ {i} X %s\\n' \"$?\"; \
                 base64 -w0 < \"$t/o\"; echo; base64 -w0 < \"$t/e\"; echo\n",
                q = quote(cmd)
            )),
        }
    }
    s
}

/// Single-quotes a string for sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Parses the script's output into one answer per probe. A record that is missing or malformed
/// becomes a failed answer for that probe, never a panic.
pub fn parse(probes: &[Probe], out: &[u8]) -> Vec<Answer> {
    let mut answers: Vec<Option<Answer>> = vec![None; probes.len()];
    let mut lines = out.split(|&b| b == b'\n');
    let decode = |line: Option<&[u8]>| {
        line.and_then(|l| base64::engine::general_purpose::STANDARD.decode(l).ok())
    };
    while let Some(header) = lines.next() {
        if header.is_empty() {
            continue;
        }
        let header = String::from_utf8_lossy(header).into_owned();
        let mut f = header.split(' ');
        if f.next() != Some("@@") {
            break;
        }
        let Some(i) = f
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|i| *i < probes.len())
        else {
            break;
        };
        let kind = f.next().unwrap_or_default();
        let rest: Vec<&str> = f.collect();
        let answer = match kind {
            "N" if matches!(probes[i], Probe::Stat(_)) => Answer::Stat(None),
            "N" => Answer::Read(None),
            "S" => match stat_of(&rest) {
                Some(st) => Answer::Stat(Some(st)),
                None => Answer::Failed(format!("unreadable stat answer `{}`", rest.join(" "))),
            },
            "R" => match decode(lines.next()) {
                Some(d) => Answer::Read(Some(d)),
                None => Answer::Failed("truncated file contents".into()),
            },
            "X" => match (
                rest.first().and_then(|r| r.parse::<i32>().ok()),
                decode(lines.next()),
                decode(lines.next()),
            ) {
                (Some(status), Some(stdout), Some(stderr)) => Answer::Run(Output {
                    status,
                    stdout,
                    stderr,
                }),
                _ => Answer::Failed("truncated command output".into()),
            },
            "F" => Answer::Failed(rest.join(" ").trim().to_string()),
            _ => Answer::Failed(format!("unknown answer `{header}`")),
        };
        answers[i] = Some(answer);
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Answer::Failed("no answer from the host".into())))
        .collect()
}

/// `%f %u %g %s`: the raw mode in hex (type bits included), owner, group, size.
fn stat_of(fields: &[&str]) -> Option<Stat> {
    let raw = u32::from_str_radix(fields.first()?, 16).ok()?;
    let kind = match raw & 0o170000 {
        0o100000 => FileType::File,
        0o040000 => FileType::Dir,
        0o120000 => FileType::Symlink,
        _ => FileType::Other,
    };
    Some(Stat {
        kind,
        mode: raw & 0o7777,
        uid: fields.get(1)?.parse().ok()?,
        gid: fields.get(2)?.parse().ok()?,
        size: fields.get(3)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Local, Transport};
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::{Command, Stdio};

    /// Runs the script with this machine's sh, as a remote host would.
    fn run(probes: &[Probe]) -> Vec<Answer> {
        use std::io::Write;
        let mut child = Command::new("sh")
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(build(probes).as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        parse(probes, &out.stdout)
    }

    #[test]
    fn the_script_answers_like_the_local_transport() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("plain"), "a\nb\n").unwrap();
        fs::write(d.join("odd name 'quoted'"), [0u8, 255, 10, 64, 64, 32, 48]).unwrap();
        fs::set_permissions(d.join("plain"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        symlink("plain", d.join("link")).unwrap();
        symlink("nowhere", d.join("dangling")).unwrap();
        let p = |n: &str| d.join(n).display().to_string();
        let probes = vec![
            Probe::Stat(p("plain")),
            Probe::Read(p("plain")),
            Probe::Read(p("odd name 'quoted'")),
            Probe::Stat(p("missing")),
            Probe::Read(p("missing")),
            Probe::Stat(p("sub")),
            Probe::Read(p("sub")),
            Probe::Stat(p("link")),
            Probe::Read(p("link")),
            Probe::Stat(p("dangling")),
            Probe::Run("echo out; echo err >&2; exit 3".into()),
            Probe::Run("printf '@@ 0 N\\n'".into()),
        ];
        let remote = run(&probes);
        let local = Local::new().observe(&probes);
        for (k, (r, l)) in remote.iter().zip(&local).enumerate() {
            let same = match (r, l) {
                (Answer::Stat(a), Answer::Stat(b)) => a == b,
                (Answer::Read(a), Answer::Read(b)) => a == b,
                (Answer::Run(a), Answer::Run(b)) => a == b,
                (Answer::Failed(_), Answer::Failed(_)) => true,
                _ => false,
            };
            assert!(same, "probe {k} {:?}: script {r:?}, local {l:?}", probes[k]);
        }
        assert!(
            matches!(&remote[10], Answer::Run(o) if o.status == 3 && o.stdout == b"out\n" && o.stderr == b"err\n")
        );
    }

    #[test]
    fn garbage_never_panics() {
        let probes = vec![Probe::Read("/x".into()), Probe::Run("true".into())];
        for out in [
            &b""[..],
            b"@@ 0 R 999\nabc",
            b"@@ 7 N\n",
            b"@@ x\n",
            b"junk\n@@ 0 N\n",
            b"@@ 1 X 0 5 0\nab",
        ] {
            let a = parse(&probes, out);
            assert_eq!(a.len(), 2);
        }
    }
}
