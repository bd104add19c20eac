//! Per-source status kept in memory by the ingest, in the shapes of the custom resources'
//! status (`crate::api::webhook_source`), so a status writer can copy a snapshot as it is.
//!
//! What is recorded never contains a token, a signing secret, a payload value or a raw
//! identity: events carry masked identities (`j***@e***.com`), errors carry the engine's
//! messages, which name fields and templates but not values.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use serde_json::Value;

use super::shard::Sharded;
use crate::api::webhook_source::{Counters, ErrorStage, ObservedField, RecentError, RecentEvent};
use crate::mapping::{CompiledMapping, MappedEvent, Name, ShapeObserver};

/// Status lists hold at most this many entries (DESIGN §2).
pub const MAX_RECENT: usize = 10;

/// The status of one source, shared by every request to it and kept across route updates.
///
/// What every request records (counters, recent events, per-mapping matches) is kept per
/// thread ([`Sharded`]) and added up by [`SourceStatus::snapshot`]: one lock for all requests
/// was the most contended cache line of a busy ingest. What changes rarely (errors, the
/// learned shape) has one lock.
#[derive(Debug, Default)]
pub struct SourceStatus {
    shards: Sharded<Shard>,
    shared: Mutex<Shared>,
    /// Bumped on every change of `shared`; each shard has its own.
    shared_version: AtomicU64,
    /// Bodies offered for shape learning, for [`SourceStatus::shape_sample`].
    bodies: Sharded<AtomicU64>,
    /// Set once more than [`SHAPE_EVERY_BODY`] bodies were offered: from then on a body is
    /// counted in its thread's shard only, and the total is added up only to weigh a sample.
    every_body_learned: AtomicBool,
    /// The total of `bodies` when the last sample was taken, and the sampling tick it was
    /// taken in.
    sampled_body: AtomicU64,
    sampled_tick: AtomicU64,
}

/// Every body is learned until this many have arrived.
pub const SHAPE_EVERY_BODY: u64 = 64;
/// Then at most this many bodies a second per source.
pub const SHAPE_SAMPLES_PER_SECOND: u64 = 100;

/// One thread's share of a source's status.
#[derive(Debug, Default)]
struct Shard {
    inner: Mutex<Inner>,
    /// Bumped on every change, so a writer can skip sources that did not change since its
    /// last write (the sum over shards changes whenever one does).
    version: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    counters: Counters,
    last_event_at: Option<Timestamp>,
    /// Oldest first, in time; the newest [`MAX_RECENT`] of every shard together are shown.
    recent_events: VecDeque<Recent>,
    mappings: BTreeMap<String, MappingCounts>,
}

#[derive(Debug, Default)]
struct Shared {
    recent_errors: Vec<RecentError>,
    shape: ShapeObserver,
    /// Recent errors by mapping name.
    mapping_errors: BTreeMap<String, Vec<RecentError>>,
}

/// A recent event as recorded on the request path: what `RecentEvent` shows, with the parts
/// that are the same for many requests shared rather than copied. Turned into `RecentEvent`s
/// only when status is written, a few times a minute, not once per request. The entry
/// evicted from a full list is reused, strings and all.
#[derive(Debug, Default)]
struct Recent {
    at: Timestamp,
    request_id: String,
    mapping: Option<Arc<str>>,
    event_name: Option<Arc<str>>,
    event_id: Option<String>,
    identity: Option<String>,
    outcome: &'static str,
}

