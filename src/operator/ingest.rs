//! The shared ingest Deployment and Service in the operator's namespace.
//!
//! One data plane for every source. Routes reach it through the API (it watches the route
//! Secrets), so a route change never needs a new pod template and never restarts a pod.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use serde_json::json;

use super::{Error, OperatorArgs};

/// Field manager for the ingest objects: distinct from the one writing sources' status.
pub const INGEST_FIELD_MANAGER: &str = "hookgate.dev/operator-ingest";
pub const INGEST_NAME: &str = "hookgate-ingest";
pub const INGEST_SERVICE_ACCOUNT: &str = "hookgate-ingest";
pub const HTTP_PORT: i32 = 8080;
pub const ADMIN_PORT: i32 = 9090;

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "hookgate".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "ingest".to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "hookgate".to_owned(),
        ),
    ])
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("admin".to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(5),
        ..Default::default()
    }
}

/// The ingest Deployment, pure: what the operator applies.
pub fn deployment(args: &OperatorArgs) -> Deployment {
    let quantities = |pairs: &[(&str, &Option<String>)]| {
        let map: BTreeMap<String, Quantity> = pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| ((*k).to_owned(), Quantity(v.clone()))))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    let mut container_args = vec![
        "ingest".to_owned(),
        format!("--namespace={}", args.namespace),
        format!("--listen=0.0.0.0:{HTTP_PORT}"),
        format!("--admin-listen=0.0.0.0:{ADMIN_PORT}"),
        format!("--status-interval={}", args.ingest.status_interval),
    ];
    if let Some(sink) = &args.ingest.default_sink {
        container_args.push(format!("--default-sink={sink}"));
    }
    Deployment {
        metadata: ObjectMeta {
            name: Some(INGEST_NAME.to_owned()),
            namespace: Some(args.namespace.clone()),
            labels: Some(labels()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(args.ingest.replicas),
            selector: LabelSelector {
                match_labels: Some(labels()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(INGEST_SERVICE_ACCOUNT.to_owned()),
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![Container {
                        name: "ingest".to_owned(),
                        image: Some(args.ingest.image.clone()),
                        image_pull_policy: Some("IfNotPresent".to_owned()),
                        args: Some(container_args),
                        env: Some(vec![
                            field_env("POD_NAME", "metadata.name"),
                            field_env("POD_NAMESPACE", "metadata.namespace"),
                        ]),
                        ports: Some(vec![
                            ContainerPort {
                                name: Some("http".to_owned()),
                                container_port: HTTP_PORT,
                                ..Default::default()
                            },
                            ContainerPort {
                                name: Some("admin".to_owned()),
                                container_port: ADMIN_PORT,
                                ..Default::default()
                            },
                        ]),
                        readiness_probe: Some(probe("/readyz")),
                        liveness_probe: Some(probe("/healthz")),
                        resources: Some(ResourceRequirements {
                            requests: quantities(&[
                                ("cpu", &args.ingest.cpu_request),
                                ("memory", &args.ingest.memory_request),
                            ]),
                            limits: quantities(&[
                                ("cpu", &args.ingest.cpu_limit),
                                ("memory", &args.ingest.memory_limit),
                            ]),
                            ..Default::default()
                        }),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            run_as_non_root: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".to_owned()]),
                                ..Default::default()
                            }),
                            seccomp_profile: Some(SeccompProfile {
                                type_: "RuntimeDefault".to_owned(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn service(args: &OperatorArgs) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(INGEST_NAME.to_owned()),
            namespace: Some(args.namespace.clone()),
            labels: Some(labels()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(labels()),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".to_owned()),
                    port: 80,
                    target_port: Some(IntOrString::String("http".to_owned())),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("admin".to_owned()),
                    port: ADMIN_PORT,
                    target_port: Some(IntOrString::String("admin".to_owned())),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Server-side applies the Deployment and Service.
pub async fn apply(client: &kube::Client, args: &OperatorArgs) -> Result<(), Error> {
    let pp = PatchParams::apply(INGEST_FIELD_MANAGER).force();
    let mut d = serde_json::to_value(deployment(args)).map_err(Error::Serialize)?;
    d["apiVersion"] = json!("apps/v1");
    d["kind"] = json!("Deployment");
    Api::<Deployment>::namespaced(client.clone(), &args.namespace)
        .patch(INGEST_NAME, &pp, &Patch::Apply(&d))
        .await
        .map_err(Error::ApplyIngest)?;
    let mut s = serde_json::to_value(service(args)).map_err(Error::Serialize)?;
    s["apiVersion"] = json!("v1");
    s["kind"] = json!("Service");
    Api::<Service>::namespaced(client.clone(), &args.namespace)
        .patch(INGEST_NAME, &pp, &Patch::Apply(&s))
        .await
        .map_err(Error::ApplyIngest)?;
    Ok(())
}
