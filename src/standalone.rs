//! `hookgate standalone DIR`: the ingest without a cluster, configured by the same manifests
//! one would `kubectl apply`.
//!
//! - Loads `WebhookSource`, `Mapping` and token `Secret` documents from DIR (recursively,
//!   multi-document files allowed); other kinds are ignored with a note.
//! - A source's token comes from `spec.tokenSecretRef`, else from a Secret
//!   `<source>-webhook-token` (key `token`) in DIR, else it is generated once per process and
//!   kept across reloads. Each source's full URL is printed (on stderr) when it first appears
//!   or its token changes: the one place hookgate prints a token, because its owner asked for
//!   it by running this.
//! - Events go to stdout as JSON lines; everything else goes to stderr, so stdout can be piped
//!   into `jq` or a file.
//! - DIR is polled every second (mtime and size of each manifest) and reloaded on change.
//!   Polling rather than `notify`: editors save through rename-and-replace, container bind
//!   mounts and network file systems often deliver no inotify events at all, and listing a
//!   directory of a few manifests once a second costs nothing measurable. No extra dependency.
//! - A bad file is reported as `file:line: field: reason` and the last good version of that
//!   file stays in force (as `kubectl apply` refusing it would leave the cluster); other files
//!   are unaffected.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use base64::Engine as _;
use serde::Deserialize;

use crate::api::webhook_source::{DEFAULT_MAX_BODY_BYTES, WebhookSource};
use crate::api::{Mapping, MappingSpec};
use crate::ingest::{
    Ingest, Metrics, RouteTable, Sinks, SourceNotes, Token, bind_admin, bind_ingest, verify,
};
use crate::mapping::CompiledMapping;
use crate::operator::signing;
use crate::route::{RateLimit, Route, RouteMapping, RouteSignature, TokenHash};
use crate::sink::{Sink, WriterSink};

const DEFAULT_DEDUP_WINDOW: u64 = 3600;
const DEFAULT_TOLERANCE: u64 = 300;

#[derive(clap::Args, Debug, Clone)]
pub struct StandaloneArgs {
    /// Directory of WebhookSource, Mapping and token Secret manifests (searched recursively).
    pub dir: PathBuf,
    /// Address of the webhook endpoint (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of /status, /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Namespace of manifests that do not name one.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Base of the printed URLs (default: http:// and the listen address), e.g. a tunnel's URL.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Serve sources that configure a signature WITHOUT verifying it, to try mappings against
    /// real payloads locally. Never use this where the URL is reachable by others.
    #[arg(long)]
    pub insecure_skip_signatures: bool,
    #[command(flatten)]
    pub connections: crate::ingest::server::ConnectionArgs,
}

/// One problem in DIR: `file:line: field: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The field, as written in YAML (`spec.limits.maxBodyBytes`); empty for the whole file.
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// A Secret as read from a manifest. Deliberately no `Debug`: it holds tokens and keys.
#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct SecretDoc {
    metadata: Meta,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    string_data: BTreeMap<String, String>,
}

#[derive(Deserialize, Clone, Debug, Default)]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Clone)]
enum Doc {
    Source(Box<WebhookSource>),
    Mapping(Box<Mapping>),
    Secret(Box<SecretDoc>, PathBuf),
}

/// The documents of one file that loaded cleanly.
#[derive(Clone)]
struct FileDocs {
    docs: Vec<(Doc, PathBuf)>,
}

/// Everything loaded from DIR, ready to install.
pub struct Loaded {
    pub routes: Vec<(Route, SourceNotes)>,
    /// Sources (namespace, name) with the token that opens each.
    pub tokens: Vec<(String, String, Token)>,
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
}

/// The loader's memory between reloads: generated tokens and the last good version of each
/// file.
#[derive(Default)]
pub struct Loader {
    generated: HashMap<(String, String), Token>,
    last_good: HashMap<PathBuf, FileDocs>,
}

