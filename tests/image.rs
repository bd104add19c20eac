//! The container image, built without a container engine by `scripts/build-image` and
//! checked the way a kubelet would use it: pushed to a registry (crane's, on loopback), its
//! config read back, its filesystem exported, and the binary in it run chrooted into that
//! filesystem as the image's user, so nothing from this machine (libc, certificates, a shell)
//! can make it pass.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::repo_root;

const ENTRYPOINT: &str = "/usr/local/bin/hookgate";
const USER: &str = "65532:65532";
/// The image's PATH; also where this machine keeps chroot.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const LIMIT: Duration = Duration::from_secs(30);

/// Everything the tests read from one build, gathered while the registry was up.
struct Built {
    digest: String,
    config: Value,
    /// `tar -tv` of the exported filesystem, one line per entry.
    listing: Vec<String>,
    rootfs: PathBuf,
}

static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();

/// The build every test reads; built once, and a failed build fails every test with its
/// reason instead of being retried by each.
fn built() -> &'static Built {
    let result = BUILT.get_or_init(|| {
        std::panic::catch_unwind(build_push_and_export).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        })
    });
    match result {
        Ok(built) => built,
        Err(reason) => panic!("building the image failed: {reason}"),
    }
}

fn build_push_and_export() -> Built {
    assert!(
        is_root(),
        "the image tests run the image's binary chrooted into its filesystem as uid 65532, \
         which needs root (CI and the development machines run as root)"
    );
    let crane = crane();
    let registry = Registry::start(&crane);
    let reference = format!("{}/hookgate:test", registry.addr);

    let out = run(
        Command::new(repo_root().join("scripts/build-image"))
            .args(["--push", &reference])
            .current_dir(repo_root()),
        "scripts/build-image --push",
    );
    let digest = last_line(&out).to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "scripts/build-image printed {digest:?} as its last line, not a digest"
    );
    let recorded = std::fs::read_to_string(repo_root().join("target/image/digest")).unwrap();
    assert_eq!(recorded.trim(), digest, "target/image/digest");
    assert!(
        repo_root().join("target/image/oci/index.json").is_file(),
        "no OCI layout in target/image/oci"
    );

    // What the registry holds is what was built, and every blob matches its digest.
    let pushed = run(
        Command::new(&crane).args(["digest", &reference]),
        "crane digest",
    );
    assert_eq!(pushed.trim(), digest, "digest of the pushed image");
    run(
        Command::new(&crane).args(["validate", "--remote", &reference]),
        "crane validate",
    );
    let config: Value = serde_json::from_str(&run(
        Command::new(&crane).args(["config", &reference]),
        "crane config",
    ))
    .expect("crane config prints JSON");

    let rootfs = repo_root().join("target/image/test-rootfs");
    let _ = std::fs::remove_dir_all(&rootfs);
    std::fs::create_dir_all(&rootfs).unwrap();
    let export = rootfs.with_extension("tar");
    run(
        Command::new(&crane)
            .args(["export", &reference])
            .arg(&export),
        "crane export",
    );
    let listing = run(
        Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&export),
        "tar -tv",
    );
    // As root, tar keeps the owners and modes the layer records.
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&export)
            .arg("-C")
            .arg(&rootfs),
        "tar -x",
    );
    Built {
        digest,
        config,
        listing: listing.lines().map(str::to_owned).collect(),
        rootfs,
    }
}

#[test]
fn image_runs_the_binary_as_nonroot_with_oci_labels() {
    let config = &built().config;
    assert_eq!(config["os"], "linux", "{config}");
    assert_eq!(config["architecture"], "amd64", "{config}");
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!([ENTRYPOINT]), "{config}");
    assert_eq!(c["User"], USER, "{config}");
    assert!(
        c["Cmd"].is_null(),
        "a Cmd would be passed to the entrypoint: {config}"
    );
    for port in ["8080/tcp", "8081/tcp", "9090/tcp"] {
        assert!(c["ExposedPorts"].get(port).is_some(), "{port}: {config}");
    }
    let labels = &c["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION"),
        "{config}"
    );
    let source = labels["org.opencontainers.image.source"]
        .as_str()
        .unwrap_or("");
    assert!(source.starts_with("https://"), "source label: {config}");
    // A full commit id, marked when the sources differed from it.
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap_or("");
    let commit = revision.strip_suffix("-dirty").unwrap_or(revision);
    assert!(
        commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "revision label {revision:?}"
    );
}

