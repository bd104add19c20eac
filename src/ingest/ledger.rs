//! `hookgate bench-ledger` (hidden): the no-loss ledger of RELIABILITY.md.
//!
//! - `send`: concurrent senders post distinct signed events, each with a unique event id,
//!   retry every answer other than 200 with backoff (as Stripe and Standard Webhooks senders
//!   do), and record every attempt — id, HTTP status or connection error, times — in a ledger.
//! - `receive`: a CloudEvents HTTP receiver that appends each event to a file before it
//!   answers 200, so what it acknowledged is on disk even if it is stopped right after.
//! - `nats-stream`: the JetStream stream the NATS sink publishes to.
//! - `reconcile`: the ledger against what the sinks hold. Every event answered 200 must be at
//!   its sink; copies of one id are allowed (at-least-once); an event at a sink that is not
//!   the one its id and payload say is a failure, and so is any acknowledged event missing.
//!
//! The faults themselves (kill -9, SIGSTOP) are the caller's: `scripts/ledger`, `tests/ledger.rs`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::webhook_source::SignatureScheme;
use crate::ingest::verify::{SignRequest, sign};

#[derive(clap::Args, Debug)]
pub struct LedgerArgs {
    #[command(subcommand)]
    pub command: LedgerCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum LedgerCommand {
    /// Post distinct events until told to stop, retrying until 200; record every attempt.
    Send(SendArgs),
    /// A CloudEvents HTTP receiver that records each event before answering 200.
    Receive(ReceiveArgs),
    /// Create the JetStream stream the NATS sink publishes to (if missing).
    NatsStream(NatsStreamArgs),
    /// Compare the ledger with the sinks; fails on any acknowledged-and-lost or foreign event.
    Reconcile(ReconcileArgs),
}

pub fn run(args: LedgerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match args.command {
        LedgerCommand::Send(a) => runtime.block_on(send(a)),
        LedgerCommand::Receive(a) => runtime.block_on(receive(a)),
        LedgerCommand::NatsStream(a) => runtime.block_on(nats_stream(a)),
        LedgerCommand::Reconcile(a) => runtime.block_on(reconcile(a)),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One attempt to deliver one event: a line of the ledger.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Attempt {
    pub id: String,
    /// The target (sink) the event was sent to; also part of the id.
    pub target: String,
    pub attempt: u32,
    /// The HTTP status, or 0 when no answer came (`error` says why).
    pub status: u16,
    /// For a 200 the body's `status` (`delivered`, `duplicate`, `ignored`), else its
    /// `error.code` (`sink_unavailable`, `not_ready`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// `connect` (refused), `connection` (broken mid-request) or `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The `Retry-After` seconds of the answer, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    pub sent_ms: u64,
    pub done_ms: u64,
}

/// The event id of `seq` sent to `target` in `run`.
pub fn event_id(run: &str, target: &str, seq: u64) -> String {
    format!("{run}-{target}-{seq}")
}

/// The payload of one event: a Stripe-like order with a raw email (for the leak scan) and its
/// sequence number, which must come back in the sink's `properties.seq` for the same id.
pub fn payload(id: &str, seq: u64) -> Value {
    json!({
        "id": id,
        "type": "order.paid",
        "seq": seq,
        "customer": {"id": format!("cus_{seq}"), "email": format!("buyer.{seq}@ledger-mail.example")},
        "amount": 1000 + seq % 9000,
        "currency": "eur",
        "lines": [{"sku": "sku_1", "qty": 1}, {"sku": "sku_2", "qty": 2}],
    })
}

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// A file of lines `NAME URL`. NAME labels the sink behind the URL and is part of each
    /// event id; the URL is the secret webhook URL, hence a file and not an argument.
    #[arg(long)]
    pub targets: PathBuf,
    /// Where every attempt is appended, one JSON line each.
    #[arg(long)]
    pub ledger: PathBuf,
    /// Prefix of every event id; unique per run so runs never mix.
    #[arg(long)]
    pub run: String,
    /// Concurrent senders, spread round-robin over the targets.
    #[arg(long, default_value_t = 8)]
    pub senders: usize,
    /// Pause of each sender between two events.
    #[arg(long, default_value = "20ms", value_parser = crate::api::parse_duration)]
    pub interval: Duration,
    /// Once this file exists the senders start no new event and retry the ones they hold.
    #[arg(long)]
    pub stop_file: PathBuf,
    /// How long after the stop unacknowledged events are still retried.
    #[arg(long, default_value = "60s", value_parser = crate::api::parse_duration)]
    pub drain: Duration,
    /// A bound on the whole run, stop file or not.
    #[arg(long, default_value = "15m", value_parser = crate::api::parse_duration)]
    pub max_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = crate::api::parse_duration)]
    pub attempt_timeout: Duration,
    /// The longest pause between two attempts of one event (Retry-After is capped to it).
    #[arg(long, default_value = "5s", value_parser = crate::api::parse_duration)]
    pub max_backoff: Duration,
    /// The sources' GitHub signing secret (X-Hub-Signature-256); unsigned without it.
    #[arg(long, env = "HOOKGATE_SIGNING_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

struct Target {
    name: String,
    uri: Uri,
    next: AtomicU64,
}

struct Sender {
    args: SendArgs,
    targets: Vec<Target>,
    client: Client<HttpConnector, Full<Bytes>>,
    ledger: Mutex<std::fs::File>,
    stopping: AtomicBool,
    /// Unix ms after which unacknowledged events are given up.
    give_up_ms: AtomicU64,
}

impl Sender {
    fn record(&self, attempt: &Attempt) {
        let mut line = serde_json::to_vec(attempt).unwrap_or_default();
        line.push(b'\n');
        // One write per line on an O_APPEND file: a line is whole even if the run dies.
        let mut file = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(&line) {
            eprintln!("bench-ledger: writing the ledger failed: {e}");
            std::process::exit(2);
        }
    }