impl Loader {
    /// Reads DIR and builds the routes.
    pub fn load(&mut self, dir: &Path, args: &StandaloneArgs) -> Loaded {
        let mut problems = Vec::new();
        let mut notes = Vec::new();
        let mut docs: Vec<(Doc, PathBuf)> = Vec::new();
        let files = manifest_files(dir, &mut problems);
        let mut seen = Vec::new();
        for file in files {
            seen.push(file.clone());
            let mut file_problems = Vec::new();
            let loaded = load_file(&file, &mut file_problems, &mut notes);
            if file_problems.is_empty() {
                self.last_good.insert(file.clone(), loaded.clone());
                docs.extend(loaded.docs);
            } else {
                if let Some(previous) = self.last_good.get(&file) {
                    notes.push(format!(
                        "{}: keeping its last good version until the problems are fixed",
                        file.display()
                    ));
                    docs.extend(previous.docs.clone());
                } else {
                    // No good version yet: keep the documents that did load, so one bad
                    // Mapping does not take its source down with it.
                    docs.extend(loaded.docs);
                }
                problems.extend(file_problems);
            }
        }
        self.last_good.retain(|f, _| seen.contains(f));
        self.build(docs, args, problems, notes)
    }

    fn build(
        &mut self,
        docs: Vec<(Doc, PathBuf)>,
        args: &StandaloneArgs,
        mut problems: Vec<Problem>,
        notes: Vec<String>,
    ) -> Loaded {
        let ns_of =
            |meta_ns: &Option<String>| meta_ns.clone().unwrap_or_else(|| args.namespace.clone());
        let mut sources: BTreeMap<(String, String), (WebhookSource, PathBuf)> = BTreeMap::new();
        let mut mappings: BTreeMap<(String, String), Vec<RouteMapping>> = BTreeMap::new();
        let mut mapping_files: Vec<(String, String, String, PathBuf)> = Vec::new();
        let mut secrets: HashMap<(String, String), (SecretDoc, PathBuf)> = HashMap::new();
        for (doc, file) in docs {
            match doc {
                Doc::Source(s) => {
                    let key = (
                        ns_of(&s.metadata.namespace),
                        s.metadata.name.clone().unwrap_or_default(),
                    );
                    if let Some((_, first)) = sources.get(&key) {
                        problems.push(Problem {
                            file,
                            line: None,
                            field: "metadata.name".into(),
                            reason: format!(
                                "WebhookSource {}/{} is also defined in {}; this one is ignored",
                                key.0,
                                key.1,
                                first.display()
                            ),
                        });
                        continue;
                    }
                    sources.insert(key, (*s, file));
                }
                Doc::Mapping(m) => {
                    let ns = ns_of(&m.metadata.namespace);
                    let name = m.metadata.name.clone().unwrap_or_default();
                    let source = m.spec.source_ref.name.clone();
                    mapping_files.push((ns.clone(), source.clone(), name.clone(), file));
                    mappings
                        .entry((ns, source))
                        .or_default()
                        .push(RouteMapping {
                            name,
                            generation: m.metadata.generation.unwrap_or(0),
                            spec: m.spec,
                        });
                }
                Doc::Secret(s, file) => {
                    let key = (
                        ns_of(&s.metadata.namespace),
                        s.metadata.name.clone().unwrap_or_default(),
                    );
                    secrets.insert(key, (*s, file));
                }
            }
        }
        for (ns, source, name, file) in &mapping_files {
            if !sources.contains_key(&(ns.clone(), source.clone())) {
                problems.push(Problem {
                    file: file.clone(),
                    line: None,
                    field: "spec.sourceRef.name".into(),
                    reason: format!(
                        "Mapping {name}: no WebhookSource \"{source}\" in namespace {ns} in this directory"
                    ),
                });
            }
        }

        let mut routes = Vec::new();
        let mut tokens = Vec::new();
        for ((ns, name), (source, file)) in &sources {
            let mut source_notes = SourceNotes::default();
            let secret_value = |secret: &str, key: &str| -> Result<String, String> {
                let (doc, _) = secrets
                    .get(&(ns.clone(), secret.to_owned()))
                    .ok_or_else(|| {
                        format!("Secret {secret} not found in namespace {ns} in this directory")
                    })?;
                secret_key(doc, key)
                    .ok_or_else(|| format!("Secret {secret} has no non-empty key {key}"))
            };

            let token = match &source.spec.token_secret_ref {
                Some(r) => match secret_value(&r.name, r.key.as_deref().unwrap_or("token")) {
                    Ok(t) => Token::new(t),
                    Err(reason) => {
                        problems.push(Problem {
                            file: file.clone(),
                            line: None,
                            field: "spec.tokenSecretRef".into(),
                            reason: format!("{reason}; source {name} is not served"),
                        });
                        continue;
                    }
                },
                None => match secret_value(&format!("{name}-webhook-token"), "token") {
                    Ok(t) => Token::new(t),
                    Err(_) => {
                        let key = (ns.clone(), name.clone());
                        match self.generated.get(&key) {
                            Some(t) => t.clone(),
                            None => match Token::generate() {
                                Ok(t) => {
                                    self.generated.insert(key, t.clone());
                                    t
                                }
                                Err(e) => {
                                    problems.push(Problem {
                                        file: file.clone(),
                                        line: None,
                                        field: String::new(),
                                        reason: format!("cannot generate a token: {e}"),
                                    });
                                    continue;
                                }
                            },
                        }
                    }
                },
            };

            let spec = &source.spec;
            let signature = match &spec.signature {
                None => None,
                Some(_) if args.insecure_skip_signatures => {
                    source_notes.notes.push(
                        "signature configured but NOT verified (--insecure-skip-signatures)".into(),
                    );
                    None
                }
                Some(sig) => {
                    let scheme = verify::scheme_name(sig.scheme);
                    let mut secrets_found = Vec::new();
                    if let Some(r) = &sig.secret_ref {
                        match secret_value(&r.name, r.key.as_deref().unwrap_or("secret")) {
                            Ok(s) => secrets_found.push(s),
                            Err(reason) => source_notes
                                .notes
                                .push(format!("signature.secretRef: {reason}")),
                        }
                    }
                    // A declared rotation window: the previous secret too while it is open
                    // (the ingest itself stops accepting it at the end, no reload needed).
                    let mut previous_until = None;
                    if let (Some(r), false) = (&sig.previous_secret_ref, secrets_found.is_empty())
                        && let signing::Window::Open(until) =
                            signing::window(sig, k8s_openapi::jiff::Timestamp::now())
                    {
                        match secret_value(&r.name, r.key.as_deref().unwrap_or("secret")) {
                            Ok(s) => {
                                secrets_found.push(s);
                                previous_until = Some(signing::end_unix(until));
                            }
                            Err(reason) => source_notes
                                .notes
                                .push(format!("signature.previousSecretRef: {reason}")),
                        }
                    }
                    if !verify::is_implemented(sig.scheme) {
                        source_notes.notes.push(format!(
                            "signature type {scheme} cannot be verified by this version (issue #6): every request is answered 401; run with --insecure-skip-signatures to try the mappings without verification"
                        ));
                    }
                    Some(RouteSignature {
                        scheme: sig.scheme,
                        secrets: secrets_found,
                        previous_until,
                        tolerance_seconds: sig
                            .tolerance
                            .as_deref()
                            .and_then(duration_secs)
                            .unwrap_or(DEFAULT_TOLERANCE),
                        header: sig.header.clone(),
                        algorithm: sig.algorithm,
                        encoding: sig.encoding,
                        prefix: sig.prefix.clone(),
                    })
                }
            };
            if !spec.enabled {
                source_notes
                    .notes
                    .push("disabled: requests are answered 503".into());
            }

            let limits = spec.limits.clone().unwrap_or_default();
            let rate_limit = limits.requests_per_second.map(|rps| {
                let rps = u32::try_from(rps.max(1)).unwrap_or(1);
                RateLimit {
                    requests_per_second: rps,
                    burst: limits
                        .burst
                        .map(|b| u32::try_from(b.max(1)).unwrap_or(1))
                        .unwrap_or(rps),
                }
            });
            source_notes.url = Some(format!("{}/h/{}", base_url(args), token.redacted()));
            let route_mappings = mappings
                .remove(&(ns.clone(), name.clone()))
                .unwrap_or_default();
            if route_mappings.is_empty() {
                source_notes
                    .notes
                    .push("no Mapping: every request is answered 200 ignored".into());
            }
            routes.push((
                Route {
                    namespace: ns.clone(),
                    name: name.clone(),
                    generation: source.metadata.generation.unwrap_or(0),
                    tokens: vec![TokenHash {
                        sha256: token.sha256_hex(),
                        expires_at: None,
                    }],
                    enabled: spec.enabled,
                    max_body_bytes: u64::try_from(limits.max_body_bytes)
                        .unwrap_or(DEFAULT_MAX_BODY_BYTES as u64),
                    rate_limit,
                    dedup_window_seconds: spec
                        .dedup
                        .as_ref()
                        .and_then(|d| d.window.as_deref())
                        .and_then(duration_secs)
                        .unwrap_or(DEFAULT_DEDUP_WINDOW),
                    signature,
                    mappings: route_mappings,
                    sink: spec.sink.clone(),
                    sink_secrets: None,
                },
                source_notes,
            ));
            tokens.push((ns.clone(), name.clone(), token));
        }
        Loaded {
            routes,
            tokens,
            problems,
            notes,
        }
    }
}

