//! Parsing only the parts of a JSON body that a source's mappings read.
//!
//! Building the whole `serde_json::Value` of a 1.5 KB payload — a `String` per key and value, a
//! `BTreeMap` insert per field — was a quarter of the ingest's CPU, while a mapping typically
//! reads six fields. A [`Projection`] is the tree of the paths the mappings read
//! ([`CompiledMapping::read_paths`]). [`Projection::parse_values`], what the ingest runs, keeps
//! the value at each node read whole in a slot and builds nothing on the way to it;
//! [`Projection::parse`] builds the same values into a tree of just those paths (the reference
//! the slots are checked against). Both skip everything else, checking its syntax as
//! serde_json's `IgnoredAny` does but allocating nothing. The engine sees the same value at
//! every path it reads, so it maps the same events.
//!
//! Differences from a full parse, all confined to fields no mapping reads: their numbers are
//! not range-checked (`1e400` there is accepted instead of a 400) and their nesting depth is not
//! limited. Array elements before a read index are kept as `null` so indexes stay in place.
//! Shape learning needs every field, so the ingest still parses whole bodies for it, sampled.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use smallvec::SmallVec;

use super::body::{BodyError, json_error, parse_json};
use super::compile::CompiledMapping;
use super::template::{Found, Path, parse_index};

/// The body paths a set of mappings reads, as a tree.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Projection {
    root: Node,
    /// How many nodes are read whole: the length of [`ProjectedBody::Values`].
    slots: usize,
    /// For each mapping of [`Projection::of`], in order, where each of its lookups
    /// ([`Lookups::paths`]) finds its value in [`ProjectedBody::Values`].
    wiring: Vec<Box<[Wire]>>,
}

/// Where one path a mapping reads is found among a projected body's values: at or below the
/// node read whole that holds it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Wire {
    slot: u32,
    /// The rest of the path below that node; empty when the path ends there.
    below: Path,
}

impl Wire {
    /// A path the projection does not read.
    fn nothing() -> Self {
        Self {
            slot: u32::MAX,
            below: Path::default(),
        }
    }

    pub(crate) fn resolve<'v>(&self, values: &'v [Option<Kept<'_>>]) -> Found<'v> {
        match values.get(self.slot as usize) {
            Some(Some(Kept::Json(value))) if self.below.is_root() => Found::Json(value),
            Some(Some(Kept::Json(value))) => Found::from(self.below.resolve(value)),
            Some(Some(Kept::Text(text))) if self.below.is_root() => Found::Text(text),
            Some(Some(Kept::Members(members))) => self.below.resolve_members(members),
            // Nothing is below a string.
            _ => Found::Missing,
        }
    }
}

/// A body as [`Projection::parse_values`] parses it.
// Large by design: the values are inline so that a request allocates nothing for them, and a
// body is made and moved once per request.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum ProjectedBody<'b> {
    /// Parsed whole, or by serde_json where the scanner left it the decision: a tree like
    /// [`Projection::parse`]'s.
    Tree(Value),
    /// The value at each node read whole, by its slot (`None` where the body has none), and
    /// no tree: nothing is built for the objects on the way to them.
    Values(Slots<'b>),
}

/// A projected body's values: inline for mappings reading up to eight (the Stripe mapping of
/// the load runs reads eight), so that a request allocates nothing for them.
pub type Slots<'b> = SmallVec<[Option<Kept<'b>>; 8]>;

/// The members of a [`Kept::Members`] object.
pub type Members<'b> = [(&'b str, Kept<'b>)];

/// Borrowed members as the object a tree holds.
pub(crate) fn members_value(members: &Members<'_>) -> Value {
    Value::Object(
        members
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.to_value()))
            .collect(),
    )
}

