//! The HTTP and NATS sinks against real receivers started here: a hyper server on loopback
//! that records what arrives, and a real `nats-server -js` on a free loopback port. Events
//! enter through the real ingest over HTTP, as a sender's would.
//!
//! nats-server: `HOOKGATE_NATS_SERVER`, else `nats-server` on the PATH or in /usr/sbin
//! (Debian's package); `scripts/install-nats-server` provides one.

mod ingest_support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookgate::api::mapping::MappingSpec;
use hookgate::api::webhook_source::{
    CloudEventsMode, HttpSink as HttpSinkSpec, NatsSink as NatsSinkSpec, Sink as SinkSpec,
};
use hookgate::ingest::{Ingest, IngestConfig, Metrics, RouteTable, Sinks, bind_ingest};
use hookgate::route::{NatsAuth, Route, RouteMapping, TokenHash, token_sha256_hex};
use hookgate::sink::WriterSink;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper_util::rt::TokioIo;
use ingest_support::{post_json, wait_for};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

const TOKEN: &str = "tok_sinks_5b0c2f7e9a1d4c6b8e3f0a2d4c6b8e1f";

// ---------------------------------------------------------------------------------------------
// The ingest

fn route(sink: SinkSpec, dedup_window_seconds: u64) -> Route {
    let spec: MappingSpec = serde_yaml::from_str(
        r#"
sourceRef: {name: shop}
event:
  name: "{{type}}"
  id: "{{id}}"
  externalId: "{{customer}}"
  properties:
    fields: {amount: "{{amount}}"}
"#,
    )
    .unwrap();
    Route {
        namespace: "shop".into(),
        name: "orders".into(),
        generation: 1,
        tokens: vec![TokenHash {
            sha256: token_sha256_hex(TOKEN),
            expires_at: None,
        }],
        enabled: true,
        max_body_bytes: 4096,
        rate_limit: None,
        dedup_window_seconds,
        signature: None,
        mappings: vec![RouteMapping {
            name: "orders".into(),
            generation: 1,
            spec,
        }],
        sink: Some(sink),
        sink_secrets: None,
    }
}

/// A real ingest on 127.0.0.1:0 serving one route; the stdout sink is unused (the route names
/// its own sink) and writes to nowhere.
async fn ingest(route: Route) -> SocketAddr {
    let unused = Arc::new(WriterSink::new("stdout", Box::new(std::io::sink())));
    let table = Arc::new(RouteTable::new(
        Sinks::single(unused),
        Arc::new(Metrics::new()),
    ));
    let report = table.replace(vec![route]);
    assert!(report.mapping_errors.is_empty() && report.route_errors.is_empty());
    let ingest = Arc::new(Ingest::new(table, IngestConfig::default()));
    let (addr, _) = bind_ingest(
        "127.0.0.1:0".parse().unwrap(),
        ingest,
        std::future::pending(),
    )
    .await
    .unwrap();
    addr
}

fn order(id: &str) -> String {
    json!({"id": id, "type": "Order Placed", "customer": "cus_42", "amount": 1999}).to_string()
}

async fn send(ingest: SocketAddr, id: &str) -> ingest_support::Reply {
    post_json(ingest, &format!("/h/{TOKEN}"), &order(id)).await
}

/// Senders that keep posting fresh events (and re-post an event after a 503, as real senders
/// do) until told to stop. `acked` holds the ids answered 200.
struct Senders {
    acked: Arc<Mutex<Vec<String>>>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Senders {
    fn start(ingest: SocketAddr, count: usize) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for s in 0..count {
            let (acked, refused, stop) = (acked.clone(), refused.clone(), stop.clone());
            tasks.spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("evt_{s}_{n}");
                    let reply = send(ingest, &id).await;
                    match reply.status {
                        200 => {
                            acked.lock().unwrap().push(id);
                            n += 1;
                        }
                        503 => {
                            assert!(reply.header("retry-after").is_some(), "{}", reply.text);
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                        other => panic!("unexpected {other}: {}", reply.text),
                    }
                }
            });
        }
        Self {
            acked,
            refused,
            stop,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn wait_acked(&self, at_least: usize) {
        wait_for("acknowledged events", Duration::from_secs(60), || async {
            (self.acked() >= at_least).then_some(())
        })
        .await;
    }

    async fn finish(mut self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        while let Some(done) = self.tasks.join_next().await {
            done.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.refused.load(Ordering::SeqCst))
    }
}

