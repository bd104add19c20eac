//! The operator against a real control plane, running as a process under a ServiceAccount
//! bound to exactly the RBAC the chart ships.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use hookgate::api::mapping::Mapping;
use hookgate::api::webhook_source::WebhookSource;
use hookgate::route::{ROUTE_KEY, Route, token_sha256_hex};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::{Process, TempDir};

const PUBLIC_URL: &str = "https://hooks.test.example";

/// One test's world: a namespace that is also the operator's own, the chart's RBAC in it, and
/// a kubeconfig for the operator's ServiceAccount.
struct World {
    client: Client,
    ns: String,
    dir: TempDir,
    kubeconfig: PathBuf,
}

impl World {
    async fn new() -> World {
        let client = support::client().await;
        let ns = support::namespace(&client).await;
        let rbac = support::render_chart_file("operator-rbac.yaml", &ns, &ns);
        support::kubectl_ok(&["apply", "-f", "-"], Some(&rbac));
        let dir = TempDir::new("hookgate-operator-test");
        let kubeconfig =
            support::service_account_kubeconfig(&ns, &format!("{ns}-operator"), &dir.0);
        World {
            client,
            ns,
            dir,
            kubeconfig,
        }
    }

    fn operator(&self, instance: &str) -> Process {
        let log = self.dir.0.join(format!("operator-{instance}.log"));
        Process::start(
            &[
                "operator",
                "--namespace",
                &self.ns,
                "--watch-namespace",
                &self.ns,
                "--public-url",
                PUBLIC_URL,
                "--metrics-listen",
                "127.0.0.1:0",
                "--identity",
                instance,
                "--lease-duration",
                "4",
                "--secret-resync",
                "1s",
                "--ingest-image",
                "registry.example/hookgate:test",
            ],
            &self.kubeconfig,
            log,
        )
    }

    fn sources(&self) -> Api<WebhookSource> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn mappings(&self) -> Api<Mapping> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create(&self, yaml: &str) {
        let value: Value = serde_yaml::from_str(yaml).unwrap();
        match value["kind"].as_str() {
            Some("WebhookSource") => create_in(&self.sources(), value).await,
            Some("Mapping") => create_in(&self.mappings(), value).await,
            Some("Secret") => create_in(&self.secrets(), value).await,
            other => panic!("unexpected kind {other:?}"),
        }
    }

    async fn merge_source(&self, name: &str, patch: Value) {
        self.sources()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn ready_mapping(&self, name: &str) -> Mapping {
        support::wait_for(
            &self.mappings(),
            name,
            30,
            "mapping Ready",
            |m: &Mapping| {
                is_ready(
                    m.status.as_ref().map(|s| s.conditions.as_slice()),
                    m.metadata.generation,
                )
            },
        )
        .await
    }

    async fn ready_source(&self, name: &str) -> WebhookSource {
        support::wait_for(
            &self.sources(),
            name,
            30,
            "source Ready",
            |s: &WebhookSource| {
                is_ready(
                    s.status.as_ref().map(|s| s.conditions.as_slice()),
                    s.metadata.generation,
                )
            },
        )
        .await
    }

    async fn token(&self, source: &str) -> String {
        let secret = self
            .secrets()
            .get(&format!("{source}-webhook-token"))
            .await
            .unwrap();
        String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap()
    }

    fn route_api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn route_name(&self, source: &str) -> String {
        format!("route-{}-{source}", self.ns)
    }

    async fn route(&self, source: &str) -> Route {
        let secret = self
            .route_api()
            .get(&self.route_name(source))
            .await
            .unwrap();
        parse_route(&secret)
    }

    async fn wait_route(&self, source: &str, what: &str, check: impl Fn(&Route) -> bool) -> Route {
        let secret = support::wait_for(
            &self.route_api(),
            &self.route_name(source),
            30,
            what,
            move |s: &Secret| check(&parse_route(s)),
        )
        .await;
        parse_route(&secret)
    }

    async fn events_for(&self, name: &str) -> Vec<Event> {
        Api::<Event>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }
}

async fn create_in<K>(api: &Api<K>, value: Value)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

/// The source's Ready condition carries this reason (whatever its status).
fn ready_reason_is(source: &WebhookSource, reason: &str) -> bool {
    source.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == reason)
    })
}