/// A value [`Projection::parse_values`] read whole.
#[derive(Clone, Debug, PartialEq)]
pub enum Kept<'b> {
    /// A string without escapes, borrowed from the body: most values a mapping reads (ids,
    /// names, emails) are, and as `Value::String`s they were a copy and an allocation each.
    Text(&'b str),
    /// An object of strings, numbers, booleans and nulls, none of its keys escaped (a
    /// `metadata` map, typically, read whole by `properties.from`): its members, sorted by key
    /// and a later duplicate replacing the earlier one, as a `Map` keeps them. As a `Map` it
    /// was an allocation per key, per string and per node, and a tree to build and take down.
    Members(Box<Members<'b>>),
    /// Anything else, built as serde_json builds it.
    Json(Value),
}

impl<'b> Kept<'b> {
    /// The value as a tree would hold it.
    pub fn to_value(&self) -> Value {
        match self {
            Kept::Text(text) => Value::String((*text).to_owned()),
            Kept::Members(members) => members_value(members),
            Kept::Json(value) => value.clone(),
        }
    }

    pub(crate) fn found(&self) -> Found<'_> {
        match self {
            Kept::Text(text) => Found::Text(text),
            Kept::Members(members) => Found::Members(members),
            Kept::Json(value) => Found::Json(value),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Node {
    /// The value here is read as a whole (a leaf path, `properties.from`, a forEach array).
    whole: bool,
    /// The slots of this node and every node below it, a value found here replacing theirs;
    /// a node read whole (which has nothing below it) has the first.
    slots: (u32, u32),
    /// Keys apply to object members and, when numeric, to array elements, like `Path`.
    children: Vec<Child>,
    /// Bit `n` is set when a child's key is `n` bytes long (bit 63: 63 or more), so most
    /// keys of a body are found unread with one test.
    lengths: u64,
}

#[derive(Clone, Debug, PartialEq)]
struct Child {
    key: Box<str>,
    /// The key's first eight bytes ([`prefix`]): most keys are told apart by one comparison.
    prefix: u64,
    index: Option<usize>,
    node: Node,
}

impl Node {
    /// This node's index among the values of a [`ProjectedBody::Values`], when read whole.
    fn slot(&self) -> Option<u32> {
        self.whole.then_some(self.slots.0)
    }

    /// The child named `key`, whose [`prefix`] is given.
    #[inline(always)]
    fn child(&self, key: &[u8], prefix: u64) -> Option<&Child> {
        for child in &self.children {
            if child.prefix == prefix
                && child.key.len() == key.len()
                && (key.len() <= 8 || child.key.as_bytes()[8..] == key[8..])
            {
                return Some(child);
            }
        }
        None
    }
}

fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// The first eight bytes of `key` as a little-endian word, zero-padded.
fn prefix(key: &[u8]) -> u64 {
    let mut word = [0; 8];
    let len = key.len().min(8);
    word[..len].copy_from_slice(&key[..len]);
    u64::from_le_bytes(word)
}

impl Projection {
    /// What `mappings` read. forEach arrays are kept whole: `$item` paths name one element
    /// shape but every element is read.
    pub fn of<'m>(mappings: impl IntoIterator<Item = &'m CompiledMapping> + Clone) -> Self {
        let mut projection = Self::default();
        for mapping in mappings.clone() {
            if let Some(array) = mapping.for_each_path() {
                projection.add(array);
            }
            for path in mapping.read_paths() {
                projection.add(path);
            }
        }
        projection.number();
        projection.wiring = mappings
            .into_iter()
            .map(|mapping| {
                let mut wires = vec![Wire::nothing(); mapping.lookups.len()];
                mapping
                    .lookups
                    .for_each_path(|slot, keys| wires[slot] = projection.wire(keys));
                wires.into()
            })
            .collect();
        projection
    }

    /// A projection that keeps everything: parsing with it is a full parse.
    pub fn everything() -> Self {
        let mut projection = Self {
            root: Node {
                whole: true,
                ..Node::default()
            },
            ..Self::default()
        };
        projection.number();
        projection
    }

    /// Adds one path, given as its keys (`["data", "object", "id"]`; array indexes as
    /// numbers). The empty path keeps everything.
    pub fn with_keys<'k>(mut self, keys: impl IntoIterator<Item = &'k str>) -> Self {
        self.add_keys(keys);
        self.number();
        self
    }

    /// Gives each node read whole a slot, in depth-first order, so the slots below a node are
    /// one range.
    fn number(&mut self) {
        fn walk(node: &mut Node, next: &mut u32) {
            let first = *next;
            if node.whole {
                *next += 1;
            }
            for child in &mut node.children {
                walk(&mut child.node, next);
            }
            node.slots = (first, *next);
        }
        let mut next = 0;
        walk(&mut self.root, &mut next);
        self.slots = next as usize;
    }

    /// Where the value at `keys` is found in a [`ProjectedBody::Values`]: below the first node
    /// on the path that is read whole. A path this projection does not read finds nothing.
    fn wire(&self, keys: &[&str]) -> Wire {
        let mut node = &self.root;
        for (depth, key) in keys.iter().enumerate() {
            if let Some(slot) = node.slot() {
                return Wire {
                    slot,
                    below: Path::from_keys(keys[depth..].iter().copied()),
                };
            }
            match node.children.iter().find(|c| &*c.key == *key) {
                Some(child) => node = &child.node,
                None => return Wire::nothing(),
            }
        }
        match node.slot() {
            Some(slot) => Wire {
                slot,
                below: Path::default(),
            },
            None => Wire::nothing(),
        }
    }

    /// Each node read whole, as its path's keys and its slot: for checks of
    /// [`Projection::parse_values`] against a tree (tests, fuzz target `projection`).
    #[doc(hidden)]
    pub fn read_slots(&self) -> Vec<(Vec<String>, usize)> {
        fn walk(node: &Node, keys: &mut Vec<String>, out: &mut Vec<(Vec<String>, usize)>) {
            if let Some(slot) = node.slot() {
                out.push((keys.clone(), slot as usize));
            }
            for child in &node.children {
                keys.push(child.key.to_string());
                walk(&child.node, keys, out);
                keys.pop();
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut Vec::new(), &mut out);
        out
    }

    /// The wiring of the `index`th mapping given to [`Projection::of`].
    pub(crate) fn wiring(&self, index: usize) -> Option<&[Wire]> {
        self.wiring.get(index).map(|wires| &**wires)
    }

    fn add(&mut self, path: &Path) {
        self.add_keys(path.keys());
    }

    fn add_keys<'k>(&mut self, keys: impl IntoIterator<Item = &'k str>) {
        let mut node = &mut self.root;
        for key in keys {
            if node.whole {
                return;
            }
            let at = match node.children.iter().position(|c| &*c.key == key) {
                Some(at) => at,
                None => {
                    node.lengths |= length_bit(key.len());
                    node.children.push(Child {
                        key: key.into(),
                        prefix: prefix(key.as_bytes()),
                        index: parse_index(key),
                        node: Node::default(),
                    });
                    node.children.len() - 1
                }
            };
            node = &mut node.children[at].node;
        }
        node.whole = true;
        node.children = Vec::new();
        node.lengths = 0;
    }

    /// Whether parsing with this projection is a full parse.
    pub fn is_everything(&self) -> bool {
        self.root.whole
    }

    /// Parses JSON keeping only the projected paths; the same errors as a full parse for
    /// malformed JSON. An empty body is an empty object, as in [`parse_json`].
    ///
    /// A byte scanner (`scan`) does the work: it matches keys as bytes and skips unread
    /// values without decoding them. When it finds anything it would have to report, the
    /// body is parsed again by [`Projection::parse_serde`], so errors (and their positions)
    /// are serde_json's, and where the two could ever disagree serde_json's answer stands.
    pub fn parse(&self, body: &[u8]) -> Result<Value, BodyError> {
        if self.root.whole || body.iter().all(u8::is_ascii_whitespace) {
            return parse_json(body);
        }
        scan(&self.root, body).or_else(|Invalid| self.parse_serde(body))
    }

    /// Like [`Projection::parse`], but the values read whole are kept by slot instead of in a
    /// tree: the objects on the way to them (the body's root, `data`, `data.object`) cost no
    /// map, no key and no drop. The engine finds them through the wiring of
    /// [`Projection::of`] ([`super::Request::projected`]). Bodies the scanner leaves to
    /// serde_json, and projections that keep everything, come back as a tree.
    pub fn parse_values<'b>(&self, body: &'b [u8]) -> Result<ProjectedBody<'b>, BodyError> {
        if self.root.whole || body.iter().all(u8::is_ascii_whitespace) {
            return parse_json(body).map(ProjectedBody::Tree);
        }
        let mut values: Slots<'b> = smallvec::smallvec![None; self.slots];
        match fill_root(&self.root, body, &mut values) {
            Ok(()) => Ok(ProjectedBody::Values(values)),
            Err(Invalid) => self.parse_serde(body).map(ProjectedBody::Tree),
        }
    }

    /// [`Projection::parse`] through serde_json's deserializer: the reference the scanner is
    /// checked against (fuzz target `projection`), and the source of its error messages.
    #[doc(hidden)]
    pub fn parse_serde(&self, body: &[u8]) -> Result<Value, BodyError> {
        if self.root.whole || body.iter().all(u8::is_ascii_whitespace) {
            return parse_json(body);
        }
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        let value = Project(&self.root)
            .deserialize(&mut deserializer)
            .and_then(|value| deserializer.end().map(|()| value))
            .map_err(json_error)?;
        Ok(value)
    }
}

/// The scanner found something serde_json may refuse; [`Projection::parse_serde`] decides.
struct Invalid;

/// serde_json refuses values it builds that nest deeper than its recursion limit (128
/// containers) and skips any depth; the scanner leaves every body nested near that deep to it
/// rather than count exactly as it does (and so keeps the skipper's stack in a `u128`).
const MAX_DEPTH: usize = 120;

/// The projected value of `body` by the byte scanner, which accepts what serde_json's
/// `IgnoredAny` accepts in skipped values (strings are checked for control characters and
/// escapes, not for UTF-8, as there) and builds keys at projected levels and kept values as
/// serde_json does, checking UTF-8 (and leaving escapes, floats and big numbers to
/// serde_json itself).
///
/// Most of a body is short strings, whitespace and punctuation, so the cost is per token. The
/// scanner is a set of functions over the body and a cursor (`at`, the index of the next byte):
/// the small steps take the cursor by `&mut` and are inlined, so it stays in a register; the
/// few functions that are not inlined take it by value and return where they stopped. Runs of
/// bytes (strings, indentation, digits) are examined 16 at a time ([`Block`]).
fn scan(root: &Node, body: &[u8]) -> Result<Value, Invalid> {
    let mut at = 0;
    whitespace(body, &mut at);
    let (value, mut at) = value(body, at, root, 0)?;
    whitespace(body, &mut at);
    if at == body.len() {
        Ok(value)
    } else {
        Err(Invalid)
    }
}

/// [`scan`] keeping the values read whole by slot ([`Projection::parse_values`]).
fn fill_root<'b>(
    root: &Node,
    body: &'b [u8],
    values: &mut [Option<Kept<'b>>],
) -> Result<(), Invalid> {
    let mut at = 0;
    whitespace(body, &mut at);
    let mut at = fill(body, at, root, 0, values)?;
    whitespace(body, &mut at);
    if at == body.len() {
        Ok(())
    } else {
        Err(Invalid)
    }
}

/// [`value`] for a node not read whole: only what is below it is kept, by slot. As in a
/// tree, where a later duplicate key replaces the member before it, a value here first clears
/// every slot below; one that is not a container leaves them empty (and is checked as
/// [`value`] checks it, so both accept the same bodies).
fn fill<'b>(
    bytes: &'b [u8],
    at: usize,
    node: &Node,
    depth: usize,
    values: &mut [Option<Kept<'b>>],
) -> Result<usize, Invalid> {
    values[node.slots.0 as usize..node.slots.1 as usize].fill(None);
    match bytes.get(at) {
        Some(b'{') => fill_object(bytes, at, node, depth + 1, values),
        Some(b'[') => fill_array(bytes, at, node, depth + 1, values),
        _ => kept(bytes, at, depth).map(|(_, end)| end),
    }
}

/// The value of a member or element `node` reads: whole into its slot, or filled below.
#[inline(always)]
fn fill_child<'b>(
    bytes: &'b [u8],
    at: usize,
    node: &Node,
    depth: usize,
    values: &mut [Option<Kept<'b>>],
) -> Result<usize, Invalid> {
    match node.slot() {
        Some(slot) => kept_slot(bytes, at, depth, &mut values[slot as usize]),
        None => fill(bytes, at, node, depth, values),
    }
}

