//! YAML read into a tree whose every node knows its file:line:col, so any later error can point at it.
//!
//! The events come from saphyr-parser (YAML 1.2); this module only assembles them. Plain scalars are
//! typed with the YAML 1.2 core schema and keep their source text, so `mode: 0644` can be read as octal.

use std::collections::HashMap;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::error::{Error, Loc, Result, Source};

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 200;
/// Aliases can multiply a small file into a huge tree; refuse beyond this many nodes.
const MAX_NODES: usize = 2_000_000;

#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
    /// Source text of a plain scalar (before typing), e.g. `0644`.
    pub raw: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn new(value: Value, loc: Loc) -> Node {
        Node {
            value,
            loc,
            raw: None,
        }
    }

    /// A short name of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing (null)",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar as text, whatever its YAML type (`1` and `"1"` both give "1").
    pub fn scalar_text(&self) -> Option<String> {
        if let Some(raw) = &self.raw {
            if !matches!(self.value, Value::Null) {
                return Some(raw.clone());
            }
        }
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            _ => None,
        }
    }

    /// Looks a key up in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Converts to JSON (for templates and JSON documents). Keys must be scalars.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Builds a node from JSON, every part placed at `loc` (where the value came from).
    pub fn from_json(value: &serde_json::Value, loc: &Loc) -> Node {
        use serde_json::Value as J;
        let value = match value {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::Seq(items.iter().map(|v| Node::from_json(v, loc)).collect()),
            J::Object(map) => Value::Map(
                map.iter()
                    .map(|(k, v)| {
                        (
                            Node::new(Value::Str(k.clone()), loc.clone()),
                            Node::from_json(v, loc),
                        )
                    })
                    .collect(),
            ),
        };
        Node::new(value, loc.clone())
    }
}

/// Parses one YAML document. An empty file gives a null node.
pub fn parse(src: &Arc<Source>) -> Result<Node> {
    let mut builder = Builder {
        src: src.clone(),
        anchors: HashMap::new(),
        nodes: 0,
    };
    let mut parser = Parser::new_from_str(&src.text);
    let mut doc: Option<Node> = None;
    loop {
        let (event, span) = builder.next(&mut parser)?;
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                if doc.is_some() {
                    return Err(Error::at(
                        &builder.loc(&span),
                        "a file holds one YAML document here; found a second one",
                    ));
                }
                let (event, span) = builder.next(&mut parser)?;
                if matches!(event, Event::DocumentEnd) {
                    doc = Some(Node::new(Value::Null, builder.loc(&span)));
                } else {
                    doc = Some(builder.node(&mut parser, event, span, 0)?);
                }
            }
            other => {
                let n = builder.node(&mut parser, other, span, 0)?;
                doc.get_or_insert(n);
            }
        }
    }
    Ok(doc.unwrap_or_else(|| {
        Node::new(
            Value::Null,
            Loc {
                src: src.clone(),
                line: 1,
                col: 1,
                width: 1,
            },
        )
    }))
}

struct Builder {
    src: Arc<Source>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
}

impl Builder {
    fn loc(&self, span: &Span) -> Loc {
        let width = if span.end.line() == span.start.line() {
            span.end.col().saturating_sub(span.start.col())
        } else {
            1
        };
        Loc {
            src: self.src.clone(),
            line: span.start.line(),
            col: span.start.col() + 1,
            width: width.max(1),
        }
    }