    async fn run_sender(self: Arc<Self>, target: usize) {
        let t = &self.targets[target];
        while !self.stopping.load(Ordering::Acquire) {
            let seq = t.next.fetch_add(1, Ordering::Relaxed);
            self.deliver(t, seq).await;
            tokio::time::sleep(self.args.interval).await;
        }
    }

    /// Sends one event until it is answered 200 or the drain is over.
    async fn deliver(&self, target: &Target, seq: u64) {
        let id = event_id(&self.args.run, &target.name, seq);
        let body = serde_json::to_vec(&payload(&id, seq)).unwrap_or_default();
        let mut backoff = Duration::from_millis(100);
        for attempt in 1u32.. {
            let sent_ms = now_ms();
            let (status, outcome, error, retry_after) = self.attempt(target, &id, &body).await;
            self.record(&Attempt {
                id: id.clone(),
                target: target.name.clone(),
                attempt,
                status,
                outcome,
                error,
                retry_after: retry_after.map(|d| d.as_secs()),
                sent_ms,
                done_ms: now_ms(),
            });
            if status == 200 {
                return;
            }
            if now_ms() >= self.give_up_ms.load(Ordering::Acquire) {
                return;
            }
            let pause = retry_after.unwrap_or(backoff).min(self.args.max_backoff);
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(self.args.max_backoff);
        }
    }

    /// (status, 200 outcome, error kind, Retry-After).
    async fn attempt(
        &self,
        target: &Target,
        id: &str,
        body: &[u8],
    ) -> (u16, Option<String>, Option<String>, Option<Duration>) {
        let mut request = Request::post(target.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("X-GitHub-Event", "order")
            .header("X-GitHub-Delivery", id);
        if let Some(secret) = &self.args.secret {
            let signed = sign(&SignRequest {
                scheme: SignatureScheme::Github,
                secret,
                body,
                now_unix: i64::try_from(now_ms() / 1000).unwrap_or(0),
                message_id: id,
                header: None,
                algorithm: None,
                encoding: None,
                prefix: None,
            });
            for (name, value) in signed.unwrap_or_default() {
                request = request.header(name, value);
            }
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("a POST with ASCII headers is a valid request");
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, bytes))
        };
        match tokio::time::timeout(self.args.attempt_timeout, exchange).await {
            Err(_) => (0, None, Some("timeout".into()), None),
            Ok(Err(e)) => {
                let kind = if e.is_connect() {
                    "connect"
                } else {
                    "connection"
                };
                (0, None, Some(kind.into()), None)
            }
            Ok(Ok((status, retry_after, bytes))) => {
                let body = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
                let outcome = if status == StatusCode::OK {
                    body["status"].as_str()
                } else {
                    body["error"]["code"].as_str()
                };
                let outcome = outcome.map(str::to_owned);
                (status.as_u16(), outcome, None, retry_after)
            }
        }
    }
}

