//! Where a webhook request is answered: `POST /h/<token>` and the acknowledgement contract of
//! DESIGN §5, plus the HTTP/1 accept loop shared with the admin port and the connection
//! threads the ingest's connections are served on.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use serde_json::json;
use tokio::net::TcpListener;

use crate::api::webhook_source::ErrorStage;
use crate::mapping::event::json_str;
use crate::mapping::{self, BodyFormat, Events, MappedEvent, ProjectedBody, Verdict};
use crate::sink::Batch;

use super::body::{BodyError, read_limited};
use super::limits::Seen;
use super::metrics::Outcome;
use super::status::{Count, Delivery};
use super::table::{LiveRoute, RouteTable};
use super::token;
use super::verify;

/// The flag `hookgate ingest` and `hookgate standalone` share.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// Threads serving connections, each keeping its connections (default: the CPUs the
    /// process may use); 0 serves them on the shared work-stealing runtime instead.
    #[arg(long, env = "HOOKGATE_CONNECTION_THREADS")]
    pub connection_threads: Option<usize>,
}

impl ConnectionArgs {
    /// The default configuration with these connection threads.
    pub fn ingest_config(&self) -> IngestConfig {
        let mut config = IngestConfig::default();
        if let Some(threads) = self.connection_threads {
            config.connection_threads = threads;
        }
        config
    }
}

/// Tunables of the data plane.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// How long a sink may take to acknowledge before the sender gets 503. GitHub gives up
    /// after 10 s and Shopify after 5 s, so the sender must hear back well before.
    pub sink_timeout: Duration,
    /// Time allowed for a client to send its request headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// Time allowed for the whole body once headers are in.
    pub body_read_timeout: Duration,
    /// Connections served at once; beyond it the accept loop waits for one to close (idle and
    /// slow ones do within `header_read_timeout`). Keeps descriptors for the sinks and the API
    /// client, and bounds the memory that many silent connections can pin.
    pub max_connections: usize,
    /// Threads serving connections, each with a runtime of its own ([`serve_limited`]); 0
    /// serves them on the caller's runtime.
    pub connection_threads: usize,
    /// `Retry-After` seconds for a disabled source.
    pub disabled_retry_after: u64,
    /// `Retry-After` seconds after a sink failure.
    pub sink_retry_after: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            sink_timeout: Duration::from_secs(4),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(20),
            max_connections: default_max_connections(),
            connection_threads: default_connection_threads(),
            disabled_retry_after: 60,
            sink_retry_after: 5,
        }
    }
}

/// 10,000 connections, or fewer when the process's descriptor limit would not leave 1,024 for
/// sinks, the API client and files (read from `/proc/self/limits`; elsewhere 10,000).
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse::<usize>().ok())
        });
    match soft {
        Some(soft) => soft.saturating_sub(1024).clamp(64, 10_000),
        None => 10_000,
    }
}

/// The ingest service: a route table plus configuration.
pub struct Ingest {
    table: Arc<RouteTable>,
    config: IngestConfig,
    ids: RequestIds,
}

/// Request ids: a random per-process prefix and a counter. Unique enough to find a request
/// in status and logs, and costs no syscall per request. Each thread takes the counter's
/// values a block at a time, so requests do not all write one shared atomic.
struct RequestIds {
    prefix: u32,
    /// Tells the ids of one `Ingest` from another's in a thread's block.
    owner: u64,
    next: AtomicU64,
}

/// Ids a thread takes from the shared counter at a time.
const ID_BLOCK: u64 = 256;

