//! The canonical event (DESIGN §3) and its CloudEvents 1.0 JSON form.

use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use serde_json::{Map, Value};

/// One event produced by a mapping, after identity checks and privacy rules.
#[derive(Clone, Debug, PartialEq)]
pub struct MappedEvent {
    /// The Mapping that produced it.
    pub mapping: Arc<str>,
    /// The event name, which becomes the CloudEvents `type`.
    pub name: String,
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
    pub properties: Map<String, Value>,
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

impl MappedEvent {
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

    /// Appends the CloudEvent as one JSON line (with `\n`), as the stdout sink prints it.
    pub fn write_json_line(&self, source: &EventSource, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail and every key is a string.
        let _ = serde_json::to_writer(&mut *out, &self.cloud_event(source));
        out.push(b'\n');
    }
}

/// A [`MappedEvent`] in CloudEvents 1.0 structured JSON form.
pub struct CloudEvent<'e> {
    event: &'e MappedEvent,
    source: &'e EventSource,
}

impl Serialize for CloudEvent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.event;
        let mut s = serializer.serialize_struct("CloudEvent", 7)?;
        s.serialize_field("specversion", "1.0")?;
        s.serialize_field("id", &e.id)?;
        s.serialize_field("source", self.source.as_str())?;
        s.serialize_field("type", &e.name)?;
        s.serialize_field("time", &Rfc3339(e.timestamp))?;
        s.serialize_field("datacontenttype", "application/json")?;
        s.serialize_field("data", &EventData(e))?;
        s.end()
    }
}

/// The CloudEvent `data`: `{event, eventId, visitorId, externalId, email, timestamp,
/// properties, receivedAt, mapping}`. Absent identities are `null`, so consumers see one shape.
pub struct EventData<'e>(&'e MappedEvent);

impl Serialize for EventData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut s = serializer.serialize_struct("EventData", 9)?;
        s.serialize_field("event", &e.name)?;
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
        serializer.collect_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> MappedEvent {
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
            properties: json!({"amount": 2000}).as_object().unwrap().clone(),
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
    fn data_alone_serialises_for_binary_mode() {
        let value = serde_json::to_value(sample().data()).unwrap();
        assert_eq!(value["externalId"], "cus_1");
        assert!(value.get("specversion").is_none());
    }
}
