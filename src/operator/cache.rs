//! What the reconciles read instead of asking the API server: one watch per kind feeding one
//! store, and the objects the operator itself wrote but has not yet seen come back.
//!
//! With 1,000 sources and their mappings created at once, the reads (the token Secret, the
//! source's mappings, a mapping's source) were 6.6 of the ~15 API requests per pair and slowed
//! the API server for everyone. Served from the watches' stores they cost nothing.
//!
//! Why a store is recent enough: every watch here feeds its store *before* it triggers
//! anything, so a reconcile triggered by an event reads at least that event's state. A store
//! can still lag an object whose event has not arrived yet; that object's own event, when it
//! does arrive, triggers the reconcile again. The operator's own writes are remembered until
//! its store shows them (a reconcile triggered by the status it just wrote must not think the
//! token Secret it created a moment ago is missing). And every write that depends on what was
//! read is conditional (a create fails if the object exists, a replace carries the
//! resourceVersion read), so a stale read can cost a refused write and a retry, never a lost
//! token.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::api::mapping::Mapping;
use crate::api::webhook_source::{WebhookSource, WebhookSourceStatus};

/// How long an object the operator wrote is preferred over a store that has not shown it yet.
/// Longer than any watch lag seen under load (seconds); after it the store is trusted again,
/// which is safe because the writes that follow a read are conditional.
const WRITTEN_TRUST: Duration = Duration::from_secs(30);

/// A token Secret as written, and when.
type Written = (Arc<Secret>, Instant);

/// The stores the reconciles read from.
pub struct Caches {
    pub sources: Store<DeserializeGuard<WebhookSource>>,
    pub mappings: Store<DeserializeGuard<Mapping>>,
    /// The operator's token Secrets (label-selected; see `TOKEN_SECRET_SELECTOR`).
    pub token_secrets: Store<Secret>,
    /// Token Secrets as the operator last wrote them, until the store shows that version.
    written: Mutex<HashMap<(String, String), Written>>,
    /// Sources the finalizer was added to, until their store object shows it.
    finalized: Mutex<HashMap<String, Instant>>,
    /// Each source's status as the operator last applied it, by uid, until the store shows
    /// the resourceVersion that apply produced.
    statuses: Mutex<HashMap<String, AppliedStatus>>,
}

/// The resourceVersion an apply produced, what it applied, and when.
type AppliedStatus = (String, WebhookSourceStatus, Instant);

/// The operator's token Secrets: its label, without the route Secrets (same label, no owner,
/// the operator's namespace), whose payloads the operator never needs to read back.
pub const TOKEN_SECRET_SELECTOR: &str = "app.kubernetes.io/managed-by=hookgate,!hookgate.dev/route";

impl Caches {
    pub fn new(
        sources: Store<DeserializeGuard<WebhookSource>>,
        mappings: Store<DeserializeGuard<Mapping>>,
        token_secrets: Store<Secret>,
    ) -> Self {
        Caches {
            sources,
            mappings,
            token_secrets,
            written: Mutex::new(HashMap::new()),
            finalized: Mutex::new(HashMap::new()),
            statuses: Mutex::new(HashMap::new()),
        }
    }

    /// Until every store has its first full list, nothing read from them can be trusted.
    /// Call from one task only (see `run_controllers`).
    pub async fn ready(&self) {
        // An error means the watch task is gone, and the process with it.
        let _ = self.sources.wait_until_ready().await;
        let _ = self.mappings.wait_until_ready().await;
        let _ = self.token_secrets.wait_until_ready().await;
    }

