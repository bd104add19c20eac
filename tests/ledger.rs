//! The no-loss ledger, short: recording senders (`hookgate bench-ledger send`) against the real
//! operator and ingest on the test control plane; the ingest is killed with SIGKILL mid-run and
//! restarted, the HTTP sink is stopped until senders are refused; then every event answered
//! 200 must be at its sink. The full run (30 s outages, NATS, the API server stopped, a leak
//! scan of every output) is `scripts/ledger`, recorded in RELIABILITY.md.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use hookgate::api::webhook_source::WebhookSource;
use hookgate::ingest::ledger::Attempt;
use serde_json::Value;
use support::cluster::Cluster;
use support::{Process, eventually, log_field};

/// SIGSTOP on a process; SIGCONT when dropped, even if the test fails.
struct Paused(u32);

impl Paused {
    fn new(pid: u32) -> Paused {
        signal("-STOP", pid);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(which: &str, pid: u32) {
    let ok = Command::new("kill")
        .arg(which)
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {which} {pid} failed");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The ledger as far as it is written; a line being appended right now is skipped.
fn ledger(path: &Path) -> Vec<Attempt> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Attempts of `target` sent at or after `since` and answered `status` (0: no answer).
fn answered(path: &Path, target: &str, status: u16, since: u64) -> usize {
    ledger(path)
        .iter()
        .filter(|a| a.target == target && a.status == status && a.sent_ms >= since)
        .count()
}

fn ready(admin: &str) -> bool {
    std::net::TcpStream::connect(admin).is_ok() && support::http_get(admin, "/readyz").0 == 200
}

struct Run {
    dir: PathBuf,
    port: u16,
    admin: String,
    ns: String,
    receiver: String,
    kubeconfig: PathBuf,
}

impl Run {
    async fn ingest(&self, n: u32) -> Process {
        let process = Process::start_with_stdout(
            &[
                "ingest",
                "--namespace",
                &self.ns,
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--admin-listen",
                &self.admin,
                "--status-interval",
                "1s",
                "--default-sink",
                &format!("http://{}/events", self.receiver),
            ],
            &self.kubeconfig,
            self.dir.join(format!("ingest-{n}.log")),
            Some(&self.dir.join(format!("stdout-{n}.jsonl"))),
        );
        eventually(30, &format!("ingest {n} ready"), || {
            ready(&self.admin).then_some(())
        })
        .await;
        process
    }
}

const SOURCES: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: ledger-signing}
stringData: {secret: SIGNING}
---
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: http}
spec:
  signature: {type: github, secretRef: {name: ledger-signing, key: secret}}
---
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {name: stdout}
spec:
  signature: {type: github, secretRef: {name: ledger-signing, key: secret}}
  sink: {stdout: {}}
"#;

fn mapping(source: &str) -> String {
    format!(
        r#"
apiVersion: hookgate.dev/v1alpha1
kind: Mapping
metadata: {{name: {source}-orders}}
spec:
  sourceRef: {{name: {source}}}
  when: [{{path: "{{{{type}}}}", equals: order.paid}}]
  event:
    name: Order Paid
    id: "{{{{id}}}}"
    externalId: "{{{{customer.id}}}}"
    email: "{{{{customer.email}}}}"
    properties:
      fields: {{seq: "{{{{seq}}}}", amount: "{{{{amount}}}}"}}
"#
    )
}

#[tokio::test]
async fn a_killed_ingest_and_a_stopped_sink_lose_no_acknowledged_event() {
    let c = Cluster::new().await;
    let dir = c.dir.0.clone();
    let receiver = Process::start(
        &[
            "bench-ledger",
            "receive",
            "--out",
            dir.join("http-sink.jsonl").to_str().unwrap(),
        ],
        &c.ingest_kubeconfig,
        dir.join("receiver.log"),
    );
    let receiver_addr = eventually(30, "receiver listening", || {
        log_field(&receiver.logs(), "receiver listening", "addr")
    })
    .await;
    let run = Run {
        dir: dir.clone(),
        port: free_port(),
        admin: format!("127.0.0.1:{}", free_port()),
        ns: c.ns.clone(),
        receiver: receiver_addr,
        kubeconfig: c.ingest_kubeconfig.clone(),
    };
    let mut first = run.ingest(1).await;
    let operator = c.operator(&format!("http://127.0.0.1:{}", run.port));

    let secret = format!("whsec-test-{:x}", now_ms());
    let manifests = format!(
        "{}---{}---{}",
        SOURCES.replace("SIGNING", &secret),
        mapping("http"),
        mapping("stdout")
    );
    support::kubectl_ok(&["apply", "-n", &c.ns, "-f", "-"], Some(&manifests));
    let mut targets = String::new();
    let mut tokens = Vec::new();
    for name in ["http", "stdout"] {
        c.wait_source(name, "source has a URL", |s: &WebhookSource| {
            s.status.as_ref().is_some_and(|st| st.url.is_some())
        })
        .await;
        let url = c.url(name).await;
        tokens.push(url.rsplit_once("/h/").unwrap().1.to_owned());
        targets.push_str(&format!("{name} {url}\n"));
    }
    // A route in force before its mapping answers 200 "ignored": wait for both.
    eventually(30, "routes with their mappings at the ingest", || {
        let (_, body) = support::http_get(&run.admin, "/status");
        let status: Value = serde_json::from_str(&body).ok()?;
        let mapped = status["sources"]
            .as_array()?
            .iter()
            .filter(|s| s["mappings"].as_array().is_some_and(|m| !m.is_empty()))
            .count();
        (mapped == 2).then_some(())
    })
    .await;
    std::fs::write(dir.join("targets"), targets).unwrap();

    let ledger_path = dir.join("ledger.jsonl");
    let stop = dir.join("stop");
    let mut sender = Process::start(
        &[
            "bench-ledger",
            "send",
            "--targets",
            dir.join("targets").to_str().unwrap(),
            "--ledger",
            ledger_path.to_str().unwrap(),
            "--run",
            "T",
            "--senders",
            "4",
            "--interval",
            "20ms",
            "--stop-file",
            stop.to_str().unwrap(),
            "--drain",
            "20s",
            "--max-duration",
            "2m",
            "--secret",
            &secret,
        ],
        &c.ingest_kubeconfig,
        dir.join("sender.log"),
    );
    let acked_since = |target: &'static str, since: u64, n: usize, what: &'static str| {
        let path = ledger_path.clone();
        async move {
            eventually(30, what, || {
                (answered(&path, target, 200, since) >= n).then_some(())
            })
            .await
        }
    };
    acked_since("http", 0, 20, "steady load through the HTTP sink").await;
    acked_since("stdout", 0, 20, "steady load through the stdout sink").await;

    // kill -9 mid-run: requests in flight lose their answer and are retried.
    let killed = now_ms();
    first.kill();
    eventually(30, "senders refused while the ingest is down", || {
        (answered(&ledger_path, "http", 0, killed) > 0).then_some(())
    })
    .await;
    let second = run.ingest(2).await;
    let restarted = now_ms();
    acked_since("http", restarted, 20, "200s after the restart").await;
    acked_since("stdout", restarted, 20, "200s after the restart").await;

    // The HTTP sink stops answering: senders get 503 after the sink's budget, not a 200.
    let stopped = now_ms();
    {
        let _paused = Paused::new(receiver.child.id());
        eventually(30, "503 while the HTTP sink is stopped", || {
            (answered(&ledger_path, "http", 503, stopped) > 0).then_some(())
        })
        .await;
    }
    let resumed = now_ms();
    acked_since("http", resumed, 20, "200s after the sink is back").await;

    std::fs::write(&stop, "").unwrap();
    let status = eventually(60, "the sender drained and exited", || {
        sender.child.try_wait().unwrap()
    })
    .await;
    assert!(status.success(), "sender: {}", sender.logs());

    let summary_path = dir.join("summary.json");
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["bench-ledger", "reconcile", "--ledger"])
        .arg(&ledger_path)
        .arg("--events")
        .arg(format!("http={}", dir.join("http-sink.jsonl").display()))
        .arg("--events")
        .arg(format!("stdout={}", dir.join("stdout-1.jsonl").display()))
        .arg("--events")
        .arg(format!("stdout={}", dir.join("stdout-2.jsonl").display()))
        .arg("--summary")
        .arg(&summary_path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["acknowledged_and_lost"], 0, "{summary:#}");
    assert_eq!(summary["foreign_or_mismatched"], 0, "{summary:#}");
    assert!(
        out.status.success(),
        "reconcile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The faults happened and were survived: refusals, 503s, retries, and most events through.
    assert!(
        summary["connection_errors"].as_u64().unwrap() > 0,
        "{summary:#}"
    );
    assert!(summary["answered_503"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(summary["retries"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(
        summary["events_acknowledged"].as_u64().unwrap() >= 100,
        "{summary:#}"
    );
    // Every answer was 200, a 503 or no answer at all: nothing a sender would take as final.
    assert_eq!(summary["answered_other"], 0, "{summary:#}");
    assert_eq!(
        summary["answered_503_without_retry_after"], 0,
        "{summary:#}"
    );

    // Nothing secret in what the ingest and the operator wrote.
    let logs = [
        std::fs::read_to_string(dir.join("ingest-1.log")).unwrap(),
        second.logs(),
        operator.logs(),
    ]
    .join("\n");
    for needle in tokens
        .iter()
        .chain([&secret, &"@ledger-mail.example".to_owned()])
    {
        assert!(!logs.contains(needle.as_str()), "a log contains {needle}");
    }
}
