//! The CRDs against a real kube-apiserver: they install, every example applies, each CEL rule
//! refuses a bad object with its own message (through the kube client and through kubectl),
//! and kubectl shows the printer columns.

mod support;

use hookgate::api::{Mapping, WebhookSource};
use kube::Api;
use kube::api::PostParams;
use serde_json::Value;

#[tokio::test]
async fn crds_install_with_kubectl_and_become_established() {
    // The user's path: `kubectl apply -f crds/` then `kubectl wait`.
    let crds = support::repo_root().join("crds");
    support::kubectl_ok(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crds.to_str().unwrap(),
        ],
        None,
    );
    let out = support::kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/webhooksources.hookgate.dev",
            "crd/mappings.hookgate.dev",
        ],
        None,
    );
    assert_eq!(out.matches("condition met").count(), 2, "{out}");

    let names = support::kubectl_ok(
        &[
            "get",
            "crd",
            "webhooksources.hookgate.dev",
            "-o",
            "jsonpath={.spec.names.shortNames} {.spec.names.categories}",
        ],
        None,
    );
    assert_eq!(names.trim(), r#"["whs"] ["hookgate"]"#);
}

#[tokio::test]
async fn every_example_applies_with_kubectl_and_reads_back_typed() {
    let client = support::client().await;
    let ns = support::namespace(&client).await;
    let files = support::example_files();
    for file in &files {
        support::kubectl_ok(&["apply", "-n", &ns, "-f", file.to_str().unwrap()], None);
    }
    let sources = Api::<WebhookSource>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    let mappings = Api::<Mapping>::namespaced(client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(
        sources.items.len() + mappings.items.len(),
        files.len(),
        "one object per example file"
    );
    let stripe = sources
        .items
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("stripe"))
        .expect("the stripe example");
    assert!(stripe.spec.enabled);
    assert_eq!(
        stripe.spec.limits.as_ref().unwrap().requests_per_second,
        Some(200)
    );
}

const VALID_SOURCE: &str = r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: NAME}
spec:
  displayName: Valid
  tokenRotation: {gracePeriod: 30s}
  signature: {type: hmac, secretRef: {name: s, key: k}, header: X-Signature, tolerance: 5m}
  limits: {maxBodyBytes: 1024, requestsPerSecond: 10, burst: 20}
  dedup: {window: 1h}
  sink: {http: {url: "http://collector.example/events", timeout: 2s}}
"#;

const VALID_MAPPING: &str = r#"
apiVersion: hookgate.dev/v1alpha1
kind: Mapping
metadata: {name: NAME}
spec:
  sourceRef: {name: some-source}
  when:
    - {path: "{{type}}", equals: invoice.paid}
  event:
    name: Purchase
    email: "{{email}}"
    properties: {fields: {channel: web}}
"#;

/// One CEL rule: the change that breaks it (a JSON merge patch on a valid object) and the
/// message the API server must answer with.
struct Case {
    name: &'static str,
    valid: &'static str,
    merge: Value,
    message: &'static str,
}

