//! Resolving every body path an event reads in one walk over the body, instead of one search
//! from the root per template.
//!
//! A mapping's event typically reads several fields of one object (`data.object.customer`,
//! `data.object.currency`, …). Searched one by one, each path repeats the searches of its
//! prefix, and every step compares keys through `memcmp` down a B-tree. Here the paths are merged
//! into a tree at compile time; per request each object on the way is visited once, and an
//! object with few members compared to the keys wanted is walked in order alongside the sorted
//! wanted keys, which mostly settles on the first byte.
//!
//! The tree also numbers the paths: a template reads its value by slot. When the ingest hands
//! the engine a projected body ([`super::ProjectedBody::Values`]) there is no tree to walk, and
//! the slots are filled from the projection's instead, through the wiring
//! [`super::Projection::of`] builds from this tree.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::template::{Found, Path};

/// The body paths of one mapping's event, merged by common prefix. Each path has a slot: the
/// index of its value in the slice [`Lookups::resolve`] fills.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lookups {
    root: Node,
    slots: usize,
}

#[derive(Clone, Debug, Default)]
struct Node {
    /// The slot of the path ending here, if a template reads it.
    slot: Option<usize>,
    /// Sorted by key, in the byte order of the body's object keys.
    children: Vec<Child>,
}

#[derive(Clone, Debug)]
struct Child {
    key: Box<str>,
    /// The key as an array index, when it is one.
    index: Option<usize>,
    node: Node,
}

/// An object is walked when it has at most this many members per wanted key; beyond that,
/// searching each key costs less than stepping through the members.
const WALK_MEMBERS_PER_KEY: usize = 12;

impl Lookups {
    /// The slot for `path`, adding the path if it is new.
    pub(crate) fn slot(&mut self, path: &Path) -> usize {
        let mut node = &mut self.root;
        for (key, index) in path.segments() {
            let at = match node
                .children
                .binary_search_by(|child| child.key.as_bytes().cmp(key.as_bytes()))
            {
                Ok(at) => at,
                Err(at) => {
                    let child = Child {
                        key: key.into(),
                        index,
                        node: Node::default(),
                    };
                    node.children.insert(at, child);
                    at
                }
            };
            node = &mut node.children[at].node;
        }
        *node.slot.get_or_insert_with(|| {
            self.slots += 1;
            self.slots - 1
        })
    }

    /// How many slots [`Lookups::resolve`] fills.
    pub(crate) fn len(&self) -> usize {
        self.slots
    }

