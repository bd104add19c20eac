//! Every directory under examples/ is a worked example: the WebhookSource and Mapping
//! manifests, a real-shaped request (`request.json`: content type, headers, body file) and the
//! events it must produce (`expected-events.json`, as the stdout sink prints them). This test
//! runs each request through the engine with the example's own Mappings and compares.
//!
//! `receivedAt` is left out of the comparison, and so are ids the engine generated (events
//! without a mapped id). To rewrite the expected files after an intended change, run
//! `HOOKGATE_BLESS=1 cargo test --test examples` and review the diff.

use std::path::{Path, PathBuf};

use hookgate::api::{Mapping, WebhookSource};
use hookgate::mapping::{self, CompiledMapping, EventSource, Headers, Request, Verdict};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

/// The receive time of every example request, so events without a timestamp are stable.
const RECEIVED_AT: &str = "2024-06-01T12:00:30Z";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExampleRequest {
    #[allow(dead_code)] // for the reader of the file
    comment: Option<String>,
    content_type: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    query: String,
    /// A file next to request.json.
    body: String,
}

struct Pairs(Vec<(String, String)>);

impl Headers for Pairs {
    fn header(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn example_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn documents(dir: &Path) -> Vec<Value> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            docs.push(Value::deserialize(doc).unwrap());
        }
    }
    docs
}

/// The events of one example, as the stdout sink prints them, minus what changes per run.
fn run_example(dir: &Path) -> Vec<Value> {
    let name = dir.file_name().unwrap().to_string_lossy();
    let docs = documents(dir);
    let sources: Vec<WebhookSource> = docs
        .iter()
        .filter(|d| d["kind"] == "WebhookSource")
        .map(|d| serde_json::from_value(d.clone()).unwrap())
        .collect();
    assert_eq!(sources.len(), 1, "{name}: one WebhookSource per example");
    let source = &sources[0];
    let source_name = source.metadata.name.as_deref().unwrap();
    let mappings: Vec<CompiledMapping> = docs
        .iter()
        .filter(|d| d["kind"] == "Mapping")
        .map(|d| serde_json::from_value::<Mapping>(d.clone()).unwrap())
        .map(|m| {
            assert_eq!(
                m.spec.source_ref.name, source_name,
                "{name}: mapping for another source"
            );
            let mapping_name = m.metadata.name.clone().unwrap();
            CompiledMapping::compile(&mapping_name, &m.spec)
                .unwrap_or_else(|e| panic!("{name}: {mapping_name} does not compile: {e}"))
        })
        .collect();
    assert!(!mappings.is_empty(), "{name}: no Mapping");

    let request: ExampleRequest = serde_json::from_slice(
        &std::fs::read(dir.join("request.json"))
            .unwrap_or_else(|e| panic!("{name}: request.json: {e}")),
    )
    .unwrap_or_else(|e| panic!("{name}: request.json: {e}"));
    let raw = std::fs::read(dir.join(&request.body)).unwrap();
    let body = mapping::parse_body(Some(&request.content_type), &raw)
        .unwrap_or_else(|e| panic!("{name}: {}: {e}", request.body));
    let headers = Pairs(request.headers.into_iter().collect());
    let received: Timestamp = RECEIVED_AT.parse().unwrap();
    let mapped = mapping::map_request(
        &mappings,
        &Request::new(&body, received)
            .with_headers(&headers)
            .with_query(&request.query),
    );
    assert_eq!(
        mapped.verdict(),
        Verdict::Accepted,
        "{name}: the example request must produce events: {:?}",
        mapped.errors
    );
    assert!(mapped.errors.is_empty(), "{name}: {:?}", mapped.errors);

    // The namespace of `hookgate standalone` when a manifest names none.
    let namespace = source.metadata.namespace.as_deref().unwrap_or("default");
    let event_source = EventSource::new(namespace, source_name);
    mapped
        .events
        .iter()
        .map(|event| {
            let mut line = Vec::new();
            event.write_json_line(&event_source, &mut line);
            let mut value: Value = serde_json::from_slice(&line).unwrap();
            let data = value["data"].as_object_mut().unwrap();
            assert_eq!(data.remove("receivedAt").unwrap(), RECEIVED_AT);
            if event.id_generated {
                data.remove("eventId");
                value.as_object_mut().unwrap().remove("id");
            }
            value
        })
        .collect()
}

#[test]
fn every_example_request_produces_its_expected_events() {
    let dirs = example_dirs();
    assert!(dirs.len() >= 5, "examples/ lost its examples: {dirs:?}");
    let bless = std::env::var_os("HOOKGATE_BLESS").is_some();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let events = run_example(&dir);
        let expected_path = dir.join("expected-events.json");
        if bless {
            let text = serde_json::to_string_pretty(&events).unwrap() + "\n";
            std::fs::write(&expected_path, text).unwrap();
            continue;
        }
        let expected: Value = serde_json::from_slice(
            &std::fs::read(&expected_path)
                .unwrap_or_else(|e| panic!("{name}: expected-events.json: {e}")),
        )
        .unwrap();
        assert_eq!(
            Value::Array(events),
            expected,
            "{name}: events differ from expected-events.json (HOOKGATE_BLESS=1 rewrites it)"
        );
    }
}

#[test]
fn examples_cover_the_senders_of_the_issue() {
    let names: Vec<String> = example_dirs()
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for wanted in ["batched", "github", "shopify", "stripe", "twilio"] {
        assert!(
            names.iter().any(|n| n == wanted),
            "examples/{wanted} is missing"
        );
    }
    // Shapes the issue asks the examples to show, checked on the events themselves.
    let github = run_example(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/github"));
    assert_eq!(
        github[0]["type"], "github.push",
        "name from the X-GitHub-Event header"
    );
    let batched = run_example(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/batched"));
    assert!(batched.len() > 1, "forEach yields one event per element");
    let twilio = run_example(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/twilio"));
    assert_eq!(
        twilio[0]["data"]["externalId"].as_str().map(str::len),
        Some(64),
        "hashed phone number"
    );
}