// ---------------------------------------------------------------------------------------------
// A real HTTP receiver

#[derive(Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Received>>>);

impl Log {
    fn all(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }
}

/// A CloudEvents receiver: records each request and answers 202. Aborting the returned task
/// stops it completely: the listener and every open connection (they live in its JoinSet).
async fn receiver(addr: SocketAddr, log: Log) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            log.0.lock().unwrap().push(Received {
                                headers: parts.headers,
                                body,
                            });
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(202)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (local, task)
}

fn http_sink(addr: SocketAddr, mode: CloudEventsMode) -> SinkSpec {
    SinkSpec {
        http: Some(HttpSinkSpec {
            url: Some(format!("http://{addr}/events")),
            mode,
            timeout: Some("1s".into()),
            ..HttpSinkSpec::default()
        }),
        ..SinkSpec::default()
    }
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn http_binary_mode_sends_ce_headers_and_the_data_as_body() {
    let log = Log::default();
    let (addr, _receiver) = receiver("127.0.0.1:0".parse().unwrap(), log.clone()).await;
    // Headers the operator resolved from `headersSecretRef` travel with every event.
    let mut with_headers = route(http_sink(addr, CloudEventsMode::Binary), 3600);
    with_headers.sink_secrets = Some(hookgate::route::SinkSecrets {
        headers: [(
            "Authorization".to_owned(),
            "Bearer collector-token".to_owned(),
        )]
        .into(),
        nats: None,
    });
    let ingest = ingest(with_headers).await;

    let reply = send(ingest, "evt_bin_1").await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // The 200 came after the receiver's 2xx, so the request is already recorded.
    let got = log.all();
    assert_eq!(got.len(), 1);
    let h = &got[0].headers;
    assert_eq!(header(h, "ce-specversion"), "1.0");
    assert_eq!(header(h, "authorization"), "Bearer collector-token");
    assert_eq!(header(h, "ce-id"), "evt_bin_1");
    assert_eq!(
        header(h, "ce-source"),
        "/namespaces/shop/webhooksources/orders"
    );
    // The HTTP binding percent-encodes the space.
    assert_eq!(header(h, "ce-type"), "Order%20Placed");
    let time = header(h, "ce-time");
    assert!(time.parse::<jiff::Timestamp>().is_ok(), "{time}");
    assert_eq!(header(h, "content-type"), "application/json");
    let data: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(data["eventId"], "evt_bin_1");
    assert_eq!(data["event"], "Order Placed");
    assert_eq!(data["externalId"], "cus_42");
    assert_eq!(data["properties"]["amount"], 1999);
    assert_eq!(data["mapping"], "orders");
    assert!(
        data.get("specversion").is_none(),
        "binary mode body is data only"
    );
}

#[tokio::test]
async fn http_structured_mode_sends_the_whole_cloudevent() {
    let log = Log::default();
    let (addr, _receiver) = receiver("127.0.0.1:0".parse().unwrap(), log.clone()).await;
    let ingest = ingest(route(http_sink(addr, CloudEventsMode::Structured), 3600)).await;

    let reply = send(ingest, "evt_str_1").await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let got = log.all();
    assert_eq!(got.len(), 1);
    assert_eq!(
        header(&got[0].headers, "content-type"),
        "application/cloudevents+json"
    );
    assert!(got[0].headers.get("ce-id").is_none());
    let event: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["id"], "evt_str_1");
    assert_eq!(event["type"], "Order Placed");
    assert_eq!(event["source"], "/namespaces/shop/webhooksources/orders");
    assert_eq!(event["datacontenttype"], "application/json");
    assert_eq!(event["data"]["eventId"], "evt_str_1");
}