fn parse_route(secret: &Secret) -> Route {
    serde_json::from_slice(&secret.data.as_ref().unwrap()[ROUTE_KEY].0).unwrap()
}

fn is_ready(
    conditions: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
    generation: Option<i64>,
) -> bool {
    conditions.is_some_and(|cs| {
        cs.iter().any(|c| {
            c.type_ == "Ready" && c.status == "True" && c.observed_generation == generation
        })
    })
}

fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
}

const SOURCE: &str = r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: shop}
spec:
  displayName: Shop (prod)
"#;

const MAPPING: &str = r#"
apiVersion: hookgate.dev/v1alpha1
kind: Mapping
metadata: {name: shop-orders}
spec:
  sourceRef: {name: shop}
  event:
    name: Order
    email: "{{customer.email | lower}}"
"#;

#[tokio::test]
async fn token_is_created_once_and_survives_restart_and_rename() {
    let w = World::new().await;
    let mut operator = w.operator("a");
    w.create(SOURCE).await;
    let source = w.ready_source("shop").await;
    let token = w.token("shop").await;
    assert_eq!(token.len(), 43, "32 random bytes, URL-safe base64");

    let status = source.status.unwrap();
    let url = status.url.unwrap();
    assert_eq!(
        url,
        format!("{PUBLIC_URL}/h/****{}", &token[token.len() - 4..])
    );
    assert_eq!(
        status.token_secret_name.as_deref(),
        Some("shop-webhook-token")
    );
    let secret = w.secrets().get("shop-webhook-token").await.unwrap();
    assert_eq!(
        String::from_utf8(secret.data.as_ref().unwrap()["url"].0.clone()).unwrap(),
        format!("{PUBLIC_URL}/h/{token}")
    );
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("WebhookSource", "shop")
    );
    let route = w.route("shop").await;
    assert_eq!(route.tokens.len(), 1);
    assert_eq!(route.tokens[0].sha256, token_sha256_hex(&token));
    assert!(route.enabled);

    // A new operator process, then a rename: neither changes the token.
    operator.kill();
    let _operator = w.operator("b");
    w.merge_source("shop", json!({"spec": {"displayName": "Shop (renamed)"}}))
        .await;
    let renamed = support::wait_for(
        &w.sources(),
        "shop",
        30,
        "rename reconciled",
        |s: &WebhookSource| {
            is_ready(
                s.status.as_ref().map(|s| s.conditions.as_slice()),
                s.metadata.generation,
            ) && s.metadata.generation == Some(2)
        },
    )
    .await;
    assert_eq!(w.token("shop").await, token);
    assert_eq!(renamed.status.unwrap().url.unwrap(), url);
    assert_eq!(
        w.route("shop").await.tokens[0].sha256,
        token_sha256_hex(&token)
    );

    let created = w.events_for("shop").await;
    assert_eq!(
        created
            .iter()
            .filter(|e| e.reason.as_deref() == Some("TokenCreated"))
            .count(),
        1,
        "exactly one TokenCreated Event: {created:?}"
    );
    // The operator's own metrics count the reconciles, with bounded labels only.
    let addr = support::log_field(&_operator.logs(), "serving /metrics", "address")
        .expect("metrics address logged");
    let (code, metrics) = support::http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    let reconciles = metrics
        .lines()
        .find(|l| l.starts_with("hookgate_operator_reconciles_total{kind=\"WebhookSource\"}"))
        .unwrap_or_else(|| panic!("no reconcile counter in {metrics}"));
    assert!(
        reconciles
            .split_whitespace()
            .last()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 1.0,
        "{reconciles}"
    );
    assert!(metrics.contains("hookgate_operator_leader 1"), "{metrics}");
    assert!(!metrics.contains(&token));
    assert_eq!(support::http_get(&addr, "/healthz").0, 200);

    for log in [operator.logs(), _operator.logs()] {
        assert!(
            !log.contains(&token),
            "the token appeared in the operator's logs"
        );
    }
}

#[tokio::test]
async fn bring_your_own_token_is_used_and_never_written() {
    let w = World::new().await;
    let _operator = w.operator("a");
    w.create(
        r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: byo}
spec:
  tokenSecretRef: {name: my-token, key: value}
"#,
    )
    .await;
    let waiting = support::wait_for(
        &w.sources(),
        "byo",
        30,
        "missing secret reported",
        |s: &WebhookSource| ready_reason_is(s, "TokenSecretNotFound"),
    )
    .await;
    assert!(waiting.status.unwrap().url.is_none());
    assert!(
        w.route_api()
            .get_opt(&w.route_name("byo"))
            .await
            .unwrap()
            .is_none(),
        "no route without a token"
    );

    w.create(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: my-token}
