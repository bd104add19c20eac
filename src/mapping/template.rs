//! The template language: parsing (once, when a Mapping is accepted) and evaluation (per event).
//!
//! Grammar, informally:
//!
//! ```text
//! template  := (text | "{{" ws expr ws "}}")*
//! expr      := variable (ws "|" ws filter)*
//! variable  := "." | "."? path | "$item" ("."? path)? | "$header." name | "$query." name
//! path      := segment ("." segment | "[" (index | quoted) "]")*
//! filter    := "default" ws ":" ws literal | "lower" | "trim" | "sha256"
//! ```
//!
//! Keys containing dots, spaces or other punctuation are written in brackets:
//! `{{metadata["order.id"]}}`. A literal `{{` in text cannot be written; no webhook mapping has
//! needed one so far.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::event::json_members;
use super::lookup::Lookups;
use super::projection::{Members, members_value};
use super::request::{Request, Scope};

/// A compiled template: either a static value, one variable (keeping its JSON type), or text
/// and variables concatenated into a string.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    source: Box<str>,
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Static(Value),
    Single(Expr),
    Concat(Box<[Part]>),
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(Box<str>),
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Expr {
    pub(crate) variable: Variable,
    filters: Box<[Filter]>,
    /// 1-based character position of the variable, for compile errors found after parsing.
    pub(crate) position: usize,
    /// For a body path in an event template: where the mapping's [`Lookups`] put its value.
    slot: Option<usize>,
}

/// What a variable reads.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Variable {
    Body(Path),
    Item(Path),
    /// Lowercased, so lookups are case-insensitive without per-request folding.
    Header(Box<str>),
    Query(Box<str>),
}

#[derive(Clone, Debug, PartialEq)]
enum Filter {
    Default(Value),
    Lower,
    Trim,
    Sha256,
}

const FILTER_NAMES: &str = "default, lower, trim, sha256";

/// A path into a JSON document, resolved into segments at compile time. Each segment is both an
/// object key and, when it is a canonical non-negative integer, an array index — the semantics
/// of an RFC 6901 JSON pointer, without re-parsing a pointer string per evaluation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Path {
    segments: Box<[Segment]>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Segment {
    key: Box<str>,
    index: Option<usize>,
}

impl Segment {
    fn new(key: &str) -> Self {
        Self {
            key: key.into(),
            index: parse_index(key),
        }
    }
}

/// RFC 6901 array indexes: digits without a leading zero (`0` itself excepted).
pub(crate) fn parse_index(key: &str) -> Option<usize> {
    let canonical = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'));
    if canonical { key.parse().ok() } else { None }
}

impl Path {
    pub(crate) fn from_keys<'k>(keys: impl IntoIterator<Item = &'k str>) -> Self {
        Self {
            segments: keys.into_iter().map(Segment::new).collect(),
        }
    }

    /// The path with `other` appended.
    pub(crate) fn join(&self, other: &Path) -> Path {
        Path {
            segments: self
                .segments
                .iter()
                .chain(other.segments.iter())
                .cloned()
                .collect(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The segments as keys, with the index each also is when read on an array.
    pub(crate) fn segments(&self) -> impl Iterator<Item = (&str, Option<usize>)> + '_ {
        self.segments.iter().map(|s| (&*s.key, s.index))
    }

    /// The segments as keys (array indexes as their decimal text).
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.segments.iter().map(|s| &*s.key)
    }

    /// Follows the path; `None` when any step is missing or of the wrong kind.
    #[inline]
    pub fn resolve<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        let mut value = root;
        for segment in &self.segments {
            value = match value {
                Value::Object(map) => map.get(&*segment.key)?,
                Value::Array(items) => items.get(segment.index?)?,
                _ => return None,
            };
        }
        Some(value)
    }

    /// [`Path::resolve`] in an object the projection borrowed, whose members hold no
    /// objects or arrays.
    pub(crate) fn resolve_members<'v>(&self, members: &'v Members<'v>) -> Found<'v> {
        match &*self.segments {
            [] => Found::Members(members),
            [segment] => members
                .binary_search_by(|(key, _)| (*key).cmp(&*segment.key))
                .map_or(Found::Missing, |at| members[at].1.found()),
            _ => Found::Missing,
        }
    }

    /// The path without its first segment.
    pub(crate) fn tail(&self) -> Path {
        Path {
            segments: self.segments.iter().skip(1).cloned().collect(),
        }
    }

    pub(crate) fn resolve_mut<'v>(&self, root: &'v mut Value) -> Option<&'v mut Value> {
        let mut value = root;
        for segment in &self.segments {
            value = match value {
                Value::Object(map) => map.get_mut(&*segment.key)?,
                Value::Array(items) => items.get_mut(segment.index?)?,
                _ => return None,
            };
        }
        Some(value)
    }

    /// Removes the object member the path names; array elements are left alone, since removing
    /// one would shift the indexes of the others.
    pub(crate) fn remove(&self, root: &mut Value) -> Option<Value> {
        let (last, parent) = self.segments.split_last()?;
        let mut value = root;
        for segment in parent {
            value = match value {
                Value::Object(map) => map.get_mut(&*segment.key)?,
                Value::Array(items) => items.get_mut(segment.index?)?,
                _ => return None,
            };
        }
        value.as_object_mut()?.remove(&*last.key)
    }

    /// The RFC 6901 pointer for this path (`/data/object/customer`).
    pub fn to_json_pointer(&self) -> String {
        let mut out = String::new();
        for key in self.keys() {
            out.push('/');
            for c in key.chars() {
                match c {
                    '~' => out.push_str("~0"),
                    '/' => out.push_str("~1"),
                    c => out.push(c),
                }
            }
        }
        out
    }
}

