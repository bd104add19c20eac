//! The HTTP sink: CloudEvents 1.0 over HTTP (binary or structured content mode), for Knative
//! brokers, Argo Events and any collector.
//!
//! - Binary mode: one POST per event, `ce-specversion`, `ce-id`, `ce-source`, `ce-type`,
//!   `ce-time` headers, `content-type: application/json`, the event's `data` as the body.
//! - Structured mode: one POST per event, the whole CloudEvent as
//!   `application/cloudevents+json`.
//!
//! A batch's events are sent concurrently (a few at a time) and the batch is acknowledged only
//! when every event got a 2xx. Each attempt has its own timeout; a failed attempt (connection
//! error, timeout, 5xx, 408, 429) is retried with exponential backoff until the delivery
//! budget runs out, which is kept below the ingest's own sink timeout so the sender hears the
//! real reason in the 503 rather than a bare timeout. Other 4xx answers are final: the
//! receiver refuses this event and retrying within seconds will not change its mind (the
//! sender's own retry later may, and dedup absorbs what already went through).
//!
//! One client (connection pool) per sink; the ingest keeps one sink per distinct
//! configuration, so connections are reused across requests and sources.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::{Batch, DeliverFuture, Sink, SinkError};
use crate::api::webhook_source::CloudEventsMode;
use crate::mapping::{EventSource, MappedEvent};

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Events of one batch in flight at once: enough to hide a receiver's latency for `forEach`
/// batches, few enough not to flood it.
const CONCURRENCY: usize = 8;

/// How an [`HttpSink`] is set up.
#[derive(Clone, Debug)]
pub struct HttpSinkConfig {
    pub url: String,
    pub mode: CloudEventsMode,
    /// Per attempt.
    pub attempt_timeout: Duration,
    /// All attempts of one batch together; below the ingest's sink timeout (4 s by default).
    pub budget: Duration,
    /// First backoff; doubles per retry up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Extra request headers (e.g. `Authorization` from a Secret). Never logged.
    pub headers: Vec<(String, String)>,
}

impl HttpSinkConfig {
    pub fn new(url: impl Into<String>, mode: CloudEventsMode) -> Self {
        Self {
            url: url.into(),
            mode,
            attempt_timeout: Duration::from_secs(5),
            budget: Duration::from_millis(3500),
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            headers: Vec::new(),
        }
    }
}