fn cases() -> Vec<Case> {
    use serde_json::json;
    vec![
        Case {
            name: "mapping-without-identity",
            valid: VALID_MAPPING,
            merge: json!({"spec": {"event": {"email": null}}}),
            message: "event needs an identity: set at least one of event.visitorId, event.email or event.externalId",
        },
        Case {
            name: "properties-without-from-or-fields",
            valid: VALID_MAPPING,
            merge: json!({"spec": {"event": {"properties": {"fields": null}}}}),
            message: "event.properties needs `from` (a whole object) or `fields` (selected values), or both",
        },
        Case {
            name: "when-with-two-operators",
            valid: VALID_MAPPING,
            merge: json!({"spec": {"when": [{"path": "{{type}}", "equals": "a", "prefix": "b"}]}}),
            message: "each `when` condition sets exactly one of equals, exists, in or prefix",
        },
        Case {
            name: "when-with-no-operator",
            valid: VALID_MAPPING,
            merge: json!({"spec": {"when": [{"path": "{{type}}"}]}}),
            message: "each `when` condition sets exactly one of equals, exists, in or prefix",
        },
        Case {
            name: "empty-event-name",
            valid: VALID_MAPPING,
            merge: json!({"spec": {"event": {"name": ""}}}),
            message: "event.name must not be empty",
        },
        Case {
            name: "empty-source-ref",
            valid: VALID_MAPPING,
            merge: json!({"spec": {"sourceRef": {"name": ""}}}),
            message: "sourceRef.name must name a WebhookSource",
        },
        Case {
            name: "zero-max-body",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"limits": {"maxBodyBytes": 0}}}),
            message: "limits.maxBodyBytes must be a positive number of bytes",
        },
        Case {
            name: "negative-rate",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"limits": {"requestsPerSecond": -5}}}),
            message: "limits.requestsPerSecond must be positive",
        },
        Case {
            name: "zero-burst",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"limits": {"burst": 0}}}),
            message: "limits.burst must be positive",
        },
        Case {
            name: "burst-without-rate",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"limits": {"requestsPerSecond": null}}}),
            message: "limits.burst needs limits.requestsPerSecond",
        },
        Case {
            name: "signature-without-secret",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"signature": {"secretRef": null}}}),
            message: "signature.secretRef is required",
        },
        Case {
            name: "hmac-without-header",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"signature": {"header": null}}}),
            message: "signature.header is required for type hmac",
        },
        Case {
            name: "grace-period-not-a-duration",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"tokenRotation": {"gracePeriod": "5 minutes"}}}),
            message: "gracePeriod must be a duration such as 0s, 30s, 5m or 1h",
        },
        Case {
            name: "tolerance-not-a-duration",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"signature": {"tolerance": "-5m"}}}),
            message: "tolerance must be a duration",
        },
        Case {
            name: "dedup-window-not-a-duration",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"dedup": {"window": "1 hour"}}}),
            message: "dedup.window must be a duration",
        },
        Case {
            name: "two-sinks",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"sink": {"stdout": {}}}}),
            message: "sink must set exactly one of stdout, http or nats",
        },
        Case {
            name: "http-sink-bad-scheme",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"sink": {"http": {"url": "ftp://collector"}}}}),
            message: "sink.http.url must start with http:// or https://",
        },
        Case {
            name: "http-sink-bad-timeout",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"sink": {"http": {"timeout": "soon"}}}}),
            message: "sink.http.timeout must be a duration",
        },
        Case {
            name: "nats-sink-bad-url",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"sink": {"http": null, "nats": {"url": "http://nats", "subject": "events"}}}}),
            message: "sink.nats.url must start with nats:// or tls://",
        },
        Case {
            name: "nats-sink-empty-subject",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"sink": {"http": null, "nats": {"url": "nats://nats:4222", "subject": ""}}}}),
            message: "sink.nats.subject must not be empty",
        },
        Case {
            name: "previous-secret-without-expiry",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"signature": {"previousSecretRef": {"name": "old"}}}}),
            message: "signature.previousSecretRef and signature.previousSecretExpiresAt go together",
        },
        Case {
            name: "previous-secret-expiry-not-rfc3339",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"signature": {"previousSecretRef": {"name": "old"}, "previousSecretExpiresAt": "next tuesday"}}}),
            message: "signature.previousSecretExpiresAt must be an RFC 3339 time such as 2026-12-01T00:00:00Z",
        },
        Case {
            name: "previous-secret-is-the-current-one",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"signature": {"previousSecretRef": {"name": "s", "key": "k"}, "previousSecretExpiresAt": "2026-12-01T00:00:00Z"}}}),
            message: "signature.previousSecretRef must name another Secret or key than signature.secretRef",
        },
        Case {
            name: "http-sink-url-and-service",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"sink": {"http": {"serviceRef": {"name": "broker"}}}}}),
            message: "sink.http sets exactly one of url or serviceRef",
        },
        Case {
            name: "http-sink-neither-url-nor-service",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"sink": {"http": {"url": null}}}}),
            message: "sink.http sets exactly one of url or serviceRef",
        },
        Case {
            name: "service-ref-empty-name",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"sink": {"http": {"url": null, "serviceRef": {"name": ""}}}}}),
            message: "sink.http.serviceRef.name must name a Service",
        },
        Case {
            name: "service-ref-bad-port",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"sink": {"http": {"url": null, "serviceRef": {"name": "broker", "port": 70000}}}}}),
            message: "sink.http.serviceRef.port must be a port number from 1 to 65535",
        },
        Case {
            name: "service-ref-relative-path",
            valid: VALID_SOURCE,
            merge: json!({"spec": {"sink": {"http": {"url": null, "serviceRef": {"name": "broker", "path": "events"}}}}}),
            message: "sink.http.serviceRef.path must start with /",
        },
    ]
}

/// RFC 7386 JSON merge patch: null removes, objects merge, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn object(valid: &str, name: &str, patch: Option<&Value>) -> Value {
    let mut value: Value = serde_yaml::from_str(&valid.replace("NAME", name)).unwrap();
    if let Some(patch) = patch {
        merge(&mut value, patch);
    }
    value
}

