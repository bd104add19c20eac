//! The canonical event (DESIGN §3) and its CloudEvents 1.0 JSON form.

use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use serde_json::{Map, Value};

use super::projection::Members;
use super::template::Found;

/// One event produced by a mapping, after identity checks and privacy rules.
///
/// `'m` is the life of the compiled mapping whose names the event borrows
/// ([`MappedEvent::into_owned`] ends it).
#[derive(Clone, Debug, PartialEq)]
pub struct MappedEvent<'m> {
    /// The Mapping that produced it.
    pub mapping: Name<'m>,
    /// The event name, which becomes the CloudEvents `type`; the Mapping's own when it is a
    /// constant, as most names are.
    pub name: Name<'m>,
    /// The mapped event id, or a generated UUID v4 (see `id_generated`).
    pub id: String,
    /// True when no id was mapped: such events cannot be deduplicated.
    pub id_generated: bool,
    pub visitor_id: Option<String>,
    pub external_id: Option<String>,
    pub email: Option<String>,
    /// When the event happened: the mapped timestamp, else `received_at`.
    pub timestamp: Timestamp,
    pub received_at: Timestamp,
    pub properties: Properties,
}

/// A name an event has from its mapping: borrowed from the compiled mapping while the request
/// is served, rather than a clone of its `Arc`, so that serving a request writes no reference
/// count that every worker's requests to the mapping write too (a clone and a drop per name
/// and event before). Owned when the name was made for the event (a templated event name) or
/// the event outlives the request.
#[derive(Clone, Debug)]
pub enum Name<'m> {
    Mapping(&'m Arc<str>),
    Owned(Arc<str>),
}

impl Name<'_> {
    fn handle(&self) -> &Arc<str> {
        match self {
            Name::Mapping(name) => name,
            Name::Owned(name) => name,
        }
    }

    /// The name as a handle of its own, sharing the mapping's when it is the mapping's.
    pub fn to_shared(&self) -> Arc<str> {
        Arc::clone(self.handle())
    }

    /// Whether `other` is this very name (not only an equal one): the recent-events list
    /// keeps its handle then, and writes no reference count.
    pub fn is(&self, other: &Arc<str>) -> bool {
        Arc::ptr_eq(self.handle(), other)
    }

    pub fn into_owned(self) -> Name<'static> {
        Name::Owned(self.to_shared())
    }
}

impl std::ops::Deref for Name<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        self.handle()
    }
}

impl PartialEq for Name<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl From<&str> for Name<'static> {
    fn from(name: &str) -> Self {
        Name::Owned(name.into())
    }
}

/// An event's properties, held as the compact JSON object the sinks send: keys once each, in
/// byte order, as a `serde_json::Map` writes them. The engine writes it straight from the
/// body's values, so an event builds no map of its own (a map, its keys and its values were
/// a third of the engine's cost per event) and a sink copies it as it is.
#[derive(Clone, PartialEq, Eq)]
pub struct Properties(Vec<u8>);

impl Properties {
    /// `{}`.
    pub fn new() -> Self {
        Self(b"{}".to_vec())
    }

    pub fn from_map(map: &Map<String, Value>) -> Self {
        let mut out = Vec::new();
        json_object(&mut out, map);
        Self(out)
    }

    /// The JSON object text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == b"{}"
    }

    /// The properties as a map: for checks and tools, not the per-event path.
    pub fn to_map(&self) -> Map<String, Value> {
        // Always an object: written by this module from JSON values and strings.
        serde_json::from_slice(&self.0).unwrap_or_default()
    }
}

impl Default for Properties {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Map<String, Value>> for Properties {
    fn from(map: Map<String, Value>) -> Self {
        Self::from_map(&map)
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl Serialize for Properties {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Generic serialisers (a `Value`, binary-mode checks) get the map; the sinks copy the
        // bytes instead.
        self.to_map().serialize(serializer)
    }
}

/// Writes a properties object entry by entry, in the order given (the caller keeps keys sorted
/// and unique).
pub(crate) struct PropertiesWriter {
    out: Vec<u8>,
}

impl PropertiesWriter {
    pub(crate) fn new() -> Self {
        // Room for a handful of short properties without growing.
        let mut out = Vec::with_capacity(128);
        out.push(b'{');
        Self { out }
    }

    pub(crate) fn json(&mut self, key: &str, value: &Value) {
        self.key(key);
        json_value(&mut self.out, value);
    }

