//! Prometheus metrics of the ingest (`/metrics` on the admin port).
//!
//! Labels are bounded: `namespace` and `source` (one series set per configured source,
//! removed with the source) and `outcome` from a fixed list. Tokens, request ids, error text
//! and unknown-URL paths never become labels: requests to unknown URLs count under empty
//! namespace and source.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every answer the ingest gives, one label value each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Delivered,
    Ignored,
    Duplicate,
    NotFound,
    Disabled,
    Unauthorized,
    TooLarge,
    UnsupportedMediaType,
    BadRequest,
    RateLimited,
    Unprocessable,
    InProgress,
    SinkUnavailable,
}

impl Outcome {
    pub const ALL: [Outcome; 13] = [
        Outcome::Delivered,
        Outcome::Ignored,
        Outcome::Duplicate,
        Outcome::NotFound,
        Outcome::Disabled,
        Outcome::Unauthorized,
        Outcome::TooLarge,
        Outcome::UnsupportedMediaType,
        Outcome::BadRequest,
        Outcome::RateLimited,
        Outcome::Unprocessable,
        Outcome::InProgress,
        Outcome::SinkUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Ignored => "ignored",
            Outcome::Duplicate => "duplicate",
            Outcome::NotFound => "not_found",
            Outcome::Disabled => "disabled",
            Outcome::Unauthorized => "unauthorized",
            Outcome::TooLarge => "too_large",
            Outcome::UnsupportedMediaType => "unsupported_media_type",
            Outcome::BadRequest => "bad_request",
            Outcome::RateLimited => "rate_limited",
            Outcome::Unprocessable => "unprocessable",
            Outcome::InProgress => "in_progress",
            Outcome::SinkUnavailable => "sink_unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    namespace: String,
    source: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    namespace: String,
    source: String,
}

/// The registry and the metric families.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    events: Family<SourceLabels, Counter>,
    duration: Histogram,
    routes: Gauge,
}

/// Counter handles of one source, resolved once when its route is installed so requests do
/// not build label sets.
#[derive(Clone)]
pub struct SourceMetrics {
    requests: [Counter; Outcome::ALL.len()],
    events: Counter,
}

impl SourceMetrics {
    pub fn request(&self, outcome: Outcome) {
        let index = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.requests[index].inc();
    }

    pub fn events_delivered(&self, n: u64) {
        self.events.inc_by(n);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "hookgate_ingest_requests",
            "Webhook requests answered, by source and outcome",
            requests.clone(),
        );
        let events = Family::<SourceLabels, Counter>::default();
        registry.register(
            "hookgate_ingest_events_delivered",
            "Events acknowledged by the sink",
            events.clone(),
        );
        // 100 µs to ~3.3 s: the fast path is sub-millisecond, sink timeouts are seconds.
        let duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register_with_unit(
            "hookgate_ingest_request_duration",
            "Time from request headers to response, all outcomes",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        let routes = Gauge::default();
        registry.register(
            "hookgate_ingest_routes",
            "Routes currently served",
            routes.clone(),
        );
        Self {
            registry,
            requests,
            events,
            duration,
            routes,
        }
    }

    /// Handles for one source (creates its series at zero, so dashboards see every source).
    pub fn source(&self, namespace: &str, source: &str) -> SourceMetrics {
        let requests = Outcome::ALL.map(|outcome| {
            self.requests
                .get_or_create(&RequestLabels {
                    namespace: namespace.to_owned(),
                    source: source.to_owned(),
                    outcome: outcome.as_str(),
                })
                .clone()
        });
        let events = self
            .events
            .get_or_create(&SourceLabels {
                namespace: namespace.to_owned(),
                source: source.to_owned(),
            })
            .clone();
        SourceMetrics { requests, events }
    }

    /// Drops a removed source's series.
    pub fn remove_source(&self, namespace: &str, source: &str) {
        for outcome in Outcome::ALL {
            self.requests.remove(&RequestLabels {
                namespace: namespace.to_owned(),
                source: source.to_owned(),
                outcome: outcome.as_str(),
            });
        }
        self.events.remove(&SourceLabels {
            namespace: namespace.to_owned(),
            source: source.to_owned(),
        });
    }

    /// A request to an unknown URL (no source to attribute it to).
    pub fn not_found(&self) {
        self.requests
            .get_or_create(&RequestLabels {
                namespace: String::new(),
                source: String::new(),
                outcome: Outcome::NotFound.as_str(),
            })
            .inc();
    }

    pub fn observe_duration(&self, seconds: f64) {
        self.duration.observe(seconds);
    }

    pub fn set_routes(&self, n: usize) {
        self.routes.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
