//! Every row of the acknowledgement table (DESIGN §5), through real HTTP on loopback against
//! the real ingest, route table and stdout sink (its writer captured in memory).

mod ingest_support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hookgate::api::mapping::MappingSpec;
use hookgate::api::webhook_source::{SignatureScheme, StdoutSink};
use hookgate::ingest::{Ingest, IngestConfig, Metrics, RouteTable, Sinks, bind_admin, bind_ingest};
use hookgate::route::{
    RateLimit, Route, RouteMapping, RouteSignature, TokenHash, token_sha256_hex,
};
use hookgate::sink::{Batch, DeliverFuture, Sink, SinkError, WriterSink};
use ingest_support::{get, post_json, request, wait_for};
use serde_json::{Value, json};

const TOKEN: &str = "tok_3c9f1a7be2d84f0c9a1be6f1d2c3b4a5";

/// A writer into shared memory: what the stdout sink wrote.
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

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A sink that fails (or hangs) on demand: the unit-level error path for the 503 row.
#[derive(Default)]
struct Flaky {
    fail: AtomicBool,
    hang: AtomicBool,
    inner: OnceLock<WriterSink>,
}

impl Sink for Flaky {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    fn deliver<'a>(&'a self, batch: Batch<'a>) -> DeliverFuture<'a> {
        if self.hang.load(Ordering::SeqCst) {
            return Box::pin(std::future::pending());
        }
        if self.fail.load(Ordering::SeqCst) {
            return Box::pin(async { Err(SinkError::new("broker unreachable")) });
        }
        self.inner.get().expect("inner sink").deliver(batch)
    }
}

struct Harness {
    ingest: SocketAddr,
    admin: SocketAddr,
    table: Arc<RouteTable>,
    out: Captured,
    flaky: Arc<Flaky>,
}

fn mapping(name: &str, yaml: &str) -> RouteMapping {
    let spec: MappingSpec = serde_yaml::from_str(yaml).unwrap();
    RouteMapping {
        name: name.into(),
        generation: 1,
        spec,
    }
}

fn purchase_mapping() -> RouteMapping {
    mapping(
        "invoice-paid",
        r#"
sourceRef: {name: shop}
when: [{path: "{{type}}", equals: invoice.paid}]
event:
  name: Purchase
  id: "{{id}}"
  email: "{{data.object.customer_email | lower}}"
  externalId: "{{data.object.customer}}"
  properties:
    fields: {amount: "{{data.object.amount_paid}}"}
"#,
    )
}

fn batch_mapping() -> RouteMapping {
    mapping(
        "batch",
        r#"
sourceRef: {name: shop}
when: [{path: "{{kind}}", equals: batch}]
forEach: "{{events}}"
event:
  name: "{{$item.type}}"
  id: "{{$item.id}}"
  visitorId: "{{$item.anonymous_id}}"
"#,
    )
}

fn route(name: &str, token: &str) -> Route {
    Route {
        namespace: "shop".into(),
        name: name.into(),
        generation: 1,
        tokens: vec![TokenHash {
            sha256: token_sha256_hex(token),
            expires_at: None,
        }],
        enabled: true,
        max_body_bytes: 4096,
        rate_limit: None,
        dedup_window_seconds: 3600,
        signature: None,
        mappings: vec![purchase_mapping(), batch_mapping()],
        sink: None,
        sink_secrets: None,
    }
}

async fn start(routes: Vec<Route>) -> Harness {
    let out = Captured::default();
    let flaky = Arc::new(Flaky::default());
    let _ = flaky
        .inner
        .set(WriterSink::new("stdout", Box::new(out.clone())));
    let stdout: Arc<dyn Sink> = Arc::new(WriterSink::new("stdout", Box::new(out.clone())));
    let sinks = Sinks {
        default: flaky.clone(),
        stdout,
    };
    let table = Arc::new(RouteTable::new(sinks, Arc::new(Metrics::new())));
    let report = table.replace(routes);
    assert!(
        report.mapping_errors.is_empty() && report.route_errors.is_empty(),
        "{report:?}"
    );
    let config = IngestConfig {
        sink_timeout: Duration::from_millis(500),
        ..IngestConfig::default()
    };
    let ingest = Arc::new(Ingest::new(table.clone(), config));
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (ingest_addr, _) = bind_ingest(any, ingest, std::future::pending())
        .await
        .unwrap();
    let (admin_addr, _) = bind_admin(any, table.clone(), std::future::pending())
        .await
        .unwrap();
    Harness {
        ingest: ingest_addr,
        admin: admin_addr,
        table,
        out,
        flaky,
    }
}

