//! `json`: keys of a JSON object file (such as /etc/docker/daemon.json) set or removed, leaving
//! the keys the task does not manage as they are, in their order.
//!
//! Comparison is by meaning: a document that already holds every value is in sync however it is
//! laid out, and is never rewritten just to reformat it.

use serde_json::{Map, Value as J};

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::content_change;
use crate::resources::{Accounts, Meta};
use crate::transport::{Attrs, FileType, Probe, Stat, Transport};
use crate::yaml::{Node, Value};

pub struct Json {
    path: String,
    /// Merged into the document: objects key by key, anything else replaced whole.
    set: Map<String, J>,
    /// Key paths to take away: `["icc"]`, `["log-opts", "max-file"]`.
    remove: Vec<Vec<String>>,
    create: bool,
    meta: Meta,
}

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan<'o> {
    /// `None`: the file does not exist and will be created.
    stat: Option<&'o Stat>,
    old: &'o [u8],
    /// One change per key path whose value changes.
    keys: Vec<Change>,
    /// The new file text, when the file must be written.
    new: Option<String>,
    want: Attrs,
    accounts: Accounts,
}

impl Json {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let path = p.path("path")?;
        let set = match p.node("set") {
            None => Map::new(),
            // The YAML reader already refuses keys that are not plain scalars.
            Some(n) => match n.to_json() {
                J::Object(m) => m,
                _ => {
                    return Err(p.error(
                        n,
                        format!(
                            "`set` of `json` must be a mapping of keys to values, found {}",
                            n.type_name()
                        ),
                    ))
                }
            },
        };
        let remove: Vec<(Vec<String>, &Node)> = match p.node("remove") {
            None => Vec::new(),
            Some(n) => match &n.value {
                Value::Seq(items) => items
                    .iter()
                    .map(|i| Ok((key_path(p, i)?, i)))
                    .collect::<Result<_>>()?,
                // A single key.
                _ => vec![(key_path(p, n)?, n)],
            },
        };
        let create = p.opt_bool("create")?.unwrap_or(true);
        let meta = Meta::from_params(p)?;
        if set.is_empty() && remove.is_empty() {
            return Err(Error::at(
                p.loc(),
                "`json` needs `set` or `remove` (with at least one key)",
            ));
        }
        // A key both set and removed would be changed back and forth on every run.
        let set_paths = paths(&set, &mut Vec::new());
        if let Some((path, n)) = remove
            .iter()
            .find(|(r, _)| set_paths.iter().any(|s| s.starts_with(r)))
        {
            return Err(p.error(
                n,
                format!("`remove` takes away `{}`, which `set` sets", path.join(".")),
            ));
        }
        let remove = remove.into_iter().map(|(path, _)| path).collect();
        let j = Json {
            path,
            set,
            remove,
            create,
            meta,
        };
        p.finish()?;
        Ok(Box::new(j))
    }

    /// `None`: nothing to do at all (only keys to remove, and no file).
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
            _ => {}
        }
        let old = match stat {
            Some(_) => obs.read(1)?.unwrap_or_default(),
            None => &[],
        };
        let doc = parse(&self.path, old)?;
        let mut new = doc.clone();
        let mut keys = Vec::new();
        merge(&mut new, &self.set, &mut Vec::new(), &mut keys);
        for path in &self.remove {
            if let Some(v) = remove(&mut new, path) {
                keys.push(Change::new(
                    format!("key {}", path.join(".")),
                    Some(v.to_string()),
                    None,
                ));
            }
        }
        if stat.is_none() && new.is_empty() {
            // Keys to remove from a file that does not exist are not there.
            return Ok(None);
        }
        if stat.is_none() && !self.create {
            return Err(format!(
                "{} does not exist; set `create: true` to create it",
                self.path
            ));
        }
        let (want, accounts) = self.meta.resolve(obs, 2)?;
        let new = if stat.is_none() || new != doc {
            let text = serde_json::to_string_pretty(&J::Object(new))
                .map_err(|e| format!("{}: {e}", self.path))?;
            Some(text + "\n")
        } else {
            None
        };
        Ok(Some(Plan {
            stat,
            old,
            keys,
            new,
            want,
            accounts,
        }))
    }
}

/// One item of `remove`: a top-level key, or a list of keys leading into nested objects.
fn key_path(p: &Params, n: &Node) -> Result<Vec<String>> {
    let bad = || {
        p.error(n, format!("each item of `remove` must be a key or a list of keys (a path into nested objects), found {}", n.type_name()))
    };
    match &n.value {
        Value::Seq(items) if !items.is_empty() => items
            .iter()
            .map(|i| i.scalar_text().ok_or_else(bad))
            .collect(),
        Value::Seq(_) | Value::Map(_) | Value::Null => Err(bad()),
        _ => n.scalar_text().map(|s| vec![s]).ok_or_else(bad),
    }
}