stringData: {value: "my-very-own-token-0123456789"}
"#,
    )
    .await;
    let ready = w.ready_source("byo").await;
    assert_eq!(
        ready.status.unwrap().url.unwrap(),
        format!("{PUBLIC_URL}/h/****6789")
    );
    let route = w.route("byo").await;
    assert_eq!(
        route.tokens[0].sha256,
        token_sha256_hex("my-very-own-token-0123456789")
    );
    assert!(
        w.secrets()
            .get_opt("byo-webhook-token")
            .await
            .unwrap()
            .is_none()
    );
    let mine = w.secrets().get("my-token").await.unwrap();
    assert!(
        mine.metadata.owner_references.is_none(),
        "the user's Secret is not adopted"
    );
}

#[tokio::test]
async fn rotation_without_grace_replaces_the_token_at_once() {
    let w = World::new().await;
    let _operator = w.operator("a");
    w.create(SOURCE).await;
    w.ready_source("shop").await;
    let old = w.token("shop").await;

    w.merge_source(
        "shop",
        json!({"metadata": {"annotations": {"hookgate.dev/rotate-token": "r1"}}}),
    )
    .await;
    let new_hash = w
        .wait_route("shop", "route has the new token only", |r| {
            r.tokens.len() == 1 && r.tokens[0].sha256 != token_sha256_hex(&old)
        })
        .await
        .tokens[0]
        .sha256
        .clone();
    let new = w.token("shop").await;
    assert_ne!(new, old);
    assert_eq!(new_hash, token_sha256_hex(&new));
    let secret = w.secrets().get("shop-webhook-token").await.unwrap();
    assert!(!secret.data.unwrap().contains_key("previous-token"));
    let source = support::wait_for(
        &w.sources(),
        "shop",
        30,
        "status shows the new URL",
        |s: &WebhookSource| {
            s.status.as_ref().and_then(|st| st.url.clone())
                == Some(format!("{PUBLIC_URL}/h/****{}", &new[39..]))
        },
    )
    .await;
    assert!(source.status.unwrap().token_rotated_at.is_some());
    let events = w.events_for("shop").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("TokenRotated")),
        "{events:?}"
    );

    // The same annotation value again (a resync, a restart) rotates nothing.
    w.merge_source("shop", json!({"spec": {"displayName": "touch"}}))
        .await;
    support::wait_for(
        &w.sources(),
        "shop",
        30,
        "touch reconciled",
        |s: &WebhookSource| {
            is_ready(
                s.status.as_ref().map(|s| s.conditions.as_slice()),
                s.metadata.generation,
            )
        },
    )
    .await;
    assert_eq!(w.token("shop").await, new);
}

#[tokio::test]
async fn rotation_with_grace_keeps_the_previous_token_until_it_expires() {
    let w = World::new().await;
    let _operator = w.operator("a");
    w.create(
        r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: graceful}
spec:
  tokenRotation: {gracePeriod: 4s}
"#,
    )
    .await;
    w.ready_source("graceful").await;
    let old = w.token("graceful").await;
    w.merge_source(
        "graceful",
        json!({"metadata": {"annotations": {"hookgate.dev/rotate-token": "r1"}}}),
    )
    .await;
    let during = w
        .wait_route("graceful", "route has two tokens", |r| r.tokens.len() == 2)
        .await;
    let new = w.token("graceful").await;
    assert_eq!(during.tokens[0].sha256, token_sha256_hex(&new));
    assert_eq!(during.tokens[0].expires_at, None);
    assert_eq!(during.tokens[1].sha256, token_sha256_hex(&old));
    let expires = during.tokens[1]
        .expires_at
        .expect("the previous token expires");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        expires > now - 1 && expires <= now + 5,
        "expiry {expires} vs now {now}"
    );

    // The operator requeues itself for the expiry and publishes the route without it.
    let after = w
        .wait_route(
            "graceful",
            "previous token dropped after the grace period",
            |r| r.tokens.len() == 1,
        )
        .await;
    assert_eq!(after.tokens[0].sha256, token_sha256_hex(&new));
}

