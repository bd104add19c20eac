//! The baseline for load runs: the same accept loop and hyper settings as the ingest, a body
//! read, and 200 at once (`hookgate bench-server`, hidden). Comparing the ingest with it
//! measures what routing, parsing, mapping and the sink cost on top of hyper.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

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

/// `hookgate bench-load`: a paced HTTP/1.1 load client for the p99-at-a-fixed-rate target
/// (wrk has no fixed-rate mode, and neither wrk2 nor oha is packaged here). Each connection
/// sends on its own fixed schedule, so when the server falls behind, requests queue and the
/// latency measured from the *scheduled* send time shows it (no coordinated omission).
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// `http://host:port/path` (plain HTTP, keep-alive).
    pub url: String,
    /// The request body.
    #[arg(long)]
    pub body: std::path::PathBuf,
    #[arg(long, default_value = "application/json")]
    pub content_type: String,
    /// Total requests per second, spread evenly over the connections.
    #[arg(long)]
    pub rate: f64,
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Measured seconds, after `--warmup` seconds that are sent but not measured.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
}

#[derive(Default)]
struct Samples {
    /// From the scheduled send time to the complete response, in microseconds.
    scheduled: Vec<u32>,
    /// From the actual send to the complete response.
    service: Vec<u32>,
    not_ok: u64,
}

/// Runs the paced load on a single-threaded runtime (the client should take at most one core,
/// like `wrk -t1`) and prints the achieved rate and latency percentiles.
pub fn load(args: LoadArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let rest = args
        .url
        .strip_prefix("http://")
        .context("the URL must start with http://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let body =
        std::fs::read(&args.body).with_context(|| format!("reading {}", args.body.display()))?;
    let mut request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        args.content_type,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let request: std::sync::Arc<[u8]> = request.into();
    anyhow::ensure!(
        args.rate > 0.0 && args.connections > 0,
        "--rate and --connections must be positive"
    );
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let authority = authority.to_owned();
    let samples = runtime.block_on(async move {
        let start = tokio::time::Instant::now() + Duration::from_millis(100);
        let measure_from = start + Duration::from_secs(args.warmup);
        let end = measure_from + Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        for i in 0..args.connections {
            let (request, authority) = (request.clone(), authority.clone());
            let offset = interval.mul_f64(i as f64 / args.connections as f64);
            tasks.push(tokio::spawn(async move {
                connection(
                    &authority,
                    &request,
                    start + offset,
                    interval,
                    measure_from,
                    end,
                )
                .await
            }));
        }
        let mut all = Samples::default();
        for task in tasks {
            let s = task.await??;
            all.scheduled.extend(s.scheduled);
            all.service.extend(s.service);
            all.not_ok += s.not_ok;
        }
        anyhow::Ok(all)
    })?;
    let n = samples.scheduled.len();
    println!(
        "target {:.0} req/s over {} connections for {} s: {} responses measured ({:.0} req/s), {} not 200",
        args.rate,
        args.connections,
        args.seconds,
        n,
        n as f64 / args.seconds as f64,
        samples.not_ok
    );
    for (name, mut values) in [
        ("from scheduled send", samples.scheduled),
        ("from actual send", samples.service),
    ] {
        values.sort_unstable();
        let at = |q: f64| {
            let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len().max(1)) - 1;
            values.get(i).map_or(0.0, |us| f64::from(*us) / 1000.0)
        };
        println!(
            "latency {name}: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            at(0.5),
            at(0.9),
            at(0.99),
            at(0.999),
            at(1.0)
        );
    }
    Ok(())
}

async fn connection(
    authority: &str,
    request: &[u8],
    first: tokio::time::Instant,
    interval: Duration,
    measure_from: tokio::time::Instant,
    end: tokio::time::Instant,
) -> anyhow::Result<Samples> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let mut samples = Samples::default();
    let mut buffer = Vec::with_capacity(4096);
    let mut scheduled = first;
    while scheduled < end {
        tokio::time::sleep_until(scheduled).await;
        let sent = tokio::time::Instant::now();
        stream.write_all(request).await?;
        let status = read_response(&mut stream, &mut buffer).await?;
        let done = tokio::time::Instant::now();
        if scheduled >= measure_from {
            let micros = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
            samples.scheduled.push(micros(done - scheduled));
            samples.service.push(micros(done - sent));
            if status != 200 {
                samples.not_ok += 1;
            }
        }
        scheduled += interval;
    }
    Ok(samples)
}

/// Reads one response (head, then Content-Length bytes of body); returns its status.
pub(super) async fn read_response(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> std::io::Result<u16> {
    buffer.clear();
    let (head_len, body_len) = loop {
        if stream.read_buf(buffer).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        if let Some(head) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buffer[..head]).to_ascii_lowercase();
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (head + 4, length);
        }
    };
    while buffer.len() < head_len + body_len {
        if stream.read_buf(buffer).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection mid-response",
            ));
        }
    }
    let status = buffer
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Keep whatever followed (nothing, without pipelining).
    buffer.drain(..head_len + body_len);
    Ok(status)
}
