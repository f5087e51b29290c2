//! `line`: one line of a text file, present (replacing a matched line or inserted at an anchor)
//! or absent, with every other byte of the file kept as it is. Also the line editing that
//! `sysctl` shares.

use regex::bytes::Regex;

use crate::error::{Error, Result};
use crate::resource::{text_diff, BuildCtx, Change, Observed, Params, Resource};
use crate::resources::{Accounts, Meta};
use crate::transport::{Attrs, FileType, Probe, Stat, Transport};

pub struct Line {
    path: String,
    /// `None` only for `state: absent` with a `regexp`.
    line: Option<String>,
    regexp: Option<Regex>,
    anchor: Anchor,
    present: bool,
    create: bool,
    meta: Meta,
}

/// Where a line that matches nothing is inserted.
enum Anchor {
    Bof,
    Eof,
    /// After the last line matching; at the end when none does.
    After(Regex),
    /// Before the first line matching; at the end when none does.
    Before(Regex),
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan<'o> {
    /// `None`: the file does not exist and will be created.
    stat: Option<&'o Stat>,
    old: &'o [u8],
    new: Vec<u8>,
    want: Attrs,
    accounts: Accounts,
}

impl Line {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let path = p.path("path")?;
        let present = p.choice("state", &["present", "absent"], "present")? == "present";
        let line = single_line(p, "line")?;
        let regexp = regex_param(p, "regexp")?;
        let after = p.opt_str("insert_after")?;
        let before = p.opt_str("insert_before")?;
        let create = p.opt_bool("create")?.unwrap_or(false);
        let meta = Meta::from_params(p)?;

        for (key, given) in [("insert_after", &after), ("insert_before", &before)] {
            if !present && given.is_some() {
                return Err(at(
                    p,
                    key,
                    format!("`{key}` applies only with `state: present`"),
                ));
            }
        }
        let anchor = match (after, before) {
            (Some(_), Some(_)) => {
                return Err(at(
                    p,
                    "insert_before",
                    "give only one of `insert_after` and `insert_before`",
                ))
            }
            (None, None) => Anchor::Eof,
            // After the end or before the end, it is the end; likewise for the beginning.
            (Some(w), None) | (None, Some(w)) if w == "EOF" => Anchor::Eof,
            (Some(w), None) | (None, Some(w)) if w == "BOF" => Anchor::Bof,
            (Some(re), None) => Anchor::After(compile(p, "insert_after", &re)?),
            (None, Some(re)) => Anchor::Before(compile(p, "insert_before", &re)?),
        };
        if line.is_none() && (present || regexp.is_none()) {
            let msg = if present {
                "`line` needs `line`"
            } else {
                "`line` with `state: absent` needs `line` or `regexp`"
            };
            return Err(Error::at(p.loc(), msg));
        }
        let l = Line {
            path,
            line,
            regexp,
            anchor,
            present,
            create,
            meta,
        };
        p.finish()?;
        Ok(Box::new(l))
    }

    /// The file as it should be, given what it holds now.
    fn wanted(&self, old: &[u8]) -> Result<Vec<u8>, String> {
        let mut lines = Lines::parse(old);
        let line = self.line.as_deref().unwrap_or_default().as_bytes();
        if !self.present {
            lines.retain(|body| match &self.regexp {
                Some(re) => !re.is_match(body),
                None => body != line,
            });
            return Ok(lines.join());
        }
        if let Some(re) = &self.regexp {
            let matches: Vec<usize> = (0..lines.len())
                .filter(|&i| re.is_match(lines.body(i)))
                .collect();
            if let Some(&last) = matches.last() {
                // Replacing one of several matches with a line the regexp does not match leaves
                // another match for the next run to replace: it would never settle.
                if matches.len() > 1 && !re.is_match(line) {
                    return Err(format!(
                        "`regexp` matches {} lines of {} but not `line` itself, so every run would replace another one; \
                         make `regexp` match `line` too, or remove the other lines with `state: absent`",
                        matches.len(),
                        self.path
                    ));
                }
                if lines.body(last) != line {
                    lines.replace(last, line);
                }
                return Ok(lines.join());
            }
        }
        if (0..lines.len()).any(|i| lines.body(i) == line) {
            return Ok(old.to_vec());
        }
        let at = match &self.anchor {
            Anchor::Bof => 0,
            Anchor::Eof => lines.len(),
            Anchor::After(re) => (0..lines.len())
                .rev()
                .find(|&i| re.is_match(lines.body(i)))
                .map_or(lines.len(), |i| i + 1),
            Anchor::Before(re) => (0..lines.len())
                .find(|&i| re.is_match(lines.body(i)))
                .unwrap_or(lines.len()),
        };
        lines.insert(at, line);
        Ok(lines.join())
    }

    /// `None`: nothing to do at all (a line to remove from a file that does not exist).
    fn plan<'o>(&self, obs: &'o Observed) -> Result<Option<Plan<'o>>, String> {
        let stat = obs.stat(0)?;
        match stat {
            Some(s) if s.kind != FileType::File => {
                return Err(format!(
                    "{} is {}, not a regular file; leaving it alone",
                    self.path,
                    s.kind.describe()
                ));
            }
            None if !self.present => return Ok(None),
            None if !self.create => {
                return Err(format!(
                    "{} does not exist; set `create: true` to create it",
                    self.path
                ))
            }
            _ => {}
        }
        let (want, accounts) = self.meta.resolve(obs, 2)?;
        let old = match stat {
            Some(_) => obs.read(1)?.unwrap_or_default(),
            None => &[],
        };
        let new = self.wanted(old)?;
        Ok(Some(Plan {
            stat,
            old,
            new,
            want,
            accounts,
        }))
    }
}