impl Recent {
    fn to_api(&self) -> RecentEvent {
        RecentEvent {
            time: Time(self.at),
            request_id: self.request_id.clone(),
            mapping: self.mapping.as_deref().map(str::to_owned),
            event_name: self.event_name.as_deref().map(str::to_owned),
            event_id: self.event_id.clone(),
            identity: self.identity.clone(),
            outcome: self.outcome.to_owned(),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct MappingCounts {
    matched: i64,
    failed: i64,
    last_matched_at: Option<Timestamp>,
}

/// What became of an accepted event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    Duplicate,
}

/// Which counter a request outcome adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    Received,
    Ignored,
    /// Refused before mapping: disabled, unauthorised, too large, unparseable, rate limited.
    Rejected,
    /// Mapped but not delivered: mapping errors (422) and sink failures (503).
    Failed,
}

/// A copy of one source's status at one moment, serialised as the `/status` JSON of the
/// standalone and admin ports. Field names follow `WebhookSourceStatus` / `MappingStatus`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceSnapshot {
    pub namespace: String,
    pub name: String,
    /// Changes whenever anything below changes.
    pub version: u64,
    pub counters: Counters,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<Time>,
    pub recent_events: Vec<RecentEvent>,
    pub recent_errors: Vec<RecentError>,
    pub observed_fields: Vec<ObservedField>,
    pub unmapped_fields: Vec<String>,
    pub mappings: Vec<MappingSnapshot>,
}

/// The ingest-written part of a Mapping's status.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MappingSnapshot {
    pub name: String,
    pub matched: i64,
    pub failed: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_matched_at: Option<Time>,
    pub recent_errors: Vec<RecentError>,
}