fn base_url(args: &StandaloneArgs) -> String {
    args.public_url
        .clone()
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{}", args.listen))
}

fn secret_key(doc: &SecretDoc, key: &str) -> Option<String> {
    if let Some(v) = doc.string_data.get(key) {
        return Some(v.trim().to_owned()).filter(|v| !v.is_empty());
    }
    let encoded = doc.data.get(key)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    String::from_utf8(bytes)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Go-style durations, as the CRD's CEL rule accepts them; whole seconds.
fn duration_secs(text: &str) -> Option<u64> {
    crate::api::parse_duration(text).ok().map(|d| d.as_secs())
}

/// `*.yaml`, `*.yml` and `*.json` under `dir`, sorted, skipping hidden files and directories
/// (editor swap files, `.git`).
fn manifest_files(dir: &Path, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) => {
                problems.push(Problem {
                    file: d.clone(),
                    line: None,
                    field: String::new(),
                    reason: format!("cannot read directory: {e}"),
                });
                continue;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A fingerprint of DIR's manifests: changes when a file is added, removed or written.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    manifest_files(dir, &mut Vec::new())
        .into_iter()
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map(|m| m.len()).unwrap_or(0);
            (p, modified, len)
        })
        .collect()
}

/// Splits a multi-document YAML text at `---` lines; returns each document with the
/// 0-based line where it starts.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = vec![(0, String::new())];
    for (i, line) in text.lines().enumerate() {
        let is_separator =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_separator {
            docs.push((i + 1, String::new()));
        } else if let Some((_, doc)) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs
}

