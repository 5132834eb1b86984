//! The YAML layer: turns the parser's events into a small tree in which every
//! key and value knows its line and column, every scalar value is already
//! interpolated, anchors and aliases are expanded and `<<` merge keys applied.
//!
//! The tree is built from `saphyr-parser` events rather than a ready-made
//! document type so that scalars keep their text exactly as written
//! (`version: 3.10` stays "3.10"), keys keep their own positions, and the
//! nesting depth and alias expansion are bounded before anything recursive
//! walks the tree.

use std::collections::{BTreeMap, BTreeSet};

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Tag};

use crate::diagnostics::{Diagnostics, Located, Position, Result};
use crate::interpolate::interpolate;

/// Deeper than any real stack file; it bounds every recursive walk of the
/// tree, including dropping it.
pub const MAX_YAML_NESTING: usize = 64;
/// Nodes that aliases may copy in all, so that a few nested anchors cannot
/// expand into billions of nodes.
pub const MAX_ALIAS_NODES: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Position,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// `~`, `null` or nothing at all.
    Null,
    /// Any scalar, as text: YAML types are decided by the key that reads it.
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_pos: Position,
    pub value: Node,
}

impl Node {
    fn describe(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Scalar(_) => "a single value",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn expected(&self, path: &str, what: &str) -> Located {
        Located::new(self.pos, format!("{path}: expected {what}, found {}", self.describe()))
    }

    /// The entries of a mapping; an empty value counts as an empty mapping.
    pub fn map(&self, path: &str) -> Result<&[Entry]> {
        match &self.value {
            Value::Map(entries) => Ok(entries),
            Value::Null => Ok(&[]),
            _ => Err(self.expected(path, "a mapping")),
        }
    }

    /// The items of a list; an empty value counts as an empty list.
    pub fn seq(&self, path: &str) -> Result<&[Node]> {
        match &self.value {
            Value::Seq(items) => Ok(items),
            Value::Null => Ok(&[]),
            _ => Err(self.expected(path, "a list")),
        }
    }

    pub fn text(&self, path: &str) -> Result<&str> {
        self.scalar().ok_or_else(|| self.expected(path, "a string"))
    }

    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(text) => Some(text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.value == Value::Null
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }
}

/// Reads the first document of `text`; scalar values are interpolated with
/// `lookup` and unset variables reported to `diagnostics`.
pub(crate) fn load(text: &str, lookup: &dyn Fn(&str) -> Option<String>, diagnostics: &mut Diagnostics) -> Result<Node> {
    let mut builder = TreeBuilder {
        lookup,
        diagnostics,
        frames: Vec::new(),
        anchors: BTreeMap::new(),
        alias_nodes_left: MAX_ALIAS_NODES,
        root: None,
        more_documents: false,
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(scan_error)?;
        builder.on_event(event, position(span.start))?;
    }
    Ok(builder.root.unwrap_or(Node { pos: Position::new(1, 1), value: Value::Null }))
}

fn position(marker: Marker) -> Position {
    Position::new(marker.line(), marker.col() + 1)
}

fn scan_error(error: ScanError) -> Located {
    Located::new(position(*error.marker()), format!("invalid YAML: {}", error.info()))
}

struct TreeBuilder<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    diagnostics: &'a mut Diagnostics,
    frames: Vec<Frame>,
    anchors: BTreeMap<usize, Anchored>,
    alias_nodes_left: usize,
    root: Option<Node>,
    /// Set once the first document is complete: later ones are parsed for
    /// syntax errors but not read.
    more_documents: bool,
}

/// A collection still being read.
struct Frame {
    pos: Position,
    anchor: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map(MapFrame),
}

#[derive(Default)]
struct MapFrame {
    entries: Vec<Entry>,
    keys: BTreeSet<String>,
    /// Values of `<<` keys, applied when the mapping ends.
    merges: Vec<Node>,
    /// A key read, waiting for its value.
    pending_key: Option<PendingKey>,
}

struct PendingKey {
    key: String,
    pos: Position,
    is_merge: bool,
}

struct Anchored {
    node: Node,
    nodes: usize,
    depth: usize,
}

