//! What a template can read: the parsed body, the request headers and query, the receive time.

use std::borrow::Cow;

use jiff::Timestamp;
use serde_json::Value;

use super::projection::{Kept, ProjectedBody, Projection};
use super::template::Found;

/// Header lookup. Implemented for `hyper::HeaderMap` (what the ingest has) and for slices of
/// pairs (what tests and `hookgate send` have).
pub trait Headers {
    /// The first value of the header; `name` is lowercase. Values that are not visible ASCII
    /// are treated as absent.
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for hyper::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name)?.to_str().ok()
    }
}

impl Headers for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| *value)
    }
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

/// No headers at all.
impl Headers for () {
    fn header(&self, _: &str) -> Option<&str> {
        None
    }
}

/// The decoded query string; the first value wins for repeated parameters.
#[derive(Clone, Debug, Default)]
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    /// Decodes `a=1&b=two` (without the leading `?`).
    pub fn parse(raw: &'a str) -> Self {
        Self {
            pairs: form_urlencoded::parse(raw.as_bytes()).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| &**value)
    }
}

/// The body of a projected request, whose values are all in slots.
static NO_BODY: Value = Value::Null;

/// One inbound request, as the mapping engine sees it.
pub struct Request<'a> {
    pub(crate) body: &'a Value,
    /// A body parsed into values by slot, with the projection that knows where each
    /// mapping's paths are among them; `body` is then `null`.
    pub(crate) projected: Option<(&'a Projection, &'a [Option<Kept<'a>>])>,
    pub(crate) headers: &'a dyn Headers,
    pub(crate) query: Query<'a>,
    pub(crate) received_at: Timestamp,
}

impl<'a> Request<'a> {
    /// A request with this body, no headers and no query. `received_at` is the default event
    /// timestamp and the event's `receivedAt`; the engine never reads the clock itself.
    pub fn new(body: &'a Value, received_at: Timestamp) -> Self {
        Self {
            body,
            projected: None,
            headers: &(),
            query: Query::default(),
            received_at,
        }
    }

    /// A request whose body `projection` parsed ([`Projection::parse_values`]). The mappings it
    /// is then mapped with must be the ones `projection` was made [`Projection::of`], in the
    /// same order: their paths are found by their place in that list.
    pub fn projected(
        projection: &'a Projection,
        body: &'a ProjectedBody<'_>,
        received_at: Timestamp,
    ) -> Self {
        match body {
            ProjectedBody::Tree(tree) => Self::new(tree, received_at),
            ProjectedBody::Values(values) => Self {
                projected: Some((projection, values)),
                ..Self::new(&NO_BODY, received_at)
            },
        }
    }

    pub fn with_headers(mut self, headers: &'a dyn Headers) -> Self {
        self.headers = headers;
        self
    }

    /// The raw query string, without `?`.
    pub fn with_query(mut self, raw: &'a str) -> Self {
        self.query = Query::parse(raw);
        self
    }

    pub(crate) fn scope(&self) -> Scope<'_> {
        Scope {
            body: self.body,
            values: &[],
            item: None,
            headers: self.headers,
            query: &self.query,
        }
    }
}

/// The evaluation context: a request plus, inside forEach, the current element.
#[derive(Clone, Copy)]
pub(crate) struct Scope<'a> {
    pub(crate) body: &'a Value,
    /// Body values resolved ahead by a mapping's lookups, read by the slots of its templates.
    pub(crate) values: &'a [Found<'a>],
    pub(crate) item: Option<&'a Value>,
    headers: &'a dyn Headers,
    query: &'a Query<'a>,
}

impl<'a> Scope<'a> {
    /// The scope for templates whose slots index `values`.
    pub(crate) fn with_values(self, values: &'a [Found<'a>]) -> Self {
        Self { values, ..self }
    }

    pub(crate) fn with_item(self, item: &'a Value) -> Self {
        Self {
            item: Some(item),
            ..self
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.header(name)
    }

    pub(crate) fn query(&self, name: &str) -> Option<&'a str> {
        self.query.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_header_map_lookup_is_case_insensitive_and_skips_non_ascii_values() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("X-GitHub-Event", "push".parse().unwrap());
        headers.insert(
            "X-Bytes",
            hyper::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(headers.header("x-github-event"), Some("push"));
        assert_eq!(headers.header("x-bytes"), None);
        assert_eq!(headers.header("x-missing"), None);
    }

    #[test]
    fn query_is_percent_decoded_and_first_value_wins() {
        let query = Query::parse("to=%2B1415&to=second&msg=a+b");
        assert_eq!(query.get("to"), Some("+1415"));
        assert_eq!(query.get("msg"), Some("a b"));
        assert_eq!(query.get("nope"), None);
    }
}