/// The key path of every value in `set`, nested ones included.
fn paths(set: &Map<String, J>, prefix: &mut Vec<String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (k, v) in set {
        prefix.push(k.clone());
        out.push(prefix.clone());
        if let J::Object(inner) = v {
            out.extend(paths(inner, prefix));
        }
        prefix.pop();
    }
    out
}

/// The file's object; an empty file counts as `{}`.
pub(crate) fn parse(path: &str, data: &[u8]) -> Result<Map<String, J>, String> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let invalid = |line: usize, col: usize, msg: &str| {
        format!("{path} is not valid JSON (line {line}, column {col}: {msg}); leaving it alone")
    };
    match serde_json::from_slice::<J>(data) {
        Ok(J::Object(m)) => Ok(m),
        Ok(other) => {
            let start = data
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or_default();
            let line = 1 + data[..start].iter().filter(|b| **b == b'\n').count();
            let col = 1 + start
                - data[..start]
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(0, |i| i + 1);
            Err(invalid(
                line,
                col,
                &format!(
                    "expected an object at the top level, found {}",
                    json_type(&other)
                ),
            ))
        }
        Err(e) => {
            // serde_json appends the position to its message; it is given separately here.
            let text = e.to_string();
            let msg = text
                .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
                .unwrap_or(&text);
            Err(invalid(e.line(), e.column(), msg))
        }
    }
}

fn json_type(v: &J) -> &'static str {
    match v {
        J::Null => "null",
        J::Bool(_) => "a boolean",
        J::Number(_) => "a number",
        J::String(_) => "a string",
        J::Array(_) => "an array",
        J::Object(_) => "an object",
    }
}

/// Merges `set` into `doc`, noting a change for each key path whose value changes. Existing keys
/// keep their place; new ones go at the end.
pub(crate) fn merge(
    doc: &mut Map<String, J>,
    set: &Map<String, J>,
    path: &mut Vec<String>,
    changes: &mut Vec<Change>,
) {
    for (k, v) in set {
        path.push(k.clone());
        if let (Some(J::Object(have)), J::Object(want)) = (doc.get_mut(k), v) {
            merge(have, want, path, changes);
        } else if doc.get(k) != Some(v) {
            let before = doc.get(k).map(J::to_string);
            changes.push(Change::new(
                format!("key {}", path.join(".")),
                before,
                Some(v.to_string()),
            ));
            doc.insert(k.clone(), v.clone());
        }
        path.pop();
    }
}

/// Takes the value at `path` out of `doc`, keeping the order of the other keys.
fn remove(doc: &mut Map<String, J>, path: &[String]) -> Option<J> {
    let (last, parents) = path.split_last()?;
    let mut obj = doc;
    for k in parents {
        obj = obj.get_mut(k)?.as_object_mut()?;
    }
    obj.shift_remove(last)
}

