//! `hookgate standalone` end to end: the real binary on a copy of `examples/`, driven over
//! HTTP, its stdout (events) and stderr (URLs, problems) read as a user would.

mod ingest_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest_support::{get, request, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

struct Standalone {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Standalone {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .arg("standalone")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting hookgate standalone");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until at least `n` events were read from stdout (the child wrote and flushed them
    /// before answering; our reader thread may not have read them yet).
    async fn wait_events(&self, n: usize) -> Vec<serde_json::Value> {
        wait_for(&format!("{n} event(s) on stdout"), LIMIT, || async {
            let events = self.events();
            (events.len() >= n).then_some(events)
        })
        .await
    }

    fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).expect("stdout carries only JSON events"))
            .collect()
    }

    async fn wait_stderr(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_for(what, LIMIT, || async {
            self.stderr().into_iter().find(|l| pred(l))
        })
        .await
    }

    /// (webhook address, admin address) from the start-up line.
    async fn addresses(&self) -> (SocketAddr, SocketAddr) {
        let line = self
            .wait_stderr("start-up line", |l| l.starts_with("hookgate standalone:"))
            .await;
        let addrs: Vec<SocketAddr> = line
            .split("http://")
            .skip(1)
            .map(|s| s.split([',', '/', ' ']).next().unwrap().parse().unwrap())
            .collect();
        (addrs[0], addrs[1])
    }

    /// The path part (`/h/<token>`) of a source's printed URL.
    async fn path_of(&self, source: &str) -> String {
        let prefix = format!("source default/{source}: ");
        let line = self
            .wait_stderr(&format!("URL of {source}"), |l| l.starts_with(&prefix))
            .await;
        let url = line.trim_start_matches(&prefix);
        url[url.find("/h/").unwrap()..].to_owned()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hookgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
        &dir,
    );
    dir
}

const TWILIO_FORM: &str =
    "MessageSid=SM0001&From=%2B14155550123&To=%2B14155550100&Body=hi&NumSegments=1&FromCountry=US";

async fn post_form(addr: SocketAddr, path: &str, body: &str) -> ingest_support::Reply {
    request(
        addr,
        "POST",
        path,
        &[("content-type", "application/x-www-form-urlencoded")],
        body.to_owned(),
    )
    .await
}