#[tokio::test]
async fn http_receiver_refusing_4xx_is_a_503_for_the_sender_and_nothing_acked() {
    // A real server that answers 404 to everything (no CloudEvents receiver at this path).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(b"no such broker")))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let ingest = ingest(route(http_sink(addr, CloudEventsMode::Binary), 3600)).await;
    let reply = send(ingest, "evt_404").await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(reply.text.contains("answered 404"), "{}", reply.text);
    // The event's contents never appear in the error.
    assert!(!reply.text.contains("cus_42"), "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_receiver_stopped_mid_run_gives_503_and_loses_no_acknowledged_event() {
    let log = Log::default();
    let (addr, first) = receiver("127.0.0.1:0".parse().unwrap(), log.clone()).await;
    let ingest = ingest(route(http_sink(addr, CloudEventsMode::Binary), 3600)).await;

    let senders = Senders::start(ingest, 4);
    senders.wait_acked(20).await;
    first.abort();
    let _ = first.await;
    wait_for(
        "503s while the receiver is down",
        Duration::from_secs(30),
        || async { (senders.refused.load(Ordering::SeqCst) >= 4).then_some(()) },
    )
    .await;
    let before = senders.acked();
    let (_, second) = receiver(addr, log.clone()).await;
    senders.wait_acked(before + 20).await;
    let (acked, refused) = senders.finish().await;
    second.abort();

    assert!(refused >= 4, "{refused}");
    let received: HashSet<String> = log
        .all()
        .iter()
        .map(|r| header(&r.headers, "ce-id").to_owned())
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !received.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never received: {missing:?}"
    );
}

#[tokio::test]
async fn http_service_reference_left_unresolved_is_a_503_that_says_so() {
    // What the route carries while the operator cannot find the Service: the reference, no URL.
    let spec = SinkSpec {
        http: Some(HttpSinkSpec {
            service_ref: Some(hookgate::api::webhook_source::ServiceRef {
                name: "collector".into(),
                ..Default::default()
            }),
            ..HttpSinkSpec::default()
        }),
        ..SinkSpec::default()
    };
    let ingest = ingest(route(spec, 3600)).await;
    let reply = send(ingest, "evt_unresolved").await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(reply.header("retry-after").is_some(), "{}", reply.text);
    assert!(
        reply.text.contains("serviceRef is not resolved") && reply.text.contains("SinkReady"),
        "{}",
        reply.text
    );
}

// ---------------------------------------------------------------------------------------------
// A real nats-server with JetStream

fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HOOKGATE_NATS_SERVER") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .expect(
            "nats-server not found: run scripts/install-nats-server or set HOOKGATE_NATS_SERVER",
        )
}

/// How the tests' own client logs in to an auth-enabled server.
#[derive(Clone)]
enum Admin {
    Anonymous,
    UserPassword(String, String),
    Token(String),
    Creds(String),
}

impl Admin {
    async fn connect(&self, url: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
        let options = match self {
            Admin::Anonymous => async_nats::ConnectOptions::new(),
            Admin::UserPassword(u, p) => {
                async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
            Admin::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
            Admin::Creds(c) => async_nats::ConnectOptions::with_credentials(c)
                .expect("the fixture is a valid credentials file"),
        };
        options.connect(url).await
    }
}

struct Nats {
    child: tokio::process::Child,
    port: u16,
    store: PathBuf,
    /// Extra top-level lines of the server's config file (authorization, operator mode).
    config: String,
    admin: Admin,
}

impl Nats {
    /// A fresh server on a free loopback port with its own store directory.
    async fn start() -> Self {
        Self::start_with_config("", Admin::Anonymous).await
    }

