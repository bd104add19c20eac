//! The route table: which source a presented token opens, and everything needed to serve it.
//!
//! Routes come from any provider (the operator's published routes, the standalone loader) and
//! are installed whole with [`RouteTable::replace`] or one at a time with
//! [`RouteTable::upsert`] / [`RouteTable::remove`]. Each change builds a new immutable
//! [`Snapshot`] and swaps it in; a request takes a handle to the current one
//! ([`RouteTable::local_snapshot`]) and holds no lock while it awaits its body or its sink,
//! and a request in flight finishes with the routes it started with.
//!
//! Per-source state (status, dedup window, rate-limit bucket, metric handles) lives in
//! [`SourceState`], carried from one snapshot to the next by `namespace/name`: a route update
//! never resets counters or forgets delivered event ids. Compiled mappings are reused while
//! the Mapping's name, generation and spec are unchanged.
//!
//! Lookups use a `HashMap` keyed by the SHA-256 of the token. The timing of that lookup
//! depends only on hashes of what the caller sent, and learning how many leading bytes of a
//! stored hash match the hash of a guess does not help find a token (SHA-256 is preimage
//! resistant), so no constant-time comparison is needed here; a caller could equally use a
//! timing oracle on any other hash map keyed by secrets' hashes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::api::webhook_source::{ErrorStage, Sink as SinkSpec};
use crate::mapping::{CompileErrors, CompiledMapping, EventSource, Projection};
use crate::route::Route;
use crate::sink::Sink;

use super::limits::{DedupWindow, TokenBucket};
use super::metrics::{Metrics, SourceMetrics};
use super::status::{SourceSnapshot, SourceStatus};
use super::token;

/// How routes' `sink` settings become sinks.
#[derive(Clone)]
pub struct Sinks {
    /// For routes without a `sink` override.
    pub default: Arc<dyn Sink>,
    /// For `sink: {stdout: {}}`.
    pub stdout: Arc<dyn Sink>,
}

impl Sinks {
    /// One sink for everything (standalone mode, tests).
    pub fn single(sink: Arc<dyn Sink>) -> Self {
        Self {
            default: sink.clone(),
            stdout: sink,
        }
    }

    fn resolve(
        &self,
        spec: Option<&SinkSpec>,
        secrets: Option<&crate::route::SinkSecrets>,
    ) -> Arc<dyn Sink> {
        match spec {
            None => self.default.clone(),
            Some(s) if s.stdout.is_some() => self.stdout.clone(),
            // One sink per distinct configuration, shared by the routes that name it.
            Some(s) if s.http.is_some() || s.nats.is_some() => crate::sink::for_spec(s, secrets),
            Some(_) => self.default.clone(),
        }
    }
}

/// Extra per-source information shown on `/status` (standalone: the redacted URL, warnings).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceNotes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// State of one source that outlives route updates.
pub struct SourceState {
    pub status: SourceStatus,
    pub dedup: DedupWindow,
    pub bucket: Mutex<Option<Arc<TokenBucket>>>,
    pub metrics: SourceMetrics,
}

/// One route ready to serve.
pub struct LiveRoute {
    /// The route as published, except `mappings`, which is empty: they are kept compiled, and
    /// their specs only as digests (a spec with its `Vec` was ~2 KB per route, for the one
    /// comparison an update makes).
    pub route: Route,
    pub source: EventSource,
    /// The compiled mappings, in the route's order; mappings that failed to compile are left
    /// out (their errors are in [`LiveRoute::compile_errors`]).
    pub mappings: Vec<CompiledMapping>,
    /// `(generation, SHA-256 of the spec's JSON)` of each of `mappings`, same order: an update
    /// with the same name, generation and digest reuses the compiled mapping.
    compiled_from: Vec<(i64, [u8; 32])>,
    /// What the mappings read from a JSON body; the rest is skipped when parsing.
    pub projection: Projection,
    pub compile_errors: Vec<(String, CompileErrors)>,
    pub sink: Arc<dyn Sink>,
    pub dedup_window: Duration,
    pub bucket: Option<Arc<TokenBucket>>,
    pub state: Arc<SourceState>,
    pub notes: SourceNotes,
}

impl LiveRoute {
    pub fn snapshot(&self) -> SourceSnapshot {
        self.state
            .status
            .snapshot(&self.route.namespace, &self.route.name, &self.mappings)
    }
}

/// An immutable set of routes, as one request sees it.
#[derive(Default)]
pub struct Snapshot {
    by_token: HashMap<[u8; 32], (Arc<LiveRoute>, Option<i64>)>,
    by_name: HashMap<(String, String), Arc<LiveRoute>>,
}