impl RequestIds {
    fn new() -> Self {
        static OWNERS: AtomicU64 = AtomicU64::new(1);
        let mut bytes = [0u8; 4];
        // A fixed prefix only makes ids of two processes collide; not worth failing over.
        let _ = getrandom::fill(&mut bytes);
        Self {
            prefix: u32::from_be_bytes(bytes),
            owner: OWNERS.fetch_add(1, Ordering::Relaxed),
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        thread_local! {
            /// `(owner, next, end)` of this thread's block.
            static BLOCK: Cell<(u64, u64, u64)> = const { Cell::new((0, 0, 0)) };
        }
        let n = BLOCK.with(|block| {
            let (mut owner, mut next, mut end) = block.get();
            if owner != self.owner || next == end {
                owner = self.owner;
                next = self.next.fetch_add(ID_BLOCK, Ordering::Relaxed);
                end = next.wrapping_add(ID_BLOCK);
            }
            block.set((owner, next.wrapping_add(1), end));
            next
        });
        // `format!` through `fmt` cost more than the rest of the id's path together. Exactly
        // sized, so that the response header made of it takes the buffer as it is (`Bytes`
        // allocates a header of its own for a buffer with spare capacity).
        let mut id = String::with_capacity(8 + 1 + hex_digits(n, 1) as usize);
        push_hex(&mut id, u64::from(self.prefix), 8);
        id.push('-');
        push_hex(&mut id, n, 1);
        id
    }
}

fn hex_digits(value: u64, width: u32) -> u32 {
    (64 - value.leading_zeros()).div_ceil(4).max(width)
}

/// `value` in lower-case hex, at least `width` digits.
fn push_hex(out: &mut String, value: u64, width: u32) {
    for shift in (0..hex_digits(value, width)).rev() {
        let nibble = (value >> (shift * 4)) & 0xf;
        out.push(char::from(b"0123456789abcdef"[nibble as usize]));
    }
}

/// `future` with a time limit; the timer is armed only when it does not finish on its first
/// poll. Most bodies have arrived and most sinks acknowledge inline, so a request usually
/// arms no timer at all. Nor does a sink waiting for its worker's turn (it is woken without
/// I/O, [`crate::sink::waiting_for_turn`]); the limit runs from its first other wait.
async fn within<F: Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut future = std::pin::pin!(future);
    let first = std::future::poll_fn(|cx| {
        crate::sink::took_turn();
        match future.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending if crate::sink::took_turn() => Poll::Pending,
            Poll::Pending => Poll::Ready(None),
        }
    })
    .await;
    match first {
        Some(output) => Ok(output),
        None => tokio::time::timeout(limit, future).await,
    }
}

type Resp = Response<Full<Bytes>>;

/// A constant: a `&str` name is parsed and hashed again on every insert.
const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

impl Ingest {
    pub fn new(table: Arc<RouteTable>, config: IngestConfig) -> Self {
        Self {
            table,
            config,
            ids: RequestIds::new(),
        }
    }