impl TreeBuilder<'_> {
    fn on_event(&mut self, event: Event<'_>, pos: Position) -> Result<()> {
        if self.root.is_some() {
            if matches!(event, Event::DocumentStart(_)) && !self.more_documents {
                self.more_documents = true;
                self.diagnostics.warn(pos, "only the first YAML document of the file is read");
            }
            return Ok(());
        }
        match event {
            Event::Scalar(text, style, anchor, tag) => self.on_scalar(&text, style, anchor, tag.as_deref(), pos),
            Event::SequenceStart(anchor, _) => self.open(FrameKind::Seq(Vec::new()), anchor, pos),
            Event::MappingStart(anchor, _) => self.open(FrameKind::Map(MapFrame::default()), anchor, pos),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => self.on_alias(id, pos),
            Event::DocumentEnd => {
                if self.root.is_none() {
                    self.root = Some(Node { pos, value: Value::Null });
                }
                Ok(())
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) => Ok(()),
        }
    }

    fn awaiting_key(&self) -> bool {
        matches!(self.frames.last(), Some(Frame { kind: FrameKind::Map(map), .. }) if map.pending_key.is_none())
    }

    fn on_scalar(
        &mut self,
        text: &str,
        style: ScalarStyle,
        anchor: usize,
        tag: Option<&Tag>,
        pos: Position,
    ) -> Result<()> {
        if self.awaiting_key() {
            // Keys are never interpolated, as in compose.
            let is_merge = style == ScalarStyle::Plain && text == "<<";
            return self.set_key(text.to_string(), pos, is_merge);
        }
        let value = if is_null(text, style, tag) { Value::Null } else { Value::Scalar(self.interpolate(text, pos)?) };
        self.add(Node { pos, value }, anchor)
    }

    fn interpolate(&mut self, text: &str, pos: Position) -> Result<String> {
        let interpolated = interpolate(text, self.lookup)
            .map_err(|message| Located::new(pos, format!("{}: {message}", self.path())))?;
        for name in &interpolated.unset {
            let path = self.path();
            self.diagnostics.unset_variable(pos, &path, name);
        }
        Ok(interpolated.text)
    }

    fn set_key(&mut self, key: String, pos: Position, is_merge: bool) -> Result<()> {
        if let Some(Frame { kind: FrameKind::Map(map), .. }) = self.frames.last_mut() {
            map.pending_key = Some(PendingKey { key, pos, is_merge });
        }
        Ok(())
    }

    fn open(&mut self, kind: FrameKind, anchor: usize, pos: Position) -> Result<()> {
        if self.awaiting_key() {
            return Err(Located::new(pos, format!("{}: a mapping key must be a single value", self.path())));
        }
        if self.frames.len() >= MAX_YAML_NESTING {
            return Err(Located::new(pos, format!("the file nests more than {MAX_YAML_NESTING} levels deep")));
        }
        self.frames.push(Frame { pos, anchor, kind });
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        let Some(frame) = self.frames.pop() else { return Ok(()) };
        let value = match frame.kind {
            FrameKind::Seq(items) => Value::Seq(items),
            FrameKind::Map(map) => Value::Map(apply_merges(map)?),
        };
        self.add(Node { pos: frame.pos, value }, frame.anchor)
    }

    fn on_alias(&mut self, id: usize, pos: Position) -> Result<()> {
        let Some(anchored) = self.anchors.get(&id) else {
            return Err(Located::new(pos, format!("{}: unknown anchor", self.path())));
        };
        if self.awaiting_key() {
            let key = anchored.node.scalar().map(str::to_string);
            let key = key.ok_or_else(|| Located::new(pos, "a mapping key must be a single value"))?;
            return self.set_key(key, pos, false);
        }
        if anchored.nodes > self.alias_nodes_left {
            return Err(Located::new(pos, format!("aliases expand to more than {MAX_ALIAS_NODES} values")));
        }
        if self.frames.len() + anchored.depth > MAX_YAML_NESTING {
            return Err(Located::new(pos, format!("the file nests more than {MAX_YAML_NESTING} levels deep")));
        }
        self.alias_nodes_left -= anchored.nodes;
        let mut node = anchored.node.clone();
        node.pos = pos;
        self.add(node, 0)
    }

    /// Places a finished node in its parent, or makes it the document.
    fn add(&mut self, node: Node, anchor: usize) -> Result<()> {
        if anchor != 0 {
            let (nodes, depth) = measure(&node);
            self.anchors.insert(anchor, Anchored { node: node.clone(), nodes, depth });
        }
        let Some(frame) = self.frames.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut frame.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map(map) => {
                let Some(key) = map.pending_key.take() else { return Ok(()) };
                if key.is_merge {
                    map.merges.push(node);
                } else if !map.keys.insert(key.key.clone()) {
                    return Err(Located::new(key.pos, format!("duplicate key '{}'", key.key)));
                } else {
                    map.entries.push(Entry { key: key.key, key_pos: key.pos, value: node });
                }
            }
        }
        Ok(())
    }

    /// Where the builder is, as `services.web.ports[2]`, for messages.
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.frames {
            match &frame.kind {
                FrameKind::Seq(items) => path.push_str(&format!("[{}]", items.len())),
                FrameKind::Map(map) => {
                    if let Some(key) = &map.pending_key {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(&key.key);
                    }
                }
            }
        }
        if path.is_empty() {
            path.push_str("the file");
        }
        path
    }
}

