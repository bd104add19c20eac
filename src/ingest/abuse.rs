//! `hookgate bench-abuse` (hidden): one kind of slow or abusive client against an ingest while
//! good senders post at a steady rate, for `scripts/abuse`. Prints one JSON line: the good
//! senders' latency and failures during the attack, what the attackers were answered, and the
//! ingest's resident memory (from `/proc/PID/status`) before, at its peak during, and after.
//!
//! The good senders run on their own thread and runtime so that the attackers' work in this
//! process does not show up as the ingest's latency.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::bare::read_response;
use tokio::time::Instant;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// No attack: the baseline of the good senders.
    None,
    /// Request headers sent one byte every 500 ms, never finished.
    Slowloris,
    /// A valid request whose 1,000-byte body arrives one byte every 100 ms.
    Trickle,
    /// Connections opened and left silent.
    Idle,
    /// 100 MB bodies to a valid URL, with Content-Length and chunked, in turn.
    Huge,
    /// Requests to unknown and malformed tokens as fast as the attackers can send them.
    BadTokens,
}

#[derive(clap::Args, Debug)]
pub struct AbuseArgs {
    /// `host:port` of the ingest.
    pub addr: String,
    /// The good senders' path, `/h/<token>` (read from this file, so the token stays off the
    /// command line and out of process listings).
    #[arg(long)]
    pub good_path_file: PathBuf,
    /// The good senders' body (JSON).
    #[arg(long)]
    pub body: PathBuf,
    #[arg(long, value_enum)]
    pub attack: Attack,
    /// Good requests per second in total.
    #[arg(long, default_value_t = 200.0)]
    pub good_rate: f64,
    #[arg(long, default_value_t = 4)]
    pub good_connections: usize,
    /// How long the attack (and the measurement of the good senders) lasts.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Attacking connections (default per attack: slowloris 1000, trickle 200, idle 10000,
    /// huge 4, bad-tokens 8).
    #[arg(long)]
    pub attackers: Option<usize>,
    /// The ingest's process id, for its resident memory.
    #[arg(long)]
    pub watch_pid: Option<u32>,
    /// Seconds to wait after the attack before the "after" memory sample.
    #[arg(long, default_value_t = 3)]
    pub settle: u64,
}

/// What the attackers saw; one set of counters shared by all attacking tasks.
#[derive(Default)]
struct AttackStats {
    connections: AtomicU64,
    connect_errors: AtomicU64,
    /// Connections the server closed (with or without an answer) before the attacker gave up.
    closed_by_server: AtomicU64,
    requests: AtomicU64,
    answers: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
    /// Seconds from the connection's first byte (or its opening) to the server's answer or
    /// close, in milliseconds.
    close_after_ms: std::sync::Mutex<Vec<u64>>,
    /// Body bytes a huge-body attacker had written when the answer came.
    bytes_sent_before_answer: std::sync::Mutex<Vec<u64>>,
    open_now: AtomicU64,
    open_peak: AtomicU64,
}

impl AttackStats {
    fn answer(&self, status: u16) {
        *self
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status)
            .or_default() += 1;
    }
    fn closed(&self, after: Duration) {
        self.closed_by_server.fetch_add(1, Ordering::Relaxed);
        self.close_after_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(after.as_millis() as u64);
    }
    fn opened(&self) -> OpenGuard<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let now = self.open_now.fetch_add(1, Ordering::Relaxed) + 1;
        self.open_peak.fetch_max(now, Ordering::Relaxed);
        OpenGuard(self)
    }
}

struct OpenGuard<'a>(&'a AttackStats);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open_now.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Good {
    latencies_us: Vec<u32>,
    not_ok: u64,
    errors: u64,
    first_error: Option<String>,
}