#[tokio::test]
async fn standalone_serves_the_examples_and_reloads_on_change() {
    let dir = temp_dir("examples");
    // A user-provided token for twilio-sms, as the Secret one would kubectl apply.
    std::fs::write(
        dir.join("twilio/token.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: twilio-sms-webhook-token}\ndata:\n  token: dHdpbGlvLXRva2VuLWZyb20tc2VjcmV0LTEyMzQ1Ng==\n",
    )
    .unwrap();
    let sa = Standalone::start(&dir, &[]);
    let (addr, admin) = sa.addresses().await;

    // Every example source gets a URL; the user's Secret supplies twilio's token.
    let twilio = sa.path_of("twilio-sms").await;
    assert_eq!(twilio, "/h/twilio-token-from-secret-123456");
    let app_events = sa.path_of("app-events").await;
    assert_eq!(
        app_events.len(),
        "/h/".len() + 43,
        "generated token: {app_events}"
    );
    for source in ["github", "shopify", "stripe"] {
        sa.path_of(source).await;
    }
    let stderr = sa.stderr().join("\n");
    // Every scheme is verified now, so no source is flagged as unverifiable.
    assert!(!stderr.contains("cannot be verified"), "{stderr}");

    // Form-encoded Twilio request: delivered, printed on stdout as a CloudEvent.
    let reply = post_form(addr, &twilio, TWILIO_FORM).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let events = sa.wait_events(1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "SMS Received");
    assert_eq!(
        events[0]["source"],
        "/namespaces/default/webhooksources/twilio-sms"
    );

    // A signed source refuses an unsigned request.
    let stripe = sa.path_of("stripe").await;
    let refused = request(
        addr,
        "POST",
        &stripe,
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(refused.status, 401, "{}", refused.text);

    // A bad file is reported with file, line, field and reason; the rest keeps working.
    std::fs::write(
        dir.join("bad-mapping.yaml"),
        "apiVersion: hookgate.dev/v1alpha1\nkind: Mapping\nmetadata: {name: broken}\nspec:\n  sourceRef: {name: twilio-sms}\n  event:\n    name: X\n    email: \"{{From | lowr}}\"\n",
    )
    .unwrap();
    let problem = sa
        .wait_stderr("the bad file reported", |l| l.contains("bad-mapping.yaml"))
        .await;
    assert!(problem.starts_with("error: "), "{problem}");
    assert!(
        problem.contains("bad-mapping.yaml:1: spec.event.email: position"),
        "{problem}"
    );
    assert!(problem.contains("lowr"), "{problem}");
    assert_eq!(
        post_form(addr, &twilio, &TWILIO_FORM.replace("SM0001", "SM0002"))
            .await
            .status,
        200
    );

    // An edited mapping is in force after the reload; the generated token did not change.
    let mapping = dir.join("twilio/mapping.yaml");
    let edited = std::fs::read_to_string(&mapping)
        .unwrap()
        .replace("name: SMS Received", "name: SMS Inbound");
    std::fs::write(&mapping, edited).unwrap();
    wait_for("the edited mapping in force", LIMIT, || async {
        let id = format!("SM{}", rand_suffix());
        post_form(addr, &twilio, &TWILIO_FORM.replace("SM0001", &id)).await;
        sa.events()
            .iter()
            .any(|e| e["type"] == "SMS Inbound")
            .then_some(())
    })
    .await;
    let batch = r#"{"app": {"name": "web"}, "events": [{"type": "Viewed", "id": "m-1", "anonymous_id": "a-1"}]}"#;
    let still = request(
        addr,
        "POST",
        &app_events,
        &[("content-type", "application/json")],
        batch,
    )
    .await;
    assert_eq!(
        still.status, 200,
        "generated token changed on reload: {}",
        still.text
    );
    assert_eq!(still.json()["eventIds"], serde_json::json!(["m-1"]));
    let printed = sa
        .stderr()
        .iter()
        .filter(|l| l.starts_with("source default/app-events:"))
        .count();
    assert_eq!(printed, 1, "a source's URL is printed once");

    // Status on the admin port, with the URL redacted.
    let status = get(admin, "/status").await.json();
    let twilio_status = status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "twilio-sms")
        .unwrap()
        .clone();
    assert!(twilio_status["counters"]["delivered"].as_i64().unwrap() >= 3);
    assert_eq!(twilio_status["url"], format!("http://{addr}/h/****3456"));
    assert!(!status.to_string().contains("twilio-token-from-secret"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(100);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

#[tokio::test]
async fn insecure_flag_serves_signed_sources_without_verification_and_says_so() {
    let dir = temp_dir("insecure");
    let sa = Standalone::start(&dir, &["--insecure-skip-signatures"]);
    let (addr, _) = sa.addresses().await;
    let stripe = sa.path_of("stripe").await;
    sa.wait_stderr("the warning", |l| l.contains("NOT verified"))
        .await;
    let body = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/mapping/testdata/stripe_invoice_paid.json"),
    )
    .unwrap();
    let reply = request(
        addr,
        "POST",
        &stripe,
        &[("content-type", "application/json")],
        body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(sa.wait_events(1).await[0]["type"], "Purchase");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn suggest_from_a_running_standalones_status_proposes_an_applicable_mapping() {
    let dir = temp_dir("suggest");
    let sa = Standalone::start(&dir, &[]);
    let (addr, admin) = sa.addresses().await;
    let twilio = sa.path_of("twilio-sms").await;
    let reply = post_form(addr, &twilio, TWILIO_FORM).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let output = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["suggest", "--source", "twilio-sms", "--from-status"])
        .arg(format!("http://{admin}/status"))
        .output()
        .unwrap();
    let yaml = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mapping: hookgate::api::Mapping = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(mapping.spec.source_ref.name, "twilio-sms");
    assert_eq!(
        mapping.spec.event.external_id.as_deref(),
        Some("{{From | sha256}}"),
        "{yaml}"
    );
    assert_eq!(mapping.spec.event.id.as_deref(), Some("{{MessageSid}}"));
    assert!(yaml.contains("# guess"), "{yaml}");

    let unknown = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["suggest", "--source", "nope", "--from-status"])
        .arg(format!("http://{admin}/status"))
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no source \"nope\""));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_declared_signing_secret_rotation_window_holds_in_standalone_until_its_end() {
    let dir = std::env::temp_dir().join(format!("hookgate-rotation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ends = k8s_openapi::jiff::Timestamp::now().as_second() + 4;
    let ends = k8s_openapi::jiff::Timestamp::from_second(ends).unwrap();
    std::fs::write(
        dir.join("source.yaml"),
        format!(
            r#"
apiVersion: hookgate.dev/v1alpha1
kind: WebhookSource
metadata: {{name: gh}}
spec:
  signature:
    type: github
    secretRef: {{name: signing-new}}
    previousSecretRef: {{name: signing-old}}
    previousSecretExpiresAt: "{ends}"
---
apiVersion: v1
kind: Secret
metadata: {{name: signing-new}}
stringData: {{secret: new-standalone-secret}}
---
apiVersion: v1
kind: Secret
metadata: {{name: signing-old}}
stringData: {{secret: old-standalone-secret}}
---
apiVersion: hookgate.dev/v1alpha1
kind: Mapping
metadata: {{name: gh-push}}
spec:
  sourceRef: {{name: gh}}
  event: {{name: Push, externalId: "{{{{sender}}}}"}}
"#
        ),
    )
    .unwrap();
    let sa = Standalone::start(&dir, &[]);
    let (addr, _) = sa.addresses().await;
    let path = sa.path_of("gh").await;
    let body = r#"{"sender":"octocat"}"#;
    let post = |secret: &'static str| {
        let path = path.clone();
        async move {
            let headers = hookgate::ingest::verify::sign(&hookgate::ingest::verify::SignRequest {
                scheme: hookgate::api::webhook_source::SignatureScheme::Github,
                secret,
                body: body.as_bytes(),
                now_unix: 0,
                message_id: "",
                header: None,
                algorithm: None,
                encoding: None,
                prefix: None,
            })
            .unwrap();
            let (name, value) = &headers[0];
            let headers = [
                ("content-type", "application/json"),
                (name.as_str(), value.as_str()),
            ];
            request(addr, "POST", &path, &headers, body.to_owned())
                .await
                .status
        }
    };
    assert_eq!(post("new-standalone-secret").await, 200);
    assert_eq!(
        post("old-standalone-secret").await,
        200,
        "within the window"
    );
    assert!(
        k8s_openapi::jiff::Timestamp::now() < ends,
        "the window must still be open here"
    );
    // No reload, no file change: the window closes at its end by itself.
    let refused_at = wait_for("the old secret refused", LIMIT, || async {
        (post("old-standalone-secret").await == 401).then(k8s_openapi::jiff::Timestamp::now)
    })
    .await;
    assert!(refused_at >= ends, "refused at {refused_at}, before {ends}");
    assert_eq!(post("new-standalone-secret").await, 200);
    let _ = std::fs::remove_dir_all(&dir);
}
