//! The Helm chart: `helm lint`, `helm template`, the values schema, and the rendered chart
//! applied with server-side apply to the real test API server (no kubelet: objects are asserted,
//! not running pods).
//!
//! helm is built from the Go module helm.sh/helm/v3 by `tests/control-plane/build-helm` (cached
//! by version under ~/.cache/hookgate/, like the control plane).

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde::Deserialize;
use serde_json::{Value, json};

fn helm_binary() -> &'static PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = support::repo_root().join("tests/control-plane/build-helm");
        let out = Command::new(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed", script.display());
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("build-helm prints helm's path"),
        )
    })
}

fn chart() -> PathBuf {
    support::repo_root().join("charts/hookgate")
}

fn helm(args: &[&str]) -> Output {
    Command::new(helm_binary())
        .args(args)
        // Keep helm away from the user's own helm configuration and repositories.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("hookgate-helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("hookgate-helm/config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("hookgate-helm/data"),
        )
        .output()
        .expect("running helm")
}

/// `helm template` with `--set` pairs; the rendered YAML, or a panic with helm's error.
fn template(release: &str, namespace: &str, sets: &[&str]) -> String {
    let out = template_output(release, namespace, sets);
    assert!(
        out.status.success(),
        "helm template {sets:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn template_output(release: &str, namespace: &str, sets: &[&str]) -> Output {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm(&args)
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn operator_args(docs: &[Value]) -> Vec<String> {
    let deployment = find(docs, "Deployment", "hg-operator");
    serde_json::from_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone())
        .unwrap()
}

#[test]
fn helm_lint_passes_strictly() {
    let out = helm(&["lint", "--strict", chart().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helm lint failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 chart(s) failed"), "{stdout}");
}

#[test]
fn default_values_render_the_operator_with_restricted_security() {
    let docs = documents(&template("hg", "hookgate-system", &[]));
    let expected: BTreeSet<String> = [
        "ServiceAccount/hg-operator",
        "ClusterRole/hg-operator",
        "ClusterRoleBinding/hg-operator",
        "Role/hg-operator",
        "RoleBinding/hg-operator",
        "ServiceAccount/hookgate-ingest",
        "Role/hg-ingest",
        "RoleBinding/hg-ingest",
        "ClusterRole/hg-ingest",
        "ClusterRoleBinding/hg-ingest",
        "Deployment/hg-operator",
        "Service/hg-operator-metrics",
        "PodDisruptionBudget/hg-operator",
        "PodDisruptionBudget/hg-ingest",
        "NetworkPolicy/hg-operator",
        "NetworkPolicy/hg-ingest",
        "ConfigMap/hg-dashboard",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(kinds(&docs), expected);
    for doc in &docs {
        if doc["kind"] != "ClusterRole" && doc["kind"] != "ClusterRoleBinding" {
            assert_eq!(doc["metadata"]["namespace"], "hookgate-system", "{doc}");
        }
    }

    let deployment = find(&docs, "Deployment", "hg-operator");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(pod["serviceAccountName"], "hg-operator");
    assert_eq!(
        pod["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/hookgate/hookgate:0.1.0");
    assert_eq!(
        container["securityContext"],
        json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
               "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]},
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"],
            json!({"path": "/healthz", "port": "metrics"})
        );
    }
    assert_eq!(
        container["ports"],
        json!([{"name": "metrics", "containerPort": 8081, "protocol": "TCP"}])
    );
    let env: Vec<Value> = serde_json::from_value(container["env"].clone()).unwrap();
    for (name, path) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        assert!(
            env.contains(&json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}})),
            "{name} from the downward API: {env:?}"
        );
    }
    let args = operator_args(&docs);
    for arg in [
        "operator",
        "--public-url=http://hookgate-ingest.hookgate-system.svc",
        "--metrics-listen=0.0.0.0:8081",
        "--ingest-image=ghcr.io/hookgate/hookgate:0.1.0",
        "--ingest-replicas=2",
        "--ingest-status-interval=10s",
    ] {
        assert!(
            args.contains(&arg.to_owned()),
            "{arg} missing from {args:?}"
        );
    }
    // The operator selector must not match the ingest pods, which share the name label.
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(selector["app.kubernetes.io/component"], "operator");
    assert_eq!(
        find(&docs, "PodDisruptionBudget", "hg-ingest")["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "hookgate", "app.kubernetes.io/component": "ingest",
               "app.kubernetes.io/managed-by": "hookgate"})
    );
}