    /// A server that requires authentication: `config` holds the lines of its config file
    /// that say how (an `authorization` block, operator mode), `admin` how the test logs in.
    async fn start_with_config(config: &str, admin: Admin) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let store = std::env::temp_dir().join(format!(
            "hookgate-nats-{}",
            random
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        let child = Self::spawn(port, &store, config, &admin).await;
        Self {
            child,
            port,
            store,
            config: config.to_owned(),
            admin,
        }
    }

    async fn spawn(
        port: u16,
        store: &std::path::Path,
        extra: &str,
        admin: &Admin,
    ) -> tokio::process::Child {
        std::fs::create_dir_all(store).unwrap();
        let config = store.join("nats.conf");
        let mut text = format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {:?} }}\n",
            store.join("js")
        );
        text.push_str(extra);
        text.push('\n');
        std::fs::write(&config, text).unwrap();
        let child = tokio::process::Command::new(nats_server_binary())
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting nats-server");
        // Ready when a client can connect and JetStream answers.
        let url = format!("nats://127.0.0.1:{port}");
        wait_for(
            "nats-server with JetStream",
            Duration::from_secs(30),
            || {
                let (url, admin) = (url.clone(), admin.clone());
                async move {
                    let client = admin.connect(&url).await.ok()?;
                    // The JetStream API's account info, raw (async-nats' typed reply expects
                    // fields a 2.9 server does not send): any reply means it is serving.
                    client
                        .request("$JS.API.INFO", Bytes::new())
                        .await
                        .ok()
                        .map(|_| ())
                }
            },
        )
        .await;
        child
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn stop(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// The same port and store: what a restarted broker looks like to its clients.
    async fn restart(&mut self) {
        self.child = Self::spawn(self.port, &self.store, &self.config, &self.admin).await;
    }

    async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.admin.connect(&self.url()).await.unwrap())
    }

    async fn create_stream(&self, name: &str, subject: &str) {
        self.jetstream()
            .await
            .create_stream(async_nats::jetstream::stream::Config {
                name: name.into(),
                subjects: vec![subject.into()],
                storage: async_nats::jetstream::stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// Every message of the stream: `(Nats-Msg-Id, payload as JSON)`.
    async fn messages(&self, stream: &str) -> Vec<(String, Value)> {
        let js = self.jetstream().await;
        let mut stream = js.get_stream(stream).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let mut out = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            if state.messages == 0 {
                break;
            }
            let m = stream.get_raw_message(seq).await.unwrap();
            let id = m
                .headers
                .get("Nats-Msg-Id")
                .expect("Nats-Msg-Id header")
                .to_string();
            out.push((id, serde_json::from_slice(&m.payload).unwrap()));
        }
        out
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn nats_sink(url: String, stream: Option<&str>) -> SinkSpec {
    SinkSpec {
        nats: Some(NatsSinkSpec {
            url,
            subject: "hookgate.events".into(),
            stream: stream.map(Into::into),
            credentials_secret_ref: None,
        }),
        ..SinkSpec::default()
    }
}

#[tokio::test]
async fn nats_publishes_cloudevents_with_msg_id_and_jetstream_drops_duplicates() {
    let nats = Nats::start().await;
    nats.create_stream("EVENTS", "hookgate.events").await;
    // The ingest's own dedup is off, so the duplicate reaches JetStream.
    let ingest = ingest(route(nats_sink(nats.url(), Some("EVENTS")), 0)).await;

    for id in ["evt_n1", "evt_n1", "evt_n2"] {
        let reply = send(ingest, id).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json()["status"], "delivered", "{}", reply.text);
    }

    let messages = nats.messages("EVENTS").await;
    let ids: Vec<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["evt_n1", "evt_n2"]);
    let (_, event) = &messages[0];
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["id"], "evt_n1");
    assert_eq!(event["source"], "/namespaces/shop/webhooksources/orders");
    assert_eq!(event["data"]["externalId"], "cus_42");
}

#[tokio::test]
async fn nats_subject_captured_by_another_stream_is_refused_not_acknowledged() {
    let nats = Nats::start().await;
    nats.create_stream("EVENTS", "hookgate.events").await;
    let ingest = ingest(route(nats_sink(nats.url(), Some("ELSEWHERE")), 3600)).await;
    let reply = send(ingest, "evt_wrong_stream").await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(nats.messages("EVENTS").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_stopped_mid_run_gives_503_and_loses_no_acknowledged_event() {
    let mut nats = Nats::start().await;
    nats.create_stream("EVENTS", "hookgate.events").await;
    // Ingest dedup off: every sender retry reaches JetStream, whose Nats-Msg-Id dedup must
    // keep one copy of an event published both before and after the outage.
    let ingest = ingest(route(nats_sink(nats.url(), Some("EVENTS")), 0)).await;

    let senders = Senders::start(ingest, 4);
    senders.wait_acked(20).await;
    nats.stop().await;
    wait_for(
        "503s while nats-server is down",
        Duration::from_secs(30),
        || async { (senders.refused.load(Ordering::SeqCst) >= 4).then_some(()) },
    )
    .await;
    let before = senders.acked();
    nats.restart().await;
    senders.wait_acked(before + 20).await;
    let (acked, refused) = senders.finish().await;
    assert!(refused >= 4, "{refused}");

    let messages = nats.messages("EVENTS").await;
    let stored: HashSet<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        stored.len(),
        messages.len(),
        "JetStream kept duplicates of an event id"
    );
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the stream: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// NATS with authentication

/// Everything this test binary logs (hookgate and async-nats at TRACE, the most a person could
/// turn on), so a test can prove a credential never reached the logs.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        #[derive(Clone)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(logs.clone());
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "async_nats=trace,hookgate=trace",
            ))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        logs
    })
    .clone()
}

