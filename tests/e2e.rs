//! End to end on a real control plane: the operator and the ingest as processes, each under
//! the ServiceAccount and RBAC the chart ships, a sender posting over HTTP, kubectl reading.

mod support;

use std::time::Instant;

use hookgate::api::mapping::Mapping;
use hookgate::api::webhook_source::WebhookSource;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::cluster::Cluster;

const SOURCE: &str = r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: shop}
spec:
  displayName: Shop
"#;

const MAPPING: &str = r#"
apiVersion: hookgate.dev/v1alpha1
kind: Mapping
metadata: {name: shop-orders}
spec:
  sourceRef: {name: shop}
  when:
    - {path: "{{type}}", equals: order.created}
  event:
    name: Order Completed
    id: "{{id}}"
    email: "{{customer.email | lower}}"
    properties:
      fields: {total: "{{total}}"}
"#;

fn order(id: &str, email: Option<&str>) -> Value {
    let mut body = json!({"type": "order.created", "id": id, "total": 42.5, "customer": {}});
    if let Some(email) = email {
        body["customer"]["email"] = json!(email);
    }
    body
}

fn received(s: &WebhookSource) -> i64 {
    s.status
        .as_ref()
        .and_then(|st| st.counters.as_ref())
        .map_or(0, |c| c.received)
}

#[tokio::test]
async fn a_webhook_travels_from_apply_to_sink_and_status_through_rotate_disable_and_delete() {
    let c = Cluster::new().await;
    let ingest = c.ingest("a").await;
    let _operator = c.operator(&format!("http://{}", ingest.addr));

    support::kubectl_ok(
        &["apply", "-n", &c.ns, "-f", "-"],
        Some(&format!("{SOURCE}---{MAPPING}")),
    );
    c.wait_source("shop", "source Ready", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
    let url = c.url("shop").await;

    // The route reaches the ingest through the API within about a second.
    let warm = ingest
        .post_until_delivered(&url, &order("ord_1", Some("Jane@Example.com")))
        .await as i64;
    let delivered = support::eventually(5, "event at the sink", || {
        let events = ingest.delivered();
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(delivered[0]["id"], "ord_1");
    assert_eq!(delivered[0]["type"], "Order Completed");
    assert_eq!(
        delivered[0]["source"],
        format!("/namespaces/{}/webhooksources/shop", c.ns)
    );
    assert_eq!(delivered[0]["data"]["email"], "jane@example.com");

    // Counted and listed on the resource, with the identity masked.
    let source = c
        .wait_source("shop", "counted in status", |s| received(s) == 1)
        .await;
    let status = source.status.unwrap();
    assert_eq!(status.counters.as_ref().unwrap().delivered, 1);
    assert_eq!(status.recent_events.len() as i64, warm.min(10));
    assert_eq!(status.recent_events[0].event_id.as_deref(), Some("ord_1"));
    let identity = status.recent_events[0].identity.clone().unwrap_or_default();
    assert!(
        !identity.contains("jane@example.com") && !identity.is_empty(),
        "{identity}"
    );
    assert!(
        status
            .observed_fields
            .iter()
            .any(|f| f.path == "{{customer.email}}"),
        "{:?}",
        status.observed_fields
    );
    let table = support::kubectl_ok(&["get", "webhooksource", "shop", "-n", &c.ns], None);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[5], warm.to_string(), "RECEIVED column: {table}");

    // Rotate: the old URL answers 404 within 2 s, the new one works.
    let rotated = Instant::now();
    c.sources()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"hookgate.dev/rotate-token": "now"}}}),
            ),
        )
        .await
        .unwrap();
    support::eventually(2, "old URL refused after rotation", || {
        (ingest.post(&url, &order("ord_2", Some("a@b.co"))).0 == 404).then_some(())
    })
    .await;
    println!("rotation in force after {:?}", rotated.elapsed());
    let new_url = c.url("shop").await;
    assert_ne!(new_url, url);
    support::eventually(5, "new URL accepted", || {
        (ingest.post(&new_url, &order("ord_3", Some("a@b.co"))).0 == 200).then_some(())
    })
    .await;

    // Disable: 503 with nothing delivered; enable: 200 again.
    c.sources()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"enabled": false}})),
        )
        .await
        .unwrap();
    support::eventually(5, "disabled answers 503", || {
        (ingest.post(&new_url, &order("ord_4", Some("a@b.co"))).0 == 503).then_some(())
    })
    .await;
    let before = ingest.delivered().len();
    let (code, body) = ingest.post(&new_url, &order("ord_4b", Some("a@b.co")));
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"]["code"], "source_disabled", "{body}");
    assert_eq!(
        ingest.delivered().len(),
        before,
        "a disabled source delivers nothing"
    );
    c.sources()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"enabled": true}})),
        )
        .await
        .unwrap();
    support::eventually(5, "enabled answers 200", || {
        (ingest.post(&new_url, &order("ord_5", Some("a@b.co"))).0 == 200).then_some(())
    })
    .await;

    // A payload the mapping cannot give an identity to: 422, and the error on the Mapping.
    let (code, body) = ingest.post(&new_url, &order("ord_6", None));
    assert_eq!(code, 422, "{body}");
    let mapping = support::wait_for(
        &c.mappings(),
        "shop-orders",
        30,
        "mapping error in status",
        |m: &Mapping| {
            m.status
                .as_ref()
                .is_some_and(|s| s.failed == Some(1) && !s.recent_errors.is_empty())
        },
    )
    .await;
    let error = &mapping.status.unwrap().recent_errors[0];
    assert!(error.message.contains("identity"), "{}", error.message);
    assert!(
        mapping
            .metadata
            .managed_fields
            .unwrap()
            .iter()
            .any(|f| f.manager.as_deref() == Some("hookgate.dev/ingest"))
    );

    // Delete: the URL is gone.
    c.sources()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    support::eventually(5, "deleted source answers 404", || {
        (ingest.post(&new_url, &order("ord_7", Some("a@b.co"))).0 == 404).then_some(())
    })
    .await;

    let logs = ingest.process.logs();
    for secret in [&url, &new_url] {
        let token = &secret[secret.find("/h/").unwrap() + 3..];
        assert!(
            !logs.contains(token),
            "a token appeared in the ingest's logs"
        );
    }
    let (_, metrics) = support::http_get(&ingest.admin, "/metrics");
    assert!(!metrics.contains(&new_url[new_url.find("/h/").unwrap() + 3..]));
}