    /// The mappings that name `source` in `ns`, not being deleted, that match the schema.
    pub fn mappings_of(&self, ns: &str, source: &str) -> Vec<Mapping> {
        self.mappings
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok())
            .filter(|m| {
                m.metadata.namespace.as_deref() == Some(ns)
                    && m.spec.source_ref.name == source
                    && m.metadata.deletion_timestamp.is_none()
            })
            .cloned()
            .collect()
    }

    /// A source as the store has it, valid or not (`None`: not seen).
    pub fn source(&self, ns: &str, name: &str) -> Option<Arc<DeserializeGuard<WebhookSource>>> {
        self.sources.get(&ObjectRef::new(name).within(ns))
    }

    /// The token Secret: what the operator wrote last if the store has not caught up with it,
    /// else the store's.
    pub fn token_secret(&self, ns: &str, name: &str) -> Option<Secret> {
        let stored = self.token_secrets.get(&ObjectRef::new(name).within(ns));
        let key = (ns.to_owned(), name.to_owned());
        let mut written = self.written.lock().expect("written-secrets lock");
        if let Some((secret, at)) = written.get(&key) {
            let caught_up = stored.as_ref().is_some_and(|s| {
                s.metadata.resource_version.is_some()
                    && s.metadata.resource_version == secret.metadata.resource_version
            });
            if !caught_up && at.elapsed() < WRITTEN_TRUST {
                return Some(secret.as_ref().clone());
            }
            written.remove(&key);
        }
        stored.map(|s| s.as_ref().clone())
    }

    /// Remembers a token Secret as the API server answered the write.
    pub fn wrote_token_secret(&self, ns: &str, secret: Secret) {
        let mut written = self.written.lock().expect("written-secrets lock");
        written.retain(|_, (_, at)| at.elapsed() < WRITTEN_TRUST);
        written.insert(
            (ns.to_owned(), secret.name_any()),
            (Arc::new(secret), Instant::now()),
        );
    }

    /// The source's status to compare with: what the operator applied last if the store has
    /// not shown that write yet, else the stored one. Without it, the reconcile triggered by
    /// the finalizer's own event (which precedes the status write) saw no status and applied
    /// the same one again: 951 needless status patches with 1,000 sources created at once.
    pub fn source_status(&self, source: &WebhookSource) -> WebhookSourceStatus {
        let stored = || source.status.clone().unwrap_or_default();
        let Some(uid) = source.metadata.uid.as_deref() else {
            return stored();
        };
        let mut statuses = self.statuses.lock().expect("statuses lock");
        if let Some((version, applied, at)) = statuses.get(uid) {
            let caught_up = source.metadata.resource_version.as_deref() == Some(version.as_str());
            if !caught_up && at.elapsed() < WRITTEN_TRUST {
                return applied.clone();
            }
            statuses.remove(uid);
        }
        stored()
    }

    pub fn applied_source_status(&self, applied: &WebhookSource, status: WebhookSourceStatus) {
        let (Some(uid), Some(version)) = (
            applied.metadata.uid.clone(),
            applied.metadata.resource_version.clone(),
        ) else {
            return;
        };
        let mut statuses = self.statuses.lock().expect("statuses lock");
        statuses.retain(|_, (_, _, at)| at.elapsed() < WRITTEN_TRUST);
        statuses.insert(uid, (version, status, Instant::now()));
    }

    /// Whether the operator added its finalizer to this source (by uid) and the store may not
    /// show it yet. Forgotten once an object with the finalizer is seen.
    pub fn finalizer_added(&self, uid: &str, seen_with_finalizer: bool) -> bool {
        let mut finalized = self.finalized.lock().expect("finalized lock");
        if seen_with_finalizer {
            finalized.remove(uid);
            return true;
        }
        finalized
            .get(uid)
            .is_some_and(|at| at.elapsed() < WRITTEN_TRUST)
    }

    pub fn added_finalizer(&self, uid: &str) {
        let mut finalized = self.finalized.lock().expect("finalized lock");
        finalized.retain(|_, at| at.elapsed() < WRITTEN_TRUST);
        finalized.insert(uid.to_owned(), Instant::now());
    }
}

