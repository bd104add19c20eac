//! The Argo CD health checks the chart ships (charts/hookgate/argocd/*.lua), run by a real Lua
//! interpreter: on the fixture statuses in argocd/fixtures/, and on the statuses a real operator
//! writes on the real API server. Also the documented way of installing them into argocd-cm.
//!
//! Lua comes from `argocd/install-lua` (Debian's lua5.4), which `scripts/setup` runs.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hookgate::api::mapping::Mapping;
use hookgate::api::webhook_source::WebhookSource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use support::{Process, TempDir};

const LUA: &str = "lua5.4";

fn check_path(kind: &str) -> PathBuf {
    support::repo_root()
        .join("charts/hookgate/argocd")
        .join(format!("{}.lua", kind.to_lowercase()))
}

/// A JSON value as a Lua table constructor. Integers stay integers (Argo CD hands Lua numbers);
/// strings are escaped byte by byte so any UTF-8 survives.
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for byte in s.bytes() {
                match byte {
                    b'\\' => out.push_str("\\\\"),
                    b'"' => out.push_str("\\\""),
                    0x20..=0x7e => out.push(byte as char),
                    _ => out.push_str(&format!("\\{byte:03}")),
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua_literal(&json!(k)), lua_literal(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// Runs a health check the way Argo CD does: the script is a chunk with the resource in the
/// global `obj`, and its return value is the health. The chunk gets only the base functions,
/// `string`, `table` and `math` — no `os` or `io` — so a check that needs more fails here too.
fn run_check(script: &Path, obj: &Value) -> (String, String) {
    let source = std::fs::read_to_string(script)
        .unwrap_or_else(|e| panic!("reading {}: {e}", script.display()));
    let program = format!(
        r#"local source = {source}
local env = {{obj = {obj}, ipairs = ipairs, pairs = pairs, tostring = tostring,
  tonumber = tonumber, type = type, next = next, string = string, table = table, math = math}}
local chunk = assert(load(source, "health.lua", "t", env))
local hs = chunk()
assert(type(hs) == "table", "the check returned " .. type(hs))
io.write(tostring(hs.status), "\n", tostring(hs.message), "\n")
"#,
        source = lua_literal(&json!(source)),
        obj = lua_literal(obj),
    );
    let mut child = Command::new(LUA)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{LUA} is needed to run the Argo CD health checks ({e}); run argocd/install-lua")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(program.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} failed on {obj}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (status, message) = stdout
        .strip_suffix('\n')
        .and_then(|s| s.split_once('\n'))
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"));
    (status.to_owned(), message.to_owned())
}

#[derive(Deserialize)]
struct Case {
    case: String,
    expect: Expect,
    object: Value,
}

#[derive(Deserialize)]
struct Expect {
    status: String,
    message: String,
}

fn fixtures(kind: &str) -> Vec<Case> {
    let path = support::repo_root()
        .join("argocd/fixtures")
        .join(format!("{}.yaml", kind.to_lowercase()));
    let text = std::fs::read_to_string(&path).unwrap();
    // The fixtures share objects through YAML merge keys (`<<: *serving`).
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    yaml.apply_merge().unwrap();
    serde_yaml::from_value(yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_fixtures(kind: &str) {
    let cases = fixtures(kind);
    let mut failures = Vec::new();
    for case in &cases {
        assert_eq!(case.object["kind"], kind, "{}: wrong kind", case.case);
        let got = run_check(&check_path(kind), &case.object);
        if got != (case.expect.status.clone(), case.expect.message.clone()) {
            failures.push(format!(
                "{}: expected {} {:?}, got {} {:?}",
                case.case, case.expect.status, case.expect.message, got.0, got.1
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every health the check can give is exercised.
    for status in ["Healthy", "Progressing", "Degraded"] {
        assert!(
            cases.iter().any(|c| c.expect.status == status),
            "no {kind} fixture expects {status}"
        );
    }
}

#[test]
fn webhooksource_health_follows_ready_and_observed_generation() {
    assert_fixtures("WebhookSource");
}

#[test]
fn mapping_health_follows_ready_and_observed_generation() {
    assert_fixtures("Mapping");
}

fn ready(conditions: &[Condition], generation: Option<i64>) -> Option<&Condition> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.observed_generation == generation)
}

/// The checks on what a real operator writes, under the chart's RBAC: a source it serves, one
/// it disabled, one whose token Secret is missing; a mapping that does not compile, one whose
/// source is missing, one that is fine. Before the operator runs, all are Progressing.
#[tokio::test]
async fn health_of_what_the_operator_writes() {
    let client = support::client().await;
    let ns = support::namespace(&client).await;
    support::kubectl_ok(
        &["apply", "-f", "-"],
        Some(&support::render_chart_file("operator-rbac.yaml", &ns, &ns)),
    );
    let dir = TempDir::new("hookgate-argocd-health");
    let kubeconfig = support::service_account_kubeconfig(&ns, &format!("{ns}-operator"), &dir.0);

    let sources: Api<WebhookSource> = Api::namespaced(client.clone(), &ns);
    let mappings: Api<Mapping> = Api::namespaced(client.clone(), &ns);
    let source = |name: &str, spec: Value| -> WebhookSource {
        serde_json::from_value(json!({
            "apiVersion": "hookgate.dev/v1alpha1", "kind": "WebhookSource",
            "metadata": {"name": name}, "spec": spec,
        }))
        .unwrap()
    };
    let mapping = |name: &str, source: &str, email: &str| -> Mapping {
        serde_json::from_value(json!({
            "apiVersion": "hookgate.dev/v1alpha1", "kind": "Mapping",
            "metadata": {"name": name},
            "spec": {"sourceRef": {"name": source}, "event": {"name": "Purchase", "email": email}},
        }))
        .unwrap()
    };
    let pp = PostParams::default();
    for s in [
        source("serving", json!({"displayName": "Serving"})),
        source("off", json!({"enabled": false})),
        source("own-token", json!({"tokenSecretRef": {"name": "absent"}})),
    ] {
        sources.create(&pp, &s).await.unwrap();
    }
    for m in [
        mapping("fine", "serving", "{{customer.email | lower}}"),
        mapping("typo", "serving", "{{customer.email | lowr}}"),
        mapping("orphan", "absent", "{{email}}"),
    ] {
        mappings.create(&pp, &m).await.unwrap();
    }

    // As Argo CD sees objects it has just applied: no status yet.
    for name in ["serving", "off", "own-token"] {
        let obj = as_json(&sources.get(name).await.unwrap());
        assert_eq!(
            run_check(&check_path("WebhookSource"), &obj).0,
            "Progressing",
            "{name} before the operator ran"
        );
    }
    for name in ["fine", "typo", "orphan"] {
        let obj = as_json(&mappings.get(name).await.unwrap());
        assert_eq!(
            run_check(&check_path("Mapping"), &obj).0,
            "Progressing",
            "{name} before the operator ran"
        );
    }

    let _operator = Process::start(
        &[
            "operator",
            "--namespace",
            &ns,
            "--watch-namespace",
            &ns,
            "--public-url",
            "https://hooks.test.example",
            "--metrics-listen",
            "127.0.0.1:0",
            "--identity",
            "argocd-health",
            "--no-ingest-deployment",
        ],
        &kubeconfig,
        dir.0.join("operator.log"),
    );

    let expected_sources = [
        (
            "serving",
            "Healthy",
            "the URL is in force at https://hooks.test.example/h/****",
        ),
        (
            "off",
            "Healthy",
            "Disabled: the source is disabled: senders get 503 with Retry-After",
        ),
        (
            "own-token",
            "Degraded",
            "TokenSecretNotFound: tokenSecretRef: Secret absent not found in namespace",
        ),
    ];
    for (name, status, message) in expected_sources {
        let s = support::wait_for(&sources, name, 60, "Ready observed", |s: &WebhookSource| {
            let generation = s.metadata.generation;
            s.status.as_ref().is_some_and(|st| {
                st.observed_generation == generation && ready(&st.conditions, generation).is_some()
            })
        })
        .await;
        let got = run_check(&check_path("WebhookSource"), &as_json(&s));
        assert_eq!(got.0, status, "{name}: {got:?}");
        assert!(got.1.starts_with(message), "{name}: {got:?}");
    }
    let expected_mappings = [
        ("fine", "Healthy", "attached to WebhookSource serving"),
        (
            "typo",
            "Degraded",
            "InvalidTemplate: event.email: position 20: unknown filter \"lowr\"",
        ),
        (
            "orphan",
            "Degraded",
            "SourceNotFound: WebhookSource absent not found in namespace",
        ),
    ];
    for (name, status, message) in expected_mappings {
        let m = support::wait_for(&mappings, name, 60, "Ready observed", |m: &Mapping| {
            let generation = m.metadata.generation;
            m.status.as_ref().is_some_and(|st| {
                st.observed_generation == generation && ready(&st.conditions, generation).is_some()
            })
        })
        .await;
        let got = run_check(&check_path("Mapping"), &as_json(&m));
        assert_eq!(got.0, status, "{name}: {got:?}");
        assert!(got.1.starts_with(message), "{name}: {got:?}");
    }
}

fn as_json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap()
}

/// `install-health-checks`, the documented way into argocd-cm, merges hookgate's keys into an
/// existing argocd-cm and leaves the other keys alone; the values are the shipped files.
#[tokio::test]
async fn install_health_checks_merges_into_argocd_cm() {
    let client = support::client().await;
    let ns = support::namespace(&client).await;
    support::kubectl_ok(
        &[
            "create",
            "configmap",
            "argocd-cm",
            "-n",
            &ns,
            "--from-literal=url=https://argocd.example",
        ],
        None,
    );
    let script = support::repo_root().join("charts/hookgate/argocd/install-health-checks");
    let out = Command::new(&script)
        .arg(&ns)
        .env("KUBECONFIG", &support::control_plane().kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let cm: Value = serde_json::from_str(&support::kubectl_ok(
        &["get", "configmap", "argocd-cm", "-n", &ns, "-o", "json"],
        None,
    ))
    .unwrap();
    let data = &cm["data"];
    assert_eq!(data["url"], "https://argocd.example", "other keys are kept");
    let file = |name: &str| {
        std::fs::read_to_string(
            support::repo_root()
                .join("charts/hookgate/argocd")
                .join(name),
        )
        .unwrap()
    };
    let prefix = "resource.customizations";
    for kind in ["WebhookSource", "Mapping"] {
        assert_eq!(
            data[format!("{prefix}.health.hookgate.dev_{kind}")],
            file(&format!("{}.lua", kind.to_lowercase())),
        );
        assert_eq!(
            data[format!("{prefix}.ignoreResourceUpdates.hookgate.dev_{kind}")],
            file("ignore-status.yaml"),
        );
    }
    let ignore: Value = serde_yaml::from_str(&file("ignore-status.yaml")).unwrap();
    assert_eq!(ignore, json!({"jsonPointers": ["/status"]}));
}

/// The kustomize Component offers the same keys to an Argo CD installed with kustomize.
#[test]
fn kustomize_component_merges_the_same_keys() {
    let dir = TempDir::new("hookgate-argocd-kustomize");
    let component = support::repo_root().join("charts/hookgate/argocd");
    std::fs::write(
        dir.0.join("argocd-cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: argocd-cm}\ndata: {url: https://argocd.example}\n",
    )
    .unwrap();
    // kustomize refuses files outside the kustomization's root, so the component is copied in
    // as a user vendoring it would.
    std::fs::create_dir(dir.0.join("hookgate")).unwrap();
    for entry in std::fs::read_dir(&component).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.0.join("hookgate").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    std::fs::write(
        dir.0.join("kustomization.yaml"),
        "resources: [argocd-cm.yaml]\ncomponents: [hookgate]\n",
    )
    .unwrap();
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    assert_eq!(cm["data"]["url"], "https://argocd.example");
    let lua = std::fs::read_to_string(component.join("webhooksource.lua")).unwrap();
    assert_eq!(
        cm["data"]["resource.customizations.health.hookgate.dev_WebhookSource"],
        lua
    );
    assert!(
        cm["data"]["resource.customizations.ignoreResourceUpdates.hookgate.dev_Mapping"]
            .as_str()
            .is_some_and(|s| s.contains("/status"))
    );
}