    pub(crate) fn text(&mut self, key: &str, text: &str) {
        self.key(key);
        json_str(&mut self.out, text);
    }

    /// A body value as it was found: borrowed or in a tree. Nothing for a missing one.
    pub(crate) fn found(&mut self, key: &str, value: Found<'_>) {
        if value != Found::Missing {
            self.key(key);
            json_found(&mut self.out, value);
        }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(b',');
        }
        json_str(&mut self.out, key);
        self.out.push(b':');
    }

    pub(crate) fn finish(mut self) -> Properties {
        self.out.push(b'}');
        Properties(self.out)
    }
}

/// The CloudEvents `source` of a WebhookSource: `/namespaces/<ns>/webhooksources/<name>`.
/// Built once per route, not per event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSource(Box<str>);

impl EventSource {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self(format!("/namespaces/{namespace}/webhooksources/{name}").into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
impl MappedEvent<'static> {
    /// An event of mapping `m` named `E` with this id and a visitor id, for the tests of what
    /// carries events (sinks, status, answers).
    pub(crate) fn with_id(id: impl Into<String>) -> Self {
        Self {
            mapping: "m".into(),
            name: "E".into(),
            id: id.into(),
            id_generated: false,
            visitor_id: Some("v".into()),
            external_id: None,
            email: None,
            timestamp: Timestamp::UNIX_EPOCH,
            received_at: Timestamp::UNIX_EPOCH,
            properties: Default::default(),
        }
    }
}

impl MappedEvent<'_> {
    /// The event with names of its own, to outlive the mapping it came from.
    pub fn into_owned(self) -> MappedEvent<'static> {
        MappedEvent {
            mapping: self.mapping.into_owned(),
            name: self.name.into_owned(),
            id: self.id,
            id_generated: self.id_generated,
            visitor_id: self.visitor_id,
            external_id: self.external_id,
            email: self.email,
            timestamp: self.timestamp,
            received_at: self.received_at,
            properties: self.properties,
        }
    }

    /// The structured-mode CloudEvent, serialisable without building a `Value`.
    pub fn cloud_event<'e>(&'e self, source: &'e EventSource) -> CloudEvent<'e> {
        CloudEvent {
            event: self,
            source,
        }
    }

