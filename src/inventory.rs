//! Ansible YAML inventories, read unchanged: hosts, groups, variables, connection settings, and
//! the `--limit` patterns that pick hosts from them.
//!
//! The shape is that of Ansible's YAML inventory plugin: top-level groups (normally `all`), each a
//! mapping with optional `hosts`, `children` and `vars`. Host ranges (`web[01:03]`), group depth
//! and priority, and the implicit `ungrouped` group behave as in Ansible, so that an inventory
//! written for Ansible selects the same hosts with the same variables here. Values stay located
//! YAML nodes, so an error found when a variable is finally used still points into the inventory.
//! Where Ansible only warns (an unknown key in a group, a limit term that matches nothing), SLICE
//! refuses: a typo must not silently widen or narrow the set of hosts being hardened.
//! `group_vars/` and `host_vars/` folders beside the inventory are not read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use globset::GlobBuilder;
use indexmap::IndexMap;
use regex::Regex;

use crate::error::{suggest, Error, Loc, Result, Source};
use crate::yaml::{self, Node, Value};

/// The keys a group may hold.
const GROUP_KEYS: &[&str] = &["hosts", "children", "vars"];
/// One host pattern may not expand to more hosts than this: `[0:99999999]` is a typo, not a fleet.
const MAX_RANGE_HOSTS: usize = 100_000;
/// Ansible's default `ansible_group_priority`.
const DEFAULT_PRIORITY: i64 = 1;
/// The letters of an alphabetic range, in Ansible's order (`string.ascii_letters`), so `[x:B]`
/// runs x, y, z, A, B as it does there.
const LETTERS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

// Each connection setting and the variables that give it, the winning name first: SLICE's own name,
// then Ansible's, where `ansible_ssh_*` beats `ansible_*` as in Ansible's ssh connection plugin.
// The name decides, not the level the variable was set at: `slice_user` in `all` beats
// `ansible_user` on the host, just as Ansible's `ansible_ssh_user` in a group beats a host's
// `ansible_user`. That lets one `slice_*` line override an Ansible inventory for SLICE only.
const ADDRESS_VARS: &[&str] = &["slice_host", "ansible_ssh_host", "ansible_host"];
const PORT_VARS: &[&str] = &["slice_port", "ansible_ssh_port", "ansible_port"];
const USER_VARS: &[&str] = &["slice_user", "ansible_ssh_user", "ansible_user"];
const BECOME_VARS: &[&str] = &["slice_become", "ansible_become"];
const BECOME_USER_VARS: &[&str] = &["slice_become_user", "ansible_become_user"];
const KEY_FILE_VARS: &[&str] = &[
    "slice_key_file",
    "ansible_ssh_private_key_file",
    "ansible_private_key_file",
];
const CONNECTION_VARS: &[&str] = &["slice_connection", "ansible_connection"];

/// Variables the inventory itself gives templates; they override user variables of those names.
const MAGIC_VARS: &[&str] = &[
    "inventory_hostname",
    "inventory_hostname_short",
    "group_names",
];

const ROOT_HELP: &str = "an inventory starts with groups, normally `all:`, e.g. \
                         `all: {hosts: {web1.example.com: }, children: {db: {hosts: {db1: }}}}`";
const INI_HELP: &str = "this looks like an INI inventory; SLICE reads YAML inventories \
                        (convert it with `ansible-inventory -i FILE --list --yaml`)";
const GROUP_HELP: &str = "a group is a mapping with `hosts`, `children` and `vars`, e.g. \
                          `web: {hosts: {web1.example.com: }, vars: {http_port: 80}}`";
const RANGE_HELP: &str =
    "a range is `[01:10]` (zero-padded), `[1:10]`, `[a:f]` or `[1:10:2]` (with a step)";

/// A loaded inventory.
pub struct Inventory {
    pub source: Arc<Source>,
    /// In order of first appearance in the file.
    pub hosts: Vec<Host>,
    /// `all` first, then in order of first appearance; `ungrouped` always exists, as in Ansible.
    pub groups: Vec<Group>,
}

pub struct Group {
    pub name: String,
    /// Where the group is first named.
    pub loc: Loc,
    /// The longest chain of parents up to `all` (0 for `all`, 1 for its children, ...).
    pub depth: usize,
    /// `ansible_group_priority` (default 1): among groups of one depth, the higher wins.
    pub priority: i64,
    pub parents: Vec<String>,
    pub children: Vec<String>,
    /// Every host of the group and of its descendants, in inventory order.
    pub hosts: Vec<String>,
    /// The group's own variables; when a group is written twice, the later value of a name wins.
    pub vars: Vec<(String, Node)>,
}

/// One host with its variables merged and its connection settings read from them.
pub struct Host {
    /// The inventory name (`inventory_hostname`).
    pub name: String,
    /// Where the host is first defined (the key in `hosts`, a range for an expanded one).
    pub loc: Loc,
    /// `slice_host` / `ansible_host`; the name when neither is given.
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// `slice_become` / `ansible_become`: run as another user (sudo) on the host.
    pub escalate: bool,
    /// `slice_become_user` / `ansible_become_user` as given; see [`Host::become_user_or_root`].
    pub become_user: Option<String>,
    pub key_file: Option<String>,
    /// `ansible_connection: local`: the machine SLICE runs on, without ssh.
    pub local: bool,
    /// The host's groups and their ancestors, sorted, without `all` (Ansible's `group_names`).
    pub groups: Vec<String>,
    /// Group and host variables merged: each name once, with the value that wins.
    pub vars: Vec<(String, Node)>,
}