impl SourceStatus {
    /// Changes the calling thread's shard.
    fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let shard = self.shards.local();
        let mut inner = shard.inner.lock().unwrap_or_else(|p| p.into_inner());
        let result = f(&mut inner);
        shard.version.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn update_shared<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let result = f(&mut shared);
        self.shared_version.fetch_add(1, Ordering::Relaxed);
        result
    }

    pub fn version(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.version.load(Ordering::Relaxed))
            .fold(
                self.shared_version.load(Ordering::Relaxed),
                u64::wrapping_add,
            )
    }

    pub fn count(&self, count: Count) {
        self.update(|s| {
            let c = &mut s.counters;
            match count {
                Count::Received => c.received += 1,
                Count::Ignored => c.ignored += 1,
                Count::Rejected => c.rejected += 1,
                Count::Failed => c.failed += 1,
            }
        });
    }

    /// Counts a request that reached this source.
    pub fn received(&self, at: Timestamp) {
        self.update(|s| {
            s.counters.received += 1;
            // Threads can share a shard, and one may record an earlier time after another
            // recorded a later one.
            s.last_event_at = s.last_event_at.max(Some(at));
        });
    }

    /// Learns the shape of a parsed body.
    pub fn observe(&self, body: &Value) {
        self.update_shared(|s| s.shape.observe(body));
    }

    /// Whether this request's body should be parsed whole for shape learning, and how many
    /// bodies it then stands for. The first [`SHAPE_EVERY_BODY`] bodies are all learned; after
    /// that at most [`SHAPE_SAMPLES_PER_SECOND`], each standing for the bodies since the one
    /// before. A whole parse costs as much as the rest of the request: with a fixed one-in-N
    /// rate it was still a twentieth of a busy ingest's CPU, while a source sending fewer than
    /// a hundred bodies a second (where a rare field takes longest to show) is learned whole.
    pub fn shape_sample(&self, now: Timestamp) -> Option<u64> {
        self.bodies.local().fetch_add(1, Ordering::Relaxed);
        let mut total = None;
        let every_body = !self.every_body_learned.load(Ordering::Relaxed) && {
            let n = self.bodies_offered();
            total = Some(n);
            if n > SHAPE_EVERY_BODY {
                self.every_body_learned.store(true, Ordering::Relaxed);
            }
            n <= SHAPE_EVERY_BODY
        };
        let tick =
            u64::try_from(now.as_millisecond()).unwrap_or(0) / (1000 / SHAPE_SAMPLES_PER_SECOND);
        let last = self.sampled_tick.load(Ordering::Relaxed);
        // Of concurrent requests in a new tick, only the one that moves the tick samples.
        let claimed = tick != last
            && self
                .sampled_tick
                .compare_exchange(last, tick, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if !claimed && !every_body {
            return None;
        }
        let n = total.unwrap_or_else(|| self.bodies_offered());
        let previous = self.sampled_body.swap(n, Ordering::Relaxed);
        Some(n.saturating_sub(previous).max(1))
    }

    fn bodies_offered(&self) -> u64 {
        self.bodies.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// Learns the shape of a sampled body standing for `weight` bodies.
    pub fn observe_sampled(&self, body: &Value, weight: u64) {
        self.update_shared(|s| s.shape.observe_weighted(body, weight));
    }

    pub fn error(&self, stage: ErrorStage, message: &str, at: Timestamp) {
        self.update_shared(|s| push_error(&mut s.recent_errors, stage, message, at));
    }

    /// Records a handled request without events (ignored, rejected, failed).
    pub fn request(&self, request_id: &str, outcome: &'static str, at: Timestamp) {
        self.update(|s| {
            push_event(&mut s.recent_events, at, |recent| {
                set(&mut recent.request_id, request_id);
                recent.mapping = None;
                recent.event_name = None;
                recent.event_id = None;
                recent.identity = None;
                recent.outcome = outcome;
            });
        });
    }

    /// Records events of a request with their outcome, `delivered` or `duplicate`, and counts
    /// them: one lock for the whole request. A reused entry keeps its name handles when they
    /// are the event's own (`share`).
    pub fn events<'m>(
        &self,
        request_id: &str,
        events: impl IntoIterator<Item = (MappedEvent<'m>, Delivery)>,
        at: Timestamp,
    ) {
        self.update(|s| {
            for (event, delivery) in events {
                let outcome = match delivery {
                    Delivery::Delivered => {
                        s.counters.delivered += 1;
                        "delivered"
                    }
                    Delivery::Duplicate => {
                        s.counters.duplicates += 1;
                        "duplicate"
                    }
                };
                push_event(&mut s.recent_events, at, |recent| {
                    set(&mut recent.request_id, request_id);
                    match shown_identity(&event) {
                        Some(identity) => {
                            mask_into(recent.identity.get_or_insert_default(), identity)
                        }
                        None => recent.identity = None,
                    }
                    set(recent.event_id.get_or_insert_default(), &event.id);
                    share(&mut recent.mapping, &event.mapping);
                    share(&mut recent.event_name, &event.name);
                    recent.outcome = outcome;
                });
            }
        });
    }

    /// Per-mapping counters for one request: which mappings matched, which failed and why.
    pub fn mapping_results<'a>(
        &self,
        matched: impl IntoIterator<Item = &'a str>,
        failed: impl IntoIterator<Item = (&'a str, &'a str)>,
        at: Timestamp,
    ) {
        let failed: Vec<(&str, &str)> = self.update(|s| {
            for name in matched {
                let m = counts(&mut s.mappings, name);
                m.matched += 1;
                m.last_matched_at = m.last_matched_at.max(Some(at));
            }
            failed
                .into_iter()
                .inspect(|(name, _)| counts(&mut s.mappings, name).failed += 1)
                .collect()
        });
        if !failed.is_empty() {
            self.update_shared(|s| {
                for (name, message) in failed {
                    let errors = s.mapping_errors.entry(name.to_owned()).or_default();
                    push_error(errors, ErrorStage::Map, message, at);
                }
            });
        }
    }

    /// Forgets per-mapping stats of mappings no longer attached (a removed Mapping's counters
    /// go with it).
    pub fn retain_mappings(&self, names: &[&str]) {
        let attached = |name: &String| names.contains(&name.as_str());
        for shard in self.shards.iter() {
            let mut inner = shard.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.mappings.retain(|name, _| attached(name));
            shard.version.fetch_add(1, Ordering::Relaxed);
        }
        self.update_shared(|s| s.mapping_errors.retain(|name, _| attached(name)));
    }

    /// A copy for a status writer or the `/status` endpoint. `mappings` are the source's
    /// current mappings: every one is listed (zero counts included) and `unmappedFields` is
    /// computed against them.
    pub fn snapshot(
        &self,
        namespace: &str,
        name: &str,
        mappings: &[CompiledMapping],
    ) -> SourceSnapshot {
        // Read before the parts, so a change made meanwhile shows as a newer version later.
        let version = self.version();
        let mut counters = Counters::default();
        let mut last_event_at = None;
        let mut recent_events = Vec::new();
        let mut counts: BTreeMap<&str, MappingCounts> = mappings
            .iter()
            .map(|m| (m.name(), MappingCounts::default()))
            .collect();
        for shard in self.shards.iter() {
            let s = shard.inner.lock().unwrap_or_else(|p| p.into_inner());
            let c = &s.counters;
            counters.received += c.received;
            counters.delivered += c.delivered;
            counters.ignored += c.ignored;
            counters.duplicates += c.duplicates;
            counters.rejected += c.rejected;
            counters.failed += c.failed;
            last_event_at = last_event_at.max(s.last_event_at);
            // Newest first within the shard; the stable sort below keeps that order among
            // entries of the same time.
            recent_events.extend(s.recent_events.iter().rev().map(|r| (r.at, r.to_api())));
            for (name, shard_counts) in &s.mappings {
                if let Some(total) = counts.get_mut(name.as_str()) {
                    total.matched += shard_counts.matched;
                    total.failed += shard_counts.failed;
                    total.last_matched_at = total.last_matched_at.max(shard_counts.last_matched_at);
                }
            }
        }
        recent_events.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        recent_events.truncate(MAX_RECENT);

        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let observed_fields = shared
            .shape
            .fields()
            .into_iter()
            .map(|f| ObservedField {
                path: f.path,
                types: f.types.names().map(str::to_owned).collect(),
                seen: i64::try_from(f.seen).unwrap_or(i64::MAX),
            })
            .collect();
        let unmapped_fields = shared.shape.unmapped(mappings);
        let mappings = mappings
            .iter()
            .map(|m| {
                let c = counts.get(m.name()).cloned().unwrap_or_default();
                MappingSnapshot {
                    name: m.name().to_owned(),
                    matched: c.matched,
                    failed: c.failed,
                    last_matched_at: c.last_matched_at.map(Time),
                    recent_errors: shared
                        .mapping_errors
                        .get(m.name())
                        .cloned()
                        .unwrap_or_default(),
                }
            })
            .collect();
        SourceSnapshot {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            version,
            counters,
            last_event_at: last_event_at.map(Time),
            recent_events: recent_events.into_iter().map(|(_, e)| e).collect(),
            recent_errors: shared.recent_errors.clone(),
            observed_fields,
            unmapped_fields,
            mappings,
        }
    }
}