    pub fn table(&self) -> &Arc<RouteTable> {
        &self.table
    }

    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// Answers one request. Never logs the path: it carries the token.
    pub async fn handle<B>(&self, request: Request<B>) -> Resp
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let metrics = self.table.metrics();
        let Some(presented) = request.uri().path().strip_prefix("/h/") else {
            metrics.not_found();
            return not_found();
        };
        if request.method() != Method::POST {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "webhooks are delivered with POST",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        // Before the first full route set (a fresh start, a restart after a crash, an API
        // server that is not answering) a token not found may be one not loaded yet: 404 would
        // tell the sender to give up on an event that is retryable, so answer like an outage.
        if !self.table.is_loaded() {
            return with_retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "the ingest has not loaded its routes yet; retry shortly",
                ),
                1,
            );
        }
        // Malformed tokens (wrong length, odd characters, extra segments) are hashed and
        // looked up like any other, so they get the same answer in the same time.
        let hash = token::digest(presented.as_bytes());
        let now = Timestamp::now();
        // The request holds the snapshot it was routed by (an `Arc`), so the route itself is
        // borrowed, not counted once more on a reference count that both workers write.
        let snapshot = self.table.local_snapshot();
        let Some(route) = snapshot.lookup(&hash, now.as_second()) else {
            metrics.not_found();
            return not_found();
        };
        let request_id = self.ids.next();
        let (outcome, mut response) = self.serve_route(route, request, &request_id, now).await;
        route.state.metrics.request(outcome);
        metrics.observe_duration(started.elapsed().as_secs_f64());
        tracing::debug!(
            namespace = %route.route.namespace,
            source = %route.route.name,
            request_id = %request_id,
            outcome = outcome.as_str(),
            status = response.status().as_u16(),
            "webhook answered"
        );
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(request_id)) {
            response.headers_mut().insert(X_REQUEST_ID, value);
        }
        response
    }

    async fn serve_route<B>(
        &self,
        route: &LiveRoute,
        request: Request<B>,
        request_id: &str,
        now: Timestamp,
    ) -> (Outcome, Resp)
    where
        B: Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let status = &route.state.status;
        status.received(now);

        let refuse =
            |outcome: Outcome, stage: Option<ErrorStage>, response: Resp, message: &str| {
                status.count(Count::Rejected);
                status.request(request_id, "rejected", now);
                if let Some(stage) = stage {
                    status.error(stage, message, now);
                }
                (outcome, response)
            };

        if !route.route.enabled {
            let message = "the source is disabled";
            let response = with_retry_after(
                error(StatusCode::SERVICE_UNAVAILABLE, "source_disabled", message),
                self.config.disabled_retry_after,
            );
            return refuse(Outcome::Disabled, Some(ErrorStage::Auth), response, message);
        }

        if let Some(bucket) = &route.bucket
            && let Err(wait) = bucket.try_acquire(Instant::now())
        {
            let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
            let response = with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests for this source; retry later",
                ),
                seconds,
            );
            // A counter only: recording each refusal would flood recent errors exactly when
            // the source is busiest.
            return refuse(Outcome::RateLimited, None, response, "");
        }

        let (parts, body) = request.into_parts();
        let max = route.route.max_body_bytes;
        let too_large = || {
            let message = format!("the body is larger than this source's limit of {max} bytes");
            let response = error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &message);
            (response, message)
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            let (response, message) = too_large();
            return refuse(
                Outcome::TooLarge,
                Some(ErrorStage::Parse),
                response,
                &message,
            );
        }
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        let collected = within(self.config.body_read_timeout, read_limited(body, limit)).await;
        let raw = match collected {
            Ok(Ok(raw)) => raw,
            Ok(Err(BodyError::TooLarge)) => {
                let (response, message) = too_large();
                return refuse(
                    Outcome::TooLarge,
                    Some(ErrorStage::Parse),
                    response,
                    &message,
                );
            }
            Ok(Err(BodyError::Unreadable)) => {
                let message = "the request body could not be read";
                let response = error(StatusCode::BAD_REQUEST, "body_unreadable", message);
                return refuse(
                    Outcome::BadRequest,
                    Some(ErrorStage::Parse),
                    response,
                    message,
                );
            }
            Err(_) => {
                let message = "the request body did not arrive in time";
                let response = error(StatusCode::REQUEST_TIMEOUT, "body_timeout", message);
                return refuse(
                    Outcome::BadRequest,
                    Some(ErrorStage::Parse),
                    response,
                    message,
                );
            }
        };

        if let Err(e) = verify::verify(
            route.route.signature.as_ref(),
            &parts.headers,
            &raw,
            now.as_second(),
        ) {
            let message = e.to_string();
            let response = error(StatusCode::UNAUTHORIZED, "signature_unverified", &message);
            return refuse(
                Outcome::Unauthorized,
                Some(ErrorStage::Auth),
                response,
                &message,
            );
        }

        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let body = match parse_body(route, content_type, &raw, now) {
            Ok(body) => body,
            Err(e) => {
                let message = e.to_string();
                let (outcome, code) = if e.http_status() == 415 {
                    (Outcome::UnsupportedMediaType, "unsupported_media_type")
                } else {
                    (Outcome::BadRequest, "invalid_body")
                };
                let status_code =
                    StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
                let response = error(status_code, code, &message);
                return refuse(outcome, Some(ErrorStage::Parse), response, &message);
            }
        };

        let mut mapped = {
            let request = mapping::Request::projected(&route.projection, &body, now)
                .with_headers(&parts.headers)
                .with_query(parts.uri.query().unwrap_or(""));
            mapping::map_request(&route.mappings, &request)
        };
        let verdict = mapped.verdict();
        // Formatted once, for the mapping's status, the source's and the answer.
        let error_messages: Vec<String> = mapped.errors.iter().map(ToString::to_string).collect();
        status.mapping_results(
            mapped.matched.iter().map(|&m| route.mappings[m].name()),
            mapped
                .errors
                .iter()
                .zip(&error_messages)
                .map(|(e, message)| (&*e.mapping, message.as_str())),
            now,
        );
        for message in &error_messages {
            status.error(ErrorStage::Map, message, now);
        }

        match verdict {
            Verdict::Ignored => {
                status.count(Count::Ignored);
                status.request(request_id, "ignored", now);
                let body = Answer {
                    status: "ignored",
                    request_id,
                    event_ids: &[],
                    duplicate_ids: None,
                    errors: &[],
                };
                (Outcome::Ignored, answer(&body))
            }
            Verdict::Unprocessable => {
                status.count(Count::Failed);
                status.request(request_id, "failed", now);
                let body = json!({"error": {
                    "code": "unprocessable",
                    "message": error_messages.join("; "),
                    "errors": error_messages,
                }});
                (
                    Outcome::Unprocessable,
                    json_response(StatusCode::UNPROCESSABLE_ENTITY, &body),
                )
            }
            Verdict::Accepted => {
                let events = std::mem::take(&mut mapped.events);
                self.deliver(route, events, error_messages, request_id, now)
                    .await
            }
        }
    }

    async fn deliver(
        &self,
        route: &LiveRoute,
        events: Events<'_>,
        mapping_errors: Vec<String>,
        request_id: &str,
        now: Timestamp,
    ) -> (Outcome, Resp) {
        let status = &route.state.status;
        let window = route.dedup_window;
        let (fresh, duplicates) = if window.is_zero() {
            // Dedup off: every event is fresh and nothing is reserved, so none of the lists
            // below (and no clock read) is needed; the load runs measure this path.
            (events, Vec::new())
        } else {
            // Events without a mapped id have a fresh UUID: nothing to deduplicate them
            // against.
            let seen = route
                .state
                .dedup
                .reserve(&reserved_ids(&events), window, Instant::now());
            let mut verdicts = seen.iter();
            let mut fresh = Events::new();
            let mut duplicates = Vec::new();
            let mut in_flight = false;
            for event in events {
                let verdict = if event.id_generated {
                    Seen::New
                } else {
                    verdicts.next().copied().unwrap_or(Seen::New)
                };
                match verdict {
                    Seen::New => fresh.push(event),
                    Seen::Delivered => duplicates.push(event),
                    Seen::InFlight => in_flight = true,
                }
            }
            if in_flight {
                route.state.dedup.release(&reserved_ids(&fresh));
                status.count(Count::Failed);
                status.request(request_id, "failed", now);
                let response = with_retry_after(
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "delivery_in_progress",
                        "an event of this request is being delivered by another request; retry to learn its outcome",
                    ),
                    1,
                );
                return (Outcome::InProgress, response);
            }
            (fresh, duplicates)
        };
        let reserved = if window.is_zero() {
            Vec::new()
        } else {
            reserved_ids(&fresh)
        };

        if fresh.is_empty() {
            let body = Answer {
                status: "duplicate",
                request_id,
                event_ids: &[],
                duplicate_ids: Some(&duplicates),
                errors: &[],
            };
            let response = answer(&body);
            status.events(
                request_id,
                duplicates.into_iter().map(|e| (e, Delivery::Duplicate)),
                now,
            );
            return (Outcome::Duplicate, response);
        }

        let batch = Batch {
            source: &route.source,
            events: &fresh,
        };
        let result = within(self.config.sink_timeout, route.sink.deliver(batch)).await;
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!(
                "the {} sink failed: {}",
                route.sink.kind(),
                e.message
            )),
            Err(_) => Some(format!(
                "the {} sink did not acknowledge within {} ms",
                route.sink.kind(),
                self.config.sink_timeout.as_millis()
            )),
        };
        if let Some(message) = failure {
            route.state.dedup.release(&reserved);
            status.count(Count::Failed);
            status.error(ErrorStage::Deliver, &message, now);
            status.request(request_id, "failed", now);
            let response = with_retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "sink_unavailable",
                    &message,
                ),
                self.config.sink_retry_after,
            );
            return (Outcome::SinkUnavailable, response);
        }

        if !window.is_zero() {
            route.state.dedup.commit(&reserved, window, Instant::now());
        }
        route.state.metrics.events_delivered(fresh.len() as u64);
        let body = Answer {
            status: "delivered",
            request_id,
            event_ids: &fresh,
            duplicate_ids: Some(&duplicates),
            errors: &mapping_errors,
        };
        let response = answer(&body);
        // The events go to the recent list, whose reused entries take a copy of their ids and
        // their names' shared handles.
        status.events(
            request_id,
            fresh
                .into_iter()
                .map(|e| (e, Delivery::Delivered))
                .chain(duplicates.into_iter().map(|e| (e, Delivery::Duplicate))),
            now,
        );
        (Outcome::Delivered, response)
    }
}

