//! Learning a source's payload shape: which field paths arrive, with which JSON types, how
//! often — and which of them no mapping reads.
//!
//! Paths are written in template syntax so they can be pasted into a Mapping. The elements of
//! an array are merged under index `0` (`{{items.0.sku}}`): that is a working template, and
//! inside a forEach over `{{items}}` it is `{{$item.sku}}`. Only the first
//! [`ARRAY_SAMPLE`] elements are walked, which keeps observing a large batch cheap while still
//! seeing the fields of mixed batches. `seen` counts occurrences, so a field of every element
//! of a 3-element array is seen 3 times per body.
//!
//! The paths are kept as a tree whose children are sorted by key. serde_json objects iterate
//! in key order, so matching a body against the tree is a merge walk: no path strings are
//! built and nothing is hashed per field; strings are made only when status is written.

use serde_json::Value;

use super::compile::CompiledMapping;
use super::template::{Path, write_key};

/// The default bound on distinct paths per source (the status field holds at most 100).
pub const DEFAULT_MAX_PATHS: usize = 100;

/// How many elements of each array are walked.
pub const ARRAY_SAMPLE: usize = 16;

/// Paths deeper than this are not recorded: they make unreadable status and are rarely mapped.
const MAX_DEPTH: usize = 12;

/// The set of JSON types seen at a path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JsonTypes(u8);

impl JsonTypes {
    const NAMES: [&'static str; 6] = ["null", "boolean", "number", "string", "array", "object"];

    fn of(value: &Value) -> Self {
        Self(
            1 << match value {
                Value::Null => 0,
                Value::Bool(_) => 1,
                Value::Number(_) => 2,
                Value::String(_) => 3,
                Value::Array(_) => 4,
                Value::Object(_) => 5,
            },
        )
    }

    /// Type names in a fixed order: `null`, `boolean`, `number`, `string`, `array`, `object`.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .enumerate()
            .filter(move |(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, name)| name)
    }
}

/// One observed path, for status `observedFields`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedField {
    /// In template syntax, braces included: `{{data.object.customer}}`.
    pub path: String,
    pub types: JsonTypes,
    pub seen: u64,
}

#[derive(Clone, Debug)]
struct Node {
    key: Box<str>,
    /// Indexes into `ShapeObserver::nodes`, sorted by key.
    children: Vec<usize>,
    types: JsonTypes,
    seen: u64,
}

/// A bounded per-source observer. Once `max_paths` distinct paths are known, a new path is
/// not recorded (nor anything below it) and counts in [`ShapeObserver::overflowed`]; known
/// paths keep counting.
#[derive(Clone, Debug)]
pub struct ShapeObserver {
    /// `nodes[0]` is the body itself, which is not a field.
    nodes: Vec<Node>,
    max_paths: usize,
    overflowed: u64,
}

impl Default for ShapeObserver {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PATHS)
    }
}

const ROOT: usize = 0;

impl ShapeObserver {
    pub fn new(max_paths: usize) -> Self {
        Self {
            nodes: vec![Node {
                key: "".into(),
                children: Vec::new(),
                types: JsonTypes::default(),
                seen: 0,
            }],
            max_paths,
            overflowed: 0,
        }
    }

    /// Records every path of one body.
    pub fn observe(&mut self, body: &Value) {
        self.observe_weighted(body, 1);
    }

    /// Records every path of one body that stands for `weight` bodies: what a sampling caller
    /// uses so `seen` still estimates how often a field arrives.
    pub fn observe_weighted(&mut self, body: &Value, weight: u64) {
        self.walk(ROOT, body, 0, weight);
    }

    fn walk(&mut self, node: usize, value: &Value, depth: usize, weight: u64) {
        if depth >= MAX_DEPTH {
            return;
        }
        match value {
            Value::Object(map) => {
                let mut cursor = 0;
                for (key, child) in map {
                    if let Some(index) = self.child(node, key, &mut cursor, child, weight) {
                        self.walk(index, child, depth + 1, weight);
                    }
                }
            }
            Value::Array(items) => {
                for item in items.iter().take(ARRAY_SAMPLE) {
                    if let Some(index) = self.child(node, "0", &mut 0, item, weight) {
                        self.walk(index, item, depth + 1, weight);
                    }
                }
            }
            _ => {}
        }
    }

