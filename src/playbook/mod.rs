//! Playbooks and modules: read from YAML into tasks that remember where they were written.
//!
//! Loading checks everything that needs no host: keys, types, resource kinds, modules, task names
//! and references. Rendering for a host (variables, templates, `when:`) is in [`render`].

pub mod origin;
pub mod render;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{suggest, Error, Loc, Result, Source};
use crate::resource::{self, Kind, KINDS};
use crate::yaml::{self, Node, Value};
pub use origin::Origin;

/// The keys a task may carry beside its one resource kind.
const TASK_KEYS: &[&str] = &[
    "name", "after", "before", "when", "tags", "level", "control", "cis", "notify",
];
const PLAYBOOK_KEYS: &[&str] = &[
    "name",
    "description",
    "vars",
    "modules",
    "tasks",
    "handlers",
];
const MODULE_KEYS: &[&str] = &["name", "description", "params", "tasks", "handlers"];
const MODULE_USE_KEYS: &[&str] = &["name", "params"];
const PARAM_KEYS: &[&str] = &["default", "description", "type", "required"];
const PARAM_TYPES: &[&str] = &["string", "bool", "int", "list", "map", "any"];

/// How strongly the talk's recommendations ask for a control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Must,
    Should,
    Can,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "must" => Some(Level::Must),
            "should" => Some(Level::Should),
            "can" => Some(Level::Can),
            _ => None,
        }
    }
}

/// Where a task's variables and relative files come from: the playbook itself or one module.
pub struct Scope {
    /// The module's name; `None` for the playbook.
    pub module: Option<String>,
    /// The folder that `template:` and `source:` paths are relative to.
    pub origin: Origin,
    /// Module defaults, lowest precedence (empty for the playbook).
    pub defaults: Vec<(String, Node)>,
    /// Parameters given to the module by the playbook (empty for the playbook).
    pub params: Vec<(String, Node)>,
}

/// A task or handler as written, before rendering for a host.
pub struct TaskDef {
    /// The full name: `docker-daemon: write daemon.json` for a module's task.
    pub name: String,
    pub loc: Loc,
    pub scope: usize,
    pub kind: &'static Kind,
    pub params: Node,
    pub after: Vec<usize>,
    pub before: Vec<usize>,
    /// Indexes into [`Playbook::handlers`].
    pub notify: Vec<usize>,
    pub when: Option<Node>,
    pub tags: Vec<String>,
    pub level: Option<Level>,
    pub control: Option<String>,
    /// Benchmark → control number, e.g. `docker-1.6.0` → `2.2`.
    pub cis: Vec<(String, String)>,
}

pub struct Playbook {
    pub name: String,
    pub source: Arc<Source>,
    pub vars: Vec<(String, Node)>,
    pub scopes: Vec<Scope>,
    pub tasks: Vec<TaskDef>,
    pub handlers: Vec<TaskDef>,
}

/// A reference to another task by name, resolved once everything is loaded.
struct Ref {
    name: String,
    loc: Loc,
}

struct Pending {
    after: Vec<Ref>,
    before: Vec<Ref>,
    notify: Vec<Ref>,
}

impl Playbook {
    /// Loads a playbook file and the modules it uses. `module_path` is searched before the
    /// playbook's own `modules/` folders and the built-in modules.
    pub fn load(path: &Path, module_path: &[PathBuf]) -> Result<Playbook> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("read", &path.display().to_string(), e))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let mut search = module_path.to_vec();
        search.push(dir.join("modules"));
        search.push(dir.join("../modules"));
        Playbook::from_source(
            Source::new(path.display().to_string(), text),
            Origin::Disk(dir),
            &search,
        )
    }

    /// Loads a built-in playbook by file name (e.g. `container-host.yml`).
    pub fn builtin(name: &str, module_path: &[PathBuf]) -> Result<Playbook> {
        let origin = Origin::builtin_playbooks();
        let src = origin.source(name, None).map_err(|_| {
            Error::new(format!("there is no built-in playbook `{name}`")).with_help(format!(
                "built in: {}",
                origin::builtin_playbook_names().join(", ")
            ))
        })?;
        Playbook::from_source(src, origin, module_path)
    }

    pub fn from_source(
        src: Arc<Source>,
        origin: Origin,
        module_path: &[PathBuf],
    ) -> Result<Playbook> {
        let root = yaml::parse(&src)?;
        let map = expect_map(&root, "a playbook")?;
        check_keys(map, PLAYBOOK_KEYS, "a playbook")?;
        let name = opt_string(&root, "name")?.unwrap_or_else(|| src.name.clone());
        let vars = var_list(root.get("vars"), "vars")?;
        let mut loader = Loader::default();
        let playbook_scope = Scope {
            module: None,
            origin,
            defaults: Vec::new(),
            params: Vec::new(),
        };
        loader.scopes.push(playbook_scope);
        if let Some(modules) = seq(root.get("modules"), "modules")? {
            for m in modules {
                loader.use_module(m, module_path)?;
            }
        }
        loader.add_tasks(root.get("tasks"), root.get("handlers"), 0)?;
        let (scopes, tasks, handlers) = loader.resolve()?;
        Ok(Playbook {
            name,
            source: src,
            vars,
            scopes,
            tasks,
            handlers,
        })
    }
}

