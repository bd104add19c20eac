//! The token never appears in logs, status or metrics, whatever the request's outcome.
//! Its own test binary: it installs a global log subscriber capturing everything.

mod ingest_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use hookgate::api::mapping::MappingSpec;
use hookgate::ingest::{Ingest, IngestConfig, Metrics, RouteTable, Sinks, bind_admin, bind_ingest};
use hookgate::route::{Route, RouteMapping, TokenHash, token_sha256_hex};
use hookgate::sink::WriterSink;
use ingest_support::{get, post_json, request};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn token_never_appears_in_logs_status_or_metrics() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let token = "tok_SECRET_a9c8e7d6b5a4f3e2d1c0";
    let spec: MappingSpec = serde_yaml::from_str(
        r#"
sourceRef: {name: s}
event: {name: E, id: "{{id}}", email: "{{email}}"}
"#,
    )
    .unwrap();
    let route = Route {
        namespace: "ns".into(),
        name: "s".into(),
        generation: 1,
        tokens: vec![TokenHash {
            sha256: token_sha256_hex(token),
            expires_at: None,
        }],
        enabled: true,
        max_body_bytes: 1024,
        rate_limit: None,
        dedup_window_seconds: 60,
        signature: None,
        mappings: vec![RouteMapping {
            name: "m".into(),
            generation: 1,
            spec,
        }],
        sink: None,
        sink_secrets: None,
    };
    let out = Captured::default();
    let table = Arc::new(RouteTable::new(
        Sinks::single(Arc::new(WriterSink::new("stdout", Box::new(out.clone())))),
        Arc::new(Metrics::new()),
    ));
    table.replace(vec![route]);
    let ingest = Arc::new(Ingest::new(table.clone(), IngestConfig::default()));
    let any = "127.0.0.1:0".parse().unwrap();
    let (addr, _) = bind_ingest(any, ingest, std::future::pending())
        .await
        .unwrap();
    let (admin, _) = bind_admin(any, table, std::future::pending())
        .await
        .unwrap();

    let path = format!("/h/{token}");
    let ok = post_json(addr, &path, r#"{"id": "e1", "email": "a@b.co"}"#).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    post_json(addr, &path, r#"{"id": "e2"}"#).await; // 422
    post_json(addr, &path, "{").await; // 400
    post_json(addr, &format!("{path}x"), "{}").await; // 404
    request(addr, "POST", &path, &[("content-type", "image/png")], "x").await; // 415
    post_json(addr, &path, &"x".repeat(2000)).await; // 413

    let status = get(admin, "/status").await.text;
    let metrics = get(admin, "/metrics").await.text;
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("webhook answered"),
        "debug logs were not captured: {logged}"
    );
    for (name, text) in [
        ("status", &status),
        ("metrics", &metrics),
        ("logs", &logged),
    ] {
        assert!(!text.contains(token), "token in {name}: {text}");
        assert!(!text.contains("SECRET"), "token part in {name}: {text}");
        assert!(
            !text.contains(&token_sha256_hex(token)),
            "token hash in {name}"
        );
    }
    assert!(!status.contains("a@b.co"), "raw email in status: {status}");
}