#[test]
fn image_holds_only_the_binary_users_and_certificates_and_no_shell() {
    let built = built();
    let mut entries = BTreeSet::new();
    for line in &built.listing {
        // drwxr-xr-x 0/0 0 1970-01-01 00:00 etc/
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 6, "unexpected tar listing line {line:?}");
        entries.insert((fields[5].trim_end_matches('/'), fields[0], fields[1]));
    }
    let expected = BTreeSet::from([
        ("etc", "drwxr-xr-x", "0/0"),
        ("etc/group", "-rw-r--r--", "0/0"),
        ("etc/passwd", "-rw-r--r--", "0/0"),
        ("etc/ssl", "drwxr-xr-x", "0/0"),
        ("etc/ssl/certs", "drwxr-xr-x", "0/0"),
        ("etc/ssl/certs/ca-certificates.crt", "-rw-r--r--", "0/0"),
        ("home", "drwxr-xr-x", "0/0"),
        ("home/nonroot", "drwx------", "65532/65532"),
        ("tmp", "drwxrwxrwt", "0/0"),
        ("usr", "drwxr-xr-x", "0/0"),
        ("usr/local", "drwxr-xr-x", "0/0"),
        ("usr/local/bin", "drwxr-xr-x", "0/0"),
        ("usr/local/bin/hookgate", "-rwxr-xr-x", "0/0"),
    ]);
    assert_eq!(entries, expected, "the image's filesystem");
    for shell in ["bin/sh", "bin/bash", "bin/busybox", "usr/bin/sh"] {
        assert!(
            !built.rootfs.join(shell).exists(),
            "{shell} in the image: it is meant to have no shell"
        );
    }

    let passwd = std::fs::read_to_string(built.rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:nonroot:/home/nonroot:")),
        "{passwd}"
    );
    let group = std::fs::read_to_string(built.rootfs.join("etc/group")).unwrap();
    assert!(group.lines().any(|l| l == "nonroot:x:65532:"), "{group}");
    let home = std::fs::metadata(built.rootfs.join("home/nonroot")).unwrap();
    assert_eq!((home.uid(), home.gid()), (65532, 65532));
    let bundle =
        std::fs::read_to_string(built.rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    let certificates = bundle.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(
        certificates > 100,
        "{certificates} certificates in the bundle"
    );
}

#[test]
fn image_binary_is_a_static_x86_64_executable() {
    let binary = std::fs::read(built().rootfs.join(ENTRYPOINT.trim_start_matches('/'))).unwrap();
    let program_headers = elf_program_header_types(&binary);
    const PT_LOAD: u32 = 1;
    const PT_INTERP: u32 = 3;
    assert!(program_headers.contains(&PT_LOAD), "{program_headers:?}");
    assert!(
        !program_headers.contains(&PT_INTERP),
        "the binary names a program interpreter (dynamically linked): {program_headers:?}"
    );
}

/// The `p_type` of every program header of a 64-bit little-endian x86-64 ELF file.
fn elf_program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    assert_eq!(elf[5], 1, "not little-endian");
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    const EM_X86_64: u16 = 62;
    assert_eq!(u16_at(0x12), EM_X86_64, "not an x86-64 binary");
    let (offset, size, count) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    assert!(count > 0, "no program headers");
    (0..count as usize)
        .map(|i| u32_at(offset + i * size as usize))
        .collect()
}