fn load_file(file: &Path, problems: &mut Vec<Problem>, notes: &mut Vec<String>) -> FileDocs {
    let mut docs = Vec::new();
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            problems.push(Problem {
                file: file.to_owned(),
                line: None,
                field: String::new(),
                reason: format!("cannot read: {e}"),
            });
            return FileDocs { docs };
        }
    };
    for (offset, doc_text) in split_documents(&text) {
        // serde_yaml reports `field.path: reason at line L column C`; the line is relative to
        // the document, so it is rebased onto the file.
        let problem = |e: serde_yaml::Error, prefix: &str| {
            let line = e.location().map(|l| l.line() + offset);
            let mut message = e.to_string();
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
            let (field, reason) = match message.split_once(": ") {
                Some((field, reason)) if !field.contains(' ') => {
                    (format!("{prefix}{field}"), reason.to_owned())
                }
                _ => (prefix.trim_end_matches('.').to_owned(), message),
            };
            Problem {
                file: file.to_owned(),
                line,
                field,
                reason,
            }
        };
        let value: serde_yaml::Value = match serde_yaml::from_str(&doc_text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(problem(e, ""));
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        // A JSON file that is no Kubernetes object at all is a sample payload or expected
        // output kept beside the manifests (examples/ does this), not a broken manifest.
        let is_json = file.extension().and_then(|e| e.to_str()) == Some("json");
        if is_json && value.get("apiVersion").is_none() && value.get("kind").is_none() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("");
        let here = |field: &str, reason: String| Problem {
            file: file.to_owned(),
            line: Some(offset + 1),
            field: field.to_owned(),
            reason,
        };
        match (api_version, kind) {
            ("hookgate.dev/v1alpha1", "WebhookSource") => {
                match serde_yaml::from_str::<WebhookSource>(&doc_text) {
                    Ok(s) => {
                        let before = problems.len();
                        if s.metadata.name.as_deref().unwrap_or("").is_empty() {
                            problems.push(here("metadata.name", "is required".into()));
                        }
                        for (field, reason) in validate_source(&s) {
                            problems.push(here(&field, reason));
                        }
                        if problems.len() == before {
                            docs.push((Doc::Source(Box::new(s)), file.to_owned()));
                        }
                    }
                    Err(e) => problems.push(problem(e, "")),
                }
            }
            ("hookgate.dev/v1alpha1", "Mapping") => match serde_yaml::from_str::<Mapping>(&doc_text) {
                Ok(m) => {
                    let name = m.metadata.name.clone().unwrap_or_default();
                    let before = problems.len();
                    if name.is_empty() {
                        problems.push(here("metadata.name", "is required".into()));
                    }
                    if let Err(errors) = compile(&name, &m.spec) {
                        for e in errors.0 {
                            let reason = match e.position {
                                Some(p) => format!("position {p}: {}", e.message),
                                None => e.message,
                            };
                            problems.push(here(&format!("spec.{}", e.field), reason));
                        }
                    }
                    if problems.len() == before {
                        docs.push((Doc::Mapping(Box::new(m)), file.to_owned()));
                    }
                }
                Err(e) => problems.push(problem(e, "")),
            },
            ("v1", "Secret") => match serde_yaml::from_str::<SecretDoc>(&doc_text) {
                Ok(s) => docs.push((Doc::Secret(Box::new(s), file.to_owned()), file.to_owned())),
                // The reason could quote a value; a Secret's values must not reach stderr.
                Err(e) => problems.push(Problem {
                    file: file.to_owned(),
                    line: e.location().map(|l| l.line() + offset),
                    field: "Secret".into(),
                    reason: "not a valid Secret (expected metadata.name and string values under data or stringData)".into(),
                }),
            },
            (_, "") => problems.push(here("kind", "is missing".into())),
            (_, other) => notes.push(format!(
                "{}:{}: ignoring {other} ({api_version}): standalone reads WebhookSource, Mapping and Secret",
                file.display(),
                offset + 1
            )),
        }
    }
    FileDocs { docs }
}