/// Applies the `shop` source with `mapping`; returns the source's URL once it has one.
async fn apply_shop(c: &Cluster, mapping: &str) -> String {
    support::kubectl_ok(
        &["apply", "-n", &c.ns, "-f", "-"],
        Some(&format!("{SOURCE}---{mapping}")),
    );
    c.wait_source("shop", "source URL", |s| {
        s.status.as_ref().is_some_and(|st| st.url.is_some())
    })
    .await;
    c.url("shop").await
}

#[tokio::test]
async fn two_ingest_replicas_count_every_request_exactly_once() {
    let c = Cluster::new().await;
    let a = c.ingest("a").await;
    let b = c.ingest("b").await;
    let _operator = c.operator(&format!("http://{}", a.addr));
    let url = apply_shop(&c, MAPPING).await;
    let mut warm = 0;
    for ingest in [&a, &b] {
        warm += ingest
            .post_until_delivered(&url, &order("warmup", Some("w@x.io")))
            .await as i64;
    }

    // Warm-up requests are counted too, then 40 more spread over both replicas.
    let n = 40;
    for i in 0..n {
        let ingest = if i % 2 == 0 { &a } else { &b };
        let (code, body) = ingest.post(&url, &order(&format!("ord_{i}"), Some("p@q.io")));
        assert_eq!(code, 200, "{body}");
    }
    let total = n + warm;
    let source = c
        .wait_source("shop", "both replicas' counts summed", |s| {
            received(s) == total
        })
        .await;
    let counters = source.status.unwrap().counters.unwrap();
    // "warmup" was delivered by a, then acknowledged as a duplicate id... or delivered by b:
    // each replica deduplicates on its own, so the two warm-ups may both deliver.
    // Warm-ups answered before the mapping reached a replica were ignored.
    assert_eq!(
        counters.delivered + counters.duplicates + counters.ignored,
        total
    );
    assert_eq!(
        a.delivered().len() + b.delivered().len(),
        counters.delivered as usize
    );
    // Each replica writes the mapping right after the source, so it may trail by a moment.
    let expected = total - counters.ignored;
    support::wait_for(
        &c.mappings(),
        "shop-orders",
        30,
        "mapping matched summed",
        |m: &Mapping| m.status.as_ref().and_then(|s| s.matched) == Some(expected),
    )
    .await;

    // The operator's condition survived both replicas' writes.
    let ready = c.sources().get("shop").await.unwrap().status.unwrap();
    assert!(
        ready
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "{ready:?}"
    );
}