impl Host {
    pub fn var(&self, name: &str) -> Option<&Node> {
        self.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The user to become: as given, else root as in Ansible.
    pub fn become_user_or_root(&self) -> &str {
        self.become_user.as_deref().unwrap_or("root")
    }

    /// The host's variables plus `inventory_hostname`, `inventory_hostname_short` and
    /// `group_names`, which are placed at the host's definition and replace user variables of
    /// those names. Ansible's `groups` is inventory-wide: [`Inventory::groups_var`].
    pub fn template_vars(&self) -> Vec<(String, Node)> {
        let at = |value| Node::new(value, self.loc.clone());
        let mut out: Vec<(String, Node)> = self
            .vars
            .iter()
            .filter(|(k, _)| !MAGIC_VARS.contains(&k.as_str()))
            .cloned()
            .collect();
        out.push((
            "inventory_hostname".to_string(),
            at(Value::Str(self.name.clone())),
        ));
        out.push((
            "inventory_hostname_short".to_string(),
            at(Value::Str(short_name(&self.name))),
        ));
        let names = self
            .groups
            .iter()
            .map(|g| at(Value::Str(g.clone())))
            .collect();
        out.push(("group_names".to_string(), at(Value::Seq(names))));
        out
    }
}

/// Ansible's `inventory_hostname_short`: up to the first dot, except for an IP address.
fn short_name(name: &str) -> String {
    if name.parse::<IpAddr>().is_ok() {
        return name.to_string();
    }
    name.split('.').next().unwrap_or(name).to_string()
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Inventory> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("read", &path.display().to_string(), e))?;
        Inventory::from_source(Source::new(path.display().to_string(), text))
    }

    pub fn from_source(src: Arc<Source>) -> Result<Inventory> {
        let root = yaml::parse(&src).map_err(|mut e| {
            if e.help.is_none() && looks_ini(&src.text) {
                e.help = Some(INI_HELP.to_string());
            }
            e
        })?;
        let Some(entries) = root.as_map() else {
            let help = if looks_ini(&src.text) {
                INI_HELP
            } else {
                ROOT_HELP
            };
            return Err(Error::at(
                &root.loc,
                format!(
                    "an inventory must be a mapping of group names to groups, found {}",
                    root.type_name()
                ),
            )
            .with_help(help));
        };
        let start = start_loc(&src);
        let mut loader = Loader::default();
        // `all` comes first whether or not the file names it.
        let all_loc = entries
            .iter()
            .find(|(k, _)| k.as_str() == Some("all"))
            .map_or(start.clone(), |(k, _)| k.loc.clone());
        loader.declare("all", &all_loc);
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default();
            match key {
                // Ansible refuses these files the same way: they configure a dynamic inventory.
                "plugin" => return Err(Error::at(
                    &k.loc,
                    "this file configures an inventory plugin; SLICE reads static YAML inventories",
                )
                .with_help("write the hosts out with `ansible-inventory -i FILE --list --yaml`")),
                "hosts" | "children" | "vars" => {
                    return Err(Error::at(
                        &k.loc,
                        format!("`{key}` at the top level would be a group named `{key}`"),
                    )
                    .with_help(format!(
                        "the top level holds groups: indent `{key}:` under `all:`"
                    )))
                }
                _ => loader.group(k, v, None)?,
            }
        }
        loader.finish(src, start)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Ansible's `groups` variable: each group's name → the names of its hosts.
    pub fn groups_var(&self) -> Node {
        let entries = self
            .groups
            .iter()
            .map(|g| {
                let hosts = g
                    .hosts
                    .iter()
                    .map(|h| Node::new(Value::Str(h.clone()), g.loc.clone()))
                    .collect();
                (
                    Node::new(Value::Str(g.name.clone()), g.loc.clone()),
                    Node::new(Value::Seq(hosts), g.loc.clone()),
                )
            })
            .collect();
        Node::new(Value::Map(entries), start_loc(&self.source))
    }

    /// The hosts a `--limit` pattern selects, in inventory order.
    ///
    /// The subset of Ansible's patterns: terms separated by commas (or colons when there is no
    /// comma), each a host or group name, a glob (`web*`, `db?`), a regex after `~`, or a
    /// subscript of what a name matches (`web[0]`, `web[1:3]`, both ends included); `&term`
    /// intersects and `!term` excludes. As in Ansible, the order of terms does not matter: the
    /// plain terms are united, then each `&` term intersects, then each `!` term removes; only
    /// `&`/`!` terms start from all hosts. Unlike Ansible, a term that matches nothing is an error
    /// (with the nearest names), and so is a pattern that selects no host.
    pub fn limit(&self, pattern: &str) -> Result<Vec<&Host>> {
        if pattern.trim_start().starts_with('@') {
            return Err(Error::new(format!(
                "the limit `{pattern}` reads hosts from a file, which SLICE does not support"
            ))
            .with_help("give the host names separated by commas"));
        }
        let terms = split_pattern(pattern);
        if terms.is_empty() {
            return Err(Error::new("the limit is empty").with_help(
                "give host or group names separated by commas, or `all` for every host",
            ));
        }
        let index: HashMap<&str, usize> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.as_str(), i))
            .collect();
        let mut parts: Vec<(Op, &str, Vec<bool>)> = Vec::new();
        for term in terms {
            let (op, name) = if let Some(rest) = term.strip_prefix('!') {
                (Op::Exclude, rest.trim())
            } else if let Some(rest) = term.strip_prefix('&') {
                (Op::Intersect, rest.trim())
            } else {
                (Op::Add, term)
            };
            if name.is_empty() {
                return Err(Error::new(format!(
                    "`{term}` in the limit `{pattern}` names no host or group"
                )));
            }
            let hit = self.term_hosts(name, pattern, &index)?;
            parts.push((op, term, hit));
        }
        let plain = parts.iter().any(|(op, ..)| *op == Op::Add);
        let mut selected = vec![!plain; self.hosts.len()];
        for op in [Op::Add, Op::Intersect, Op::Exclude] {
            for (_, _, hit) in parts.iter().filter(|(o, ..)| *o == op) {
                for (s, h) in selected.iter_mut().zip(hit) {
                    *s = match op {
                        Op::Add => *s || *h,
                        Op::Intersect => *s && *h,
                        Op::Exclude => *s && !*h,
                    };
                }
            }
        }
        let chosen: Vec<&Host> = self
            .hosts
            .iter()
            .zip(&selected)
            .filter(|(_, s)| **s)
            .map(|(h, _)| h)
            .collect();
        if chosen.is_empty() {
            let each: Vec<String> = parts
                .iter()
                .map(|(_, term, hit)| {
                    let n = hit.iter().filter(|h| **h).count();
                    format!("`{term}` matches {n} host{}", if n == 1 { "" } else { "s" })
                })
                .collect();
            return Err(Error::new(format!("the limit `{pattern}` selects no host"))
                .with_note(each.join(", ")));
        }
        Ok(chosen)
    }

    /// The hosts one term (without its `!`/`&`) matches, as a flag per host; an error if none.
    fn term_hosts(
        &self,
        term: &str,
        pattern: &str,
        index: &HashMap<&str, usize>,
    ) -> Result<Vec<bool>> {
        let mut hit = vec![false; self.hosts.len()];
        if let Some(expr) = term.strip_prefix('~') {
            // Python's re.match, which Ansible uses, is anchored at the start only.
            let re = Regex::new(&format!("^(?:{expr})")).map_err(|e| {
                Error::new(format!(
                    "`{term}` in the limit `{pattern}` is not a valid regular expression"
                ))
                .with_note(e.to_string())
            })?;
            self.mark(&mut hit, index, |name| re.is_match(name));
        } else if let Some((base, sub)) = subscript(term) {
            let base_hit = self.term_hosts(base, pattern, index)?;
            let list: Vec<usize> = (0..base_hit.len()).filter(|&i| base_hit[i]).collect();
            for i in pick(&list, sub).ok_or_else(|| {
                Error::new(format!(
                    "`{term}` in the limit `{pattern}` selects no host: `{base}` has {} host{}",
                    list.len(),
                    if list.len() == 1 { "" } else { "s" }
                ))
                .with_help("hosts are numbered from 0, in inventory order")
            })? {
                hit[*i] = true;
            }
        } else if term.contains(['*', '?', '[', '{']) {
            let glob = GlobBuilder::new(term)
                .literal_separator(false)
                .build()
                .map_err(|e| {
                    Error::new(format!(
                        "`{term}` in the limit `{pattern}` is not a valid pattern"
                    ))
                    .with_note(e.to_string())
                })?
                .compile_matcher();
            self.mark(&mut hit, index, |name| glob.is_match(name));
        } else if let Some(g) = self.group(term) {
            // A plain word is a group if there is one of that name, else a host (as in Ansible).
            for h in &g.hosts {
                if let Some(&i) = index.get(h.as_str()) {
                    hit[i] = true;
                }
            }
        } else if let Some(&i) = index.get(term) {
            hit[i] = true;
        }
        if hit.iter().any(|h| *h) {
            Ok(hit)
        } else {
            Err(self.no_match(term, pattern))
        }
    }

    /// Marks the hosts of every group, and every host, whose name matches.
    fn mark(&self, hit: &mut [bool], index: &HashMap<&str, usize>, matches: impl Fn(&str) -> bool) {
        for g in self.groups.iter().filter(|g| matches(&g.name)) {
            for h in &g.hosts {
                if let Some(&i) = index.get(h.as_str()) {
                    hit[i] = true;
                }
            }
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if matches(&h.name) {
                hit[i] = true;
            }
        }
    }

    fn no_match(&self, term: &str, pattern: &str) -> Error {
        let message = if term == pattern.trim() {
            format!("the limit `{term}` matches no host or group in the inventory")
        } else {
            format!("`{term}` in the limit `{pattern}` matches no host or group in the inventory")
        };
        let mut names: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
        for h in &self.hosts {
            if !names.contains(&h.name.as_str()) {
                names.push(&h.name);
            }
        }
        // Compare the words, not the pattern syntax: `wbe*` is near `web`.
        let bare: String = term.chars().filter(|c| !"~*?[]{}".contains(*c)).collect();
        let e = Error::new(message);
        let e = match suggest(&bare, names.iter().copied()) {
            Some(s) => e.with_help(format!("did you mean `{s}`?")),
            None => e,
        };
        if self.hosts.is_empty() {
            return e.with_note("the inventory has no hosts");
        }
        let mut near: Vec<(usize, &str)> = names
            .iter()
            .map(|n| (strsim::damerau_levenshtein(&bare, n), *n))
            .collect();
        // Stable: among equally near names, groups first, then hosts in inventory order.
        near.sort_by_key(|(d, _)| *d);
        let near: Vec<String> = near.iter().take(5).map(|(_, n)| format!("`{n}`")).collect();
        e.with_note(format!("nearest names: {}", near.join(", ")))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Intersect,
    Exclude,
}