fn read_targets(path: &Path) -> anyhow::Result<Vec<Target>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut targets = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        // The URL is a secret: errors name the line, never quote it.
        let (name, url) = line
            .split_once(char::is_whitespace)
            .with_context(|| format!("{} line {}: expected `NAME URL`", path.display(), n + 1))?;
        anyhow::ensure!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "{} line {}: NAME must be alphanumeric (it is part of event ids)",
            path.display(),
            n + 1
        );
        let uri: Uri = url
            .trim()
            .parse()
            .ok()
            .filter(|u: &Uri| u.scheme_str() == Some("http"))
            .with_context(|| format!("{} line {}: not an http:// URL", path.display(), n + 1))?;
        targets.push(Target {
            name: name.to_owned(),
            uri,
            next: AtomicU64::new(0),
        });
    }
    anyhow::ensure!(!targets.is_empty(), "{} names no target", path.display());
    Ok(targets)
}

async fn send(args: SendArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.senders > 0, "--senders must be positive");
    let targets = read_targets(&args.targets)?;
    let ledger = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.ledger)
        .with_context(|| format!("opening {}", args.ledger.display()))?;
    let started = now_ms();
    let hard_stop = started + u64::try_from(args.max_duration.as_millis()).unwrap_or(u64::MAX);
    let senders = args.senders;
    let sender = Arc::new(Sender {
        targets,
        client: Client::builder(TokioExecutor::new()).build_http(),
        ledger: Mutex::new(ledger),
        stopping: AtomicBool::new(false),
        give_up_ms: AtomicU64::new(hard_stop),
        args,
    });
    eprintln!(
        "bench-ledger: {senders} senders over {} targets",
        sender.targets.len()
    );
    let tasks: Vec<_> = (0..senders)
        .map(|i| tokio::spawn(sender.clone().run_sender(i % sender.targets.len())))
        .collect();
    // The stop file is polled rather than watched: it is created by a script or a test, and a
    // tenth of a second is far below the phases' lengths.
    while !sender.args.stop_file.exists() && now_ms() < hard_stop {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain = u64::try_from(sender.args.drain.as_millis()).unwrap_or(u64::MAX);
    sender.give_up_ms.store(
        now_ms().saturating_add(drain).min(hard_stop),
        Ordering::Release,
    );
    sender.stopping.store(true, Ordering::Release);
    eprintln!("bench-ledger: stopping; retrying held events for up to {drain} ms");
    for task in tasks {
        task.await.context("a sender panicked")?;
    }
    let started_events: u64 = sender
        .targets
        .iter()
        .map(|t| t.next.load(Ordering::Relaxed))
        .sum();
    eprintln!(
        "bench-ledger: done after {} ms, {started_events} events",
        now_ms() - started
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ReceiveArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Each event is appended here (`{"id", "data"}` per line) before the 200.
    #[arg(long)]
    pub out: PathBuf,
}

async fn receive(args: ReceiveArgs) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    let file = Arc::new(Mutex::new(file));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "bench-ledger receiver listening addr={}",
        listener.local_addr()?
    );
    let handler = move |request: Request<hyper::body::Incoming>| {
        let file = file.clone();
        async move {
            let id = request
                .headers()
                .get("ce-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = match request.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return plain(StatusCode::BAD_REQUEST, "body unreadable"),
            };
            let data: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            // Binary mode carries the id in `ce-id`; structured mode in the body.
            let id = id.or_else(|| data["id"].as_str().map(str::to_owned));
            let data = if data.get("specversion").is_some() {
                data["data"].clone()
            } else {
                data
            };
            let mut line = serde_json::to_vec(&json!({"id": id, "data": data})).unwrap_or_default();
            line.push(b'\n');
            let written = file
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(&line);
            match written {
                Ok(()) => plain(StatusCode::OK, "ok"),
                Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "not recorded"),
            }
        }
    };
    super::server::serve(listener, handler, Duration::from_secs(10), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

#[derive(clap::Args, Debug)]
pub struct NatsStreamArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long)]
    pub stream: String,
    /// Subjects the stream captures, e.g. `ledger.>`.
    #[arg(long, required = true)]
    pub subject: Vec<String>,
}