fn invoice(id: &str) -> String {
    json!({
        "id": id,
        "type": "invoice.paid",
        "data": {"object": {"customer": "cus_42", "customer_email": "Jane.Doe@Example.com", "amount_paid": 2000}}
    })
    .to_string()
}

fn path() -> String {
    format!("/h/{TOKEN}")
}

async fn status_of(h: &Harness, name: &str) -> Value {
    let all = get(h.admin, "/status").await.json();
    all["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no status for {name}: {all}"))
}

fn assert_error(reply: &ingest_support::Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn delivered_event_is_acknowledged_only_after_the_sink_wrote_it() {
    let h = start(vec![route("shop", TOKEN)]).await;
    let reply = post_json(h.ingest, &path(), &invoice("evt_1")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["status"], "delivered");
    assert_eq!(body["eventIds"], json!(["evt_1"]));
    assert!(reply.header("x-request-id").is_some());
    // The 200 came after the write: the line is already there.
    let lines = h.out.lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], "evt_1");
    assert_eq!(lines[0]["source"], "/namespaces/shop/webhooksources/shop");
    assert_eq!(lines[0]["data"]["email"], "jane.doe@example.com");
    assert_eq!(lines[0]["data"]["properties"]["amount"], 2000);

    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["received"], 1);
    assert_eq!(status["counters"]["delivered"], 1);
    let recent = &status["recentEvents"][0];
    assert_eq!(recent["eventId"], "evt_1");
    assert_eq!(recent["outcome"], "delivered");
    assert_eq!(recent["identity"], "j***@e***.com");
    assert_eq!(recent["requestId"], reply.header("x-request-id").unwrap());
    assert_eq!(status["mappings"][0]["name"], "invoice-paid");
    assert_eq!(status["mappings"][0]["matched"], 1);
    assert!(
        status["observedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "{{data.object.customer}}")
    );
    assert!(
        !status.to_string().contains("Jane.Doe"),
        "raw email in status"
    );
}

#[tokio::test]
async fn batch_success_lists_every_accepted_event_id_in_order() {
    let h = start(vec![route("shop", TOKEN)]).await;
    let body = json!({"kind": "batch", "events": [
        {"type": "Signed Up", "id": "m-1", "anonymous_id": "a-1"},
        {"type": "Viewed", "id": "m-2", "anonymous_id": "a-2"},
        {"type": "Viewed", "id": "m-3", "anonymous_id": "a-3"}
    ]});
    let reply = post_json(h.ingest, &path(), &body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["eventIds"], json!(["m-1", "m-2", "m-3"]));
    let ids: Vec<Value> = h.out.lines().iter().map(|l| l["id"].clone()).collect();
    assert_eq!(ids, vec![json!("m-1"), json!("m-2"), json!("m-3")]);
}

