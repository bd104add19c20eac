//! A test cluster: the real control plane, the chart's RBAC for the operator and the ingest
//! in a fresh namespace, and both running as processes under their ServiceAccounts.

use std::path::PathBuf;

use hookgate::api::mapping::Mapping;
use hookgate::api::webhook_source::WebhookSource;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use serde_json::Value;

use super::{Process, TempDir};

pub struct Cluster {
    pub client: Client,
    pub ns: String,
    pub dir: TempDir,
    pub operator_kubeconfig: PathBuf,
    pub ingest_kubeconfig: PathBuf,
}

pub struct Ingest {
    pub process: Process,
    pub addr: String,
    pub admin: String,
    pub events: PathBuf,
}

impl Cluster {
    pub async fn new() -> Cluster {
        let client = super::client().await;
        let ns = super::namespace(&client).await;
        for file in ["operator-rbac.yaml", "ingest-rbac.yaml"] {
            super::kubectl_ok(
                &["apply", "-f", "-"],
                Some(&super::render_chart_file(file, &ns, &ns)),
            );
        }
        let dir = TempDir::new("hookgate-e2e");
        let operator_kubeconfig =
            super::service_account_kubeconfig(&ns, &format!("{ns}-operator"), &dir.0);
        let ingest_kubeconfig = super::service_account_kubeconfig(&ns, "hookgate-ingest", &dir.0);
        Cluster {
            client,
            ns,
            dir,
            operator_kubeconfig,
            ingest_kubeconfig,
        }
    }

    pub async fn ingest(&self, instance: &str) -> Ingest {
        let events = self.dir.0.join(format!("events-{instance}.jsonl"));
        let process = Process::start_with_stdout(
            &[
                "ingest",
                "--namespace",
                &self.ns,
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--status-interval",
                "1s",
            ],
            &self.ingest_kubeconfig,
            self.dir.0.join(format!("ingest-{instance}.log")),
            Some(&events),
        );
        let (addr, admin) = super::eventually(
            30,
            &format!("ingest listening ({})", process.log.display()),
            || {
                let logs = process.logs();
                Some((
                    super::log_field(&logs, "ingest listening", "addr")?,
                    super::log_field(&logs, "ingest listening", "admin")?,
                ))
            },
        )
        .await;
        Ingest {
            process,
            addr,
            admin,
            events,
        }
    }

    pub fn operator(&self, public_url: &str) -> Process {
        Process::start(
            &[
                "operator",
                "--namespace",
                &self.ns,
                "--watch-namespace",
                &self.ns,
                "--public-url",
                public_url,
                "--metrics-listen",
                "127.0.0.1:0",
                "--identity",
                "e2e",
                "--no-ingest-deployment",
            ],
            &self.operator_kubeconfig,
            self.dir.0.join("operator.log"),
        )
    }

    pub fn sources(&self) -> Api<WebhookSource> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn mappings(&self) -> Api<Mapping> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The URL a person would copy: from the token Secret, as `hookgate url` prints it.
    pub async fn url(&self, source: &str) -> String {
        let secret = Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .get(&format!("{source}-webhook-token"))
            .await
            .unwrap();
        String::from_utf8(secret.data.unwrap()["url"].0.clone()).unwrap()
    }

    pub async fn wait_source(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&WebhookSource) -> bool,
    ) -> WebhookSource {
        super::wait_for(&self.sources(), name, 30, what, check).await
    }
}

impl Ingest {
    pub fn post(&self, url: &str, body: &Value) -> (u16, Value) {
        let path = &url[url.find("/h/").expect("a webhook URL")..];
        let (code, text) = super::http_post(&self.addr, path, &body.to_string(), &[]);
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Posts until the source's route, mappings included, is in force here and the event was
    /// delivered (a route published before its mapping answers 200 "ignored"). Returns how
    /// many posts the source answered 200, since ignored ones count as received too.
    pub async fn post_until_delivered(&self, url: &str, body: &Value) -> usize {
        let mut answered = 0;
        super::eventually(15, "an event delivered through the route", || {
            let (code, reply) = self.post(url, body);
            answered += usize::from(code == 200);
            (code == 200 && reply["status"] == "delivered").then_some(())
        })
        .await;
        answered
    }

    pub fn delivered(&self) -> Vec<Value> {
        let bytes = std::fs::read(&self.events)
            .unwrap_or_else(|e| panic!("reading the sink output {}: {e}", self.events.display()));
        String::from_utf8(bytes)
            .unwrap_or_else(|e| {
                panic!(
                    "the sink output {} is not UTF-8: {e}",
                    self.events.display()
                )
            })
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
            .collect()
    }
}