#[tokio::test]
async fn every_event_of_a_batch_is_listed_in_the_sources_status() {
    let c = Cluster::new().await;
    let ingest = c.ingest("a").await;
    let _operator = c.operator(&format!("http://{}", ingest.addr));
    let batch_mapping = r#"
apiVersion: hookgate.dev/v1alpha1
kind: Mapping
metadata: {name: shop-batch}
spec:
  sourceRef: {name: shop}
  forEach: "{{orders}}"
  event:
    name: Order Completed
    id: "{{$item.id}}"
    externalId: "{{$item.customer}}"
"#;
    let url = apply_shop(&c, batch_mapping).await;
    let ids = ["b_1", "b_2", "b_3"];
    let orders: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "customer": "cus_9"}))
        .collect();
    ingest
        .post_until_delivered(&url, &json!({ "orders": orders }))
        .await;

    // The status writer merges what it holds with what is stored: the batch's events share
    // one request, and each is listed.
    let source = c
        .wait_source("shop", "the batch in recentEvents", |s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.recent_events.iter().any(|e| e.outcome == "delivered"))
        })
        .await;
    let mut listed: Vec<String> = source
        .status
        .unwrap()
        .recent_events
        .into_iter()
        .filter(|e| e.outcome == "delivered")
        .filter_map(|e| e.event_id)
        .collect();
    listed.sort();
    assert_eq!(listed, ids);
}

/// Runs `kubectl hookgate ...` with the binary on PATH as `kubectl-hookgate`, as a person who
/// installed the plugin would; returns stdout.
fn kubectl_hookgate(dir: &std::path::Path, args: &[&str]) -> String {
    let plugin = dir.join("kubectl-hookgate");
    if !plugin.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hookgate"), &plugin).unwrap();
    }
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("kubectl")
        .arg("hookgate")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", &support::control_plane().kubeconfig)
        .output()
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl hookgate {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn url_events_and_rotate_work_as_a_kubectl_plugin() {
    let c = Cluster::new().await;
    let ingest = c.ingest("a").await;
    let _operator = c.operator(&format!("http://{}", ingest.addr));
    support::kubectl_ok(
        &["apply", "-n", &c.ns, "-f", "-"],
        Some(&format!("{SOURCE}---{MAPPING}")),
    );
    c.wait_source("shop", "source has a URL", |s| {
        s.status.as_ref().is_some_and(|st| st.url.is_some())
    })
    .await;

    let url = kubectl_hookgate(&c.dir.0, &["url", "shop", "-n", &c.ns]);
    let url = url.trim().to_owned();
    assert_eq!(url, c.url("shop").await);
    let warm = ingest
        .post_until_delivered(&url, &order("ord_v1", Some("v@w.io")))
        .await as i64;
    c.wait_source("shop", "counted", |s| received(s) == warm)
        .await;
    let table = kubectl_hookgate(&c.dir.0, &["events", "shop", "-n", &c.ns]);
    assert!(
        table.contains(&format!("received {warm}  delivered 1")),
        "{table}"
    );
    assert!(
        table.contains("ord_v1") && table.contains("delivered"),
        "{table}"
    );
    assert!(!table.contains("v@w.io"), "identities are masked: {table}");

    // A Mapping proposed from the shape the source learned: valid, and it compiles.
    let yaml = kubectl_hookgate(&c.dir.0, &["suggest", "shop", "-n", &c.ns]);
    let suggested: hookgate::api::Mapping =
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"));
    assert_eq!(suggested.spec.source_ref.name, "shop");
    hookgate::mapping::CompiledMapping::compile("suggested", &suggested.spec).unwrap();
    support::kubectl_ok(
        &["apply", "-n", &c.ns, "--dry-run=server", "-f", "-"],
        Some(&yaml),
    );

    let new_url = kubectl_hookgate(&c.dir.0, &["rotate", "shop", "-n", &c.ns]);
    let new_url = new_url.trim().to_owned();
    assert_ne!(new_url, url);
    assert_eq!(new_url, c.url("shop").await);
    support::eventually(2, "old URL refused after rotate", || {
        (ingest.post(&url, &order("ord_v2", Some("v@w.io"))).0 == 404).then_some(())
    })
    .await;
    assert_eq!(
        ingest.post(&new_url, &order("ord_v3", Some("v@w.io"))).0,
        200
    );
}

/// Posts `body` to the ingest signed the GitHub way with `secret`; returns (status, body).
fn post_signed(
    ingest: &support::cluster::Ingest,
    url: &str,
    body: &Value,
    secret: &str,
) -> (u16, String) {
    let body = body.to_string();
    let headers = hookgate::ingest::verify::sign(&hookgate::ingest::verify::SignRequest {
        scheme: hookgate::api::webhook_source::SignatureScheme::Github,
        secret,
        body: body.as_bytes(),
        now_unix: 0,
        message_id: "",
        header: None,
        algorithm: None,
        encoding: None,
        prefix: None,
    })
    .unwrap();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let path = &url[url.find("/h/").expect("a webhook URL")..];
    support::http_post(&ingest.addr, path, &body, &headers)
}

fn condition_of(s: &WebhookSource, type_: &str) -> Option<(String, String)> {
    s.status.as_ref().and_then(|st| {
        st.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.reason.clone(), c.message.clone()))
    })
}

