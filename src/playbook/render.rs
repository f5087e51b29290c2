//! Variables and templates: a loaded playbook becomes concrete resources for one host.
//!
//! Precedence, lowest first: module defaults < inventory vars < playbook vars < module params <
//! `-e`. Facts are under `facts`. Templates are minijinja in strict mode and apply to values after YAML parsing,
//! never to the YAML text; a value that is exactly one `{{ expression }}` keeps its type.

use std::collections::HashSet;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior, Value as JValue};
use serde_json::{Map, Value as Json};

use crate::error::{suggest, Error, Loc, Result, Source};
use crate::facts::Facts;
use crate::playbook::{Level, Playbook, Scope, TaskDef};
use crate::resource::{BuildCtx, Files, Params, Resource};
use crate::yaml::{Node, Value};

/// Which tasks the user asked for (`--tags`, `--level`).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub tags: Vec<String>,
    pub level: Option<Level>,
}

impl Selection {
    pub fn selects(&self, t: &TaskDef) -> bool {
        let tag_ok = self.tags.is_empty() || t.tags.iter().any(|tag| self.tags.contains(tag));
        let level_ok = match (self.level, t.level) {
            (Some(max), Some(l)) => l <= max,
            _ => true,
        };
        tag_ok && level_ok
    }
}

/// One task or handler made concrete for a host.
pub struct Rendered {
    /// `None` when the task is skipped; the reason is in `skip`.
    pub resource: Option<Box<dyn Resource>>,
    pub skip: Option<String>,
}

/// How `when:` is treated: evaluated, or only compiled (validation without host facts).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum When {
    Evaluate,
    CompileOnly,
}

pub struct Renderer<'a> {
    pb: &'a Playbook,
    facts: &'a Facts,
    env: Environment<'static>,
    /// Variables per scope, already layered.
    scope_vars: Vec<Map<String, Json>>,
    live: bool,
    when: When,
}

impl<'a> Renderer<'a> {
    pub fn new(
        pb: &'a Playbook,
        facts: &'a Facts,
        host_vars: &[(String, Node)],
        extra: &[(String, Node)],
        live: bool,
        when: When,
    ) -> Result<Renderer<'a>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Config files end in a newline; block tags should not leave blank lines (as in Ansible).
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .trim_blocks(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        let mut r = Renderer {
            pb,
            facts,
            env,
            scope_vars: Vec::new(),
            live,
            when,
        };
        let extra: Vec<(String, Json)> = extra
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let mut base = Map::new();
        base.insert(
            "facts".into(),
            serde_json::to_value(facts).unwrap_or_default(),
        );
        // Inventory variables sit below the playbook's (as in Ansible) and may use facts.
        let mut play = base.clone();
        for (k, v) in host_vars {
            let rendered = r.render_node(v, &play)?.to_json();
            play.insert(k.clone(), rendered);
        }
        // Playbook vars may use facts, inventory vars, -e values and the vars above them.
        play.extend(extra.iter().cloned());
        for (k, v) in &pb.vars {
            let rendered = r.render_node(v, &play)?.to_json();
            play.insert(k.clone(), rendered);
            play.extend(extra.iter().cloned());
        }
        for scope in &pb.scopes {
            r.scope_vars.push(r.layer(scope, &base, &play, &extra)?);
        }
        Ok(r)
    }