fn logs_text(logs: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

fn nats_route(url: String, auth: Option<NatsAuth>) -> Route {
    let mut r = route(nats_sink(url, Some("EVENTS")), 3600);
    r.sink_secrets = auth.map(|auth| hookgate::route::SinkSecrets {
        headers: Default::default(),
        nats: Some(auth),
    });
    r
}

/// The NKey pair of the NATS documentation's examples (a test fixture, not a credential of
/// anything): the server lists the public key, the client signs the server's nonce with the seed.
const NKEY_PUBLIC: &str = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";
const NKEY_SEED: &str = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";

/// Right credentials: 200 only after the PubAck, so the event is already in the stream.
async fn assert_delivered(nats: &Nats, auth: NatsAuth, id: &str) {
    let what = auth.kind();
    let ingest = ingest(nats_route(nats.url(), Some(auth))).await;
    let reply = send(ingest, id).await;
    assert_eq!(reply.status, 200, "{what}: {}", reply.text);
    assert_eq!(
        reply.json()["status"],
        "delivered",
        "{what}: {}",
        reply.text
    );
    let stored: Vec<String> = nats
        .messages("EVENTS")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(
        stored.iter().any(|s| s == id),
        "{what}: {id} not in {stored:?}"
    );
}

/// Wrong credentials: a retryable 503 that says the server refused them, and nothing stored.
/// Returns the error body for the caller's leak checks.
async fn assert_refused(nats: &Nats, auth: NatsAuth, id: &str) -> String {
    let what = auth.kind();
    let ingest = ingest(nats_route(nats.url(), Some(auth))).await;
    let reply = send(ingest, id).await;
    assert_eq!(reply.status, 503, "{what}: {}", reply.text);
    assert!(
        reply.header("retry-after").is_some(),
        "{what}: no Retry-After on {}",
        reply.text
    );
    assert!(
        reply.text.contains("authorization violation"),
        "{what}: the 503 should say the server refused the credentials: {}",
        reply.text
    );
    let stored = nats.messages("EVENTS").await;
    assert!(
        stored.iter().all(|(s, _)| s != id),
        "{what}: refused yet stored"
    );
    reply.text
}

#[tokio::test]
async fn nats_with_user_password_or_nkey_delivers_and_wrong_credentials_get_503_without_leaking() {
    let logs = captured_logs();
    let password = "pw-9f2c41d7e0b3a856";
    let wrong_password = "pw-wrong-5e8a1c3b7d90";
    let nats = Nats::start_with_config(
        &format!(
            r#"authorization {{ users = [
  {{user: "hookgate", password: "{password}"}}
  {{user: "admin", password: "admin-pw"}}
  {{nkey: "{NKEY_PUBLIC}"}}
] }}"#
        ),
        Admin::UserPassword("admin".into(), "admin-pw".into()),
    )
    .await;
    nats.create_stream("EVENTS", "hookgate.events").await;

    assert_delivered(
        &nats,
        NatsAuth::UserPassword {
            user: "hookgate".into(),
            password: password.into(),
        },
        "evt_auth_user",
    )
    .await;
    assert_delivered(&nats, NatsAuth::Nkey(NKEY_SEED.into()), "evt_auth_nkey").await;

    let mut bodies = vec![
        assert_refused(
            &nats,
            NatsAuth::UserPassword {
                user: "hookgate".into(),
                password: wrong_password.into(),
            },
            "evt_auth_bad_pw",
        )
        .await,
    ];
    // Anonymous against a server that requires a login is refused the same way.
    let anonymous = ingest(nats_route(nats.url(), None)).await;
    let reply = send(anonymous, "evt_auth_anon").await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    bodies.push(reply.text);

    let logs = logs_text(&logs);
    assert!(
        logs.contains("authorization violation"),
        "the refusals should be logged (without credentials)"
    );
    for secret in [password, wrong_password, NKEY_SEED] {
        assert!(!logs.contains(secret), "a NATS credential reached the logs");
        for body in &bodies {
            assert!(!body.contains(secret), "a NATS credential in a 503: {body}");
        }
    }
}

