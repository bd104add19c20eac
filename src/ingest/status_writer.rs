//! Writes what the ingest saw onto the resources' status, batched and throttled.
//!
//! Several replicas write the same status, so each write is a read-modify-write with the
//! object's `resourceVersion` as a precondition: a replica adds its own increments since its
//! last successful write to what is stored, and a 409 (another replica, or the operator, wrote
//! in between) makes it read again and redo the sum. No increment is lost or counted twice,
//! and the operator's fields (conditions, url, ...) are never part of the patch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::RouteTable;
use super::status::{MappingSnapshot, SourceSnapshot};
use crate::api::mapping::Mapping;
use crate::api::webhook_source::{
    Counters, ErrorStage, ObservedField, RecentError, RecentEvent, WebhookSource,
};

const MAX_RECENT: usize = 10;
const MAX_FIELDS: usize = 100;
const ATTEMPTS: usize = 8;

/// What this replica had counted at its last successful write of one source.
#[derive(Clone, Debug, Default)]
struct Written {
    version: u64,
    counters: Counters,
    errors: HashMap<(ErrorStage, String), i64>,
    fields: HashMap<String, i64>,
    mappings: HashMap<String, WrittenMapping>,
}

#[derive(Clone, Debug, Default)]
struct WrittenMapping {
    matched: i64,
    failed: i64,
    errors: HashMap<(ErrorStage, String), i64>,
}

fn error_counts(errors: &[RecentError]) -> HashMap<(ErrorStage, String), i64> {
    errors
        .iter()
        .map(|e| ((e.stage, e.message.clone()), e.count))
        .collect()
}

impl Written {
    fn from(snap: &SourceSnapshot) -> Self {
        Written {
            version: snap.version,
            counters: snap.counters.clone(),
            errors: error_counts(&snap.recent_errors),
            fields: snap
                .observed_fields
                .iter()
                .map(|f| (f.path.clone(), f.seen))
                .collect(),
            mappings: snap
                .mappings
                .iter()
                .map(|m| {
                    (
                        m.name.clone(),
                        WrittenMapping {
                            matched: m.matched,
                            failed: m.failed,
                            errors: error_counts(&m.recent_errors),
                        },
                    )
                })
                .collect(),
        }
    }
}

pub struct StatusWriter {
    client: Client,
    table: Arc<RouteTable>,
    interval: Duration,
    field_manager: String,
    written: HashMap<(String, String), Written>,
}

impl StatusWriter {
    pub fn new(client: Client, table: Arc<RouteTable>, interval: Duration) -> Self {
        StatusWriter {
            client,
            table,
            interval,
            field_manager: "hookgate.dev/ingest".to_owned(),
            written: HashMap::new(),
        }
    }