#[derive(Default)]
struct Loader {
    scopes: Vec<Scope>,
    tasks: Vec<(TaskDef, Pending)>,
    handlers: Vec<(TaskDef, Pending)>,
    modules_seen: HashMap<String, Loc>,
}

impl Loader {
    fn use_module(&mut self, m: &Node, search: &[PathBuf]) -> Result<()> {
        let (name, name_node, given) = match &m.value {
            Value::Str(s) => (s.clone(), m, None),
            Value::Map(entries) => {
                check_keys(entries, MODULE_USE_KEYS, "a module entry")?;
                let n = m
                    .get("name")
                    .ok_or_else(|| Error::at(&m.loc, "a module entry needs `name`"))?;
                let s = n
                    .as_str()
                    .ok_or_else(|| type_error("name", n, "a string"))?;
                (s.to_string(), n, m.get("params"))
            }
            _ => {
                return Err(type_error(
                    "modules",
                    m,
                    "a module name or a mapping with `name` and `params`",
                ))
            }
        };
        if let Some(first) = self
            .modules_seen
            .insert(name.clone(), name_node.loc.clone())
        {
            return Err(
                Error::at(&name_node.loc, format!("module `{name}` is used twice"))
                    .with_note(format!("first used at {}", first.short())),
            );
        }
        let Some(origin) = origin::find_module(&name, search) else {
            let builtin = origin::builtin_module_names();
            let e = Error::at(&name_node.loc, format!("module `{name}` not found"));
            let e = match suggest(&name, builtin.iter().copied()) {
                Some(s) => e.with_help(format!("did you mean `{s}`?")),
                None => e,
            };
            let searched: Vec<String> = search.iter().map(|p| p.display().to_string()).collect();
            return Err(e.with_note(format!(
                "looked for {name}/module.yml in: {}, and among the built-in modules ({})",
                searched.join(", "),
                builtin.join(", ")
            )));
        };
        let src = origin.source("module.yml", Some(&name_node.loc))?;
        let root = yaml::parse(&src)?;
        let map = expect_map(&root, "a module")?;
        check_keys(map, MODULE_KEYS, "a module")?;
        if let Some(n) = root.get("name") {
            if n.as_str() != Some(name.as_str()) {
                return Err(Error::at(
                    &n.loc,
                    format!(
                        "this module is `{name}` (its folder's name); its `name` says otherwise"
                    ),
                ));
            }
        }
        let declared = param_defs(root.get("params"))?;
        let defaults = declared
            .iter()
            .filter_map(|d| Some((d.name.clone(), d.default.clone()?)))
            .collect();
        let params = given_params(given, &declared, &name, &name_node.loc)?;
        self.scopes.push(Scope {
            module: Some(name),
            origin,
            defaults,
            params,
        });
        self.add_tasks(
            root.get("tasks"),
            root.get("handlers"),
            self.scopes.len() - 1,
        )
    }