    /// Calls `f` with each slot and the keys of its path. The paths are not kept beside the
    /// tree: a route holds a thousand mappings' worth of them.
    pub(crate) fn for_each_path<'l>(&'l self, mut f: impl FnMut(usize, &[&'l str])) {
        fn walk<'l>(
            node: &'l Node,
            keys: &mut Vec<&'l str>,
            f: &mut impl FnMut(usize, &[&'l str]),
        ) {
            if let Some(slot) = node.slot {
                f(slot, keys);
            }
            for child in &node.children {
                keys.push(&child.key);
                walk(&child.node, keys, f);
                keys.pop();
            }
        }
        walk(&self.root, &mut Vec::new(), &mut f);
    }

    /// Sets each path's slot in `values` (at least [`Lookups::len`] long) to what
    /// [`Path::resolve`] would give; slots of missing paths are left as they are.
    pub(crate) fn resolve<'v>(&self, body: &'v Value, values: &mut [Found<'v>]) {
        self.root.resolve(body, values);
    }
}

impl Node {
    fn resolve<'v>(&self, value: &'v Value, values: &mut [Found<'v>]) {
        if let Some(slot) = self.slot {
            values[slot] = Found::Json(value);
        }
        match value {
            Value::Object(map) if !self.children.is_empty() => {
                if map.len() <= WALK_MEMBERS_PER_KEY * self.children.len() {
                    self.walk(map, values);
                } else {
                    for child in &self.children {
                        if let Some(member) = map.get(&*child.key) {
                            child.node.resolve(member, values);
                        }
                    }
                }
            }
            Value::Array(items) => {
                for child in &self.children {
                    if let Some(item) = child.index.and_then(|i| items.get(i)) {
                        child.node.resolve(item, values);
                    }
                }
            }
            _ => {}
        }
    }

    /// Members and wanted keys both come in key order, so one pass over each finds them all.
    fn walk<'v>(&self, map: &'v Map<String, Value>, values: &mut [Found<'v>]) {
        let mut wanted = self.children.iter();
        let Some(mut child) = wanted.next() else {
            return;
        };
        for (key, member) in map {
            loop {
                match compare_keys(&child.key, key) {
                    Ordering::Greater => break,
                    Ordering::Equal => child.node.resolve(member, values),
                    // Not in the object.
                    Ordering::Less => {}
                }
                match wanted.next() {
                    Some(next) => child = next,
                    None => return,
                }
            }
        }
    }
}

/// The order of `str`, deciding on the first byte without a `memcmp` call when it differs.
fn compare_keys(a: &str, b: &str) -> Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.as_bytes().cmp(b.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::mapping::template::parse_path;

    /// Resolves `paths` together and checks each against `Path::resolve` on its own.
    fn assert_same_as_one_by_one(body: &Value, paths: &[&str]) {
        let paths: Vec<Path> = paths
            .iter()
            .map(|p| match *p {
                "." => Path::default(),
                p => parse_path(p).unwrap(),
            })
            .collect();
        let mut lookups = Lookups::default();
        let slots: Vec<usize> = paths.iter().map(|p| lookups.slot(p)).collect();
        let mut values = vec![Found::Missing; lookups.len()];
        lookups.resolve(body, &mut values);
        for (path, slot) in paths.iter().zip(slots) {
            assert_eq!(values[slot], Found::from(path.resolve(body)), "{path}");
        }
    }

    #[test]
    fn shared_prefixes_indexes_nulls_and_absent_keys_resolve_as_one_by_one() {
        let body = json!({
            "type": "x",
            "data": {"object": {"a": 1, "b": null, "bb": [10, {"c": 2}], "": "empty key"}},
            "list": [{"id": "first"}, {"id": "second"}],
            "n": null,
        });
        assert_same_as_one_by_one(
            &body,
            &[
                "type",
                "data.object.a",
                "data.object.b",
                "data.object.b.c",
                "data.object.bb.1.c",
                "data.object.bb.0",
                "data.object.bb.01",
                "data.object.bb.9",
                "data.object[\"\"]",
                "data.object",
                "data.object.zz",
                "data.zz.a",
                "list.1.id",
                "list.0",
                "list.id",
                "n.x",
                "type.x",
                "aaa",
                "zzz",
            ],
        );
        assert_same_as_one_by_one(&body, &["."]);
        assert_same_as_one_by_one(&json!([1, 2]), &["1", "x", "."]);
    }

    #[test]
    fn large_objects_are_searched_and_small_ones_walked_alike() {
        let large: Map<String, Value> =
            (0..200).map(|i| (format!("key{i:03}"), json!(i))).collect();
        let body = json!({"large": large});
        // One key wanted: the large object is searched.
        assert_same_as_one_by_one(&body, &["large.key150"]);
        // Many keys wanted, some absent: walked.
        let many: Vec<String> = (0..40)
            .map(|i| format!("large.key{:03}", i * 5 + 1))
            .collect();
        let mut many: Vec<&str> = many.iter().map(String::as_str).collect();
        many.extend(["large.key", "large.key0000", "large.zzz"]);
        assert_same_as_one_by_one(&body, &many);
    }

    #[test]
    fn a_path_read_twice_has_one_slot() {
        let mut lookups = Lookups::default();
        let a = lookups.slot(&parse_path("a.b").unwrap());
        let b = lookups.slot(&parse_path("a").unwrap());
        assert_eq!(lookups.slot(&parse_path("a.b").unwrap()), a);
        assert_ne!(a, b);
        assert_eq!(lookups.len(), 2);
    }
}
