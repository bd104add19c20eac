//! `hookgate operator`: reconciles WebhookSource and Mapping, publishes one route per source for
//! the ingest, manages the shared ingest Deployment, and reports through conditions and Events.
//!
//! - [`source`]: where the token is created and rotated and the route is published.
//! - [`mapping`]: where a Mapping is compiled and its errors reported.
//! - [`ingest`]: the ingest Deployment and Service.
//! - [`cache`]: the watches' stores the reconciles read instead of the API server.

pub mod cache;
pub mod conditions;
pub mod ingest;
pub mod mapping;
pub mod metrics;
pub mod signing;
pub mod sink;
pub mod source;
pub mod token;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, ResourceExt};
use tracing::{error, info, warn};

use crate::api::mapping::Mapping;
use crate::api::webhook_source::WebhookSource;

/// Field manager of everything the operator writes about sources and mappings.
pub const FIELD_MANAGER: &str = "hookgate.dev/operator";
pub const FINALIZER: &str = "hookgate.dev/cleanup";
const LEASE_NAME: &str = "hookgate-operator";

#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// The operator's own namespace: routes, the ingest and the leader Lease live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "hookgate-system")]
    pub namespace: String,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "HOOKGATE_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// The base URL senders reach the ingest at; webhook URLs are `<public-url>/h/<token>`.
    #[arg(
        long,
        env = "HOOKGATE_PUBLIC_URL",
        default_value = "http://localhost:8080"
    )]
    pub public_url: String,

    /// This replica's identity in leader election (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// `/metrics` and `/healthz`.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub metrics_listen: SocketAddr,

    /// How often a source is re-read when its token, signing secret, sink Secret or sink
    /// Service is an object the operator does not own (watching every Secret and Service would
    /// need far broader RBAC).
    #[arg(long, default_value = "30s", value_parser = crate::api::parse_duration)]
    pub secret_resync: Duration,

    /// The cluster's DNS domain, for the URLs `sink.http.serviceRef` resolves to.
    #[arg(long, env = "HOOKGATE_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Seconds a leader's Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration: u64,

    #[command(flatten)]
    pub ingest: IngestArgs,
}

/// The ingest the operator deploys.
#[derive(clap::Args, Debug, Clone)]
pub struct IngestArgs {
    /// Do not create the ingest Deployment and Service (e.g. when the ingest runs elsewhere).
    #[arg(long = "no-ingest-deployment", action = clap::ArgAction::SetFalse, default_value_t = true)]
    pub manage: bool,
    #[arg(
        long = "ingest-image",
        env = "HOOKGATE_INGEST_IMAGE",
        default_value = "ghcr.io/hookgate/hookgate:0.1.0"
    )]
    pub image: String,
    #[arg(long = "ingest-replicas", default_value_t = 2)]
    pub replicas: i32,
    #[arg(long = "ingest-cpu-request", default_value = "100m")]
    pub cpu_request: Option<String>,
    #[arg(long = "ingest-memory-request", default_value = "64Mi")]
    pub memory_request: Option<String>,
    #[arg(long = "ingest-cpu-limit")]
    pub cpu_limit: Option<String>,
    #[arg(long = "ingest-memory-limit", default_value = "256Mi")]
    pub memory_limit: Option<String>,
    /// How often the ingest writes a busy source's status.
    #[arg(long = "ingest-status-interval", default_value = "10s")]
    pub status_interval: String,
    /// The ingest's default sink for sources without `spec.sink`.
    #[arg(long = "ingest-default-sink")]
    pub default_sink: Option<String>,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub args: OperatorArgs,
    /// Records Kubernetes Events (`kubectl describe`).
    pub recorder: Recorder,
    pub metrics: metrics::Metrics,
    /// Digest of the route last published per source, so an unchanged route costs no write.
    pub published: Mutex<HashMap<(String, String), String>>,
    pub caches: cache::Caches,
}

