//! Where events go once mapped: the [`Sink`] trait and its implementations.
//!
//! A sink acknowledges a whole batch (one request's events) or fails it; the ingest answers the
//! sender 200 only after the acknowledgement (DESIGN §5). Sinks are shared by every request of
//! every source, so implementations must be cheap to call concurrently.
//!
//! - [`stdout`]: JSON lines on standard output (or any injected writer), flushed before the
//!   acknowledgement.
//! - [`http`]: CloudEvents 1.0 over HTTP, binary or structured mode, retried within a budget.
//! - [`nats`]: JetStream publish with `Nats-Msg-Id` = event id, acknowledged by PubAck.
//!
//! [`for_spec`] turns a route's `sink` setting into a sink, one per distinct configuration.

pub mod http;
pub mod nats;
pub mod stdout;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::api::webhook_source::Sink as SinkSpec;
use crate::mapping::{EventSource, MappedEvent};

pub use stdout::WriterSink;

/// The events of one request, all from one source.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub source: &'a EventSource,
    pub events: &'a [MappedEvent<'a>],
}

/// Why a sink did not acknowledge a batch. The message is shown in status `recentErrors`
/// (stage `deliver`) and in the sender's 503 body, so it must not quote event contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub message: String,
}

impl SinkError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

thread_local! {
    static WAITING_FOR_TURN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Called by a delivery future as it returns `Pending` only to wait for the rest of the
/// current worker's turn (see [`stdout`]): it is woken without any I/O, so the ingest arms no
/// timeout for that poll.
pub(crate) fn waiting_for_turn() {
    WAITING_FOR_TURN.set(true);
}

/// Whether the future polled since the last call said [`waiting_for_turn`]; clears it.
pub(crate) fn took_turn() -> bool {
    WAITING_FOR_TURN.replace(false)
}

/// A boxed future, so `Sink` stays object-safe (`Arc<dyn Sink>` per route).
pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// An event destination.
///
/// `deliver` resolves `Ok` only when every event of the batch is durable at the destination
/// as far as this sink can know (written and flushed, HTTP 2xx, JetStream PubAck). Partial
/// success is a failure: the sender retries the whole request and dedup (by event id) absorbs
/// what already went through. The ingest bounds the call with its own timeout, so a sink need
/// not, though it should abandon work the caller no longer waits for.
pub trait Sink: Send + Sync + 'static {
    /// A short name for logs and errors: `stdout`, `http`, `nats`.
    fn kind(&self) -> &'static str;

    fn deliver<'a>(&'a self, batch: Batch<'a>) -> DeliverFuture<'a>;
}

/// A sink every delivery to which fails with the same message: what a route gets when its
/// configured sink kind is not available in this build, so the sender sees a retryable 503
/// and the operator a clear recent error instead of events silently going elsewhere.
pub struct UnavailableSink {
    kind: &'static str,
    message: String,
}

impl UnavailableSink {
    pub fn shared(kind: &'static str, message: impl Into<String>) -> Arc<dyn Sink> {
        Arc::new(Self {
            kind,
            message: message.into(),
        })
    }
}

impl Sink for UnavailableSink {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn deliver<'a>(&'a self, _batch: Batch<'a>) -> DeliverFuture<'a> {
        let error = SinkError::new(self.message.clone());
        Box::pin(async move { Err(error) })
    }
}

/// The sink for a route's `http` or `nats` setting (`stdout` and "none" are the ingest's own
/// choice, see `crate::ingest::Sinks`). Routes with the same configuration share one sink — one
/// connection pool, one NATS connection — for as long as any route uses it: the cache holds
/// weak references, so a configuration no route uses any more is closed when its last route
/// goes. A configuration that cannot work (a malformed URL) yields a sink that fails every
/// delivery with the reason, so senders get a retryable 503 and status shows why.
pub fn for_spec(spec: &SinkSpec, secrets: Option<&crate::route::SinkSecrets>) -> Arc<dyn Sink> {
    static CACHE: OnceLock<Mutex<HashMap<String, Weak<dyn Sink>>>> = OnceLock::new();
    // The spec's JSON and a digest of the resolved secrets identify the configuration; the
    // key never holds a secret itself.
    let secrets_digest = secrets
        .map(|s| crate::route::token_sha256_hex(&serde_json::to_string(s).unwrap_or_default()))
        .unwrap_or_default();
    let key = format!(
        "{}#{secrets_digest}",
        serde_json::to_string(spec).unwrap_or_default()
    );
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(sink) = cache.get(&key).and_then(Weak::upgrade) {
        return sink;
    }
    cache.retain(|_, weak| weak.strong_count() > 0);
    let sink = build(spec, secrets);
    cache.insert(key, Arc::downgrade(&sink));
    sink
}

fn build(spec: &SinkSpec, secrets: Option<&crate::route::SinkSecrets>) -> Arc<dyn Sink> {
    if let Some(h) = &spec.http {
        // The operator resolves `serviceRef` into `url` in the route it publishes; a spec
        // that reaches a sink without a URL was not resolved (standalone mode has no cluster).
        let Some(url) = h.url.as_deref() else {
            return UnavailableSink::shared(
                "http",
                "http sink: sink.http.serviceRef is not resolved (see the source's SinkReady condition; without an operator, set url)",
            );
        };
        let mut config = http::HttpSinkConfig::new(url, h.mode);
        if let Some(secrets) = secrets {
            config.headers = secrets
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        if let Some(timeout) = h
            .timeout
            .as_deref()
            .and_then(|t| crate::api::parse_duration(t).ok().filter(|d| !d.is_zero()))
        {
            config.attempt_timeout = timeout;
        }
        return match http::HttpSink::new(config) {
            Ok(sink) => Arc::new(sink),
            Err(e) => UnavailableSink::shared("http", e.message),
        };
    }
    if let Some(n) = &spec.nats {
        let mut config = nats::NatsSinkConfig::new(&n.url, &n.subject);
        config.stream = n.stream.clone().filter(|s| !s.is_empty());
        config.auth = secrets.and_then(|s| s.nats.clone());
        return match nats::NatsSink::new(config) {
            Ok(sink) => Arc::new(sink),
            Err(e) => UnavailableSink::shared("nats", e.message),
        };
    }
    UnavailableSink::shared("none", "the sink names none of stdout, http or nats")
}