impl Snapshot {
    /// The route a token hash opens at `now` (unix seconds); expired previous tokens open
    /// nothing.
    pub fn lookup(&self, hash: &[u8; 32], now: i64) -> Option<&Arc<LiveRoute>> {
        let (route, expires_at) = self.by_token.get(hash)?;
        match expires_at {
            Some(at) if now >= *at => None,
            _ => Some(route),
        }
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<LiveRoute>> {
        self.by_name.values()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<LiveRoute>> {
        self.by_name.get(&(namespace.to_owned(), name.to_owned()))
    }
}

/// Problems found while installing routes, for the provider to report (standalone prints
/// them; the operator already compiled the same specs, so for it this should stay empty).
#[derive(Debug, Default)]
pub struct InstallReport {
    /// `(namespace, source, mapping, errors)`.
    pub mapping_errors: Vec<(String, String, String, CompileErrors)>,
    /// `(namespace, source, message)`: e.g. a token hash that is not 64 hex digits, or a
    /// token already used by another source (the later source in the input loses it).
    pub route_errors: Vec<(String, String, String)>,
}

/// A thread's own handle to a [`Snapshot`] ([`RouteTable::local_snapshot`]): a second
/// allocation, so that its reference count is written by that thread alone.
pub struct ThreadSnapshot(Arc<Snapshot>);

impl std::ops::Deref for ThreadSnapshot {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.0
    }
}

/// A number for each install of any table, never reused.
fn next_install() -> u64 {
    static INSTALLS: AtomicU64 = AtomicU64::new(1);
    INSTALLS.fetch_add(1, Ordering::Relaxed)
}

/// The swappable table.
pub struct RouteTable {
    current: RwLock<Arc<Snapshot>>,
    /// Which install `current` is: a number no install of any table had before, so a thread's
    /// cached handle ([`RouteTable::local_snapshot`]) is known current by comparing it alone.
    installed: AtomicU64,
    /// Serialises writers, so two updates cannot lose each other's changes.
    write: Mutex<()>,
    loaded: AtomicBool,
    sinks: Sinks,
    metrics: Arc<Metrics>,
}

impl RouteTable {
    pub fn new(sinks: Sinks, metrics: Arc<Metrics>) -> Self {
        Self {
            current: RwLock::new(Arc::new(Snapshot::default())),
            installed: AtomicU64::new(next_install()),
            write: Mutex::new(()),
            loaded: AtomicBool::new(false),
            sinks,
            metrics,
        }
    }