async fn nats_stream(args: NatsStreamArgs) -> anyhow::Result<()> {
    let client = async_nats::connect(args.url.as_str())
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: args.stream.clone(),
        subjects: args.subject.clone(),
        // Longer than any run, so every retry of an event within a run is deduplicated.
        duplicate_window: Duration::from_secs(30 * 60),
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating stream {}", args.stream))?;
    eprintln!("bench-ledger: stream {} ready", args.stream);
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    /// The ledger(s) written by `send`.
    #[arg(long, required = true)]
    pub ledger: Vec<PathBuf>,
    /// `NAME=FILE`: JSON lines with `id` and `data` — the receiver's records or the stdout
    /// sink's CloudEvents — for the target NAME. Repeatable, also for one NAME.
    #[arg(long = "events")]
    pub events: Vec<String>,
    /// `NAME=nats://host:port/STREAM`: read the whole stream back.
    #[arg(long = "nats")]
    pub nats: Vec<String>,
    /// Lines `NAME START_MS END_MS`: attempts are also counted per phase.
    #[arg(long)]
    pub phases: Option<PathBuf>,
    /// Also write the summary as JSON here.
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

/// What a sink holds for one event.
#[derive(Debug)]
pub struct SinkRecord {
    pub sink: String,
    pub id: String,
    pub data: Value,
}

#[derive(Serialize, Default, Debug, Clone)]
pub struct AttemptCounts {
    pub requests: u64,
    pub answered_200: u64,
    pub answered_503: u64,
    pub answered_other: u64,
    pub connection_errors: u64,
    pub timeouts: u64,
}

impl AttemptCounts {
    fn add(&mut self, a: &Attempt) {
        self.requests += 1;
        match (a.status, a.error.as_deref()) {
            (200, _) => self.answered_200 += 1,
            (503, _) => self.answered_503 += 1,
            (0, Some("timeout")) => self.timeouts += 1,
            (0, _) => self.connection_errors += 1,
            _ => self.answered_other += 1,
        }
    }
}

#[derive(Serialize, Default, Debug)]
pub struct Summary {
    pub events_sent: u64,
    #[serde(flatten)]
    pub attempts: AttemptCounts,
    /// 200 bodies by their `status`.
    pub answered_200_by_outcome: BTreeMap<String, u64>,
    /// Answers other than 200 by HTTP status and error code, e.g. `503 sink_unavailable`.
    pub answered_non_200_by_code: BTreeMap<String, u64>,
    /// 503s without `Retry-After` (DESIGN §5 promises one).
    pub answered_503_without_retry_after: u64,
    /// Attempts after the first of an event.
    pub retries: u64,
    pub events_retried: u64,
    pub events_acknowledged: u64,
    /// Never answered 200 before the sender gave up (allowed: never acknowledged).
    pub events_unacknowledged: u64,
    pub sink_records: u64,
    pub sink_distinct_ids: u64,
    /// Extra copies of an id at its sink (allowed: at-least-once).
    pub duplicates_same_id: u64,
    /// At the sink although no attempt was answered 200 (allowed).
    pub delivered_without_ack: u64,
    /// Must be 0.
    pub acknowledged_and_lost: u64,
    /// Events at a sink with an id nobody sent, at the wrong sink, or whose payload does not
    /// match the id (a copy under another id). Must be 0.
    pub foreign_or_mismatched: u64,
    pub lost_ids: Vec<String>,
    pub foreign_examples: Vec<String>,
    pub per_target: BTreeMap<String, AttemptCounts>,
    pub per_phase: Vec<(String, u64, AttemptCounts)>,
    pub first_attempt_ms: u64,
    pub last_answer_ms: u64,
}

pub fn read_ledger(path: &Path) -> anyhow::Result<Vec<Attempt>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

/// A file of JSON lines with `id` and `data` (the receiver's or the stdout sink's).
pub fn read_sink_file(sink: &str, path: &Path) -> anyhow::Result<Vec<SinkRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?;
        out.push(SinkRecord {
            sink: sink.to_owned(),
            id: value["id"].as_str().unwrap_or_default().to_owned(),
            data: value["data"].clone(),
        });
    }
    Ok(out)
}

