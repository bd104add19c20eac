//! Parsing only what mappings read must never refuse a body a whole parse accepts, and must
//! give the same value at every path it was asked for: the first line names the paths
//! (`a.b.0,c`), the rest is the JSON body. The byte scanner behind `Projection::parse` must
//! also build exactly what the serde_json-driven projection builds, and accept nothing it
//! refuses; `Projection::parse_values` (what the ingest runs) must keep, at each node read
//! whole, what that tree has there.
#![no_main]

use hookgate::mapping::{Kept, ProjectedBody, Projection, body::parse_json};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn resolve<'v>(mut value: &'v Value, keys: &[&str]) -> Option<&'v Value> {
    for key in keys {
        value = match value {
            Value::Object(map) => map.get(*key)?,
            Value::Array(items) => items.get(index(key)?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// RFC 6901 array indexes, as templates read them: digits, no leading zero.
fn index(key: &str) -> Option<usize> {
    let canonical = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_digit())
        && (key == "0" || !key.starts_with('0'));
    if canonical { key.parse().ok() } else { None }
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(spec) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let body = data.get(split + 1..).unwrap_or_default();
    let paths: Vec<Vec<&str>> = spec
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.split('.').collect())
        .collect();
    let projection = paths.iter().fold(Projection::default(), |p, keys| {
        p.with_keys(keys.iter().copied())
    });
    let projected = projection.parse(body);
    assert_eq!(projected, projection.parse_serde(body), "scanner and serde_json differ");
    match (projection.parse_values(body), &projected) {
        (Ok(ProjectedBody::Values(values)), Ok(tree)) => {
            for (keys, slot) in projection.read_slots() {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                assert_eq!(
                    values[slot].as_ref().map(Kept::to_value).as_ref(),
                    resolve(tree, &keys),
                    "slot of {keys:?}"
                );
            }
        }
        (Ok(ProjectedBody::Tree(parsed)), Ok(tree)) => assert_eq!(&parsed, tree),
        (Err(a), Err(b)) => assert_eq!(&a, b, "the same refusal"),
        (a, b) => panic!("values {a:?}, tree {b:?}"),
    }
    // A whole-parse refusal may still be accepted by the projection: it neither range-checks
    // nor depth-limits what it skips.
    if let Ok(whole) = parse_json(body) {
        let projected = projected.expect("a body the whole parse accepts is accepted");
        for keys in &paths {
            assert_eq!(
                resolve(&whole, keys),
                resolve(&projected, keys),
                "path {keys:?}"
            );
        }
    }
});
