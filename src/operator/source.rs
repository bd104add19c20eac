//! Reconciles a WebhookSource: token Secret, rotation, signing secret, route, status, Events.
//!
//! The pipeline: read what exists (token Secret, signing Secret, mappings) → decide (rotation,
//! route, conditions; pure) → write (Secret, route, status), each write skipped when nothing
//! changed so a resync costs reads only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::conditions::{self, Verdict};
use super::token::{self, StoredToken, Token};
use super::{Context, Error, FIELD_MANAGER, FINALIZER};
use super::{signing, sink};
use crate::api::conditions::READY;
use crate::api::mapping::Mapping;
use crate::api::webhook_source::{
    DEFAULT_MAX_BODY_BYTES, ROTATE_TOKEN_ANNOTATION, WebhookSource, WebhookSourceStatus,
};
use crate::mapping::CompiledMapping;
use crate::route::{
    ROUTE_KEY, ROUTE_LABEL, RateLimit, Route, RouteMapping, RouteSignature, TokenHash,
};

/// Event reasons of a signing-secret rotation window.
pub const SIGNING_WINDOW_OPENED: &str = "PreviousSigningSecretAccepted";
pub const SIGNING_WINDOW_CLOSED: &str = "PreviousSigningSecretDropped";

pub const TOKEN_READY: &str = "TokenReady";
pub const ROUTE_PUBLISHED: &str = "RoutePublished";

const RESYNC: Duration = Duration::from_secs(600);
const DEFAULT_DEDUP_WINDOW: u64 = 3600;

pub fn token_secret_name(source: &str) -> String {
    format!("{source}-webhook-token")
}

/// The carrier Secret of a source's route, in the operator's namespace. Owner references cannot
/// cross namespaces, so the finalizer removes it.
pub fn route_secret_name(namespace: &str, name: &str) -> String {
    let plain = format!("route-{namespace}-{name}");
    if plain.len() <= 253 {
        plain
    } else {
        let hash = crate::route::token_sha256_hex(&format!("{namespace}/{name}"));
        format!("route-{}", &hash[..40])
    }
}