/// [`object`] by slot.
fn fill_object<'b>(
    bytes: &'b [u8],
    mut at: usize,
    node: &Node,
    depth: usize,
    values: &mut [Option<Kept<'b>>],
) -> Result<usize, Invalid> {
    if open(bytes, &mut at, b'{', depth)? {
        return Ok(at);
    }
    loop {
        let child = key(bytes, &mut at, node)?;
        colon(bytes, &mut at)?;
        match child {
            Some(child) => at = fill_child(bytes, at, &child.node, depth, values)?,
            None => skip(bytes, &mut at, depth)?,
        }
        if comma_or_close(bytes, &mut at, b'}')? {
            return Ok(at);
        }
    }
}

/// [`array`] by slot.
fn fill_array<'b>(
    bytes: &'b [u8],
    mut at: usize,
    node: &Node,
    depth: usize,
    values: &mut [Option<Kept<'b>>],
) -> Result<usize, Invalid> {
    if open(bytes, &mut at, b'[', depth)? {
        return Ok(at);
    }
    let mut index = 0;
    loop {
        match node.children.iter().find(|c| c.index == Some(index)) {
            Some(child) => at = fill_child(bytes, at, &child.node, depth, values)?,
            None => skip(bytes, &mut at, depth)?,
        }
        index += 1;
        if comma_or_close(bytes, &mut at, b']')? {
            return Ok(at);
        }
    }
}

/// The value at `at` (whitespace skipped) as `node` wants it; `depth` containers enclose it.
fn value(bytes: &[u8], at: usize, node: &Node, depth: usize) -> Result<(Value, usize), Invalid> {
    match bytes.get(at) {
        Some(b'{') if !node.whole => object(bytes, at, node, depth + 1),
        Some(b'[') if !node.whole => array(bytes, at, node, depth + 1),
        _ => kept(bytes, at, depth),
    }
}

/// An object some of whose members are read; `depth` counts it.
fn object(
    bytes: &[u8],
    mut at: usize,
    node: &Node,
    depth: usize,
) -> Result<(Value, usize), Invalid> {
    let mut map = Map::new();
    if open(bytes, &mut at, b'{', depth)? {
        return Ok((Value::Object(map), at));
    }
    loop {
        let child = key(bytes, &mut at, node)?;
        colon(bytes, &mut at)?;
        match child {
            Some(child) => {
                let (value, end) = value(bytes, at, &child.node, depth)?;
                at = end;
                map.insert(String::from(&*child.key), value);
            }
            None => skip(bytes, &mut at, depth)?,
        }
        if comma_or_close(bytes, &mut at, b'}')? {
            return Ok((Value::Object(map), at));
        }
    }
}

/// Opens the container at `at` (`open` is `{` or `[`), the `depth`th around its contents:
/// `true` when it is empty, with the cursor after its close; else the cursor on its first
/// member or element.
#[inline(always)]
fn open(bytes: &[u8], at: &mut usize, open: u8, depth: usize) -> Result<bool, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid);
    }
    expect(bytes, at, open)?;
    // `}` and `]` are two after `{` and `[`.
    if bytes.get(*at) == Some(&(open + 2)) {
        *at += 1;
        return Ok(true);
    }
    Ok(false)
}

/// The member key at `at` (its opening quote) and the child of `node` it names; the cursor
/// after the key.
#[inline(always)]
fn key<'n>(bytes: &[u8], at: &mut usize, node: &'n Node) -> Result<Option<&'n Child>, Invalid> {
    let (start, text) = quoted(bytes, at)?;
    let len = *at - 1 - start;
    let child = match text {
        Text::Ascii if node.lengths & length_bit(len) == 0 => None,
        Text::Ascii => node.child(&bytes[start..start + len], prefix_at(bytes, start, len)),
        _ => other_key(bytes, start, *at, text, node)?,
    };
    Ok(child)
}

/// [`key`] for keys with escapes or bytes above 0x7f.
#[inline(never)]
fn other_key<'n>(
    bytes: &[u8],
    start: usize,
    end: usize,
    text: Text,
    node: &'n Node,
) -> Result<Option<&'n Child>, Invalid> {
    // serde_json refuses a key that is not UTF-8.
    let key = decode(bytes, start, end, text)?;
    Ok(node.child(key.as_bytes(), prefix(key.as_bytes())))
}

/// An array some of whose elements are read; `depth` counts it.
fn array(
    bytes: &[u8],
    mut at: usize,
    node: &Node,
    depth: usize,
) -> Result<(Value, usize), Invalid> {
    let wanted = node.children.iter().filter_map(|c| c.index).max();
    let mut items = Vec::new();
    if open(bytes, &mut at, b'[', depth)? {
        return Ok((Value::Array(items), at));
    }
    let mut index = 0;
    loop {
        match node.children.iter().find(|c| c.index == Some(index)) {
            Some(child) => {
                let (value, end) = value(bytes, at, &child.node, depth)?;
                at = end;
                items.push(value);
            }
            None => {
                skip(bytes, &mut at, depth)?;
                // Placeholders keep later elements at their index; none after the last
                // read one.
                if wanted.is_some_and(|w| index < w) {
                    items.push(Value::Null);
                }
            }
        }
        index += 1;
        if comma_or_close(bytes, &mut at, b']')? {
            return Ok((Value::Array(items), at));
        }
    }
}

/// The whole value at `at`, built as serde_json builds it; `depth` containers enclose it.
#[inline(always)]
fn kept(bytes: &[u8], at: usize, depth: usize) -> Result<(Value, usize), Invalid> {
    let mut value = None;
    let end = kept_into(bytes, at, depth, &mut value)?;
    Ok((value.unwrap_or(Value::Null), end))
}

/// [`kept`] into `slot`, the cursor after it returned. Built where it is kept: returned through
/// a `Result` and then moved into its slot, the value was written and read back in pieces of
/// different widths, which stalled the CPU on every kept value. Scalars inline, containers in
/// [`kept_container`].
#[inline(always)]
fn kept_into(
    bytes: &[u8],
    mut at: usize,
    depth: usize,
    slot: &mut Option<Value>,
) -> Result<usize, Invalid> {
    let start = at;
    *slot = Some(match bytes.get(at) {
        Some(b'"') => {
            at += 1;
            let text = string(bytes, &mut at)?;
            Value::String(decode(bytes, start + 1, at, text)?)
        }
        Some(b'-' | b'0'..=b'9') => {
            let integer = number(bytes, &mut at)?;
            number_value(&bytes[start..at], integer)?
        }
        Some(b't') => literal(bytes, &mut at, b"true").map(|()| Value::Bool(true))?,
        Some(b'f') => literal(bytes, &mut at, b"false").map(|()| Value::Bool(false))?,
        Some(b'n') => literal(bytes, &mut at, b"null").map(|()| Value::Null)?,
        _ => {
            let (value, end) = kept_container(bytes, at, depth)?;
            *slot = Some(value);
            return Ok(end);
        }
    });
    Ok(at)
}

/// [`kept_into`] for a slot: strings without escapes, and objects of such strings and other
/// scalars, are borrowed from `bytes` ([`Kept`]).
#[inline(always)]
fn kept_slot<'b>(
    bytes: &'b [u8],
    at: usize,
    depth: usize,
    slot: &mut Option<Kept<'b>>,
) -> Result<usize, Invalid> {
    if bytes.get(at) == Some(&b'{')
        && let Some((members, end)) = kept_members(bytes, at, depth)?
    {
        *slot = Some(Kept::Members(members));
        return Ok(end);
    }
    kept_scalar(bytes, at, depth, slot)
}

/// The members of the object at `at` as [`Kept::Members`] holds them, the cursor after it;
/// `None` when a key has escapes or a value is an object or array (the caller then builds it
/// as a `Value`). Checked as [`kept_container`] checks it, so both refuse the same bodies.
#[inline(never)]
fn kept_members<'b>(
    bytes: &'b [u8],
    mut at: usize,
    depth: usize,
) -> Result<Option<(Box<Members<'b>>, usize)>, Invalid> {
    if depth >= MAX_DEPTH {
        return Err(Invalid);
    }
    expect(bytes, &mut at, b'{')?;
    let mut members = Vec::new();
    if bytes.get(at) == Some(&b'}') {
        return Ok(Some((members.into_boxed_slice(), at + 1)));
    }
    loop {
        let (start, text) = quoted(bytes, &mut at)?;
        let Some(key) = borrowed(bytes, start, at, text)? else {
            return Ok(None);
        };
        colon(bytes, &mut at)?;
        if matches!(bytes.get(at), Some(b'{' | b'[')) {
            return Ok(None);
        }
        let mut value = None;
        at = kept_scalar(bytes, at, depth + 1, &mut value)?;
        members.push((key, value.unwrap_or(Kept::Json(Value::Null))));
        if comma_or_close(bytes, &mut at, b'}')? {
            break;
        }
    }
    // Stable, so that of equal keys the last one sent is last, and kept.
    members.sort_by(|a, b| a.0.cmp(b.0));
    members.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
    Ok(Some((members.into_boxed_slice(), at)))
}