/// A parameter that must be one line of text.
fn single_line(p: &Params, key: &'static str) -> Result<Option<String>> {
    let s = p.opt_str(key)?;
    if s.as_deref().is_some_and(|s| s.contains(['\n', '\r'])) {
        return Err(at(p, key, format!("`{key}` must be a single line")));
    }
    Ok(s)
}

/// A parameter holding a regular expression, compiled now so a bad one points at the playbook.
fn regex_param(p: &Params, key: &'static str) -> Result<Option<Regex>> {
    match p.opt_str(key)? {
        Some(s) => compile(p, key, &s).map(Some),
        None => Ok(None),
    }
}

fn compile(p: &Params, key: &'static str, re: &str) -> Result<Regex> {
    Regex::new(re).map_err(|e| {
        // The regex crate's message repeats the pattern over several lines; keep its last line.
        let text = e.to_string();
        let last = text.lines().last().unwrap_or_default();
        let why = last.strip_prefix("error: ").unwrap_or(last);
        at(
            p,
            key,
            format!("`{key}` is not a valid regular expression: {why}"),
        )
    })
}

/// An error at a parameter's value, or at the task when it was not given.
pub(crate) fn at(p: &Params, key: &'static str, msg: impl Into<String>) -> Error {
    match p.node(key) {
        Some(n) => p.error(n, msg),
        None => Error::at(p.loc(), msg),
    }
}

impl Resource for Line {
    fn target(&self) -> String {
        self.path.clone()
    }

    fn paths(&self) -> Vec<&str> {
        vec![&self.path]
    }

    fn probes(&self) -> Vec<Probe> {
        self.meta.file_probes(&self.path)
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        let Some(plan) = self.plan(obs)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        out.extend(Meta::presence(
            plan.stat,
            "file",
            &plan.want,
            &plan.accounts,
        ));
        if plan.new != plan.old {
            out.push(content_change(&self.path, plan.old, &plan.new));
        }
        Ok(out)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let Some(plan) = self.plan(obs)? else {
            return Ok(());
        };
        let err = |e: std::io::Error| format!("{}: {e}", self.path);
        match plan.stat {
            None => {
                let attrs = Attrs {
                    mode: Some(plan.want.mode.unwrap_or(0o644)),
                    ..plan.want
                };
                t.write(&self.path, &plan.new, &attrs).map_err(err)
            }
            Some(_) if plan.new != plan.old => {
                t.write(&self.path, &plan.new, &plan.want).map_err(err)
            }
            Some(s) => t
                .set_attrs(&self.path, &Meta::fixes(&plan.want, s))
                .map_err(err),
        }
    }
}

/// The "content" change of a text file edited line by line.
pub(crate) fn content_change(path: &str, old: &[u8], new: &[u8]) -> Change {
    let diff = text_diff(
        path,
        &String::from_utf8_lossy(old),
        &String::from_utf8_lossy(new),
    );
    Change::new("content", None, None).with_diff(diff)
}

/// A file as lines, each keeping its own ending ("\n", "\r\n", or none for an unterminated last
/// line), so that joining them gives back the same bytes.
pub(crate) struct Lines {
    lines: Vec<Vec<u8>>,
    /// The ending for lines SLICE adds: the file's own (CRLF files stay CRLF).
    eol: &'static [u8],
}