    /// Finds or adds the child `key` of `parent` and records `value` there. `cursor` is where
    /// the previous sibling was found: with keys arriving in order, the next one is usually
    /// right after it.
    fn child(
        &mut self,
        parent: usize,
        key: &str,
        cursor: &mut usize,
        value: &Value,
        weight: u64,
    ) -> Option<usize> {
        let children = &self.nodes[parent].children;
        let found = match children.get(*cursor) {
            Some(&next) if *self.nodes[next].key == *key => Ok(*cursor),
            _ => children.binary_search_by(|&c| (*self.nodes[c].key).cmp(key)),
        };
        let index = match found {
            Ok(position) => {
                *cursor = position + 1;
                self.nodes[parent].children[position]
            }
            Err(_) if self.nodes.len() > self.max_paths => {
                self.overflowed += 1;
                return None;
            }
            Err(position) => {
                let index = self.nodes.len();
                self.nodes.push(Node {
                    key: key.into(),
                    children: Vec::new(),
                    types: JsonTypes::default(),
                    seen: 0,
                });
                self.nodes[parent].children.insert(position, index);
                *cursor = position + 1;
                index
            }
        };
        let node = &mut self.nodes[index];
        node.types.0 |= JsonTypes::of(value).0;
        node.seen = node.seen.saturating_add(weight);
        Some(index)
    }

    /// Observed fields in tree order: each container followed by its fields, siblings sorted
    /// by key.
    pub fn fields(&self) -> Vec<ObservedField> {
        let mut fields = Vec::with_capacity(self.nodes.len() - 1);
        self.visit(ROOT, &mut Vec::new(), &mut |keys, node| {
            fields.push(ObservedField {
                path: template_path(keys),
                types: node.types,
                seen: node.seen,
            });
            true
        });
        fields
    }

    /// How many new paths were not recorded because the bound was reached.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Observed paths that none of `mappings` reads, in template syntax, in tree order. Only
    /// the topmost unread path of an unread subtree is listed (`{{data.object.lines}}`, not
    /// each field below it). A mapping reading a path reads everything below it
    /// (`properties.from: "{{data.object}}"`), and an array index matches any index.
    pub fn unmapped<'m>(
        &self,
        mappings: impl IntoIterator<Item = &'m CompiledMapping>,
    ) -> Vec<String> {
        let reads: Vec<&Path> = mappings
            .into_iter()
            .flat_map(CompiledMapping::read_paths)
            .collect();
        let mut unmapped = Vec::new();
        self.visit(ROOT, &mut Vec::new(), &mut |keys, _| {
            let read = reads.iter().any(|r| overlaps(r, keys));
            if !read {
                unmapped.push(template_path(keys));
            }
            // Below an unread path everything is unread too: list only its top.
            read
        });
        unmapped
    }

    /// Pre-order walk below `node`; `f` gets each path and says whether to descend.
    fn visit<'s>(
        &'s self,
        node: usize,
        keys: &mut Vec<&'s str>,
        f: &mut dyn FnMut(&[&'s str], &Node) -> bool,
    ) {
        for &child in &self.nodes[node].children {
            let child_node = &self.nodes[child];
            keys.push(&child_node.key);
            if f(keys, child_node) {
                self.visit(child, keys, f);
            }
            keys.pop();
        }
    }
}

fn template_path(keys: &[&str]) -> String {
    let mut out = String::from("{{");
    for (i, key) in keys.iter().enumerate() {
        // Writing to a String cannot fail.
        let _ = write_key(&mut out, key, i == 0);
    }
    out.push_str("}}");
    out
}

/// True when one path is a prefix of the other: the read covers the observed path, or the
/// observed path is a container the read goes into.
fn overlaps(read: &Path, observed: &[&str]) -> bool {
    read.keys()
        .zip(observed)
        .all(|(r, o)| r == *o || (is_index(r) && is_index(o)))
}

fn is_index(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit())
}