pub fn run(args: AbuseArgs) -> anyhow::Result<()> {
    let path = std::fs::read_to_string(&args.good_path_file)
        .with_context(|| format!("reading {}", args.good_path_file.display()))?
        .trim()
        .to_owned();
    anyhow::ensure!(path.starts_with('/'), "the good path must start with /");
    let body =
        std::fs::read(&args.body).with_context(|| format!("reading {}", args.body.display()))?;
    let mut good_request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        args.addr,
        body.len()
    )
    .into_bytes();
    good_request.extend_from_slice(&body);
    let good_request: Arc<[u8]> = good_request.into();

    let warmup = Duration::from_secs(1);
    let window = Duration::from_secs(args.seconds);
    let origin = std::time::Instant::now();

    // Good senders: their own thread and single-threaded runtime.
    let good = {
        let (addr, request, rate, connections) = (
            args.addr.clone(),
            good_request.clone(),
            args.good_rate,
            args.good_connections,
        );
        std::thread::spawn(move || -> anyhow::Result<Good> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(good_senders(
                addr,
                request,
                rate,
                connections,
                origin,
                warmup,
                window,
            ))
        })
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stats = Arc::new(AttackStats::default());
    let rss = runtime.block_on(async {
        let start = Instant::from_std(origin) + warmup;
        tokio::time::sleep_until(start).await;
        let before = args.watch_pid.and_then(rss_kb);
        let stop = start + window;
        let peak = Arc::new(AtomicU64::new(before.unwrap_or(0)));
        let watcher = args.watch_pid.map(|pid| {
            let peak = peak.clone();
            tokio::spawn(async move {
                while Instant::now() < stop {
                    if let Some(kb) = rss_kb(pid) {
                        peak.fetch_max(kb, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        });
        let attack = attack(&args, &path, stats.clone(), stop);
        // Attackers still connecting or holding at the deadline are dropped with it.
        let _ = tokio::time::timeout_at(stop, attack).await;
        if let Some(w) = watcher {
            let _ = w.await;
        }
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
        let after = args.watch_pid.and_then(rss_kb);
        json!({"before_kb": before, "peak_kb": peak.load(Ordering::Relaxed), "after_kb": after})
    });
    let good = good
        .join()
        .map_err(|_| anyhow::anyhow!("the good senders' thread panicked"))??;

    let mut latencies = good.latencies_us;
    latencies.sort_unstable();
    let at = |q: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[i]) / 1000.0
    };
    let mut closes = stats
        .close_after_ms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    closes.sort_unstable();
    let median = |v: &[u64]| v.get(v.len() / 2).copied();
    let mut sent = stats
        .bytes_sent_before_answer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    sent.sort_unstable();
    let answers: serde_json::Map<String, serde_json::Value> = stats
        .answers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let report = json!({
        "attack": format!("{:?}", args.attack),
        "seconds": args.seconds,
        "good": {
            "responses": latencies.len() as u64 + good.not_ok,
            "rate": args.good_rate,
            "not_200": good.not_ok,
            "errors": good.errors,
            "first_error": good.first_error,
            "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0),
        },
        "attackers": {
            "connections": stats.connections.load(Ordering::Relaxed),
            "open_peak": stats.open_peak.load(Ordering::Relaxed),
            "connect_errors": stats.connect_errors.load(Ordering::Relaxed),
            "requests": stats.requests.load(Ordering::Relaxed),
            "closed_by_server": stats.closed_by_server.load(Ordering::Relaxed),
            "answers": answers,
            "median_close_ms": median(&closes),
            "min_close_ms": closes.first(),
            "max_body_bytes_sent_before_answer": sent.last(),
        },
        "rss": rss,
    });
    println!("{report}");
    Ok(())
}

/// `VmRSS` of a process, in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn good_senders(
    addr: String,
    request: Arc<[u8]>,
    rate: f64,
    connections: usize,
    origin: std::time::Instant,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Good> {
    anyhow::ensure!(
        rate > 0.0 && connections > 0,
        "--good-rate and --good-connections must be positive"
    );
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let start = Instant::from_std(origin);
    let measure_from = start + warmup;
    let end = measure_from + window;
    let mut tasks = Vec::new();
    for i in 0..connections {
        let (addr, request) = (addr.clone(), request.clone());
        let first = start + interval.mul_f64(i as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            good_connection(&addr, &request, first, interval, measure_from, end).await
        }));
    }
    let mut all = Good::default();
    for task in tasks {
        let g = task.await?;
        all.latencies_us.extend(g.latencies_us);
        all.not_ok += g.not_ok;
        all.errors += g.errors;
        if all.first_error.is_none() {
            all.first_error = g.first_error;
        }
    }
    Ok(all)
}