#[tokio::test]
async fn nats_with_a_token_delivers_and_a_wrong_token_gets_503_without_leaking() {
    let logs = captured_logs();
    let token = "tok-3b7e19c5a2d8f064";
    let wrong = "tok-wrong-0a9d5e2c7b41";
    let nats = Nats::start_with_config(
        &format!(r#"authorization {{ token: "{token}" }}"#),
        Admin::Token(token.into()),
    )
    .await;
    nats.create_stream("EVENTS", "hookgate.events").await;

    assert_delivered(&nats, NatsAuth::Token(token.into()), "evt_auth_token").await;
    let body = assert_refused(&nats, NatsAuth::Token(wrong.into()), "evt_auth_bad_token").await;

    let logs = logs_text(&logs);
    for secret in [token, wrong] {
        assert!(!logs.contains(secret), "a NATS token reached the logs");
        assert!(!body.contains(secret), "a NATS token in a 503: {body}");
    }
}

/// The fixtures of tests/nats-auth (made by its generate.py).
fn nats_fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/nats-auth")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The seed line of a credentials file: what must never be logged.
fn creds_seed(creds: &str) -> &str {
    creds
        .lines()
        .find(|l| l.starts_with("SU"))
        .expect("a user NKey seed in the credentials file")
}

#[tokio::test]
async fn nats_with_a_credentials_file_in_operator_mode_delivers_and_an_unknown_account_gets_503() {
    let logs = captured_logs();
    let (user, rogue) = (nats_fixture("user.creds"), nats_fixture("rogue.creds"));
    // Decentralized auth: the server trusts an operator and knows its accounts (preloaded, no
    // account server; JetStream needs the system account); users are whoever an account signed.
    let operator =
        std::env::temp_dir().join(format!("hookgate-nats-operator-{}.jwt", std::process::id()));
    std::fs::write(&operator, nats_fixture("operator.jwt")).unwrap();
    let nats = Nats::start_with_config(
        &format!(
            "operator: {operator:?}\nsystem_account: {system}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {account}: {:?}\n  {system}: {:?}\n}}",
            nats_fixture("account.jwt").trim(),
            nats_fixture("system.jwt").trim(),
            account = nats_fixture("account.pub").trim(),
            system = nats_fixture("system.pub").trim(),
        ),
        Admin::Creds(user.clone()),
    )
    .await;
    nats.create_stream("EVENTS", "hookgate.events").await;

    assert_delivered(&nats, NatsAuth::Creds(user.clone()), "evt_auth_creds").await;
    let body = assert_refused(&nats, NatsAuth::Creds(rogue.clone()), "evt_auth_rogue").await;

    // Not a credentials file at all: refused before connecting, without quoting it.
    let garbage = "not-a-creds-file-7c2e91";
    let ingest = ingest(nats_route(
        nats.url(),
        Some(NatsAuth::Creds(garbage.into())),
    ))
    .await;
    let reply = send(ingest, "evt_auth_garbage").await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(
        reply.text.contains("not a valid NATS credentials file"),
        "{}",
        reply.text
    );
    assert!(!reply.text.contains(garbage), "{}", reply.text);

    let logs = logs_text(&logs);
    for secret in [creds_seed(&user), creds_seed(&rogue), garbage] {
        assert!(
            !logs.contains(secret),
            "a credentials file's seed reached the logs"
        );
        assert!(
            !body.contains(secret),
            "a credentials file's seed in a 503: {body}"
        );
    }
    let _ = std::fs::remove_file(&operator);
}