/// Writes the path as it would appear inside `{{ }}`, quoting keys the bare syntax cannot carry,
/// so every displayed path parses back to itself.
impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_char('.');
        }
        for (i, segment) in self.segments.iter().enumerate() {
            write_key(f, &segment.key, i == 0)?;
        }
        Ok(())
    }
}

pub(crate) fn write_key(out: &mut impl fmt::Write, key: &str, first: bool) -> fmt::Result {
    let bare = !key.is_empty() && key.chars().all(is_key_char) && !(first && key.starts_with('$'));
    if bare {
        if !first {
            out.write_char('.')?;
        }
        out.write_str(key)
    } else {
        out.write_str("[\"")?;
        for c in key.chars() {
            if c == '"' || c == '\\' {
                out.write_char('\\')?;
            }
            out.write_char(c)?;
        }
        out.write_str("\"]")
    }
}

fn is_key_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '.' | '[' | ']' | '|' | '{' | '}' | '"' | '\'')
}

/// A template syntax error: 1-based character position within the template and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "position {}: {}", self.position, self.message)
    }
}

impl std::error::Error for TemplateError {}

impl Template {
    /// Parses a template. Text without `{{` is a static string.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = 0;
        while let Some(found) = source[rest..].find("{{") {
            let open = rest + found;
            if open > rest {
                parts.push(Part::Text(source[rest..open].into()));
            }
            let inner = open + 2;
            let Some(close) = find_close(source, inner) else {
                return Err(error_at(
                    source,
                    open,
                    "unclosed \"{{\" (expected \"}}\")".into(),
                ));
            };
            let mut cursor = Cursor {
                src: source,
                pos: inner,
                end: close,
            };
            parts.push(Part::Expr(cursor.expression(open)?));
            rest = close + 2;
        }
        if rest < source.len() {
            parts.push(Part::Text(source[rest..].into()));
        }
        let kind = match parts.len() {
            0 => Kind::Static(Value::String(String::new())),
            1 => match parts.pop() {
                Some(Part::Expr(expr)) => Kind::Single(expr),
                _ => Kind::Static(Value::String(source.to_owned())),
            },
            _ => Kind::Concat(parts.into()),
        };
        Ok(Self {
            source: source.into(),
            kind,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn is_static(&self) -> bool {
        matches!(self.kind, Kind::Static(_))
    }

    /// The value of a template without expressions.
    pub(crate) fn static_value(&self) -> Option<&Value> {
        match &self.kind {
            Kind::Static(value) => Some(value),
            _ => None,
        }
    }

    /// The lone variable, when the template is exactly one variable without filters.
    pub(crate) fn bare_variable(&self) -> Option<&Variable> {
        match &self.kind {
            Kind::Single(expr) if expr.filters.is_empty() => Some(&expr.variable),
            _ => None,
        }
    }

    pub(crate) fn expressions(&self) -> impl Iterator<Item = &Expr> {
        let (single, parts) = match &self.kind {
            Kind::Static(_) => (None, &[][..]),
            Kind::Single(expr) => (Some(expr), &[][..]),
            Kind::Concat(parts) => (None, &parts[..]),
        };
        single
            .into_iter()
            .chain(parts.iter().filter_map(|p| match p {
                Part::Expr(e) => Some(e),
                Part::Text(_) => None,
            }))
    }

    /// Makes the body paths read values that `lookups` resolves (see [`Scope::with_values`])
    /// instead of searching the body.
    pub(crate) fn use_lookups(&mut self, lookups: &mut Lookups) {
        match &mut self.kind {
            Kind::Static(_) => {}
            Kind::Single(expr) => expr.use_lookups(lookups),
            Kind::Concat(parts) => {
                for part in parts.iter_mut() {
                    if let Part::Expr(expr) = part {
                        expr.use_lookups(lookups);
                    }
                }
            }
        }
    }

    /// Position of the first `$item` variable, if any.
    pub(crate) fn item_position(&self) -> Option<usize> {
        self.expressions()
            .find(|e| matches!(e.variable, Variable::Item(_)))
            .map(|e| e.position)
    }

    /// The value this template gives for a request (outside forEach), keeping its JSON type;
    /// `None` when missing. For tools (`hookgate send`, previews), not the per-event path.
    pub fn render(&self, request: &Request<'_>) -> Option<Value> {
        self.evaluate(&request.scope()).into_json()
    }

    /// Evaluates against a request (and, inside forEach, the current element).
    pub(crate) fn evaluate<'a>(&'a self, scope: &Scope<'a>) -> Val<'a> {
        match &self.kind {
            Kind::Static(value) => Val::Json(value),
            Kind::Single(expr) => expr.evaluate(scope),
            Kind::Concat(parts) => {
                let mut out = String::with_capacity(self.source.len());
                for part in parts {
                    match part {
                        Part::Text(text) => out.push_str(text),
                        Part::Expr(expr) => match expr.evaluate(scope) {
                            // A half-filled string (`order-`) would hide the missing value,
                            // most harmfully in identity fields; `| default: ""` opts in.
                            Val::Missing => return Val::Missing,
                            value => value.append_text(&mut out),
                        },
                    }
                }
                Val::Text(Cow::Owned(out))
            }
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Expr {
    fn use_lookups(&mut self, lookups: &mut Lookups) {
        if let Variable::Body(path) = &self.variable {
            self.slot = Some(lookups.slot(path));
        }
    }

    fn evaluate<'a>(&'a self, scope: &Scope<'a>) -> Val<'a> {
        let value = match &self.variable {
            Variable::Body(path) => match self.slot.and_then(|slot| scope.values.get(slot)) {
                Some(found) => Val::from_found(*found),
                None => Val::from_json(path.resolve(scope.body)),
            },
            Variable::Item(path) => Val::from_json(scope.item.and_then(|item| path.resolve(item))),
            Variable::Header(name) => scope.header(name).map_or(Val::Missing, Val::borrowed),
            Variable::Query(name) => scope.query(name).map_or(Val::Missing, Val::borrowed),
        };
        self.filters
            .iter()
            .fold(value, |value, filter| filter.apply(value))
    }
}

impl Filter {
    fn apply<'a>(&'a self, value: Val<'a>) -> Val<'a> {
        match self {
            Filter::Default(fallback) => {
                if value.is_empty() {
                    Val::Json(fallback)
                } else {
                    value
                }
            }
            Filter::Lower => match value {
                Val::Json(Value::String(s)) => Val::Text(lowercase(Cow::Borrowed(s))),
                Val::Text(s) => Val::Text(lowercase(s)),
                other => other,
            },
            Filter::Trim => match value {
                Val::Json(Value::String(s)) => Val::Text(Cow::Borrowed(s.trim())),
                Val::Text(Cow::Borrowed(s)) => Val::Text(Cow::Borrowed(s.trim())),
                Val::Text(Cow::Owned(s)) if s.trim().len() != s.len() => {
                    Val::Text(Cow::Owned(s.trim().to_owned()))
                }
                other => other,
            },
            Filter::Sha256 => match value.text() {
                Some(text) => Val::Text(Cow::Owned(sha256_hex(text.as_bytes()))),
                None => Val::Missing,
            },
        }
    }
}

pub(crate) fn lowercase(s: Cow<'_, str>) -> Cow<'_, str> {
    // ASCII text, nearly every email, is lowered byte by byte; `to_lowercase` decodes each char.
    if !s.is_ascii() {
        Cow::Owned(s.to_lowercase())
    } else if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        s
    }
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    // As bytes: a `String::push` per digit checks capacity and encodes a char 64 times over.
    let mut hex = Vec::with_capacity(64);
    for byte in digest {
        hex.extend_from_slice(&[HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]);
    }
    String::from_utf8(hex).expect("hex digits are ASCII")
}

/// A body value a mapping reads, resolved ahead into its slot ([`super::lookup::Lookups`]): in
/// a parsed tree, or a string or object the projection borrowed from the raw body
/// ([`super::projection::Kept`]). The engine treats both kinds of each alike, as [`Val`] does.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) enum Found<'v> {
    #[default]
    Missing,
    Json(&'v Value),
    Text(&'v str),
    Members(&'v Members<'v>),
}

impl<'v> From<Option<&'v Value>> for Found<'v> {
    fn from(value: Option<&'v Value>) -> Self {
        value.map_or(Found::Missing, Found::Json)
    }
}

/// The result of evaluating a template: borrowed from the body or template where possible.
/// JSON `null` is treated as missing everywhere (defaults, conditions, identity).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val<'a> {
    Missing,
    Json(&'a Value),
    Text(Cow<'a, str>),
    /// An object the projection borrowed from the body
    /// ([`super::projection::Kept::Members`]): everywhere the same as that object as a `Value`.
    Members(&'a Members<'a>),
}

impl<'a> Val<'a> {
    fn from_json(value: Option<&'a Value>) -> Self {
        match value {
            None | Some(Value::Null) => Val::Missing,
            Some(value) => Val::Json(value),
        }
    }

    fn from_found(found: Found<'a>) -> Self {
        match found {
            Found::Missing => Val::Missing,
            Found::Json(value) => Self::from_json(Some(value)),
            Found::Text(text) => Self::borrowed(text),
            Found::Members(members) => Val::Members(members),
        }
    }

    fn borrowed(text: &'a str) -> Self {
        Val::Text(Cow::Borrowed(text))
    }

    pub(crate) fn is_missing(&self) -> bool {
        matches!(self, Val::Missing)
    }

    /// Missing, null, the empty string, an empty array or an empty object.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Val::Missing => true,
            Val::Json(Value::String(s)) => s.is_empty(),
            Val::Json(Value::Array(a)) => a.is_empty(),
            Val::Json(Value::Object(o)) => o.is_empty(),
            Val::Json(_) => false,
            Val::Text(s) => s.is_empty(),
            Val::Members(members) => members.is_empty(),
        }
    }

    /// The value as text: strings as they are, numbers as JSON writes them, objects and
    /// arrays as compact JSON.
    pub(crate) fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Val::Missing | Val::Json(Value::Null) => None,
            Val::Json(Value::String(s)) => Some(Cow::Borrowed(s)),
            Val::Json(Value::Bool(true)) => Some(Cow::Borrowed("true")),
            Val::Json(Value::Bool(false)) => Some(Cow::Borrowed("false")),
            Val::Json(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
            Val::Json(value) => Some(Cow::Owned(value.to_string())),
            Val::Text(s) => Some(Cow::Borrowed(s)),
            Val::Members(members) => {
                let mut out = Vec::new();
                json_members(&mut out, members);
                // JSON written from `str`s is UTF-8.
                String::from_utf8(out).ok().map(Cow::Owned)
            }
        }
    }

    /// Like [`Val::text`], but owned, and `None` when empty or only whitespace: an identity or
    /// id of spaces identifies nothing. The text itself is kept as it is.
    pub(crate) fn into_nonempty_string(self) -> Option<String> {
        // Checked before copying, so a blank value costs no allocation.
        match self {
            Val::Missing | Val::Json(Value::Null) => None,
            Val::Json(Value::String(s)) => (!is_blank(s)).then(|| s.clone()),
            Val::Text(s) => (!is_blank(&s)).then(|| s.into_owned()),
            other => other.text().map(Cow::into_owned),
        }
    }

    /// Like [`Val::into_nonempty_string`], for text that is shared rather than edited.
    pub(crate) fn nonempty_text(&self) -> Option<Cow<'_, str>> {
        self.text().filter(|text| !is_blank(text))
    }

    /// The value as owned JSON, keeping its type.
    pub(crate) fn into_json(self) -> Option<Value> {
        match self {
            Val::Missing => None,
            Val::Json(value) => Some(value.clone()),
            Val::Text(s) => Some(Value::String(s.into_owned())),
            Val::Members(members) => Some(members_value(members)),
        }
    }

    fn append_text(&self, out: &mut String) {
        match self {
            Val::Json(Value::Number(n)) => {
                let _ = write!(out, "{n}");
            }
            other => {
                if let Some(text) = other.text() {
                    out.push_str(&text);
                }
            }
        }
    }

    /// The JSON type name, for error messages that must not repeat payload values.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Val::Missing => "missing",
            Val::Json(value) => json_type_name(value),
            Val::Text(_) => "string",
            Val::Members(_) => "object",
        }
    }
}

