//! Parsing only the parts of a JSON body that a source's mappings read.
//!
//! Building the whole `serde_json::Value` of a 1.5 KB payload — a `String` per key and value, a
//! `BTreeMap` insert per field — was a quarter of the ingest's CPU, while a mapping typically
//! reads six fields. A [`Projection`] is the tree of the paths the mappings read
//! ([`CompiledMapping::read_paths`]); [`Projection::parse`] materialises those subtrees and
//! skips everything else, checking its syntax as serde_json's `IgnoredAny` does but allocating
//! nothing. The engine sees the same value at every path it reads, so it maps the same events.
//!
//! Differences from a full parse, all confined to fields no mapping reads: their numbers are
//! not range-checked (`1e400` there is accepted instead of a 400) and their nesting depth is not
//! limited. Array elements before a read index are kept as `null` so indexes stay in place.
//! Shape learning needs every field, so the ingest still parses whole bodies for it, sampled.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::body::{BodyError, json_error, parse_json};
use super::compile::CompiledMapping;
use super::template::{Path, parse_index};

/// The body paths a set of mappings reads, as a tree.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Projection {
    root: Node,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Node {
    /// The value here is read as a whole (a leaf path, `properties.from`, a forEach array).
    whole: bool,
    /// Keys apply to object members and, when numeric, to array elements, like `Path`.
    children: Vec<Child>,
}

#[derive(Clone, Debug, PartialEq)]
struct Child {
    key: Box<str>,
    index: Option<usize>,
    node: Node,
}