/// A keep-alive connection sending on a fixed schedule; latency counts from the scheduled send,
/// so a stalled server shows as latency rather than as fewer requests. A broken connection is
/// an error and is reopened.
async fn good_connection(
    addr: &str,
    request: &[u8],
    first: Instant,
    interval: Duration,
    measure_from: Instant,
    end: Instant,
) -> Good {
    let mut good = Good::default();
    let mut stream: Option<TcpStream> = None;
    let mut buffer = Vec::with_capacity(4096);
    let mut scheduled = first;
    while scheduled < end {
        tokio::time::sleep_until(scheduled).await;
        let measured = scheduled >= measure_from;
        let result = async {
            if stream.is_none() {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                stream = Some(s);
            }
            let s = stream.as_mut().expect("connected above");
            s.write_all(request).await?;
            read_response(s, &mut buffer)
                .await
                .map(|(status, _)| status)
        };
        match tokio::time::timeout(Duration::from_secs(10), result).await {
            Ok(Ok(status)) => {
                if measured {
                    let done = Instant::now();
                    if status == 200 {
                        good.latencies_us.push(
                            u32::try_from((done - scheduled).as_micros()).unwrap_or(u32::MAX),
                        );
                    } else {
                        good.not_ok += 1;
                        good.first_error
                            .get_or_insert_with(|| format!("answered {status}"));
                    }
                }
            }
            Ok(Err(e)) => {
                stream = None;
                if measured {
                    good.errors += 1;
                    good.first_error.get_or_insert_with(|| e.to_string());
                }
            }
            Err(_) => {
                stream = None;
                if measured {
                    good.errors += 1;
                    good.first_error
                        .get_or_insert_with(|| "no answer within 10 s".to_owned());
                }
            }
        }
        scheduled += interval;
        // Behind schedule by more than a few intervals: skip ahead rather than burst, and
        // count nothing for the skipped slots (the latency of the late ones already shows it).
        let now = Instant::now();
        if now > scheduled + interval * 8 {
            scheduled = now;
        }
    }
    good
}

