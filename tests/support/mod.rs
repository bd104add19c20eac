//! Test support: one real control plane (etcd + kube-apiserver + kube-controller-manager)
//! per test binary, a random namespace per test.
//!
//! The control plane comes from `tests/control-plane/up`, the same script people use by hand.
//! `HOOKGATE_TEST_KUBECONFIG` reuses one that is already running (the test command starts one
//! for the whole suite); otherwise this binary starts its own, and the script's watchdog stops
//! it when the binary exits, however it exits.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod cluster;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

pub const FIELD_MANAGER: &str = "hookgate.dev/tests";

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub struct ControlPlane {
    pub kubeconfig: PathBuf,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

/// The shared control plane, started on first use. Panics with the script's output if it
/// cannot start: a test that needs the API server never skips silently.
pub fn control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(|| {
        if let Ok(path) = std::env::var("HOOKGATE_TEST_KUBECONFIG") {
            let kubeconfig = PathBuf::from(path);
            assert!(
                kubeconfig.is_file(),
                "HOOKGATE_TEST_KUBECONFIG={} does not exist",
                kubeconfig.display()
            );
            return ControlPlane { kubeconfig };
        }
        start_control_plane()
    })
}

/// This binary's own control plane, whatever `HOOKGATE_TEST_KUBECONFIG` says: for tests that
/// stop the API server and must not disturb anyone else. Call it before anything else.
pub fn private_control_plane() -> &'static ControlPlane {
    CONTROL_PLANE.get_or_init(start_control_plane)
}

fn start_control_plane() -> ControlPlane {
    {
        let script = repo_root().join("tests/control-plane/up");
        let out = Command::new(&script)
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} failed ({}): {stdout}",
            script.display(),
            out.status
        );
        let kubeconfig = stdout
            .lines()
            .last()
            .and_then(|line| line.strip_prefix("KUBECONFIG="))
            .unwrap_or_else(|| panic!("unexpected output from {}: {stdout}", script.display()));
        ControlPlane {
            kubeconfig: PathBuf::from(kubeconfig),
        }
    }
}

impl ControlPlane {
    /// The kube-apiserver's process id (from the run directory `up` made).
    pub fn apiserver_pid(&self) -> i32 {
        let pidfile = self.kubeconfig.parent().unwrap().join("kube-apiserver.pid");
        std::fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("reading {}: {e}", pidfile.display()))
            .trim()
            .parse()
            .unwrap()
    }
}

/// A client for the admin identity. One per test: a client is bound to the runtime that made it.
pub async fn client() -> Client {
    let cp = control_plane();
    let kubeconfig = Kubeconfig::read_from(&cp.kubeconfig).expect("reading the test kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("building a client config from the test kubeconfig");
    Client::try_from(config).expect("building a client")
}

/// A fresh namespace named `t-<random>`, with the CRDs installed.
pub async fn namespace(client: &Client) -> String {
    install_crds(client).await;
    let name = format!(
        "t-{:012x}",
        RandomState::new().hash_one(std::time::SystemTime::now()) & 0xffff_ffff_ffff
    );
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"hookgate.dev/test": "true"}}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// Applies the committed CRDs with server-side apply and waits until both are Established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in hookgate::api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established within 30s"))
        .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
    }
}

/// Runs kubectl against the test control plane, as a user would.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let cp = control_plane();
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("kubectl must be installed (it is on the PATH of the test machine)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .expect("writing kubectl's stdin");
    }
    child.wait_with_output().expect("waiting for kubectl")
}

/// kubectl that must succeed; returns its stdout.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(args, stdin);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every YAML file under `examples/`, sorted.
pub fn example_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo_root().join("examples"), &mut files);
    files.sort();
    files
}

/// Renders a chart template that uses only `{{ .Release.Name }}` and `{{ .Release.Namespace }}`
/// (the RBAC files are kept that simple so tests can apply exactly what the chart ships).
pub fn render_chart_file(relative: &str, release: &str, namespace: &str) -> String {
    let path = repo_root().join("charts/hookgate/templates").join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let rendered = text
        .replace("{{ .Release.Name }}", release)
        .replace("{{ .Release.Namespace }}", namespace);
    assert!(
        !rendered.contains("{{"),
        "{} uses templating beyond .Release.Name/.Release.Namespace",
        path.display()
    );
    rendered
}

/// A kubeconfig for a ServiceAccount (a TokenRequest token), so a process runs with exactly
/// the RBAC bound to that account.
pub fn service_account_kubeconfig(namespace: &str, account: &str, dir: &Path) -> PathBuf {
    let token = kubectl_ok(
        &["create", "token", account, "-n", namespace, "--duration=2h"],
        None,
    );
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&control_plane().kubeconfig).unwrap())
            .unwrap();
    let cluster = admin["clusters"][0]["cluster"].clone();
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token.trim()}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": account, "namespace": namespace}}],
        "current-context": "test",
    });
    let path = dir.join(format!("{namespace}-{account}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// A `hookgate` subcommand running as a child process; killed when dropped. Its stderr (the
/// logs) goes to a file the test can read, e.g. to prove no secret was logged.
pub struct Process {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Process {
    pub fn start(args: &[&str], kubeconfig: &Path, log: PathBuf) -> Process {
        Process::start_with_stdout(args, kubeconfig, log, None)
    }

    /// As `start`, with standard output (the stdout sink's events) going to `stdout`.
    pub fn start_with_stdout(
        args: &[&str],
        kubeconfig: &Path,
        log: PathBuf,
        stdout: Option<&Path>,
    ) -> Process {
        let file = std::fs::File::create(&log).unwrap();
        let out = match stdout {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn,hookgate=debug")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(file)
            .spawn()
            .expect("starting the hookgate binary");
        Process { child, log }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temporary directory for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{:x}",
            std::process::id(),
            RandomState::new().hash_one(std::time::SystemTime::now())
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until `check` holds for the named object, or panics after `secs` with `what`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    secs: u64,
    what: &str,
    check: impl Fn(&K) -> bool,
) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let cond = move |obj: Option<&K>| obj.is_some_and(&check);
    match tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(api.clone(), name, cond),
    )
    .await
    {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{what}: {name} disappeared"),
        Ok(Err(e)) => panic!("{what}: watching {name}: {e}"),
        Err(_) => panic!(
            "{what}: not true within {secs}s; last seen: {:?}",
            api.get_opt(name).await
        ),
    }
}

/// Waits until the named object is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, secs: u64, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let cond = |obj: Option<&K>| obj.is_none();
    if tokio::time::timeout(
        Duration::from_secs(secs),
        await_condition(api.clone(), name, cond),
    )
    .await
    .is_err()
    {
        panic!("{what}: {name} still exists after {secs}s");
    }
}

/// A plain HTTP/1.1 GET on loopback; returns (status, body). For admin endpoints in tests.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends one raw HTTP/1.1 request with `Connection: close`; returns (status, body).
fn http_request(addr: &str, request: &str) -> (u16, String) {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of `key=` in the first log line containing `marker`.
pub fn log_field(logs: &str, marker: &str, key: &str) -> Option<String> {
    let line = logs.lines().find(|l| l.contains(marker))?;
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    Some(
        line[start..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_owned(),
    )
}

/// A plain HTTP/1.1 POST of a JSON body on loopback; returns (status, body).
pub fn http_post(addr: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    http_request(addr, &request)
}

/// Polls `check` every 50 ms until it returns Some, or panics after `secs` with `what`.
/// For conditions outside the API server (a file, an HTTP answer) that cannot be watched.
pub async fn eventually<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not true within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