impl Lines {
    pub(crate) fn parse(data: &[u8]) -> Lines {
        let lines: Vec<Vec<u8>> = data
            .split_inclusive(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        let crlf = lines.first().is_some_and(|l| l.ends_with(b"\r\n"));
        Lines {
            lines,
            eol: if crlf { b"\r\n" } else { b"\n" },
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// Line `i` without its ending (empty past the end).
    pub(crate) fn body(&self, i: usize) -> &[u8] {
        self.lines.get(i).map_or(&[][..], |l| body(l))
    }

    /// Replaces the text of line `i`, keeping its ending.
    pub(crate) fn replace(&mut self, i: usize, text: &[u8]) {
        if let Some(l) = self.lines.get_mut(i) {
            let ending = l.split_off(body(l).len());
            *l = [text, &ending].concat();
        }
    }

    /// Inserts a line before line `i` (at the end when `i` is past it).
    pub(crate) fn insert(&mut self, i: usize, text: &[u8]) {
        let i = i.min(self.lines.len());
        if i == self.lines.len() {
            // An unterminated last line gets its ending now that a line follows it.
            if let Some(last) = self.lines.last_mut().filter(|l| !l.ends_with(b"\n")) {
                last.extend_from_slice(self.eol);
            }
        }
        self.lines.insert(i, [text, self.eol].concat());
    }

    /// Keeps the lines whose text passes `keep`.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        self.lines.retain(|l| keep(body(l)));
    }

    /// Removes the lines at the given positions.
    pub(crate) fn remove_at(&mut self, positions: &[usize]) {
        let mut i = 0;
        self.lines.retain(|_| {
            i += 1;
            !positions.contains(&(i - 1))
        });
    }

    pub(crate) fn join(&self) -> Vec<u8> {
        self.lines.concat()
    }
}

fn body(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::resources::testing::{build, build_err, content_diff, converge, diff, whats};
    use crate::transport::Local;

    /// A temporary root holding /etc/f with `content` (none when `None`).
    fn root(content: Option<&str>) -> (tempfile::TempDir, Local) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        if let Some(c) = content {
            fs::write(dir.path().join("etc/f"), c).unwrap();
        }
        let t = Local::with_root(dir.path()).unwrap();
        (dir, t)
    }

    fn file(dir: &tempfile::TempDir) -> String {
        fs::read_to_string(dir.path().join("etc/f")).unwrap()
    }

    fn run(yaml: &str, content: Option<&str>) -> (Vec<crate::resource::Change>, String) {
        let (dir, t) = root(content);
        let res = build("line", yaml, false).unwrap();
        let changes = converge(res.as_ref(), &t, dir.path());
        (changes, file(&dir))
    }

    #[test]
    fn the_last_match_is_replaced_and_others_left_alone() {
        let before = "#PermitRootLogin yes\nPort 22\nPermitRootLogin yes\nX11Forwarding no\n";
        let (changes, after) = run(
            "path: /etc/f\nregexp: '^#?PermitRootLogin'\nline: PermitRootLogin no\n",
            Some(before),
        );
        assert_eq!(
            after,
            "#PermitRootLogin yes\nPort 22\nPermitRootLogin no\nX11Forwarding no\n"
        );
        assert_eq!(whats(&changes), ["content"]);
        assert_eq!(
            content_diff(&changes),
            "--- /etc/f (now)\n+++ /etc/f (wanted)\n@@ -1,4 +1,4 @@\n #PermitRootLogin yes\n Port 22\n\
             -PermitRootLogin yes\n+PermitRootLogin no\n X11Forwarding no\n"
        );
    }

    #[test]
    fn a_matching_line_already_right_is_in_sync() {
        let (dir, t) = root(Some("PermitRootLogin no\nPort 22"));
        let res = build(
            "line",
            "path: /etc/f\nregexp: '^PermitRootLogin'\nline: PermitRootLogin no\n",
            false,
        )
        .unwrap();
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
        let res = build("line", "path: /etc/f\nline: Port 22\n", false).unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [],
            "the unterminated last line counts"
        );
        drop(dir);
    }