/// The ingest objects the operator creates follow the chart's values: every value reaches the
/// flag the operator reads.
#[test]
fn ingest_values_become_operator_flags() {
    let docs = documents(&template(
        "hg",
        "hookgate-system",
        &[
            "image.tag=1.2.3",
            "ingest.image=registry.example/hookgate:edge",
            "ingest.replicas=5",
            "ingest.resources.requests.cpu=250m",
            "ingest.resources.requests.memory=128Mi",
            "ingest.resources.limits.cpu=2",
            "ingest.resources.limits.memory=1Gi",
            "ingest.defaultSink=http://broker.knative.svc/shop/default",
            "ingest.statusInterval=30s",
            "operator.watchNamespace=shop",
            "operator.replicas=3",
            "publicUrl=https://hooks.example.com/",
        ],
    ));
    let args = operator_args(&docs);
    for arg in [
        "--public-url=https://hooks.example.com",
        "--watch-namespace=shop",
        "--ingest-image=registry.example/hookgate:edge",
        "--ingest-replicas=5",
        "--ingest-cpu-request=250m",
        "--ingest-memory-request=128Mi",
        "--ingest-cpu-limit=2",
        "--ingest-memory-limit=1Gi",
        "--ingest-default-sink=http://broker.knative.svc/shop/default",
        "--ingest-status-interval=30s",
    ] {
        assert!(
            args.contains(&arg.to_owned()),
            "{arg} missing from {args:?}"
        );
    }
    let deployment = find(&docs, "Deployment", "hg-operator");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/hookgate/hookgate:1.2.3"
    );

    // Without a managed ingest there is no ingest PDB or policy, and the operator is told.
    let docs = documents(&template("hg", "hookgate-system", &["ingest.deploy=false"]));
    assert!(operator_args(&docs).contains(&"--no-ingest-deployment".to_owned()));
    let kinds = kinds(&docs);
    assert!(
        !kinds.contains("PodDisruptionBudget/hg-ingest"),
        "{kinds:?}"
    );
    assert!(!kinds.contains("NetworkPolicy/hg-ingest"), "{kinds:?}");
}