/// [`kept_slot`] for anything but a borrowed object.
#[inline(always)]
fn kept_scalar<'b>(
    bytes: &'b [u8],
    mut at: usize,
    depth: usize,
    slot: &mut Option<Kept<'b>>,
) -> Result<usize, Invalid> {
    if bytes.get(at) != Some(&b'"') {
        let mut value = None;
        let end = kept_into(bytes, at, depth, &mut value)?;
        *slot = value.map(Kept::Json);
        return Ok(end);
    }
    let start = at + 1;
    at = start;
    let text = string(bytes, &mut at)?;
    *slot = Some(match borrowed(bytes, start, at, text)? {
        Some(raw) => Kept::Text(raw),
        None => Kept::Json(Value::String(unescape(&bytes[start - 1..at])?)),
    });
    Ok(at)
}

/// [`kept`] for objects and arrays.
#[inline(never)]
fn kept_container(bytes: &[u8], mut at: usize, depth: usize) -> Result<(Value, usize), Invalid> {
    let value = match bytes.get(at) {
        Some(b'{') => {
            if depth >= MAX_DEPTH {
                return Err(Invalid);
            }
            expect(bytes, &mut at, b'{')?;
            let mut map = Map::new();
            if bytes.get(at) == Some(&b'}') {
                at += 1;
            } else {
                loop {
                    let (start, text) = quoted(bytes, &mut at)?;
                    let key = decode(bytes, start, at, text)?;
                    colon(bytes, &mut at)?;
                    let (value, end) = kept(bytes, at, depth + 1)?;
                    at = end;
                    map.insert(key, value);
                    if comma_or_close(bytes, &mut at, b'}')? {
                        break;
                    }
                }
            }
            Value::Object(map)
        }
        Some(b'[') => {
            if depth >= MAX_DEPTH {
                return Err(Invalid);
            }
            expect(bytes, &mut at, b'[')?;
            let mut items = Vec::new();
            if bytes.get(at) == Some(&b']') {
                at += 1;
            } else {
                loop {
                    let (value, end) = kept(bytes, at, depth + 1)?;
                    at = end;
                    items.push(value);
                    if comma_or_close(bytes, &mut at, b']')? {
                        break;
                    }
                }
            }
            Value::Array(items)
        }
        _ => return Err(Invalid),
    };
    Ok((value, at))
}

/// The string from `start` (after its opening quote) to `end` (after its closing one),
/// scanned as `text`, decoded. Inlined, so that the string is built where it is kept rather
/// than returned through memory and read back in pieces of another width (a stall per value).
#[inline(always)]
fn decode(bytes: &[u8], start: usize, end: usize, text: Text) -> Result<String, Invalid> {
    match borrowed(bytes, start, end, text)? {
        Some(raw) => Ok(raw.to_owned()),
        None => unescape(&bytes[start - 1..end]),
    }
}

/// The string from `start` to `end`, as [`decode`] takes them, as it is in `bytes`; `None`
/// when it has escapes to decode.
#[inline(always)]
fn borrowed(bytes: &[u8], start: usize, end: usize, text: Text) -> Result<Option<&str>, Invalid> {
    let raw = &bytes[start..end - 1];
    match text {
        // SAFETY: the scanner saw every byte below 0x80, and ASCII is UTF-8.
        Text::Ascii => Ok(Some(unsafe { std::str::from_utf8_unchecked(raw) })),
        Text::Raw => std::str::from_utf8(raw).map(Some).map_err(|_| Invalid),
        Text::Escaped => Ok(None),
    }
}

/// A string with escapes, quotes included: serde_json decodes it.
#[inline(never)]
fn unescape(quoted: &[u8]) -> Result<String, Invalid> {
    serde_json::from_slice(quoted).map_err(|_| Invalid)
}

/// A kept number from its bytes (already checked by [`number`]). Integers that surely fit 64
/// bits are read here; anything else goes through serde_json, which also range-checks them.
fn number_value(bytes: &[u8], integer: bool) -> Result<Value, Invalid> {
    let (negative, digits) = match bytes {
        [b'-', digits @ ..] => (true, digits),
        digits => (false, digits),
    };
    // 10^18 - 1 fits an i64, and `-0` is a float to serde_json.
    if integer && digits.len() <= 18 && !(negative && digits == b"0") {
        let magnitude = digits
            .iter()
            .fold(0, |n, digit| n * 10 + i64::from(digit - b'0'));
        return Ok(Value::Number(if negative {
            Number::from(-magnitude)
        } else {
            Number::from(magnitude)
        }));
    }
    serde_json::from_slice(bytes).map_err(|_| Invalid)
}

/// Skips the value at `at` (whitespace skipped), checking its syntax as serde_json's
/// `IgnoredAny` does; `depth` containers enclose it. Scalars, most unread values, inline;
/// containers in [`skip_any`].
#[inline(always)]
fn skip(bytes: &[u8], at: &mut usize, depth: usize) -> Result<(), Invalid> {
    match bytes.get(*at) {
        Some(b'"') => {
            *at += 1;
            string(bytes, at).map(drop)
        }
        Some(b'-' | b'0'..=b'9') => number(bytes, at).map(drop),
        Some(b't') => literal(bytes, at, b"true"),
        Some(b'f') => literal(bytes, at, b"false"),
        Some(b'n') => literal(bytes, at, b"null"),
        _ => {
            *at = skip_any(bytes, *at, depth)?;
            Ok(())
        }
    }
}

/// [`skip`] for any value, in one loop however deep: the open containers are a count and a
/// bit each (set for an object), so a body of nested brackets cannot overflow the stack and
/// nothing is allocated.
#[inline(never)]
fn skip_any(bytes: &[u8], mut at: usize, depth: usize) -> Result<usize, Invalid> {
    let room = MAX_DEPTH.saturating_sub(depth);
    let mut open = 0;
    let mut objects: u128 = 0;
    loop {
        // One value; a container's first member or element is the next value.
        match bytes.get(at) {
            Some(b'"') => {
                at += 1;
                string(bytes, &mut at)?;
            }
            Some(b'-' | b'0'..=b'9') => {
                number(bytes, &mut at)?;
            }
            Some(&open_byte @ (b'{' | b'[')) => {
                expect(bytes, &mut at, open_byte)?;
                let object = open_byte == b'{';
                if bytes.get(at) == Some(&(open_byte + 2)) {
                    // `{}` or `[]`: `}` and `]` are two after `{` and `[`.
                    at += 1;
                } else {
                    open += 1;
                    if open > room {
                        return Err(Invalid);
                    }
                    objects = (objects << 1) | u128::from(object);
                    if object {
                        member_key(bytes, &mut at)?;
                    }
                    continue;
                }
            }
            Some(b't') => literal(bytes, &mut at, b"true")?,
            Some(b'f') => literal(bytes, &mut at, b"false")?,
            Some(b'n') => literal(bytes, &mut at, b"null")?,
            _ => return Err(Invalid),
        }
        // After a value: close containers until a comma starts the next value.
        loop {
            if open == 0 {
                return Ok(at);
            }
            let object = objects & 1 == 1;
            let close = if object { b'}' } else { b']' };
            if !comma_or_close(bytes, &mut at, close)? {
                if object {
                    member_key(bytes, &mut at)?;
                }
                break;
            }
            open -= 1;
            objects >>= 1;
        }
    }
}

/// `"key":` and the whitespace after it, in a skipped object.
#[inline(always)]
fn member_key(bytes: &[u8], at: &mut usize) -> Result<(), Invalid> {
    if bytes.get(*at) != Some(&b'"') {
        return Err(Invalid);
    }
    *at += 1;
    string(bytes, at)?;
    colon(bytes, at)
}