    /// Writes every `interval` until `stop` resolves, then once more so nothing counted is
    /// left behind by a clean shutdown.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush().await,
                () = &mut stop => {
                    self.flush().await;
                    return;
                }
            }
        }
    }

    /// One pass: every source whose in-memory status changed since its last write.
    pub async fn flush(&mut self) {
        for (snap, _) in self.table.status() {
            let key = (snap.namespace.clone(), snap.name.clone());
            let previous = self.written.get(&key).cloned().unwrap_or_default();
            if snap.version == previous.version {
                continue;
            }
            match self.write_source(&snap, &previous).await {
                Ok(()) => {
                    for mapping in &snap.mappings {
                        let before = previous
                            .mappings
                            .get(&mapping.name)
                            .cloned()
                            .unwrap_or_default();
                        if let Err(e) = self.write_mapping(&snap.namespace, mapping, &before).await
                        {
                            warn!(namespace = %snap.namespace, mapping = %mapping.name, error = %e, "writing mapping status failed");
                        }
                    }
                    self.written.insert(key, Written::from(&snap));
                }
                // Kept unwritten: the next pass retries with the increments still pending.
                Err(e) => {
                    warn!(namespace = %snap.namespace, source = %snap.name, error = %e, "writing status failed")
                }
            }
        }
    }

    async fn write_source(
        &self,
        snap: &SourceSnapshot,
        previous: &Written,
    ) -> Result<(), kube::Error> {
        let api: Api<WebhookSource> = Api::namespaced(self.client.clone(), &snap.namespace);
        for _ in 0..ATTEMPTS {
            let Some(current) = api.get_opt(&snap.name).await? else {
                return Ok(()); // deleted meanwhile: nothing to report on
            };
            let stored = current.status.clone().unwrap_or_default();
            let status = merge_source(&stored, snap, previous);
            if let Some(done) = self.patch(&api, &current, status).await? {
                debug!(namespace = %snap.namespace, source = %snap.name, "status written");
                return Ok(done);
            }
        }
        Err(conflict_exhausted())
    }

    async fn write_mapping(
        &self,
        namespace: &str,
        snap: &MappingSnapshot,
        previous: &WrittenMapping,
    ) -> Result<(), kube::Error> {
        if snap.matched == previous.matched
            && snap.failed == previous.failed
            && error_counts(&snap.recent_errors) == previous.errors
        {
            return Ok(());
        }
        let api: Api<Mapping> = Api::namespaced(self.client.clone(), namespace);
        for _ in 0..ATTEMPTS {
            let Some(current) = api.get_opt(&snap.name).await? else {
                return Ok(());
            };
            let stored = current.status.clone().unwrap_or_default();
            let mut status = serde_json::Map::new();
            status.insert(
                "matched".into(),
                json!(stored.matched.unwrap_or(0) + (snap.matched - previous.matched)),
            );
            status.insert(
                "failed".into(),
                json!(stored.failed.unwrap_or(0) + (snap.failed - previous.failed)),
            );
            let last = match (&stored.last_matched_at, &snap.last_matched_at) {
                (Some(a), Some(b)) => Some(a.max(b).clone()),
                (a, b) => a.clone().or(b.clone()),
            };
            if let Some(last) = last {
                status.insert("lastMatchedAt".into(), json!(last));
            }
            status.insert(
                "recentErrors".into(),
                json!(merge_errors(
                    &stored.recent_errors,
                    &snap.recent_errors,
                    &previous.errors
                )),
            );
            if let Some(done) = self.patch(&api, &current, Value::Object(status)).await? {
                return Ok(done);
            }
        }
        Err(conflict_exhausted())
    }

    /// A merge patch of `status` guarded by the object's resourceVersion. `Ok(None)`: someone
    /// else wrote first; read again.
    async fn patch<K>(
        &self,
        api: &Api<K>,
        current: &K,
        status: Value,
    ) -> Result<Option<()>, kube::Error>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let patch = json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "status": status,
        });
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..Default::default()
        };
        match api
            .patch_status(&current.name_any(), &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Some(())),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn conflict_exhausted() -> kube::Error {
    kube::Error::Service(format!("status write kept conflicting after {ATTEMPTS} attempts").into())
}

fn add(stored: &Counters, now: &Counters, before: &Counters) -> Counters {
    Counters {
        received: stored.received + (now.received - before.received),
        delivered: stored.delivered + (now.delivered - before.delivered),
        ignored: stored.ignored + (now.ignored - before.ignored),
        duplicates: stored.duplicates + (now.duplicates - before.duplicates),
        rejected: stored.rejected + (now.rejected - before.rejected),
        failed: stored.failed + (now.failed - before.failed),
    }
}

/// Errors are deduplicated by stage and message across replicas: counts add up, the time is
/// the latest, and the ten most recent survive.
fn merge_errors(
    stored: &[RecentError],
    now: &[RecentError],
    before: &HashMap<(ErrorStage, String), i64>,
) -> Vec<RecentError> {
    let mut merged: Vec<RecentError> = stored.to_vec();
    for e in now {
        let delta = e.count
            - before
                .get(&(e.stage, e.message.clone()))
                .copied()
                .unwrap_or(0);
        if delta <= 0 {
            continue;
        }
        match merged
            .iter_mut()
            .find(|m| m.stage == e.stage && m.message == e.message)
        {
            Some(m) => {
                m.count += delta;
                if e.time > m.time {
                    m.time = e.time.clone();
                }
            }
            None => merged.push(RecentError {
                count: delta,
                ..e.clone()
            }),
        }
    }
    merged.sort_by(|a, b| b.time.cmp(&a.time));
    merged.truncate(MAX_RECENT);
    merged
}

/// The newest of the stored recent events and this replica's. An entry is its request, mapping
/// and event id together: a batch's events share their request, and stored times have lost
/// their fraction of a second, so neither the request nor the whole entry tells two apart or
/// recognises one written before.
fn merge_events(stored: &[RecentEvent], now: &[RecentEvent]) -> Vec<RecentEvent> {
    fn key(e: &RecentEvent) -> (&str, Option<&str>, Option<&str>) {
        (&e.request_id, e.mapping.as_deref(), e.event_id.as_deref())
    }
    let mut events = now.to_vec();
    events.extend(
        stored
            .iter()
            .filter(|e| !now.iter().any(|n| key(n) == key(e)))
            .cloned(),
    );
    // Stable: this replica's entries, newest first, stay ahead of stored ones of the same time.
    events.sort_by(|a, b| b.time.cmp(&a.time));
    events.truncate(MAX_RECENT);
    events
}