    fn layer(
        &self,
        scope: &Scope,
        base: &Map<String, Json>,
        play: &Map<String, Json>,
        extra: &[(String, Json)],
    ) -> Result<Map<String, Json>> {
        if scope.module.is_none() {
            return Ok(play.clone());
        }
        let mut vars = base.clone();
        for (k, v) in &scope.defaults {
            let d = self.render_node(v, &vars)?.to_json();
            vars.insert(k.clone(), d);
        }
        vars.extend(play.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (k, v) in &scope.params {
            // A module's parameters are written in the playbook, so they see the playbook's vars.
            vars.insert(k.clone(), self.render_node(v, play)?.to_json());
        }
        vars.extend(extra.iter().cloned());
        Ok(vars)
    }

    /// Renders one task (or handler) for this host.
    pub fn task(&self, t: &TaskDef) -> Result<Rendered> {
        let vars = &self.scope_vars[t.scope];
        if let Some(w) = &t.when {
            let go = self.eval_when(w, vars)?;
            if !go {
                let text = w.scalar_text().unwrap_or_default();
                return Ok(Rendered {
                    resource: None,
                    skip: Some(format!("when: {text} is false")),
                });
            }
        }
        let params = self.render_node(&t.params, vars)?;
        let files = TaskFiles {
            r: self,
            scope: &self.pb.scopes[t.scope],
            vars,
        };
        let ctx = BuildCtx {
            live: self.live,
            facts: self.facts,
            files: &files,
        };
        let p = Params::new(&params, t.kind.name)?;
        let resource = (t.kind.build)(&p, &ctx)?;
        Ok(Rendered {
            resource: Some(resource),
            skip: None,
        })
    }

    fn eval_when(&self, node: &Node, vars: &Map<String, Json>) -> Result<bool> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut all = true;
        for n in items {
            let ok = match &n.value {
                Value::Bool(b) => *b,
                _ => {
                    let text = n.scalar_text().ok_or_else(|| {
                        Error::at(
                            &n.loc,
                            format!("`when` must be an expression, found {}", n.type_name()),
                        )
                    })?;
                    let expr = strip_braces(&text);
                    let compiled = self
                        .env
                        .compile_expression(expr)
                        .map_err(|e| self.error(&e, n, &text, vars, &HashSet::new()))?;
                    let undeclared = compiled.undeclared_variables(true);
                    let v = compiled
                        .eval(JValue::from(minijinja::value::Serde(vars)))
                        .map_err(|e| self.error(&e, n, &text, vars, &undeclared))?;
                    if v.is_undefined() {
                        return Err(self.undefined(n, &text, vars, &undeclared));
                    }
                    // Without a host, facts are placeholders: a condition on facts cannot be
                    // known and the task is validated as if it ran; one on variables alone can.
                    let on_facts = compiled.undeclared_variables(false).contains("facts");
                    (self.when == When::CompileOnly && on_facts) || v.is_true()
                }
            };
            all &= ok;
        }
        Ok(all)
    }

    /// Renders every string in a node; other values are kept.
    fn render_node(&self, node: &Node, vars: &Map<String, Json>) -> Result<Node> {
        Ok(match &node.value {
            Value::Str(s) if is_template(s) => self.render_str(s, node, vars)?,
            Value::Seq(items) => Node {
                value: Value::Seq(
                    items
                        .iter()
                        .map(|i| self.render_node(i, vars))
                        .collect::<Result<_>>()?,
                ),
                ..node.clone()
            },
            Value::Map(entries) => Node {
                value: Value::Map(
                    entries
                        .iter()
                        .map(|(k, v)| Ok((k.clone(), self.render_node(v, vars)?)))
                        .collect::<Result<_>>()?,
                ),
                ..node.clone()
            },
            _ => node.clone(),
        })
    }

    fn render_str(&self, text: &str, node: &Node, vars: &Map<String, Json>) -> Result<Node> {
        let ctx = JValue::from(minijinja::value::Serde(vars));
        if let Some(expr) = single_expression(text) {
            let compiled = self
                .env
                .compile_expression(expr)
                .map_err(|e| self.error(&e, node, text, vars, &HashSet::new()))?;
            let undeclared = compiled.undeclared_variables(true);
            let v = compiled
                .eval(ctx)
                .map_err(|e| self.error(&e, node, text, vars, &undeclared))?;
            if v.is_undefined() {
                return Err(self.undefined(node, text, vars, &undeclared));
            }
            let json = serde_json::to_value(&v).map_err(|e| {
                Error::at(
                    &node.loc,
                    format!("template value cannot be used here: {e}"),
                )
            })?;
            return Ok(Node::from_json(&json, &node.loc));
        }
        let tmpl = self
            .env
            .template_from_str(text)
            .map_err(|e| self.error(&e, node, text, vars, &HashSet::new()))?;
        tmpl.render(ctx)
            .map(|s| Node::new(Value::Str(s), node.loc.clone()))
            .map_err(|e| self.error(&e, node, text, vars, &tmpl.undeclared_variables(true)))
    }