impl Resource for Json {
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
        out.extend(plan.keys);
        if let Some(new) = &plan.new {
            out.push(content_change(&self.path, plan.old, new.as_bytes()));
        }
        Ok(out)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let Some(plan) = self.plan(obs)? else {
            return Ok(());
        };
        let err = |e: std::io::Error| format!("{}: {e}", self.path);
        match (&plan.new, plan.stat) {
            (Some(new), None) => {
                let attrs = Attrs {
                    mode: Some(plan.want.mode.unwrap_or(0o644)),
                    ..plan.want
                };
                t.write(&self.path, new.as_bytes(), &attrs).map_err(err)
            }
            (Some(new), Some(_)) => t.write(&self.path, new.as_bytes(), &plan.want).map_err(err),
            (None, Some(s)) => t
                .set_attrs(&self.path, &Meta::fixes(&plan.want, s))
                .map_err(err),
            (None, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::resource::Change;
    use crate::resources::testing::{build, build_err, content_diff, converge, diff, whats};
    use crate::transport::Local;

    const DAEMON: &str = "/etc/docker/daemon.json";

    fn root(content: Option<&str>) -> (tempfile::TempDir, Local) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/docker")).unwrap();
        if let Some(c) = content {
            fs::write(dir.path().join("etc/docker/daemon.json"), c).unwrap();
        }
        let t = Local::with_root(dir.path()).unwrap();
        (dir, t)
    }

    fn file(dir: &tempfile::TempDir) -> String {
        fs::read_to_string(dir.path().join("etc/docker/daemon.json")).unwrap()
    }

    fn run(yaml: &str, content: Option<&str>) -> (Vec<Change>, String) {
        let (dir, t) = root(content);
        let res = build("json", &format!("path: {DAEMON}\n{yaml}"), false).unwrap();
        let changes = converge(res.as_ref(), &t, dir.path());
        (changes, file(&dir))
    }

    fn key(what: &str, before: Option<&str>, after: Option<&str>) -> Change {
        Change::new(what, before.map(String::from), after.map(String::from))
    }

    #[test]
    fn nested_objects_merge_and_unmanaged_keys_keep_their_order() {
        let before = r#"{"storage-driver": "overlay2", "log-opts": {"max-file": "3", "max-size": "100m"}, "debug": false}"#;
        let (changes, after) = run(
            "set:\n  log-opts: {max-size: 10m}\n  icc: false\n  debug: false\n",
            Some(before),
        );
        assert_eq!(
            after,
            "{\n  \"storage-driver\": \"overlay2\",\n  \"log-opts\": {\n    \"max-file\": \"3\",\n    \"max-size\": \"10m\"\n  },\n  \
             \"debug\": false,\n  \"icc\": false\n}\n"
        );
        assert_eq!(
            whats(&changes),
            ["key log-opts.max-size", "key icc", "content"]
        );
        assert_eq!(
            changes[0],
            key("key log-opts.max-size", Some("\"100m\""), Some("\"10m\""))
        );
        assert_eq!(changes[1], key("key icc", None, Some("false")));
        assert!(content_diff(&changes)
            .starts_with(&format!("--- {DAEMON} (now)\n+++ {DAEMON} (wanted)\n")));
    }

    #[test]
    fn a_value_that_is_not_an_object_is_replaced_whole() {
        let (changes, after) = run(
            "set:\n  log-opts: {max-size: 10m}\n  hosts: [unix:///run/docker.sock]\n",
            Some(r#"{"log-opts": "x", "hosts": ["tcp://0.0.0.0:2375"]}"#),
        );
        assert_eq!(after, "{\n  \"log-opts\": {\n    \"max-size\": \"10m\"\n  },\n  \"hosts\": [\n    \"unix:///run/docker.sock\"\n  ]\n}\n");
        assert_eq!(
            &changes[..2],
            [
                key("key log-opts", Some("\"x\""), Some(r#"{"max-size":"10m"}"#)),
                key(
                    "key hosts",
                    Some(r#"["tcp://0.0.0.0:2375"]"#),
                    Some(r#"["unix:///run/docker.sock"]"#)
                ),
            ]
        );
    }

    #[test]
    fn nested_and_top_level_keys_are_removed() {
        let before = r#"{"a": 1, "log-opts": {"max-file": "3", "max-size": "10m", "z": 0}, "userland-proxy": true, "b": 2}"#;
        let (changes, after) = run("remove:\n  - userland-proxy\n  - [log-opts, max-file]\n  - [log-opts, nothing, here]\n  - absent\n", Some(before));
        assert_eq!(after, "{\n  \"a\": 1,\n  \"log-opts\": {\n    \"max-size\": \"10m\",\n    \"z\": 0\n  },\n  \"b\": 2\n}\n");
        assert_eq!(
            &changes[..2],
            [
                key("key userland-proxy", Some("true"), None),
                key("key log-opts.max-file", Some("\"3\""), None)
            ]
        );
        assert_eq!(changes.len(), 3);
    }

    #[test]
    fn a_reformatted_but_equal_document_is_in_sync() {
        let (_dir, t) = root(Some(
            "{ \"log-opts\":{\"max-size\":\"10m\",\"max-file\":\"3\"},\n\t\"icc\" : false }",
        ));
        let res = build("json", &format!("path: {DAEMON}\nset: {{icc: false, log-opts: {{max-size: 10m}}}}\nremove: [debug]\n"), false).unwrap();
        assert_eq!(diff(res.as_ref(), &t).unwrap(), []);
    }

    #[test]
    fn invalid_json_is_left_alone() {
        let (_dir, t) = root(Some("{\n  \"icc\": false,\n}\n"));
        let res = build(
            "json",
            &format!("path: {DAEMON}\nset: {{icc: false}}\n"),
            false,
        )
        .unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap_err(),
            "/etc/docker/daemon.json is not valid JSON (line 3, column 1: trailing comma); leaving it alone"
        );
        let (_dir, t) = root(Some("\n  [1]"));
        assert_eq!(
            diff(res.as_ref(), &t).unwrap_err(),
            "/etc/docker/daemon.json is not valid JSON (line 2, column 3: expected an object at the top level, found an array); leaving it alone"
        );
    }

    #[test]
    fn a_missing_file_is_created_unless_told_not_to() {
        let (changes, after) = run("set: {icc: false}\nmode: '0600'\n", None);
        assert_eq!(after, "{\n  \"icc\": false\n}\n");
        assert_eq!(whats(&changes), ["state", "mode", "key icc", "content"]);
        assert_eq!(
            content_diff(&changes),
            "--- /etc/docker/daemon.json (now)\n+++ /etc/docker/daemon.json (wanted)\n@@ -0,0 +1,3 @@\n+{\n+  \"icc\": false\n+}\n"
        );

        let (_dir, t) = root(None);
        let res = build(
            "json",
            &format!("path: {DAEMON}\nset: {{icc: false}}\ncreate: false\n"),
            false,
        )
        .unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap_err(),
            "/etc/docker/daemon.json does not exist; set `create: true` to create it"
        );
    }

    #[test]
    fn removing_from_a_missing_file_creates_nothing() {
        let (dir, t) = root(None);
        let res = build(
            "json",
            &format!("path: {DAEMON}\nremove: icc\ncreate: false\n"),
            false,
        )
        .unwrap();
        assert_eq!(converge(res.as_ref(), &t, dir.path()), []);
        assert!(!dir.path().join("etc/docker/daemon.json").exists());
    }

    #[test]
    fn an_empty_file_counts_as_an_empty_object() {
        let (changes, after) = run("set: {live-restore: true}\n", Some("\n"));
        assert_eq!(after, "{\n  \"live-restore\": true\n}\n");
        assert_eq!(whats(&changes), ["key live-restore", "content"]);
    }

    #[test]
    fn yaml_types_become_json_types() {
        let (_, after) = run("set:\n  max-concurrent-downloads: 3\n  mtu: '1500'\n  default-ulimits: {nofile: {Name: nofile, Hard: 64000}}\n", Some("{}"));
        assert_eq!(
            after,
            "{\n  \"max-concurrent-downloads\": 3,\n  \"mtu\": \"1500\",\n  \"default-ulimits\": {\n    \"nofile\": {\n      \"Name\": \"nofile\",\n      \"Hard\": 64000\n    }\n  }\n}\n"
        );
    }

    #[test]
    fn build_errors_point_at_the_parameter() {
        assert_eq!(
            build_err("json", "path: /etc/x.json\n"),
            "1:1: `json` needs `set` or `remove` (with at least one key)"
        );
        assert_eq!(
            build_err("json", "path: /etc/x.json\nset: {}\n"),
            "1:1: `json` needs `set` or `remove` (with at least one key)"
        );
        assert_eq!(
            build_err("json", "path: /etc/x.json\nset: [a]\n"),
            "2:6: `set` of `json` must be a mapping of keys to values, found a list"
        );
        assert_eq!(
            build_err("json", "path: /etc/x.json\nremove:\n  - a\n  - {b: c}\n"),
            "4:5: each item of `remove` must be a key or a list of keys (a path into nested objects), found a mapping"
        );
        assert_eq!(
            build_err(
                "json",
                "path: /etc/x.json\nset: {log-opts: {max-size: 1m}}\nremove:\n  - [log-opts]\n"
            ),
            "4:5: `remove` takes away `log-opts`, which `set` sets"
        );
        assert_eq!(
            build_err("json", "path: /etc/x.json\nset: {a: 1}\nremove: a\n"),
            "3:9: `remove` takes away `a`, which `set` sets"
        );
        assert_eq!(
            build_err("json", "path: /etc/x.json\nset: {a: 1}\nsett: 1\n"),
            "3:1: unknown key `sett` for `json`"
        );
    }

    #[test]
    fn a_sibling_of_a_set_key_may_be_removed() {
        let (changes, after) = run(
            "set: {log-opts: {max-size: 10m}}\nremove: [[log-opts, max-file]]\n",
            Some(r#"{"log-opts": {"max-file": "3"}}"#),
        );
        assert_eq!(
            after,
            "{\n  \"log-opts\": {\n    \"max-size\": \"10m\"\n  }\n}\n"
        );
        assert_eq!(
            whats(&changes),
            ["key log-opts.max-size", "key log-opts.max-file", "content"]
        );
    }
}