/// `text.trim().is_empty()`, decoding characters only when the first byte that is not ASCII
/// whitespace is not ASCII either.
fn is_blank(text: &str) -> bool {
    match text.bytes().find(|b| !matches!(b, b' ' | b'\t'..=b'\r')) {
        None => true,
        Some(byte) if byte.is_ascii() => false,
        Some(_) => text.trim().is_empty(),
    }
}

/// A type name with its article, for error messages: "a string", "an object", "null".
pub(crate) fn article(type_name: &str) -> String {
    match type_name {
        "missing" | "null" => type_name.to_owned(),
        "array" | "object" => format!("an {type_name}"),
        other => format!("a {other}"),
    }
}

pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn error_at(source: &str, byte: usize, message: String) -> TemplateError {
    TemplateError {
        position: source[..byte].chars().count() + 1,
        message,
    }
}

/// Parses a bare path such as `properties.card.number` or `metadata["order.id"]` (no braces).
pub(crate) fn parse_path(source: &str) -> Result<Path, TemplateError> {
    let mut cursor = Cursor {
        src: source,
        pos: 0,
        end: source.len(),
    };
    let path = cursor.path()?;
    if cursor.pos != cursor.end {
        return Err(cursor.unexpected("\".\" or the end of the path"));
    }
    Ok(path)
}

