//! Slow and abusive clients, through raw TCP on loopback against the real ingest: what each
//! is answered and that the connections it holds are given back (scripts/abuse measures the
//! same under load).

mod ingest_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hookgate::api::mapping::MappingSpec;
use hookgate::ingest::{Ingest, IngestConfig, Metrics, RouteTable, Sinks, bind_ingest};
use hookgate::route::{Route, RouteMapping, TokenHash, token_sha256_hex};
use hookgate::sink::WriterSink;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "tok_7d1e0c9b8a6f4e2d1c0b9a8f7e6d5c4b";

fn route() -> Route {
    let spec: MappingSpec = serde_yaml::from_str(
        r#"
sourceRef: {name: shop}
event: {name: Purchase, id: "{{id}}", externalId: "{{customer}}"}
"#,
    )
    .unwrap();
    Route {
        namespace: "shop".into(),
        name: "shop".into(),
        generation: 1,
        tokens: vec![TokenHash {
            sha256: token_sha256_hex(TOKEN),
            expires_at: None,
        }],
        enabled: true,
        max_body_bytes: 4096,
        rate_limit: None,
        dedup_window_seconds: 0,
        signature: None,
        mappings: vec![RouteMapping {
            name: "purchase".into(),
            generation: 1,
            spec,
        }],
        sink: None,
        sink_secrets: None,
    }
}

async fn start(config: IngestConfig) -> SocketAddr {
    let sink = Arc::new(WriterSink::new("stdout", Box::new(std::io::sink())));
    let table = Arc::new(RouteTable::new(
        Sinks::single(sink),
        Arc::new(Metrics::new()),
    ));
    let report = table.replace(vec![route()]);
    assert!(report.route_errors.is_empty() && report.mapping_errors.is_empty());
    let ingest = Arc::new(Ingest::new(table, config));
    let (addr, _) = bind_ingest(
        "127.0.0.1:0".parse().unwrap(),
        ingest,
        std::future::pending(),
    )
    .await
    .unwrap();
    addr
}

const BODY: &str = r#"{"id":"evt_1","customer":"cus_1"}"#;

fn good_request() -> String {
    format!(
        "POST /h/{TOKEN} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    )
}

/// Reads until the server closes the connection (or resets it); returns what arrived.
/// Fails if that takes longer than `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the server kept the connection open");
    String::from_utf8_lossy(&received).into_owned()
}

/// Sends one request on an open connection and returns the status line's code.
async fn exchange(stream: &mut TcpStream, request: &str) -> u16 {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed before answering");
        received.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&received);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if received.len() >= head_end + 4 + length {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

#[tokio::test]
async fn headers_sent_slower_than_the_header_timeout_get_the_connection_closed() {
    let addr = start(IngestConfig {
        header_read_timeout: Duration::from_millis(300),
        ..IngestConfig::default()
    })
    .await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(format!("POST /h/{TOKEN} HTTP/1.1\r\nHost: ingest\r\n").as_bytes())
        .await
        .unwrap();
    // Well under the default 10 s: the configured timeout is the one in force.
    let received = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(!received.contains(" 200 "), "{received}");

    // A connection that never sends a byte is closed the same way.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let received = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(received.is_empty(), "{received}");

    // Others are served meanwhile and after.
    let mut good = TcpStream::connect(addr).await.unwrap();
    assert_eq!(exchange(&mut good, &good_request()).await, 200);
}

#[tokio::test]
async fn a_body_slower_than_the_body_timeout_is_answered_408_and_closed() {
    let addr = start(IngestConfig {
        body_read_timeout: Duration::from_millis(300),
        ..IngestConfig::default()
    })
    .await;
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(
            format!("POST /h/{TOKEN} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{")
                .as_bytes(),
        )
        .await
        .unwrap();
    let received = read_until_closed(&mut trickle, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 408 "), "{received}");
    assert!(received.contains("\"body_timeout\""), "{received}");
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_413_before_it_is_sent() {
    let addr = start(IngestConfig::default()).await;
    let mut huge = TcpStream::connect(addr).await.unwrap();
    // 100 MB announced, not one byte of it sent: the answer cannot depend on reading it.
    huge.write_all(
        format!("POST /h/{TOKEN} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let received = read_until_closed(&mut huge, Duration::from_secs(5)).await;
    assert!(received.starts_with("HTTP/1.1 413 "), "{received}");
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let addr = start(IngestConfig {
        max_connections: 2,
        ..IngestConfig::default()
    })
    .await;
    // Two keep-alive connections, each answered once, so both hold a slot.
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert_eq!(exchange(&mut first, &good_request()).await, 200);
    assert_eq!(exchange(&mut second, &good_request()).await, 200);

    // The kernel completes the third connection; the ingest does not take it yet.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let request = good_request();
    let waiting = tokio::time::timeout(Duration::from_millis(500), exchange(&mut third, &request));
    assert!(
        waiting.await.is_err(),
        "a third connection was served past the cap of 2"
    );

    drop(first);
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buffer = [0u8; 4096];
        let n = third.read(&mut buffer).await.unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    })
    .await
    .expect("the waiting connection was not served after a slot freed");
    assert!(answered.starts_with("HTTP/1.1 200 "), "{answered}");
    // The remaining connection still works.
    assert_eq!(exchange(&mut second, &good_request()).await, 200);
}