#[test]
fn ingress_httproute_and_servicemonitor_render_when_enabled() {
    let docs = documents(&template(
        "hg",
        "hookgate-system",
        &[
            "ingress.enabled=true",
            "ingress.host=hooks.example.com",
            "ingress.className=nginx",
            "ingress.tlsSecretName=hooks-tls",
            "httpRoute.enabled=true",
            "httpRoute.parentRefs[0].name=public",
            "httpRoute.parentRefs[0].namespace=gateway-system",
            "httpRoute.hostnames[0]=hooks.example.com",
            "serviceMonitor.enabled=true",
            "serviceMonitor.labels.release=prometheus",
        ],
    ));
    // The public URL follows the host senders use.
    assert!(operator_args(&docs).contains(&"--public-url=https://hooks.example.com".to_owned()));
    let ingress = find(&docs, "Ingress", "hg-ingest");
    assert_eq!(ingress["spec"]["ingressClassName"], "nginx");
    assert_eq!(
        ingress["spec"]["tls"],
        json!([{"hosts": ["hooks.example.com"], "secretName": "hooks-tls"}])
    );
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0],
        json!({"path": "/h/", "pathType": "Prefix",
               "backend": {"service": {"name": "hookgate-ingest", "port": {"name": "http"}}}})
    );
    let route = find(&docs, "HTTPRoute", "hg-ingest");
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(
        route["spec"]["parentRefs"],
        json!([{"name": "public", "namespace": "gateway-system"}])
    );
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"],
        json!([{"name": "hookgate-ingest", "port": 80}])
    );
    let operator_monitor = find(&docs, "ServiceMonitor", "hg-operator");
    assert_eq!(
        operator_monitor["metadata"]["labels"]["release"],
        "prometheus"
    );
    assert_eq!(operator_monitor["spec"]["endpoints"][0]["port"], "metrics");
    let ingest_monitor = find(&docs, "ServiceMonitor", "hg-ingest");
    assert_eq!(ingest_monitor["spec"]["endpoints"][0]["port"], "admin");

    // Enabling an Ingress without a host is refused with a reason, not rendered half-empty.
    let out = template_output("hg", "hookgate-system", &["ingress.enabled=true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ingress.enabled needs ingress.host"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn misspelt_or_mistyped_values_are_rejected_by_the_schema() {
    for (set, mentions) in [
        ("operator.replica=3", "replica"),
        ("ingres.enabled=true", "ingres"),
        ("ingest.resources.limits.memroy=1Gi", "memroy"),
        ("ingest.replicas=two", "/ingest/replicas"),
        (
            "ingest.statusInterval=ten seconds",
            "/ingest/statusInterval",
        ),
        ("publicUrl=hooks.example.com", "/publicUrl"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ] {
        let out = template_output("hg", "hookgate-system", &[set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "--set {set}: {stderr}"
        );
        assert!(stderr.contains(mentions), "--set {set}: {stderr}");
    }
}

/// Every metric the Grafana dashboard queries is one the binary exports (names taken from the
/// operator's and the ingest's own registries, not from a list that could drift).
#[test]
fn dashboard_queries_only_exported_metrics() {
    let docs = documents(&template("hg", "hookgate-system", &[]));
    let cm = find(&docs, "ConfigMap", "hg-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value =
        serde_json::from_str(cm["data"]["hookgate.json"].as_str().unwrap()).unwrap();

    // A family is exported once it has a series: one reconcile of each outcome, one source.
    let mut exported = String::new();
    let operator = hookgate::operator::metrics::Metrics::default();
    let took = std::time::Duration::from_millis(3);
    operator.observe("WebhookSource", &Ok(()), took);
    operator.observe(
        "Mapping",
        &Err::<(), _>(hookgate::operator::Error::MissingNamespace),
        took,
    );
    prometheus_client::encoding::text::encode(&mut exported, &operator.registry).unwrap();
    let ingest = hookgate::ingest::Metrics::new();
    let _source = ingest.source("shop", "stripe");
    exported.push_str(&ingest.encode());
    // Series names as Prometheus stores them: counters get _total, histograms _bucket/_sum/_count.
    let mut names = BTreeSet::new();
    for line in exported.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        }
    }

    let mut queried = BTreeSet::new();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(
        exprs.len() >= 10,
        "dashboard has too few queries: {exprs:?}"
    );
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("hookgate_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            queried.insert(name);
        }
    }
    let unknown: Vec<&String> = queried.difference(&names).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the binary does not export: {unknown:?}; exported: {names:?}"
    );
    // The headline metrics are all on the dashboard.
    for name in [
        "hookgate_operator_reconciles_total",
        "hookgate_operator_reconcile_errors_total",
        "hookgate_operator_reconcile_duration_seconds_bucket",
        "hookgate_operator_leader",
        "hookgate_ingest_requests_total",
        "hookgate_ingest_events_delivered_total",
    ] {
        assert!(queried.contains(name), "{name} is not on the dashboard");
    }
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

fn apply_server_side(yaml: &str) -> Output {
    support::kubectl(
        &[
            "apply",
            "--server-side",
            "--field-manager=helm-test",
            "-f",
            "-",
        ],
        Some(yaml),
    )
}

/// The rendered chart, with the optional objects the API server knows (Ingress), is accepted by
/// the real API server with server-side apply, twice (no conflicts with itself), in a namespace
/// that warns on Pod Security "restricted" violations — and there are none.
#[tokio::test]
async fn rendered_chart_applies_server_side_under_restricted_pod_security() {
    let client = support::client().await;
    let ns = support::namespace(&client).await;
    support::kubectl_ok(
        &[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        ],
        None,
    );
    // The release is named after the namespace so its cluster-scoped RBAC does not collide
    // with other tests'.
    let rendered = template(
        &ns,
        &ns,
        &["ingress.enabled=true", "ingress.host=hooks.example.com"],
    );

    // A control: a pod template without the restricted settings draws the warning, so its
    // absence below means something.
    let careless = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: careless, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: careless}}}}\n  template:\n    metadata: {{labels: {{app: careless}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    );
    let out = apply_server_side(&careless);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("would violate PodSecurity"),
        "the API server did not warn about a careless pod template: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for attempt in ["first", "second"] {
        let out = apply_server_side(&rendered);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{attempt} server-side apply failed: {stderr}"
        );
        assert!(
            !stderr.contains("PodSecurity"),
            "{attempt} apply drew a Pod Security warning: {stderr}"
        );
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let stored = deployments.get(&format!("{ns}-operator")).await.unwrap();
    let spec = stored.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(format!("{ns}-operator").as_str())
    );
    let container = &pod.containers[0];
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));

    for (kind, name) in [
        ("serviceaccount", format!("{ns}-operator")),
        ("serviceaccount", "hookgate-ingest".to_owned()),
        ("service", format!("{ns}-operator-metrics")),
        ("poddisruptionbudget", format!("{ns}-operator")),
        ("poddisruptionbudget", format!("{ns}-ingest")),
        ("networkpolicy", format!("{ns}-operator")),
        ("networkpolicy", format!("{ns}-ingest")),
        ("configmap", format!("{ns}-dashboard")),
        ("ingress", format!("{ns}-ingest")),
        ("role", format!("{ns}-ingest")),
    ] {
        support::kubectl_ok(&["get", kind, &name, "-n", &ns], None);
    }
    for name in [format!("{ns}-operator"), format!("{ns}-ingest")] {
        support::kubectl_ok(&["get", "clusterrole", &name], None);
        support::kubectl_ok(&["get", "clusterrolebinding", &name], None);
    }
}