    #[test]
    fn a_replaced_line_keeps_its_ending() {
        let (_, after) = run("path: /etc/f\nregexp: '^b'\nline: B\n", Some("a\r\nb\r\nc"));
        assert_eq!(after, "a\r\nB\r\nc");
        let (_, after) = run("path: /etc/f\nregexp: '^c'\nline: C\n", Some("a\nc"));
        assert_eq!(
            after, "a\nC",
            "no newline is added to a line SLICE only replaced"
        );
    }

    #[test]
    fn without_a_match_the_line_goes_at_the_end() {
        let (_, after) = run(
            "path: /etc/f\nregexp: '^Port'\nline: Port 2222\n",
            Some("a\nb\n"),
        );
        assert_eq!(after, "a\nb\nPort 2222\n");
        let (_, after) = run("path: /etc/f\nline: x\n", Some("a\r\nb\r\n"));
        assert_eq!(after, "a\r\nb\r\nx\r\n", "a CRLF file gets a CRLF line");
    }

    #[test]
    fn a_file_without_trailing_newline_gets_one_only_before_the_added_line() {
        let (changes, after) = run("path: /etc/f\nline: c\n", Some("a\nb"));
        assert_eq!(after, "a\nb\nc\n");
        assert_eq!(
            content_diff(&changes),
            "--- /etc/f (now)\n+++ /etc/f (wanted)\n@@ -1,2 +1,3 @@\n a\n-b\n\\ No newline at end of file\n+b\n+c\n"
        );
        let (_, after) = run("path: /etc/f\nline: c\ninsert_before: '^b'\n", Some("a\nb"));
        assert_eq!(after, "a\nc\nb");
    }

    #[test]
    fn insert_after_the_last_match_or_before_the_first() {
        let text = "[a]\nx=1\n[b]\ny=2\n[b]\n";
        let (_, after) = run(
            "path: /etc/f\nline: z=3\ninsert_after: '^\\[b\\]'\n",
            Some(text),
        );
        assert_eq!(after, "[a]\nx=1\n[b]\ny=2\n[b]\nz=3\n");
        let (_, after) = run("path: /etc/f\nline: z=3\ninsert_after: '^x='\n", Some(text));
        assert_eq!(after, "[a]\nx=1\nz=3\n[b]\ny=2\n[b]\n");
        let (_, after) = run(
            "path: /etc/f\nline: z=3\ninsert_before: '^\\[b\\]'\n",
            Some(text),
        );
        assert_eq!(after, "[a]\nx=1\nz=3\n[b]\ny=2\n[b]\n");
        let (_, after) = run(
            "path: /etc/f\nline: z=3\ninsert_before: '^nothing'\n",
            Some(text),
        );
        assert_eq!(
            after, "[a]\nx=1\n[b]\ny=2\n[b]\nz=3\n",
            "no match: at the end"
        );
        let (_, after) = run(
            "path: /etc/f\nline: '# managed'\ninsert_before: BOF\n",
            Some(text),
        );
        assert_eq!(after, "# managed\n[a]\nx=1\n[b]\ny=2\n[b]\n");
        let (_, after) = run(
            "path: /etc/f\nline: z=3\ninsert_after: EOF\nregexp: '^z='\n",
            Some(text),
        );
        assert_eq!(after, "[a]\nx=1\n[b]\ny=2\n[b]\nz=3\n");
    }

    #[test]
    fn absent_removes_every_match() {
        let text = "a\nPermitRootLogin yes\nb\n  PermitRootLogin no\nPermitRootLogin yes";
        let (changes, after) = run(
            "path: /etc/f\nstate: absent\nregexp: 'PermitRootLogin'\n",
            Some(text),
        );
        assert_eq!(after, "a\nb\n");
        assert_eq!(whats(&changes), ["content"]);
        let (_, after) = run(
            "path: /etc/f\nstate: absent\nline: PermitRootLogin yes\n",
            Some(text),
        );
        assert_eq!(
            after, "a\nb\n  PermitRootLogin no\n",
            "without regexp only exact lines go"
        );
    }

    #[test]
    fn absent_from_a_missing_file_is_in_sync() {
        let (dir, t) = root(None);
        let res = build("line", "path: /etc/f\nstate: absent\nline: x\n", false).unwrap();
        assert_eq!(converge(res.as_ref(), &t, dir.path()), []);
        assert!(!dir.path().join("etc/f").exists());
    }

    #[test]
    fn a_missing_file_is_an_error_unless_create() {
        let (dir, t) = root(None);
        let res = build("line", "path: /etc/f\nline: x\n", false).unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap_err(),
            "/etc/f does not exist; set `create: true` to create it"
        );

