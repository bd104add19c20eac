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
    let source = Api::<WebhookSource>::namespaced(ctx.client.clone(), &ns)
        .get_opt(source_name)
        .await
        .map_err(Error::GetSource)?
        // A source being deleted counts as gone: its final removal is not a generation change,
        // so this reconcile (triggered by the deletion timestamp) is the last one it causes.
        .filter(|s| s.meta().deletion_timestamp.is_none());

    let source_found = match &source {
        Some(_) => Verdict::ok(
            SOURCE_FOUND,
            "SourceFound",
            format!("WebhookSource {source_name} exists"),
        ),
        None => Verdict::fail(
            SOURCE_FOUND,
            "SourceNotFound",
            format!("WebhookSource {source_name} not found in namespace {ns}"),
        ),
    };
    let ready = match (&compiled, &source) {
        // The compile error carries the field and the position in the template.
        (Err(errors), _) => Verdict::fail(READY, "InvalidTemplate", errors.to_string()),
        (Ok(_), None) => Verdict::fail(READY, "SourceNotFound", source_found.message.clone()),
        (Ok(_), Some(_)) => Verdict::ok(
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

    if conditions::is_true(&existing.conditions, READY) != Some(ready.ok)
        || existing.observed_generation != generation
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