/// The `:` after a key and the whitespace around it. Bodies are mostly pretty (`"key": 1`) or
/// compact (`"key":1`): both are one test of three bytes.
#[inline(always)]
fn colon(bytes: &[u8], at: &mut usize) -> Result<(), Invalid> {
    match bytes.get(*at..*at + 3) {
        Some(&[b':', b' ', next]) if next > b' ' => *at += 2,
        Some(&[b':', next, _]) if next > b' ' => *at += 1,
        _ => {
            whitespace(bytes, at);
            expect(bytes, at, b':')?;
        }
    }
    Ok(())
}

/// After a member or element (whitespace not yet skipped): `true` at `close` (consumed),
/// `false` after a comma and the whitespace after it.
#[inline(always)]
fn comma_or_close(bytes: &[u8], at: &mut usize, close: u8) -> Result<bool, Invalid> {
    whitespace(bytes, at);
    match bytes.get(*at) {
        Some(b',') => {
            *at += 1;
            whitespace(bytes, at);
            Ok(false)
        }
        Some(&byte) if byte == close => {
            *at += 1;
            Ok(true)
        }
        _ => Err(Invalid),
    }
}

/// Consumes `byte` and the whitespace after it.
#[inline(always)]
fn expect(bytes: &[u8], at: &mut usize, byte: u8) -> Result<(), Invalid> {
    if bytes.get(*at) != Some(&byte) {
        return Err(Invalid);
    }
    *at += 1;
    whitespace(bytes, at);
    Ok(())
}

/// Compact bodies have no whitespace between tokens: one comparison. Pretty ones have single
/// spaces (`": "`) and runs (a newline and an indent), skipped 16 bytes at a time.
#[inline(always)]
fn whitespace(bytes: &[u8], at: &mut usize) {
    match bytes.get(*at) {
        Some(&byte) if byte > b' ' => {}
        Some(b' ') if bytes.get(*at + 1).is_some_and(|&byte| byte > b' ') => *at += 1,
        _ => {
            if let Some(chunk) = bytes.get(*at..*at + LANES) {
                let other = Block::load(chunk).non_whitespace();
                if other != 0 {
                    *at += other.trailing_zeros() as usize;
                    return;
                }
            }
            *at = whitespace_end(bytes, *at);
        }
    }
}

/// Where the whitespace from `at` ends (a non-whitespace byte or the end of `bytes`).
#[inline(never)]
fn whitespace_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(chunk) = bytes.get(at..at + LANES) {
        let other = Block::load(chunk).non_whitespace();
        if other != 0 {
            return at + other.trailing_zeros() as usize;
        }
        at += LANES;
    }
    let rest = bytes.get(at..).unwrap_or_default();
    at + rest
        .iter()
        .position(|byte| !matches!(byte, b' ' | b'\n' | b'\t' | b'\r'))
        .unwrap_or(rest.len())
}

/// How a scanned string can become a `str`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Text {
    /// All ASCII, no escapes: the bytes are the text.
    Ascii,
    /// No escapes but bytes above 0x7f: the bytes are the text if they are UTF-8.
    Raw,
    /// Escapes: serde_json decodes it.
    Escaped,
}

/// The string at `at`, its opening quote checked: where its text starts, and what it holds;
/// the cursor after its closing quote.
#[inline(always)]
fn quoted(bytes: &[u8], at: &mut usize) -> Result<(usize, Text), Invalid> {
    if bytes.get(*at) != Some(&b'"') {
        return Err(Invalid);
    }
    let start = *at + 1;
    *at = start;
    Ok((start, string(bytes, at)?))
}

/// The rest of a string after its opening quote. Most strings (keys, ids, enums) are ASCII
/// without escapes and end within a block or two: inline, one test per block.
#[inline(always)]
fn string(bytes: &[u8], at: &mut usize) -> Result<Text, Invalid> {
    let mut from = *at;
    while let Some(chunk) = bytes.get(from..from + LANES) {
        let stops = Block::load(chunk).ascii_string_stops();
        if stops == 0 {
            from += LANES;
            continue;
        }
        let stop = stops.trailing_zeros() as usize;
        if chunk[stop] != b'"' {
            break;
        }
        *at = from + stop + 1;
        return Ok(Text::Ascii);
    }
    let (text, end) = long_string(bytes, *at)?;
    *at = end;
    Ok(text)
}

/// [`string`] again for the others: with escapes or bytes above 0x7f, or near the end of the
/// body (or invalid); how it reads and where it ends.
#[inline(never)]
fn long_string(bytes: &[u8], mut at: usize) -> Result<(Text, usize), Invalid> {
    let mut high = 0;
    let mut escaped = false;
    loop {
        let block = Block::at(bytes, at);
        let stops = block.string_stops();
        if stops == 0 {
            high |= block.high();
            at += LANES;
            continue;
        }
        let stop = stops.trailing_zeros();
        high |= block.high() & ((1 << stop) - 1);
        at += stop as usize;
        match bytes.get(at) {
            Some(b'"') => {
                let text = match (escaped, high) {
                    (true, _) => Text::Escaped,
                    (false, 0) => Text::Ascii,
                    (false, _) => Text::Raw,
                };
                return Ok((text, at + 1));
            }
            Some(b'\\') => {
                escaped = true;
                match bytes.get(at + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at += 2,
                    Some(b'u') => {
                        let hex = bytes.get(at + 2..at + 6).ok_or(Invalid)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return Err(Invalid);
                        }
                        at += 6;
                    }
                    _ => return Err(Invalid),
                }
            }
            // A control character, or the end of the body.
            _ => return Err(Invalid),
        }
    }
}

