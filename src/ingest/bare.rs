//! The baseline for load runs: the same accept loop and hyper settings as the ingest, a body
//! read, and 200 at once (`hookgate bench-server`, hidden). Comparing the ingest with it
//! measures what routing, parsing, mapping and the sink cost on top of hyper.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("bench-server on http://{}", listener.local_addr()?);
    // The ingest's accept loop, with its header timeout, connection cap and threads.
    let config = super::IngestConfig::default();
    super::server::serve_limited(
        listener,
        answer,
        config.header_read_timeout,
        config.max_connections,
        config.connection_threads,
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await;
    Ok(())
}

async fn answer(request: hyper::Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    // Read the body like the ingest does, so both pay for receiving it.
    let _ = request.into_body().collect().await;
    Response::new(Full::new(Bytes::from_static(b"{\"status\":\"ok\"}")))
}

/// `hookgate bench-load`: a paced HTTP/1.1 load client for the p99-at-a-fixed-rate target
/// (wrk has no fixed-rate mode, and neither wrk2 nor oha is packaged here). Request `k` is due
/// at `k / rate` seconds and goes out on connection `k mod connections`; when the server falls
/// behind, a due request waits for its connection's previous answer, and the latency measured
/// from the *scheduled* send time shows it (no coordinated omission).
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

/// One connection's requests: its `n`-th send is request `i + n × connections`. Whoever moves
/// `claimed` from `n` to `n + 1` sends it: the pacer when it is due and the connection idle, or
/// the reader of the answer before it when that answer came late. A late answer delays only its
/// own connection's next request, never the others'.
#[derive(Default)]
struct Line {
    claimed: AtomicU64,
    answered: AtomicU64,
    /// Of the request in flight, in nanoseconds since the run's origin; written before it is.
    scheduled: AtomicU64,
    sent: AtomicU64,
}