/// The counts of mapping `name`, created at zero. Looked up before inserting: `entry` would
/// allocate the name on every request.
fn counts<'m>(
    mappings: &'m mut BTreeMap<String, MappingCounts>,
    name: &str,
) -> &'m mut MappingCounts {
    if !mappings.contains_key(name) {
        mappings.insert(name.to_owned(), MappingCounts::default());
    }
    mappings.get_mut(name).expect("inserted above")
}

/// Appends to the list, reusing the entry it evicts when full (`fill` sets every field).
/// Adds an entry at its place in time, giving up the oldest when the list is full. Threads that
/// share a shard can record out of order; kept in arrival order, a shard could give up a newer
/// entry and keep an older one, and the snapshot, which takes each shard's newest, would miss it.
fn push_event(events: &mut VecDeque<Recent>, at: Timestamp, fill: impl FnOnce(&mut Recent)) {
    let mut recent = if events.len() >= MAX_RECENT {
        if events.front().is_some_and(|oldest| at < oldest.at) {
            return;
        }
        events.pop_front().unwrap_or_default()
    } else {
        Recent::default()
    };
    fill(&mut recent);
    recent.at = at;
    if events.back().is_none_or(|newest| newest.at <= at) {
        events.push_back(recent);
    } else {
        let place = events.partition_point(|e| e.at <= at);
        events.insert(place, recent);
    }
}

/// Replaces `to`'s text, in its own buffer.
fn set(to: &mut String, text: &str) {
    to.clear();
    to.push_str(text);
}