/// Ansible's subscript of a pattern: `web[0]`, `web[-1]`, `web[1:3]` or `web[1-3]` (end included),
/// `web[2:]`. Only digits: `web[ab]` stays a glob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subscript {
    Index(i64),
    Slice(usize, Option<usize>),
}

fn subscript(term: &str) -> Option<(&str, Subscript)> {
    let body = term.strip_suffix(']')?;
    let open = body.rfind('[')?;
    let (base, inner) = (&body[..open], &body[open + 1..]);
    if base.is_empty() {
        return None;
    }
    if is_digits(inner.strip_prefix('-').unwrap_or(inner)) {
        return Some((base, Subscript::Index(inner.parse().ok()?)));
    }
    let sep = inner.find([':', '-'])?;
    let (from, to) = (&inner[..sep], &inner[sep + 1..]);
    if !is_digits(from) || !(to.is_empty() || is_digits(to)) {
        return None;
    }
    let to = if to.is_empty() {
        None
    } else {
        Some(to.parse().ok()?)
    };
    Some((base, Subscript::Slice(from.parse().ok()?, to)))
}

/// The part of `list` a subscript selects; `None` when that is nothing.
fn pick(list: &[usize], sub: Subscript) -> Option<&[usize]> {
    match sub {
        Subscript::Index(i) => {
            let len = i64::try_from(list.len()).ok()?;
            let at = usize::try_from(if i < 0 { len + i } else { i }).ok()?;
            list.get(at..=at)
        }
        Subscript::Slice(from, to) => {
            let end = to.map_or(list.len(), |t| t.saturating_add(1).min(list.len()));
            list.get(from..end).filter(|s| !s.is_empty())
        }
    }
}