    fn add_tasks(
        &mut self,
        tasks: Option<&Node>,
        handlers: Option<&Node>,
        scope: usize,
    ) -> Result<()> {
        let prefix = self.scopes[scope].module.clone();
        for t in seq(tasks, "tasks")?.unwrap_or_default() {
            let task = parse_task(t, scope, prefix.as_deref(), false)?;
            self.tasks.push(task);
        }
        for h in seq(handlers, "handlers")?.unwrap_or_default() {
            // Handlers share one namespace: `restart docker` is one handler, whoever notifies
            // it, so it runs once. The playbook's own definition replaces a module's.
            let handler = parse_task(h, scope, None, true)?;
            let same = self
                .handlers
                .iter()
                .position(|(d, _)| d.name == handler.0.name);
            match same {
                None => self.handlers.push(handler),
                Some(i) if scope == 0 && self.handlers[i].0.scope != 0 => {
                    self.handlers[i] = handler
                }
                // Another module's handler of that name: the first definition serves both.
                Some(_) if scope != 0 => {}
                Some(i) => {
                    let first = &self.handlers[i].0;
                    return Err(Error::at(
                        &handler.0.loc,
                        format!("duplicate handler name `{}`", first.name),
                    )
                    .with_note(format!("first used at {}", first.loc.short())));
                }
            }
        }
        Ok(())
    }

    /// Turns names into indexes: a name is looked up in the task's own module first, then as a
    /// full name. Duplicate names are refused.
    fn resolve(self) -> Result<(Vec<Scope>, Vec<TaskDef>, Vec<TaskDef>)> {
        let tasks_ix = index(&self.tasks, "task")?;
        let handlers_ix = index(&self.handlers, "handler")?;
        let lookup =
            |ix: &HashMap<String, usize>, scope: usize, r: &Ref, what: &str| -> Result<usize> {
                let local = self.scopes[scope]
                    .module
                    .as_ref()
                    .map(|m| format!("{m}: {}", r.name));
                if let Some(i) = local
                    .and_then(|l| ix.get(&l).copied())
                    .or_else(|| ix.get(&r.name).copied())
                {
                    return Ok(i);
                }
                let e = Error::at(&r.loc, format!("no {what} named `{}`", r.name));
                Err(match suggest(&r.name, ix.keys().map(String::as_str)) {
                    Some(s) => e.with_help(format!("did you mean `{s}`?")),
                    None => e,
                })
            };
        let finish = |list: Vec<(TaskDef, Pending)>| -> Result<Vec<TaskDef>> {
            list.into_iter()
                .map(|(mut t, p)| {
                    for r in &p.after {
                        t.after.push(lookup(&tasks_ix, t.scope, r, "task")?);
                    }
                    for r in &p.before {
                        t.before.push(lookup(&tasks_ix, t.scope, r, "task")?);
                    }
                    for r in &p.notify {
                        t.notify.push(lookup(&handlers_ix, t.scope, r, "handler")?);
                    }
                    Ok(t)
                })
                .collect()
        };
        let tasks = finish(self.tasks)?;
        let handlers = finish(self.handlers)?;
        Ok((self.scopes, tasks, handlers))
    }
}

fn index(list: &[(TaskDef, Pending)], what: &str) -> Result<HashMap<String, usize>> {
    let mut ix: HashMap<String, usize> = HashMap::new();
    for (i, (t, _)) in list.iter().enumerate() {
        if let Some(first) = ix.insert(t.name.clone(), i) {
            return Err(
                Error::at(&t.loc, format!("duplicate {what} name `{}`", t.name))
                    .with_note(format!("first used at {}", list[first].0.loc.short())),
            );
        }
    }
    Ok(ix)
}