pub async fn reconcile(source: Arc<WebhookSource>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = source.namespace().ok_or(Error::MissingNamespace)?;
    let api: Api<WebhookSource> = Api::namespaced(ctx.client.clone(), &ns);
    let source = ensure_finalizer(&api, source, &ctx).await?;
    finalizer(&api, FINALIZER, source, |event| async {
        match event {
            FinalizerEvent::Apply(source) => apply(&source, &ctx).await,
            FinalizerEvent::Cleanup(source) => cleanup(&source, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Adds the finalizer and carries on in the same reconcile, where `finalizer` would return and
/// wait for the patch's own event: the finalizer is stored once the patch returns, which is all
/// that must precede publishing the route. It cannot share a write with the status (metadata
/// versus the status subresource), so it stays one patch per source. What this saves is a
/// reconcile, and the repeated patches of reconciles triggered (by the mapping, the token
/// Secret) before the store shows the finalizer: 385 of 1,385 finalizer patches with 1,000
/// sources created at once, each refused by its test and retried.
async fn ensure_finalizer(
    api: &Api<WebhookSource>,
    source: Arc<WebhookSource>,
    ctx: &Context,
) -> Result<Arc<WebhookSource>, Error> {
    if source.meta().deletion_timestamp.is_some() {
        return Ok(source);
    }
    let uid = source.uid().unwrap_or_default();
    let has = source.finalizers().iter().any(|f| f == FINALIZER);
    if ctx.caches.finalizer_added(&uid, has) {
        if has {
            return Ok(source);
        }
        let mut seen = (*source).clone();
        seen.finalizers_mut().push(FINALIZER.to_owned());
        return Ok(Arc::new(seen));
    }
    // The test makes a concurrent change of the list fail (and retry) instead of being
    // overwritten, and the patch fail on an object that is gone instead of recreating it.
    let ops = if source.finalizers().is_empty() {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    } else {
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": source.finalizers()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ])
    };
    let patched = api
        .patch(
            &source.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(ops).map_err(Error::Serialize)?),
        )
        .await
        .map_err(Error::AddFinalizer)?;
    ctx.caches.added_finalizer(&uid);
    Ok(Arc::new(patched))
}

/// What the token step found: the tokens to publish, or why there are none.
struct TokenOutcome {
    current: Option<Token>,
    previous: Option<(Token, i64)>,
    secret_name: String,
    rotated_at: Option<String>,
    verdict: Verdict,
    requeue: Option<Duration>,
}

async fn apply(source: &WebhookSource, ctx: &Context) -> Result<Action, Error> {
    let ns = source.namespace().ok_or(Error::MissingNamespace)?;
    let name = source.name_any();
    let now = Timestamp::now();

    let tokens = match &source.spec.token_secret_ref {
        Some(reference) => user_token(&ns, &reference.name, reference.key.as_deref(), ctx).await?,
        None => generated_token(source, &ns, &name, now, ctx).await?,
    };

    let signing = signing::resolve(source, &ns, now, ctx).await?;
    let sink = sink::resolve(source, &ns, ctx).await?;

    // Mappings attached to this source; only those that compile make it into the route, the
    // others report their error on their own status. From the mapping watch's store: a mapping
    // it does not show yet triggers this reconcile again when its event arrives.
    let mut attached: Vec<Mapping> = ctx.caches.mappings_of(&ns, &name);
    attached.sort_by_key(|m| m.name_any());
    let route_mappings: Vec<RouteMapping> = attached
        .iter()
        .filter(|m| CompiledMapping::compile(&m.name_any(), &m.spec).is_ok())
        .map(|m| RouteMapping {
            name: m.name_any(),
            generation: m.meta().generation.unwrap_or_default(),
            spec: m.spec.clone(),
        })
        .collect();

    let mut verdicts = vec![tokens.verdict.clone()];
    if let Some(v) = &signing.verdict {
        verdicts.push(v.clone());
    }
    // A sink that cannot be resolved does not withdraw the route: deliveries fail with a
    // retryable 503 (and say why in status) instead of senders getting 404.
    if let Some(v) = &sink.verdict {
        verdicts.push(v.clone());
    }
    // A problem with only the previous signing secret leaves the current one serving.
    let route_ready =
        tokens.current.is_some() && (source.spec.signature.is_none() || signing.route.is_some());
    if route_ready {
        let mut route = build_route(
            source,
            &ns,
            &name,
            &tokens,
            signing.route.clone(),
            route_mappings,
            now,
        );
        route.sink = sink.spec.clone();
        route.sink_secrets = sink.secrets.clone();
        publish_route(&route, ctx).await?;
        verdicts.push(Verdict::ok(
            ROUTE_PUBLISHED,
            "Published",
            format!("route published with {} mapping(s)", route.mappings.len()),
        ));
    } else {
        // Without a usable token or signing secret nothing may be served: withdraw the route.
        withdraw_route(&ns, &name, ctx).await?;
        verdicts.push(Verdict::fail(
            ROUTE_PUBLISHED,
            "Withdrawn",
            "the route is not served until the problems above are fixed",
        ));
    }

    let ready = if let Some(failed) = verdicts.iter().find(|v| !v.ok) {
        Verdict::fail(READY, failed.reason, failed.message.clone())
    } else if !source.spec.enabled {
        Verdict::ok(
            READY,
            "Disabled",
            "the source is disabled: senders get 503 with Retry-After",
        )
    } else {
        Verdict::ok(READY, "Serving", "the URL is in force")
    };
    verdicts.insert(0, ready.clone());

    let existing = ctx.caches.source_status(source);
    let generation = source.meta().generation;
    let status = WebhookSourceStatus {
        observed_generation: generation,
        conditions: conditions::compute(&existing.conditions, &verdicts, generation, now),
        url: tokens
            .current
            .as_ref()
            .map(|t| token::webhook_url(&ctx.args.public_url, &t.redacted())),
        token_secret_name: Some(tokens.secret_name.clone()),
        token_rotated_at: tokens
            .rotated_at
            .as_deref()
            .and_then(|s| s.parse::<Timestamp>().ok())
            .map(Time),
        mappings: attached.iter().map(|m| m.name_any()).collect(),
        previous_signing_secret_expires_at: signing
            .previous_until
            .filter(|_| route_ready)
            .map(Time),
        ..Default::default()
    };
    let unchanged = operator_fields_unchanged(&existing, &status);
    // Recorded before the status that reflects it, so whoever sees the status can find the
    // Event; a failure between the two repeats the Event, never loses it.
    report_signing_window(
        source,
        existing.previous_signing_secret_expires_at.as_ref(),
        status.previous_signing_secret_expires_at.as_ref(),
        now,
        ctx,
    )
    .await;
    if !unchanged {
        let applied = patch_status(&ns, &name, &status, ctx).await?;
        ctx.caches.applied_source_status(&applied, status);
    }

    // Events for transitions, not for a source coming up as expected: its creation is already
    // reported by TokenCreated (a credential was made) and by the Ready condition. A first
    // verdict that is a failure, and every later flip, are worth a line in `kubectl describe`.
    let was_ready = conditions::is_true(&existing.conditions, READY);
    if was_ready != Some(ready.ok) && !(was_ready.is_none() && ready.ok) {
        let type_ = if ready.ok {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.publish(
            source,
            type_,
            ready.reason,
            "Reconcile",
            Some(ready.message.clone()),
        )
        .await;
    }
    info!(namespace = %ns, name = %name, ready = ready.ok, reason = ready.reason, "reconciled WebhookSource");

    let mut next = RESYNC;
    if source.spec.token_secret_ref.is_some()
        || source.spec.signature.is_some()
        || sink.reads_external
    {
        next = next.min(ctx.args.secret_resync);
    }
    for r in [tokens.requeue, signing.requeue].into_iter().flatten() {
        next = next.min(r);
    }
    Ok(Action::requeue(next))
}

/// Whether the fields the operator owns already say what `status` says. Times compare at whole
/// seconds, the precision they are stored at: the token's rotation time is kept with
/// nanoseconds, so comparing it exactly made every reconcile patch status again (two patches
/// per status write of the ingest, measured with 1,000 sources).
fn operator_fields_unchanged(existing: &WebhookSourceStatus, status: &WebhookSourceStatus) -> bool {
    let second = |t: &Option<Time>| t.as_ref().map(|t| t.0.as_second());
    existing.observed_generation == status.observed_generation
        && conditions::same(&existing.conditions, &status.conditions)
        && existing.url == status.url
        && existing.token_secret_name == status.token_secret_name
        && second(&existing.token_rotated_at) == second(&status.token_rotated_at)
        && existing.mappings == status.mappings
        && second(&existing.previous_signing_secret_expires_at)
            == second(&status.previous_signing_secret_expires_at)
}

async fn patch_status(
    ns: &str,
    name: &str,
    status: &WebhookSourceStatus,
    ctx: &Context,
) -> Result<WebhookSource, Error> {
    let api: Api<WebhookSource> = Api::namespaced(ctx.client.clone(), ns);
    // Server-side apply of only the fields the operator owns; counters, recent events and the
    // learned shape belong to the ingest's field manager and are left alone.
    let mut status_json = serde_json::to_value(status).map_err(Error::Serialize)?;
    if let Some(obj) = status_json.as_object_mut() {
        // An empty list must still be applied, or a detached last mapping would linger.
        obj.entry("mappings").or_insert_with(|| json!([]));
    }
    let patch = json!({
        "apiVersion": WebhookSource::api_version(&()),
        "kind": WebhookSource::kind(&()),
        "status": status_json,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::PatchStatus)
}

/// The user's own token (`tokenSecretRef`): read, never written.
async fn user_token(
    ns: &str,
    secret: &str,
    key: Option<&str>,
    ctx: &Context,
) -> Result<TokenOutcome, Error> {
    let key = key.unwrap_or(token::TOKEN_KEY);
    let found = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(secret)
        .await
        .map_err(Error::GetSecret)?;
    let current = found
        .as_ref()
        .and_then(|s| token::secret_value(s, key))
        .and_then(|v| Token::from_secret_value(&v));
    let verdict = match (&found, &current) {
        (None, _) => Verdict::fail(
            TOKEN_READY,
            "TokenSecretNotFound",
            format!("tokenSecretRef: Secret {secret} not found in namespace {ns}"),
        ),
        (Some(_), None) => Verdict::fail(
            TOKEN_READY,
            "TokenSecretKeyMissing",
            format!("tokenSecretRef: Secret {secret} has no non-empty key {key}"),
        ),
        (Some(_), Some(_)) => Verdict::ok(
            TOKEN_READY,
            "UserProvided",
            format!("token from Secret {secret}"),
        ),
    };
    Ok(TokenOutcome {
        current,
        previous: None,
        secret_name: secret.to_owned(),
        rotated_at: None,
        verdict,
        requeue: None,
    })
}

/// The generated token Secret: created once, rotated only when the rotate annotation changes.
async fn generated_token(
    source: &WebhookSource,
    ns: &str,
    name: &str,
    now: Timestamp,
    ctx: &Context,
) -> Result<TokenOutcome, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret_name = token_secret_name(name);
    let requested_key = source.annotations().get(ROTATE_TOKEN_ANNOTATION).cloned();
    let grace = grace_period(source);

    let mut existing = ctx.caches.token_secret(ns, &secret_name);
    let mut read_live = false;
    let (next, event) = loop {
        let stored = existing.as_ref().and_then(StoredToken::read);
        let (next, event) = next_token(
            stored.clone(),
            existing.is_some(),
            requested_key.as_deref(),
            grace,
            now,
        )?;
        let (data, annotations) = next.render(&ctx.args.public_url);
        let stored_url = existing
            .as_ref()
            .and_then(|s| token::secret_value(s, token::URL_KEY));
        let needs_write = stored.as_ref() != Some(&next)
            || stored_url.as_deref() != data.get(token::URL_KEY).map(|b| b.0.as_slice());
        if needs_write {
            match write_token_secret(source, &secrets, &secret_name, existing, data, annotations)
                .await
            {
                Ok(written) => ctx.caches.wrote_token_secret(ns, written),
                // The store did not show a Secret that exists (its event is still on the way,
                // or it lost the operator's label): decide again on what the API server has.
                Err(Error::CreateSecret(kube::Error::Api(e))) if e.code == 409 && !read_live => {
                    existing = secrets
                        .get_opt(&secret_name)
                        .await
                        .map_err(Error::GetSecret)?;
                    read_live = true;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        break (next, event);
    };
    if let Some((reason, note)) = event {
        // The note never contains the token or the URL.
        ctx.publish(
            source,
            EventType::Normal,
            reason,
            "Token",
            Some(note.to_owned()),
        )
        .await;
        info!(namespace = %ns, name = %name, reason, "token written");
    }

    let requeue = next
        .previous
        .as_ref()
        .map(|(_, exp)| Duration::from_secs((exp - now.as_second()).max(1) as u64));
    Ok(TokenOutcome {
        current: Some(next.current.clone()),
        previous: next.previous.clone(),
        secret_name,
        rotated_at: next.rotated_at.clone(),
        verdict: Verdict::ok(TOKEN_READY, "Generated", "token generated by the operator"),
        requeue,
    })
}

/// An Event's reason and note.
type Why = (&'static str, &'static str);

/// What the token Secret should hold given what it holds, and the Event a change deserves.
fn next_token(
    stored: Option<StoredToken>,
    secret_exists: bool,
    requested_key: Option<&str>,
    grace: u64,
    now: Timestamp,
) -> Result<(StoredToken, Option<Why>), Error> {
    Ok(match stored {
        None => {
            let fresh = StoredToken {
                current: Token::generate().map_err(|e| Error::Random(e.to_string()))?,
                rotation_key: requested_key.unwrap_or_default().to_owned(),
                rotated_at: Some(now.to_string()),
                previous: None,
            };
            let why = if secret_exists {
                (
                    "TokenRegenerated",
                    "the token Secret had no token; a new URL was generated",
                )
            } else {
                ("TokenCreated", "generated a webhook token")
            };
            (fresh, Some(why))
        }
        // Rotation only on a new annotation value: removing the annotation rotates nothing.
        Some(s) if requested_key.is_some_and(|k| k != s.rotation_key) => {
            let previous = (grace > 0).then(|| (s.current.clone(), now.as_second() + grace as i64));
            let rotated = StoredToken {
                current: Token::generate().map_err(|e| Error::Random(e.to_string()))?,
                rotation_key: requested_key.unwrap_or_default().to_owned(),
                rotated_at: Some(now.to_string()),
                previous,
            };
            let why = if grace > 0 {
                (
                    "TokenRotated",
                    "rotated the webhook token; the previous URL works until the grace period ends",
                )
            } else {
                (
                    "TokenRotated",
                    "rotated the webhook token; the previous URL no longer works",
                )
            };
            (rotated, Some(why))
        }
        Some(mut s) => {
            // A grace period that has ended drops the previous token from the Secret too.
            if s.previous
                .as_ref()
                .is_some_and(|(_, exp)| *exp <= now.as_second())
            {
                s.previous = None;
            }
            (s, None)
        }
    })
}

/// Creates or replaces the token Secret; returns it as the API server stored it.
async fn write_token_secret(
    source: &WebhookSource,
    secrets: &Api<Secret>,
    secret_name: &str,
    existing: Option<Secret>,
    data: BTreeMap<String, ByteString>,
    annotations: BTreeMap<String, String>,
) -> Result<Secret, Error> {
    let owner = source
        .controller_owner_ref(&())
        .ok_or(Error::MissingNamespace)?;
    match existing {
        None => {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(secret_name.to_owned()),
                    labels: Some(source_labels(&source.name_any())),
                    annotations: Some(annotations),
                    owner_references: Some(vec![owner]),
                    ..Default::default()
                },
                type_: Some("Opaque".into()),
                data: Some(data),
                ..Default::default()
            };
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .map_err(Error::CreateSecret)
        }
        Some(mut secret) => {
            // Replace with the resourceVersion just read: a concurrent writer makes this fail
            // and the reconcile retries, so two rotations can never interleave.
            secret.data = Some(data);
            secret.string_data = None;
            let meta = &mut secret.metadata;
            let mut merged = meta.annotations.take().unwrap_or_default();
            merged.retain(|k, _| {
                ![
                    token::ROTATION_KEY_ANNOTATION,
                    token::ROTATED_AT_ANNOTATION,
                    token::PREVIOUS_EXPIRES_ANNOTATION,
                ]
                .contains(&k.as_str())
            });
            merged.extend(annotations);
            meta.annotations = Some(merged);
            // The label is what puts the Secret in the operator's watch (and its store).
            meta.labels
                .get_or_insert_with(BTreeMap::new)
                .extend(source_labels(&source.name_any()));
            ensure_owner(meta, owner);
            secrets
                .replace(secret_name, &PostParams::default(), &secret)
                .await
                .map_err(Error::ReplaceSecret)
        }
    }
}

fn ensure_owner(meta: &mut ObjectMeta, owner: OwnerReference) {
    let owners = meta.owner_references.get_or_insert_with(Vec::new);
    if !owners.iter().any(|o| o.uid == owner.uid) {
        owners.push(owner);
    }
}

fn source_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("app.kubernetes.io/managed-by".into(), "hookgate".into());
    if name.len() <= 63 {
        labels.insert("hookgate.dev/source".into(), name.to_owned());
    }
    labels
}

fn grace_period(source: &WebhookSource) -> u64 {
    source
        .spec
        .token_rotation
        .as_ref()
        .and_then(|r| r.grace_period.as_deref())
        .and_then(parse_duration_secs)
        .unwrap_or(0)
}

/// Go-style durations as accepted by the CRD's CEL rule; whole seconds are enough here.
pub fn parse_duration_secs(text: &str) -> Option<u64> {
    crate::api::parse_duration(text).ok().map(|d| d.as_secs())
}

/// An Event when the previous signing secret starts or stops being accepted. The status field
/// is the memory (it survives restarts and leader changes), so each edge is reported once.
async fn report_signing_window(
    source: &WebhookSource,
    before: Option<&Time>,
    after: Option<&Time>,
    now: Timestamp,
    ctx: &Context,
) {
    let (reason, note) = match (before, after) {
        (None, Some(until)) => (
            SIGNING_WINDOW_OPENED,
            format!("the previous signing secret is also accepted until {}", until.0),
        ),
        (Some(until), None) if until.0 <= now => (
            SIGNING_WINDOW_CLOSED,
            format!(
                "the rotation window ended at {}: the previous signing secret is no longer accepted",
                until.0
            ),
        ),
        (Some(_), None) => (
            SIGNING_WINDOW_CLOSED,
            "the previous signing secret is no longer accepted (signature.previousSecretRef changed or is unavailable)".to_owned(),
        ),
        _ => return,
    };
    ctx.publish(source, EventType::Normal, reason, "Signature", Some(note))
        .await;
    info!(namespace = %source.namespace().unwrap_or_default(), name = %source.name_any(), reason, "signing-secret rotation window");
}

fn build_route(
    source: &WebhookSource,
    ns: &str,
    name: &str,
    tokens: &TokenOutcome,
    signature: Option<RouteSignature>,
    mappings: Vec<RouteMapping>,
    now: Timestamp,
) -> Route {
    let mut hashes = Vec::new();
    if let Some(t) = &tokens.current {
        hashes.push(TokenHash {
            sha256: t.sha256_hex(),
            expires_at: None,
        });
    }
    if let Some((t, exp)) = &tokens.previous
        && *exp > now.as_second()
    {
        hashes.push(TokenHash {
            sha256: t.sha256_hex(),
            expires_at: Some(*exp),
        });
    }
    let limits = source.spec.limits.clone().unwrap_or_default();
    let rate_limit = limits.requests_per_second.map(|rps| {
        let rps = rps.max(1) as u32;
        RateLimit {
            requests_per_second: rps,
            burst: limits.burst.map(|b| b.max(1) as u32).unwrap_or(rps),
        }
    });
    Route {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        generation: source.meta().generation.unwrap_or_default(),
        tokens: hashes,
        enabled: source.spec.enabled,
        max_body_bytes: u64::try_from(limits.max_body_bytes)
            .unwrap_or(DEFAULT_MAX_BODY_BYTES as u64),
        rate_limit,
        dedup_window_seconds: source
            .spec
            .dedup
            .as_ref()
            .and_then(|d| d.window.as_deref())
            .and_then(parse_duration_secs)
            .unwrap_or(DEFAULT_DEDUP_WINDOW),
        signature,
        mappings,
        sink: source.spec.sink.clone(),
        sink_secrets: None,
    }
}

async fn publish_route(route: &Route, ctx: &Context) -> Result<(), Error> {
    let json = serde_json::to_vec(route).map_err(Error::Serialize)?;
    let key = (route.namespace.clone(), route.name.clone());
    let digest = crate::route::token_sha256_hex(&String::from_utf8_lossy(&json));
    if ctx
        .published
        .lock()
        .expect("published-routes lock")
        .get(&key)
        == Some(&digest)
    {
        return Ok(());
    }
    let mut labels = BTreeMap::new();
    labels.insert(ROUTE_LABEL.to_owned(), "true".to_owned());
    labels.insert("app.kubernetes.io/managed-by".into(), "hookgate".into());
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "hookgate.dev/source".to_owned(),
        format!("{}/{}", route.namespace, route.name),
    );
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(route_secret_name(&route.namespace, &route.name)),
            namespace: Some(ctx.args.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some("hookgate.dev/route".into()),
        data: Some(BTreeMap::from([(ROUTE_KEY.to_owned(), ByteString(json))])),
        ..Default::default()
    };
    let mut value = serde_json::to_value(&secret).map_err(Error::Serialize)?;
    value["apiVersion"] = json!("v1");
    value["kind"] = json!("Secret");
    let name = route_secret_name(&route.namespace, &route.name);
    Api::<Secret>::namespaced(ctx.client.clone(), &ctx.args.namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await
        .map_err(Error::PublishRoute)?;
    ctx.published
        .lock()
        .expect("published-routes lock")
        .insert(key, digest);
    Ok(())
}

async fn withdraw_route(ns: &str, name: &str, ctx: &Context) -> Result<(), Error> {
    ctx.published
        .lock()
        .expect("published-routes lock")
        .remove(&(ns.to_owned(), name.to_owned()));
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.args.namespace);
    match api
        .delete(&route_secret_name(ns, name), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::DeleteRoute(e)),
    }
}

/// Deletion: the route goes before the finalizer is removed, so the URL stops working before
/// the object disappears. The token Secret follows its owner through garbage collection.
async fn cleanup(source: &WebhookSource, ctx: &Context) -> Result<Action, Error> {
    let ns = source.namespace().ok_or(Error::MissingNamespace)?;
    let name = source.name_any();
    withdraw_route(&ns, &name, ctx).await?;
    ctx.publish(
        source,
        EventType::Normal,
        "RouteWithdrawn",
        "Delete",
        Some("the URL no longer works".into()),
    )
    .await;
    info!(namespace = %ns, name = %name, "route withdrawn for deletion");
    Ok(Action::await_change())
}

impl Context {
    /// Records a Kubernetes Event; a failure to record is logged, never fatal.
    pub async fn publish(
        &self,
        obj: &WebhookSource,
        type_: EventType,
        reason: &str,
        action: &str,
        note: Option<String>,
    ) {
        self.publish_for(&obj.object_ref(&()), type_, reason, action, note)
            .await;
    }

    pub async fn publish_for(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: Option<String>,
    ) {
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note,
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            warn!(error = %e, reason, "could not record a Kubernetes Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_time_read_back_at_whole_seconds_is_unchanged() {
        let rotated: Timestamp = "2026-11-29T03:16:43.416123456Z".parse().unwrap();
        let computed = WebhookSourceStatus {
            observed_generation: Some(1),
            token_rotated_at: Some(Time(rotated)),
            ..Default::default()
        };
        // What the API server gives back: the serialised Time, whole seconds.
        let stored: WebhookSourceStatus =
            serde_json::from_value(serde_json::to_value(&computed).unwrap()).unwrap();
        assert_ne!(stored.token_rotated_at, computed.token_rotated_at);
        assert!(operator_fields_unchanged(&stored, &computed));

        let later = WebhookSourceStatus {
            token_rotated_at: Some(Time(
                rotated + k8s_openapi::jiff::SignedDuration::from_secs(1),
            )),
            ..computed.clone()
        };
        assert!(!operator_fields_unchanged(&stored, &later));
    }
}