/// Splits a limit into terms as Ansible does: on commas if there is one, else on colons outside
/// brackets (so `web[0:2]` stays whole), except that `host:22` is one host with a port.
fn split_pattern(pattern: &str) -> Vec<&str> {
    let pattern = pattern.trim();
    let parts = if pattern.contains(',') {
        pattern.split(',').collect()
    } else {
        let parts = split_outside_brackets(pattern, ':');
        if parts.len() == 2 && is_digits(parts[1]) {
            vec![pattern]
        } else {
            parts
        }
    };
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn split_outside_brackets(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut from = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            c if c == sep && depth == 0 => {
                parts.push(&s[from..i]);
                from = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[from..]);
    parts
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether the text reads as an INI inventory: its first line is a `[section]`.
fn looks_ini(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .is_some_and(|l| l.starts_with('[') && l.ends_with(']') && !l.contains(','))
}

fn start_loc(src: &Arc<Source>) -> Loc {
    Loc {
        src: src.clone(),
        line: 1,
        col: 1,
        width: 1,
    }
}

/// Expands Ansible's host ranges: `web[01:03]` → web01, web02, web03 (a start written with a
/// leading zero pads to its width); `[a:c]`; `[1:9:4]` with a step; `[:2]` starts at 0; several
/// ranges in one name multiply. The error says why a range is wrong.
pub fn expand_range(pattern: &str) -> std::result::Result<Vec<String>, String> {
    let Some(open) = pattern.find('[') else {
        if pattern.contains(']') {
            return Err("`]` without an opening `[`".to_string());
        }
        return Ok(vec![pattern.to_string()]);
    };
    let head = &pattern[..open];
    if head.contains(']') {
        return Err("`]` without an opening `[`".to_string());
    }
    let rest = &pattern[open + 1..];
    let Some(close) = rest.find(']') else {
        return Err("`[` without a closing `]`".to_string());
    };
    let items = range_items(&rest[..close])?;
    let tails = expand_range(&rest[close + 1..])?;
    if items.len().saturating_mul(tails.len()) > MAX_RANGE_HOSTS {
        return Err(format!("it makes more than {MAX_RANGE_HOSTS} hosts"));
    }
    let mut out = Vec::with_capacity(items.len() * tails.len());
    for item in &items {
        for tail in &tails {
            out.push(format!("{head}{item}{tail}"));
        }
    }
    Ok(out)
}

/// The values of one `[start:end(:step)]`.
fn range_items(spec: &str) -> std::result::Result<Vec<String>, String> {
    let bounds: Vec<&str> = spec.split(':').collect();
    let (start, end, step) = match bounds[..] {
        [a, b] => (a, b, None),
        [a, b, s] => (a, b, Some(s)),
        _ => {
            return Err(format!(
                "`[{spec}]` is not `[start:end]` or `[start:end:step]`"
            ))
        }
    };
    let step = match step {
        None => 1,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| format!("the step `{s}` must be a whole number above 0"))?,
    };
    // Ansible reads `[:3]` as `[0:3]`.
    let start = if start.is_empty() { "0" } else { start };
    if end.is_empty() {
        return Err(format!("`[{spec}]` has no end"));
    }
    let letter = |s: &str| {
        if s.len() == 1 {
            LETTERS.find(s)
        } else {
            None
        }
    };
    if let (Some(a), Some(b)) = (letter(start), letter(end)) {
        if a > b {
            return Err(format!("`{start}` comes after `{end}`"));
        }
        return Ok(LETTERS[a..=b]
            .chars()
            .step_by(step)
            .map(String::from)
            .collect());
    }
    let (true, true) = (is_digits(start), is_digits(end)) else {
        return Err(format!(
            "`{start}:{end}` is neither a numeric nor an alphabetic range"
        ));
    };
    let (Ok(a), Ok(b)) = (start.parse::<u64>(), end.parse::<u64>()) else {
        return Err(format!("`{start}:{end}` has numbers too large"));
    };
    if a > b {
        return Err(format!("{start} is greater than {end}"));
    }
    // A leading zero asks for padding to the start's width; Ansible wants the end that wide too.
    let width = if start.len() > 1 && start.starts_with('0') {
        if end.len() != start.len() {
            return Err(format!(
                "`{start}` and `{end}` must have the same number of digits to pad with zeros"
            ));
        }
        start.len()
    } else {
        0
    };
    let step64 = u64::try_from(step).unwrap_or(u64::MAX);
    if (b - a) / step64 >= MAX_RANGE_HOSTS as u64 {
        return Err(format!("it makes more than {MAX_RANGE_HOSTS} hosts"));
    }
    Ok((a..=b)
        .step_by(step)
        .map(|i| format!("{i:0width$}"))
        .collect())
}

/// Groups and hosts as the file defines them, before depth, membership and merging.
#[derive(Default)]
struct Loader {
    groups: IndexMap<String, GroupDraft>,
    hosts: IndexMap<String, HostDraft>,
}

struct GroupDraft {
    loc: Loc,
    vars: IndexMap<String, Node>,
    parents: Vec<String>,
    /// Each child with the key that made it one, to point at if the children form a loop.
    children: Vec<(String, Loc)>,
}

struct HostDraft {
    loc: Loc,
    /// Host variables; a host defined twice has them merged, the later definition winning.
    vars: IndexMap<String, Node>,
    /// The groups that list the host under `hosts`.
    groups: Vec<String>,
}

impl Loader {
    fn declare(&mut self, name: &str, loc: &Loc) {
        self.groups
            .entry(name.to_string())
            .or_insert_with(|| GroupDraft {
                loc: loc.clone(),
                vars: IndexMap::new(),
                parents: Vec::new(),
                children: Vec::new(),
            });
    }

    /// Reads one group: `key` is its name, `value` its mapping (or null, when it is only named).
    /// A group written in several places is one group with everything merged, as in Ansible.
    fn group(&mut self, key: &Node, value: &Node, parent: Option<&str>) -> Result<()> {
        let name = key.as_str().unwrap_or_default().to_string();
        if name.trim().is_empty() {
            return Err(Error::at(&key.loc, "a group name must not be empty"));
        }
        self.declare(&name, &key.loc);
        if let Some(parent) = parent {
            self.link(parent, &name, &key.loc)?;
        }
        let entries = match &value.value {
            Value::Null => return Ok(()),
            Value::Map(entries) => entries,
            Value::Seq(items) => {
                let first = items
                    .first()
                    .and_then(Node::scalar_text)
                    .unwrap_or_else(|| "web1.example.com".to_string());
                return Err(Error::at(
                    &value.loc,
                    format!("group `{name}` must be a mapping, found a list"),
                )
                .with_help(format!(
                    "put its hosts under `hosts:`, each as a key: `{name}: {{hosts: {{{first}: }}}}`"
                )));
            }
            _ => {
                return Err(Error::at(
                    &value.loc,
                    format!(
                        "group `{name}` must be a mapping, found {}",
                        value.type_name()
                    ),
                )
                .with_help(GROUP_HELP))
            }
        };
        for (k, v) in entries {
            match k.as_str().unwrap_or_default() {
                "hosts" => self.hosts(&name, v)?,
                "children" => self.children(&name, v)?,
                "vars" => self.vars(&name, v)?,
                other => {
                    let e = Error::at(&k.loc, format!("unknown key `{other}` in group `{name}`"));
                    return Err(match suggest(other, GROUP_KEYS.iter().copied()) {
                        Some(s) => e.with_help(format!("did you mean `{s}`?")),
                        None => e.with_help(format!(
                            "a group takes {}; a variable goes under `vars:`",
                            GROUP_KEYS.join(", ")
                        )),
                    });
                }
            }
        }
        Ok(())
    }

    fn link(&mut self, parent: &str, child: &str, loc: &Loc) -> Result<()> {
        if child == "all" {
            return Err(
                Error::at(loc, format!("`all` cannot be a child of `{parent}`"))
                    .with_note("`all` holds every host and group"),
            );
        }
        if let Some(p) = self.groups.get_mut(parent) {
            if !p.children.iter().any(|(c, _)| c == child) {
                p.children.push((child.to_string(), loc.clone()));
            }
        }
        if let Some(c) = self.groups.get_mut(child) {
            if !c.parents.iter().any(|p| p == parent) {
                c.parents.push(parent.to_string());
            }
        }
        Ok(())
    }

    fn hosts(&mut self, group: &str, node: &Node) -> Result<()> {
        match &node.value {
            Value::Null => Ok(()),
            // Ansible accepts one host name in place of the mapping.
            Value::Str(_) => self.host(group, node, None),
            Value::Map(entries) => entries
                .iter()
                .try_for_each(|(k, v)| self.host(group, k, Some(v))),
            Value::Seq(items) => {
                let first = items
                    .first()
                    .and_then(Node::scalar_text)
                    .unwrap_or_else(|| "web1.example.com".to_string());
                Err(Error::at(
                    &node.loc,
                    format!(
                        "`hosts` of group `{group}` must be a mapping of host names to their variables, found a list"
                    ),
                )
                .with_help(format!(
                    "write each host as a key, `{first}:` rather than `- {first}` (YAML inventories are not INI ones)"
                )))
            }
            _ => Err(Error::at(
                &node.loc,
                format!(
                    "`hosts` of group `{group}` must be a mapping of host names to their variables, found {}",
                    node.type_name()
                ),
            )
            .with_help("e.g. `hosts: {web1.example.com: , db1.example.com: {ansible_port: 2222}}`")),
        }
    }

    /// One key of `hosts`: a name, a range, either with `:port`; `vars` is its value.
    fn host(&mut self, group: &str, key: &Node, vars: Option<&Node>) -> Result<()> {
        let written = key.as_str().unwrap_or_default();
        if written.trim().is_empty() {
            return Err(Error::at(&key.loc, "a host name must not be empty"));
        }
        let (pattern, port) = split_port(written);
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(Node {
                    value: Value::Int(i64::from(n)),
                    loc: key.loc.clone(),
                    raw: Some(p.to_string()),
                }),
                _ => {
                    return Err(Error::at(
                        &key.loc,
                        format!("the port in `{written}` must be a number from 1 to 65535"),
                    ))
                }
            },
        };
        let names = expand_range(pattern).map_err(|why| {
            Error::at(
                &key.loc,
                format!("invalid host range in `{written}`: {why}"),
            )
            .with_help(RANGE_HELP)
        })?;
        let entries: &[(Node, Node)] = match vars {
            None => &[],
            Some(v) => match &v.value {
                Value::Null => &[],
                Value::Map(entries) => entries,
                _ => {
                    let help = match v.scalar_text() {
                        Some(text) if v.as_str().is_some() => format!(
                            "to give its address write `{written}: {{ansible_host: {text}}}`"
                        ),
                        _ => format!(
                            "e.g. `{written}: {{ansible_port: 2222}}`, or nothing after the colon"
                        ),
                    };
                    return Err(Error::at(
                        &v.loc,
                        format!(
                            "the variables of host `{written}` must be a mapping, found {}",
                            v.type_name()
                        ),
                    )
                    .with_help(help));
                }
            },
        };
        for name in names {
            let host = self.hosts.entry(name).or_insert_with(|| HostDraft {
                loc: key.loc.clone(),
                vars: IndexMap::new(),
                groups: Vec::new(),
            });
            if !host.groups.iter().any(|g| g == group) {
                host.groups.push(group.to_string());
            }
            // As in Ansible, the port in the name is a variable the host's own may override.
            if let Some(p) = &port {
                host.vars.insert("ansible_port".to_string(), p.clone());
            }
            for (k, v) in entries {
                host.vars
                    .insert(k.as_str().unwrap_or_default().to_string(), v.clone());
            }
        }
        Ok(())
    }

    fn children(&mut self, parent: &str, node: &Node) -> Result<()> {
        match &node.value {
            Value::Null => Ok(()),
            // Ansible accepts one group name in place of the mapping.
            Value::Str(_) => {
                let none = Node::new(Value::Null, node.loc.clone());
                self.group(node, &none, Some(parent))
            }
            Value::Map(entries) => entries
                .iter()
                .try_for_each(|(k, v)| self.group(k, v, Some(parent))),
            Value::Seq(items) => {
                let first = items
                    .first()
                    .and_then(Node::scalar_text)
                    .unwrap_or_else(|| "web".to_string());
                Err(Error::at(
                    &node.loc,
                    format!(
                        "`children` of group `{parent}` must be a mapping of group names to groups, found a list"
                    ),
                )
                .with_help(format!(
                    "write each child group as a key, `{first}:` rather than `- {first}`"
                )))
            }
            _ => Err(Error::at(
                &node.loc,
                format!(
                    "`children` of group `{parent}` must be a mapping of group names to groups, found {}",
                    node.type_name()
                ),
            )
            .with_help(GROUP_HELP)),
        }
    }

    fn vars(&mut self, group: &str, node: &Node) -> Result<()> {
        let entries = match &node.value {
            Value::Null => return Ok(()),
            Value::Map(entries) => entries,
            other => {
                let help = if matches!(other, Value::Seq(_)) {
                    "write `name: value` pairs directly under `vars:`, without `- `"
                } else {
                    "e.g. `vars: {ntp_server: ntp.example.com}`"
                };
                return Err(Error::at(
                    &node.loc,
                    format!(
                        "`vars` of group `{group}` must be a mapping of names to values, found {}",
                        node.type_name()
                    ),
                )
                .with_help(help));
            }
        };
        if let Some(g) = self.groups.get_mut(group) {
            for (k, v) in entries {
                g.vars
                    .insert(k.as_str().unwrap_or_default().to_string(), v.clone());
            }
        }
        Ok(())
    }

    /// Ansible's reconciling step, then depth, membership and merged variables.
    fn finish(mut self, src: Arc<Source>, start: Loc) -> Result<Inventory> {
        self.declare("ungrouped", &start);
        // Top-level groups, and any group that no group lists as a child, belong to `all`.
        let orphans: Vec<(String, Loc)> = self
            .groups
            .iter()
            .filter(|(n, g)| n.as_str() != "all" && g.parents.is_empty())
            .map(|(n, g)| (n.clone(), g.loc.clone()))
            .collect();
        for (name, loc) in orphans {
            self.link("all", &name, &loc)?;
        }
        // A host in no group but `all` is in `ungrouped`, and one in a real group is not.
        for host in self.hosts.values_mut() {
            host.groups.retain(|g| g != "all" && g != "ungrouped");
            if host.groups.is_empty() {
                host.groups.push("ungrouped".to_string());
            }
        }
        let order = topological(&self.groups)?;
        let names: Vec<&str> = self.groups.keys().map(String::as_str).collect();
        let parents: Vec<Vec<usize>> = self
            .groups
            .values()
            .map(|g| {
                g.parents
                    .iter()
                    .filter_map(|p| self.groups.get_index_of(p))
                    .collect()
            })
            .collect();
        let mut depth = vec![0usize; names.len()];
        for &g in &order {
            for &p in &parents[g] {
                depth[g] = depth[g].max(depth[p] + 1);
            }
        }
        let priority: Vec<i64> = self
            .groups
            .values()
            .map(group_priority)
            .collect::<Result<_>>()?;
        let mut members: Vec<Vec<String>> = vec![Vec::new(); names.len()];
        let mut hosts = Vec::with_capacity(self.hosts.len());
        for (name, draft) in &self.hosts {
            let mut groups = ancestors(&draft.groups, &self.groups, &parents);
            // Variable precedence, lowest first, as Ansible's sort_groups: by depth (`all`, then
            // parents, then children), then `ansible_group_priority`, then the group's name in
            // alphabetical order; a later group's value wins. Host variables win over all groups.
            groups.sort_by(|&a, &b| {
                (depth[a], priority[a], names[a]).cmp(&(depth[b], priority[b], names[b]))
            });
            let mut vars: IndexMap<String, Node> = IndexMap::new();
            for &g in &groups {
                for (k, v) in &self.groups[g].vars {
                    vars.insert(k.clone(), v.clone());
                }
                members[g].push(name.clone());
            }
            for (k, v) in &draft.vars {
                vars.insert(k.clone(), v.clone());
            }
            let mut group_names: Vec<String> = groups
                .iter()
                .filter(|&&g| names[g] != "all")
                .map(|&g| names[g].to_string())
                .collect();
            group_names.sort();
            hosts.push(connect(name, &draft.loc, group_names, vars)?);
        }
        let groups = self
            .groups
            .into_iter()
            .zip(members)
            .enumerate()
            .map(|(i, ((name, g), hosts))| Group {
                name,
                loc: g.loc,
                depth: depth[i],
                priority: priority[i],
                parents: g.parents,
                children: g.children.into_iter().map(|(c, _)| c).collect(),
                hosts,
                vars: g.vars.into_iter().collect(),
            })
            .collect();
        Ok(Inventory {
            source: src,
            hosts,
            groups,
        })
    }
}