/// The ingest's RBAC as applied: it reads the route Secrets in its own namespace only, and
/// writes the status of sources and mappings, never their spec.
#[tokio::test]
async fn ingest_rbac_is_least_privilege() {
    let client = support::client().await;
    let ns = support::namespace(&client).await;
    let other = support::namespace(&client).await;
    support::kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&support::render_chart_file("ingest-rbac.yaml", &ns, &ns)),
    );
    let who = format!("system:serviceaccount:{ns}:hookgate-ingest");
    let can = |verb: &str, resource: &str, namespace: &str| -> bool {
        let mut args = vec!["auth", "can-i", verb, "-n", namespace, "--as", &who];
        match resource.split_once('/') {
            Some((resource, sub)) => args.extend([resource, "--subresource", sub]),
            None => args.push(resource),
        }
        let out = support::kubectl(&args, None);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for (verb, resource) in [
        ("watch", "secrets"),
        ("list", "secrets"),
        ("get", "secrets"),
        ("get", "webhooksources.hookgate.dev"),
        ("get", "mappings.hookgate.dev"),
        ("patch", "webhooksources.hookgate.dev/status"),
        ("patch", "mappings.hookgate.dev/status"),
    ] {
        assert!(
            can(verb, resource, &ns),
            "the ingest cannot {verb} {resource}"
        );
    }
    for (verb, resource, namespace) in [
        ("get", "secrets", other.as_str()),
        ("list", "secrets", other.as_str()),
        ("create", "secrets", ns.as_str()),
        ("patch", "webhooksources.hookgate.dev", ns.as_str()),
        ("patch", "mappings.hookgate.dev", ns.as_str()),
        ("delete", "webhooksources.hookgate.dev", ns.as_str()),
        ("create", "deployments.apps", ns.as_str()),
        ("watch", "webhooksources.hookgate.dev", ns.as_str()),
        ("list", "mappings.hookgate.dev", ns.as_str()),
    ] {
        assert!(
            !can(verb, resource, namespace),
            "the ingest may {verb} {resource} in {namespace}"
        );
    }
}

/// Every leaf of values.yaml is in the chart README's values table and in the schema, so the
/// reference cannot fall behind the values.
#[test]
fn every_value_is_documented_and_in_the_schema() {
    fn leaves(value: &Value, path: &str, out: &mut Vec<String>) {
        match value {
            // Open maps (the operator's requests and limits, labels, ...) are documented whole.
            Value::Object(map) if !map.is_empty() && !path.starts_with("operator.resources.") => {
                for (k, v) in map {
                    let next = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    leaves(v, &next, out);
                }
            }
            _ => out.push(path.to_owned()),
        }
    }
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap())
            .unwrap();
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let mut paths = Vec::new();
    leaves(&values, "", &mut paths);
    assert!(paths.len() > 40, "{paths:?}");
    for path in paths {
        assert!(
            readme.contains(&format!("| `{path}` |")),
            "charts/hookgate/README.md does not document {path}"
        );
        let mut at = &schema;
        for key in path.split('.') {
            at = &at["properties"][key];
        }
        assert!(
            at["description"].is_string(),
            "values.schema.json has no description for {path}"
        );
    }
}