impl Projection {
    /// What `mappings` read. forEach arrays are kept whole: `$item` paths name one element
    /// shape but every element is read.
    pub fn of<'m>(mappings: impl IntoIterator<Item = &'m CompiledMapping>) -> Self {
        let mut projection = Self::default();
        for mapping in mappings {
            if let Some(array) = mapping.for_each_path() {
                projection.add(array);
            }
            for path in mapping.read_paths() {
                projection.add(path);
            }
        }
        projection
    }

    /// A projection that keeps everything: parsing with it is a full parse.
    pub fn everything() -> Self {
        Self {
            root: Node {
                whole: true,
                children: Vec::new(),
            },
        }
    }

    /// Adds one path, given as its keys (`["data", "object", "id"]`; array indexes as
    /// numbers). The empty path keeps everything.
    pub fn with_keys<'k>(mut self, keys: impl IntoIterator<Item = &'k str>) -> Self {
        self.add_keys(keys);
        self
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
                    node.children.push(Child {
                        key: key.into(),
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
    }

    /// Whether parsing with this projection is a full parse.
    pub fn is_everything(&self) -> bool {
        self.root.whole
    }

    /// Parses JSON keeping only the projected paths; the same errors as a full parse for
    /// malformed JSON. An empty body is an empty object, as in [`parse_json`].
    ///
    /// A byte scanner ([`Scan`]) does the work: it matches keys as bytes and skips unread
    /// values without decoding them. When it finds anything it would have to report, the
    /// body is parsed again by [`Projection::parse_serde`], so errors (and their positions)
    /// are serde_json's, and where the two could ever disagree serde_json's answer stands.
    pub fn parse(&self, body: &[u8]) -> Result<Value, BodyError> {
        if self.root.whole || body.iter().all(u8::is_ascii_whitespace) {
            return parse_json(body);
        }
        let mut scan = Scan {
            bytes: body,
            pos: 0,
            frames: Vec::new(),
        };
        match scan
            .value(&self.root, 0)
            .and_then(|value| scan.end().map(|()| value))
        {
            Ok(value) => Ok(value),
            Err(Invalid) => self.parse_serde(body),
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
/// rather than count exactly as it does.
const MAX_DEPTH: usize = 120;

/// A validating JSON scanner over the body's bytes that builds only the projected values.
/// It accepts what serde_json's `IgnoredAny` accepts in skipped values (strings are checked
/// for control characters and escapes, not for UTF-8, as there) and decodes keys at projected
/// levels and kept values through serde_json or `str::from_utf8`, which check UTF-8.
struct Scan<'b> {
    bytes: &'b [u8],
    pos: usize,
    /// Open containers of the value being skipped (`{` or `[`).
    frames: Vec<u8>,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Result<(), Invalid> {
        self.whitespace();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// After a member or element: `true` at `close` (consumed), `false` after a comma.
    fn closes(&mut self, close: u8) -> Result<bool, Invalid> {
        self.whitespace();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(false)
            }
            Some(byte) if byte == close => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(Invalid),
        }
    }

    fn end(&mut self) -> Result<(), Invalid> {
        self.whitespace();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// The value at the cursor, as `node` wants it; `depth` containers enclose it.
    fn value(&mut self, node: &Node, depth: usize) -> Result<Value, Invalid> {
        self.whitespace();
        match self.peek() {
            Some(b'{') if !node.whole => self.object(node, depth + 1),
            Some(b'[') if !node.whole => self.array(node, depth + 1),
            _ => {
                let start = self.pos;
                let nesting = self.skip()?;
                if depth + nesting > MAX_DEPTH {
                    return Err(Invalid);
                }
                kept(&self.bytes[start..self.pos])
            }
        }
    }

    fn object(&mut self, node: &Node, depth: usize) -> Result<Value, Invalid> {
        if depth > MAX_DEPTH {
            return Err(Invalid);
        }
        self.pos += 1;
        let mut map = Map::new();
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.eat(b'"')?;
            let start = self.pos;
            let escaped = self.string()?;
            let raw = &self.bytes[start..self.pos - 1];
            let key: Cow<'_, [u8]> = if escaped {
                let quoted = &self.bytes[start - 1..self.pos];
                let decoded = serde_json::from_slice::<String>(quoted).map_err(|_| Invalid)?;
                Cow::Owned(decoded.into_bytes())
            } else {
                // serde_json refuses a key that is not UTF-8; checking only non-ASCII keys
                // keeps that without a validation call per key.
                if !raw.is_ascii() {
                    std::str::from_utf8(raw).map_err(|_| Invalid)?;
                }
                Cow::Borrowed(raw)
            };
            self.eat(b':')?;
            match node.children.iter().find(|c| c.key.as_bytes() == &*key) {
                Some(child) => {
                    let value = self.value(&child.node, depth)?;
                    map.insert(child.key.to_string(), value);
                }
                None => {
                    self.whitespace();
                    if depth + self.skip()? > MAX_DEPTH {
                        return Err(Invalid);
                    }
                }
            }
            if self.closes(b'}')? {
                return Ok(Value::Object(map));
            }
        }
    }

    fn array(&mut self, node: &Node, depth: usize) -> Result<Value, Invalid> {
        if depth > MAX_DEPTH {
            return Err(Invalid);
        }
        self.pos += 1;
        let wanted = node.children.iter().filter_map(|c| c.index).max();
        let mut items = Vec::new();
        self.whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        let mut index = 0;
        loop {
            match node.children.iter().find(|c| c.index == Some(index)) {
                Some(child) => items.push(self.value(&child.node, depth)?),
                None => {
                    self.whitespace();
                    if depth + self.skip()? > MAX_DEPTH {
                        return Err(Invalid);
                    }
                    // Placeholders keep later elements at their index; none after the last
                    // read one.
                    if wanted.is_some_and(|w| index < w) {
                        items.push(Value::Null);
                    }
                }
            }
            index += 1;
            if self.closes(b']')? {
                return Ok(Value::Array(items));
            }
        }
    }

    /// Skips one value (the cursor on its first byte), checking its syntax as serde_json's
    /// `IgnoredAny` does; returns how many containers deep it nests. Iterative, so a body of
    /// nested brackets cannot overflow the stack.
    fn skip(&mut self) -> Result<usize, Invalid> {
        self.frames.clear();
        let mut deepest = 0;
        loop {
            // One value.
            match self.peek().ok_or(Invalid)? {
                b'"' => {
                    self.pos += 1;
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                open @ (b'{' | b'[') => {
                    self.pos += 1;
                    self.frames.push(open);
                    deepest = deepest.max(self.frames.len());
                    self.whitespace();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        self.frames.pop();
                    } else {
                        if open == b'{' {
                            self.member_key()?;
                        }
                        self.whitespace();
                        continue;
                    }
                }
                _ => return Err(Invalid),
            }
            // After a value: close containers until a comma starts the next value.
            loop {
                let Some(&frame) = self.frames.last() else {
                    return Ok(deepest);
                };
                self.whitespace();
                match (self.peek(), frame) {
                    (Some(b','), _) => {
                        self.pos += 1;
                        if frame == b'{' {
                            self.member_key()?;
                        }
                        self.whitespace();
                        break;
                    }
                    (Some(b'}'), b'{') | (Some(b']'), b'[') => {
                        self.pos += 1;
                        self.frames.pop();
                    }
                    _ => return Err(Invalid),
                }
            }
        }
    }

    /// `"key":` inside a skipped object.
    fn member_key(&mut self) -> Result<(), Invalid> {
        self.eat(b'"')?;
        self.string()?;
        self.eat(b':')
    }

    /// The rest of a string after its opening quote; whether it had escapes.
    fn string(&mut self) -> Result<bool, Invalid> {
        let mut escaped = false;
        loop {
            let rest = &self.bytes[self.pos..];
            let stop = string_stop(rest).ok_or(Invalid)?;
            self.pos += stop;
            match rest[stop] {
                b'"' => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                b'\\' => {
                    escaped = true;
                    match self.bytes.get(self.pos + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 2;
                        }
                        Some(b'u') => {
                            let hex = self.bytes.get(self.pos + 2..self.pos + 6).ok_or(Invalid)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Invalid);
                            }
                            self.pos += 6;
                        }
                        _ => return Err(Invalid),
                    }
                }
                _ => return Err(Invalid),
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Invalid> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), Invalid> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Invalid),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Invalid);
            }
        }
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }
}