/// The ids a delivery reserved: generated ones (fresh UUIDs) are not deduplicated.
fn reserved_ids<'e>(events: &'e [MappedEvent<'_>]) -> Vec<&'e str> {
    events
        .iter()
        .filter(|e| !e.id_generated)
        .map(|e| e.id.as_str())
        .collect()
}

/// The body as the route's mappings need it. JSON is parsed whole only for a sample of
/// requests, to learn the source's shape; otherwise only what the mappings read is built
/// ([`mapping::Projection`]). A body that fails the whole parse only in fields no mapping reads
/// (a number beyond `f64`, say) is still answered from the projection, so sampling never
/// changes an answer.
fn parse_body<'b>(
    route: &LiveRoute,
    content_type: Option<&str>,
    raw: &'b [u8],
    now: Timestamp,
) -> Result<ProjectedBody<'b>, mapping::BodyError> {
    let status = &route.state.status;
    match mapping::detect_format(content_type, raw)? {
        BodyFormat::Form => {
            let body = mapping::body::parse_form(raw);
            status.observe(&body);
            Ok(ProjectedBody::Tree(body))
        }
        BodyFormat::Json => {
            if let Some(weight) = status.shape_sample(now)
                && let Ok(whole) = mapping::body::parse_json(raw)
            {
                status.observe_sampled(&whole, weight);
                return Ok(ProjectedBody::Tree(whole));
            }
            route.projection.parse_values(raw)
        }
    }
}

