//! Request bodies: any bytes under any of the content types the ingest accepts must give a
//! value or a positioned error, never a panic; a value must serialise back to JSON that parses,
//! and the shape observer must walk it within its bounds.
#![no_main]

use hookgate::mapping::{self, ShapeObserver};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: [Option<&str>; 6] = [
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    None,
    Some("text/plain"),
    Some("application/vnd.github+json; charset=utf-8"),
    Some("multipart/form-data"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    match mapping::parse_body(content_type, body) {
        Ok(value) => {
            let text = serde_json::to_string(&value).expect("a parsed body serialises");
            // Deep documents were refused at the recursion limit, so what was accepted parses
            // again.
            mapping::body::parse_json(text.as_bytes()).expect("a parsed body re-parses");
            let mut observer = ShapeObserver::new(100);
            observer.observe(&value);
            assert!(observer.fields().len() <= 100);
        }
        Err(e) => {
            assert!(matches!(e.http_status(), 400 | 415));
            let _ = e.to_string();
        }
    }
});
