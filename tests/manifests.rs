//! The committed CRDs match the Rust types, and every example parses into the typed resources.

mod support;

use hookgate::api::{Mapping, WebhookSource};
use serde::Deserialize;
use serde_json::Value;

#[test]
fn committed_crds_match_the_rust_types() {
    assert_crds_current("crds");
}

#[test]
fn the_chart_ships_the_same_crds() {
    assert_crds_current("charts/hookgate/crds");
}

fn assert_crds_current(relative: &str) {
    let dir = support::repo_root().join(relative);
    let files = hookgate::api::crds_yaml().expect("rendering CRDs");
    for (file, generated) in &files {
        let path = dir.join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == *generated,
            "{} is out of date with src/api: run `cargo run -- crds --out-dir {relative}` and commit the result",
            path.display()
        );
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = files.into_iter().map(|(f, _)| f).collect();
    expected.sort();
    assert_eq!(
        on_disk, expected,
        "crds/ holds files `hookgate crds` does not generate"
    );
}

/// Every field the file sets must survive a typed round trip: a misspelt field would be
/// silently dropped by serde, so it shows up here as missing.
fn assert_fields_kept(path: &str, original: &Value, typed: &Value, at: &str) {
    match (original, typed) {
        (Value::Object(o), Value::Object(t)) => {
            for (k, v) in o {
                let next = format!("{at}.{k}");
                let tv = t.get(k).unwrap_or_else(|| {
                    panic!("{path}: field {next} is not part of the resource type")
                });
                assert_fields_kept(path, v, tv, &next);
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            assert_eq!(o.len(), t.len(), "{path}: {at} changed length");
            for (i, (ov, tv)) in o.iter().zip(t).enumerate() {
                assert_fields_kept(path, ov, tv, &format!("{at}.{i}"));
            }
        }
        (o, t) => assert_eq!(o, t, "{path}: {at} changed in a typed round trip"),
    }
}

#[test]
fn every_example_parses_into_the_typed_resources() {
    let files = support::example_files();
    assert!(!files.is_empty(), "examples/ has no YAML files");
    let (mut sources, mut mappings) = (0, 0);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            let typed = match value["kind"].as_str() {
                Some("WebhookSource") => {
                    sources += 1;
                    let r: WebhookSource = serde_json::from_value(value.clone())
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    serde_json::to_value(r).unwrap()
                }
                Some("Mapping") => {
                    mappings += 1;
                    let r: Mapping = serde_json::from_value(value.clone())
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                    serde_json::to_value(r).unwrap()
                }
                other => panic!("{name}: unexpected kind {other:?}"),
            };
            assert_fields_kept(&name, &value, &typed, "");
        }
    }
    assert!(
        sources > 0 && mappings > 0,
        "examples must include sources and mappings"
    );
}