/// The 200 body: `{"status", "requestId", "eventIds", "duplicateIds"?, "errors"?}`, written
/// by hand: through serde's struct serializer it cost more than the rest of the answer.
struct Answer<'a> {
    status: &'static str,
    request_id: &'a str,
    event_ids: &'a [MappedEvent<'a>],
    duplicate_ids: Option<&'a [MappedEvent<'a>]>,
    errors: &'a [String],
}

impl<'a> Answer<'a> {
    fn write(&self, out: &mut Vec<u8>) {
        fn list<'s>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'s str>) {
            out.push(b'[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_str(out, item);
            }
            out.push(b']');
        }
        let ids = |events: &'a [MappedEvent<'a>]| events.iter().map(|e| e.id.as_str());
        out.extend_from_slice(b"{\"status\":");
        json_str(out, self.status);
        out.extend_from_slice(b",\"requestId\":");
        json_str(out, self.request_id);
        out.extend_from_slice(b",\"eventIds\":");
        list(out, ids(self.event_ids));
        if let Some(duplicate_ids) = self.duplicate_ids {
            out.extend_from_slice(b",\"duplicateIds\":");
            list(out, ids(duplicate_ids));
        }
        if !self.errors.is_empty() {
            out.extend_from_slice(b",\"errors\":");
            list(out, self.errors.iter().map(String::as_str));
        }
        out.push(b'}');
    }
}

fn answer(body: &Answer<'_>) -> Resp {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    // Written in a buffer the thread keeps, then copied into one of the exact size: `Bytes`
    // takes that as it is, where a buffer with spare capacity costs it a second allocation.
    let bytes = SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.clear();
        body.write(&mut scratch);
        let bytes = Bytes::copy_from_slice(&scratch);
        // A large batch's answer does not stay with the thread.
        scratch.shrink_to(64 * 1024);
        bytes
    });
    with_json_type(StatusCode::OK, bytes)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Resp {
    with_json_type(status, Bytes::from(body.to_string()))
}