#[tokio::test]
async fn unknown_and_malformed_tokens_get_the_same_404() {
    let h = start(vec![route("shop", TOKEN)]).await;
    let long = "x".repeat(5000);
    let mut bodies = Vec::new();
    for p in [
        "/h/tok_unknown_but_well_formed_0000000000".to_owned(),
        "/h/".to_owned(),
        "/h/a/b".to_owned(),
        "/h/%00%ff".to_owned(),
        format!("/h/{long}"),
        format!("/h/{TOKEN}x"),
    ] {
        let reply = post_json(h.ingest, &p, &invoice("evt_1")).await;
        assert_error(&reply, 404, "not_found");
        bodies.push(reply.text);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    assert!(h.out.lines().is_empty());
    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["received"], 0);
    let metrics = get(h.admin, "/metrics").await.text;
    assert!(
        metrics.contains(
            r#"hookgate_ingest_requests_total{namespace="",source="",outcome="not_found"} 6"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn expired_previous_token_does_not_open_the_route() {
    let now = jiff::Timestamp::now().as_second();
    let mut r = route("shop", TOKEN);
    r.tokens.push(TokenHash {
        sha256: token_sha256_hex("old-expired-token-000000"),
        expires_at: Some(now - 1),
    });
    r.tokens.push(TokenHash {
        sha256: token_sha256_hex("old-in-grace-token-00000"),
        expires_at: Some(now + 3600),
    });
    let h = start(vec![r]).await;
    let expired = post_json(h.ingest, "/h/old-expired-token-000000", &invoice("evt_1")).await;
    assert_error(&expired, 404, "not_found");
    let grace = post_json(h.ingest, "/h/old-in-grace-token-00000", &invoice("evt_2")).await;
    assert_eq!(grace.status, 200, "{}", grace.text);
    assert_eq!(h.out.lines().len(), 1);
}

#[tokio::test]
async fn disabled_source_answers_503_with_retry_after_and_delivers_nothing() {
    let mut r = route("shop", TOKEN);
    r.enabled = false;
    let h = start(vec![r]).await;
    let reply = post_json(h.ingest, &path(), &invoice("evt_1")).await;
    assert_error(&reply, 503, "source_disabled");
    assert_eq!(reply.header("retry-after"), Some("60"));
    assert!(h.out.lines().is_empty());
    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["rejected"], 1);
    assert_eq!(status["recentErrors"][0]["stage"], "auth");
}

#[tokio::test]
async fn an_unsigned_request_to_a_signed_source_is_refused_with_401() {
    let mut r = route("shop", TOKEN);
    r.signature = Some(RouteSignature {
        scheme: SignatureScheme::Github,
        secrets: vec!["signing-secret-never-shown".into()],
        previous_until: None,
        tolerance_seconds: 300,
        header: None,
        algorithm: None,
        encoding: None,
        prefix: None,
    });
    let h = start(vec![r]).await;
    let reply = post_json(h.ingest, &path(), &invoice("evt_1")).await;
    assert_error(&reply, 401, "signature_unverified");
    assert!(reply.text.contains("github"), "{}", reply.text);
    assert!(h.out.lines().is_empty());
    let status = status_of(&h, "shop").await;
    assert_eq!(status["recentErrors"][0]["stage"], "auth");
    assert!(!status.to_string().contains("signing-secret-never-shown"));
}

#[tokio::test]
async fn body_over_the_limit_answers_413_with_or_without_content_length() {
    let h = start(vec![route("shop", TOKEN)]).await;
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(5000));
    let declared = post_json(h.ingest, &path(), &big).await;
    assert_error(&declared, 413, "body_too_large");

    // Chunked, without Content-Length: the limit is enforced while reading.
    let reply = ingest_support::request(
        h.ingest,
        "POST",
        &path(),
        &[
            ("content-type", "application/json"),
            ("transfer-encoding", "chunked"),
        ],
        big,
    )
    .await;
    assert_error(&reply, 413, "body_too_large");
    assert!(h.out.lines().is_empty());
    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["rejected"], 2);
    assert_eq!(status["recentErrors"][0]["count"], 2);
}

#[tokio::test]
async fn unsupported_media_type_is_415_and_bad_json_is_400_with_the_position() {
    let h = start(vec![route("shop", TOKEN)]).await;
    let xml = request(
        h.ingest,
        "POST",
        &path(),
        &[("content-type", "application/xml")],
        "<a/>",
    )
    .await;
    assert_error(&xml, 415, "unsupported_media_type");
    let bad = post_json(h.ingest, &path(), "{\n  \"id\": \"evt_1\",\n}").await;
    assert_error(&bad, 400, "invalid_body");
    let message = bad.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("line 3 column 1"), "{message}");
    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["rejected"], 2);
    assert_eq!(status["recentErrors"][0]["stage"], "parse");
    assert!(h.out.lines().is_empty());
}

#[tokio::test]
async fn rate_limited_source_answers_429_with_retry_after() {
    let mut r = route("shop", TOKEN);
    r.rate_limit = Some(RateLimit {
        requests_per_second: 1,
        burst: 2,
    });
    let h = start(vec![r]).await;
    for i in 0..2 {
        let ok = post_json(h.ingest, &path(), &invoice(&format!("evt_{i}"))).await;
        assert_eq!(ok.status, 200, "{}", ok.text);
    }
    let limited = post_json(h.ingest, &path(), &invoice("evt_9")).await;
    assert_error(&limited, 429, "rate_limited");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(h.out.lines().len(), 2);
    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["rejected"], 1);
}

#[tokio::test]
async fn request_no_mapping_matches_is_200_ignored() {
    let h = start(vec![route("shop", TOKEN)]).await;
    let reply = post_json(
        h.ingest,
        &path(),
        r#"{"type": "customer.created", "id": "evt_5"}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["status"], "ignored");
    assert_eq!(reply.json()["eventIds"], json!([]));
    assert!(h.out.lines().is_empty());
    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["ignored"], 1);
    assert_eq!(status["recentEvents"][0]["outcome"], "ignored");
}