async fn attack(args: &AbuseArgs, good_path: &str, stats: Arc<AttackStats>, stop: Instant) {
    let n = args.attackers.unwrap_or(match args.attack {
        Attack::None => 0,
        Attack::Slowloris => 1000,
        Attack::Trickle => 200,
        Attack::Idle => 10_000,
        Attack::Huge => 4,
        Attack::BadTokens => 8,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (addr, stats, path) = (args.addr.clone(), stats.clone(), good_path.to_owned());
        let kind = args.attack;
        tasks.spawn(async move {
            // Spread the connects over the first second: a SYN burst of 10,000 only
            // measures the listen backlog.
            tokio::time::sleep(Duration::from_micros((i as u64 * 1_000_000) / n as u64)).await;
            // A persistent attacker: whatever the server closes is reopened at once.
            while Instant::now() < stop {
                match kind {
                    Attack::None => return,
                    Attack::Slowloris => {
                        let head = b"POST /h/slowloris HTTP/1.1\r\nHost: ingest\r\n".to_vec();
                        let drip = b"X-Slow: 1\r\n".iter().copied().cycle();
                        hold(&addr, head, drip, Duration::from_millis(500), &stats, stop).await;
                    }
                    Attack::Trickle => {
                        let head = format!(
                            "POST {path} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                        )
                        .into_bytes();
                        let drip = std::iter::once(b'{')
                            .chain(std::iter::repeat_n(b' ', 998))
                            .chain(std::iter::once(b'}'));
                        hold(&addr, head, drip, Duration::from_millis(100), &stats, stop).await;
                    }
                    Attack::Idle => {
                        hold(&addr, Vec::new(), std::iter::empty(), Duration::from_secs(3600), &stats, stop).await;
                    }
                    Attack::Huge => huge(&addr, &path, i % 2 == 0, &stats, stop).await,
                    Attack::BadTokens => bad_tokens(&addr, i, &stats, stop).await,
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The status code of a response that starts in `bytes`.
fn status_line(bytes: &[u8]) -> Option<u16> {
    if !bytes.starts_with(b"HTTP/1.1 ") {
        return None;
    }
    std::str::from_utf8(bytes.get(9..12)?).ok()?.parse().ok()
}

/// Opens a connection, writes `head`, then one byte of `drip` per `every`, until the server
/// answers or closes (recorded with the time it took) or `stop`.
async fn hold(
    addr: &str,
    head: Vec<u8>,
    mut drip: impl Iterator<Item = u8>,
    every: Duration,
    stats: &AttackStats,
    stop: Instant,
) {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(_) => {
            stats.connect_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
    };
    let _open = stats.opened();
    let opened = Instant::now();
    if !head.is_empty() {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(&head).await.is_err() {
            stats.closed(opened.elapsed());
            return;
        }
    }
    let mut buffer = [0u8; 512];
    let mut next = opened + every;
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => {
                if let Ok(n) = read && let Some(status) = status_line(&buffer[..n]) {
                    stats.answer(status);
                }
                stats.closed(opened.elapsed());
                return;
            }
            () = tokio::time::sleep_until(next) => {
                next += every;
                if let Some(byte) = drip.next() && stream.write_all(&[byte]).await.is_err() {
                    stats.closed(opened.elapsed());
                    return;
                }
            }
            () = tokio::time::sleep_until(stop) => return,
        }
    }
}

/// Sends a 100 MB body (declared, or chunked without a length) while reading; records the
/// answer and how much had been written when it came.
async fn huge(addr: &str, path: &str, declared: bool, stats: &AttackStats, stop: Instant) {
    const TOTAL: u64 = 100 * 1024 * 1024;
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(_) => {
            stats.connect_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
    };
    let _open = stats.opened();
    let opened = Instant::now();
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let (mut read, mut write) = stream.into_split();
    let written = AtomicU64::new(0);
    let framing = if declared {
        format!("Content-Length: {TOTAL}")
    } else {
        "Transfer-Encoding: chunked".to_owned()
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    );
    let sender = async {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        while written.load(Ordering::Relaxed) < TOTAL {
            if declared {
                write.write_all(&chunk).await?;
            } else {
                write.write_all(&framed).await?;
            }
            written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        if !declared {
            write.write_all(b"0\r\n\r\n").await?;
        }
        // Everything sent: now only the answer matters.
        std::future::pending::<std::io::Result<()>>().await
    };
    let mut buffer = [0u8; 512];
    tokio::select! {
        result = read.read(&mut buffer) => {
            if let Ok(n) = result && let Some(status) = status_line(&buffer[..n]) {
                stats.answer(status);
            }
            stats
                .bytes_sent_before_answer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(written.load(Ordering::Relaxed));
            stats.closed(opened.elapsed());
        }
        // The server stopped reading and reset: that counts as closed too.
        Err(_) = sender => stats.closed(opened.elapsed()),
        () = tokio::time::sleep_until(stop) => {}
    }
}

/// Keep-alive requests to tokens that do not exist, as fast as answers come: random ones of the
/// right length, a short one, a long one, and ones with extra path segments.
async fn bad_tokens(addr: &str, attacker: usize, stats: &AttackStats, stop: Instant) {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(_) => {
            stats.connect_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
    };
    let _open = stats.opened();
    let _ = stream.set_nodelay(true);
    let body = br#"{"id":"evt_abuse","type":"invoice.paid"}"#;
    let mut buffer = Vec::with_capacity(1024);
    let mut n: u64 = 0;
    while Instant::now() < stop {
        n += 1;
        // Every token carries the marker `abusebadtoken` so the leak scan can look for it.
        let token = match n % 4 {
            0 => format!("abusebadtoken{attacker:04x}{n:028x}"),
            1 => format!("abusebadtoken{n:x}"),
            2 => format!("abusebadtoken{}", "z".repeat(2000)),
            _ => format!("abusebadtoken{n:x}/extra/segment"),
        };
        let request = format!(
            "POST /h/{token} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let answered = async {
            stream.write_all(&bytes).await?;
            read_response(&mut stream, &mut buffer)
                .await
                .map(|(status, _)| status)
        };
        match answered.await {
            Ok(status) => stats.answer(status),
            Err(_) => {
                stats.closed(Duration::ZERO);
                return;
            }
        }
    }
}