/// Holds `name` in `slot`, keeping the handle already there when it is the same name: the
/// entry a full list reuses nearly always held an event of the same mapping.
fn share(slot: &mut Option<Arc<str>>, name: &Name<'_>) {
    if !slot.as_ref().is_some_and(|held| name.is(held)) {
        *slot = Some(name.to_shared());
    }
}

/// Same stage and message: bump count and time. Otherwise add, evicting the least recent.
/// Kept most recent first.
fn push_error(errors: &mut Vec<RecentError>, stage: ErrorStage, message: &str, at: Timestamp) {
    if let Some(i) = errors
        .iter()
        .position(|e| e.stage == stage && e.message == message)
    {
        let mut e = errors.remove(i);
        e.count += 1;
        // Times are taken before the lock: a thread can arrive here after a later one.
        if e.time.0 < at {
            e.time = Time(at);
        }
        errors.insert(0, e);
        return;
    }
    if errors.len() == MAX_RECENT {
        errors.pop();
    }
    errors.insert(
        0,
        RecentError {
            time: Time(at),
            stage,
            message: message.to_owned(),
            count: 1,
        },
    );
}

/// The identity shown in status: the email if any, else the external id, else the visitor id
/// (masked by [`mask_into`]).
fn shown_identity<'e>(event: &'e MappedEvent<'_>) -> Option<&'e str> {
    event
        .email
        .as_deref()
        .or(event.external_id.as_deref())
        .or(event.visitor_id.as_deref())
}