fn with_json_type(status: StatusCode, body: Bytes) -> Resp {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"error": {"code": ..., "message": ...}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// The one answer for unknown and malformed tokens alike.
fn not_found() -> Resp {
    error(StatusCode::NOT_FOUND, "not_found", "no webhook at this URL")
}

fn with_retry_after(mut response: Resp, seconds: u64) -> Resp {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves, then lets requests in flight
/// finish (at most 10 s). Used for both the ingest and the admin port.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    serve_limited(
        listener,
        handler,
        header_read_timeout,
        default_max_connections(),
        0,
        shutdown,
    )
    .await;
}

/// [`serve`] with at most `max_connections` connections open at once: past it, connections
/// wait in the listen backlog until one closes.
///
/// With `threads` above zero, connections are served on that many threads of their own, each
/// running a single-threaded runtime, a connection staying on the thread it was given (the
/// one serving the fewest); with zero, on the caller's runtime. A connection's requests then
/// never move between cores. On the multi-threaded runtime they moved to whichever worker was
/// free, and that cost the ingest a fifth of its CPU per request (its task, buffers and
/// allocations gone cold on the other core, memory freed across threads): under load one
/// worker served as many requests per second as two (BENCHMARKS.md, session 11).
pub async fn serve_limited<H, F>(
    listener: TcpListener,
    handler: H,
    header_read_timeout: Duration,
    max_connections: usize,
    threads: usize,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    let threads = match ConnectionThreads::start(threads) {
        Ok(threads) => threads,
        Err(e) => {
            tracing::warn!(error = %e, "could not start connection threads; serving on the runtime");
            ConnectionThreads::default()
        }
    };
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (handler, watcher) = (handler.clone(), graceful.watcher());
        match threads.pick() {
            None => {
                tokio::spawn(serve_connection(
                    stream,
                    handler,
                    watcher,
                    header_read_timeout,
                    slot,
                ));
            }
            Some(thread) => {
                // Registered with the thread's own I/O driver, not this runtime's.
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                let live = LiveConnection::new(&thread.live);
                thread.runtime.spawn(async move {
                    let _live = live;
                    if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                        serve_connection(stream, handler, watcher, header_read_timeout, slot).await;
                    }
                });
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
}

/// One connection, from its first byte to its close; `slot` is its place under the connection
/// cap.
async fn serve_connection<H, F>(
    stream: tokio::net::TcpStream,
    handler: H,
    watcher: hyper_util::server::graceful::Watcher,
    header_read_timeout: Duration,
    slot: tokio::sync::OwnedSemaphorePermit,
) where
    H: Fn(Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    // hyper allocates its buffers, and holds the request handler's future inline, from its
    // first poll; a connection that has sent nothing waits for its first byte on the bare
    // socket instead, with the same deadline as hyper's header read. (Measured anyway: a silent
    // connection costs ~0.5 KB of RSS on a connection thread and ~13 KB on the shared runtime;
    // the connection cap bounds them either way; RELIABILITY.md.)
    if tokio::time::timeout(header_read_timeout, stream.readable())
        .await
        .is_err()
    {
        drop(slot);
        return;
    }
    // Built in a block so that the connection, moved into the box, is not also kept in this
    // task's own state (where every waiting connection would pay for it).
    let served = {
        let service = hyper::service::service_fn(move |request| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(request).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        Box::pin(watcher.watch(connection))
    };
    // Client resets and header timeouts end here; nothing the operator can act on.
    let _ = served.await;
    drop(slot);
}

/// As many threads as the process may use: [`std::thread::available_parallelism`] counts the
/// CPUs of its affinity mask and cgroup quota.
fn default_connection_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The threads of [`serve_limited`]; each stops, dropping the connections still on it, when
/// this is dropped.
#[derive(Default)]
struct ConnectionThreads {
    threads: Vec<ConnectionThread>,
}

struct ConnectionThread {
    runtime: tokio::runtime::Handle,
    /// Connections on the thread, for choosing the one with the fewest.
    live: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ConnectionThreads {
    fn start(count: usize) -> std::io::Result<Self> {
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("hookgate-conn-{i}"))
                .spawn(move || {
                    super::shard::pin(i);
                    // Ends when the sender is dropped as well as when it sends.
                    runtime.block_on(async move {
                        let _ = stopped.await;
                    });
                })?;
            threads.push(ConnectionThread {
                runtime: handle,
                live: Arc::default(),
                _stop: stop,
            });
        }
        Ok(Self { threads })
    }

    fn pick(&self) -> Option<&ConnectionThread> {
        self.threads
            .iter()
            .min_by_key(|t| t.live.load(Ordering::Relaxed))
    }
}

/// Counts a connection on its thread while alive.
struct LiveConnection(Arc<AtomicUsize>);

impl LiveConnection {
    fn new(live: &Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::Relaxed);
        Self(live.clone())
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Binds `addr` and serves the ingest on it; returns the bound address (port 0 picks one).
pub async fn bind_ingest(
    addr: SocketAddr,
    ingest: Arc<Ingest>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let timeout = ingest.config.header_read_timeout;
    let max_connections = ingest.config.max_connections;
    let threads = ingest.config.connection_threads;
    let handler = move |request| {
        let ingest = ingest.clone();
        async move { ingest.handle(request).await }
    };
    Ok((
        local,
        tokio::spawn(serve_limited(
            listener,
            handler,
            timeout,
            max_connections,
            threads,
            shutdown,
        )),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_prefix_dash_counter_in_hex() {
        let ids = RequestIds {
            prefix: 0x00ab_cdef,
            owner: u64::MAX,
            next: AtomicU64::new(0x1f),
        };
        assert_eq!(ids.next(), "00abcdef-1f");
        assert_eq!(ids.next(), "00abcdef-20");
        let ids = RequestIds {
            prefix: u32::MAX,
            owner: u64::MAX - 1,
            next: AtomicU64::new(u64::MAX),
        };
        assert_eq!(ids.next(), format!("ffffffff-{:x}", u64::MAX));
        assert_eq!(ids.next(), "ffffffff-0");
        let mut zero = String::new();
        push_hex(&mut zero, 0, 1);
        assert_eq!(zero, "0");
    }

    #[test]
    fn request_ids_are_unique_across_threads_and_ingests() {
        let (a, b) = (Arc::new(RequestIds::new()), Arc::new(RequestIds::new()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (a, b) = (a.clone(), b.clone());
                std::thread::spawn(move || {
                    // Alternating between two ingests, and past the end of a block.
                    (0..ID_BLOCK * 2)
                        .map(|_| (a.next(), b.next()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let (of_a, of_b): (Vec<String>, Vec<String>) = threads
            .into_iter()
            .flat_map(|t| t.join().expect("id thread"))
            .unzip();
        for ids in [of_a, of_b] {
            let unique: std::collections::HashSet<&String> = ids.iter().collect();
            assert_eq!(unique.len(), 4 * 2 * ID_BLOCK as usize);
        }
    }

    fn events(ids: &[&str]) -> Vec<MappedEvent<'static>> {
        ids.iter().map(|id| MappedEvent::with_id(*id)).collect()
    }

    #[test]
    fn answers_are_the_documented_json() {
        let mut out = Vec::new();
        Answer {
            status: "delivered",
            request_id: "00abcdef-1",
            event_ids: &events(&["evt_1", "e\"2\\\u{1}é"]),
            duplicate_ids: Some(&[]),
            errors: &[],
        }
        .write(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"status":"delivered","requestId":"00abcdef-1","eventIds":["evt_1","e\"2\\\u0001é"],"duplicateIds":[]}"#
        );
        let mut out = Vec::new();
        Answer {
            status: "delivered",
            request_id: "r",
            event_ids: &[],
            duplicate_ids: Some(&events(&["a", "b"])),
            errors: &["one".to_owned(), "two".to_owned()],
        }
        .write(&mut out);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            parsed,
            json!({"status": "delivered", "requestId": "r", "eventIds": [],
                   "duplicateIds": ["a", "b"], "errors": ["one", "two"]})
        );
        let mut out = Vec::new();
        Answer {
            status: "ignored",
            request_id: "r",
            event_ids: &[],
            duplicate_ids: None,
            errors: &[],
        }
        .write(&mut out);
        assert_eq!(
            out,
            br#"{"status":"ignored","requestId":"r","eventIds":[]}"#
        );
    }

    #[tokio::test]
    async fn within_answers_ready_futures_and_times_out_pending_ones() {
        assert_eq!(within(Duration::ZERO, async { 7 }).await.ok(), Some(7));
        let never = std::future::pending::<()>();
        assert!(within(Duration::from_millis(20), never).await.is_err());
        // Pending on the first poll, ready later: the timer does not cut it short.
        let later = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            8
        };
        assert_eq!(within(Duration::from_secs(60), later).await.ok(), Some(8));
    }

    /// Pending once for the worker's turn (woken from elsewhere, after `delay`), then `then`.
    fn after_turn<F: Future + Unpin>(
        delay: Duration,
        mut then: F,
    ) -> impl Future<Output = F::Output> {
        let mut turn = Some(delay);
        std::future::poll_fn(move |cx| {
            if let Some(delay) = turn.take() {
                let waker = cx.waker().clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    waker.wake();
                });
                crate::sink::waiting_for_turn();
                return Poll::Pending;
            }
            std::pin::Pin::new(&mut then).poll(cx)
        })
    }

    /// Sends a body-less POST on `stream` and reads the answer: its body.
    async fn post(stream: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncWriteExt;
        stream
            .write_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = Vec::new();
        let (_, body) = crate::ingest::bare::read_response(stream, &mut buffer)
            .await
            .expect("an answer before the connection closed");
        String::from_utf8_lossy(&buffer[body]).into_owned()
    }

    #[tokio::test]
    async fn connections_stay_on_the_connection_thread_serving_fewest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = |_request| async {
            let thread = std::thread::current();
            let answer = format!(
                "{} {:?} shard {}",
                thread.name().unwrap_or("unnamed"),
                thread.id(),
                crate::ingest::shard::index()
            );
            Response::new(Full::new(Bytes::from(answer)))
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_limited(
            listener,
            handler,
            Duration::from_secs(10),
            64,
            2,
            async move {
                let _ = stopped.await;
            },
        ));

        // Another thread takes its turn at the shards first, as the runtime's workers may.
        std::thread::spawn(crate::ingest::shard::index)
            .join()
            .unwrap();

        // Four connections open at once, two requests on each.
        let mut connections = Vec::new();
        for _ in 0..4 {
            connections.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut threads = Vec::new();
        for connection in &mut connections {
            let first = post(connection).await;
            let second = post(connection).await;
            assert_eq!(first, second, "a connection moved between threads");
            assert!(first.starts_with("hookgate-conn-"), "served on {first}");
            // Each connection thread writes to its own status and metrics shard.
            let thread: usize = first["hookgate-conn-".len()..]
                .split(' ')
                .next()
                .and_then(|i| i.parse().ok())
                .expect("a numbered connection thread");
            let shard = thread % crate::ingest::shard::count();
            assert!(first.ends_with(&format!(" shard {shard}")), "{first}");
            threads.push(first);
        }
        let mut per_thread = std::collections::BTreeMap::<&str, usize>::new();
        for thread in &threads {
            *per_thread.entry(thread.as_str()).or_default() += 1;
        }
        assert_eq!(
            per_thread.values().copied().collect::<Vec<_>>(),
            [2, 2],
            "{threads:?}"
        );

        // Shutting down closes the idle connections, whichever thread holds them.
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("serve_limited returns after shutdown")
            .unwrap();
        for connection in &mut connections {
            use tokio::io::AsyncReadExt;
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(10), connection.read(&mut byte))
                .await
                .expect("closed after shutdown");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
    }

    #[tokio::test]
    async fn within_arms_no_timer_for_a_turn_but_does_after_it() {
        let turn = after_turn(Duration::from_millis(40), std::future::ready(9));
        assert_eq!(within(Duration::from_millis(5), turn).await.ok(), Some(9));
        let turn_then_never = after_turn(Duration::from_millis(1), std::future::pending::<()>());
        assert!(
            within(Duration::from_millis(20), turn_then_never)
                .await
                .is_err()
        );
    }
}
