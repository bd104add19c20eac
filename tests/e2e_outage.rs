//! The API server goes away for 30 s while senders keep posting: the ingest keeps serving its
//! last routes, every acknowledged event reaches the sink, and status catches up afterwards.
//! This binary runs its own control plane, because it freezes the API server.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use hookgate::api::webhook_source::WebhookSource;
use serde_json::json;
use support::cluster::Cluster;

/// SIGSTOP on the API server: connections hang, as when a control plane is unreachable. The
/// process continues when this is dropped, even if the test fails.
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> Frozen {
        signal("-STOP", pid);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(which: &str, pid: i32) {
    let ok = Command::new("kill")
        .arg(which)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {which} {pid} failed");
}

#[tokio::test]
async fn an_api_server_outage_loses_no_acknowledged_event_and_status_catches_up() {
    let control_plane = support::private_control_plane();
    let c = Cluster::new().await;
    let ingest = c.ingest("a").await;
    let _operator = c.operator(&format!("http://{}", ingest.addr));
    support::kubectl_ok(
        &["apply", "-n", &c.ns, "-f", "-"],
        Some(
            r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: shop}
spec: {}
---
apiVersion: hookgate.dev/v1alpha1
kind: Mapping
metadata: {name: shop-orders}
spec:
  sourceRef: {name: shop}
  event: {name: Order, id: "{{id}}", externalId: "{{customer}}"}
"#,
        ),
    );
    c.wait_source("shop", "source has a URL", |s: &WebhookSource| {
        s.status.as_ref().is_some_and(|st| st.url.is_some())
    })
    .await;
    let url = c.url("shop").await;
    let warm = ingest
        .post_until_delivered(&url, &json!({"id": "warmup", "customer": "c1"}))
        .await as i64;

    let mut acknowledged = BTreeSet::from(["warmup".to_owned()]);
    let mut answered_otherwise = 0;
    {
        let _frozen = Frozen::new(control_plane.apiserver_pid());
        let start = Instant::now();
        let mut i = 0;
        while start.elapsed() < Duration::from_secs(30) {
            let id = format!("ord_{i}");
            let (code, body) = ingest.post(&url, &json!({"id": id, "customer": "c1"}));
            match code {
                200 => {
                    assert_eq!(body["status"], "delivered", "{body}");
                    acknowledged.insert(id);
                }
                _ => {
                    answered_otherwise += 1;
                    eprintln!("during the outage: {code} {body}");
                }
            }
            i += 1;
            // Pace the sender so the 30 s cover a steady stream rather than a burst.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (code, _) = support::http_get(&ingest.admin, "/readyz");
        assert_eq!(
            code, 200,
            "an ingest that has routes stays ready while the API server is away"
        );
    }
    println!(
        "outage: {} acknowledged, {answered_otherwise} answered otherwise",
        acknowledged.len()
    );
    assert_eq!(answered_otherwise, 0, "the last known route keeps serving");

    let delivered: BTreeSet<String> = ingest
        .delivered()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = acknowledged.difference(&delivered).collect();
    if !lost.is_empty() {
        // Enough to tell an empty sink output from a partial one when this fails.
        let size = std::fs::metadata(&ingest.events).map(|m| m.len());
        let logs = ingest.process.logs();
        let tail: Vec<&str> = logs.lines().rev().take(30).collect();
        eprintln!(
            "sink output {} ({size:?} bytes); ingest log tail:\n{}",
            ingest.events.display(),
            tail.join("\n")
        );
    }
    assert!(
        lost.is_empty(),
        "acknowledged but not at the sink: {lost:?}"
    );

    // Once the API server is back, the counters reach the total.
    // Every acknowledged request was received; warm-ups answered "ignored" were received too.
    let total = acknowledged.len() as i64;
    let received = total - 1 + warm;
    c.wait_source("shop", "status caught up", |s: &WebhookSource| {
        s.status
            .as_ref()
            .and_then(|st| st.counters.as_ref())
            .is_some_and(|k| k.received == received && k.delivered == total)
    })
    .await;
}