/// The index of the first `"`, `\\` or control character: where a string ends or needs a
/// closer look (and, writing JSON, the only bytes serde_json escapes). Eight bytes at a time (most of a body is string contents); a byte-at-a-time
/// loop made the scanner no faster than serde_json, which does the same.
pub(crate) fn string_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    const SPACES: u64 = u64::from_ne_bytes([0x20; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        // A byte's high bit is set where it is zero after the xor (or below 0x20), with
        // false positives only above a true one, so the lowest set bit is exact.
        let zero = |v: u64| v.wrapping_sub(ONES) & !v;
        let stops =
            (zero(word ^ QUOTES) | zero(word ^ BACKSLASHES) | (word.wrapping_sub(SPACES) & !word))
                & HIGHS;
        if stops != 0 {
            return Some(offset + (stops.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|at| offset + at)
}

/// A kept value from its bytes, already checked by [`Scan::skip`]. A string without escapes
/// (most kept values) is taken as it is; anything else goes through serde_json, which also
/// range-checks numbers.
fn kept(bytes: &[u8]) -> Result<Value, Invalid> {
    if let [b'"', inner @ .., b'"'] = bytes
        && !inner.contains(&b'\\')
    {
        let text = std::str::from_utf8(inner).map_err(|_| Invalid)?;
        return Ok(Value::String(text.to_owned()));
    }
    serde_json::from_slice(bytes).map_err(|_| Invalid)
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
        assert_eq!(a.events.len(), 4);
        let ids = |o: &crate::mapping::MapOutcome| {
            o.events
                .iter()
                .map(|e| (e.name.clone(), e.properties.clone(), e.external_id.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
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
        let mut scan = Scan {
            bytes: body.as_bytes(),
            pos: 0,
            frames: Vec::new(),
        };
        let value = scan.value(&projection.root, 0).ok()?;
        scan.end().ok().map(|()| value)
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

    #[test]
    fn string_stop_finds_the_first_quote_backslash_or_control_character() {
        let mut text = vec![b'a'; 40];
        assert_eq!(string_stop(&text), None);
        for at in 0..40 {
            for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                text[at] = stop;
                // Bytes that must not stop it around the one that does, high bytes included.
                if at + 1 < 40 {
                    text[at + 1] = 0xe9;
                }
                assert_eq!(string_stop(&text), Some(at), "{stop:#x} at {at}");
                text[at] = if at % 2 == 0 { b' ' } else { 0xc3 };
            }
        }
        assert_eq!(string_stop(&text), None, "{text:?}");
    }
}
