//! One object the operator cannot read (stored under an older, looser schema) must not stall
//! the others. This binary runs its own control plane because it loosens a CRD's schema.

mod support;

use hookgate::api::webhook_source::WebhookSource;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::cluster::Cluster;

#[tokio::test]
async fn a_source_the_operator_cannot_read_is_reported_and_the_others_are_served() {
    support::private_control_plane();
    let c = Cluster::new().await;

    // A schema that accepts anything under spec, as an older release might have had.
    let mut crd = serde_json::to_value(WebhookSource::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    let crds: Api<CustomResourceDefinition> = Api::all(c.client.clone());
    crds.patch(
        "webhooksources.hookgate.dev",
        &PatchParams::apply(support::FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    support::kubectl_ok(
        &["apply", "-n", &c.ns, "-f", "-"],
        Some(
            r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: broken}
spec: {enabled: "yes, please", limits: {maxBodyBytes: "a lot"}}
---
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: fine}
spec: {displayName: Fine}
"#,
        ),
    );

    let operator = c.operator("http://127.0.0.1:8080");
    c.wait_source(
        "fine",
        "the readable source is served",
        |s: &WebhookSource| {
            s.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        },
    )
    .await;
    support::eventually(10, "the unreadable source is reported", || {
        let logs = operator.logs();
        logs.lines()
            .find(|l| l.contains("does not match the schema") && l.contains("broken"))
            .map(str::to_owned)
    })
    .await;
    let raw = support::kubectl_ok(
        &["get", "webhooksource", "broken", "-n", &c.ns, "-o", "json"],
        None,
    );
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert!(
        raw.get("status").is_none(),
        "nothing is written for an object the operator cannot read"
    );
}