impl Line {
    /// Claims send `n` if nothing is in flight and nobody took it.
    fn claim(&self, n: u64) -> bool {
        self.answered.load(Ordering::Acquire) == n
            && self
                .claimed
                .compare_exchange(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    fn stamp(&self, scheduled: u64, origin: Instant) {
        self.scheduled.store(scheduled, Ordering::Relaxed);
        self.sent.store(since(origin), Ordering::Release);
    }
}

/// Runs the paced load and prints the achieved rate and latency percentiles.
///
/// The sends come from a thread of their own that sleeps until each request is due, and the
/// answers are read on a single-threaded runtime. Not tokio's timer: its wheel has millisecond
/// slots, and at 30,000 req/s each slot released ~30 requests at once, a burst that both the
/// bare server's and the ingest's tails then measured.
pub fn load(args: LoadArgs) -> anyhow::Result<()> {
    let report = paced(&args)?;
    let n = report.samples.scheduled.len();
    println!(
        "target {:.0} req/s over {} connections for {} s: {} responses measured ({:.0} req/s), {} not 200; {} sent late, after their connection's previous answer",
        args.rate,
        args.connections,
        args.seconds,
        n,
        n as f64 / args.seconds as f64,
        report.samples.not_ok,
        report.late
    );
    for (name, mut values) in [
        ("from scheduled send", report.samples.scheduled),
        ("from actual send", report.samples.service),
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

struct Report {
    samples: Samples,
    late: u64,
}

fn paced(args: &LoadArgs) -> anyhow::Result<Report> {
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
    anyhow::ensure!(
        args.rate > 0.0 && args.connections > 0,
        "--rate and --connections must be positive"
    );
    let plan = Plan::new(args.rate, args.connections, args.warmup, args.seconds);
    let mut writers = Vec::with_capacity(args.connections);
    let mut readers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let stream = std::net::TcpStream::connect(authority)
            .with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        writers.push(stream.try_clone()?);
        readers.push(stream);
    }
    let lines: Arc<[Line]> = (0..args.connections).map(|_| Line::default()).collect();
    let request: Arc<[u8]> = request.into();
    let failed = Arc::new(AtomicBool::new(false));
    let late = Arc::new(AtomicU64::new(0));
    let origin = Instant::now();
    let pacer = {
        let (lines, failed, request) = (lines.clone(), failed.clone(), request.clone());
        std::thread::Builder::new()
            .name("bench-load-pacer".into())
            .spawn(move || {
                let sent = pace(&plan, origin, &request, &writers, &lines, &failed);
                if sent.is_err() {
                    // The readers wait for answers to requests that will not go: end them.
                    for writer in &writers {
                        let _ = writer.shutdown(std::net::Shutdown::Both);
                    }
                }
                sent
            })?
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let read = runtime.block_on(async {
        let mut tasks = Vec::new();
        for (i, stream) in readers.into_iter().enumerate() {
            let (lines, request, late) = (lines.clone(), request.clone(), late.clone());
            let stream = TcpStream::from_std(stream)?;
            let conn = Conn {
                plan,
                i,
                origin,
                request,
                late,
            };
            tasks.push(tokio::spawn(async move {
                conn.answers(stream, &lines[i]).await
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
    });
    if read.is_err() {
        failed.store(true, Ordering::Relaxed);
    }
    pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))??;
    Ok(Report {
        samples: read?,
        late: late.load(Ordering::Relaxed),
    })
}

/// When each request of a paced run is due, in nanoseconds since the run's origin.
#[derive(Clone, Copy, Debug)]
struct Plan {
    first: u64,
    period: f64,
    total: u64,
    connections: usize,
    /// Requests scheduled before this are the warm-up: sent, not measured.
    measure_from: u64,
}

impl Plan {
    fn new(rate: f64, connections: usize, warmup: u64, seconds: u64) -> Self {
        let first = 100_000_000; // 100 ms for the reader to start
        Self {
            first,
            period: 1e9 / rate,
            total: (rate * (warmup + seconds) as f64).ceil() as u64,
            connections,
            measure_from: first + warmup * 1_000_000_000,
        }
    }

    fn due(&self, k: u64) -> u64 {
        self.first + (k as f64 * self.period) as u64
    }

    /// How many requests go out on connection `i`: those whose number is `i` modulo the
    /// connections.
    fn sends_on(&self, i: usize) -> u64 {
        let c = self.connections as u64;
        self.total / c + u64::from((i as u64) < self.total % c)
    }
}

fn since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// How early a request may go: sleeping less costs more than it is worth. The pacer and the
/// readers use the same margin, so that a request the pacer skipped (its connection busy) is
/// always due by the time the reader of that connection's answer looks.
const EARLY: u64 = 10_000;

/// Sends each request of `plan` when it is due, unless its connection is still waiting for
/// the answer before: then the reader of that answer sends it ([`Conn::answers`]).
fn pace(
    plan: &Plan,
    origin: Instant,
    request: &[u8],
    writers: &[std::net::TcpStream],
    lines: &[Line],
    failed: &AtomicBool,
) -> anyhow::Result<()> {
    use std::io::Write;
    let c = plan.connections as u64;
    for k in 0..plan.total {
        if failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let due = plan.due(k);
        loop {
            let now = since(origin);
            if now + EARLY >= due {
                break;
            }
            std::thread::sleep(Duration::from_nanos(due - now));
        }
        let i = (k % c) as usize;
        let line = &lines[i];
        if !line.claim(k / c) {
            continue;
        }
        line.stamp(due, origin);
        let mut rest = request;
        while !rest.is_empty() {
            match (&writers[i]).write(rest) {
                Ok(0) => anyhow::bail!("connection {i} closed while sending"),
                Ok(n) => rest = &rest[n..],
                // An empty send buffer takes a request whole; this is a slow receiver.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_micros(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// The reading side of connection `i`.
struct Conn {
    plan: Plan,
    i: usize,
    origin: Instant,
    request: Arc<[u8]>,
    /// Sends made by a reader, because the pacer found the connection busy.
    late: Arc<AtomicU64>,
}

impl Conn {
    /// Reads every answer on the connection, timing each against what its sender recorded,
    /// and sends the next request at once when it is already due.
    async fn answers(&self, mut stream: TcpStream, line: &Line) -> anyhow::Result<Samples> {
        use tokio::io::AsyncWriteExt;
        let c = self.plan.connections as u64;
        let expected = self.plan.sends_on(self.i);
        let mut samples = Samples::default();
        let mut buffer = Vec::with_capacity(4096);
        for n in 0..expected {
            let (status, _) = read_response(&mut stream, &mut buffer).await?;
            let done = since(self.origin);
            // The sender stamped both before sending, so before this answer existed.
            let sent = line.sent.load(Ordering::Acquire);
            let scheduled = line.scheduled.load(Ordering::Relaxed);
            line.answered.store(n + 1, Ordering::Release);
            if scheduled >= self.plan.measure_from {
                let micros = |ns: u64| u32::try_from(ns / 1000).unwrap_or(u32::MAX);
                samples
                    .scheduled
                    .push(micros(done.saturating_sub(scheduled)));
                samples.service.push(micros(done.saturating_sub(sent)));
                if status != 200 {
                    samples.not_ok += 1;
                }
            }
            let next = n + 1;
            if next < expected {
                let due = self.plan.due(self.i as u64 + next * c);
                if due <= since(self.origin) + EARLY && line.claim(next) {
                    self.late.fetch_add(1, Ordering::Relaxed);
                    line.stamp(due, self.origin);
                    stream.write_all(&self.request).await?;
                }
            }
        }
        Ok(samples)
    }
}

/// Reads one response (head, then Content-Length bytes of body) into `buffer`, replacing what
/// it held; returns its status and where its body is in `buffer`.
pub(super) async fn read_response(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> std::io::Result<(u16, std::ops::Range<usize>)> {
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
    Ok((status, head_len..head_len + body_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_spreads_requests_evenly_over_the_connections() {
        let plan = Plan::new(1000.0, 3, 1, 2);
        assert_eq!(plan.total, 3000);
        assert_eq!(plan.due(0), plan.first);
        assert_eq!(plan.due(1000) - plan.due(0), 1_000_000_000);
        assert_eq!(plan.measure_from, plan.first + 1_000_000_000);
        assert_eq!((0..3).map(|i| plan.sends_on(i)).sum::<u64>(), 3000);
        let uneven = Plan::new(10.0, 4, 0, 1);
        let shares: Vec<u64> = (0..4).map(|i| uneven.sends_on(i)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
    }

    #[test]
    fn a_send_is_claimed_once_and_only_when_its_connection_is_idle() {
        let line = Line::default();
        assert!(line.claim(0));
        assert!(!line.claim(0), "claimed twice");
        assert!(!line.claim(1), "claimed while the one before is in flight");
        line.answered.store(1, Ordering::Release);
        assert!(line.claim(1));
    }

    #[test]
    fn every_paced_request_is_answered_and_timed_against_a_real_server() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(super::super::server::serve(
            listener,
            answer,
            Duration::from_secs(10),
            async {
                let _ = stopped.await;
            },
        ));
        let body = std::env::temp_dir().join(format!("bench-load-{}.json", std::process::id()));
        std::fs::write(&body, br#"{"type":"ping"}"#).unwrap();
        let args = LoadArgs {
            url: format!("http://{addr}/h/x"),
            body: body.clone(),
            content_type: "application/json".into(),
            rate: 2000.0,
            connections: 4,
            seconds: 1,
            warmup: 0,
        };
        // A lost send would leave its reader waiting for ever: bounded, it fails instead.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(paced(&args)));
        let report = finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the paced run did not finish in 30 s");
        let _ = std::fs::remove_file(&body);
        let _ = stop.send(());
        runtime.block_on(server).unwrap();
        let report = report.unwrap();
        let samples = report.samples;
        assert_eq!(samples.scheduled.len(), 2000, "every request measured");
        assert_eq!(samples.service.len(), 2000);
        assert_eq!(samples.not_ok, 0);
        assert!(report.late <= 2000);
        // A request goes at most EARLY before it is due, so from the actual send it cannot
        // have taken longer than from the scheduled one, give or take that.
        for (scheduled, service) in samples.scheduled.iter().zip(&samples.service) {
            assert!(
                u64::from(*service) <= u64::from(*scheduled) + EARLY / 1000,
                "{service} µs from the send, {scheduled} µs from the schedule"
            );
        }
    }
}