    /// The routes in force now. Cheap: one `Arc` clone.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// [`RouteTable::snapshot`] for the request path: a handle of this thread's own to the
    /// current snapshot, counted on a reference count that only this thread writes. Cloning the
    /// shared `Arc` (and taking the read lock to find it) on every request made the busiest
    /// cache lines of the ingest bounce between its workers. A thread keeps its handle until
    /// its next request after a change, so a replaced snapshot can outlive the change by that
    /// long.
    pub fn local_snapshot(&self) -> Arc<ThreadSnapshot> {
        thread_local! {
            static CACHED: RefCell<Option<(u64, Arc<ThreadSnapshot>)>> = const { RefCell::new(None) };
        }
        let installed = self.installed.load(Ordering::Acquire);
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            if let Some((id, snapshot)) = &*cached
                && *id == installed
            {
                return snapshot.clone();
            }
            let (id, snapshot) = {
                let current = self.current.read().unwrap_or_else(|p| p.into_inner());
                // Read under the lock that `install` holds while it changes both.
                (self.installed.load(Ordering::Acquire), current.clone())
            };
            let local = Arc::new(ThreadSnapshot(snapshot));
            *cached = Some((id, local.clone()));
            local
        })
    }

    /// True once a full set of routes has been installed (`/readyz`).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Replaces every route: sources not in `routes` stop being served.
    pub fn replace(&self, routes: Vec<Route>) -> InstallReport {
        self.replace_with_notes(
            routes
                .into_iter()
                .map(|r| (r, SourceNotes::default()))
                .collect(),
        )
    }

    pub fn replace_with_notes(&self, routes: Vec<(Route, SourceNotes)>) -> InstallReport {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.snapshot();
        let mut report = InstallReport::default();
        let live: Vec<Arc<LiveRoute>> = routes
            .into_iter()
            .map(|(route, notes)| self.build(route, notes, &old, &mut report))
            .collect();
        self.install(&old, live, &mut report);
        self.loaded.store(true, Ordering::Release);
        report
    }

    /// Adds or updates one source's route.
    pub fn upsert(&self, route: Route) -> InstallReport {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.snapshot();
        let mut report = InstallReport::default();
        let key = (route.namespace.clone(), route.name.clone());
        let notes = old
            .by_name
            .get(&key)
            .map(|r| r.notes.clone())
            .unwrap_or_default();
        let new = self.build(route, notes, &old, &mut report);
        let mut live: Vec<Arc<LiveRoute>> = old
            .by_name
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, r)| r.clone())
            .collect();
        live.push(new);
        self.install(&old, live, &mut report);
        report
    }

    /// Stops serving one source (its state is dropped).
    pub fn remove(&self, namespace: &str, name: &str) {
        let _w = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.snapshot();
        let live: Vec<Arc<LiveRoute>> = old
            .by_name
            .iter()
            .filter(|((ns, n), _)| !(ns == namespace && n == name))
            .map(|(_, r)| r.clone())
            .collect();
        self.install(&old, live, &mut InstallReport::default());
    }

    /// Marks the table loaded without routes (a provider that has listed and found none).
    pub fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    fn build(
        &self,
        route: Route,
        notes: SourceNotes,
        old: &Snapshot,
        report: &mut InstallReport,
    ) -> Arc<LiveRoute> {
        let key = (route.namespace.clone(), route.name.clone());
        let previous = old.by_name.get(&key);
        let state = match previous {
            Some(p) => p.state.clone(),
            None => Arc::new(SourceState {
                status: SourceStatus::default(),
                dedup: DedupWindow::default(),
                bucket: Mutex::new(None),
                metrics: self.metrics.source(&route.namespace, &route.name),
            }),
        };

        let mut route = route;
        let specs = std::mem::take(&mut route.mappings);
        route.tokens.shrink_to_fit();
        let mut mappings = Vec::with_capacity(specs.len());
        let mut compiled_from = Vec::with_capacity(specs.len());
        let mut compile_errors = Vec::new();
        for m in &specs {
            let digest = spec_digest(&m.spec);
            let reused = previous.and_then(|p| {
                let i = p
                    .mappings
                    .iter()
                    .zip(&p.compiled_from)
                    .position(|(c, from)| c.name() == m.name && *from == (m.generation, digest))?;
                Some(p.mappings[i].clone())
            });
            match reused
                .map(Ok)
                .unwrap_or_else(|| CompiledMapping::compile(&m.name, &m.spec))
            {
                Ok(compiled) => {
                    mappings.push(compiled);
                    compiled_from.push((m.generation, digest));
                }
                Err(errors) => {
                    state.status.error(
                        ErrorStage::Map,
                        &format!("mapping {} does not compile: {errors}", m.name),
                        Timestamp::now(),
                    );
                    report.mapping_errors.push((
                        route.namespace.clone(),
                        route.name.clone(),
                        m.name.clone(),
                        errors.clone(),
                    ));
                    compile_errors.push((m.name.clone(), errors));
                }
            }
        }
        let names: Vec<&str> = specs.iter().map(|m| m.name.as_str()).collect();
        state.status.retain_mappings(&names);

        // The bucket is shared state: keep it (reconfigured) while the source has a limit.
        let bucket = {
            let mut slot = state.bucket.lock().unwrap_or_else(|p| p.into_inner());
            match route.rate_limit {
                None => *slot = None,
                Some(limit) => match slot.as_ref() {
                    Some(b) => b.reconfigure(limit),
                    None => *slot = Some(Arc::new(TokenBucket::new(limit, Instant::now()))),
                },
            }
            slot.clone()
        };

        Arc::new(LiveRoute {
            source: EventSource::new(&route.namespace, &route.name),
            sink: self
                .sinks
                .resolve(route.sink.as_ref(), route.sink_secrets.as_ref()),
            dedup_window: Duration::from_secs(route.dedup_window_seconds),
            projection: Projection::of(&mappings),
            mappings,
            compiled_from,
            compile_errors,
            bucket,
            state,
            notes,
            route,
        })
    }

    fn install(&self, old: &Snapshot, live: Vec<Arc<LiveRoute>>, report: &mut InstallReport) {
        let mut next = Snapshot::default();
        for route in live {
            let key = (route.route.namespace.clone(), route.route.name.clone());
            for t in &route.route.tokens {
                let Some(hash) = token::decode_hex_hash(&t.sha256) else {
                    report.route_errors.push((
                        key.0.clone(),
                        key.1.clone(),
                        "a token hash is not 64 hex digits; that token opens nothing".into(),
                    ));
                    continue;
                };
                if let Some((other, _)) = next.by_token.get(&hash) {
                    report.route_errors.push((
                        key.0.clone(),
                        key.1.clone(),
                        format!(
                            "its token is already used by {}/{}; this source is not reachable with it",
                            other.route.namespace, other.route.name
                        ),
                    ));
                    continue;
                }
                next.by_token.insert(hash, (route.clone(), t.expires_at));
            }
            next.by_name.insert(key, route);
        }
        for (key, route) in &old.by_name {
            if !next.by_name.contains_key(key) {
                self.metrics.remove_source(&route.state.metrics);
            }
        }
        self.metrics.set_routes(next.by_name.len());
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(next);
        self.installed.store(next_install(), Ordering::Release);
    }

    /// Status of every source, sorted by namespace and name.
    pub fn status(&self) -> Vec<(SourceSnapshot, SourceNotes)> {
        let snapshot = self.snapshot();
        let mut all: Vec<_> = snapshot
            .routes()
            .map(|r| (r.snapshot(), r.notes.clone()))
            .collect();
        all.sort_by(|a, b| (&a.0.namespace, &a.0.name).cmp(&(&b.0.namespace, &b.0.name)));
        all
    }
}