/// Creates the object with the typed kube client; returns the API server's refusal, if any.
async fn create_typed(client: &kube::Client, ns: &str, value: Value) -> Result<(), kube::Error> {
    let pp = PostParams::default();
    match value["kind"].as_str() {
        Some("WebhookSource") => {
            let obj: WebhookSource = serde_json::from_value(value).unwrap();
            Api::<WebhookSource>::namespaced(client.clone(), ns)
                .create(&pp, &obj)
                .await
                .map(drop)
        }
        Some("Mapping") => {
            let obj: Mapping = serde_json::from_value(value).unwrap();
            Api::<Mapping>::namespaced(client.clone(), ns)
                .create(&pp, &obj)
                .await
                .map(drop)
        }
        other => panic!("unexpected kind {other:?}"),
    }
}

#[tokio::test]
async fn each_cel_rule_refuses_a_bad_object_with_its_message() {
    let client = support::client().await;
    let ns = support::namespace(&client).await;
    for case in cases() {
        // The unbroken object is accepted, so the refusal below is this rule's doing.
        let good = object(case.valid, &format!("{}-ok", case.name), None);
        create_typed(&client, &ns, good)
            .await
            .unwrap_or_else(|e| panic!("{}: the valid object was refused: {e}", case.name));

        let bad = object(case.valid, case.name, Some(&case.merge));
        match create_typed(&client, &ns, bad.clone()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{}: {status:?}", case.name);
                assert!(
                    status.message.contains(case.message),
                    "{}: expected {:?} in {:?}",
                    case.name,
                    case.message,
                    status.message
                );
            }
            other => panic!(
                "{}: expected a 422 from the API server, got {other:?}",
                case.name
            ),
        }

        // The same refusal, readable, where a person meets it: `kubectl apply`.
        let yaml = serde_yaml::to_string(&bad).unwrap();
        let out = support::kubectl(&["apply", "-n", &ns, "-f", "-"], Some(&yaml));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{}: kubectl apply accepted the bad object",
            case.name
        );
        assert!(
            stderr.contains(case.message),
            "{}: kubectl apply said {stderr:?}, expected {:?}",
            case.name,
            case.message
        );
    }
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns_and_the_category() {
    let client = support::client().await;
    let ns = support::namespace(&client).await;
    let source = object(
        VALID_SOURCE,
        "billing",
        Some(&serde_json::json!({"spec": {"displayName": "Billing (prod)"}})),
    );
    let mapping = object(
        VALID_MAPPING,
        "billing-paid",
        Some(&serde_json::json!({"spec": {"sourceRef": {"name": "billing"}}})),
    );
    create_typed(&client, &ns, source).await.unwrap();
    create_typed(&client, &ns, mapping).await.unwrap();

    let out = support::kubectl_ok(&["get", "webhooksources", "-n", &ns], None);
    let mut lines = out.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DISPLAY NAME",
            "ENABLED",
            "READY",
            "URL",
            "RECEIVED",
            "FAILED",
            "LAST EVENT",
            "AGE"
        ]
    );
    let row = lines.next().expect("one source listed");
    assert!(
        row.starts_with("billing ") && row.contains("Billing (prod)") && row.contains("true"),
        "{row}"
    );

    let out = support::kubectl_ok(&["get", "mappings", "-n", &ns], None);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "SOURCE", "EVENT", "READY", "MATCHED", "FAILED", "AGE"
        ]
    );

    // `kubectl get hookgate` lists both kinds through the category.
    let out = support::kubectl_ok(&["get", "hookgate", "-n", &ns, "-o", "name"], None);
    let mut names: Vec<&str> = out.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "mapping.hookgate.dev/billing-paid",
            "webhooksource.hookgate.dev/billing"
        ]
    );
}

/// A rule added to the types without a case above fails here, so every rule stays tested.
#[test]
fn every_cel_rule_in_the_crds_has_a_case() {
    let cases = cases();
    let crds = serde_json::to_value(hookgate::api::crds()).unwrap();
    let mut messages = Vec::new();
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                    out.extend(
                        rules
                            .iter()
                            .filter_map(|r| r["message"].as_str().map(String::from)),
                    );
                }
                map.values().for_each(|v| collect(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&crds, &mut messages);
    assert!(
        messages.len() >= 10,
        "expected the CRDs to carry CEL rules, found {messages:?}"
    );
    for message in messages {
        assert!(
            cases.iter().any(|c| message.contains(c.message)),
            "CEL rule {message:?} has no case in kube_api.rs"
        );
    }
}