fn compile(
    name: &str,
    spec: &MappingSpec,
) -> Result<CompiledMapping, crate::mapping::CompileErrors> {
    CompiledMapping::compile(name, spec)
}

/// The checks the CRD's CEL rules make at `kubectl apply`, so a file that the API server
/// would refuse is refused here too.
fn validate_source(source: &WebhookSource) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let spec = &source.spec;
    let duration = |out: &mut Vec<(String, String)>, field: &str, value: Option<&str>| {
        if let Some(v) = value
            && duration_secs(v).is_none()
        {
            out.push((
                field.to_owned(),
                format!("\"{v}\" is not a duration such as 0s, 30s, 5m or 1h"),
            ));
        }
    };
    duration(
        &mut out,
        "spec.tokenRotation.gracePeriod",
        spec.token_rotation
            .as_ref()
            .and_then(|r| r.grace_period.as_deref()),
    );
    duration(
        &mut out,
        "spec.dedup.window",
        spec.dedup.as_ref().and_then(|d| d.window.as_deref()),
    );
    if let Some(sig) = &spec.signature {
        duration(
            &mut out,
            "spec.signature.tolerance",
            sig.tolerance.as_deref(),
        );
        if sig.secret_ref.is_none() {
            out.push((
                "spec.signature.secretRef".into(),
                "is required: name the Secret (and key) that holds the signing secret".into(),
            ));
        }
        if sig.scheme == crate::api::webhook_source::SignatureScheme::Hmac && sig.header.is_none() {
            out.push((
                "spec.signature.header".into(),
                "is required for type hmac".into(),
            ));
        }
    }
    if let Some(l) = &spec.limits {
        if l.max_body_bytes <= 0 {
            out.push(("spec.limits.maxBodyBytes".into(), "must be positive".into()));
        }
        if l.requests_per_second.is_some_and(|r| r <= 0) {
            out.push((
                "spec.limits.requestsPerSecond".into(),
                "must be positive".into(),
            ));
        }
        if l.burst.is_some_and(|b| b <= 0) {
            out.push(("spec.limits.burst".into(), "must be positive".into()));
        }
        if l.burst.is_some() && l.requests_per_second.is_none() {
            out.push((
                "spec.limits.burst".into(),
                "needs limits.requestsPerSecond".into(),
            ));
        }
    }
    if let Some(sink) = &spec.sink {
        let set = [
            sink.stdout.is_some(),
            sink.http.is_some(),
            sink.nats.is_some(),
        ]
        .into_iter()
        .filter(|s| *s)
        .count();
        if set != 1 {
            out.push((
                "spec.sink".into(),
                "must set exactly one of stdout, http or nats".into(),
            ));
        }
    }
    out
}