fn parse_task(
    node: &Node,
    scope: usize,
    module: Option<&str>,
    handler: bool,
) -> Result<(TaskDef, Pending)> {
    let what = if handler { "a handler" } else { "a task" };
    let map = expect_map(node, what)?;
    let mut kind: Option<(&'static Kind, &Node, &Node)> = None;
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        if TASK_KEYS.contains(&key) {
            continue;
        }
        let Some(found) = resource::kind(key) else {
            let known = TASK_KEYS
                .iter()
                .copied()
                .chain(KINDS.iter().map(|k| k.name));
            let e = Error::at(&k.loc, format!("unknown key `{key}` in {what}"));
            return Err(match suggest(key, known) {
                Some(s) => e.with_help(format!("did you mean `{s}`?")),
                None => e.with_help(format!("resource kinds: {}", kind_names())),
            });
        };
        if let Some((first, first_key, _)) = kind {
            return Err(Error::at(
                &k.loc,
                format!(
                    "{what} has one resource kind; this one has `{}` and `{key}`",
                    first.name
                ),
            )
            .with_note(format!("`{}` is at {}", first.name, first_key.loc.short())));
        }
        kind = Some((found, k, v));
    }
    let name_node = node
        .get("name")
        .ok_or_else(|| Error::at(&node.loc, format!("{what} needs a `name`")))?;
    let local_name = name_node
        .scalar_text()
        .ok_or_else(|| type_error("name", name_node, "a string"))?;
    if local_name.trim().is_empty() {
        return Err(Error::at(
            &name_node.loc,
            format!("the name of {what} must not be empty"),
        ));
    }
    let Some((kind, _, params)) = kind else {
        return Err(Error::at(
            &name_node.loc,
            format!("{what} `{local_name}` has no resource kind"),
        )
        .with_help(format!("add one of: {}", kind_names())));
    };
    if handler {
        for key in ["notify", "after", "before"] {
            if let Some((k, _)) = map.iter().find(|(k, _)| k.as_str() == Some(key)) {
                return Err(Error::at(&k.loc, format!("`{key}` is for tasks; handlers run in the order they are written, after the tasks that notify them")));
            }
        }
    }
    let level = match node.get("level") {
        None => None,
        Some(n) => Some(
            n.as_str()
                .and_then(Level::parse)
                .ok_or_else(|| type_error("level", n, "one of must, should, can"))?,
        ),
    };
    let cis = match node.get("cis") {
        None => Vec::new(),
        Some(n) => {
            let entries = n.as_map().ok_or_else(|| {
                type_error(
                    "cis",
                    n,
                    "a mapping of benchmark to control number, e.g. `docker-1.6.0: \"2.2\"`",
                )
            })?;
            entries
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.scalar_text().unwrap_or_default(),
                        v.scalar_text()
                            .ok_or_else(|| type_error("cis", v, "a control number"))?,
                    ))
                })
                .collect::<Result<_>>()?
        }
    };
    let name = match module {
        Some(m) => format!("{m}: {local_name}"),
        None => local_name,
    };
    let task = TaskDef {
        name,
        loc: name_node.loc.clone(),
        scope,
        kind,
        params: params.clone(),
        after: Vec::new(),
        before: Vec::new(),
        notify: Vec::new(),
        when: node.get("when").cloned(),
        tags: strings(node.get("tags"), "tags")?
            .into_iter()
            .map(|r| r.name)
            .collect(),
        level,
        control: opt_string(node, "control")?,
        cis,
    };
    let pending = Pending {
        after: strings(node.get("after"), "after")?,
        before: strings(node.get("before"), "before")?,
        notify: strings(node.get("notify"), "notify")?,
    };
    Ok((task, pending))
}

fn kind_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// A module parameter as declared in its module.yml.
struct ParamDecl {
    name: String,
    default: Option<Node>,
    ty: &'static str,
    required: bool,
}

/// Module parameter declarations.
fn param_defs(node: Option<&Node>) -> Result<Vec<ParamDecl>> {
    let mut declared = Vec::new();
    let Some(node) = node else {
        return Ok(declared);
    };
    for (k, v) in expect_map(node, "`params`")? {
        let name = k.scalar_text().unwrap_or_default();
        let entries = expect_map(
            v,
            "a parameter declaration (`default`, `description`, `type`, `required`)",
        )?;
        check_keys(entries, PARAM_KEYS, "a parameter declaration")?;
        let ty = match v.get("type") {
            None => "any",
            Some(t) => PARAM_TYPES
                .iter()
                .copied()
                .find(|p| t.as_str() == Some(p))
                .ok_or_else(|| {
                    type_error("type", t, &format!("one of {}", PARAM_TYPES.join(", ")))
                })?,
        };
        let required = matches!(v.get("required").map(|n| &n.value), Some(Value::Bool(true)));
        let default = v.get("default").cloned();
        if let Some(d) = &default {
            check_type(&name, d, ty)?;
        }
        declared.push(ParamDecl {
            name,
            default,
            ty,
            required,
        });
    }
    Ok(declared)
}

