//! Signature verification through the real ingest over HTTP on loopback: the bad-input
//! catalogue (each case with the answer a sender gets), secret rotation, and a delivery id
//! header used as the dedup key.

mod ingest_support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hookgate::api::mapping::MappingSpec;
use hookgate::api::webhook_source::{SignatureScheme, WebhookSource};
use hookgate::ingest::verify::{SignRequest, sign};
use hookgate::ingest::{Ingest, IngestConfig, Metrics, RouteTable, Sinks, bind_ingest};
use hookgate::route::{Route, RouteMapping, RouteSignature, TokenHash, token_sha256_hex};
use hookgate::sink::WriterSink;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const SECRET: &str = "signing-secret-7f3a9c1e";
const OLD_SECRET: &str = "signing-secret-previous-2b8d";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

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
    fn events(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn route(name: &str, scheme: SignatureScheme, secrets: &[&str], event_id: &str) -> Route {
    let spec: MappingSpec = serde_yaml::from_str(&format!(
        r#"
sourceRef: {{name: {name}}}
event:
  name: Ping
  id: "{event_id}"
  externalId: "{{{{user}}}}"
"#
    ))
    .unwrap();
    Route {
        namespace: "sig".into(),
        name: name.into(),
        generation: 1,
        tokens: vec![TokenHash {
            sha256: token_sha256_hex(&token(name)),
            expires_at: None,
        }],
        enabled: true,
        max_body_bytes: 1 << 20,
        rate_limit: None,
        dedup_window_seconds: 3600,
        signature: Some(RouteSignature {
            scheme,
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            previous_until: None,
            tolerance_seconds: 300,
            header: None,
            algorithm: None,
            encoding: None,
            prefix: None,
        }),
        mappings: vec![RouteMapping {
            name: "ping".into(),
            generation: 1,
            spec,
        }],
        sink: None,
        sink_secrets: None,
    }
}

fn token(name: &str) -> String {
    format!("tok_{name}_0123456789abcdef0123456789")
}

async fn start(routes: Vec<Route>) -> (SocketAddr, Captured) {
    let out = Captured::default();
    let sink = Arc::new(WriterSink::new("stdout", Box::new(out.clone())));
    let table = Arc::new(RouteTable::new(
        Sinks::single(sink),
        Arc::new(Metrics::new()),
    ));
    let report = table.replace(routes);
    assert!(report.mapping_errors.is_empty() && report.route_errors.is_empty());
    let ingest = Arc::new(Ingest::new(table, IngestConfig::default()));
    let (addr, _) = bind_ingest(
        "127.0.0.1:0".parse().unwrap(),
        ingest,
        std::future::pending(),
    )
    .await
    .unwrap();
    (addr, out)
}

struct Reply {
    status: u16,
    text: String,
}

/// One POST whose header values may be any bytes (the shared helper takes `&str`).
async fn post(addr: SocketAddr, source: &str, headers: &[(&str, Vec<u8>)], body: &[u8]) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method("POST")
        .uri(format!("/h/{}", token(source)))
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn signed(
    scheme: SignatureScheme,
    secret: &str,
    body: &[u8],
    at: i64,
    id: &str,
) -> Vec<(String, Vec<u8>)> {
    sign(&SignRequest {
        scheme,
        secret,
        body,
        now_unix: at,
        message_id: id,
        header: None,
        algorithm: None,
        encoding: None,
        prefix: None,
    })
    .unwrap()
    .into_iter()
    .map(|(k, v)| (k, v.into_bytes()))
    .collect()
}

fn borrow(headers: &[(String, Vec<u8>)]) -> Vec<(&str, Vec<u8>)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect()
}

/// (case, source, headers, body, expected status, text the answer must contain)
type Case<'a> = (
    &'a str,
    &'a str,
    Vec<(String, Vec<u8>)>,
    &'a [u8],
    u16,
    &'a str,
);

