//! Prometheus metrics of the ingest (`/metrics` on the admin port).
//!
//! Labels are bounded: `namespace` and `source` (one series set per configured source,
//! removed with the source) and `outcome` from a fixed list. Tokens, request ids, error text
//! and unknown-URL paths never become labels: requests to unknown URLs count under empty
//! namespace and source.

use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry;

use super::shard::{Histogram, ShardedU64};

/// Counters that every request adds to are sharded per thread ([`super::shard`]).
type Counter = prometheus_client::metrics::counter::Counter<u64, ShardedU64>;

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

/// Counter handles of one source. Only `delivered` and the events counter exist from the
/// start (at zero, so every source is listed); a series for another outcome is created when
/// the source first answers with it. Creating all thirteen up front cost ~2 KB per source and
/// made `/metrics` 1.3 MB with 1,000 idle sources.
pub struct SourceMetrics {
    family: Family<RequestLabels, Counter>,
    namespace: String,
    source: String,
    requests: [OnceLock<Counter>; Outcome::ALL.len()],
    events: Counter,
    /// Set once the source's series are removed. Held while a series is created, so a request
    /// finishing on a removed route cannot bring its series back (nor remove those of a source
    /// re-created with the same name).
    retired: Mutex<bool>,
}

impl SourceMetrics {
    pub fn request(&self, outcome: Outcome) {
        let index = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.requests[index]
            .get_or_init(|| {
                let retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
                if *retired {
                    return Counter::default();
                }
                self.family.get_or_create(&self.labels(outcome)).clone()
            })
            .inc();
    }

    pub fn events_delivered(&self, n: u64) {
        self.events.inc_by(n);
    }

    fn labels(&self, outcome: Outcome) -> RequestLabels {
        RequestLabels {
            namespace: self.namespace.clone(),
            source: self.source.clone(),
            outcome: outcome.as_str(),
        }
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

    /// Handles for one source (creates its `delivered` and events series at zero, so
    /// dashboards see every source).
    pub fn source(&self, namespace: &str, source: &str) -> SourceMetrics {
        let metrics = SourceMetrics {
            family: self.requests.clone(),
            namespace: namespace.to_owned(),
            source: source.to_owned(),
            requests: Default::default(),
            events: self
                .events
                .get_or_create(&SourceLabels {
                    namespace: namespace.to_owned(),
                    source: source.to_owned(),
                })
                .clone(),
            retired: Mutex::new(false),
        };
        let delivered = Outcome::ALL
            .iter()
            .position(|o| *o == Outcome::Delivered)
            .unwrap_or(0);
        let _ = metrics.requests[delivered].set(
            self.requests
                .get_or_create(&metrics.labels(Outcome::Delivered))
                .clone(),
        );
        metrics
    }

    /// Drops a removed source's series; counting through its handles no longer shows.
    pub fn remove_source(&self, source: &SourceMetrics) {
        let mut retired = source.retired.lock().unwrap_or_else(|p| p.into_inner());
        *retired = true;
        for outcome in Outcome::ALL {
            self.requests.remove(&source.labels(outcome));
        }
        self.events.remove(&SourceLabels {
            namespace: source.namespace.clone(),
            source: source.source.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn series(metrics: &Metrics, source: &str) -> Vec<String> {
        metrics
            .encode()
            .lines()
            .filter(|l| l.contains(&format!("source=\"{source}\"")))
            .map(str::to_owned)
            .collect()
    }

    fn has(listed: &[String], text: &str) -> bool {
        listed.iter().any(|l| l.contains(text))
    }

    #[test]
    fn request_durations_are_an_openmetrics_histogram_up_to_inf() {
        let metrics = Metrics::new();
        metrics.observe_duration(0.00015);
        metrics.observe_duration(60.0);
        let text = metrics.encode();
        for line in [
            "hookgate_ingest_request_duration_seconds_count 2",
            "hookgate_ingest_request_duration_seconds_bucket{le=\"0.0001\"} 0",
            "hookgate_ingest_request_duration_seconds_bucket{le=\"0.0002\"} 1",
            "hookgate_ingest_request_duration_seconds_bucket{le=\"3.2768\"} 1",
            "hookgate_ingest_request_duration_seconds_bucket{le=\"+Inf\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn a_source_lists_delivered_at_zero_and_other_outcomes_once_they_happen() {
        let metrics = Metrics::new();
        let shop = metrics.source("ns", "shop");
        let listed = series(&metrics, "shop");
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(has(&listed, r#"outcome="delivered"} 0"#));
        assert!(
            listed
                .iter()
                .any(|l| l.starts_with("hookgate_ingest_events_delivered_total"))
        );

        shop.request(Outcome::Unauthorized);
        shop.request(Outcome::Unauthorized);
        shop.request(Outcome::Delivered);
        let listed = series(&metrics, "shop");
        assert!(has(&listed, r#"outcome="unauthorized"} 2"#), "{listed:?}");
        assert!(has(&listed, r#"outcome="delivered"} 1"#), "{listed:?}");
    }

    #[test]
    fn a_removed_source_stays_removed_when_a_request_finishes_late() {
        let metrics = Metrics::new();
        let old = metrics.source("ns", "shop");
        old.request(Outcome::Unauthorized);
        metrics.remove_source(&old);
        assert!(series(&metrics, "shop").is_empty());

        // Re-created under the same name while a request on the old route finishes.
        let new = metrics.source("ns", "shop");
        new.request(Outcome::BadRequest);
        old.request(Outcome::BadRequest);
        old.request(Outcome::RateLimited);
        let listed = series(&metrics, "shop");
        assert!(has(&listed, r#"outcome="bad_request"} 1"#), "{listed:?}");
        assert!(!has(&listed, "rate_limited"), "{listed:?}");
        assert!(!has(&listed, "unauthorized"), "{listed:?}");
    }
}