/// `jane@example.com` → `j***@e***.com`; `cus_9Xk2` → `c***`; hashes `3f2a…` → `3***`: a
/// person can recognise it without it being disclosed. Written into `masked`'s own buffer (a
/// reused recent event's), replacing its text.
fn mask_into(masked: &mut String, value: &str) {
    masked.clear();
    let push_first = |part: &str, masked: &mut String| {
        masked.extend(part.chars().next());
        masked.push_str("***");
    };
    if let Some((local, domain)) = value.split_once('@') {
        let (host, tld) = match domain.rfind('.') {
            Some(dot) => (&domain[..dot], &domain[dot..]),
            None => (domain, ""),
        };
        push_first(local, masked);
        masked.push('@');
        push_first(host, masked);
        masked.push_str(tld);
    } else {
        push_first(value, masked);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(value: &str) -> String {
        let mut masked = String::new();
        mask_into(&mut masked, value);
        masked
    }

    #[test]
    fn masks_emails_and_ids() {
        assert_eq!(mask("jane.doe@example.com"), "j***@e***.com");
        assert_eq!(mask("x@localhost"), "x***@l***");
        assert_eq!(mask("cus_9Xk2"), "c***");
        assert_eq!(mask(""), "***");
    }

    #[test]
    fn shape_samples_every_body_then_at_most_one_per_tick_standing_for_those_skipped() {
        let status = SourceStatus::default();
        let t = Timestamp::from_second(1_700_000_000).expect("valid time");
        let weights: Vec<Option<u64>> = (0..SHAPE_EVERY_BODY + 30)
            .map(|_| status.shape_sample(t))
            .collect();
        assert!(
            weights[..SHAPE_EVERY_BODY as usize]
                .iter()
                .all(|w| *w == Some(1))
        );
        // The first body of the tick claimed it; the rest of this tick is skipped.
        assert!(
            weights[SHAPE_EVERY_BODY as usize..]
                .iter()
                .all(Option::is_none)
        );
        let tick = jiff::SignedDuration::from_millis((1000 / SHAPE_SAMPLES_PER_SECOND) as i64);
        let next = t.checked_add(tick).expect("in range");
        assert_eq!(status.shape_sample(next), Some(31));
        assert_eq!(status.shape_sample(next), None);
    }

    #[test]
    fn errors_are_deduplicated_and_bounded() {
        let status = SourceStatus::default();
        let t = Timestamp::UNIX_EPOCH;
        for i in 0..15 {
            status.error(ErrorStage::Parse, &format!("error {i}"), t);
        }
        status.error(ErrorStage::Parse, "error 14", t);
        status.error(ErrorStage::Map, "error 14", t);
        let snap = status.snapshot("ns", "s", &[]);
        assert_eq!(snap.recent_errors.len(), MAX_RECENT);
        assert_eq!(snap.recent_errors[0].stage, ErrorStage::Map);
        assert_eq!(snap.recent_errors[1].message, "error 14");
        assert_eq!(snap.recent_errors[1].count, 2);
    }

    #[test]
    fn a_repeated_error_keeps_its_newest_time() {
        let status = SourceStatus::default();
        let at = |second: i64| Timestamp::from_second(1_700_000_000 + second).expect("valid time");
        for second in [5, 3] {
            status.error(ErrorStage::Parse, "bad body", at(second));
        }
        let snap = status.snapshot("ns", "s", &[]);
        assert_eq!(snap.recent_errors.len(), 1);
        assert_eq!(snap.recent_errors[0].count, 2);
        assert_eq!(snap.recent_errors[0].time, Time(at(5)));
    }

    #[test]
    fn events_are_counted_and_shown_masked() {
        let status = SourceStatus::default();
        let event = |id: &str| MappedEvent {
            name: "Purchase".into(),
            visitor_id: Some("v-1".into()),
            external_id: Some("cus_1".into()),
            email: Some("ada@example.com".into()),
            ..MappedEvent::with_id(id)
        };
        let (a, b) = (event("evt_a"), event("evt_b"));
        let t = Timestamp::from_second(1_700_000_000).expect("valid time");
        status.events(
            "r1",
            [(a.clone(), Delivery::Delivered), (b, Delivery::Duplicate)],
            t,
        );
        status.events("r2", [(a, Delivery::Duplicate)], t);
        let snap = status.snapshot("ns", "s", &[]);
        assert_eq!((snap.counters.delivered, snap.counters.duplicates), (1, 2));
        let shown: Vec<_> = snap
            .recent_events
            .iter()
            .map(|e| {
                (
                    e.request_id.as_str(),
                    e.event_id.as_deref(),
                    e.outcome.as_str(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("r2", Some("evt_a"), "duplicate"),
                ("r1", Some("evt_b"), "duplicate"),
                ("r1", Some("evt_a"), "delivered"),
            ]
        );
        let first = &snap.recent_events[2];
        assert_eq!(first.mapping.as_deref(), Some("m"));
        assert_eq!(first.event_name.as_deref(), Some("Purchase"));
        assert_eq!(first.identity.as_deref(), Some("a***@e***.com"));
        assert_eq!(first.time, Time(t));
    }

    #[test]
    fn reused_entries_show_the_names_of_their_new_events() {
        let status = SourceStatus::default();
        let t = Timestamp::from_second(1_700_000_000).expect("valid time");
        let (first, second): (Arc<str>, Arc<str>) = ("first".into(), "second".into());
        fn of(mapping: &Arc<str>, id: String) -> MappedEvent<'_> {
            MappedEvent {
                mapping: Name::Mapping(mapping),
                name: Name::Owned(format!("{mapping}-event").into()),
                ..MappedEvent::with_id(id)
            }
        }
        for i in 0..MAX_RECENT {
            status.events("r", [(of(&first, format!("a{i}")), Delivery::Delivered)], t);
        }
        // A full list: each of these reuses the oldest entry, one of `first`'s.
        status.events("r", [(of(&second, "b".into()), Delivery::Delivered)], t);
        status.events("r", [(of(&first, "c".into()), Delivery::Delivered)], t);
        let snap = status.snapshot("ns", "s", &[]);
        let shown: Vec<_> = snap.recent_events[..3]
            .iter()
            .map(|e| {
                (
                    e.event_id.as_deref(),
                    e.mapping.as_deref(),
                    e.event_name.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (Some("c"), Some("first"), Some("first-event")),
                (Some("b"), Some("second"), Some("second-event")),
                (
                    Some(&*format!("a{}", MAX_RECENT - 1)),
                    Some("first"),
                    Some("first-event")
                ),
            ]
        );
        // The list holds the mapping's own handle, not a copy of the name.
        assert!(Arc::strong_count(&first) > 1);
    }

    /// A mapping named `m`, for the per-mapping part of a snapshot.
    fn mapping_m() -> CompiledMapping {
        let spec = serde_json::from_value(serde_json::json!({
            "sourceRef": {"name": "s"},
            "event": {"name": "E", "visitorId": "{{v}}"}
        }))
        .expect("mapping spec");
        CompiledMapping::compile("m", &spec).expect("compiles")
    }

    #[test]
    fn threads_record_in_their_own_shards_and_the_snapshot_adds_them_up() {
        let status = std::sync::Arc::new(SourceStatus::default());
        let at = |second: i64| Timestamp::from_second(1_700_000_000 + second).expect("valid time");
        let before = status.version();
        // Thread t records requests at seconds t, t + 4, t + 8, ...: every thread's newest
        // entries are interleaved in time with the others'.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let status = status.clone();
                std::thread::spawn(move || {
                    for i in 0..6 {
                        let second = t + 4 * i;
                        status.received(at(second));
                        status.request(&format!("r{second}"), "ignored", at(second));
                        status.mapping_results(["m"], [], at(second));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("recording thread");
        }
        assert!(status.version() > before);
        let mapping = mapping_m();
        let snap = status.snapshot("ns", "s", std::slice::from_ref(&mapping));
        assert_eq!(snap.counters.received, 24);
        assert_eq!(snap.last_event_at, Some(Time(at(23))));
        let shown: Vec<&str> = snap
            .recent_events
            .iter()
            .map(|e| e.request_id.as_str())
            .collect();
        assert_eq!(
            shown,
            [
                "r23", "r22", "r21", "r20", "r19", "r18", "r17", "r16", "r15", "r14"
            ]
        );
        assert_eq!(snap.mappings[0].matched, 24);
        assert_eq!(snap.mappings[0].last_matched_at, Some(Time(at(23))));
    }

    #[test]
    fn an_earlier_time_recorded_later_does_not_move_the_last_times_back() {
        // Threads that share a shard can record out of order.
        let status = SourceStatus::default();
        let at = |second: i64| Timestamp::from_second(1_700_000_000 + second).expect("valid time");
        for second in [5, 3] {
            status.received(at(second));
            status.mapping_results(["m"], [], at(second));
        }
        let mapping = mapping_m();
        let snap = status.snapshot("ns", "s", std::slice::from_ref(&mapping));
        assert_eq!(snap.last_event_at, Some(Time(at(5))));
        assert_eq!(snap.mappings[0].last_matched_at, Some(Time(at(5))));
    }

    #[test]
    fn a_full_list_keeps_the_newest_by_time_whatever_order_they_arrive_in() {
        let status = SourceStatus::default();
        let at = |second: i64| Timestamp::from_second(1_700_000_000 + second).expect("valid time");
        let seconds: Vec<i64> = (0..MAX_RECENT as i64).chain([20, 15, 0]).collect();
        for second in &seconds {
            status.request(&format!("r{second}"), "ignored", at(*second));
        }
        let snap = status.snapshot("ns", "s", &[]);
        let shown: Vec<&str> = snap
            .recent_events
            .iter()
            .map(|e| e.request_id.as_str())
            .collect();
        let mut newest = seconds.clone();
        newest.sort_unstable_by(|a, b| b.cmp(a));
        newest.truncate(MAX_RECENT);
        let expected: Vec<String> = newest.iter().map(|s| format!("r{s}")).collect();
        assert_eq!(shown, expected);
        assert!(!shown.contains(&"r0"), "{shown:?}");
    }

    #[test]
    fn recent_events_keep_the_last_ten_newest_first() {
        let status = SourceStatus::default();
        for i in 0..12 {
            status.request(&format!("r{i}"), "ignored", Timestamp::UNIX_EPOCH);
        }
        let snap = status.snapshot("ns", "s", &[]);
        assert_eq!(snap.recent_events.len(), MAX_RECENT);
        assert_eq!(snap.recent_events[0].request_id, "r11");
    }
}
