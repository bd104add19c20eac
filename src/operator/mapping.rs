//! Reconciles a Mapping: compiles it with the mapping engine and checks its source exists.
//! The source's reconcile (triggered by the same change) decides what goes into the route.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::conditions::{self, Verdict};
use super::{Context, Error, FIELD_MANAGER};
use crate::api::conditions::{READY, SOURCE_FOUND};
use crate::api::mapping::{Mapping, MappingStatus};
use crate::api::webhook_source::WebhookSource;
use crate::mapping::CompiledMapping;

pub async fn reconcile(mapping: Arc<Mapping>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = mapping.namespace().ok_or(Error::MissingNamespace)?;
    let name = mapping.name_any();
    let source_name = &mapping.spec.source_ref.name;

    let compiled = CompiledMapping::compile(&name, &mapping.spec);
    // From the source watch's store, which is fed before it triggers this reconcile on a
    // source's change. A source it does not show is asked of the API server: it may have been
    // created a moment before this mapping and its event still be on the way, and answering
    // SourceNotFound for it would cost a status write and a Warning now and again on its
    // arrival. A source that really is missing costs that read on each change of the mapping.
    let source_exists = match ctx.caches.source(&ns, source_name) {
        // A source being deleted counts as gone: its final removal is not a generation change,
        // so this reconcile (triggered by the deletion timestamp) is the last one it causes.
        Some(cached) => cached.meta().deletion_timestamp.is_none(),
        None => Api::<WebhookSource>::namespaced(ctx.client.clone(), &ns)
            .get_metadata_opt(source_name)
            .await
            .map_err(Error::GetSource)?
            .is_some_and(|s| s.metadata.deletion_timestamp.is_none()),
    };

    let source_found = if source_exists {
        Verdict::ok(
            SOURCE_FOUND,
            "SourceFound",
            format!("WebhookSource {source_name} exists"),
        )
    } else {
        Verdict::fail(
            SOURCE_FOUND,
            "SourceNotFound",
            format!("WebhookSource {source_name} not found in namespace {ns}"),
        )
    };
    let ready = match (&compiled, source_exists) {
        // The compile error carries the field and the position in the template.
        (Err(errors), _) => Verdict::fail(READY, "InvalidTemplate", errors.to_string()),
        (Ok(_), false) => Verdict::fail(READY, "SourceNotFound", source_found.message.clone()),
        (Ok(_), true) => Verdict::ok(
            READY,
            "Compiled",
            format!("attached to WebhookSource {source_name}"),
        ),
    };

    let existing = mapping.status.clone().unwrap_or_default();
    let generation = mapping.meta().generation;
    let computed = conditions::compute(
        &existing.conditions,
        &[ready.clone(), source_found],
        generation,
        Timestamp::now(),
    );
    if existing.observed_generation != generation
        || !conditions::same(&existing.conditions, &computed)
    {
        let status = MappingStatus {
            observed_generation: generation,
            conditions: computed,
            ..Default::default()
        };
        let patch = json!({
            "apiVersion": Mapping::api_version(&()),
            "kind": Mapping::kind(&()),
            "status": status,
        });
        Api::<Mapping>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(Error::PatchStatus)?;
    }

    // An Event for a failure, a flip, or an edit's outcome; not for a new mapping that compiled
    // and found its source (its Ready condition says so), which was one of three Events per
    // source and mapping created.
    let was_ready = conditions::is_true(&existing.conditions, READY);
    let first = existing.observed_generation.is_none() && was_ready.is_none();
    if (was_ready != Some(ready.ok) || existing.observed_generation != generation)
        && !(first && ready.ok)
    {
        let type_ = if ready.ok {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.publish_for(
            &mapping.object_ref(&()),
            type_,
            ready.reason,
            "Compile",
            Some(ready.message.clone()),
        )
        .await;
    }
    info!(namespace = %ns, name = %name, ready = ready.ok, reason = ready.reason, "reconciled Mapping");
    Ok(Action::await_change())
}