/// `host:22` → (`host`, `22`); a colon inside a range's brackets is not a port.
fn split_port(written: &str) -> (&str, Option<&str>) {
    match split_outside_brackets(written, ':')[..] {
        [host, port] if is_digits(port) => (host, Some(port)),
        _ => (written, None),
    }
}

/// The groups in an order where parents come before children; a loop is an error at the key
/// that closes it. Iterative, since a chain of groups can be as long as the file.
fn topological(groups: &IndexMap<String, GroupDraft>) -> Result<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; groups.len()];
    let mut post = Vec::with_capacity(groups.len());
    for root in 0..groups.len() {
        if mark[root] != Mark::New {
            continue;
        }
        mark[root] = Mark::Open;
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(top) = stack.last_mut() {
            let (g, next) = *top;
            let children = &groups[g].children;
            let Some((child, loc)) = children.get(next) else {
                mark[g] = Mark::Done;
                post.push(g);
                stack.pop();
                continue;
            };
            top.1 += 1;
            let Some(c) = groups.get_index_of(child) else {
                continue;
            };
            match mark[c] {
                Mark::New => {
                    mark[c] = Mark::Open;
                    stack.push((c, 0));
                }
                Mark::Open => {
                    let from = stack.iter().position(|(s, _)| *s == c).unwrap_or(0);
                    let path: Vec<&str> = stack[from..]
                        .iter()
                        .filter_map(|(s, _)| groups.get_index(*s).map(|(n, _)| n.as_str()))
                        .chain([child.as_str()])
                        .collect();
                    return Err(Error::at(
                        loc,
                        format!("group `{child}` contains itself: {}", path.join(" → ")),
                    ));
                }
                Mark::Done => {}
            }
        }
    }
    post.reverse();
    Ok(post)
}

/// The groups a host is in: those that list it and all their ancestors (so `all` too).
fn ancestors(
    direct: &[String],
    groups: &IndexMap<String, GroupDraft>,
    parents: &[Vec<usize>],
) -> Vec<usize> {
    let mut seen = vec![false; groups.len()];
    let mut stack: Vec<usize> = direct
        .iter()
        .filter_map(|g| groups.get_index_of(g))
        .collect();
    let mut out = Vec::new();
    while let Some(g) = stack.pop() {
        if std::mem::replace(&mut seen[g], true) {
            continue;
        }
        out.push(g);
        stack.extend(&parents[g]);
    }
    out
}

fn group_priority(g: &GroupDraft) -> Result<i64> {
    let Some(node) = g.vars.get("ansible_group_priority") else {
        return Ok(DEFAULT_PRIORITY);
    };
    let number = match &node.value {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.trim().parse().ok(),
        _ => None,
    };
    number.ok_or_else(|| {
        Error::at(
            &node.loc,
            format!(
                "`ansible_group_priority` must be an integer, found {}",
                describe(node)
            ),
        )
    })
}

/// A value for an error message: a string is quoted, anything else named by its type.
fn describe(node: &Node) -> String {
    match &node.value {
        Value::Str(s) => format!("`{s}`"),
        Value::Int(i) => i.to_string(),
        _ => node.type_name().to_string(),
    }
}

/// A connection setting as found in a host's merged variables.
struct Setting<'a> {
    var: &'static str,
    node: &'a Node,
}

