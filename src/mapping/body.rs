//! Request bodies into one `serde_json::Value`: JSON, or `application/x-www-form-urlencoded`
//! (Twilio, Slack) as an object of strings.
//!
//! Behaviour worth knowing:
//! - serde_json's recursion limit (128 levels) stays on: deeper documents are a 400, not a stack
//!   overflow.
//! - Numbers are `f64` or 64-bit integers (no `arbitrary_precision`: it slows every parse).
//!   Integers beyond 64 bits become the nearest `f64`, so ids that large lose digits — senders
//!   that use them (Twitter-style ids) also send them as strings. Numbers beyond `f64`
//!   (`1e400`) are a 400.
//! - An empty body is an empty object, so header- and query-only mappings work.

use serde_json::{Map, Value};

/// Why a body could not be read; the message never quotes the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(
        "unsupported content type \"{0}\" (expected application/json or application/x-www-form-urlencoded)"
    )]
    UnsupportedMediaType(String),
    #[error("invalid JSON at line {line} column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
}

impl BodyError {
    /// The HTTP status the ingest answers with (DESIGN §5): 415 or 400.
    pub fn http_status(&self) -> u16 {
        match self {
            BodyError::UnsupportedMediaType(_) => 415,
            BodyError::Json { .. } => 400,
        }
    }
}

/// How a body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Form,
}

/// Decides the format from the `Content-Type` header, sniffing the body when the header is
/// missing or generic (`text/plain`, `application/octet-stream`: AWS SNS, for one, sends JSON
/// as `text/plain`).
pub fn detect_format(content_type: Option<&str>, body: &[u8]) -> Result<BodyFormat, BodyError> {
    let essence = content_type
        .map(|ct| ct.split(';').next().unwrap_or_default().trim())
        .unwrap_or_default();
    let is = |name: &str| essence.eq_ignore_ascii_case(name);
    if is("application/json") || is("text/json") || has_json_suffix(essence) {
        return Ok(BodyFormat::Json);
    }
    if is("application/x-www-form-urlencoded") {
        return Ok(BodyFormat::Form);
    }
    let sniffable = essence.is_empty() || is("text/plain") || is("application/octet-stream");
    if sniffable {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            None | Some(b'{' | b'[') => return Ok(BodyFormat::Json),
            Some(_) if essence.is_empty() && body.contains(&b'=') => return Ok(BodyFormat::Form),
            Some(_) => {}
        }
    }
    let shown: String = essence.chars().take(100).collect();
    Err(BodyError::UnsupportedMediaType(if shown.is_empty() {
        "none".into()
    } else {
        shown
    }))
}

/// `application/cloudevents+json`, `application/vnd.github+json`, ...
fn has_json_suffix(essence: &str) -> bool {
    essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case("+json")
}

/// Parses a body according to its `Content-Type`.
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, BodyError> {
    match detect_format(content_type, body)? {
        BodyFormat::Json => parse_json(body),
        BodyFormat::Form => Ok(parse_form(body)),
    }
}

/// Parses JSON; an empty (or all-whitespace) body is an empty object.
pub fn parse_json(body: &[u8]) -> Result<Value, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(body).map_err(json_error)
}

/// A serde_json error as a [`BodyError`], the position in fields of its own.
pub(crate) fn json_error(e: serde_json::Error) -> BodyError {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    BodyError::Json {
        line: e.line(),
        column: e.column(),
        message: full.strip_suffix(&position).unwrap_or(&full).to_owned(),
    }
}

/// Parses a form body into an object of strings. A repeated key, or one written `key[]`,
/// becomes an array. A `payload` field holding a JSON object or array (Slack interactivity)
/// is replaced by the parsed JSON, so `{{payload.user.id}}` works; if it does not parse it
/// stays a string.
pub fn parse_form(body: &[u8]) -> Value {
    let mut map = Map::new();
    for (key, value) in form_urlencoded::parse(body) {
        let (key, always_array) = match key.strip_suffix("[]") {
            Some(stripped) => (stripped.to_owned(), true),
            None => (key.into_owned(), false),
        };
        let value = if key == "payload" {
            parse_embedded_json(value.into_owned())
        } else {
            Value::String(value.into_owned())
        };
        match map.get_mut(&key) {
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
            None if always_array => {
                map.insert(key, Value::Array(vec![value]));
            }
            None => {
                map.insert(key, value);
            }
        }
    }
    Value::Object(map)
}