/// The writing ends of the stores in [`cache::Caches`], handed to the watches.
struct Writers {
    sources: Writer<DeserializeGuard<WebhookSource>>,
    mappings: Writer<DeserializeGuard<Mapping>>,
    token_secrets: Writer<Secret>,
}

/// One variant per call site; `category` is the bounded label for metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object has no namespace")]
    MissingNamespace,
    #[error("reading a Secret: {0}")]
    GetSecret(#[source] kube::Error),
    #[error("creating the token Secret: {0}")]
    CreateSecret(#[source] kube::Error),
    #[error("updating the token Secret: {0}")]
    ReplaceSecret(#[source] kube::Error),
    #[error("reading the sink's Service: {0}")]
    GetService(#[source] kube::Error),
    #[error("adding the finalizer: {0}")]
    AddFinalizer(#[source] kube::Error),
    #[error("reading the WebhookSource: {0}")]
    GetSource(#[source] kube::Error),
    #[error("publishing the route: {0}")]
    PublishRoute(#[source] kube::Error),
    #[error("withdrawing the route: {0}")]
    DeleteRoute(#[source] kube::Error),
    #[error("writing status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("applying the ingest Deployment or Service: {0}")]
    ApplyIngest(#[source] kube::Error),
    #[error("serializing: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the object could not be read as its type: {0}")]
    InvalidObject(String),
    #[error("the OS random number generator failed: {0}")]
    Random(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingNamespace | Error::InvalidObject(_) => "invalid",
            Error::GetSecret(_) | Error::GetService(_) | Error::GetSource(_) => "read",
            Error::AddFinalizer(_) => "finalizer",
            Error::CreateSecret(_) | Error::ReplaceSecret(_) => "token",
            Error::PublishRoute(_) | Error::DeleteRoute(_) => "route",
            Error::PatchStatus(_) => "status",
            Error::ApplyIngest(_) => "ingest",
            Error::Serialize(_) | Error::Random(_) => "internal",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "finalizer",
            },
        }
    }

    /// Conflicts and throttling resolve themselves soon; everything else backs off longer.
    fn retry_after(&self) -> Duration {
        let transient = match self {
            Error::Finalizer(inner) => matches!(
                inner.as_ref(),
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e)
                    if e.is_conflict()
            ),
            e => e.is_conflict(),
        };
        let base = if transient { 1 } else { 10 };
        // Jitter spreads the retries of many objects failing together (e.g. API throttling).
        let mut random = [0u8; 2];
        let jitter = getrandom::fill(&mut random)
            .map_or(0, |()| u64::from(u16::from_le_bytes(random)) % 1000);
        Duration::from_secs(base) + Duration::from_millis(jitter)
    }

    fn is_conflict(&self) -> bool {
        let e = match self {
            Error::ReplaceSecret(e)
            | Error::PatchStatus(e)
            | Error::PublishRoute(e)
            | Error::CreateSecret(e) => e,
            // A failed test: the finalizer list changed under the patch.
            Error::AddFinalizer(kube::Error::Api(s)) if s.code == 422 => return true,
            Error::AddFinalizer(e) => e,
            _ => return false,
        };
        matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 429)
    }
}

fn watch_api<K>(client: &Client, args: &OperatorArgs) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match &args.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the operator until SIGTERM/Ctrl-C, or until leadership is lost (then the process exits
/// non-zero and its replacement campaigns again: a deposed leader must not keep writing).
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let metrics = metrics::Metrics::default();
    let metrics_server = metrics::serve(args.metrics_listen, metrics.registry.clone()).await?;
    info!(address = %metrics_server, "serving /metrics and /healthz");

    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(args.namespace.clone())
        .with_identity(identity.clone())
        .with_duration(args.lease_duration)
        .with_grace(args.lease_duration.clamp(1, 5))
        .with_field_manager(format!("hookgate.dev/leader-election-{identity}"))
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    info!(%identity, "waiting to become the leader");
    while !*leader.borrow_and_update() {
        leader.changed().await?;
    }
    info!(%identity, "became the leader");
    metrics.leader.set(1);

    let writers = Writers {
        sources: Writer::default(),
        mappings: Writer::default(),
        token_secrets: Writer::default(),
    };
    let caches = cache::Caches::new(
        writers.sources.as_reader(),
        writers.mappings.as_reader(),
        writers.token_secrets.as_reader(),
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "hookgate-operator".into(),
                instance: Some(identity.clone()),
            },
        ),
        metrics,
        args,
        published: Mutex::new(HashMap::new()),
        caches,
    });

    let lost = async move {
        loop {
            if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                return;
            }
        }
    };

    tokio::select! {
        _ = run_controllers(ctx.clone(), writers) => {
            info!("controllers stopped");
        }
        _ = lost => {
            error!("lost leadership; exiting so that only one replica writes");
            std::process::exit(2);
        }
    }
    lease_task.abort();
    Ok(())
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "hookgate-operator".into())
}