/// One watch feeding `writer`'s store and then each consumer, in order. Consumers see only
/// `Apply` and `Delete`: a re-list is passed on when it is complete (the store swaps at its
/// end), with a `Delete` for each object that went away while the watch was down, so a source
/// whose last mapping was deleted meanwhile is still reconciled.
pub async fn watch_into<K>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    consumers: Vec<UnboundedSender<watcher::Event<K>>>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let reader = writer.as_reader();
    let mut before: Vec<Arc<K>> = Vec::new();
    let mut relisted: Vec<K> = Vec::new();
    let send = |event: watcher::Event<K>| {
        for consumer in &consumers {
            // A consumer gone means its controller stopped; the others carry on.
            let _ = consumer.unbounded_send(event.clone());
        }
    };
    // The reconciles never read managed fields; dropping them halves what the stores hold.
    let events = watcher(api, config)
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear());
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                warn!(kind = %K::kind(&Default::default()), error = %e, "watch failed; retrying");
                continue;
            }
        };
        if matches!(event, watcher::Event::Init) {
            before = reader.state();
            relisted.clear();
        }
        writer.apply_watcher_event(&event);
        match event {
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => send(event),
            watcher::Event::Init => {}
            watcher::Event::InitApply(obj) => relisted.push(obj),
            watcher::Event::InitDone => {
                let present: HashSet<ObjectRef<K>> =
                    relisted.iter().map(ObjectRef::from_obj).collect();
                for obj in relisted.drain(..) {
                    send(watcher::Event::Apply(obj));
                }
                for gone in before.drain(..) {
                    if !present.contains(&ObjectRef::from_obj(gone.as_ref())) {
                        send(watcher::Event::Delete(gone.as_ref().clone()));
                    }
                }
            }
        }
    }
}

/// A consumer's end: the objects of `Apply` events (a controller's own trigger; a deleted
/// object has nothing left to reconcile).
pub fn applied<K: Clone + Send + 'static>(
    rx: UnboundedReceiver<watcher::Event<K>>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    rx.map(Ok).applied_objects()
}

/// A consumer's end: the objects of `Apply` and `Delete` events (what they relate to must
/// hear of a deletion too).
pub fn touched<K: Clone + Send + 'static>(
    rx: UnboundedReceiver<watcher::Event<K>>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    rx.map(Ok).touched_objects()
}

pub fn channel<K>() -> (
    UnboundedSender<watcher::Event<K>>,
    UnboundedReceiver<watcher::Event<K>>,
) {
    unbounded()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store::Writer;

    fn source(version: &str, observed: Option<i64>) -> WebhookSource {
        let mut s = WebhookSource::new("shop", Default::default());
        s.metadata.uid = Some("uid-1".into());
        s.metadata.resource_version = Some(version.into());
        s.status = observed.map(|g| WebhookSourceStatus {
            observed_generation: Some(g),
            ..Default::default()
        });
        s
    }

    #[test]
    fn the_applied_status_is_compared_with_until_the_store_shows_its_write() {
        let caches = Caches::new(
            Writer::default().as_reader(),
            Writer::default().as_reader(),
            Writer::default().as_reader(),
        );
        let applied = WebhookSourceStatus {
            observed_generation: Some(2),
            ..Default::default()
        };
        caches.applied_source_status(&source("11", None), applied.clone());

        // An older object (the finalizer's event, before the status write): ours.
        assert_eq!(caches.source_status(&source("10", None)), applied);
        // The store shows the write: from then on, the stored status.
        assert_eq!(
            caches
                .source_status(&source("11", Some(2)))
                .observed_generation,
            Some(2)
        );
        assert_eq!(
            caches
                .source_status(&source("12", Some(3)))
                .observed_generation,
            Some(3)
        );
        // Another object under the same name is another uid.
        let mut other = source("13", None);
        other.metadata.uid = Some("uid-2".into());
        assert_eq!(caches.source_status(&other), WebhookSourceStatus::default());
    }
}