#[tokio::test]
async fn disabling_reaches_the_route_and_the_ready_reason() {
    let w = World::new().await;
    let _operator = w.operator("a");
    w.create(SOURCE).await;
    w.ready_source("shop").await;
    w.merge_source("shop", json!({"spec": {"enabled": false}}))
        .await;
    w.wait_route("shop", "route disabled", |r| !r.enabled).await;
    let source = w.ready_source("shop").await;
    assert_eq!(
        condition(&source.status.unwrap().conditions, "Ready").reason,
        "Disabled"
    );
    let out = support::kubectl_ok(&["get", "whs", "shop", "-n", &w.ns, "--no-headers"], None);
    let columns: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        &columns[..5],
        ["shop", "Shop", "(prod)", "false", "True"],
        "{out}"
    );
}

#[tokio::test]
async fn delete_withdraws_the_route_and_the_token_secret_is_collected() {
    let w = World::new().await;
    let _operator = w.operator("a");
    w.create(SOURCE).await;
    let source = w.ready_source("shop").await;
    assert!(
        source
            .finalizers()
            .iter()
            .any(|f| f == "hookgate.dev/cleanup")
    );
    w.route("shop").await;

    w.sources()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_gone(&w.sources(), "shop", 30, "source deleted").await;
    // The finalizer ran first, so the route is already gone when the object is.
    assert!(
        w.route_api()
            .get_opt(&w.route_name("shop"))
            .await
            .unwrap()
            .is_none()
    );
    // The real garbage collector (kube-controller-manager) removes the owned token Secret.
    support::wait_gone(
        &w.secrets(),
        "shop-webhook-token",
        60,
        "token Secret collected",
    )
    .await;
}

#[tokio::test]
async fn an_invalid_mapping_reports_the_position_and_recovers_when_fixed() {
    let w = World::new().await;
    let _operator = w.operator("a");
    // The mapping first, its source later: SourceFound follows.
    w.create(MAPPING).await;
    let orphan = support::wait_for(
        &w.mappings(),
        "shop-orders",
        30,
        "SourceFound=False",
        |m: &Mapping| {
            m.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "SourceFound" && c.status == "False")
            })
        },
    )
    .await;
    assert!(
        condition(&orphan.status.unwrap().conditions, "SourceFound")
            .message
            .contains("shop")
    );

    w.create(SOURCE).await;
    w.ready_source("shop").await;
    w.ready_mapping("shop-orders").await;
    w.wait_route("shop", "route carries the mapping", |r| {
        r.mappings.len() == 1
    })
    .await;

    // A typo in a filter: Ready=False with the field and position, and the route drops it.
    w.mappings()
        .patch(
            "shop-orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"event": {"email": "{{customer.email | lowr}}"}}})),
        )
        .await
        .unwrap();
    let broken = support::wait_for(
        &w.mappings(),
        "shop-orders",
        30,
        "mapping not Ready",
        |m: &Mapping| {
            m.status.as_ref().is_some_and(|s| {
                s.observed_generation == m.metadata.generation
                    && s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "False")
            })
        },
    )
    .await;
    let ready = condition(&broken.status.as_ref().unwrap().conditions, "Ready").clone();
    assert_eq!(ready.reason, "InvalidTemplate");
    assert!(ready.message.contains("lowr"), "{}", ready.message);
    assert!(ready.message.contains("position"), "{}", ready.message);
    assert!(ready.message.contains("event.email"), "{}", ready.message);
    w.wait_route("shop", "route drops the broken mapping", |r| {
        r.mappings.is_empty()
    })
    .await;
    let source = w.sources().get("shop").await.unwrap();
    assert_eq!(
        source.status.unwrap().mappings,
        ["shop-orders"],
        "still attached, just not served"
    );

    w.mappings()
        .patch(
            "shop-orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"event": {"email": "{{customer.email | lower}}"}}})),
        )
        .await
        .unwrap();
    support::wait_for(
        &w.mappings(),
        "shop-orders",
        30,
        "mapping Ready again",
        |m: &Mapping| {
            is_ready(
                m.status.as_ref().map(|s| s.conditions.as_slice()),
                m.metadata.generation,
            )
        },
    )
    .await;
    w.wait_route("shop", "route carries the fixed mapping", |r| {
        r.mappings.len() == 1
    })
    .await;
    let events = w.events_for("shop-orders").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("InvalidTemplate")),
        "{events:?}"
    );

    // The source going away is noticed by its mappings too.
    w.sources()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_for(
        &w.mappings(),
        "shop-orders",
        30,
        "SourceFound=False after delete",
        |m: &Mapping| {
            m.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "SourceFound" && c.status == "False")
            })
        },
    )
    .await;
}