    fn next<'a>(
        &self,
        parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
    ) -> Result<(Event<'a>, Span)> {
        match parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => {
                let m = e.marker();
                let loc = Loc {
                    src: self.src.clone(),
                    line: m.line(),
                    col: m.col() + 1,
                    width: 1,
                };
                Err(Error::at(&loc, format!("invalid YAML: {}", e.info())))
            }
            None => Err(Error::new(format!(
                "{}: unexpected end of YAML",
                self.src.name
            ))),
        }
    }

    fn count(&mut self, loc: &Loc) -> Result<()> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(Error::at(
                loc,
                "document too large (are aliases expanding without end?)",
            ));
        }
        Ok(())
    }

    fn node<'a>(
        &mut self,
        parser: &mut Parser<'a, saphyr_parser::StrInput<'a>>,
        event: Event<'a>,
        span: Span,
        depth: usize,
    ) -> Result<Node> {
        let loc = self.loc(&span);
        if depth > MAX_DEPTH {
            return Err(Error::at(&loc, "nesting too deep"));
        }
        self.count(&loc)?;
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let forced_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let mut loc = loc;
                if style != ScalarStyle::Plain
                    && loc.width > 2
                    && span.start.line() == span.end.line()
                {
                    // Point inside the quotes.
                    loc.col += 1;
                    loc.width -= 2;
                }
                let node = if style == ScalarStyle::Plain && !forced_str {
                    Node {
                        value: resolve_plain(&text),
                        loc,
                        raw: Some(text.into_owned()),
                    }
                } else {
                    Node::new(Value::Str(text.into_owned()), loc)
                };
                (node, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, sp) = self.next(parser)?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(parser, ev, sp, depth + 1)?);
                }
                (Node::new(Value::Seq(items), loc), anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Node, Node)> = Vec::new();
                loop {
                    let (ev, sp) = self.next(parser)?;
                    if matches!(ev, Event::MappingEnd) {
                        break;
                    }
                    let key = self.node(parser, ev, sp, depth + 1)?;
                    let Some(key_text) = key.scalar_text() else {
                        return Err(Error::at(
                            &key.loc,
                            "mapping keys must be plain values, not lists or mappings",
                        ));
                    };
                    if let Some((first, _)) = entries
                        .iter()
                        .find(|(k, _)| k.scalar_text().as_deref() == Some(key_text.as_str()))
                    {
                        return Err(Error::at(&key.loc, format!("duplicate key `{key_text}`"))
                            .with_note(format!("first given at {}", first.loc.short())));
                    }
                    let (ev, sp) = self.next(parser)?;
                    let value = self.node(parser, ev, sp, depth + 1)?;
                    // Keys are always text: `1: x` and `"1": x` name the same key.
                    let key = Node {
                        value: Value::Str(key_text),
                        ..key
                    };
                    entries.push((key, value));
                }
                (Node::new(Value::Map(entries), loc), anchor)
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(Error::at(&loc, "alias to an unknown anchor"));
                };
                let mut n = target.clone();
                self.nodes += weight(&n);
                self.count(&loc)?;
                n.loc = loc;
                (n, 0)
            }
            _ => return Err(Error::at(&loc, "unexpected YAML structure")),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

fn weight(n: &Node) -> usize {
    match &n.value {
        Value::Seq(items) => 1 + items.iter().map(weight).sum::<usize>(),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| 1 + weight(v)).sum::<usize>(),
        _ => 1,
    }
}

/// Types a plain scalar with the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
    }
    if let Some(hex) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(hex, 16) {
            return Value::Int(i);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(oct, 8) {
            return Value::Int(i);
        }
    }
    let looks_float = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_float {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    match digits {
        ".inf" | ".Inf" | ".INF" => Value::Float(if text.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }),
        ".nan" | ".NaN" | ".NAN" if digits == text => Value::Float(f64::NAN),
        _ => Value::Str(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Node> {
        parse(&Source::new("t.yml", text))
    }

    #[test]
    fn every_node_knows_its_position() {
        let n = p("a: 1\nb:\n  - x\n  - 'y z'\n").unwrap();
        let b = n.get("b").unwrap();
        let Value::Seq(items) = &b.value else {
            panic!()
        };
        assert_eq!((items[0].loc.line, items[0].loc.col), (3, 5));
        assert_eq!(
            (items[1].loc.line, items[1].loc.col, items[1].loc.width),
            (4, 6, 3)
        );
    }

    #[test]
    fn core_schema_typing_keeps_raw_text() {
        let n = p("m: 0644\nb: yes\nt: true\nf: 1.5\nq: '12'\nnul:\n").unwrap();
        assert!(matches!(n.get("m").unwrap().value, Value::Int(644)));
        assert_eq!(n.get("m").unwrap().raw.as_deref(), Some("0644"));
        assert!(
            matches!(n.get("b").unwrap().value, Value::Str(_)),
            "yes is a string in YAML 1.2"
        );
        assert!(matches!(n.get("t").unwrap().value, Value::Bool(true)));
        assert!(matches!(n.get("f").unwrap().value, Value::Float(_)));
        assert!(matches!(n.get("q").unwrap().value, Value::Str(_)));
        assert!(matches!(n.get("nul").unwrap().value, Value::Null));
    }

    #[test]
    fn syntax_error_has_position() {
        let e = p("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.message.starts_with("invalid YAML"), "{e}");
        assert!(e.loc.is_some());
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = p("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.message, "duplicate key `a`");
        assert_eq!(e.loc.unwrap().line, 2);
    }

    #[test]
    fn alias_bomb_is_refused_not_expanded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let e = p(&text).unwrap_err();
        assert!(e.message.contains("too large"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(5000);
        assert!(p(&text).is_err());
    }
}
