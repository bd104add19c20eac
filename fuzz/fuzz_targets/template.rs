//! Templates and the engine: the first line of the input is a template, the rest a JSON body.
//! The template is parsed and rendered, then used for every field of a Mapping (name, id,
//! identities, timestamp, properties, a `when` condition, optionally `forEach`); whatever
//! compiles is run on the body, and every event it yields must serialise to one line of JSON
//! that parses to the event's serde form.
#![no_main]

use std::collections::BTreeMap;

use hookgate::api::mapping::{EventTemplate, MappingSpec, Properties, SourceRef, WhenCondition};
use hookgate::mapping::{self, CompiledMapping, EventSource, Request, Template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, body) = text.split_once('\n').unwrap_or((text, "{}"));
    let body = mapping::body::parse_json(body.as_bytes())
        .unwrap_or_else(|_| serde_json::json!({"a": [1, {"b": "x"}], "s": "Hi@Example.com"}));
    let headers = [("X-Event", "push"), ("X-Id", "d-1")];
    let received = jiff::Timestamp::UNIX_EPOCH;
    let request = Request::new(&body, received)
        .with_headers(&headers)
        .with_query("a=1&b=%20x");

    if let Ok(parsed) = Template::parse(template) {
        let _ = parsed.render(&request);
    }

    let for_each = template.contains("$item").then(|| template.to_owned());
    let spec = MappingSpec {
        source_ref: SourceRef {
            name: "fuzz".into(),
        },
        when: vec![WhenCondition {
            path: template.to_owned(),
            exists: Some(true),
            ..Default::default()
        }],
        for_each,
        event: EventTemplate {
            name: template.to_owned(),
            id: Some(template.to_owned()),
            visitor_id: Some(template.to_owned()),
            external_id: Some(format!("x-{template}")),
            email: Some(template.to_owned()),
            timestamp: Some(template.to_owned()),
            properties: Some(Properties {
                from: Some(template.to_owned()),
                fields: Some(BTreeMap::from([("p".to_owned(), template.to_owned())])),
            }),
        },
        privacy: None,
    };
    let Ok(compiled) = CompiledMapping::compile("fuzz", &spec) else {
        return;
    };
    let outcome = mapping::map_request(std::slice::from_ref(&compiled), &request);
    let _ = outcome.verdict();
    for e in &outcome.errors {
        let _ = e.to_string();
    }
    let source = EventSource::new("ns", "fuzz");
    for event in &outcome.events {
        let mut line = Vec::new();
        event.write_json_line(&source, &mut line);
        assert_eq!(
            line.iter().filter(|b| **b == b'\n').count(),
            1,
            "one line per event"
        );
        let parsed: serde_json::Value =
            serde_json::from_slice(&line).expect("an event line is JSON");
        // The line is written by hand, properties merged as they are mapped: it must say what
        // the event's serde form says.
        assert_eq!(parsed, event.to_cloud_event_value(&source), "line and value agree");
    }
});