/// Tells specs apart without keeping them: equal JSON is an equal spec (fields serialise in
/// declaration order, maps as ordered maps).
fn spec_digest(spec: &crate::api::MappingSpec) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(spec).unwrap_or_default();
    Sha256::digest(json).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{RouteMapping, TokenHash};
    use crate::sink::WriterSink;

    fn route(event_name: &str, generation: i64) -> Route {
        let spec = serde_json::from_value(serde_json::json!({
            "sourceRef": {"name": "s"},
            "event": {"name": event_name, "id": "{{id}}", "externalId": "{{customer}}"}
        }))
        .unwrap();
        Route {
            namespace: "ns".into(),
            name: "s".into(),
            generation: 1,
            tokens: vec![TokenHash {
                sha256: crate::route::token_sha256_hex("t"),
                expires_at: None,
            }],
            enabled: true,
            max_body_bytes: 1024,
            rate_limit: None,
            dedup_window_seconds: 0,
            signature: None,
            mappings: vec![RouteMapping {
                name: "m".into(),
                generation,
                spec,
            }],
            sink: None,
            sink_secrets: None,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(
            Sinks::single(WriterSink::stdout()),
            Arc::new(Metrics::new()),
        )
    }

    fn compiled(table: &RouteTable) -> CompiledMapping {
        table.snapshot().get("ns", "s").unwrap().mappings[0].clone()
    }

    #[test]
    fn a_threads_snapshot_handle_follows_every_change_of_its_own_table() {
        let (one, two) = (table(), table());
        one.upsert(route("Order", 1));
        let first = one.local_snapshot();
        assert!(Arc::ptr_eq(&first.0, &one.snapshot()));
        // Served again without a change: the same handle, not a new one.
        assert!(Arc::ptr_eq(&first, &one.local_snapshot()));
        // Another table on the same thread does not see the first one's routes.
        assert!(two.local_snapshot().get("ns", "s").is_none());
        one.remove("ns", "s");
        assert!(one.local_snapshot().get("ns", "s").is_none());
        assert!(first.get("ns", "s").is_some(), "a request keeps its routes");
        one.upsert(route("Order", 1));
        assert!(Arc::ptr_eq(&one.local_snapshot().0, &one.snapshot()));
    }

    #[test]
    fn an_unchanged_mapping_is_reused_and_a_changed_spec_recompiled() {
        let table = table();
        table.upsert(route("Order", 1));
        let first = compiled(&table);
        assert!(
            table
                .snapshot()
                .get("ns", "s")
                .unwrap()
                .route
                .mappings
                .is_empty()
        );

        table.upsert(route("Order", 1));
        assert!(Arc::ptr_eq(&first.name, &compiled(&table).name));

        // Standalone manifests keep generation 1 while their spec changes.
        table.upsert(route("Refund", 1));
        let changed = compiled(&table);
        assert!(!Arc::ptr_eq(&first.name, &changed.name));
        assert!(format!("{changed:?}").contains("Refund"), "{changed:?}");

        table.upsert(route("Refund", 2));
        assert!(!Arc::ptr_eq(&changed.name, &compiled(&table).name));
    }
}
