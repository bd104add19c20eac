//! `hookgate ingest`: the data plane in a cluster. Routes come from the route Secrets the
//! operator publishes in this namespace (a watch: a change is in force for the next request,
//! no restart); status goes back onto the resources through [`super::status_writer`].
//!
//! While the API server is unreachable the watcher retries with backoff and the table keeps
//! the last routes it had, so senders keep being served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::status_writer::StatusWriter;
use super::{Ingest, Metrics, RouteTable, Sinks, bind_admin, bind_ingest};
use crate::route::{ROUTE_KEY, ROUTE_LABEL, Route};
use crate::sink::WriterSink;

#[derive(clap::Args, Debug, Clone)]
pub struct IngestArgs {
    /// The namespace whose route Secrets this ingest serves (the operator's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "hookgate-system")]
    pub namespace: String,
    /// Where senders reach the ingest.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`, `/status`.
    #[arg(long, default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,
    /// At most one status write per source per interval, and only when something changed.
    #[arg(long, default_value = "10s", value_parser = crate::api::parse_duration)]
    pub status_interval: Duration,
    /// The sink for sources without `spec.sink`: `stdout`, an `http(s)://` CloudEvents
    /// receiver (binary mode), or `nats://host:port/subject` (JetStream).
    #[arg(long, default_value = "stdout")]
    pub default_sink: String,
    #[command(flatten)]
    pub connections: crate::ingest::server::ConnectionArgs,
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let stdout = WriterSink::stdout();
    let default = match default_sink(&args.default_sink)? {
        Some(spec) => crate::sink::for_spec(&spec, None),
        None => stdout.clone(),
    };
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let table = Arc::new(RouteTable::new(Sinks { default, stdout }, metrics));

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let ingest = Arc::new(Ingest::new(table.clone(), args.connections.ingest_config()));
    let (addr, ingest_task) = bind_ingest(args.listen, ingest, stopped()).await?;
    let (admin, admin_task) = bind_admin(args.admin_listen, table.clone(), stopped()).await?;
    info!(%addr, %admin, namespace = %args.namespace, "ingest listening");

    let watch = tokio::spawn(watch_routes(
        client.clone(),
        args.namespace.clone(),
        table.clone(),
    ));
    let writer = StatusWriter::new(client, table.clone(), args.status_interval);
    let writer_task = tokio::spawn(writer.run(stopped()));

    shutdown.await;
    info!("shutting down: finishing requests in flight and writing status once more");
    let _ = stop_tx.send(true);
    let _ = ingest_task.await;
    let _ = admin_task.await;
    let _ = writer_task.await;
    watch.abort();
    Ok(())
}

/// `--default-sink`: None for stdout, else the sink spec it names.
pub fn default_sink(text: &str) -> anyhow::Result<Option<crate::api::webhook_source::Sink>> {
    use crate::api::webhook_source::{HttpSink, NatsSink, Sink};
    if text == "stdout" {
        return Ok(None);
    }
    if text.starts_with("http://") || text.starts_with("https://") {
        return Ok(Some(Sink {
            http: Some(HttpSink {
                url: Some(text.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    if let Some(rest) = text.strip_prefix("nats://")
        && let Some((server, subject)) = rest.split_once('/')
        && !subject.is_empty()
    {
        return Ok(Some(Sink {
            nats: Some(NatsSink {
                url: format!("nats://{server}"),
                subject: subject.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }));
    }
    anyhow::bail!(
        "--default-sink {text:?}: expected stdout, http(s)://..., or nats://host:port/subject"
    )
}

/// Keeps the route table equal to the route Secrets, forever (the watcher reconnects itself).
pub async fn watch_routes(client: Client, namespace: String, table: Arc<RouteTable>) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&format!("{ROUTE_LABEL}=true"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut initial: Vec<Route> = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => initial.clear(),
            Ok(Event::InitApply(secret)) => initial.extend(parse(&secret)),
            Ok(Event::InitDone) => {
                let report = table.replace(std::mem::take(&mut initial));
                table.mark_loaded();
                info!(
                    routes = table.snapshot().routes().count(),
                    ?report,
                    "routes loaded"
                );
            }
            Ok(Event::Apply(secret)) => {
                if let Some(route) = parse(&secret) {
                    let report = table.upsert(route);
                    info!(route = %secret.name_any(), ?report, "route updated");
                }
            }
            Ok(Event::Delete(secret)) => {
                if let Some(route) = parse(&secret) {
                    table.remove(&route.namespace, &route.name);
                    info!(route = %secret.name_any(), "route removed");
                }
            }
            // The last routes stay in force; the watcher backs off and relists.
            Err(e) => warn!(error = %e, "watching routes failed; serving the last known routes"),
        }
    }
}

fn parse(secret: &Secret) -> Option<Route> {
    let bytes = secret.data.as_ref()?.get(ROUTE_KEY)?;
    match serde_json::from_slice::<Route>(&bytes.0) {
        Ok(route) => Some(route),
        Err(e) => {
            warn!(route = %secret.name_any(), error = %e, "ignoring a route this ingest cannot read");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::default_sink;

    #[test]
    fn default_sink_names_stdout_http_or_nats() {
        assert!(default_sink("stdout").unwrap().is_none());
        let http = default_sink("https://broker.example/ns/default")
            .unwrap()
            .unwrap();
        assert_eq!(
            http.http.unwrap().url.as_deref(),
            Some("https://broker.example/ns/default")
        );
        let nats = default_sink("nats://nats.hookgate:4222/events.in")
            .unwrap()
            .unwrap()
            .nats
            .unwrap();
        assert_eq!(
            (nats.url.as_str(), nats.subject.as_str()),
            ("nats://nats.hookgate:4222", "events.in")
        );
        assert!(default_sink("kafka://x").is_err());
        assert!(default_sink("nats://host-without-subject").is_err());
    }
}