#[inline(always)]
fn literal(bytes: &[u8], at: &mut usize, word: &[u8]) -> Result<(), Invalid> {
    if bytes.get(*at..*at + word.len()) != Some(word) {
        return Err(Invalid);
    }
    *at += word.len();
    Ok(())
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`; whether it is an integer (no
/// fraction or exponent).
#[inline(always)]
fn number(bytes: &[u8], at: &mut usize) -> Result<bool, Invalid> {
    if bytes.get(*at) == Some(&b'-') {
        *at += 1;
    }
    let start = *at;
    let digits = digits(bytes, at);
    // No leading zeros.
    if digits == 0 || (digits > 1 && bytes[start] == b'0') {
        return Err(Invalid);
    }
    match bytes.get(*at) {
        Some(b'.' | b'e' | b'E') => {
            *at = fraction(bytes, *at)?;
            Ok(false)
        }
        _ => Ok(true),
    }
}

/// The fraction and exponent of a number, if any; where they end.
#[inline(never)]
fn fraction(bytes: &[u8], mut at: usize) -> Result<usize, Invalid> {
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        if digits(bytes, &mut at) == 0 {
            return Err(Invalid);
        }
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1;
        if let Some(b'+' | b'-') = bytes.get(at) {
            at += 1;
        }
        if digits(bytes, &mut at) == 0 {
            return Err(Invalid);
        }
    }
    Ok(at)
}

/// Skips a run of ASCII digits; its length.
#[inline(always)]
fn digits(bytes: &[u8], at: &mut usize) -> usize {
    if let Some(chunk) = bytes.get(*at..*at + LANES) {
        let other = Block::load(chunk).non_digits();
        if other != 0 {
            let digits = other.trailing_zeros() as usize;
            *at += digits;
            return digits;
        }
    }
    let start = *at;
    *at = digits_end(bytes, start);
    *at - start
}

/// Where the run of digits from `at` ends: [`digits`] for long runs and the end of the body.
#[inline(never)]
fn digits_end(bytes: &[u8], mut at: usize) -> usize {
    loop {
        let other = Block::at(bytes, at).non_digits();
        if other != 0 {
            return at + other.trailing_zeros() as usize;
        }
        at += LANES;
    }
}

/// [`prefix`] of the key of `len` bytes at `start` in `bytes`, reading one word.
#[inline(always)]
fn prefix_at(bytes: &[u8], start: usize, len: usize) -> u64 {
    match bytes.get(start..start + 8) {
        Some(word) => {
            let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
            if len >= 8 {
                word
            } else {
                word & ((1 << (8 * len)) - 1)
            }
        }
        None => prefix(&bytes[start..start + len]),
    }
}

/// Bytes examined at once by a [`Block`].
const LANES: usize = 16;

#[cfg(target_arch = "x86_64")]
use sse2::Block;

#[cfg(not(target_arch = "x86_64"))]
use portable::Block;

/// 16 bytes of the body compared at once with SSE2 (always there on x86_64). Each method
/// returns a bit mask, bit `i` for byte `i`.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_max_epu8,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };

    use super::LANES;

    #[derive(Clone, Copy)]
    pub(super) struct Block(__m128i);

    #[inline(always)]
    fn splat(byte: u8) -> __m128i {
        // SAFETY (here and below): SSE2 is part of the x86_64 baseline, in every such CPU.
        unsafe { _mm_set1_epi8(byte as i8) }
    }

    #[inline(always)]
    fn mask(lanes: __m128i) -> u32 {
        // SAFETY: SSE2.
        unsafe { _mm_movemask_epi8(lanes) as u32 }
    }

    impl Block {
        /// The 16 bytes from `pos`, zeros past the end of `bytes` (zero stops every scan).
        #[inline(always)]
        pub(super) fn at(bytes: &[u8], pos: usize) -> Self {
            match bytes.get(pos..pos + LANES) {
                Some(chunk) => Self::load(chunk),
                None => Self::padded(bytes, pos),
            }
        }

        /// The first 16 bytes of `chunk`.
        #[inline(always)]
        pub(super) fn load(chunk: &[u8]) -> Self {
            assert!(chunk.len() >= LANES);
            // SAFETY: `chunk` has 16 readable bytes; `loadu` needs no alignment.
            Self(unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) })
        }

        #[cold]
        #[inline(never)]
        fn padded(bytes: &[u8], pos: usize) -> Self {
            let mut padded = [0; LANES];
            let rest = bytes.get(pos..).unwrap_or_default();
            padded[..rest.len()].copy_from_slice(rest);
            // SAFETY: `padded` is 16 readable bytes; `loadu` needs no alignment.
            Self(unsafe { _mm_loadu_si128(padded.as_ptr().cast()) })
        }

        /// Where a string ends or needs a closer look: `"`, `\`, a control character.
        #[inline(always)]
        pub(super) fn string_stops(self) -> u32 {
            // SAFETY: SSE2.
            unsafe {
                let quotes = _mm_cmpeq_epi8(self.0, splat(b'"'));
                let backslashes = _mm_cmpeq_epi8(self.0, splat(b'\\'));
                // Unsigned `byte <= 0x1f` is `max(byte, 0x1f) == 0x1f`.
                let controls = _mm_cmpeq_epi8(_mm_max_epu8(self.0, splat(0x1f)), splat(0x1f));
                mask(_mm_or_si128(_mm_or_si128(quotes, backslashes), controls))
            }
        }

        /// [`Block::string_stops`] and bytes above 0x7f: where an ASCII string ends or
        /// needs a closer look.
        #[inline(always)]
        pub(super) fn ascii_string_stops(self) -> u32 {
            // SAFETY: SSE2.
            unsafe {
                let quotes = _mm_cmpeq_epi8(self.0, splat(b'"'));
                let backslashes = _mm_cmpeq_epi8(self.0, splat(b'\\'));
                // Signed, bytes above 0x7f are negative: below 0x20 as control characters are.
                let others = _mm_cmplt_epi8(self.0, splat(0x20));
                mask(_mm_or_si128(_mm_or_si128(quotes, backslashes), others))
            }
        }

        /// Bytes other than JSON's four whitespace characters.
        #[inline(always)]
        pub(super) fn non_whitespace(self) -> u32 {
            // SAFETY: SSE2.
            unsafe {
                let spaces = _mm_or_si128(
                    _mm_cmpeq_epi8(self.0, splat(b' ')),
                    _mm_cmpeq_epi8(self.0, splat(b'\n')),
                );
                let others = _mm_or_si128(
                    _mm_cmpeq_epi8(self.0, splat(b'\t')),
                    _mm_cmpeq_epi8(self.0, splat(b'\r')),
                );
                !mask(_mm_or_si128(spaces, others)) & 0xffff
            }
        }

        /// Bytes other than ASCII digits. The comparisons are signed, so bytes above 0x7f
        /// count as below `0`.
        #[inline(always)]
        pub(super) fn non_digits(self) -> u32 {
            // SAFETY: SSE2.
            unsafe {
                mask(_mm_or_si128(
                    _mm_cmplt_epi8(self.0, splat(b'0')),
                    _mm_cmpgt_epi8(self.0, splat(b'9')),
                ))
            }
        }

        /// Bytes above 0x7f (not ASCII).
        #[inline(always)]
        pub(super) fn high(self) -> u32 {
            mask(self.0)
        }
    }
}

/// [`sse2::Block`] a byte at a time, for other targets (and to test the SSE2 one against).
#[cfg(any(not(target_arch = "x86_64"), test))]
mod portable {
    use super::LANES;

    #[derive(Clone, Copy)]
    pub(super) struct Block([u8; LANES]);

    impl Block {
        pub(super) fn load(chunk: &[u8]) -> Self {
            Self::at(chunk, 0)
        }

        pub(super) fn at(bytes: &[u8], pos: usize) -> Self {
            let mut block = [0; LANES];
            let rest = bytes.get(pos..).unwrap_or_default();
            let len = rest.len().min(LANES);
            block[..len].copy_from_slice(&rest[..len]);
            Self(block)
        }

        fn mask(self, test: impl Fn(u8) -> bool) -> u32 {
            self.0
                .iter()
                .enumerate()
                .filter(|&(_, &byte)| test(byte))
                .fold(0, |mask, (i, _)| mask | (1 << i))
        }

        pub(super) fn string_stops(self) -> u32 {
            self.mask(|b| b == b'"' || b == b'\\' || b < 0x20)
        }

        pub(super) fn ascii_string_stops(self) -> u32 {
            self.mask(|b| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b))
        }

        pub(super) fn non_whitespace(self) -> u32 {
            self.mask(|b| !matches!(b, b' ' | b'\n' | b'\t' | b'\r'))
        }

        pub(super) fn non_digits(self) -> u32 {
            self.mask(|b| !b.is_ascii_digit())
        }

        pub(super) fn high(self) -> u32 {
            self.mask(|b| b >= 0x80)
        }
    }
}

struct Project<'p>(&'p Node);