/// Every message of a JetStream stream; the message's `Nats-Msg-Id` must equal the CloudEvent id.
pub async fn read_nats(sink: &str, url: &str) -> anyhow::Result<Vec<SinkRecord>> {
    let (server, stream) = url
        .rsplit_once('/')
        .filter(|(s, n)| s.starts_with("nats://") && !n.is_empty())
        .with_context(|| format!("--nats {sink}={url}: expected nats://host:port/STREAM"))?;
    let client = async_nats::connect(server)
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream}"))?;
    let state = stream.info().await.context("stream info")?.state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    for seq in state.first_sequence..=state.last_sequence {
        let message = stream
            .get_raw_message(seq)
            .await
            .with_context(|| format!("reading message {seq}"))?;
        let event: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        let msg_id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned());
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        // A message whose dedup key differs from its event id would defeat JetStream's dedup.
        let id = if msg_id.as_deref() == Some(id.as_str()) {
            id
        } else {
            format!("{id} (Nats-Msg-Id {msg_id:?})")
        };
        out.push(SinkRecord {
            sink: sink.to_owned(),
            id,
            data: event["data"].clone(),
        });
    }
    Ok(out)
}

fn read_phases(path: &Path) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            match parts.as_slice() {
                [name, start, end] => Ok((name.to_string(), start.parse()?, end.parse()?)),
                _ => anyhow::bail!("{}: expected `NAME START_MS END_MS`: {l}", path.display()),
            }
        })
        .collect()
}

/// The reconciliation itself, pure: attempts and sink records in, counts out.
pub fn reconcile_records(
    attempts: &[Attempt],
    records: &[SinkRecord],
    phases: &[(String, u64, u64)],
) -> Summary {
    let mut s = Summary::default();
    // id -> (target, acknowledged)
    let mut events: HashMap<&str, (&str, bool)> = HashMap::new();
    let mut retried: HashSet<&str> = HashSet::new();
    let mut per_phase: Vec<(String, u64, AttemptCounts)> = phases
        .iter()
        .map(|(n, start, end)| {
            (
                n.clone(),
                end.saturating_sub(*start),
                AttemptCounts::default(),
            )
        })
        .collect();
    s.first_attempt_ms = u64::MAX;
    for a in attempts {
        s.attempts.add(a);
        s.per_target.entry(a.target.clone()).or_default().add(a);
        for (i, (_, start, end)) in phases.iter().enumerate() {
            if (*start..*end).contains(&a.sent_ms) {
                per_phase[i].2.add(a);
            }
        }
        match a.status {
            200 => {
                *s.answered_200_by_outcome
                    .entry(a.outcome.clone().unwrap_or_else(|| "unreadable".into()))
                    .or_default() += 1
            }
            0 => {}
            code => {
                let key = format!("{code} {}", a.outcome.as_deref().unwrap_or("-"));
                *s.answered_non_200_by_code.entry(key).or_default() += 1;
                if code == 503 && a.retry_after.is_none() {
                    s.answered_503_without_retry_after += 1;
                }
            }
        }
        if a.attempt > 1 {
            s.retries += 1;
            retried.insert(&a.id);
        }
        let entry = events.entry(&a.id).or_insert((&a.target, false));
        entry.1 |= a.status == 200;
        s.first_attempt_ms = s.first_attempt_ms.min(a.sent_ms);
        s.last_answer_ms = s.last_answer_ms.max(a.done_ms);
    }
    if attempts.is_empty() {
        s.first_attempt_ms = 0;
    }
    s.per_phase = per_phase;
    s.events_sent = events.len() as u64;
    s.events_retried = retried.len() as u64;
    s.events_acknowledged = events.values().filter(|(_, ack)| *ack).count() as u64;
    s.events_unacknowledged = s.events_sent - s.events_acknowledged;

    let mut at_sink: HashMap<&str, u64> = HashMap::new();
    for r in records {
        s.sink_records += 1;
        let expected = events.get(r.id.as_str());
        let seq = r.id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok());
        let matches = expected.is_some_and(|(target, _)| *target == r.sink)
            && r.data["eventId"].as_str() == Some(r.id.as_str())
            && seq.is_some()
            && r.data["properties"]["seq"].as_u64() == seq;
        if matches {
            *at_sink.entry(r.id.as_str()).or_default() += 1;
        } else {
            s.foreign_or_mismatched += 1;
            if s.foreign_examples.len() < 10 {
                s.foreign_examples
                    .push(format!("{} at sink {}", r.id, r.sink));
            }
        }
    }
    s.sink_distinct_ids = at_sink.len() as u64;
    s.duplicates_same_id = at_sink.values().map(|n| n - 1).sum();
    let mut lost: Vec<String> = events
        .iter()
        .filter(|(id, (_, ack))| *ack && !at_sink.contains_key(*id))
        .map(|(id, _)| (*id).to_owned())
        .collect();
    lost.sort();
    s.acknowledged_and_lost = lost.len() as u64;
    s.lost_ids = lost;
    s.delivered_without_ack = events
        .iter()
        .filter(|(id, (_, ack))| !*ack && at_sink.contains_key(*id))
        .count() as u64;
    s
}