async fn run_controllers(ctx: Arc<Context>, writers: Writers) {
    let client = ctx.client.clone();
    let args = &ctx.args;

    if args.ingest.manage {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            // Re-applied periodically so a hand edit or a deleted object is put back.
            loop {
                match ingest::apply(&ctx.client, &ctx.args).await {
                    Ok(()) => {
                        info!(namespace = %ctx.args.namespace, "ingest Deployment and Service applied")
                    }
                    Err(e) => warn!(error = %e, "applying the ingest Deployment failed; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(300)).await;
            }
        });
    }

    // One watch per kind, each feeding the store the reconciles read and then the controllers
    // it triggers (see `cache`): sources → the source controller and, on spec changes, their
    // mappings; mappings → the mapping controller and their source; token Secrets → their
    // source.
    let (to_source_controller, source_events) = cache::channel();
    let (to_mappings_of_source, source_changes) = cache::channel();
    let (to_mapping_controller, mapping_events) = cache::channel();
    let (to_source_of_mapping, mapping_changes) = cache::channel();
    let (to_owner, token_secret_changes) = cache::channel();
    let watches = futures::future::join3(
        cache::watch_into(
            watch_api::<DeserializeGuard<WebhookSource>>(&client, args),
            watcher::Config::default().any_semantic(),
            writers.sources,
            vec![to_source_controller, to_mappings_of_source],
        ),
        cache::watch_into(
            watch_api::<DeserializeGuard<Mapping>>(&client, args),
            watcher::Config::default().any_semantic(),
            writers.mappings,
            vec![to_mapping_controller, to_source_of_mapping],
        ),
        cache::watch_into(
            watch_api::<Secret>(&client, args),
            watcher::Config::default()
                .any_semantic()
                .labels(cache::TOKEN_SECRET_SELECTOR),
            writers.token_secrets,
            vec![to_owner],
        ),
    );

    // A Mapping change re-reconciles its source, so the route follows the mapping.
    let source_controller =
        Controller::for_stream(cache::applied(source_events), ctx.caches.sources.clone())
            .owns_stream(cache::touched(token_secret_changes))
            .watches_stream(
                cache::touched(mapping_changes),
                |m: DeserializeGuard<Mapping>| {
                    let ns = m.namespace();
                    m.0.ok().map(|m| {
                        ObjectRef::new(&m.spec.source_ref.name)
                            .within(ns.as_deref().unwrap_or_default())
                    })
                },
            )
            .shutdown_on_signal()
            .run(reconcile_source, error_policy_source, ctx.clone())
            .for_each(|result| report(result, "WebhookSource"));

    // A source appearing or going away re-reconciles the mappings that name it (SourceFound).
    // Only spec changes of a source matter to its mappings; the ingest's frequent status
    // writes must not re-reconcile every mapping.
    let mapping_store = ctx.caches.mappings.clone();
    let mapping_controller =
        Controller::for_stream(cache::applied(mapping_events), ctx.caches.mappings.clone())
            .watches_stream(
                cache::touched(source_changes)
                    .predicate_filter(predicates::generation, Default::default()),
                move |s: DeserializeGuard<WebhookSource>| {
                    let ns = s.namespace();
                    let name = s.name_any();
                    mapping_store
                        .state()
                        .into_iter()
                        .filter(|m| {
                            m.namespace() == ns
                                && m.0.as_ref().is_ok_and(|m| m.spec.source_ref.name == name)
                        })
                        .map(|m| ObjectRef::from_obj(m.as_ref()))
                        .collect::<Vec<_>>()
                },
            )
            .shutdown_on_signal()
            .run(reconcile_mapping, error_policy_mapping, ctx.clone())
            .for_each(|result| report(result, "Mapping"));

    let controllers = async {
        // Every store is complete before any reconcile reads one. Waited for here, by one
        // waiter at a time: a store's readiness wakes only the last of several concurrent
        // waiters (kube-runtime's `DelayedInit` keeps one waker), and reconciles that each
        // waited for the stores themselves hung forever when two waited at once.
        ctx.caches.ready().await;
        futures::future::join(source_controller, mapping_controller).await
    };
    // The watches never end by themselves; the controllers do, on a signal.
    tokio::select! {
        _ = controllers => {}
        _ = watches => {}
    }
}