#[tokio::test]
async fn missing_identity_is_422_and_recorded_on_the_mapping() {
    let h = start(vec![route("shop", TOKEN)]).await;
    let body = json!({"id": "evt_7", "type": "invoice.paid", "data": {"object": {}}});
    let reply = post_json(h.ingest, &path(), &body.to_string()).await;
    assert_error(&reply, 422, "unprocessable");
    assert!(reply.text.contains("no identity"), "{}", reply.text);
    assert!(h.out.lines().is_empty());
    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["failed"], 1);
    assert_eq!(status["recentErrors"][0]["stage"], "map");
    let m = &status["mappings"][0];
    assert_eq!(
        (m["name"].as_str(), m["failed"].as_i64()),
        (Some("invoice-paid"), Some(1))
    );
    assert!(
        m["recentErrors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no identity")
    );
}

#[tokio::test]
async fn partial_batch_delivers_the_good_events_and_reports_the_rest() {
    let h = start(vec![route("shop", TOKEN)]).await;
    let body = json!({"kind": "batch", "events": [
        {"type": "Viewed", "id": "m-1", "anonymous_id": "a-1"},
        {"type": "Viewed", "id": "m-2"}
    ]});
    let reply = post_json(h.ingest, &path(), &body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["eventIds"], json!(["m-1"]));
    assert!(
        reply.json()["errors"][0]
            .as_str()
            .unwrap()
            .contains("forEach item 1")
    );
    assert_eq!(h.out.lines().len(), 1);
}

#[tokio::test]
async fn duplicate_event_id_is_acknowledged_and_not_delivered_again() {
    let h = start(vec![route("shop", TOKEN)]).await;
    let first = post_json(h.ingest, &path(), &invoice("evt_dup")).await;
    assert_eq!(first.status, 200);
    let again = post_json(h.ingest, &path(), &invoice("evt_dup")).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(again.json()["duplicateIds"], json!(["evt_dup"]));
    assert_eq!(h.out.lines().len(), 1);
    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["duplicates"], 1);
    assert_eq!(status["counters"]["delivered"], 1);
}

#[tokio::test]
async fn dedup_window_zero_delivers_every_time() {
    let mut r = route("shop", TOKEN);
    r.dedup_window_seconds = 0;
    let h = start(vec![r]).await;
    for _ in 0..2 {
        assert_eq!(
            post_json(h.ingest, &path(), &invoice("evt_same"))
                .await
                .status,
            200
        );
    }
    assert_eq!(h.out.lines().len(), 2);
}

#[tokio::test]
async fn failing_sink_answers_503_and_the_retry_delivers_once_it_recovers() {
    let h = start(vec![route("shop", TOKEN)]).await;
    h.flaky.fail.store(true, Ordering::SeqCst);
    let reply = post_json(h.ingest, &path(), &invoice("evt_r")).await;
    assert_error(&reply, 503, "sink_unavailable");
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert!(reply.text.contains("broker unreachable"));
    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["failed"], 1);
    assert_eq!(status["recentErrors"][0]["stage"], "deliver");

    // Not acknowledged, so not remembered by dedup: the sender's retry is delivered.
    h.flaky.fail.store(false, Ordering::SeqCst);
    let retry = post_json(h.ingest, &path(), &invoice("evt_r")).await;
    assert_eq!(retry.status, 200, "{}", retry.text);
    assert_eq!(retry.json()["status"], "delivered");
    assert_eq!(h.out.lines().len(), 1);
}