fn given_params(
    given: Option<&Node>,
    declared: &[ParamDecl],
    module: &str,
    used_at: &Loc,
) -> Result<Vec<(String, Node)>> {
    let mut out = Vec::new();
    if let Some(g) = given {
        for (k, v) in expect_map(g, "`params`")? {
            let key = k.scalar_text().unwrap_or_default();
            let Some(decl) = declared.iter().find(|d| d.name == key) else {
                let e = Error::at(
                    &k.loc,
                    format!("module `{module}` has no parameter `{key}`"),
                );
                let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
                return Err(match suggest(&key, names.iter().copied()) {
                    Some(s) => e.with_help(format!("did you mean `{s}`?")),
                    None => e.with_help(format!("`{module}` takes: {}", names.join(", "))),
                });
            };
            check_type(&key, v, decl.ty)?;
            out.push((key, v.clone()));
        }
    }
    for ParamDecl { name, required, .. } in declared {
        if *required && !out.iter().any(|(k, _)| k == name) {
            return Err(Error::at(
                given.map_or(used_at, |g| &g.loc),
                format!("module `{module}` needs the parameter `{name}`"),
            ));
        }
    }
    Ok(out)
}

/// Checks a parameter's type; a templated string is accepted for any type (checked when rendered).
fn check_type(name: &str, v: &Node, ty: &str) -> Result<()> {
    let ok = match (&v.value, ty) {
        (_, "any") => true,
        (Value::Str(s), _) if s.contains("{{") => true,
        (Value::Str(_), "string") | (Value::Int(_) | Value::Float(_), "string") => true,
        (Value::Bool(_), "bool")
        | (Value::Int(_), "int")
        | (Value::Seq(_), "list")
        | (Value::Map(_), "map") => true,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let e = type_error(name, v, &format!("of type {ty}"));
    let yaml11_bool = ["yes", "no", "on", "off", "y", "n"]
        .iter()
        .any(|w| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(w)));
    Err(if ty == "bool" && yaml11_bool {
        e.with_help("write true or false (in YAML 1.2, yes/no/on/off are strings)")
    } else {
        e
    })
}

fn type_error(key: &str, node: &Node, want: &str) -> Error {
    Error::at(
        &node.loc,
        format!("`{key}` must be {want}, found {}", node.type_name()),
    )
}

fn expect_map<'a>(node: &'a Node, what: &str) -> Result<&'a [(Node, Node)]> {
    node.as_map().ok_or_else(|| {
        Error::at(
            &node.loc,
            format!("{what} must be a mapping, found {}", node.type_name()),
        )
    })
}

fn check_keys(map: &[(Node, Node)], allowed: &[&str], what: &str) -> Result<()> {
    for (k, _) in map {
        let key = k.as_str().unwrap_or_default();
        if !allowed.contains(&key) {
            let e = Error::at(&k.loc, format!("unknown key `{key}` in {what}"));
            return Err(match suggest(key, allowed.iter().copied()) {
                Some(s) => e.with_help(format!("did you mean `{s}`?")),
                None => e.with_help(format!("{what} takes: {}", allowed.join(", "))),
            });
        }
    }
    Ok(())
}

fn seq<'a>(node: Option<&'a Node>, key: &str) -> Result<Option<&'a [Node]>> {
    match node.map(|n| (n, &n.value)) {
        None | Some((_, Value::Null)) => Ok(None),
        Some((_, Value::Seq(items))) => Ok(Some(items)),
        Some((n, _)) => Err(type_error(key, n, "a list")),
    }
}

fn opt_string(node: &Node, key: &str) -> Result<Option<String>> {
    match node.get(key) {
        None => Ok(None),
        Some(n) if matches!(n.value, Value::Null) => Ok(None),
        Some(n) => n
            .scalar_text()
            .map(Some)
            .ok_or_else(|| type_error(key, n, "a string")),
    }
}

/// A string or a list of strings, each with its position.
fn strings(node: Option<&Node>, key: &str) -> Result<Vec<Ref>> {
    let Some(n) = node else { return Ok(Vec::new()) };
    let one = |n: &Node| {
        n.scalar_text()
            .map(|name| Ref {
                name,
                loc: n.loc.clone(),
            })
            .ok_or_else(|| type_error(key, n, "a string or a list of strings"))
    };
    match &n.value {
        Value::Null => Ok(Vec::new()),
        Value::Seq(items) => items.iter().map(one).collect(),
        _ => Ok(vec![one(n)?]),
    }
}

fn var_list(node: Option<&Node>, key: &str) -> Result<Vec<(String, Node)>> {
    let Some(n) = node else { return Ok(Vec::new()) };
    if matches!(n.value, Value::Null) {
        return Ok(Vec::new());
    }
    let map = n
        .as_map()
        .ok_or_else(|| type_error(key, n, "a mapping of names to values"))?;
    Ok(map
        .iter()
        .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.clone()))
        .collect())
}