        let res = build(
            "line",
            "path: /etc/f\nline: x\ncreate: true\nmode: '0600'\n",
            false,
        )
        .unwrap();
        let changes = converge(res.as_ref(), &t, dir.path());
        assert_eq!(whats(&changes), ["state", "mode", "content"]);
        assert_eq!(
            (changes[1].before.as_deref(), changes[1].after.as_deref()),
            (None, Some("0600"))
        );
        assert_eq!(file(&dir), "x\n");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(dir.path().join("etc/f"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o7777, 0o600);
    }

    #[test]
    fn mode_alone_is_fixed_without_rewriting() {
        let (dir, t) = root(Some("x\n"));
        let res = build("line", "path: /etc/f\nline: x\nmode: '0640'\n", false).unwrap();
        let changes = converge(res.as_ref(), &t, dir.path());
        assert_eq!(whats(&changes), ["mode"]);
        assert_eq!(file(&dir), "x\n");
    }

    #[test]
    fn a_directory_is_not_edited() {
        let (dir, t) = root(None);
        fs::create_dir(dir.path().join("etc/f")).unwrap();
        let res = build("line", "path: /etc/f\nline: x\n", false).unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap_err(),
            "/etc/f is a directory, not a regular file; leaving it alone"
        );
    }

    #[test]
    fn a_replacement_that_would_never_settle_is_refused() {
        let (_dir, t) = root(Some(
            "PasswordAuthentication yes\nPasswordAuthentication yes\n",
        ));
        let res = build(
            "line",
            "path: /etc/f\nregexp: 'yes$'\nline: PasswordAuthentication no\n",
            false,
        )
        .unwrap();
        assert!(diff(res.as_ref(), &t)
            .unwrap_err()
            .starts_with("`regexp` matches 2 lines of /etc/f but not `line` itself"));
        // One match is fine: once replaced, the exact line is there.
        let (_, after) = run(
            "path: /etc/f\nregexp: 'yes$'\nline: PasswordAuthentication no\n",
            Some("PasswordAuthentication yes\n"),
        );
        assert_eq!(after, "PasswordAuthentication no\n");
    }

    #[test]
    fn non_utf8_bytes_are_kept() {
        let (dir, t) = root(None);
        fs::write(dir.path().join("etc/f"), b"\xff\xfe\nold\n").unwrap();
        let res = build("line", "path: /etc/f\nregexp: '^old'\nline: new\n", false).unwrap();
        converge(res.as_ref(), &t, dir.path());
        assert_eq!(
            fs::read(dir.path().join("etc/f")).unwrap(),
            b"\xff\xfe\nnew\n"
        );
    }

    #[test]
    fn build_errors_point_at_the_parameter() {
        assert_eq!(
            build_err("line", "path: /etc/f\nline: x\nregexp: '('\n"),
            "3:10: `regexp` is not a valid regular expression: unclosed group"
        );
        assert_eq!(
            build_err(
                "line",
                "path: /etc/f\nline: x\ninsert_after: a\ninsert_before: b\n"
            ),
            "4:16: give only one of `insert_after` and `insert_before`"
        );
        assert_eq!(
            build_err("line", "path: /etc/f\nregexp: x\n"),
            "1:1: `line` needs `line`"
        );
        assert_eq!(
            build_err("line", "path: /etc/f\nstate: absent\n"),
            "1:1: `line` with `state: absent` needs `line` or `regexp`"
        );
        assert_eq!(
            build_err("line", "path: /etc/f\nline: \"a\\nb\"\n"),
            "2:8: `line` must be a single line"
        );
        assert_eq!(
            build_err(
                "line",
                "path: /etc/f\nstate: absent\nline: x\ninsert_after: y\n"
            ),
            "4:15: `insert_after` applies only with `state: present`"
        );
        assert_eq!(
            build_err("line", "path: /etc/f\nline: x\ncreat: true\n"),
            "3:1: unknown key `creat` for `line`"
        );
        assert_eq!(
            build_err("line", "path: etc/f\nline: x\n"),
            "1:7: `path` must be an absolute path, found `etc/f`"
        );
    }

    #[test]
    fn target_and_paths_name_the_file() {
        let res = build("line", "path: /etc//f\nline: x\n", false).unwrap();
        assert_eq!(res.target(), "/etc/f");
        assert_eq!(res.paths(), ["/etc/f"]);
    }
}