/// The operator reads sources, mappings and its token Secrets from its watches, not the API
/// server. That must not cost correctness: a mapping created with its source reaches the route,
/// a deleted one leaves it (its Delete event is all that tells the source), and a token Secret
/// the label-selected watch cannot see is adopted with its token, not replaced. And a source
/// created with its mapping records one Event (TokenCreated), not one per object and step.
#[tokio::test]
async fn reads_served_from_the_watches_stay_correct_and_creation_records_one_event() {
    let w = World::new().await;
    // From before the label existed, or hand-made: invisible to the watch.
    w.create(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: kept-webhook-token}
stringData: {token: kept-token-0123456789}
"#,
    )
    .await;
    let _operator = w.operator("a");
    w.create(SOURCE).await;
    w.create(MAPPING).await;
    w.create(
        r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: kept}
spec:
  displayName: Kept
"#,
    )
    .await;

    w.wait_route("shop", "route carries the mapping created with it", |r| {
        r.mappings.len() == 1
    })
    .await;
    w.ready_mapping("shop-orders").await;

    w.ready_source("kept").await;
    assert_eq!(w.token("kept").await, "kept-token-0123456789");
    assert_eq!(
        w.route("kept").await.tokens[0].sha256,
        token_sha256_hex("kept-token-0123456789")
    );
    let adopted = w.secrets().get("kept-webhook-token").await.unwrap();
    assert_eq!(
        adopted
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("hookgate"),
        "labelled, so the watch sees it from now on"
    );

    w.mappings()
        .delete("shop-orders", &DeleteParams::default())
        .await
        .unwrap();
    w.wait_route("shop", "route drops the deleted mapping", |r| {
        r.mappings.is_empty()
    })
    .await;
    support::wait_for(
        &w.sources(),
        "shop",
        30,
        "status lists no mapping",
        |s: &WebhookSource| s.status.as_ref().is_some_and(|st| st.mappings.is_empty()),
    )
    .await;

    // Checked after the source's later reconcile (the mapping's deletion), which cannot start
    // before its first one, Events included, was done.
    let reasons = |events: Vec<Event>| -> Vec<String> {
        events.into_iter().filter_map(|e| e.reason).collect()
    };
    assert_eq!(reasons(w.events_for("shop").await), ["TokenCreated"]);
    assert_eq!(
        reasons(w.events_for("shop-orders").await),
        Vec::<String>::new()
    );
    assert_eq!(
        reasons(w.events_for("kept").await),
        Vec::<String>::new(),
        "an adopted token is not a created one"
    );
}

#[tokio::test]
async fn of_two_operators_only_the_leader_acts_and_the_other_takes_over() {
    let w = World::new().await;
    let mut first = w.operator("first");
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns);
    support::wait_for(
        &leases,
        "hookgate-operator",
        30,
        "first holds the lease",
        |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some("first"),
    )
    .await;
    let second = w.operator("second");
    w.create(SOURCE).await;
    w.ready_source("shop").await;
    let status_writers: BTreeMap<String, String> = w
        .sources()
        .get("shop")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f.subresource.as_deref() == Some("status"))
        .map(|f| {
            (
                f.manager.unwrap_or_default(),
                f.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        status_writers.keys().collect::<Vec<_>>(),
        ["hookgate.dev/operator"]
    );
    assert!(
        !second.logs().contains("became the leader"),
        "the second replica must not lead while the first holds the lease"
    );
    assert!(!second.logs().contains("reconciled WebhookSource"));

    first.kill();
    support::wait_for(
        &leases,
        "hookgate-operator",
        30,
        "second takes over",
        |l: &Lease| l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some("second"),
    )
    .await;
    w.create(&SOURCE.replace("name: shop", "name: after-failover"))
        .await;
    w.ready_source("after-failover").await;
    // The status is written before the reconcile logs its result.
    support::eventually(5, "the new leader logs its reconcile", || {
        second
            .logs()
            .contains("reconciled WebhookSource")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_ingest_deployment_is_applied_with_restricted_security() {
    let w = World::new().await;
    let _operator = w.operator("a");
    let deployments: Api<Deployment> = Api::namespaced(w.client.clone(), &w.ns);
    let d = support::wait_for(
        &deployments,
        "hookgate-ingest",
        30,
        "ingest Deployment applied",
        |_: &Deployment| true,
    )
    .await;
    let managers: Vec<String> = d
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| f.manager)
        .collect();
    assert!(
        managers.contains(&"hookgate.dev/operator-ingest".to_owned()),
        "{managers:?}"
    );
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("hookgate-ingest"));
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.example/hookgate:test"));
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "ingest");
    assert!(args.contains(&format!("--namespace={}", w.ns)), "{args:?}");
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    assert!(
        c.resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()
            .contains_key("memory")
    );
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );

    // A route change touches only the route Secret, never the pod template.
    let generation = deployments
        .get("hookgate-ingest")
        .await
        .unwrap()
        .metadata
        .generation;
    w.create(SOURCE).await;
    w.ready_source("shop").await;
    assert_eq!(
        deployments
            .get("hookgate-ingest")
            .await
            .unwrap()
            .metadata
            .generation,
        generation
    );
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(w.client.clone(), &w.ns);
    let svc = services.get("hookgate-ingest").await.unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 80);
}