#[tokio::test]
async fn slow_sink_answers_503_within_the_sink_timeout() {
    let h = start(vec![route("shop", TOKEN)]).await;
    h.flaky.hang.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let reply = post_json(h.ingest, &path(), &invoice("evt_s")).await;
    assert_error(&reply, 503, "sink_unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        reply.text.contains("did not acknowledge within 500 ms"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn stdout_sink_override_and_route_swap_keep_counters() {
    let h = start(vec![route("shop", TOKEN)]).await;
    assert_eq!(
        post_json(h.ingest, &path(), &invoice("evt_a")).await.status,
        200
    );

    // New settings, same source: the override sends to the stdout sink even while the
    // default sink fails, and counters carry over.
    let mut r = route("shop", TOKEN);
    r.sink = Some(hookgate::api::webhook_source::Sink {
        stdout: Some(StdoutSink {}),
        ..Default::default()
    });
    h.table.replace(vec![r]);
    h.flaky.fail.store(true, Ordering::SeqCst);
    assert_eq!(
        post_json(h.ingest, &path(), &invoice("evt_b")).await.status,
        200
    );
    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["delivered"], 2);

    // Removing the source closes its URL at once.
    h.table.replace(vec![]);
    assert_eq!(
        post_json(h.ingest, &path(), &invoice("evt_c")).await.status,
        404
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_on_the_admin_port() {
    let h = start(vec![route("shop", TOKEN)]).await;
    assert_eq!(get(h.admin, "/healthz").await.status, 200);
    assert_eq!(get(h.admin, "/readyz").await.status, 200);
    post_json(h.ingest, &path(), &invoice("evt_m")).await;
    let metrics = get(h.admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text;
    assert!(
        text.contains(r#"hookgate_ingest_requests_total{namespace="shop",source="shop",outcome="delivered"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"hookgate_ingest_events_delivered_total{namespace="shop",source="shop"} 1"#
        )
    );
    assert!(text.contains("hookgate_ingest_request_duration_seconds_bucket"));
    assert!(text.contains("hookgate_ingest_routes 1"));
}

#[tokio::test]
async fn readyz_waits_for_the_first_route_set() {
    let table = Arc::new(RouteTable::new(
        Sinks::single(Arc::new(WriterSink::new(
            "stdout",
            Box::new(Captured::default()),
        ))),
        Arc::new(Metrics::new()),
    ));
    let (admin, _) = bind_admin(
        "127.0.0.1:0".parse().unwrap(),
        table.clone(),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(get(admin, "/readyz").await.status, 503);
    table.replace(vec![]);
    wait_for("readyz", Duration::from_secs(5), || async {
        (get(admin, "/readyz").await.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn before_the_first_route_set_every_token_gets_a_retryable_503_not_404() {
    let table = Arc::new(RouteTable::new(
        Sinks::single(Arc::new(WriterSink::new(
            "stdout",
            Box::new(Captured::default()),
        ))),
        Arc::new(Metrics::new()),
    ));
    let ingest = Arc::new(Ingest::new(table.clone(), IngestConfig::default()));
    let (addr, _) = bind_ingest(
        "127.0.0.1:0".parse().unwrap(),
        ingest,
        std::future::pending(),
    )
    .await
    .unwrap();
    let reply = post_json(addr, &path(), &invoice("in_early")).await;
    assert_error(&reply, 503, "not_ready");
    assert_eq!(reply.header("retry-after"), Some("1"));
    table.replace(vec![]);
    let reply = post_json(addr, &path(), &invoice("in_early")).await;
    assert_error(&reply, 404, "not_found");
}

#[tokio::test]
async fn get_on_a_webhook_url_is_405() {
    let h = start(vec![route("shop", TOKEN)]).await;
    let reply = get(h.ingest, &path()).await;
    assert_error(&reply, 405, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("POST"));
}

/// After a source's first bodies the ingest parses only what the mappings read (whole parses
/// are then a sample, for shape learning): the events must be the same either side of that.
#[tokio::test]
async fn events_do_not_change_once_bodies_are_parsed_only_where_mappings_read() {
    let h = start(vec![route("shop", TOKEN)]).await;
    let requests = 100;
    for i in 0..requests {
        let body = if i % 2 == 0 {
            invoice(&format!("evt_{i}"))
        } else {
            json!({"kind": "batch", "noise": {"deep": [1, {"x": "y"}]}, "events": [
                {"type": "Viewed", "id": format!("m-{i}-a"), "anonymous_id": format!("a-{i}")},
                {"type": "Signed Up", "id": format!("m-{i}-b"), "anonymous_id": format!("b-{i}")}
            ]})
            .to_string()
        };
        let reply = post_json(h.ingest, &path(), &body).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text);
        assert_eq!(reply.json()["status"], "delivered", "request {i}");
    }
    let lines = h.out.lines();
    assert_eq!(lines.len(), 150);
    let mut line = lines.iter();
    for i in 0..requests {
        if i % 2 == 0 {
            let event = line.next().unwrap();
            assert_eq!(event["id"], format!("evt_{i}"));
            assert_eq!(event["type"], "Purchase");
            assert_eq!(event["data"]["email"], "jane.doe@example.com");
            assert_eq!(event["data"]["externalId"], "cus_42");
            assert_eq!(event["data"]["properties"], json!({"amount": 2000}));
        } else {
            for (suffix, name, visitor) in [("a", "Viewed", "a"), ("b", "Signed Up", "b")] {
                let event = line.next().unwrap();
                assert_eq!(event["id"], format!("m-{i}-{suffix}"));
                assert_eq!(event["type"], name);
                assert_eq!(event["data"]["visitorId"], format!("{visitor}-{i}"));
            }
        }
    }
    let status = status_of(&h, "shop").await;
    assert_eq!(status["counters"]["received"], requests);
    assert!(
        status["observedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "{{noise.deep.0.x}}"),
        "{status}"
    );
}
