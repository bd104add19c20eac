//! Where events go once mapped: the [`Sink`] trait and its implementations.
//!
//! A sink acknowledges a whole batch (one request's events) or fails it; the ingest answers the
//! sender 200 only after the acknowledgement (DESIGN §5). Sinks are shared by every request of
//! every source, so implementations must be cheap to call concurrently.
//!
//! - [`stdout`]: JSON lines on standard output (or any injected writer), flushed before the
//!   acknowledgement.
//! - HTTP (CloudEvents) and NATS JetStream sinks implement the same trait (delivery issue).

pub mod stdout;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::mapping::{EventSource, MappedEvent};

pub use stdout::WriterSink;

/// The events of one request, all from one source.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub source: &'a EventSource,
    pub events: &'a [MappedEvent],
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