/// A running standalone: the bound addresses and the handle to stop it.
pub struct Running {
    pub ingest_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub table: Arc<RouteTable>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Where the standalone's human-readable messages go (stderr in the binary).
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

/// Loads DIR, starts the ingest and admin servers and the reload loop.
pub async fn start(args: StandaloneArgs, sink: Arc<dyn Sink>, say: Say) -> anyhow::Result<Running> {
    anyhow::ensure!(
        args.dir.is_dir(),
        "{} is not a directory of manifests",
        args.dir.display()
    );
    let metrics = Arc::new(Metrics::new());
    let table = Arc::new(RouteTable::new(Sinks::single(sink), metrics));
    let mut loader = Loader::default();
    let mut printed: HashMap<(String, String), String> = HashMap::new();
    let mut args = args;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let ingest = Arc::new(Ingest::new(table.clone(), args.connections.ingest_config()));
    let (ingest_addr, ingest_task) = bind_ingest(args.listen, ingest, shutdown(stopped.clone()))
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let (admin_addr, admin_task) =
        bind_admin(args.admin_listen, table.clone(), shutdown(stopped.clone()))
            .await
            .with_context(|| format!("listening on {}", args.admin_listen))?;
    // Port 0 resolved: URLs must show the real port.
    args.listen = ingest_addr;

    let loaded = loader.load(&args.dir, &args);
    install(&table, loaded, &mut printed, &say, true);
    say(&format!(
        "hookgate standalone: webhooks on http://{ingest_addr}, status on http://{admin_addr}/status, events on stdout"
    ));

    let reload_table = table.clone();
    let mut reload_stop = stopped.clone();
    let reload_say = say.clone();
    let reload = tokio::spawn(async move {
        let mut last = fingerprint(&args.dir);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = reload_stop.wait_for(|s| *s) => return,
            }
            let dir = args.dir.clone();
            let now = tokio::task::spawn_blocking(move || fingerprint(&dir))
                .await
                .unwrap_or_default();
            if now == last {
                continue;
            }
            last = now;
            reload_say(&format!("{} changed: reloading", args.dir.display()));
            let loaded = loader.load(&args.dir, &args);
            install(&reload_table, loaded, &mut printed, &reload_say, false);
        }
    });

    Ok(Running {
        ingest_addr,
        admin_addr,
        table,
        stop,
        tasks: vec![ingest_task, admin_task, reload],
    })
}

fn install(
    table: &RouteTable,
    loaded: Loaded,
    printed: &mut HashMap<(String, String), String>,
    say: &Say,
    first: bool,
) {
    for note in &loaded.notes {
        say(&format!("note: {note}"));
    }
    for problem in &loaded.problems {
        say(&format!("error: {problem}"));
    }
    let notes: HashMap<(String, String), SourceNotes> = loaded
        .routes
        .iter()
        .map(|(r, n)| ((r.namespace.clone(), r.name.clone()), n.clone()))
        .collect();
    let report = table.replace_with_notes(loaded.routes);
    for (ns, source, message) in &report.route_errors {
        say(&format!("error: source {ns}/{source}: {message}"));
    }
    let mut current = Vec::new();
    for (ns, name, token) in &loaded.tokens {
        let key = (ns.clone(), name.clone());
        current.push(key.clone());
        let hash = token.sha256_hex();
        if printed.get(&key) == Some(&hash) {
            continue;
        }
        printed.insert(key.clone(), hash);
        let source_notes = notes.get(&key).cloned().unwrap_or_default();
        let base = source_notes
            .url
            .as_deref()
            .and_then(|u| u.rsplit_once("/h/").map(|(b, _)| b.to_owned()))
            .unwrap_or_default();
        // The one place a token is shown: the URL its owner needs to configure the sender.
        say(&format!("source {ns}/{name}: {base}/h/{}", token.expose()));
        for note in &source_notes.notes {
            say(&format!("  {note}"));
        }
    }
    printed.retain(|k, _| current.contains(k));
    if !first || !loaded.problems.is_empty() {
        say(&format!(
            "serving {} source(s); {} problem(s)",
            current.len(),
            loaded.problems.len()
        ));
    }
}

/// `hookgate standalone`: runs until Ctrl-C.
pub fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let say: Say = Arc::new(|line: &str| eprintln!("{line}"));
        let running = start(args, WriterSink::stdout(), say.clone()).await?;
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        say("stopping");
        running.stop().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_separator_lines_only() {
        let docs = split_documents("a: 1\n---\nb: '---'\n--- # c\nc: 3\n");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[1], (2, "b: '---'\n".to_owned()));
        assert_eq!(docs[2].0, 4);
    }
}