/// YAML 1.2's core schema nulls, unless a tag says otherwise.
fn is_null(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> bool {
    match tag {
        Some(tag) if tag.is_yaml_core_schema() && tag.suffix == "null" => true,
        Some(tag) if tag.is_yaml_core_schema() && tag.suffix == "str" => false,
        _ => style == ScalarStyle::Plain && matches!(text, "" | "~" | "null" | "Null" | "NULL"),
    }
}

/// Keys written in the mapping win over merged ones, and an earlier merged
/// mapping wins over a later one, as YAML's merge key specifies.
fn apply_merges(mut map: MapFrame) -> Result<Vec<Entry>> {
    for merge in std::mem::take(&mut map.merges) {
        let sources = match merge.value {
            Value::Map(_) => vec![merge],
            Value::Seq(items) => items,
            _ => return Err(merge.expected("<<", "a mapping or a list of mappings to merge")),
        };
        for source in sources {
            let Value::Map(entries) = source.value else {
                return Err(source.expected("<<", "a mapping to merge"));
            };
            for entry in entries {
                if map.keys.insert(entry.key.clone()) {
                    map.entries.push(entry);
                }
            }
        }
    }
    Ok(map.entries)
}

/// How many nodes a subtree holds, and how deep it goes.
fn measure(node: &Node) -> (usize, usize) {
    let children: Box<dyn Iterator<Item = &Node>> = match &node.value {
        Value::Seq(items) => Box::new(items.iter()),
        Value::Map(entries) => Box::new(entries.iter().map(|e| &e.value)),
        Value::Null | Value::Scalar(_) => return (1, 0),
    };
    children.fold((1, 1), |(nodes, depth), child| {
        let (child_nodes, child_depth) = measure(child);
        (nodes.saturating_add(child_nodes), depth.max(child_depth + 1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "TAG").then(|| "1.0".to_string())
    }

    fn parse(text: &str) -> Result<Node> {
        load(text, &lookup, &mut Diagnostics::default())
    }

    #[test]
    fn keys_and_values_know_their_line_and_column() {
        let root = parse("services:\n  web:\n    image: nginx:$TAG\n").expect("valid");
        let services = root.map("").expect("map");
        assert_eq!(services[0].key_pos, Position::new(1, 1));
        let web = &services[0].value.map("").expect("map")[0];
        assert_eq!((web.key.as_str(), web.key_pos), ("web", Position::new(2, 3)));
        let image = &web.value.map("").expect("map")[0];
        assert_eq!(image.key_pos, Position::new(3, 5));
        assert_eq!(image.value.pos, Position::new(3, 12));
        assert_eq!(image.value.scalar(), Some("nginx:1.0"));
    }

    #[test]
    fn scalars_keep_their_text_and_nulls_are_recognised() {
        let root = parse("a: 3.10\nb: ~\nc: 'null'\nd:\ne: !!str null\n").expect("valid");
        assert_eq!(root.get("a").and_then(Node::scalar), Some("3.10"));
        assert!(root.get("b").is_some_and(Node::is_null));
        assert_eq!(root.get("c").and_then(Node::scalar), Some("null"));
        assert!(root.get("d").is_some_and(Node::is_null));
        assert_eq!(root.get("e").and_then(Node::scalar), Some("null"));
    }

    #[test]
    fn merge_keys_fill_in_what_the_mapping_does_not_say() {
        let text = "x: &base {a: 1, b: 2}\ny:\n  <<: *base\n  b: 3\n";
        let root = parse(text).expect("valid");
        let y = root.get("y").expect("y");
        assert_eq!(y.get("a").and_then(Node::scalar), Some("1"));
        assert_eq!(y.get("b").and_then(Node::scalar), Some("3"));
    }

    #[test]
    fn duplicate_keys_are_errors_at_the_second_key() {
        let err = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(err.pos, Position::new(3, 1));
        assert!(err.message.contains("duplicate key 'a'"), "{}", err.message);
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").expect_err("unclosed");
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
        assert!(err.pos.line >= 1);
    }

    #[test]
    fn nesting_and_alias_bombs_are_refused() {
        let deep = "[".repeat(MAX_YAML_NESTING + 1) + &"]".repeat(MAX_YAML_NESTING + 1);
        assert!(parse(&deep).expect_err("too deep").message.contains("levels deep"));
        let block_deep = "- ".repeat(10_000) + "x\n";
        assert!(parse(&block_deep).is_err());
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in ["a", "b", "c", "d", "e", "f", "g"].iter().zip(["b", "c", "d", "e", "f", "g", "h"]) {
            bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        assert!(parse(&bomb).expect_err("bomb").message.contains("aliases expand"));
    }

    #[test]
    fn interpolation_errors_name_the_key() {
        let err = parse("services:\n  web:\n    image: ${TAG:?}x${NOPE:?give NOPE}\n").expect_err("required");
        assert_eq!(err.pos, Position::new(3, 12));
        assert_eq!(err.message, "services.web.image: required variable NOPE is missing a value: give NOPE");
    }
}