impl<'de> DeserializeSeed<'de> for Project<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.0.whole {
            serde::Deserialize::deserialize(deserializer)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Project<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key_seed(Key)? {
            match self.0.children.iter().find(|c| *c.key == *key) {
                Some(child) => {
                    let value = access.next_value_seed(Project(&child.node))?;
                    map.insert(key.into_owned(), value);
                }
                None => {
                    access.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let wanted = self.0.children.iter().filter_map(|c| c.index).max();
        let mut items = Vec::new();
        let mut index = 0;
        loop {
            let child = self.0.children.iter().find(|c| c.index == Some(index));
            match child {
                Some(child) => match access.next_element_seed(Project(&child.node))? {
                    Some(value) => items.push(value),
                    None => break,
                },
                None => match access.next_element::<IgnoredAny>()? {
                    // Placeholders keep later elements at their index; none after the last
                    // read one.
                    Some(_) if wanted.is_some_and(|w| index < w) => items.push(Value::Null),
                    Some(_) => {}
                    None => break,
                },
            }
            index += 1;
        }
        Ok(Value::Array(items))
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::mapping::MappingSpec;
    use crate::mapping::template::parse_path;
    use crate::mapping::{Request, map_request};

    fn compile(yaml: &str) -> CompiledMapping {
        let spec: MappingSpec = serde_yaml::from_str(yaml).unwrap();
        CompiledMapping::compile("m", &spec).unwrap()
    }

    const STRIPE: &str = r#"
sourceRef: {name: stripe}
when: [{path: "{{type}}", equals: invoice.paid}]
event:
  name: Purchase
  id: "{{id}}"
  externalId: "{{data.object.customer}}"
  email: "{{data.object.customer_email | lower}}"
  timestamp: "{{created}}"
  properties:
    fields:
      amount: "{{data.object.amount_paid}}"
      first_line: "{{data.object.lines.data.1.description}}"
"#;

    fn body() -> Value {
        json!({
            "id": "evt_1", "type": "invoice.paid", "created": 1700000000,
            "livemode": false, "request": {"id": null, "idempotency_key": "k"},
            "data": {"object": {
                "customer": "cus_9", "customer_email": "A@B.example", "amount_paid": 4200,
                "lines": {"data": [{"description": "one"}, {"description": "two"}, {"description": "three"}]},
                "metadata": {"deep": {"deeper": [1, 2, {"x": "y"}]}}
            }}
        })
    }

    #[test]
    fn keeps_exactly_the_read_paths() {
        let mapping = compile(STRIPE);
        let projection = Projection::of([&mapping]);
        let raw = serde_json::to_vec(&body()).unwrap();
        let projected = projection.parse(&raw).unwrap();
        assert_eq!(
            projected,
            json!({
                "id": "evt_1", "type": "invoice.paid", "created": 1700000000,
                "data": {"object": {
                    "customer": "cus_9", "customer_email": "A@B.example", "amount_paid": 4200,
                    "lines": {"data": [null, {"description": "two"}]}
                }}
            })
        );
    }

    #[test]
    fn maps_the_same_events_as_a_full_parse() {
        let mappings = vec![
            compile(STRIPE),
            compile(
                r#"
sourceRef: {name: s}
forEach: "{{data.object.lines.data}}"
when:
  - {path: "{{livemode}}", equals: "false"}
  - {path: "{{$item.description}}", in: [one, three]}
  - {path: "{{request.idempotency_key}}", exists: true}
event:
  name: "Line {{$item.description}}"
  visitorId: "{{data.object.customer}}"
  properties: {from: "{{data.object.metadata}}"}
"#,
            ),
        ];
        let projection = Projection::of(&mappings);
        let raw = serde_json::to_vec(&body()).unwrap();
        let full = serde_json::from_slice::<Value>(&raw).unwrap();
        let projected = projection.parse(&raw).unwrap();
        let now = jiff::Timestamp::UNIX_EPOCH;
        let a = map_request(&mappings, &Request::new(&full, now));
        let b = map_request(&mappings, &Request::new(&projected, now));
        let by_slot = projection.parse_values(&raw).unwrap();
        assert!(matches!(by_slot, ProjectedBody::Values(_)));
        let c = map_request(&mappings, &Request::projected(&projection, &by_slot, now));
        assert_eq!(a.events.len(), 3);
        // Generated ids are random: everything else must be equal.
        let without_generated_ids = |outcome: crate::mapping::MapOutcome<'_>| {
            let mut outcome = outcome.into_owned();
            for event in &mut outcome.events {
                if event.id_generated {
                    event.id.clear();
                }
            }
            outcome
        };
        assert_eq!(
            without_generated_ids(c),
            without_generated_ids(a.clone()),
            "mapped from values by slot"
        );
        let ids = |o: &crate::mapping::MapOutcome<'_>| {
            o.events
                .iter()
                .map(|e| {
                    (
                        e.name.to_string(),
                        e.properties.clone(),
                        e.external_id.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
    }

    /// [`Projection::parse_values`] keeps, at each node read whole, what the tree of
    /// [`Projection::parse_serde`] has at that path, and refuses what it refuses.
    fn assert_values_match_the_tree(projection: &Projection, raw: &[u8]) {
        let tree = projection.parse_serde(raw);
        match (projection.parse_values(raw), tree) {
            (Ok(ProjectedBody::Values(values)), Ok(tree)) => {
                for (keys, slot) in projection.read_slots() {
                    let path = Path::from_keys(keys.iter().map(String::as_str));
                    assert_eq!(
                        values[slot].as_ref().map(Kept::to_value),
                        path.resolve(&tree).cloned(),
                        "{path} in {}",
                        String::from_utf8_lossy(raw)
                    );
                }
            }
            (Ok(ProjectedBody::Tree(parsed)), Ok(tree)) => assert_eq!(parsed, tree),
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!("{a:?} vs {b:?} for {}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn values_by_slot_are_what_the_tree_has_at_each_path() {
        let stripe = Projection::of([&compile(STRIPE)]);
        let raw = serde_json::to_vec(&body()).unwrap();
        assert!(matches!(
            stripe.parse_values(&raw),
            Ok(ProjectedBody::Values(_))
        ));
        assert_values_match_the_tree(&stripe, &raw);
        for raw in [
            // A later duplicate replaces the earlier member, containers on the way included.
            &br#"{"data": {"object": {"customer": "a", "amount_paid": 1}}, "data": {"object": {"amount_paid": 2}}}"#[..],
            br#"{"data": {"object": {"customer": "a"}}, "data": 5}"#,
            br#"{"id": "x", "id": null, "type": "t", "type": "u"}"#,
            br#"{"data": {"object": {"lines": {"data": [{"description": "one"}]}}}}"#,
            br#"{"data": {"object": {"lines": {"data": {"1": {"description": "key"}}}}}}"#,
            br#"{"data": {"object": {"lines": {"data": [1, {"description": ["x"]}, 3]}}}}"#,
            br#"{"data": [{"object": 1}], "created": 1.5e300}"#,
            br#"{"data": "\u00e9", "i\u0064": "escaped key"}"#,
            br#"[{"id": 1}]"#,
            br#""just a string""#,
            br#"17"#,
            b"{\"data\": {\"object\": {\"customer\": \"\xff\"}}}",
            b"{\"data\": \"\xff\"}",
            b"{\"other\": \"\xff\", \"id\": \"x\"}",
            br#"{"id": 1e400}"#,
            br#"{"other": 1e400, "id": "x"}"#,
            br#"{"id": "x""#,
            br#"{"data": {"object": [}}"#,
            // An object of scalars read whole is borrowed: sorted, the last duplicate kept.
            br#"{"data": {"object": {"metadata": {"b": "2", "a": 1, "b": "3", "n": null, "t": true}}}}"#,
            r#"{"data": {"object": {"metadata": { "s" : "tab\tbed" , "u": "é", "f": -1.5e3 }}}}"#.as_bytes(),
            br#"{"data": {"object": {"metadata": {}}}}"#,
            br#"{"data": {"object": {"metadata": {"k\u0065y": "escaped key", "a": 1}}}}"#,
            br#"{"data": {"object": {"metadata": {"a": 1, "nested": {"x": 1}}}}}"#,
            br#"{"data": {"object": {"metadata": {"a": [1]}}}}"#,
            b"{\"data\": {\"object\": {\"metadata\": {\"\xff\": 1}}}}",
            br#"{"data": {"object": {"metadata": {"a" 1}}}}"#,
            br#"{"data": {"object": {"metadata": {"a": 1,}}}}"#,
            br#"{"data": {"object": {"metadata": {"a": 1e400}}}}"#,
            br#"{"data": {"object": {"metadata": {"a": tru}}}}"#,
        ] {
            assert_values_match_the_tree(&stripe, raw);
        }
        let indexes = Projection::default()
            .with_keys(["00", "x"])
            .with_keys(["0"])
            .with_keys(["2", "a", "b"]);
        for raw in [
            &br#"[{"a": 1}, 2, {"a": {"b": 3}}]"#[..],
            br#"{"00": {"x": 1, "y": 2}, "0": 3, "2": {"a": {"b": [4]}}}"#,
            br#"{"00": {"x": 1}, "00": {"y": 2}}"#,
        ] {
            assert_values_match_the_tree(&indexes, raw);
        }
    }

    #[test]
    fn strings_without_escapes_are_borrowed_from_the_body_and_found_only_at_their_slot() {
        let projection = Projection::default()
            .with_keys(["a"])
            .with_keys(["b"])
            .with_keys(["c"])
            .with_keys(["d"]);
        let raw = r#"{"a": "plain", "b": "café", "c": "tab\tbed", "d": 7}"#.as_bytes();
        let Ok(ProjectedBody::Values(values)) = projection.parse_values(raw) else {
            panic!("not parsed by slot");
        };
        let by_key = |key: &str| {
            let (_, slot) = projection
                .read_slots()
                .into_iter()
                .find(|(keys, _)| keys == &[key])
                .unwrap();
            values[slot].clone()
        };
        assert_eq!(by_key("a"), Some(Kept::Text("plain")));
        assert_eq!(by_key("b"), Some(Kept::Text("café")));
        // Escapes are decoded, into a string of its own.
        assert_eq!(by_key("c"), Some(Kept::Json(json!("tab\tbed"))));
        assert_eq!(by_key("d"), Some(Kept::Json(json!(7))));
        let Some(Kept::Text(text)) = by_key("a") else {
            unreachable!()
        };
        assert!(raw.as_ptr_range().contains(&text.as_ptr()), "a copy");

        // A path below a string finds nothing, as in a tree.
        let below = Wire {
            slot: 0,
            below: parse_path("x").unwrap(),
        };
        let whole = Wire {
            slot: 0,
            below: Path::default(),
        };
        let slots = [Some(Kept::Text("plain"))];
        assert_eq!(whole.resolve(&slots), Found::Text("plain"));
        assert_eq!(below.resolve(&slots), Found::Missing);
    }

    #[test]
    fn root_reads_keep_everything_and_errors_match_a_full_parse() {
        let whole = compile(
            "sourceRef: {name: s}\nevent: {name: E, visitorId: v, properties: {from: '{{.}}'}}\n",
        );
        assert!(Projection::of([&whole]).is_everything());
        let narrow = Projection::of([&compile(STRIPE)]);
        for bad in [
            &b"{\"id\": "[..],
            b"{\"x\": [1, 2}",
            b"{} trailing",
            b"[1,]",
        ] {
            let full = parse_json(bad).unwrap_err();
            assert_eq!(narrow.parse(bad).unwrap_err(), full, "{bad:?}");
        }
        assert_eq!(narrow.parse(b"  ").unwrap(), json!({}));
        // Unread fields are skipped, not range-checked; read ones are.
        assert_eq!(
            narrow.parse(br#"{"other": 1e400, "id": "x"}"#).unwrap(),
            json!({"id": "x"})
        );
        assert!(narrow.parse(br#"{"id": 1e400}"#).is_err());
        // Keys with escapes still match.
        assert_eq!(
            narrow.parse(br#"{"i\u0064": "esc"}"#).unwrap(),
            json!({"id": "esc"})
        );
    }

    /// Found by the `projection` fuzz target: `00` is an object key to templates (RFC 6901),
    /// so it must not shadow index 0 of an array.
    #[test]
    fn only_canonical_keys_are_array_indexes() {
        let projection = Projection::default()
            .with_keys(["00", "x"])
            .with_keys(["0"]);
        assert_eq!(
            projection.parse(br#"[{"a": 1}, 2]"#).unwrap(),
            json!([{"a": 1}])
        );
        assert_eq!(
            projection
                .parse(br#"{"00": {"x": 1, "y": 2}, "0": 3}"#)
                .unwrap(),
            json!({"00": {"x": 1}, "0": 3})
        );
    }

    #[test]
    fn unread_deep_nesting_is_skipped_without_overflow() {
        let narrow = Projection::of([&compile(STRIPE)]);
        let deep = format!(
            r#"{{"id": "x", "junk": {}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let parsed = narrow.parse(deep.as_bytes());
        assert_eq!(parsed, Ok(json!({"id": "x"})));
    }

    /// The scanner alone, without the fallback: `None` where it leaves the body to serde_json.
    fn scanned(projection: &Projection, body: &str) -> Option<Value> {
        scan(&projection.root, body.as_bytes()).ok()
    }

    #[test]
    fn the_scanner_builds_what_serde_json_builds() {
        let narrow = Projection::of([&compile(STRIPE)]);
        let whole = serde_json::to_string_pretty(&body()).unwrap();
        let odd = [
            whole.as_str(),
            r#"{"id":"evt","data":{"object":{"customer":"c\u00e9\n","amount_paid":-1.5e3}}}"#,
            r#" {"data" : {"object" : [1, {"customer": 2}]}, "id": {"nested": [true, false, null]}} "#,
            r#"{"d\u0061ta":{"object":{"lines":{"data":[{},{"description":"t\"wo"},3]}}}}"#,
            r#"{"data":{"object":{"lines":{"data":[]}}},"data":{"object":{"customer":"last wins"}}}"#,
            r#"{"skipped":{"a":[0,-0,1e5,1E+5,1.25e-3,"\/\b\f\r\t\uABCD",{}],"b":{"\u0000":[[]]}},"id":7}"#,
            r#"{"id":"é","data":"not an object","created":18446744073709551615}"#,
            r#"[{"id":1}]"#,
            r#""a string body""#,
            // Kept numbers: read here when they surely fit, by serde_json otherwise.
            r#"{"id":[0,-0,-12,999999999999999999,-999999999999999999,1000000000000000000,
                18446744073709551615,18446744073709551616,-9223372036854775808,1.5,-0.0,1e2]}"#,
            // Strings longer than a block, non-ASCII, escaped, as keys and values.
            r#"{"id":{"a key longer than sixteen bytes":"a value longer than sixteen bytes",
                "é":"ü","\u00e9\n":"\"quoted\" and longer than sixteen bytes"}}"#,
            "{\r\n\t\"id\" :\t\"x\" ,\r\n  \"data\": {\"object\": {\"customer\": [1, {\"é\": null}]}}}\r\n",
            r#"{"data":{"object":{"customer_email_":1,"customer_emaiL":2,"customer_email":3}}}"#,
        ];
        for body in odd {
            let reference = narrow.parse_serde(body.as_bytes()).expect(body);
            assert_eq!(scanned(&narrow, body), Some(reference), "{body}");
        }
    }

    #[test]
    fn the_scanner_refuses_what_serde_json_refuses() {
        let narrow = Projection::of([&compile(STRIPE)]);
        let bad = [
            r#"{"x":01}"#,
            r#"{"x":1.}"#,
            r#"{"x":1e}"#,
            r#"{"x":-}"#,
            r#"{"x":+1}"#,
            r#"{"x":tru}"#,
            r#"{"x":nul}"#,
            "{\"x\":\"a\u{1}b\"}",
            r#"{"x":"\q"}"#,
            r#"{"x":"\u12G4"}"#,
            r#"{"x":[1,]}"#,
            r#"{"x":{,}}"#,
            r#"{"x":{"a":1,}}"#,
            r#"{"x":1,}"#,
            r#"{"x" 1}"#,
            r#"{"x":{"a" 1}}"#,
            r#"{"x":{1:2}}"#,
            r#"{"x":[1 2]}"#,
            r#"{"x":{"a":1]}"#,
            r#"{"x":[1}"#,
            r#"{"x":"open"#,
            r#"{"id":"x"}x"#,
            r#"{"id":"x"} {}"#,
            r#"{"id":"\ud800"}"#,
            r#"{"data":{"object":{"customer":1e400}}}"#,
            r#"{"x":[[[[["#,
            "{\"i\u{0}d\":1}",
        ];
        for body in bad {
            assert_eq!(scanned(&narrow, body), None, "{body}");
            assert!(narrow.parse_serde(body.as_bytes()).is_err(), "{body}");
            assert_eq!(
                narrow.parse(body.as_bytes()),
                narrow.parse_serde(body.as_bytes()),
                "{body}"
            );
        }
        // Invalid UTF-8 in a key the scanner reads: left to serde_json, which refuses it.
        let bytes = b"{\"\xff\":1}";
        assert!(narrow.parse(bytes).is_err());
    }

    /// The SSE2 blocks find what the portable ones (the other targets') find, at every offset
    /// and near the end of the body, for bytes around every class boundary.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sse2_blocks_match_the_portable_ones() {
        let interesting = [
            0x00, 0x08, 0x09, 0x0a, 0x0d, 0x1f, 0x20, 0x21, b'"', b'\\', b'/', b'0', b'5', b'9',
            b':', b'a', 0x7f, 0x80, 0xc3, 0xff,
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut bytes = Vec::new();
        for _ in 0..4000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.push(interesting[(state % interesting.len() as u64) as usize]);
        }
        for at in 0..=bytes.len() {
            let (fast, slow) = (sse2::Block::at(&bytes, at), portable::Block::at(&bytes, at));
            assert_eq!(fast.string_stops(), slow.string_stops(), "at {at}");
            assert_eq!(
                fast.ascii_string_stops(),
                slow.ascii_string_stops(),
                "at {at}"
            );
            assert_eq!(fast.non_whitespace(), slow.non_whitespace(), "at {at}");
            assert_eq!(fast.non_digits(), slow.non_digits(), "at {at}");
            assert_eq!(fast.high(), slow.high(), "at {at}");
            if let Some(chunk) = bytes.get(at..at + LANES) {
                let (fast, slow) = (sse2::Block::load(chunk), portable::Block::load(chunk));
                assert_eq!(fast.string_stops(), slow.string_stops(), "at {at}");
            }
        }
    }
}