#[tokio::test]
async fn sink_secrets_reach_the_route_and_a_missing_one_is_reported() {
    let w = World::new().await;
    let _operator = w.operator("a");
    w.create(
        r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: to-http}
spec:
  sink:
    http: {url: "http://collector.example/events", headersSecretRef: {name: collector-auth}}
"#,
    )
    .await;
    let waiting = support::wait_for(
        &w.sources(),
        "to-http",
        30,
        "missing sink Secret reported",
        |s: &WebhookSource| ready_reason_is(s, "SinkSecretNotFound"),
    )
    .await;
    assert!(
        condition(&waiting.status.unwrap().conditions, "SinkReady")
            .message
            .contains("collector-auth")
    );
    // The URL keeps working meanwhile: deliveries fail with a retryable 503, not a 404.
    assert!(w.route("to-http").await.sink_secrets.is_none());

    w.create(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: collector-auth}
stringData: {Authorization: "Bearer s3cr3t-collector-token"}
"#,
    )
    .await;
    let route = w
        .wait_route("to-http", "headers in the route", |r| {
            r.sink_secrets.is_some()
        })
        .await;
    let headers = route.sink_secrets.unwrap().headers;
    assert_eq!(
        headers.get("Authorization").map(String::as_str),
        Some("Bearer s3cr3t-collector-token")
    );
    w.ready_source("to-http").await;
}