fn merge_source(
    stored: &crate::api::WebhookSourceStatus,
    snap: &SourceSnapshot,
    previous: &Written,
) -> Value {
    let counters = add(
        &stored.counters.clone().unwrap_or_default(),
        &snap.counters,
        &previous.counters,
    );

    let events = merge_events(&stored.recent_events, &snap.recent_events);

    let mut fields: Vec<ObservedField> = stored.observed_fields.clone();
    for f in &snap.observed_fields {
        let delta = f.seen - previous.fields.get(&f.path).copied().unwrap_or(0);
        let count = fields.len();
        match fields.iter_mut().find(|x| x.path == f.path) {
            Some(x) => {
                x.seen += delta.max(0);
                for t in &f.types {
                    if !x.types.contains(t) {
                        x.types.push(t.clone());
                    }
                }
            }
            None if count < MAX_FIELDS => fields.push(f.clone()),
            None => {}
        }
    }

    let last_event_at = match (&stored.last_event_at, &snap.last_event_at) {
        (Some(a), Some(b)) => Some(a.max(b).clone()),
        (a, b) => a.clone().or(b.clone()),
    };
    let unmapped = if snap.observed_fields.is_empty() {
        stored.unmapped_fields.clone()
    } else {
        snap.unmapped_fields.clone()
    };
    let mut status = json!({
        "counters": counters,
        "recentEvents": events,
        "recentErrors": merge_errors(&stored.recent_errors, &snap.recent_errors, &previous.errors),
        "observedFields": fields,
        "unmappedFields": unmapped,
    });
    if let Some(at) = last_event_at {
        status["lastEventAt"] = json!(at);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_only_this_replicas_increments_since_its_last_write() {
        let stored = Counters {
            received: 10,
            delivered: 8,
            ..Default::default()
        };
        let before = Counters {
            received: 3,
            delivered: 3,
            ..Default::default()
        };
        let now = Counters {
            received: 5,
            delivered: 4,
            failed: 1,
            ..Default::default()
        };
        let sum = add(&stored, &now, &before);
        assert_eq!((sum.received, sum.delivered, sum.failed), (12, 9, 1));
    }

    #[test]
    fn recent_events_of_one_batch_are_all_kept_and_a_stored_one_is_not_repeated() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let event = |request: &str, id: &str, nanos: i32| RecentEvent {
            time: Time(jiff::Timestamp::new(1_700_000_000, nanos).unwrap()),
            request_id: request.into(),
            mapping: Some("batch".into()),
            event_name: Some("Signup".into()),
            event_id: Some(id.into()),
            identity: None,
            outcome: "delivered".into(),
        };
        // Written before, as read back: the time without its fraction.
        let stored = vec![event("r1", "evt_1", 0)];
        // This replica still holds r1's event, and a batch of three from r2 since.
        let now = vec![
            event("r2", "evt_4", 700),
            event("r2", "evt_3", 700),
            event("r2", "evt_2", 700),
            event("r1", "evt_1", 500),
        ];
        let merged = merge_events(&stored, &now);
        let shown: Vec<(&str, &str)> = merged
            .iter()
            .map(|e| (e.request_id.as_str(), e.event_id.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(
            shown,
            [
                ("r2", "evt_4"),
                ("r2", "evt_3"),
                ("r2", "evt_2"),
                ("r1", "evt_1")
            ]
        );
    }

    #[test]
    fn errors_merge_by_stage_and_message_with_counts() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |s| Time(jiff::Timestamp::from_second(s).unwrap());
        let err = |msg: &str, count, t| RecentError {
            time: at(t),
            stage: ErrorStage::Map,
            message: msg.into(),
            count,
        };
        let stored = vec![err("identity missing", 4, 100)];
        let now = vec![err("identity missing", 3, 200), err("bad json", 1, 150)];
        let before = HashMap::from([((ErrorStage::Map, "identity missing".to_owned()), 1)]);
        let merged = merge_errors(&stored, &now, &before);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].message, "identity missing");
        assert_eq!((merged[0].count, merged[0].time.clone()), (6, at(200)));
        assert_eq!(
            (merged[1].message.as_str(), merged[1].count),
            ("bad json", 1)
        );
    }
}