pub struct HttpSink {
    client: HttpsClient,
    url: Uri,
    /// `host[:port]` for error messages: never the path or query, which may carry a key.
    target: String,
    config: HttpSinkConfig,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpSink {
    pub fn new(config: HttpSinkConfig) -> Result<Self, SinkError> {
        let url: Uri = config
            .url
            .parse()
            .map_err(|_| SinkError::new("http sink: the url is not a valid http(s) URL"))?;
        match url.scheme_str() {
            Some("http") | Some("https") => {}
            _ => {
                return Err(SinkError::new(
                    "http sink: the url must be http:// or https://",
                ));
            }
        }
        let target = url
            .host()
            .map(|h| match url.port_u16() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
            .ok_or_else(|| SinkError::new("http sink: the url has no host"))?;
        let mut headers = Vec::with_capacity(config.headers.len());
        for (name, value) in &config.headers {
            // Only the name is shown: the value is typically a credential.
            let n = HeaderName::try_from(name.as_str()).map_err(|_| {
                SinkError::new(format!("http sink: {name:?} is not a valid header name"))
            })?;
            let mut v = HeaderValue::try_from(value.as_str()).map_err(|_| {
                SinkError::new(format!(
                    "http sink: the value of header {name} is not valid"
                ))
            })?;
            v.set_sensitive(true);
            headers.push((n, v));
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| SinkError::new(format!("http sink: no TLS root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            client,
            url,
            target,
            config,
            headers,
        })
    }

    fn request(&self, source: &EventSource, event: &MappedEvent) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone());
        let body = match self.config.mode {
            CloudEventsMode::Binary => {
                builder = builder
                    .header("ce-specversion", "1.0")
                    .header("ce-id", ce_header(&event.id))
                    .header("ce-source", ce_header(source.as_str()))
                    .header("ce-type", ce_header(&event.name))
                    .header("ce-time", event.timestamp.to_string())
                    .header(CONTENT_TYPE, "application/json");
                let mut body = Vec::with_capacity(512);
                event.write_data_json(&mut body);
                body
            }
            CloudEventsMode::Structured => {
                builder = builder.header(CONTENT_TYPE, "application/cloudevents+json");
                let mut body = Vec::with_capacity(512);
                event.write_json(source, &mut body);
                body
            }
        };
        let mut request = builder
            .body(Full::new(Bytes::from(body)))
            .expect("percent-encoded header values are always valid");
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        request
    }

    /// One event, retried until acknowledged, refused, or out of time.
    async fn deliver_one(
        &self,
        source: &EventSource,
        event: &MappedEvent<'_>,
        deadline: Instant,
    ) -> Result<(), SinkError> {
        let mut backoff = self.config.first_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = self.config.attempt_timeout.min(remaining);
            let outcome = match tokio::time::timeout(
                timeout,
                self.client.request(self.request(source, event)),
            )
            .await
            {
                Err(_) => Attempt::Retry(format!("no answer within {}ms", timeout.as_millis())),
                Ok(Err(e)) => Attempt::Retry(connect_reason(&e)),
                Ok(Ok(response)) => {
                    let status = response.status();
                    // Read (a bounded part of) the body so the connection returns to the pool.
                    let _ = tokio::time::timeout(
                        timeout,
                        Limited::new(response.into_body(), 64 * 1024).collect(),
                    )
                    .await;
                    classify(status)
                }
            };
            let reason = match outcome {
                Attempt::Acked => return Ok(()),
                Attempt::Refused(reason) => {
                    return Err(SinkError::new(format!(
                        "http sink: {} refused event {}: {reason}",
                        self.target, event.id
                    )));
                }
                Attempt::Retry(reason) => reason,
            };
            let now = Instant::now();
            if now + backoff >= deadline {
                return Err(SinkError::new(format!(
                    "http sink: {} did not acknowledge event {} after {attempts} attempt(s): {reason}",
                    self.target, event.id
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }
}

enum Attempt {
    Acked,
    Retry(String),
    Refused(String),
}

fn classify(status: StatusCode) -> Attempt {
    if status.is_success() {
        Attempt::Acked
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Attempt::Retry(format!("answered {}", status.as_u16()))
    } else {
        Attempt::Refused(format!("answered {}", status.as_u16()))
    }
}

/// The connection-level reason, without the URL (hyper-util's messages do not include it, but
/// the source chain of a TLS error is specific enough on its own).
fn connect_reason(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut reason = if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    if let Some(source) = e.source() {
        reason.push_str(": ");
        reason.push_str(&source.to_string());
    }
    reason
}

/// A CloudEvents attribute as an HTTP header value: the HTTP binding percent-encodes space,
/// `"`, `%` and everything outside printable ASCII (the UTF-8 bytes), so any event name or id
/// a mapping produces travels intact.
fn ce_header(value: &str) -> HeaderValue {
    let needs = |b: u8| !(0x21..=0x7e).contains(&b) || b == b'"' || b == b'%';
    if !value.bytes().any(needs)
        && let Ok(v) = HeaderValue::from_str(value)
    {
        return v;
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if needs(b) {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xf)]));
        } else {
            out.push(char::from(b));
        }
    }
    HeaderValue::from_str(&out).expect("percent-encoded ASCII is a valid header value")
}

impl Sink for HttpSink {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn deliver<'a>(&'a self, batch: Batch<'a>) -> DeliverFuture<'a> {
        Box::pin(async move {
            let deadline = Instant::now() + self.config.budget;
            // Futures built first, then polled a few at a time: a closure inside the stream
            // would make the boxed future's lifetimes higher-ranked, which rustc cannot prove
            // `Send` for.
            let pending: Vec<_> = batch
                .events
                .iter()
                .map(|event| self.deliver_one(batch.source, event, deadline))
                .collect();
            let mut results = futures::stream::iter(pending).buffer_unordered(CONCURRENCY);
            // The first failure fails the batch; dropping the stream abandons the rest, which
            // the sender's retry sends again (dedup downstream by `ce-id`).
            while let Some(result) = results.next().await {
                result?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_percent_encoded_per_the_http_binding() {
        assert_eq!(ce_header("evt_1"), "evt_1");
        assert_eq!(ce_header("Order Placed"), "Order%20Placed");
        assert_eq!(ce_header("100% \"done\""), "100%25%20%22done%22");
        assert_eq!(ce_header("Café"), "Caf%C3%A9");
    }

    #[test]
    fn statuses_are_acks_retries_or_refusals() {
        assert!(matches!(classify(StatusCode::OK), Attempt::Acked));
        assert!(matches!(classify(StatusCode::ACCEPTED), Attempt::Acked));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST),
            Attempt::Refused(_)
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND),
            Attempt::Refused(_)
        ));
    }

    #[tokio::test]
    async fn invalid_configuration_is_reported_without_header_values() {
        let err = HttpSink::new(HttpSinkConfig::new("ftp://x", CloudEventsMode::Binary))
            .err()
            .unwrap();
        assert!(err.message.contains("http://"), "{err}");
        let mut config = HttpSinkConfig::new("http://127.0.0.1:1/", CloudEventsMode::Binary);
        config.headers = vec![("authorization".into(), "Bearer s3cr3t\n".into())];
        let err = HttpSink::new(config).err().unwrap();
        assert!(!err.message.contains("s3cr3t"), "{err}");
    }
}
