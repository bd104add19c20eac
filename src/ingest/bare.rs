//! The baseline for load runs: the same accept loop and hyper settings as the ingest, a body
//! read, and 200 at once (`hookgate bench-server`, hidden). Comparing the ingest with it
//! measures what routing, parsing, mapping and the sink cost on top of hyper.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use tokio::net::TcpListener;

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("bench-server on http://{}", listener.local_addr()?);
    let handler = |request: hyper::Request<hyper::body::Incoming>| async move {
        // Read the body like the ingest does, so both pay for receiving it.
        let _ = request.into_body().collect().await;
        Response::new(Full::new(Bytes::from_static(b"{\"status\":\"ok\"}")))
    };
    super::server::serve(listener, handler, Duration::from_secs(10), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