async fn report<T: std::fmt::Debug, E: std::fmt::Display>(
    result: Result<T, kube::runtime::controller::Error<Error, E>>,
    kind: &str,
) {
    match result {
        Ok(obj) => tracing::debug!(kind, object = ?obj, "reconciled"),
        Err(kube::runtime::controller::Error::ReconcilerFailed(e, obj)) => {
            warn!(kind, object = %obj, category = e.category(), error = %e, "reconcile failed")
        }
        // A mapping naming a source that does not exist yet triggers that source; nothing to do.
        Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
            tracing::debug!(kind, object = %obj, "triggered object does not exist")
        }
        Err(e) => warn!(kind, error = %e, "controller error"),
    }
}

async fn reconcile_source(
    guard: Arc<DeserializeGuard<WebhookSource>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let timer = Instant::now();
    let result = match &guard.0 {
        Ok(source) => source::reconcile(Arc::new(source.clone()), ctx.clone()).await,
        // One malformed object is reported and skipped; it cannot stall the others.
        Err(invalid) => {
            warn!(name = ?invalid.metadata.name, namespace = ?invalid.metadata.namespace, error = %invalid.error, "skipping a WebhookSource that does not match the schema");
            Err(Error::InvalidObject(invalid.error.clone()))
        }
    };
    ctx.metrics
        .observe("WebhookSource", &result, timer.elapsed());
    result
}

async fn reconcile_mapping(
    guard: Arc<DeserializeGuard<Mapping>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let timer = Instant::now();
    let result = match &guard.0 {
        Ok(m) => mapping::reconcile(Arc::new(m.clone()), ctx.clone()).await,
        Err(invalid) => {
            warn!(name = ?invalid.metadata.name, namespace = ?invalid.metadata.namespace, error = %invalid.error, "skipping a Mapping that does not match the schema");
            Err(Error::InvalidObject(invalid.error.clone()))
        }
    };
    ctx.metrics.observe("Mapping", &result, timer.elapsed());
    result
}

fn error_policy_source(
    _: Arc<DeserializeGuard<WebhookSource>>,
    error: &Error,
    _: Arc<Context>,
) -> Action {
    error_action(error)
}

fn error_policy_mapping(
    _: Arc<DeserializeGuard<Mapping>>,
    error: &Error,
    _: Arc<Context>,
) -> Action {
    error_action(error)
}

fn error_action(error: &Error) -> Action {
    match error {
        // Nothing to retry until the object changes.
        Error::InvalidObject(_) => Action::await_change(),
        e => Action::requeue(e.retry_after()),
    }
}