#[test]
fn image_binary_prints_the_repository_crds() {
    let built = built();
    let dir = format!("/tmp/crds-{}", std::process::id());
    run(
        &mut in_image(&built.rootfs, &["crds", "--out-dir", &dir]),
        "hookgate crds in the image",
    );
    let written = built.rootfs.join(dir.trim_start_matches('/'));
    let names = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap_or_else(|e| panic!("reading {}: {e}", d.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let committed = repo_root().join("crds");
    assert_eq!(names(&written), names(&committed));
    for name in names(&committed) {
        assert!(
            std::fs::read(written.join(&name)).unwrap()
                == std::fs::read(committed.join(&name)).unwrap(),
            "crds/{name} differs from what the image's binary generates"
        );
    }
}

#[test]
fn image_binary_serves_the_examples_standalone_and_prints_the_event() {
    let built = built();
    let examples = format!("tmp/examples-{}", std::process::id());
    copy_dir(&repo_root().join("examples"), &built.rootfs.join(&examples));
    let mut standalone = Running::start(in_image(
        &built.rootfs,
        &[
            "standalone",
            &format!("/{examples}"),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    ));
    let started = standalone.wait_stderr("the start-up line", |l| {
        l.starts_with("hookgate standalone: webhooks on http://")
    });
    let addr = started
        .trim_start_matches("hookgate standalone: webhooks on http://")
        .split([',', ' '])
        .next()
        .unwrap()
        .to_owned();
    let url = standalone.wait_stderr("the URL of app-events", |l| {
        l.starts_with("source default/app-events: ")
    });
    let path = &url[url.find("/h/").expect("a /h/ URL")..];

    let body = r#"{"app":{"name":"shop"},"events":[{"type":"Signup","id":"evt_image_1","anonymous_id":"anon_42","sent_at":"2026-11-28T10:00:00Z","properties":{"plan":"pro"}}]}"#;
    let (status, answer) = support::http_post(&addr, path, body, &[]);
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["status"], "delivered", "{answer}");
    assert_eq!(answer["eventIds"], serde_json::json!(["evt_image_1"]));

    let printed = standalone.wait_stdout("the event on stdout", |l| l.contains("evt_image_1"));
    let event: Value = serde_json::from_str(&printed).expect("stdout carries JSON events");
    assert_eq!(event["type"], "Signup", "{event}");
    assert_eq!(event["data"]["visitorId"], "anon_42", "{event}");
    assert_eq!(
        event["source"],
        "/namespaces/default/webhooksources/app-events"
    );
    standalone.stop();
    let _ = std::fs::remove_dir_all(built.rootfs.join(&examples));
}

/// HTTPS sinks and `hookgate send` load the platform's roots: inside the image they must find
/// the bundle where rustls looks (/etc/ssl/certs), without the SSL_CERT_FILE this machine or
/// the image's Env might provide.
#[test]
fn image_binary_finds_the_ca_bundle_where_rustls_looks() {
    let built = built();
    let payload = format!("tmp/payload-{}.json", std::process::id());
    std::fs::write(built.rootfs.join(&payload), "{}").unwrap();
    // A port nobody listens on: the request fails after the roots loaded, at connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let args = [
        "send".to_owned(),
        format!("https://{closed}/h/x"),
        format!("/{payload}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let with_bundle = in_image(&built.rootfs, &args).output().unwrap();
    let stderr = String::from_utf8_lossy(&with_bundle.stderr);
    assert!(!with_bundle.status.success(), "nothing listens on {closed}");
    assert!(stderr.contains("sending the request"), "{stderr}");
    assert!(!stderr.contains("root certificates"), "{stderr}");

    // The same binary on a filesystem without the bundle fails on the roots: the check above
    // can tell the two apart.
    let bare = repo_root().join(format!("target/image/test-bare-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&bare);
    std::fs::create_dir_all(bare.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(bare.join("tmp")).unwrap();
    std::fs::copy(
        built.rootfs.join(ENTRYPOINT.trim_start_matches('/')),
        bare.join(ENTRYPOINT.trim_start_matches('/')),
    )
    .unwrap();
    std::fs::write(bare.join(&payload), "{}").unwrap();
    let without = in_image(&bare, &args).output().unwrap();
    let _ = std::fs::remove_dir_all(&bare);
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success());
    assert!(stderr.contains("loading TLS root certificates"), "{stderr}");
}

/// The same binary and revision assemble to the same digest: entries, owners and times fixed.
#[test]
fn image_assembly_is_reproducible() {
    let built = built();
    let revision = built.config["config"]["Labels"]["org.opencontainers.image.revision"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = repo_root().join(format!("target/image/test-again-{}", std::process::id()));
    let again = run(
        Command::new(repo_root().join("scripts/build-image"))
            .arg("--binary")
            .arg(built.rootfs.join(ENTRYPOINT.trim_start_matches('/')))
            .args(["--revision", &revision])
            .arg("--out")
            .arg(&out)
            .current_dir(repo_root()),
        "scripts/build-image --binary",
    );
    let _ = std::fs::remove_dir_all(&out);
    assert_eq!(last_line(&again), built.digest);
}

/// The Dockerfile (not buildable here) describes the image build-image makes: the same
/// filesystem script on scratch, and the same user, entrypoint, workdir, env, ports, version.
#[test]
fn dockerfile_describes_the_same_image() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    // Instructions with their continuation lines joined, comments dropped.
    let joined = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let instructions: Vec<(&str, &str)> = joined
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .collect();
    let last = |keyword: &str| -> &str {
        instructions
            .iter()
            .rev()
            .find(|(k, _)| *k == keyword)
            .unwrap_or_else(|| panic!("no {keyword} in the Dockerfile"))
            .1
            .trim()
    };
    let c = &built().config["config"];
    assert_eq!(last("FROM"), "scratch");
    assert_eq!(last("COPY"), "--from=build /rootfs /");
    assert!(
        joined.contains("scripts/image-rootfs /rootfs "),
        "the Dockerfile lays out /rootfs with scripts/image-rootfs"
    );
    assert_eq!(last("USER"), c["User"]);
    assert_eq!(last("WORKDIR"), c["WorkingDir"]);
    let entrypoint: Value = serde_json::from_str(last("ENTRYPOINT")).unwrap();
    assert_eq!(entrypoint, c["Entrypoint"]);
    let env: Vec<&str> = last("ENV").split_whitespace().collect();
    assert_eq!(serde_json::json!(env), c["Env"]);
    let ports: BTreeSet<&str> = last("EXPOSE").split_whitespace().collect();
    let exposed: BTreeSet<&str> = c["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(ports, exposed);
    let labels = last("LABEL");
    for (key, value) in c["Labels"].as_object().unwrap() {
        if key == "org.opencontainers.image.revision" {
            continue; // a build argument there, the commit here
        }
        let expected = format!("{key}=\"{}\"", value.as_str().unwrap());
        assert!(
            labels.contains(&expected),
            "Dockerfile LABEL lacks {expected}"
        );
    }
}

/// `image.tag` defaults to the chart's appVersion; the image says the crate's version.
#[test]
fn chart_app_version_is_the_image_version() {
    let chart: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("charts/hookgate/Chart.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "charts/hookgate/Chart.yaml appVersion must be Cargo.toml's version: the chart's \
         default image tag is the version build-image labels the image with"
    );
}

/// `hookgate ARGS` run the way the image's config says: chrooted into its filesystem, as its
/// user, with only the image's PATH in the environment.
fn in_image(rootfs: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.arg(format!("--userspec={USER}"))
        .arg(rootfs)
        .arg(ENTRYPOINT)
        .args(args)
        .env_clear()
        .env("PATH", IMAGE_PATH)
        .stdin(Stdio::null());
    cmd
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

fn crane() -> PathBuf {
    let out = run(
        &mut Command::new(repo_root().join("scripts/build-crane")),
        "scripts/build-crane",
    );
    PathBuf::from(last_line(&out))
}

/// Runs a command that must succeed; returns its stdout.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("{what}: output not UTF-8: {e}"))
}

fn last_line(out: &str) -> &str {
    out.lines().last().unwrap_or("").trim()
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

/// A child process whose stdout and stderr lines are collected; killed when dropped.
struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting a child process");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Running {
            child,
            stdout,
            stderr,
        }
    }

    fn wait_stdout(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let lines = self.stdout.clone();
        self.wait_line(&lines, what, pred)
    }

    fn wait_stderr(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let lines = self.stderr.clone();
        self.wait_line(&lines, what, pred)
    }

    /// Polls the collected lines until one matches; fails at once if the process exited.
    fn wait_line(
        &mut self,
        lines: &Mutex<Vec<String>>,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(line) = lines.lock().unwrap().iter().find(|l| pred(l)) {
                return line.clone();
            }
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{what}: not seen within {LIMIT:?} (exit: {exited:?}); stderr:\n{}",
                self.stderr.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
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

/// crane's registry, in memory, on a loopback port it picks.
struct Registry {
    process: Running,
    addr: String,
}

impl Registry {
    fn start(crane: &Path) -> Registry {
        let mut cmd = Command::new(crane);
        cmd.args(["registry", "serve", "--address", "127.0.0.1:0"])
            .stdin(Stdio::null());
        let mut process = Running::start(cmd);
        let line =
            process.wait_stderr("crane registry serving", |l| l.contains("serving on port "));
        let port = line.rsplit(' ').next().unwrap().trim().to_owned();
        Registry {
            process,
            addr: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.process.stop();
    }
}
