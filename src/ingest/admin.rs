//! The admin port: `/healthz`, `/readyz`, `/metrics` and `/status`. Never exposed to senders
//! (bind it to loopback or a cluster-internal address).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;

use super::server::serve;
use super::table::RouteTable;

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Answers one admin request.
pub fn handle<B>(table: &RouteTable, request: &Request<B>) -> Resp {
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        // Ready once routes were installed: before that every webhook would get 404, which
        // senders may treat as permanent.
        "/readyz" if table.is_loaded() => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "routes not loaded yet\n".into(),
        ),
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            table.metrics().encode(),
        ),
        "/status" => {
            let sources: Vec<serde_json::Value> = table
                .status()
                .into_iter()
                .map(|(snapshot, notes)| {
                    let mut value = serde_json::to_value(snapshot).unwrap_or_default();
                    if let (Some(obj), Ok(serde_json::Value::Object(extra))) =
                        (value.as_object_mut(), serde_json::to_value(notes))
                    {
                        obj.extend(extra);
                    }
                    value
                })
                .collect();
            text(
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&json!({ "sources": sources })).unwrap_or_default(),
            )
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Binds and serves the admin port; returns the bound address.
pub async fn bind_admin(
    addr: SocketAddr,
    table: Arc<RouteTable>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let handler = move |request: Request<hyper::body::Incoming>| {
        let response = handle(&table, &request);
        async move { response }
    };
    Ok((
        local,
        tokio::spawn(serve(listener, handler, Duration::from_secs(10), shutdown)),
    ))
}