#[tokio::test]
async fn bad_input_catalogue() {
    let (addr, out) = start(vec![
        route("gh", SignatureScheme::Github, &[SECRET], "{{id}}"),
        route("st", SignatureScheme::Stripe, &[SECRET], "{{id}}"),
        route("sw", SignatureScheme::StandardWebhooks, &[WHSEC], "{{id}}"),
        route("nosecret", SignatureScheme::Shopify, &[], "{{id}}"),
    ])
    .await;
    let body = br#"{"id":"evt_1","user":"u_1"}"#;
    let other = br#"{"id":"evt_1","user":"u_2"}"#;
    let t = now();
    let gh = |secret: &str, b: &[u8]| signed(SignatureScheme::Github, secret, b, t, "");

    let huge = format!("sha256={}", "a".repeat(64 * 1024));
    let cases: Vec<Case> = vec![
        (
            "wrong signature (another secret)",
            "gh",
            gh("not-the-secret", body),
            body,
            401,
            "no signature in the x-hub-signature-256 header matches",
        ),
        (
            "signature for another body",
            "gh",
            gh(SECRET, other),
            body,
            401,
            "matches this body",
        ),
        (
            "empty signature",
            "gh",
            vec![("X-Hub-Signature-256".into(), b"sha256=".to_vec())],
            body,
            401,
            "the signature is empty",
        ),
        (
            "empty header",
            "gh",
            vec![("X-Hub-Signature-256".into(), Vec::new())],
            body,
            401,
            "malformed",
        ),
        (
            "truncated signature",
            "gh",
            {
                let mut h = gh(SECRET, body);
                h[0].1.truncate(7 + 40);
                h
            },
            body,
            401,
            "does not have the digest's length",
        ),
        (
            "no signature header",
            "gh",
            Vec::new(),
            body,
            401,
            "header is missing",
        ),
        (
            "huge header",
            "gh",
            vec![("X-Hub-Signature-256".into(), huge.into_bytes())],
            body,
            401,
            "too long",
        ),
        (
            "non-UTF-8 header",
            "gh",
            vec![("X-Hub-Signature-256".into(), b"sha256=\xff\xfe".to_vec())],
            body,
            401,
            "not visible ASCII",
        ),
        (
            "stale timestamp",
            "st",
            signed(SignatureScheme::Stripe, SECRET, body, t - 600, ""),
            body,
            401,
            "outside the accepted window of 300s",
        ),
        (
            "timestamp from the future",
            "st",
            signed(SignatureScheme::Stripe, SECRET, body, t + 600, ""),
            body,
            401,
            "outside the accepted window",
        ),
        (
            "stripe without v1",
            "st",
            vec![("Stripe-Signature".into(), format!("t={t}").into_bytes())],
            body,
            401,
            "no v1= signature",
        ),
        (
            "standard webhooks stale",
            "sw",
            signed(
                SignatureScheme::StandardWebhooks,
                WHSEC,
                body,
                t - 301,
                "msg_1",
            ),
            body,
            401,
            "outside the accepted window",
        ),
        (
            "standard webhooks id swapped",
            "sw",
            {
                let mut h = signed(SignatureScheme::StandardWebhooks, WHSEC, body, t, "msg_1");
                h[0].1 = b"msg_2".to_vec();
                h
            },
            body,
            401,
            "matches this body",
        ),
        (
            "no signing secret available",
            "nosecret",
            Vec::new(),
            body,
            401,
            "no signing secret is available",
        ),
        // Verification is on the raw bytes, before parsing: a correctly signed body that is not
        // JSON passes the signature and then fails the parse.
        (
            "signed non-UTF-8 body",
            "gh",
            gh(SECRET, b"\xff\xfe{"),
            b"\xff\xfe{",
            400,
            "invalid_body",
        ),
        (
            "valid github",
            "gh",
            gh(SECRET, body),
            body,
            200,
            "delivered",
        ),
        (
            "valid stripe",
            "st",
            signed(SignatureScheme::Stripe, SECRET, other, t, ""),
            other,
            200,
            "delivered",
        ),
        (
            "valid standard webhooks",
            "sw",
            signed(
                SignatureScheme::StandardWebhooks,
                WHSEC,
                br#"{"id":"evt_2","user":"u"}"#,
                t,
                "msg_9",
            ),
            br#"{"id":"evt_2","user":"u"}"#,
            200,
            "delivered",
        ),
    ];
    let mut failures = Vec::new();
    for (case, source, headers, body, status, needle) in &cases {
        let reply = post(addr, source, &borrow(headers), body).await;
        if reply.status != *status || !reply.text.contains(needle) {
            failures.push(format!(
                "{case}: expected {status} containing {needle:?}, got {} {}",
                reply.status, reply.text
            ));
        }
        if *status == 401 {
            let error: Value = serde_json::from_str(&reply.text).unwrap();
            assert_eq!(error["error"]["code"], "signature_unverified", "{case}");
        }
        // No answer ever quotes a secret or the signature that was sent.
        assert!(
            !reply.text.contains(SECRET) && !reply.text.contains("MfKQ9r8"),
            "{case}"
        );
        for (_, value) in headers.iter() {
            if value.len() >= 16 {
                let sent = String::from_utf8_lossy(value);
                assert!(
                    !reply.text.contains(sent.as_ref()),
                    "{case} echoes the signature"
                );
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // Only the three valid requests were delivered.
    assert_eq!(out.events().len(), 3);
}

#[test]
fn unknown_scheme_is_refused_when_the_manifest_is_read() {
    // The CRD's enum refuses it at `kubectl apply`; standalone and the operator's typed reads
    // refuse it the same way, so no route with an unknown scheme is ever served.
    let yaml = r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: x}
spec:
  signature: {type: paypal, secretRef: {name: s}}
"#;
    let err = serde_yaml::from_str::<WebhookSource>(yaml)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown variant `paypal`"), "{err}");
    assert!(err.contains("standardWebhooks"), "{err}");
    let route = json!({
        "namespace": "n", "name": "x", "generation": 1, "tokens": [], "enabled": true,
        "maxBodyBytes": 1, "dedupWindowSeconds": 0,
        "signature": {"scheme": "paypal", "secrets": ["s"], "toleranceSeconds": 300}
    });
    assert!(serde_json::from_value::<Route>(route).is_err());
}

#[tokio::test]
async fn previous_secret_is_accepted_during_rotation_and_unknown_ones_are_not() {
    let (addr, out) = start(vec![route(
        "shop",
        SignatureScheme::Shopify,
        &[SECRET, OLD_SECRET],
        "{{id}}",
    )])
    .await;
    for (i, secret) in [SECRET, OLD_SECRET].into_iter().enumerate() {
        let body = format!(r#"{{"id":"evt_{i}","user":"u"}}"#);
        let headers = signed(SignatureScheme::Shopify, secret, body.as_bytes(), now(), "");
        let reply = post(addr, "shop", &borrow(&headers), body.as_bytes()).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let body = br#"{"id":"evt_x","user":"u"}"#;
    let headers = signed(SignatureScheme::Shopify, "retired-secret", body, now(), "");
    let reply = post(addr, "shop", &borrow(&headers), body).await;
    assert_eq!(reply.status, 401, "{}", reply.text);
    assert_eq!(out.events().len(), 2);
}

#[tokio::test]
async fn webhook_id_header_is_the_dedup_key_for_a_senders_retries() {
    // Standard Webhooks senders retry a delivery with the same webhook-id (and a fresh
    // timestamp and signature); a mapping whose id is {{$header.webhook-id}} delivers it once.
    let (addr, out) = start(vec![route(
        "sw",
        SignatureScheme::StandardWebhooks,
        &[WHSEC],
        "{{$header.webhook-id}}",
    )])
    .await;
    let body = br#"{"user":"u_1"}"#;
    let first = signed(
        SignatureScheme::StandardWebhooks,
        WHSEC,
        body,
        now(),
        "msg_2Lh9",
    );
    let reply = post(addr, "sw", &borrow(&first), body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.text.contains("delivered"), "{}", reply.text);
    let retry = signed(
        SignatureScheme::StandardWebhooks,
        WHSEC,
        body,
        now() + 1,
        "msg_2Lh9",
    );
    let reply = post(addr, "sw", &borrow(&retry), body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answer: Value = serde_json::from_str(&reply.text).unwrap();
    assert_eq!(answer["status"], "duplicate", "{answer}");
    let events = out.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], "msg_2Lh9");
}

#[tokio::test]
async fn hookgate_send_signs_like_each_provider_and_the_ingest_accepts_it() {
    let (addr, out) = start(vec![
        route(
            "gh",
            SignatureScheme::Github,
            &[SECRET],
            "{{$header.x-github-delivery}}",
        ),
        route("st", SignatureScheme::Stripe, &[SECRET], "{{id}}"),
        route(
            "sw",
            SignatureScheme::StandardWebhooks,
            &[WHSEC],
            "{{$header.webhook-id}}",
        ),
        route("sh", SignatureScheme::Shopify, &[SECRET], "{{id}}"),
    ])
    .await;
    let file = std::env::temp_dir().join(format!("hookgate-send-{}.json", std::process::id()));
    std::fs::write(&file, br#"{"id":"evt_send","user":"u_1"}"#).unwrap();
    let send = |source: &str, scheme: &str, secret: &str| {
        let url = format!("http://{addr}/h/{}", token(source));
        let file = file.clone();
        let (scheme, secret) = (scheme.to_owned(), secret.to_owned());
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
                .args(["send", &url])
                .arg(&file)
                .args(["--sign", &scheme, "--id", "delivery-1"])
                .env("HOOKGATE_SIGNING_SECRET", secret)
                .output()
                .await
                .unwrap()
        }
    };
    for (source, scheme, secret) in [
        ("gh", "github", SECRET),
        ("st", "stripe", SECRET),
        ("sw", "standardWebhooks", WHSEC),
        ("sh", "shopify", SECRET),
    ] {
        let output = send(source, scheme, secret).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{scheme}: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.starts_with("HTTP 200\n"), "{scheme}: {stdout}");
    }
    // A wrong secret: the answer is printed and the exit status says it failed.
    let output = send("gh", "github", "wrong").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(stdout.starts_with("HTTP 401\n"), "{stdout}");
    let _ = std::fs::remove_file(&file);
    let ids: Vec<Value> = out.events().iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids, ["delivery-1", "evt_send", "delivery-1", "evt_send"]);
}