    /// The `data` member alone (HTTP binary mode sends it as the body).
    pub fn data(&self) -> EventData<'_> {
        EventData(self)
    }

    /// The CloudEvent as a JSON value.
    pub fn to_cloud_event_value(&self, source: &EventSource) -> Value {
        // Serialising plain strings, maps and timestamps into a Value cannot fail.
        serde_json::to_value(self.cloud_event(source)).unwrap_or(Value::Null)
    }

    /// Appends the CloudEvent as one JSON line (with `\n`), as the stdout sink prints it:
    /// the same bytes as serialising [`MappedEvent::cloud_event`] with serde_json, written
    /// directly. serde_json scans every byte of every string for escapes, the constant keys
    /// included, which was most of the cost of a line; here keys are literals and a string
    /// without `"`, `\\` or control characters is copied as it is.
    pub fn write_json_line(&self, source: &EventSource, out: &mut Vec<u8>) {
        self.write_json(source, out);
        out.push(b'\n');
    }

    /// The structured CloudEvent as JSON, without a line end (NATS messages, HTTP structured
    /// mode); see [`MappedEvent::write_json_line`].
    pub fn write_json(&self, source: &EventSource, out: &mut Vec<u8>) {
        // The event time appears twice (`time`, `data.timestamp`): formatted once.
        let mut time_buffer = [0u8; 32];
        let time = rfc3339(self.timestamp, &mut time_buffer);
        out.extend_from_slice(br#"{"specversion":"1.0","id":"#);
        json_str(out, &self.id);
        out.extend_from_slice(br#","source":"#);
        json_str(out, source.as_str());
        out.extend_from_slice(br#","type":"#);
        json_str(out, &self.name);
        out.extend_from_slice(br#","time":"#);
        json_time(out, time, self.timestamp);
        out.extend_from_slice(br#","datacontenttype":"application/json","data":"#);
        self.write_data(out, time);
        out.push(b'}');
    }

    /// The `data` member alone as JSON (HTTP binary mode's body); the same bytes as
    /// serialising [`MappedEvent::data`] with serde_json.
    pub fn write_data_json(&self, out: &mut Vec<u8>) {
        let mut time_buffer = [0u8; 32];
        self.write_data(out, rfc3339(self.timestamp, &mut time_buffer));
    }

    fn write_data(&self, out: &mut Vec<u8>, time: Option<&str>) {
        out.extend_from_slice(br#"{"event":"#);
        json_str(out, &self.name);
        out.extend_from_slice(br#","eventId":"#);
        json_str(out, &self.id);
        for (key, value) in [
            (&br#","visitorId":"#[..], &self.visitor_id),
            (br#","externalId":"#, &self.external_id),
            (br#","email":"#, &self.email),
        ] {
            out.extend_from_slice(key);
            match value {
                Some(text) => json_str(out, text),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(br#","timestamp":"#);
        json_time(out, time, self.timestamp);
        out.extend_from_slice(br#","properties":"#);
        out.extend_from_slice(self.properties.as_bytes());
        out.extend_from_slice(br#","receivedAt":"#);
        let mut buffer = [0u8; 32];
        json_time(
            out,
            rfc3339(self.received_at, &mut buffer),
            self.received_at,
        );
        out.extend_from_slice(br#","mapping":"#);
        json_str(out, &self.mapping);
        out.push(b'}');
    }
}

/// `text` as a JSON string: copied as it is when nothing needs escaping, else through serde.
pub(crate) fn json_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    if !needs_escape(bytes) {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
    } else {
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Whether `bytes` hold a `"`, `\\` or control character, the only bytes serde_json escapes.
/// Eight bytes at a time, the last word overlapping the one before, and shorter strings read
/// as two overlapping halves: most strings an event writes are keys and values of a few
/// bytes, where a loop over the bytes cost more than copying them.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    const SPACES: u64 = u64::from_ne_bytes([0x20; 8]);
    // The high bit of a byte is set where it is zero after the xor (or below 0x20); borrows
    // can only add false positives above a true one, so a word has one exactly when it has a
    // stop byte.
    let stops = |word: u64| {
        let zero = |v: u64| v.wrapping_sub(ONES) & !v;
        (zero(word ^ QUOTES) | zero(word ^ BACKSLASHES) | (word.wrapping_sub(SPACES) & !word))
            & HIGHS
            != 0
    };
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    let half = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
    let len = bytes.len();
    match len {
        0 => false,
        1..4 => {
            // First, middle and last byte cover one to three; the rest is a letter.
            let three = u64::from(bytes[0])
                | u64::from(bytes[len / 2]) << 8
                | u64::from(bytes[len - 1]) << 16;
            stops(three | 0x6161_6161_6100_0000)
        }
        4..8 => stops(u64::from(half(0)) | u64::from(half(len - 4)) << 32),
        _ => (0..len - 8).step_by(8).any(|at| stops(word(at))) || stops(word(len - 8)),
    }
}

/// `at` as a JSON string: `formatted` (from [`rfc3339`]; digits and separators, nothing to
/// escape) or, for times it does not format, through serde.
fn json_time(out: &mut Vec<u8>, formatted: Option<&str>, at: Timestamp) {
    match formatted {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        None => {
            let _ = serde_json::to_writer(&mut *out, &Rfc3339(at));
        }
    }
}

fn json_object(out: &mut Vec<u8>, object: &Map<String, Value>) {
    json_entries(
        out,
        object.iter().map(|(key, value)| (key.as_str(), value)),
        json_value,
    );
}

/// [`super::projection::Kept::Members`] as compact JSON, as [`json_object`] writes the same object as a map.
pub(crate) fn json_members(out: &mut Vec<u8>, members: &Members<'_>) {
    let entries = members.iter().map(|(key, value)| (*key, value.found()));
    json_entries(out, entries, json_found);
}

fn json_found(out: &mut Vec<u8>, value: Found<'_>) {
    match value {
        Found::Json(value) => json_value(out, value),
        Found::Text(text) => json_str(out, text),
        Found::Members(members) => json_members(out, members),
        Found::Missing => out.extend_from_slice(b"null"),
    }
}

/// An object of `entries`, each value written by `value`.
fn json_entries<'k, V>(
    out: &mut Vec<u8>,
    entries: impl Iterator<Item = (&'k str, V)>,
    value: impl Fn(&mut Vec<u8>, V),
) {
    out.push(b'{');
    for (i, (key, entry)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, key);
        out.push(b':');
        value(out, entry);
    }
    out.push(b'}');
}

fn json_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => json_str(out, text),
        Value::Object(inner) => json_object(out, inner),
        // Numbers, literals and arrays as serde_json writes them; cannot fail into a Vec.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// A [`MappedEvent`] in CloudEvents 1.0 structured JSON form.
pub struct CloudEvent<'e> {
    event: &'e MappedEvent<'e>,
    source: &'e EventSource,
}

impl Serialize for CloudEvent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut s = serializer.serialize_struct("CloudEvent", 7)?;
        s.serialize_field("specversion", "1.0")?;
        s.serialize_field("id", &e.id)?;
        s.serialize_field("source", self.source.as_str())?;
        s.serialize_field("type", &*e.name)?;
        s.serialize_field("time", &Rfc3339(e.timestamp))?;
        s.serialize_field("datacontenttype", "application/json")?;
        s.serialize_field("data", &EventData(e))?;
        s.end()
    }
}

/// The CloudEvent `data`: `{event, eventId, visitorId, externalId, email, timestamp,
/// properties, receivedAt, mapping}`. Absent identities are `null`, so consumers see one shape.
pub struct EventData<'e>(&'e MappedEvent<'e>);

impl Serialize for EventData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut s = serializer.serialize_struct("EventData", 9)?;
        s.serialize_field("event", &*e.name)?;
        s.serialize_field("eventId", &e.id)?;
        s.serialize_field("visitorId", &e.visitor_id)?;
        s.serialize_field("externalId", &e.external_id)?;
        s.serialize_field("email", &e.email)?;
        s.serialize_field("timestamp", &Rfc3339(e.timestamp))?;
        s.serialize_field("properties", &e.properties)?;
        s.serialize_field("receivedAt", &Rfc3339(e.received_at))?;
        s.serialize_field("mapping", &*e.mapping)?;
        s.end()
    }
}

/// RFC 3339 in UTC (`2024-03-01T15:00:00Z`, fractional seconds only when present).
struct Rfc3339(Timestamp);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = [0u8; 32];
        match rfc3339(self.0, &mut buffer) {
            Some(text) => serializer.serialize_str(text),
            None => serializer.collect_str(&self.0),
        }
    }
}

/// Writes `at` as jiff's `Display` does (`2024-03-01T15:00:00Z`, the fraction without its
/// trailing zeros) for years 0000–9999 after the epoch; `None` for the rest, which `Display`
/// handles. Every event carries three timestamps, and `Display` through `collect_str` was the
/// larger part of writing one.
fn rfc3339(at: Timestamp, out: &mut [u8; 32]) -> Option<&str> {
    let seconds = at.as_second();
    let nanos = at.subsec_nanosecond();
    if seconds < 0 || nanos < 0 {
        return None;
    }
    let (days, in_day) = (seconds / 86_400, seconds % 86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), by 400-year eras.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    if year > 9_999 {
        return None;
    }
    let mut put = |at: usize, value: i64, width: usize| {
        let mut value = value;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, in_day / 3_600, 2);
    put(14, in_day % 3_600 / 60, 2);
    put(17, in_day % 60, 2);
    let mut len = 19;
    if nanos > 0 {
        let mut digits = 9;
        let mut fraction = i64::from(nanos);
        while fraction % 10 == 0 {
            fraction /= 10;
            digits -= 1;
        }
        put(20, fraction, digits);
        out[19] = b'.';
        len = 20 + digits;
    }
    for (at, byte) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        out[at] = byte;
    }
    out[len] = b'Z';
    std::str::from_utf8(&out[..=len]).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> MappedEvent<'static> {
        MappedEvent {
            mapping: "stripe-invoice-paid".into(),
            name: "Purchase".into(),
            id: "evt_1".into(),
            id_generated: false,
            visitor_id: None,
            external_id: Some("cus_1".into()),
            email: Some("a@example.com".into()),
            timestamp: Timestamp::from_second(1_700_000_000).unwrap(),
            received_at: Timestamp::from_millisecond(1_700_000_001_500).unwrap(),
            properties: json!({"amount": 2000}).as_object().unwrap().clone().into(),
        }
    }

    #[test]
    fn cloud_event_has_the_canonical_shape() {
        let source = EventSource::new("shop", "stripe");
        assert_eq!(
            sample().to_cloud_event_value(&source),
            json!({
                "specversion": "1.0",
                "id": "evt_1",
                "source": "/namespaces/shop/webhooksources/stripe",
                "type": "Purchase",
                "time": "2023-11-14T22:13:20Z",
                "datacontenttype": "application/json",
                "data": {
                    "event": "Purchase",
                    "eventId": "evt_1",
                    "visitorId": null,
                    "externalId": "cus_1",
                    "email": "a@example.com",
                    "timestamp": "2023-11-14T22:13:20Z",
                    "properties": {"amount": 2000},
                    "receivedAt": "2023-11-14T22:13:21.5Z",
                    "mapping": "stripe-invoice-paid",
                }
            })
        );
    }

    #[test]
    fn json_line_is_one_line_matching_the_value() {
        let source = EventSource::new("shop", "stripe");
        let mut out = Vec::new();
        sample().write_json_line(&source, &mut out);
        sample().write_json_line(&source, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let parsed: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(parsed, sample().to_cloud_event_value(&source));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn timestamps_are_written_as_jiff_displays_them() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut checked = 0;
        for i in 0..20_000u64 {
            let seconds = match i % 4 {
                0 => (next() % 253_402_300_800) as i64, // up to 9999-12-31
                1 => 1_700_000_000 + (next() % 100_000_000) as i64,
                2 => (next() % 400) as i64 * 86_400 * 366, // around year and leap-day edges
                _ => -((next() % 1_000_000_000) as i64),   // before the epoch: left to jiff
            };
            let nanos = match i % 3 {
                0 => 0,
                1 => (next() % 1_000) as i32 * 1_000_000,
                _ => (next() % 1_000_000_000) as i32,
            };
            let Ok(at) = Timestamp::new(seconds, nanos) else {
                continue;
            };
            let mut buffer = [0u8; 32];
            match rfc3339(at, &mut buffer) {
                Some(text) => {
                    assert_eq!(text, at.to_string(), "{seconds} s {nanos} ns");
                    checked += 1;
                }
                None => assert!(seconds < 0, "{seconds} s {nanos} ns"),
            }
            let written = serde_json::to_string(&Rfc3339(at)).unwrap();
            assert_eq!(written, format!("\"{at}\""));
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn json_line_is_byte_for_byte_what_serde_json_writes() {
        let source = EventSource::new("shop", "stripe");
        let plain = sample();
        let mut tricky = sample();
        tricky.id = "evt \"quoted\" \\ back/slash".into();
        tricky.name = "Line\nbreak\tand \u{1} control".into();
        tricky.visitor_id = Some("v-é-雪-🙂".into());
        tricky.email = None;
        tricky.mapping = "m\u{7f}".into();
        tricky.timestamp = Timestamp::new(-1, 0).unwrap();
        tricky.received_at = Timestamp::new(1_700_000_000, 120_000_000).unwrap();
        tricky.properties = json!({
            "k\"ey": "v\u{0}", "n": -1.5e300, "big": u64::MAX, "list": ["a\n", {"x": null}],
            "nested": {"deeper": {"t": true, "s": "s\\"}}, "": ""
        })
        .as_object()
        .unwrap()
        .clone()
        .into();
        for event in [plain, tricky] {
            let mut line = Vec::new();
            event.write_json_line(&source, &mut line);
            let mut expected = serde_json::to_vec(&event.cloud_event(&source)).unwrap();
            expected.push(b'\n');
            assert_eq!(
                String::from_utf8(line).unwrap(),
                String::from_utf8(expected).unwrap()
            );
            let mut data = Vec::new();
            event.write_data_json(&mut data);
            assert_eq!(
                String::from_utf8(data).unwrap(),
                serde_json::to_string(&event.data()).unwrap()
            );
        }
    }

    #[test]
    fn needs_escape_finds_a_quote_backslash_or_control_character_anywhere() {
        for len in 0..40 {
            for filler in [b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xc3, 0xff] {
                let mut text = vec![filler; len];
                assert!(!needs_escape(&text), "{filler:#x} x {len}");
                for at in 0..len {
                    for stop in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                        text[at] = stop;
                        assert!(needs_escape(&text), "{stop:#x} at {at} of {len}");
                        text[at] = filler;
                    }
                }
            }
        }
    }

    #[test]
    fn data_alone_serialises_for_binary_mode() {
        let value = serde_json::to_value(sample().data()).unwrap();
        assert_eq!(value["externalId"], "cus_1");
        assert!(value.get("specversion").is_none());
        let mut written = Vec::new();
        sample().write_data_json(&mut written);
        assert_eq!(
            String::from_utf8(written).unwrap(),
            serde_json::to_string(&sample().data()).unwrap()
        );
    }
}