    /// Renders a template file (a `template:` parameter).
    fn render_file(&self, src: &Arc<Source>, vars: &Map<String, Json>) -> Result<String> {
        let whole = Node::new(
            Value::Str(src.text.clone()),
            Loc {
                src: src.clone(),
                line: 1,
                col: 1,
                width: 1,
            },
        );
        let tmpl = self
            .env
            .template_from_named_str(&src.name, &src.text)
            .map_err(|e| self.file_error(&e, src))?;
        tmpl.render(JValue::from(minijinja::value::Serde(vars)))
            .map_err(|e| {
                if e.kind() == minijinja::ErrorKind::UndefinedError {
                    let mut err =
                        self.undefined(&whole, &src.text, vars, &tmpl.undeclared_variables(true));
                    if let Some(line) = e.line() {
                        // The undefined name, searched for on the line minijinja names.
                        let whole = line_loc(src, line);
                        let name = err
                            .message
                            .split('`')
                            .nth(1)
                            .unwrap_or_default()
                            .to_string();
                        err.loc = Some(locate(&whole, &name, whole.width * 4).unwrap_or(whole));
                    }
                    err
                } else {
                    self.file_error(&e, src)
                }
            })
    }

    fn file_error(&self, e: &minijinja::Error, src: &Arc<Source>) -> Error {
        let loc = line_loc(src, e.line().unwrap_or(1));
        Error::at(
            &loc,
            format!(
                "template error: {}",
                e.detail().unwrap_or(&e.kind().to_string())
            ),
        )
    }

