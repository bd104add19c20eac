//! Learning a source's payload shape: which field paths arrive, with which JSON types, how
//! often — and which of them no mapping reads.
//!
//! Paths are written in template syntax so they can be pasted into a Mapping. The elements of
//! an array are merged under index `0` (`{{items.0.sku}}`): that is a working template, and
//! inside a forEach over `{{items}}` it is `{{$item.sku}}`. Only the first
//! [`ARRAY_SAMPLE`] elements are walked, which keeps observing a large batch cheap while still
//! seeing the fields of mixed batches. `seen` counts occurrences, so a field of every element
//! of a 3-element array is seen 3 times per body.

use std::collections::HashMap;

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
struct Shape {
    keys: Box<[Box<str>]>,
    types: JsonTypes,
    seen: u64,
}

/// A bounded per-source observer. Once `max_paths` distinct paths are known, new ones are
/// counted in [`ShapeObserver::overflowed`] and otherwise ignored; known ones keep counting.
#[derive(Clone, Debug)]
pub struct ShapeObserver {
    fields: HashMap<Box<str>, Shape>,
    max_paths: usize,
    overflowed: u64,
}

impl Default for ShapeObserver {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PATHS)
    }
}

impl ShapeObserver {
    pub fn new(max_paths: usize) -> Self {
        Self {
            fields: HashMap::new(),
            max_paths,
            overflowed: 0,
        }
    }

    /// Records every path of one body. Known paths cost a hash lookup and no allocation.
    pub fn observe(&mut self, body: &Value) {
        let mut walk = Walk {
            observer: self,
            path: String::with_capacity(64),
            keys: Vec::with_capacity(MAX_DEPTH),
        };
        walk.children(body);
    }

    /// Observed fields sorted by path.
    pub fn fields(&self) -> Vec<ObservedField> {
        let mut fields: Vec<(&str, &Shape)> = self
            .fields
            .iter()
            .map(|(path, shape)| (&**path, shape))
            .collect();
        // By the bare path, so a container sorts before its fields (`.` sorts before `}`).
        fields.sort_unstable_by_key(|(path, _)| *path);
        fields
            .into_iter()
            .map(|(path, shape)| ObservedField {
                path: format!("{{{{{path}}}}}"),
                types: shape.types,
                seen: shape.seen,
            })
            .collect()
    }

    /// How many new paths were not recorded because the bound was reached.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Observed paths that none of `mappings` reads, in template syntax, sorted. Only the
    /// topmost unread path of an unread subtree is listed (`{{data.object.lines}}`, not each
    /// field below it). A mapping reading a path reads everything below it
    /// (`properties.from: "{{data.object}}"`), and an array index matches any index.
    pub fn unmapped<'m>(
        &self,
        mappings: impl IntoIterator<Item = &'m CompiledMapping>,
    ) -> Vec<String> {
        let reads: Vec<&Path> = mappings
            .into_iter()
            .flat_map(CompiledMapping::read_paths)
            .collect();
        let is_read = |keys: &[Box<str>]| reads.iter().any(|read| overlaps(read, keys));
        let mut unmapped: Vec<&str> = self
            .fields
            .iter()
            .filter(|(_, shape)| {
                let keys = &shape.keys;
                !is_read(keys) && (keys.len() == 1 || is_read(&keys[..keys.len() - 1]))
            })
            .map(|(path, _)| &**path)
            .collect();
        unmapped.sort_unstable();
        unmapped
            .into_iter()
            .map(|path| format!("{{{{{path}}}}}"))
            .collect()
    }
}

/// True when one path is a prefix of the other: the read covers the observed path, or the
/// observed path is a container the read goes into.
fn overlaps(read: &Path, observed: &[Box<str>]) -> bool {
    read.keys()
        .zip(observed.iter())
        .all(|(r, o)| r == &**o || (is_index(r) && is_index(o)))
}

fn is_index(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit())
}

struct Walk<'o, 'v> {
    observer: &'o mut ShapeObserver,
    /// The current path in template syntax, reused across fields.
    path: String,
    keys: Vec<&'v str>,
}

impl<'v> Walk<'_, 'v> {
    fn children(&mut self, value: &'v Value) {
        if self.keys.len() >= MAX_DEPTH {
            return;
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    self.visit(key, child);
                }
            }
            Value::Array(items) => {
                for item in items.iter().take(ARRAY_SAMPLE) {
                    self.visit("0", item);
                }
            }
            _ => {}
        }
    }

    fn visit(&mut self, key: &'v str, value: &'v Value) {
        let mark = self.path.len();
        // Writing to a String cannot fail.
        let _ = write_key(&mut self.path, key, self.keys.is_empty());
        self.keys.push(key);
        self.record(value);
        self.children(value);
        self.keys.pop();
        self.path.truncate(mark);
    }

    fn record(&mut self, value: &Value) {
        let types = JsonTypes::of(value);
        let observer = &mut *self.observer;
        if let Some(shape) = observer.fields.get_mut(self.path.as_str()) {
            shape.types.0 |= types.0;
            shape.seen += 1;
        } else if observer.fields.len() < observer.max_paths {
            observer.fields.insert(
                self.path.as_str().into(),
                Shape {
                    keys: self.keys.iter().map(|k| (*k).into()).collect(),
                    types,
                    seen: 1,
                },
            );
        } else {
            observer.overflowed += 1;
        }
    }
}