async fn reconcile(args: ReconcileArgs) -> anyhow::Result<()> {
    let mut attempts = Vec::new();
    for path in &args.ledger {
        attempts.extend(read_ledger(path)?);
    }
    let mut records = Vec::new();
    let mut sinks: HashSet<String> = HashSet::new();
    for spec in &args.events {
        let (name, path) = spec
            .split_once('=')
            .with_context(|| format!("--events {spec}: expected NAME=FILE"))?;
        records.extend(read_sink_file(name, Path::new(path))?);
        sinks.insert(name.to_owned());
    }
    for spec in &args.nats {
        let (name, url) = spec
            .split_once('=')
            .with_context(|| format!("--nats {spec}: expected NAME=nats://host:port/STREAM"))?;
        records.extend(read_nats(name, url).await?);
        sinks.insert(name.to_owned());
    }
    // A target whose sink was not read would count every one of its events as lost; say so.
    let targets: HashSet<&str> = attempts.iter().map(|a| a.target.as_str()).collect();
    for target in &targets {
        anyhow::ensure!(
            sinks.contains(*target),
            "the ledger has events for target {target} but no --events/--nats names its sink"
        );
    }
    let phases = match &args.phases {
        Some(path) => read_phases(path)?,
        None => Vec::new(),
    };
    let summary = reconcile_records(&attempts, &records, &phases);
    let text = serde_json::to_string_pretty(&summary)?;
    if let Some(path) = &args.summary {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", render(&summary));
    anyhow::ensure!(
        summary.acknowledged_and_lost == 0 && summary.foreign_or_mismatched == 0,
        "{} acknowledged-and-lost (e.g. {:?}), {} foreign or mismatched (e.g. {:?})",
        summary.acknowledged_and_lost,
        summary.lost_ids.iter().take(10).collect::<Vec<_>>(),
        summary.foreign_or_mismatched,
        summary.foreign_examples
    );
    Ok(())
}

/// The summary as the table RELIABILITY.md shows.
pub fn render(s: &Summary) -> String {
    let mut out = String::new();
    let seconds = s.last_answer_ms.saturating_sub(s.first_attempt_ms) as f64 / 1000.0;
    let row = |out: &mut String, k: &str, v: String| out.push_str(&format!("| {k} | {v} |\n"));
    out.push_str("| what | count |\n|---|---|\n");
    row(
        &mut out,
        "events sent (distinct ids)",
        s.events_sent.to_string(),
    );
    row(
        &mut out,
        "requests sent (attempts)",
        s.attempts.requests.to_string(),
    );
    row(
        &mut out,
        "answered 200",
        format!(
            "{} {:?}",
            s.attempts.answered_200, s.answered_200_by_outcome
        ),
    );
    row(
        &mut out,
        "answered 503",
        s.attempts.answered_503.to_string(),
    );
    row(
        &mut out,
        "answered otherwise",
        s.attempts.answered_other.to_string(),
    );
    row(
        &mut out,
        "answers other than 200, by code",
        format!("{:?}", s.answered_non_200_by_code),
    );
    row(
        &mut out,
        "503 without Retry-After",
        s.answered_503_without_retry_after.to_string(),
    );
    row(
        &mut out,
        "connection errors / timeouts",
        format!("{} / {}", s.attempts.connection_errors, s.attempts.timeouts),
    );
    row(
        &mut out,
        "retried (attempts after the first / events)",
        format!("{} / {}", s.retries, s.events_retried),
    );
    row(
        &mut out,
        "events acknowledged",
        s.events_acknowledged.to_string(),
    );
    row(
        &mut out,
        "events never acknowledged (gave up)",
        s.events_unacknowledged.to_string(),
    );
    row(
        &mut out,
        "events at the sinks (records / distinct ids)",
        format!("{} / {}", s.sink_records, s.sink_distinct_ids),
    );
    row(
        &mut out,
        "duplicates (same id)",
        s.duplicates_same_id.to_string(),
    );
    row(
        &mut out,
        "at the sink without a 200",
        s.delivered_without_ack.to_string(),
    );
    row(
        &mut out,
        "foreign or mismatched (other id)",
        s.foreign_or_mismatched.to_string(),
    );
    row(
        &mut out,
        "**acknowledged and lost**",
        format!("**{}**", s.acknowledged_and_lost),
    );
    row(&mut out, "duration", format!("{seconds:.1} s"));
    if !s.per_phase.is_empty() {
        out.push_str(
            "\n| phase | length | requests | 200 | 503 | other | connection errors | timeouts |\n|---|---|---|---|---|---|---|---|\n",
        );
        for (name, ms, c) in &s.per_phase {
            out.push_str(&format!(
                "| {name} | {:.1} s | {} | {} | {} | {} | {} | {} |\n",
                *ms as f64 / 1000.0,
                c.requests,
                c.answered_200,
                c.answered_503,
                c.answered_other,
                c.connection_errors,
                c.timeouts
            ));
        }
    }
    out.push_str(
        "\n| target | requests | 200 | 503 | other | connection errors | timeouts |\n|---|---|---|---|---|---|---|\n",
    );
    for (name, c) in &s.per_target {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} |\n",
            c.requests,
            c.answered_200,
            c.answered_503,
            c.answered_other,
            c.connection_errors,
            c.timeouts
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: &str, target: &str, n: u32, status: u16) -> Attempt {
        Attempt {
            id: id.into(),
            target: target.into(),
            attempt: n,
            status,
            outcome: (status == 200).then(|| "delivered".into()),
            error: (status == 0).then(|| "connect".into()),
            retry_after: (status == 503).then_some(5),
            sent_ms: 1000 * u64::from(n),
            done_ms: 1000 * u64::from(n) + 5,
        }
    }

    fn record(sink: &str, id: &str, seq: u64) -> SinkRecord {
        SinkRecord {
            sink: sink.into(),
            id: id.into(),
            data: json!({"eventId": id, "properties": {"seq": seq}}),
        }
    }

    #[test]
    fn an_acknowledged_event_missing_at_its_sink_is_lost_and_retries_are_not() {
        let attempts = [
            attempt("r-http-0", "http", 1, 200),
            attempt("r-http-1", "http", 1, 0),
            attempt("r-http-1", "http", 2, 503),
            attempt("r-http-1", "http", 3, 200),
            attempt("r-http-2", "http", 1, 200),
            Attempt {
                retry_after: None,
                ..attempt("r-http-3", "http", 1, 503)
            },
        ];
        let records = [
            record("http", "r-http-0", 0),
            record("http", "r-http-1", 1),
            record("http", "r-http-1", 1),
            record("http", "r-http-3", 3),
        ];
        let s = reconcile_records(&attempts, &records, &[("all".into(), 0, 10_000)]);
        assert_eq!(s.lost_ids, ["r-http-2"]);
        assert_eq!(s.acknowledged_and_lost, 1);
        assert_eq!(s.duplicates_same_id, 1);
        assert_eq!(s.delivered_without_ack, 1);
        assert_eq!((s.retries, s.events_retried), (2, 1));
        assert_eq!((s.events_acknowledged, s.events_unacknowledged), (3, 1));
        assert_eq!(s.attempts.connection_errors, 1);
        assert_eq!(s.per_phase[0].2.requests, 6);
        assert_eq!(s.answered_503_without_retry_after, 1);
        assert_eq!(s.foreign_or_mismatched, 0);
    }

    #[test]
    fn a_copy_under_another_id_or_at_the_wrong_sink_is_foreign() {
        let attempts = [
            attempt("r-http-0", "http", 1, 200),
            attempt("r-nats-0", "nats", 1, 200),
        ];
        let mut copied = record("http", "r-http-7", 0);
        copied.data["eventId"] = json!("r-http-0");
        let records = [
            record("http", "r-http-0", 0),
            record("http", "r-nats-0", 0),
            record("nats", "r-nats-0", 1),
            copied,
        ];
        let s = reconcile_records(&attempts, &records, &[]);
        assert_eq!(s.foreign_or_mismatched, 3, "{:?}", s.foreign_examples);
        assert_eq!(s.lost_ids, ["r-nats-0"]);
    }
}