    /// An undefined variable, named, with the nearest defined one suggested.
    fn undefined(
        &self,
        node: &Node,
        text: &str,
        vars: &Map<String, Json>,
        undeclared: &HashSet<String>,
    ) -> Error {
        let mut missing: Vec<&String> = undeclared
            .iter()
            .filter(|path| lookup(vars, path).is_none())
            .collect();
        missing.sort();
        let Some(name) = missing.first() else {
            return Error::at(
                &node.loc,
                format!("undefined value in template `{}`", text.trim()),
            );
        };
        let top = name.split('.').next().unwrap_or(name);
        // Search the source, not the parsed text: escapes and block scalars shift columns.
        let window = text.len() * 2 + 256;
        let loc = locate(&node.loc, name, window)
            .or_else(|| locate(&node.loc, top, window))
            .unwrap_or_else(|| node.loc.clone());
        let e = Error::at(&loc, format!("undefined variable `{name}`"));
        // Suggest a sibling of the first missing part: `facts.os_idd` → `facts.os_id`.
        let parent = name
            .rsplit_once('.')
            .and_then(|(p, last)| Some((p, last, lookup(vars, p)?.as_object()?)));
        let (prefix, missing_part, known): (String, &str, Vec<&str>) = match parent {
            Some((p, last, obj)) => (
                format!("{p}."),
                last,
                obj.keys().map(String::as_str).collect(),
            ),
            None => (
                String::new(),
                top,
                vars.keys().map(String::as_str).collect(),
            ),
        };
        match suggest(missing_part, known.iter().copied()) {
            Some(s) if s != missing_part => e.with_help(format!("did you mean `{prefix}{s}`?")),
            _ => e.with_help(format!(
                "defined here: {}",
                known
                    .iter()
                    .map(|k| format!("{prefix}{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn error(
        &self,
        e: &minijinja::Error,
        node: &Node,
        text: &str,
        vars: &Map<String, Json>,
        undeclared: &HashSet<String>,
    ) -> Error {
        if e.kind() == minijinja::ErrorKind::UndefinedError {
            return self.undefined(node, text, vars, undeclared);
        }
        let mut loc = node.loc.clone();
        if let Some(r) = e.range() {
            if !text.contains('\n') && r.start <= text.len() {
                loc.col += text.get(..r.start).map_or(0, |s| s.chars().count());
                loc.width = text.get(r.clone()).map_or(1, |s| s.chars().count().max(1));
            }
        }
        Error::at(
            &loc,
            format!(
                "template error: {}",
                e.detail().unwrap_or(&e.kind().to_string())
            ),
        )
    }
}

fn line_loc(src: &Arc<Source>, line: usize) -> Loc {
    Loc {
        src: src.clone(),
        line,
        col: 1,
        width: src
            .text
            .lines()
            .nth(line.saturating_sub(1))
            .map_or(1, |l| l.chars().count().max(1)),
    }
}

/// Finds `name` used inside a `{{ }}` or `{% %}` in the source, at most `window` bytes after
/// `start`: where the caret should point.
fn locate(start: &Loc, name: &str, window: usize) -> Option<Loc> {
    if name.is_empty() {
        return None;
    }
    let text = &start.src.text;
    let skip = start.line.checked_sub(1)?;
    let line_start: usize = text.split_inclusive('\n').take(skip).map(str::len).sum();
    let col_byte = text
        .get(line_start..)?
        .char_indices()
        .nth(start.col.saturating_sub(1))?
        .0;
    let from = line_start + col_byte;
    let mut end = (from + window).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let hay = text.get(from..end)?;
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.');
    let mut in_expr = false;
    for (i, _) in hay.char_indices() {
        let rest = &hay[i..];
        if rest.starts_with("{{") || rest.starts_with("{%") {
            in_expr = true;
        } else if rest.starts_with("}}") || rest.starts_with("%}") {
            in_expr = false;
        } else if in_expr
            && rest.starts_with(name)
            && !ident(hay[..i].chars().next_back())
            && !ident(rest[name.len()..].chars().next())
        {
            let before = &hay[..i];
            let (line, col) = match before.rfind('\n') {
                Some(nl) => (
                    start.line + before.matches('\n').count(),
                    before[nl + 1..].chars().count() + 1,
                ),
                None => (start.line, start.col + before.chars().count()),
            };
            let width = name.chars().count();
            return Some(Loc {
                src: start.src.clone(),
                line,
                col,
                width,
            });
        }
    }
    None
}

/// Follows a dotted path (`facts.os_id`) through the variables.
fn lookup<'v>(vars: &'v Map<String, Json>, path: &str) -> Option<&'v Json> {
    let mut parts = path.split('.');
    let mut cur = vars.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// `{{ expr }}` alone (surrounding spaces allowed): its expression, to keep the value's type.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

fn strip_braces(s: &str) -> &str {
    single_expression(s).unwrap_or(s.trim())
}

struct TaskFiles<'r> {
    r: &'r Renderer<'r>,
    scope: &'r Scope,
    vars: &'r Map<String, Json>,
}

impl Files for TaskFiles<'_> {
    fn template(&self, rel: &str, loc: &Loc) -> Result<String> {
        let src = self.scope.origin.source(rel, Some(loc))?;
        self.r.render_file(&src, self.vars)
    }

    fn source(&self, rel: &str, loc: &Loc) -> Result<Vec<u8>> {
        Ok(self.scope.origin.read(rel, Some(loc))?.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_expressions_are_recognised() {
        assert_eq!(single_expression("{{ icc }}"), Some("icc"));
        assert_eq!(single_expression(" {{a.b}} "), Some("a.b"));
        assert_eq!(single_expression("x {{ a }}"), None);
        assert_eq!(single_expression("{{ a }}{{ b }}"), None);
    }
}