/// The winning variable of those that give one setting; a null value counts as not given.
fn setting<'a>(vars: &'a IndexMap<String, Node>, names: &[&'static str]) -> Option<Setting<'a>> {
    names.iter().find_map(|&var| {
        vars.get(var)
            .filter(|n| !matches!(n.value, Value::Null))
            .map(|node| Setting { var, node })
    })
}

/// A text setting (address, user, key file, connection).
fn text(vars: &IndexMap<String, Node>, names: &[&'static str]) -> Result<Option<(String, Loc)>> {
    let Some(Setting { var, node }) = setting(vars, names) else {
        return Ok(None);
    };
    let text = match &node.value {
        Value::Str(_) | Value::Int(_) | Value::Float(_) => node.scalar_text().unwrap_or_default(),
        _ => {
            return Err(Error::at(
                &node.loc,
                format!("`{var}` must be a string, found {}", node.type_name()),
            ))
        }
    };
    // Connection settings are needed before anything is rendered, and a template left as text
    // would be taken for a host name.
    if text.contains("{{") || text.contains("{%") {
        return Err(Error::at(
            &node.loc,
            format!("`{var}` is a template; SLICE reads connection settings as written"),
        )
        .with_help("write the value itself"));
    }
    if text.trim().is_empty() {
        return Err(Error::at(&node.loc, format!("`{var}` must not be empty")));
    }
    Ok(Some((text, node.loc.clone())))
}

fn port(vars: &IndexMap<String, Node>) -> Result<Option<u16>> {
    let Some(Setting { var, node }) = setting(vars, PORT_VARS) else {
        return Ok(None);
    };
    let number = match &node.value {
        Value::Int(i) => Some(*i),
        // Ansible converts the port with int(), so `"2222"` is a port too.
        Value::Str(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let found = match number {
        Some(n) => match u16::try_from(n) {
            Ok(p) if p > 0 => return Ok(Some(p)),
            _ => n.to_string(),
        },
        None => describe(node),
    };
    Err(Error::at(
        &node.loc,
        format!("`{var}` must be a port number from 1 to 65535, found {found}"),
    ))
}

/// A boolean setting, read as Ansible's `boolean()` does: YAML 1.2 reads `yes` as a string, and
/// Ansible inventories are full of them.
fn flag(vars: &IndexMap<String, Node>, names: &[&'static str]) -> Result<Option<bool>> {
    let Some(Setting { var, node }) = setting(vars, names) else {
        return Ok(None);
    };
    let value = match &node.value {
        Value::Bool(b) => Some(*b),
        Value::Int(1) => Some(true),
        Value::Int(0) => Some(false),
        Value::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" | "t" | "1" => Some(true),
            "false" | "no" | "off" | "n" | "f" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    };
    value.map(Some).ok_or_else(|| {
        Error::at(
            &node.loc,
            format!("`{var}` must be true or false, found {}", describe(node)),
        )
        .with_help("write true or false (yes and no are accepted too)")
    })
}

/// A host with its connection settings read from its merged variables.
fn connect(
    name: &str,
    loc: &Loc,
    groups: Vec<String>,
    vars: IndexMap<String, Node>,
) -> Result<Host> {
    let local = match text(&vars, CONNECTION_VARS)? {
        None => false,
        Some((c, at)) => match c.as_str() {
            "local" => true,
            "ssh" | "smart" | "paramiko" => false,
            _ => {
                return Err(Error::at(
                    &at,
                    format!("connection `{c}` is not supported; SLICE connects over ssh or to the local machine"),
                )
                .with_help("use `ssh` (the default) or `local`"))
            }
        },
    };
    let host = Host {
        name: name.to_string(),
        loc: loc.clone(),
        address: text(&vars, ADDRESS_VARS)?.map_or_else(|| name.to_string(), |(t, _)| t),
        port: port(&vars)?,
        user: text(&vars, USER_VARS)?.map(|(t, _)| t),
        escalate: flag(&vars, BECOME_VARS)?.unwrap_or(false),
        become_user: text(&vars, BECOME_USER_VARS)?.map(|(t, _)| t),
        key_file: text(&vars, KEY_FILE_VARS)?.map(|(t, _)| t),
        local,
        groups,
        vars: vars.into_iter().collect(),
    };
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Inventory> {
        Inventory::from_source(Source::new("hosts.yml", text))
    }

    fn err(text: &str) -> Error {
        match load(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e,
        }
    }

    fn at(e: &Error) -> (usize, usize) {
        let loc = e.loc.as_ref().expect("a located error");
        (loc.line, loc.col)
    }

    fn names(hosts: &[&Host]) -> Vec<String> {
        hosts.iter().map(|h| h.name.clone()).collect()
    }

    fn var(h: &Host, name: &str) -> String {
        h.var(name)
            .and_then(Node::scalar_text)
            .unwrap_or_else(|| panic!("{} has no {name}", h.name))
    }

    const REAL: &str = "\
all:
  vars:
    ansible_user: admin
    ntp_server: ntp.example.com
    tier: base
  hosts:
    bastion.example.com:
      ansible_host: 203.0.113.10
      slice_port: 2222
  children:
    prod:
      vars:
        tier: prod
        env: production
      children:
        web:
        db:
    web:
      vars:
        tier: web
        role: web
        http_port: 80
      hosts:
        web[01:03].example.com:
        cache1.example.com:
          http_port: 8080
    db:
      vars:
        tier: db
        role: db
        ansible_become: \"yes\"
      hosts:
        db1.example.com:
          ansible_port: 2200
          ansible_become_user: postgres
        cache1.example.com:
          tier: cache
    local:
      hosts:
        localhost:
          ansible_connection: local
ungrouped:
  hosts:
    lonely.example.com:
";

    #[test]
    fn realistic_inventory_hosts_groups_and_order() {
        let inv = load(REAL).unwrap();
        let hosts: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "bastion.example.com",
                "web01.example.com",
                "web02.example.com",
                "web03.example.com",
                "cache1.example.com",
                "db1.example.com",
                "localhost",
                "lonely.example.com",
            ]
        );
        let groups: Vec<&str> = inv.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(groups, ["all", "prod", "web", "db", "local", "ungrouped"]);
        let depth = |n: &str| inv.group(n).unwrap().depth;
        assert_eq!(
            [
                depth("all"),
                depth("prod"),
                depth("web"),
                depth("db"),
                depth("ungrouped")
            ],
            [0, 1, 2, 2, 1]
        );
        // In order of first mention: `prod` names `web` before `all` defines it.
        assert_eq!(inv.group("web").unwrap().parents, ["prod", "all"]);
        assert_eq!(
            inv.group("prod").unwrap().hosts,
            [
                "web01.example.com",
                "web02.example.com",
                "web03.example.com",
                "cache1.example.com",
                "db1.example.com"
            ]
        );
        let cache = inv.host("cache1.example.com").unwrap();
        assert_eq!(cache.groups, ["db", "prod", "web"]);
        // Listed under `all` only: Ansible puts it in `ungrouped`.
        assert_eq!(
            inv.host("bastion.example.com").unwrap().groups,
            ["ungrouped"]
        );
        assert_eq!(
            inv.group("ungrouped").unwrap().hosts,
            ["bastion.example.com", "lonely.example.com"]
        );
        assert_eq!(inv.group("all").unwrap().hosts.len(), 8);
    }

    #[test]
    fn connection_settings() {
        let inv = load(REAL).unwrap();
        let bastion = inv.host("bastion.example.com").unwrap();
        assert_eq!(bastion.address, "203.0.113.10");
        assert_eq!(bastion.port, Some(2222));
        assert_eq!(bastion.user.as_deref(), Some("admin"));
        assert!(!bastion.escalate && !bastion.local);
        assert_eq!(bastion.become_user_or_root(), "root");

        let web = inv.host("web01.example.com").unwrap();
        assert_eq!(web.address, "web01.example.com");
        assert_eq!(web.port, None);

        let db = inv.host("db1.example.com").unwrap();
        assert_eq!(db.port, Some(2200));
        assert!(db.escalate, "\"yes\" from the db group");
        assert_eq!(db.become_user.as_deref(), Some("postgres"));

        assert!(inv.host("localhost").unwrap().local);
    }

    #[test]
    fn variable_precedence() {
        let inv = load(REAL).unwrap();
        let web = inv.host("web01.example.com").unwrap();
        // all < prod (depth 1) < web (depth 2).
        assert_eq!(var(web, "tier"), "web");
        assert_eq!(var(web, "env"), "production");
        assert_eq!(var(web, "ntp_server"), "ntp.example.com");
        assert_eq!(var(web, "http_port"), "80");
        let cache = inv.host("cache1.example.com").unwrap();
        // db and web have one depth: alphabetical, so web (later) wins over db.
        assert_eq!(var(cache, "role"), "web");
        // Host variables win over every group, from whichever definition of the host.
        assert_eq!(var(cache, "tier"), "cache");
        assert_eq!(var(cache, "http_port"), "8080");
        assert!(cache.escalate, "from db");
        // Each name once, and the node still points into the file.
        assert_eq!(cache.vars.iter().filter(|(k, _)| k == "tier").count(), 1);
        let loc = &cache.var("tier").unwrap().loc;
        assert_eq!((loc.line, loc.col), (37, 17));
        assert_eq!(loc.src.name, "hosts.yml");
        let lonely = inv.host("lonely.example.com").unwrap();
        assert_eq!(var(lonely, "tier"), "base");
    }

    #[test]
    fn group_priority_beats_name_order() {
        let inv = load(
            "all:\n  children:\n    a:\n      vars: {x: a, ansible_group_priority: 10}\n      hosts: {h: }\n    b:\n      vars: {x: b}\n      hosts: {h: }\n",
        )
        .unwrap();
        assert_eq!(var(inv.host("h").unwrap(), "x"), "a");
    }

    #[test]
    fn deeper_child_beats_parent_whatever_the_names() {
        let inv = load(
            "all:\n  vars: {x: all}\n  children:\n    zz:\n      vars: {x: zz}\n      children:\n        aa:\n          vars: {x: aa}\n          hosts: {h: }\n",
        )
        .unwrap();
        assert_eq!(var(inv.host("h").unwrap(), "x"), "aa");
    }

    #[test]
    fn slice_names_win_over_ansible_names() {
        let inv = load(
            "all:\n  vars:\n    slice_user: hardening\n    slice_become: true\n  hosts:\n    h:\n      ansible_host: 10.0.0.1\n      slice_host: 10.0.0.2\n      ansible_user: deploy\n      ansible_port: 22\n      slice_port: \"2022\"\n      ansible_become: false\n      ansible_ssh_private_key_file: ~/.ssh/a\n      slice_key_file: ~/.ssh/b\n",
        )
        .unwrap();
        let h = &inv.hosts[0];
        assert_eq!(h.address, "10.0.0.2");
        assert_eq!(h.user.as_deref(), Some("hardening"));
        assert_eq!(h.port, Some(2022));
        assert!(h.escalate);
        assert_eq!(h.key_file.as_deref(), Some("~/.ssh/b"));
    }

    #[test]
    fn become_accepts_ansible_booleans() {
        for (text, want) in [
            ("true", true),
            ("false", false),
            ("yes", true),
            ("no", false),
            ("\"Yes\"", true),
            ("'no'", false),
            ("on", true),
            ("1", true),
            ("0", false),
        ] {
            let inv = load(&format!(
                "all:\n  hosts:\n    h:\n      ansible_become: {text}\n"
            ))
            .unwrap();
            assert_eq!(inv.hosts[0].escalate, want, "{text}");
        }
        let e = err("all:\n  hosts:\n    h:\n      ansible_become: maybe\n");
        assert_eq!(
            e.message,
            "`ansible_become` must be true or false, found `maybe`"
        );
        assert_eq!(at(&e), (4, 23));
    }

    #[test]
    fn duplicate_host_definitions_merge() {
        let inv = load(
            "all:\n  children:\n    a:\n      hosts:\n        h: {x: 1, y: 1}\n    b:\n      hosts:\n        h: {y: 2, z: 2}\n",
        )
        .unwrap();
        assert_eq!(inv.hosts.len(), 1);
        let h = &inv.hosts[0];
        assert_eq!(h.groups, ["a", "b"]);
        assert_eq!([var(h, "x"), var(h, "y"), var(h, "z")], ["1", "2", "2"]);
        // The first definition is the host's place.
        assert_eq!((h.loc.line, h.loc.col), (5, 9));
    }

    #[test]
    fn group_written_twice_is_one_group() {
        let inv = load(
            "all:\n  children:\n    web:\n      hosts: {w1: }\n    prod:\n      children:\n        web:\n          hosts: {w2: }\n          vars: {x: 1}\n",
        )
        .unwrap();
        let web = inv.group("web").unwrap();
        assert_eq!(web.hosts, ["w1", "w2"]);
        assert_eq!(web.parents, ["all", "prod"]);
        assert_eq!(var(inv.host("w1").unwrap(), "x"), "1");
    }

    #[test]
    fn top_level_groups_besides_all() {
        let inv = load("web:\n  hosts: {w1: }\ndb:\n  hosts: db1\n").unwrap();
        assert_eq!(inv.group("web").unwrap().parents, ["all"]);
        assert_eq!(inv.group("db").unwrap().hosts, ["db1"]);
        assert_eq!(inv.group("all").unwrap().hosts, ["w1", "db1"]);
    }

    #[test]
    fn port_in_host_name() {
        let inv =
            load("all:\n  hosts:\n    web[1:2]:2222:\n    db:2200:\n      ansible_port: 22\n")
                .unwrap();
        let hosts: Vec<(&str, Option<u16>)> = inv
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.port))
            .collect();
        assert_eq!(
            hosts,
            [("web1", Some(2222)), ("web2", Some(2222)), ("db", Some(22))]
        );
    }

    #[test]
    fn ranges_expand_as_in_ansible() {
        let x = |p: &str| expand_range(p).unwrap();
        assert_eq!(
            x("web[01:03].example.com"),
            [
                "web01.example.com",
                "web02.example.com",
                "web03.example.com"
            ]
        );
        assert_eq!(x("db[a:c]"), ["dba", "dbb", "dbc"]);
        assert_eq!(x("n[1:10:4]"), ["n1", "n5", "n9"]);
        assert_eq!(x("n[8:11]"), ["n8", "n9", "n10", "n11"]);
        assert_eq!(x("n[:2]"), ["n0", "n1", "n2"]);
        assert_eq!(x("n[001:003:2]"), ["n001", "n003"]);
        assert_eq!(x("n[y:B]"), ["ny", "nz", "nA", "nB"]);
        assert_eq!(x("r[1:2]-n[a:b]"), ["r1-na", "r1-nb", "r2-na", "r2-nb"]);
        assert_eq!(x("plain.example.com"), ["plain.example.com"]);
    }

    #[test]
    fn bad_ranges_say_why() {
        let e = |p: &str| expand_range(p).unwrap_err();
        assert_eq!(
            e("web[01:3]"),
            "`01` and `3` must have the same number of digits to pad with zeros"
        );
        assert_eq!(e("web[3:1]"), "3 is greater than 1");
        assert_eq!(e("web[c:a]"), "`c` comes after `a`");
        assert_eq!(e("web[1:]"), "`[1:]` has no end");
        assert_eq!(e("web[1:2"), "`[` without a closing `]`");
        assert_eq!(
            e("web[1]"),
            "`[1]` is not `[start:end]` or `[start:end:step]`"
        );
        assert_eq!(
            e("web[a:3]"),
            "`a:3` is neither a numeric nor an alphabetic range"
        );
        assert_eq!(
            e("web[1:3:0]"),
            "the step `0` must be a whole number above 0"
        );
        assert_eq!(e("web[0:9999999]"), "it makes more than 100000 hosts");
        assert_eq!(e("a[0:999]b[0:999]"), "it makes more than 100000 hosts");

        let err = err("all:\n  hosts:\n    web[01:3]:\n");
        assert_eq!(
            err.message,
            "invalid host range in `web[01:3]`: `01` and `3` must have the same number of digits to pad with zeros"
        );
        assert_eq!(at(&err), (3, 5));
        assert_eq!(err.help.as_deref(), Some(RANGE_HELP));
    }

    #[test]
    fn limit_by_group_host_and_glob() {
        let inv = load(REAL).unwrap();
        let l = |p: &str| names(&inv.limit(p).unwrap());
        assert_eq!(
            l("web"),
            [
                "web01.example.com",
                "web02.example.com",
                "web03.example.com",
                "cache1.example.com"
            ]
        );
        assert_eq!(l("db1.example.com"), ["db1.example.com"]);
        assert_eq!(l("db?.example.com"), ["db1.example.com"]);
        assert_eq!(
            l("web0*"),
            [
                "web01.example.com",
                "web02.example.com",
                "web03.example.com"
            ]
        );
        // A glob matches group names as well: `lo*` is group `local` and host `lonely...`.
        assert_eq!(l("lo*"), ["localhost", "lonely.example.com"]);
        assert_eq!(l("all").len(), 8);
        assert_eq!(l("*").len(), 8);
        assert_eq!(
            l("db, localhost"),
            ["cache1.example.com", "db1.example.com", "localhost"]
        );
        assert_eq!(l("~web0[12]"), ["web01.example.com", "web02.example.com"]);
    }

    #[test]
    fn limit_exclusion_and_intersection() {
        let inv = load(REAL).unwrap();
        let l = |p: &str| names(&inv.limit(p).unwrap());
        let webs = [
            "web01.example.com",
            "web02.example.com",
            "web03.example.com",
        ];
        assert_eq!(l("prod:!db"), webs);
        assert_eq!(l("prod,!db"), webs);
        // Order does not matter: exclusions apply after every plain term.
        assert_eq!(l("!db,prod"), webs);
        assert_eq!(l("web:&db"), ["cache1.example.com"]);
        assert_eq!(l("web,&db"), ["cache1.example.com"]);
        // Only exclusions: start from every host.
        assert_eq!(
            l("!prod:!local"),
            ["bastion.example.com", "lonely.example.com"]
        );
        assert_eq!(l("web[0]"), ["web01.example.com"]);
        assert_eq!(l("web[-1]"), ["cache1.example.com"]);
        assert_eq!(l("web[1:2]"), ["web02.example.com", "web03.example.com"]);
        assert_eq!(l("web[2:]"), ["web03.example.com", "cache1.example.com"]);
    }

    #[test]
    fn limit_errors_name_the_pattern_and_nearest_names() {
        let inv = load(REAL).unwrap();
        let e = |p: &str| match inv.limit(p) {
            Ok(h) => panic!("{p} selected {:?}", names(&h)),
            Err(e) => e,
        };
        let x = e("wbe");
        assert_eq!(
            x.message,
            "the limit `wbe` matches no host or group in the inventory"
        );
        assert_eq!(x.help.as_deref(), Some("did you mean `web`?"));
        assert!(x.loc.is_none());
        assert_eq!(
            x.notes[0],
            "nearest names: `web`, `db`, `all`, `prod`, `local`"
        );

        // A mistyped exclusion must not silently exclude nothing.
        let x = e("prod,!dbb");
        assert_eq!(
            x.message,
            "`dbb` in the limit `prod,!dbb` matches no host or group in the inventory"
        );
        assert_eq!(x.help.as_deref(), Some("did you mean `db`?"));

        let x = e("web:&local");
        assert_eq!(x.message, "the limit `web:&local` selects no host");
        assert_eq!(x.notes, ["`web` matches 4 hosts, `&local` matches 1 host"]);

        let x = e("web[9]");
        assert_eq!(
            x.message,
            "`web[9]` in the limit `web[9]` selects no host: `web` has 4 hosts"
        );
        assert!(e("  ").message.contains("empty"));
        assert!(e("web,!").message.contains("names no host"));
        assert!(e("~web(")
            .message
            .contains("not a valid regular expression"));
        assert!(e("@retry").message.contains("from a file"));
    }

    #[test]
    fn template_vars_add_inventory_names() {
        let inv = load(REAL).unwrap();
        let cache = inv.host("cache1.example.com").unwrap();
        let vars = cache.template_vars();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).unwrap().1.to_json();
        assert_eq!(get("inventory_hostname"), "cache1.example.com");
        assert_eq!(get("inventory_hostname_short"), "cache1");
        assert_eq!(get("group_names"), serde_json::json!(["db", "prod", "web"]));
        assert_eq!(get("tier"), "cache");
        let groups = inv.groups_var().to_json();
        assert_eq!(groups["local"], serde_json::json!(["localhost"]));
        assert_eq!(groups["all"].as_array().unwrap().len(), 8);
        assert_eq!(short_name("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn located_shape_errors() {
        let e = err("- web1\n- web2\n");
        assert_eq!(
            e.message,
            "an inventory must be a mapping of group names to groups, found a list"
        );
        assert_eq!(at(&e), (1, 1));
        assert_eq!(e.help.as_deref(), Some(ROOT_HELP));

        let e = err("all:\n  hosts:\n    - web1\n    - web2\n");
        assert_eq!(
            e.message,
            "`hosts` of group `all` must be a mapping of host names to their variables, found a list"
        );
        assert_eq!(at(&e), (3, 5));
        assert_eq!(
            e.help.as_deref(),
            Some("write each host as a key, `web1:` rather than `- web1` (YAML inventories are not INI ones)")
        );

        let e = err("all:\n  children:\n    web: [w1, w2]\n");
        assert_eq!(e.message, "group `web` must be a mapping, found a list");
        assert_eq!(at(&e), (3, 10));
        assert_eq!(
            e.help.as_deref(),
            Some("put its hosts under `hosts:`, each as a key: `web: {hosts: {w1: }}`")
        );

        let e = err("all:\n  children:\n    web: w1\n");
        assert_eq!(e.message, "group `web` must be a mapping, found a string");
        assert_eq!(e.help.as_deref(), Some(GROUP_HELP));

        let e = err("all:\n  host:\n    web1:\n");
        assert_eq!(e.message, "unknown key `host` in group `all`");
        assert_eq!(at(&e), (2, 3));
        assert_eq!(e.help.as_deref(), Some("did you mean `hosts`?"));

        let e = err("all:\n  children:\n    - web\n");
        assert_eq!(
            e.message,
            "`children` of group `all` must be a mapping of group names to groups, found a list"
        );
        assert_eq!(at(&e), (3, 5));

        let e = err("all:\n  vars:\n    - ntp: x\n");
        assert_eq!(
            e.message,
            "`vars` of group `all` must be a mapping of names to values, found a list"
        );

        let e = err("all:\n  hosts:\n    web1: 10.0.0.5\n");
        assert_eq!(
            e.message,
            "the variables of host `web1` must be a mapping, found a string"
        );
        assert_eq!(at(&e), (3, 11));
        assert_eq!(
            e.help.as_deref(),
            Some("to give its address write `web1: {ansible_host: 10.0.0.5}`")
        );

        let e = err("hosts:\n  web1:\n");
        assert_eq!(
            e.message,
            "`hosts` at the top level would be a group named `hosts`"
        );
        assert_eq!(at(&e), (1, 1));

        let e = err("plugin: amazon.aws.aws_ec2\n");
        assert!(e.message.contains("inventory plugin"), "{e}");
    }

    #[test]
    fn located_value_errors() {
        let e = err("all:\n  hosts:\n    web1:\n      ansible_port: 70000\n");
        assert_eq!(
            e.message,
            "`ansible_port` must be a port number from 1 to 65535, found 70000"
        );
        assert_eq!(at(&e), (4, 21));

        let e = err("all:\n  vars:\n    slice_port: ssh\n  hosts:\n    web1:\n");
        assert_eq!(
            e.message,
            "`slice_port` must be a port number from 1 to 65535, found `ssh`"
        );
        assert_eq!(at(&e), (3, 17));

        let e = err("all:\n  hosts:\n    web1:99999:\n");
        assert_eq!(
            e.message,
            "the port in `web1:99999` must be a number from 1 to 65535"
        );

        let e = err("all:\n  hosts:\n    web1:\n      ansible_connection: docker\n");
        assert_eq!(
            e.message,
            "connection `docker` is not supported; SLICE connects over ssh or to the local machine"
        );
        assert_eq!(at(&e), (4, 27));

        let e = err("all:\n  hosts:\n    web1:\n      ansible_host: \"{{ ip }}\"\n");
        assert_eq!(
            e.message,
            "`ansible_host` is a template; SLICE reads connection settings as written"
        );
        assert_eq!(at(&e), (4, 22));

        let e = err("all:\n  children:\n    a:\n      vars: {ansible_group_priority: high}\n");
        assert_eq!(
            e.message,
            "`ansible_group_priority` must be an integer, found `high`"
        );
    }

    #[test]
    fn group_loops_are_refused_where_they_close() {
        let e = err("all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n");
        assert_eq!(e.message, "group `a` contains itself: a → b → a");
        assert_eq!(at(&e), (7, 13));
        let e = err("a:\n  children:\n    b:\nb:\n  children:\n    a:\n");
        assert_eq!(e.message, "group `a` contains itself: a → b → a");
        assert_eq!(at(&e), (6, 5));
        let e = err("all:\n  children:\n    web:\n      children:\n        all:\n");
        assert_eq!(e.message, "`all` cannot be a child of `web`");
        assert_eq!(at(&e), (5, 9));
    }

    #[test]
    fn ini_inventory_gets_a_hint() {
        let e = err("[web]\nweb1.example.com\n");
        assert_eq!(e.help.as_deref(), Some(INI_HELP));
    }

    #[test]
    fn empty_groups_and_empty_file() {
        let inv = load("all:\n  children:\n    web:\n").unwrap();
        assert!(inv.hosts.is_empty());
        assert!(inv.limit("web").is_err());
        let e = err("");
        assert_eq!(
            e.message,
            "an inventory must be a mapping of group names to groups, found nothing (null)"
        );
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.yml");
        std::fs::write(&path, REAL).unwrap();
        let inv = Inventory::load(&path).unwrap();
        assert_eq!(inv.hosts.len(), 8);
        assert!(Inventory::load(&dir.path().join("missing.yml")).is_err());
    }
}