fn parse_embedded_json(text: String) -> Value {
    if text.trim_start().starts_with(['{', '['])
        && let Ok(value) = serde_json::from_str(&text)
    {
        return value;
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_content_types_including_suffixes_parse_as_json() {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.github+json",
            "application/cloudevents+json",
        ] {
            assert_eq!(
                parse_body(Some(ct), br#"{"a":1}"#).unwrap(),
                json!({"a": 1}),
                "{ct}"
            );
        }
    }

    #[test]
    fn missing_or_plain_content_type_sniffs_json() {
        assert_eq!(parse_body(None, b" [1,2]").unwrap(), json!([1, 2]));
        assert_eq!(
            parse_body(Some("text/plain"), br#"{"Type":"Notification"}"#).unwrap(),
            json!({"Type": "Notification"})
        );
    }

    #[test]
    fn missing_content_type_with_pairs_sniffs_form() {
        assert_eq!(
            parse_body(None, b"a=1&b=2").unwrap(),
            json!({"a": "1", "b": "2"})
        );
    }

    #[test]
    fn unsupported_content_type_is_415() {
        let err = parse_body(Some("application/xml"), b"<a/>").unwrap_err();
        assert_eq!(err.http_status(), 415);
        assert!(err.to_string().contains("application/xml"), "{err}");
        assert_eq!(
            parse_body(Some("text/plain"), b"hello")
                .unwrap_err()
                .http_status(),
            415
        );
    }

    #[test]
    fn json_syntax_error_reports_line_and_column_without_content() {
        let err = parse_body(
            Some("application/json"),
            b"{\n  \"email\": \"secret@example.com\",\n}",
        )
        .unwrap_err();
        let BodyError::Json {
            line,
            column,
            message,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((*line, *column), (3, 1));
        assert_eq!(message, "trailing comma");
        assert_eq!(err.http_status(), 400);
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        assert_eq!(
            parse_body(Some("application/json"), b"").unwrap(),
            json!({})
        );
        assert_eq!(parse_body(None, b"  \n").unwrap(), json!({}));
    }

    #[test]
    fn nesting_beyond_the_recursion_limit_is_a_400_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let err = parse_json(deep.as_bytes()).unwrap_err();
        assert_eq!(err.http_status(), 400);
        assert!(
            err.to_string().contains("recursion limit exceeded"),
            "{err}"
        );
        // Within the limit is fine.
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse_json(ok.as_bytes()).is_ok());
    }

    #[test]
    fn huge_integers_become_floats_and_out_of_range_numbers_are_400() {
        let value = parse_json(b"{\"id\": 123456789012345678901234567890}").unwrap();
        assert_eq!(value["id"].as_f64(), Some(1.2345678901234568e29));
        assert_eq!(
            parse_json(b"{\"n\": 18446744073709551615}").unwrap()["n"],
            json!(u64::MAX)
        );
        let digits = format!("[{}]", "9".repeat(400));
        let err = parse_json(digits.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("number out of range"), "{err}");
        assert_eq!(parse_json(b"[1e400]").unwrap_err().http_status(), 400);
    }

    #[test]
    fn twilio_form_body_becomes_an_object_of_strings() {
        let body = include_bytes!("testdata/twilio_sms.form");
        let value = parse_body(Some("application/x-www-form-urlencoded"), body).unwrap();
        assert_eq!(value["From"], "+14155550123");
        assert_eq!(value["Body"], "Hello, is my order shipped?");
        assert_eq!(value["NumMedia"], "0");
    }

    #[test]
    fn repeated_form_keys_become_arrays() {
        let value = parse_form(b"tag=a&tag=b&tag=c&one=1&list[]=x");
        assert_eq!(
            value,
            json!({"tag": ["a", "b", "c"], "one": "1", "list": ["x"]})
        );
    }

    #[test]
    fn slack_payload_field_is_parsed_as_json() {
        let body = include_bytes!("testdata/slack_interaction.form");
        let value = parse_body(Some("application/x-www-form-urlencoded"), body).unwrap();
        assert_eq!(value["payload"]["type"], "block_actions");
        assert_eq!(value["payload"]["user"]["id"], "U0123ABC");
    }

    #[test]
    fn unparseable_slack_payload_stays_a_string() {
        assert_eq!(parse_form(b"payload=%7Bnope"), json!({"payload": "{nope"}));
    }
}