#[tokio::test]
async fn a_signing_secret_rotation_window_accepts_both_secrets_until_it_ends_then_only_the_new_one()
{
    const OLD: &str = "old-signing-secret-4f1d9a";
    const NEW: &str = "new-signing-secret-b72c0e";
    let c = Cluster::new().await;
    let ingest = c.ingest("a").await;
    let operator = c.operator(&format!("http://{}", ingest.addr));
    let source = r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: shop}
spec:
  signature: {type: github, secretRef: {name: signing-old}}
"#;
    let secrets = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: signing-old}}
stringData: {{secret: {OLD}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: signing-new}}
stringData: {{secret: {NEW}}}
"#
    );
    support::kubectl_ok(
        &["apply", "-n", &c.ns, "-f", "-"],
        Some(&format!("{secrets}---{source}---{MAPPING}")),
    );
    c.wait_source("shop", "source Ready", |s| {
        condition_of(s, "Ready").is_some_and(|(r, _)| r == "Serving")
    })
    .await;
    let url = c.url("shop").await;
    let body = order("ord_sig", Some("a@b.co"));
    support::eventually(15, "the old secret verifies before the rotation", || {
        (post_signed(&ingest, &url, &body, OLD).0 == 200).then_some(())
    })
    .await;
    assert_eq!(post_signed(&ingest, &url, &body, NEW).0, 401);

    // The rotation, as it would be committed to Git: the new Secret current, the old one
    // accepted until an absolute time.
    let expires = k8s_openapi::jiff::Timestamp::from_second(
        k8s_openapi::jiff::Timestamp::now().as_second() + 12,
    )
    .unwrap();
    support::kubectl_ok(
        &["apply", "-n", &c.ns, "-f", "-"],
        Some(&format!(
            r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {{name: shop}}
spec:
  signature:
    type: github
    secretRef: {{name: signing-new}}
    previousSecretRef: {{name: signing-old}}
    previousSecretExpiresAt: "{expires}"
"#
        )),
    );
    support::eventually(
        5,
        "the new secret verifies once the rotation is in force",
        || (post_signed(&ingest, &url, &body, NEW).0 == 200).then_some(()),
    )
    .await;
    let (code, reply) = post_signed(&ingest, &url, &body, OLD);
    assert_eq!(code, 200, "the old secret within the window: {reply}");
    assert!(
        k8s_openapi::jiff::Timestamp::now() < expires,
        "the window must still be open here; the test machine is too slow for a 12 s window"
    );

    let during = c
        .wait_source("shop", "status shows the window", |s| {
            s.status
                .as_ref()
                .and_then(|st| st.previous_signing_secret_expires_at.as_ref())
                .is_some_and(|t| t.0 == expires)
        })
        .await;
    let (reason, message) = condition_of(&during, "SignatureReady").unwrap();
    assert_eq!(reason, "RotationWindow");
    assert!(
        message.contains("signing-old") && message.contains(&expires.to_string()),
        "{message}"
    );

    // No spec change from here: the operator closes the window on time by itself.
    let refused_at = support::eventually(30, "the old secret refused after the window", || {
        let (code, reply) = post_signed(&ingest, &url, &body, OLD);
        assert!(code == 200 || code == 401, "{code}: {reply}");
        (code == 401).then(k8s_openapi::jiff::Timestamp::now)
    })
    .await;
    assert!(
        refused_at >= expires,
        "the old secret was refused at {refused_at}, before the window's end {expires}"
    );
    println!(
        "old signing secret refused {} ms after the window's end",
        refused_at.duration_since(expires).as_millis()
    );
    let (code, reply) = post_signed(&ingest, &url, &body, NEW);
    assert_eq!(code, 200, "the new secret after the window: {reply}");

    let after = c
        .wait_source("shop", "status shows the window closed", |s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.previous_signing_secret_expires_at.is_none())
                && condition_of(s, "SignatureReady").is_some_and(|(r, _)| r == "SecretFound")
        })
        .await;
    let (_, message) = condition_of(&after, "SignatureReady").unwrap();
    assert!(message.contains("stopped being accepted"), "{message}");
    let events: Vec<(String, String)> =
        kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(c.client.clone(), &c.ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("shop"))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect();
    for reason in [
        "PreviousSigningSecretAccepted",
        "PreviousSigningSecretDropped",
    ] {
        assert!(
            events.iter().any(|(r, _)| r == reason),
            "no {reason} Event in {events:?}"
        );
    }

    // The secrets themselves appear nowhere a person or a log collector reads.
    let status = serde_json::to_string(&after.status).unwrap();
    let notes = format!("{events:?}");
    for (what, text) in [
        ("status", status),
        ("Events", notes),
        ("operator log", operator.logs()),
        ("ingest log", ingest.process.logs()),
    ] {
        for secret in [OLD, NEW] {
            assert!(!text.contains(secret), "a signing secret in the {what}");
        }
    }
}