/// The SinkReady condition's (status, reason, message), if written for this generation.
fn sink_ready(source: &WebhookSource) -> Option<(String, String, String)> {
    let st = source.status.as_ref()?;
    st.conditions
        .iter()
        .find(|c| c.type_ == "SinkReady" && c.observed_generation == source.metadata.generation)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_sink_service_reference_resolves_to_its_cluster_url_and_a_missing_service_is_reported() {
    let w = World::new().await;
    let _operator = w.operator("a");
    w.create(
        r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: to-service}
spec:
  sink:
    http: {serviceRef: {name: collector, port: 8080, path: /events}, mode: structured}
"#,
    )
    .await;
    let waiting = support::wait_for(
        &w.sources(),
        "to-service",
        30,
        "missing Service reported",
        |s: &WebhookSource| sink_ready(s).is_some_and(|(_, r, _)| r == "ServiceNotFound"),
    )
    .await;
    let (status, _, message) = sink_ready(&waiting).unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains("collector") && message.contains(&w.ns),
        "{message}"
    );
    assert!(ready_reason_is(&waiting, "ServiceNotFound"));
    // The URL keeps working meanwhile (deliveries answer a retryable 503), and the route says
    // the reference is unresolved rather than guessing a URL.
    let http = w.route("to-service").await.sink.unwrap().http.unwrap();
    assert_eq!(http.url, None);
    assert!(http.service_ref.is_some());

    // The Service appears (no endpoints needed): the next resync resolves it.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(w.client.clone(), &w.ns);
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "collector"},
        "spec": {"ports": [{"name": "http", "port": 8080}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let expected = format!("http://collector.{}.svc.cluster.local:8080/events", w.ns);
    let route = w
        .wait_route("to-service", "the route carries the resolved URL", |r| {
            r.sink
                .as_ref()
                .and_then(|s| s.http.as_ref())
                .and_then(|h| h.url.as_deref())
                == Some(expected.as_str())
        })
        .await;
    let http = route.sink.unwrap().http.unwrap();
    assert_eq!(http.service_ref, None, "the ingest gets a plain URL");
    assert_eq!(
        http.mode,
        hookgate::api::webhook_source::CloudEventsMode::Structured
    );
    let resolved = w.ready_source("to-service").await;
    let (status, reason, message) = sink_ready(&resolved).unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Resolved"));
    assert!(message.contains(&expected), "{message}");

    // A port the Service does not expose is reported with the ports it has.
    w.merge_source(
        "to-service",
        json!({"spec": {"sink": {"http": {"serviceRef": {"port": 9090}}}}}),
    )
    .await;
    let wrong_port = support::wait_for(
        &w.sources(),
        "to-service",
        30,
        "missing port reported",
        |s: &WebhookSource| sink_ready(s).is_some_and(|(_, r, _)| r == "ServicePortNotFound"),
    )
    .await;
    let (_, _, message) = sink_ready(&wrong_port).unwrap();
    assert!(
        message.contains("9090") && message.contains("8080"),
        "{message}"
    );

    // And the Service going away is noticed without any change to the source.
    w.merge_source(
        "to-service",
        json!({"spec": {"sink": {"http": {"serviceRef": {"port": 8080}}}}}),
    )
    .await;
    w.ready_source("to-service").await;
    services
        .delete("collector", &DeleteParams::default())
        .await
        .unwrap();
    support::wait_for(
        &w.sources(),
        "to-service",
        30,
        "deleted Service reported",
        |s: &WebhookSource| sink_ready(s).is_some_and(|(_, r, _)| r == "ServiceNotFound"),
    )
    .await;
    w.wait_route("to-service", "the route is unresolved again", |r| {
        r.sink
            .as_ref()
            .and_then(|s| s.http.as_ref())
            .is_some_and(|h| h.url.is_none())
    })
    .await;
}

#[tokio::test]
async fn nats_credentials_reach_the_route_by_kind_and_an_ambiguous_secret_is_reported() {
    let w = World::new().await;
    let _operator = w.operator("a");
    // Two kinds at once: which one was meant is the user's call, not the operator's.
    w.create(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: nats-login}
stringData: {token: "nats-token-4e1b", user: hookgate, password: "nats-pw-77ac"}
"#,
    )
    .await;
    w.create(
        r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: to-nats}
spec:
  sink:
    nats: {url: "nats://nats.example:4222", subject: events, credentialsSecretRef: {name: nats-login}}
"#,
    )
    .await;
    let ambiguous = support::wait_for(
        &w.sources(),
        "to-nats",
        30,
        "two kinds of credentials reported",
        |s: &WebhookSource| sink_ready(s).is_some_and(|(_, r, _)| r == "SinkSecretInvalid"),
    )
    .await;
    let (_, _, message) = sink_ready(&ambiguous).unwrap();
    assert!(
        message.contains("token") && message.contains("user/password"),
        "{message}"
    );
    assert!(
        !message.contains("nats-token-4e1b") && !message.contains("nats-pw-77ac"),
        "{message}"
    );

    // Keep one kind: the route carries it, the condition names the kind, never the value.
    w.secrets()
        .patch(
            "nats-login",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"token": null}})),
        )
        .await
        .unwrap();
    let route = w
        .wait_route("to-nats", "user and password in the route", |r| {
            r.sink_secrets
                .as_ref()
                .and_then(|s| s.nats.as_ref())
                .is_some()
        })
        .await;
    assert_eq!(
        route.sink_secrets.unwrap().nats,
        Some(hookgate::route::NatsAuth::UserPassword {
            user: "hookgate".into(),
            password: "nats-pw-77ac".into()
        })
    );
    let ready = w.ready_source("to-nats").await;
    let (_, reason, message) = sink_ready(&ready).unwrap();
    assert_eq!(reason, "Resolved");
    assert!(message.contains("user and password"), "{message}");
    let status = serde_json::to_string(&ready.status).unwrap();
    assert!(!status.contains("nats-pw-77ac"), "{status}");
}