/// The byte offset of the `}}` closing an expression, skipping quoted literals.
fn find_close(source: &str, from: usize) -> Option<usize> {
    let bytes = source.as_bytes();
    let mut quote = None;
    let mut i = from;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'}' && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

/// Parses one expression between `{{` and `}}` (byte range `pos..end` of `src`).
struct Cursor<'s> {
    src: &'s str,
    pos: usize,
    end: usize,
}

impl<'s> Cursor<'s> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..self.end].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'s str {
        let src = self.src;
        let start = self.pos;
        while self.peek().is_some_and(&keep) {
            self.bump();
        }
        &src[start..self.pos]
    }

    fn error(&self, byte: usize, message: impl Into<String>) -> TemplateError {
        error_at(self.src, byte, message.into())
    }

    fn unexpected(&self, expected: &str) -> TemplateError {
        match self.peek() {
            Some(c) => self.error(
                self.pos,
                format!("unexpected \"{c}\" (expected {expected})"),
            ),
            None => self.error(
                self.pos,
                format!("unexpected \"}}}}\" (expected {expected})"),
            ),
        }
    }

    fn expression(&mut self, open: usize) -> Result<Expr, TemplateError> {
        self.skip_whitespace();
        if self.pos == self.end {
            return Err(self.error(
                open,
                "empty \"{{ }}\" (expected a path such as {{id}}, or {{.}} for the whole body)",
            ));
        }
        let position = self.src[..self.pos].chars().count() + 1;
        let variable = self.variable()?;
        let mut filters = Vec::new();
        loop {
            self.skip_whitespace();
            match self.peek() {
                None => break,
                Some('|') => {
                    self.bump();
                    self.skip_whitespace();
                    filters.push(self.filter()?);
                }
                Some(_) => return Err(self.unexpected("\"|\" or \"}}\"")),
            }
        }
        Ok(Expr {
            variable,
            filters: filters.into(),
            position,
            slot: None,
        })
    }

    fn variable(&mut self) -> Result<Variable, TemplateError> {
        match self.peek() {
            Some('.') => {
                self.bump();
                if self.at_expression_end() {
                    Ok(Variable::Body(Path::default()))
                } else {
                    Ok(Variable::Body(self.path()?))
                }
            }
            Some('$') => {
                let start = self.pos;
                self.bump();
                let name = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
                match name {
                    "item" => {
                        if self.at_expression_end() {
                            return Ok(Variable::Item(Path::default()));
                        }
                        if self.peek() == Some('.') {
                            self.bump();
                        }
                        Ok(Variable::Item(self.path()?))
                    }
                    "header" => Ok(Variable::Header(
                        self.name("$header")?.to_ascii_lowercase().into(),
                    )),
                    "query" => Ok(Variable::Query(self.name("$query")?.into())),
                    other => Err(self.error(
                        start,
                        format!(
                            "unknown variable \"${other}\" (expected $item, $header or $query)"
                        ),
                    )),
                }
            }
            _ => Ok(Variable::Body(self.path()?)),
        }
    }

    fn at_expression_end(&self) -> bool {
        self.peek().is_none_or(|c| c.is_whitespace() || c == '|')
    }

    /// A header or query parameter name: `.Name` or `["Name"]`.
    fn name(&mut self, variable: &str) -> Result<String, TemplateError> {
        let name = match self.peek() {
            Some('.') => {
                self.bump();
                self.take_while(|c| !c.is_whitespace() && c != '|')
                    .to_owned()
            }
            Some('[') => {
                self.bump();
                let name = self.quoted()?;
                self.expect(']')?;
                name
            }
            _ => String::new(),
        };
        if name.is_empty() {
            return Err(self.error(
                self.pos,
                format!("{variable} needs a name, e.g. {variable}.X-Event-Type"),
            ));
        }
        Ok(name)
    }

    fn path(&mut self) -> Result<Path, TemplateError> {
        let mut segments = Vec::new();
        loop {
            if self.peek() == Some('[') {
                self.bump();
                let key = match self.peek() {
                    Some('"' | '\'') => self.quoted()?,
                    Some(c) if c.is_ascii_digit() => {
                        self.take_while(|c| c.is_ascii_digit()).to_owned()
                    }
                    _ => return Err(self.unexpected("a quoted key or an index inside [ ]")),
                };
                self.expect(']')?;
                segments.push(Segment::new(&key));
            } else {
                let start = self.pos;
                let key = self.take_while(is_key_char);
                if key.is_empty() {
                    return Err(match self.peek() {
                        Some(c) if c != '.' && !c.is_whitespace() && c != '|' => {
                            self.unexpected("a field name")
                        }
                        _ => self.error(start, "empty path segment (expected a field name)"),
                    });
                }
                segments.push(Segment::new(key));
            }
            match self.peek() {
                Some('.') => {
                    self.bump();
                    if self.peek() == Some('[') {
                        // `a.[0]` reads as `a[0]`.
                        continue;
                    }
                }
                Some('[') => {}
                _ => break,
            }
        }
        Ok(Path {
            segments: segments.into(),
        })
    }

    fn expect(&mut self, wanted: char) -> Result<(), TemplateError> {
        if self.peek() == Some(wanted) {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(&format!("\"{wanted}\"")))
        }
    }

    /// A single- or double-quoted string with `\\` escapes; the cursor is on the quote.
    fn quoted(&mut self) -> Result<String, TemplateError> {
        let start = self.pos;
        let Some(quote) = self.bump() else {
            return Err(self.unexpected("a quoted string"));
        };
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error(start, "unterminated quoted string")),
                Some('\\') => match self.bump() {
                    Some(c) => out.push(c),
                    None => return Err(self.error(start, "unterminated quoted string")),
                },
                Some(c) if c == quote => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn filter(&mut self) -> Result<Filter, TemplateError> {
        let start = self.pos;
        let name = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        if name.is_empty() {
            return Err(self.unexpected(&format!("a filter name: {FILTER_NAMES}")));
        }
        let filter = match name {
            "default" => None,
            "lower" => Some(Filter::Lower),
            "trim" => Some(Filter::Trim),
            "sha256" => Some(Filter::Sha256),
            other => {
                return Err(self.error(
                    start,
                    format!("unknown filter \"{other}\" (expected {FILTER_NAMES})"),
                ));
            }
        };
        self.skip_whitespace();
        match filter {
            Some(filter) => {
                if self.peek() == Some(':') {
                    return Err(self.error(self.pos, format!("filter {name} takes no argument")));
                }
                Ok(filter)
            }
            None => {
                if self.peek() != Some(':') {
                    return Err(self.error(
                        self.pos,
                        "filter default needs a value, e.g. default: \"unknown\"",
                    ));
                }
                self.bump();
                self.skip_whitespace();
                Ok(Filter::Default(self.literal()?))
            }
        }
    }

    fn literal(&mut self) -> Result<Value, TemplateError> {
        if matches!(self.peek(), Some('"' | '\'')) {
            return Ok(Value::String(self.quoted()?));
        }
        let start = self.pos;
        let word = self.take_while(|c| !c.is_whitespace() && c != '|');
        let parsed = match word {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ if word.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
                serde_json::from_str::<serde_json::Number>(word)
                    .ok()
                    .map(Value::Number)
            }
            _ => None,
        };
        parsed.ok_or_else(|| {
            self.error(
                start,
                "default needs a quoted string, a number, true or false, e.g. default: \"unknown\"",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use serde_json::json;

    use super::*;

    const HEADERS: [(&str, &str); 2] = [
        ("X-GitHub-Event", "push"),
        ("Content-Type", "application/json"),
    ];

    fn eval(source: &str, body: &Value) -> Option<Value> {
        let request = Request::new(body, Timestamp::UNIX_EPOCH)
            .with_headers(&HEADERS)
            .with_query("foo=bar&n=7&foo=ignored");
        Template::parse(source)
            .unwrap()
            .evaluate(&request.scope())
            .into_json()
    }

    fn eval_item(source: &str, body: &Value, item: &Value) -> Option<Value> {
        let request = Request::new(body, Timestamp::UNIX_EPOCH);
        let scope = request.scope().with_item(item);
        Template::parse(source)
            .unwrap()
            .evaluate(&scope)
            .into_json()
    }

    fn parse_error(source: &str) -> String {
        Template::parse(source).unwrap_err().to_string()
    }

    #[test]
    fn render_evaluates_for_tools() {
        let body = json!({"a": {"b": [1, 2]}});
        let request = Request::new(&body, Timestamp::UNIX_EPOCH);
        assert_eq!(
            Template::parse("{{a.b}}").unwrap().render(&request),
            Some(json!([1, 2]))
        );
        assert_eq!(Template::parse("{{zz}}").unwrap().render(&request), None);
    }

    #[test]
    fn nested_property_is_read() {
        let body = json!({"data": {"object": {"customer": "cus_1"}}});
        assert_eq!(
            eval("{{data.object.customer}}", &body),
            Some(json!("cus_1"))
        );
    }

    #[test]
    fn lone_variable_keeps_number_type() {
        assert_eq!(
            eval("{{amount}}", &json!({"amount": 2000})),
            Some(json!(2000))
        );
        assert_eq!(eval("{{ratio}}", &json!({"ratio": 0.5})), Some(json!(0.5)));
    }

    #[test]
    fn lone_variable_keeps_object_array_and_boolean_types() {
        let body = json!({"meta": {"a": 1}, "tags": ["x"], "paid": true});
        assert_eq!(eval("{{meta}}", &body), Some(json!({"a": 1})));
        assert_eq!(eval("{{tags}}", &body), Some(json!(["x"])));
        assert_eq!(eval("{{paid}}", &body), Some(json!(true)));
    }

    #[test]
    fn array_index_reads_an_element() {
        let body = json!({"items": [{"sku": "A"}, {"sku": "B"}]});
        assert_eq!(eval("{{items.1.sku}}", &body), Some(json!("B")));
        assert_eq!(eval("{{items[0].sku}}", &body), Some(json!("A")));
        assert_eq!(eval("{{items.2.sku}}", &body), None);
    }

    #[test]
    fn numeric_key_on_an_object_is_a_key_not_an_index() {
        let body = json!({"byYear": {"2024": 3, "07": 1}});
        assert_eq!(eval("{{byYear.2024}}", &body), Some(json!(3)));
        assert_eq!(eval("{{byYear.07}}", &body), Some(json!(1)));
    }

    #[test]
    fn leading_zero_is_not_an_array_index() {
        assert_eq!(eval("{{items.01}}", &json!({"items": [1, 2]})), None);
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let body = json!({});
        assert_eq!(
            eval("{{$header.X-GitHub-Event}}", &body),
            Some(json!("push"))
        );
        assert_eq!(
            eval("{{$header.x-github-event}}", &body),
            Some(json!("push"))
        );
        assert_eq!(
            eval("{{$header[\"X-GITHUB-EVENT\"]}}", &body),
            Some(json!("push"))
        );
        assert_eq!(eval("{{$header.X-Missing}}", &body), None);
    }

    #[test]
    fn query_parameter_first_value_wins() {
        let body = json!({});
        assert_eq!(eval("{{$query.foo}}", &body), Some(json!("bar")));
        // Query values are text, even when they look like numbers.
        assert_eq!(eval("{{$query.n}}", &body), Some(json!("7")));
        assert_eq!(eval("{{$query.nope}}", &body), None);
    }

    #[test]
    fn dot_is_the_whole_body() {
        let body = json!({"a": [1, 2]});
        assert_eq!(eval("{{.}}", &body), Some(body.clone()));
        assert_eq!(eval("{{ . }}", &body), Some(body.clone()));
        // jq habit: a leading dot before a path is accepted.
        assert_eq!(eval("{{.a.1}}", &body), Some(json!(2)));
    }

    #[test]
    fn item_reads_the_current_element() {
        let body = json!({"batch": "b-1"});
        let item = json!({"sku": "A", "qty": 2});
        assert_eq!(eval_item("{{$item.sku}}", &body, &item), Some(json!("A")));
        assert_eq!(eval_item("{{$item}}", &body, &item), Some(item.clone()));
        assert_eq!(
            eval_item("{{$item[\"qty\"]}}", &body, &item),
            Some(json!(2))
        );
        assert_eq!(
            eval_item("{{batch}}-{{$item.sku}}", &body, &item),
            Some(json!("b-1-A"))
        );
    }

    #[test]
    fn text_around_variables_concatenates_to_a_string() {
        let body = json!({"id": 42, "kind": "order", "ok": true, "f": 1.5});
        assert_eq!(eval("order-{{id}}", &body), Some(json!("order-42")));
        assert_eq!(
            eval("{{kind}}:{{id}}:{{ok}}:{{f}}", &body),
            Some(json!("order:42:true:1.5"))
        );
        assert_eq!(eval(" {{id}}", &body), Some(json!(" 42")));
    }

    #[test]
    fn objects_concatenate_as_compact_json() {
        assert_eq!(
            eval("m={{m}}", &json!({"m": {"a": [1]}})),
            Some(json!("m={\"a\":[1]}"))
        );
    }

    #[test]
    fn concatenation_with_a_missing_variable_is_missing() {
        assert_eq!(eval("order-{{id}}", &json!({})), None);
        assert_eq!(
            eval("order-{{id | default: \"\"}}", &json!({})),
            Some(json!("order-"))
        );
    }

    #[test]
    fn value_without_braces_is_a_static_string() {
        assert_eq!(eval("web", &json!({"web": 1})), Some(json!("web")));
        assert_eq!(eval("42", &json!({})), Some(json!("42")));
        assert_eq!(eval("a }} b", &json!({})), Some(json!("a }} b")));
        assert!(Template::parse("web").unwrap().is_static());
    }

    #[test]
    fn null_is_treated_as_missing() {
        assert_eq!(eval("{{tax}}", &json!({"tax": null})), None);
        assert_eq!(
            eval("{{tax | default: 0}}", &json!({"tax": null})),
            Some(json!(0))
        );
    }

    #[test]
    fn default_applies_when_missing_null_or_empty() {
        let body = json!({"blank": "", "none": null, "list": [], "set": "x"});
        for path in ["missing", "blank", "none", "list"] {
            let source = format!("{{{{{path} | default: \"unknown\"}}}}");
            assert_eq!(eval(&source, &body), Some(json!("unknown")), "{path}");
        }
        assert_eq!(
            eval("{{set | default: \"unknown\"}}", &body),
            Some(json!("x"))
        );
    }

    #[test]
    fn default_accepts_single_quotes_numbers_and_booleans() {
        let body = json!({});
        assert_eq!(eval("{{a | default: 'n/a'}}", &body), Some(json!("n/a")));
        assert_eq!(eval("{{a | default: -1.5}}", &body), Some(json!(-1.5)));
        assert_eq!(eval("{{a | default: false}}", &body), Some(json!(false)));
        assert_eq!(
            eval("{{a | default: \"say \\\"hi\\\" | }}\"}}", &body),
            Some(json!("say \"hi\" | }}"))
        );
    }

    #[test]
    fn lower_lowercases_text_and_leaves_numbers() {
        let body = json!({"e": "Ada@Example.COM", "n": 5, "s": "ÉCOLE"});
        assert_eq!(eval("{{e | lower}}", &body), Some(json!("ada@example.com")));
        assert_eq!(eval("{{n | lower}}", &body), Some(json!(5)));
        assert_eq!(eval("{{s | lower}}", &body), Some(json!("école")));
        assert_eq!(
            eval("{{$header.X-GitHub-Event | lower}}", &body),
            Some(json!("push"))
        );
    }

    #[test]
    fn trim_removes_surrounding_whitespace() {
        let body = json!({"e": "  a b \n"});
        assert_eq!(eval("{{e | trim}}", &body), Some(json!("a b")));
        assert_eq!(
            eval("{{e | default: \"x\" | trim | lower}}", &body),
            Some(json!("a b"))
        );
    }

    #[test]
    fn sha256_is_lowercase_hex_of_the_text() {
        let body = json!({"s": "abc", "n": 42});
        assert_eq!(
            eval("{{s | sha256}}", &body),
            Some(json!(
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            ))
        );
        // Numbers hash as their JSON text.
        assert_eq!(
            eval("{{n | sha256}}", &body),
            eval("{{t | default: \"42\" | sha256}}", &body)
        );
        assert_eq!(eval("{{missing | sha256}}", &body), None);
    }

    #[test]
    fn filters_apply_left_to_right() {
        let body = json!({"e": " Ada@Example.com "});
        let normalised = eval("{{e | trim | lower | sha256}}", &body);
        assert_eq!(
            normalised,
            Some(Value::String(sha256_hex(b"ada@example.com")))
        );
        assert_ne!(eval("{{e | sha256 | trim}}", &body), normalised);
    }

    #[test]
    fn bracket_syntax_reads_keys_with_dots_and_spaces() {
        let body = json!({"metadata": {"order.ref": "A-1", "two words": 2, "q\"uote": 3}});
        assert_eq!(
            eval("{{metadata[\"order.ref\"]}}", &body),
            Some(json!("A-1"))
        );
        assert_eq!(eval("{{metadata['two words']}}", &body), Some(json!(2)));
        assert_eq!(eval("{{metadata[\"q\\\"uote\"]}}", &body), Some(json!(3)));
        assert_eq!(
            eval("{{[\"metadata\"].[\"order.ref\"]}}", &body),
            Some(json!("A-1"))
        );
    }

    #[test]
    fn whitespace_inside_braces_is_ignored() {
        assert_eq!(
            eval("{{   id   |   lower   }}", &json!({"id": "A"})),
            Some(json!("a"))
        );
    }

    #[test]
    fn path_display_round_trips_through_the_parser() {
        for source in [
            "a.b.0.c",
            "metadata[\"order.ref\"]",
            "[\"$ref\"].x",
            "a[\"\"]",
            "[\"we\\\"ird\"]",
        ] {
            let path = parse_path(source).unwrap();
            let shown = path.to_string();
            assert_eq!(parse_path(&shown).unwrap(), path, "{source} -> {shown}");
        }
        assert_eq!(
            parse_path("metadata[\"order.ref\"]").unwrap().to_string(),
            "metadata[\"order.ref\"]"
        );
    }

    #[test]
    fn json_pointer_escapes_tilde_and_slash() {
        let path = parse_path("a[\"b/c\"][\"d~e\"].0").unwrap();
        assert_eq!(path.to_json_pointer(), "/a/b~1c/d~0e/0");
        assert_eq!(Path::default().to_json_pointer(), "");
    }

    #[test]
    fn unknown_filter_names_the_position_and_the_choices() {
        assert_eq!(
            parse_error("{{user.email | lowr}}"),
            "position 16: unknown filter \"lowr\" (expected default, lower, trim, sha256)"
        );
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        assert_eq!(
            parse_error("ünïcödé {{x | nope}}").split(':').next(),
            Some("position 15")
        );
    }

    #[test]
    fn unclosed_braces_point_at_the_opening() {
        assert_eq!(
            parse_error("order-{{id"),
            "position 7: unclosed \"{{\" (expected \"}}\")"
        );
    }

    #[test]
    fn empty_expression_is_an_error() {
        assert!(parse_error("a{{  }}").starts_with("position 2: empty"));
    }

    #[test]
    fn unknown_variable_is_an_error() {
        assert_eq!(
            parse_error("{{$headers.x}}"),
            "position 3: unknown variable \"$headers\" (expected $item, $header or $query)"
        );
    }

    #[test]
    fn empty_path_segments_are_errors() {
        assert_eq!(
            parse_error("{{a..b}}"),
            "position 5: empty path segment (expected a field name)"
        );
        assert_eq!(
            parse_error("{{a. | lower}}"),
            "position 5: empty path segment (expected a field name)"
        );
    }

    #[test]
    fn malformed_filters_are_errors() {
        assert_eq!(
            parse_error("{{a | lower: 1}}"),
            "position 12: filter lower takes no argument"
        );
        assert!(parse_error("{{a | default}}").contains("filter default needs a value"));
        assert!(
            parse_error("{{a | default: unknown}}")
                .starts_with("position 16: default needs a quoted string")
        );
        assert!(parse_error("{{a | }}").contains("expected a filter name"));
        assert!(parse_error("{{a | default: \"x}}").contains("unclosed"));
    }

    #[test]
    fn junk_after_a_path_is_an_error() {
        assert_eq!(
            parse_error("{{a b}}"),
            "position 5: unexpected \"b\" (expected \"|\" or \"}}\")"
        );
        assert_eq!(
            parse_error("{{a[x]}}"),
            "position 5: unexpected \"x\" (expected a quoted key or an index inside [ ])"
        );
    }

    #[test]
    fn header_without_a_name_is_an_error() {
        assert!(parse_error("{{$header}}").contains("$header needs a name"));
    }

    #[test]
    fn nested_braces_are_an_error() {
        assert!(parse_error("{{a{{b}}}}").starts_with("position 4: unexpected \"{\""));
    }
}
