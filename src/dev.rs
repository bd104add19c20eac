//! `hookgate dev`: the real flow on one machine. A local control plane (the tests' own: etcd,
//! kube-apiserver and kube-controller-manager built once from Go modules and cached), the CRDs,
//! the operator and the ingest as child processes, and optionally the examples applied.
//! Ctrl-C stops all of it. For a checkout of this repository: it runs its scripts.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, ResourceExt};
use serde::Deserialize;

use crate::api::webhook_source::WebhookSource;

const MANAGER: &str = "hookgate.dev/dev";
const SYSTEM_NAMESPACE: &str = "hookgate-system";

#[derive(clap::Args, Debug, Clone)]
pub struct DevArgs {
    /// Apply these manifests (files or directories, recursively) into `--namespace` once
    /// everything runs, e.g. `--apply examples/`.
    #[arg(long)]
    pub apply: Vec<PathBuf>,
    /// The namespace for `--apply`.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The ingest's address for senders.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
}

/// Child processes, stopped (and the control plane torn down) when dropped.
struct Running {
    children: Vec<(&'static str, Child)>,
    kubeconfig: PathBuf,
    down: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(&self.down).arg(&self.kubeconfig).status();
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let up = repo().join("tests/control-plane/up");
    if !up.is_file() {
        bail!(
            "hookgate dev runs from a checkout of the repository ({} not found)",
            up.display()
        );
    }
    eprintln!("dev: starting the control plane (the first run builds it from Go modules: minutes)");
    let out = Command::new(&up)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("running tests/control-plane/up")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kubeconfig = stdout
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("KUBECONFIG="))
        .filter(|_| out.status.success())
        .context("the control plane did not start (see above)")?;
    let mut running = Running {
        children: Vec::new(),
        kubeconfig: PathBuf::from(kubeconfig),
        down: repo().join("tests/control-plane/down"),
    };
    let run_dir = running.kubeconfig.parent().unwrap().to_owned();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let client = runtime.block_on(client(&running.kubeconfig))?;
    runtime.block_on(install(&client))?;

    // A free admin port for the ingest; the operator's metrics on another.
    let admin = free_port()?;
    let metrics = free_port()?;
    let exe = std::env::current_exe()?;
    let spawn = |name: &'static str,
                 args: &[String],
                 stdout: Stdio|
     -> anyhow::Result<(&'static str, Child)> {
        let log = std::fs::File::create(run_dir.join(format!("{name}.log")))?;
        let child = Command::new(&exe)
            .args(args)
            .env("KUBECONFIG", &running.kubeconfig)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        Ok((name, child))
    };
    running.children.push(spawn(
        "ingest",
        &[
            "ingest".into(),
            format!("--namespace={SYSTEM_NAMESPACE}"),
            format!("--listen={}", args.listen),
            format!("--admin-listen=127.0.0.1:{admin}"),
            "--status-interval=2s".into(),
        ],
        Stdio::inherit(),
    )?);
    running.children.push(spawn(
        "operator",
        &[
            "operator".into(),
            format!("--namespace={SYSTEM_NAMESPACE}"),
            format!("--public-url=http://{}", args.listen),
            format!("--metrics-listen=127.0.0.1:{metrics}"),
            "--identity=dev".into(),
            "--no-ingest-deployment".into(),
        ],
        Stdio::null(),
    )?);

    let mut sources = Vec::new();
    for path in &args.apply {
        sources.extend(runtime.block_on(apply(&client, path, &args.namespace))?);
    }

    println!("KUBECONFIG={}", running.kubeconfig.display());
    println!(
        "ingest:   http://{}   (status, metrics: http://127.0.0.1:{admin}/status, /metrics)",
        args.listen
    );
    println!("logs:     {}", run_dir.display());
    for name in sources {
        match runtime.block_on(wait_url(&client, &args.namespace, &name)) {
            Ok(url) => println!("source {}/{name}: {url}", args.namespace),
            Err(e) => println!("source {}/{name}: not ready: {e:#}", args.namespace),
        }
    }
    println!("events print below; Ctrl-C stops everything");

    runtime.block_on(async {
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = check.tick() => {
                    for (name, child) in &mut running.children {
                        if let Some(status) = child.try_wait()? {
                            bail!("the {name} exited ({status}); its log is in {}", run_dir.display());
                        }
                    }
                }
            }
        }
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}

async fn install(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::api::crds() {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .with_context(|| format!("CRD {name} not Established"))??;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [SYSTEM_NAMESPACE] {
        let obj =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        namespaces
            .patch(ns, &PatchParams::apply(MANAGER), &Patch::Apply(&obj))
            .await?;
    }
    Ok(())
}

/// Server-side applies every manifest under `path`; returns the WebhookSource names.
async fn apply(client: &Client, path: &Path, namespace: &str) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    collect(path, &mut files)?;
    let mut sources = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let obj =
                DynamicObject::deserialize(doc).with_context(|| format!("{}", file.display()))?;
            let Some(types) = obj.types.clone() else {
                continue;
            };
            let gvk = GroupVersionKind::try_from(&types)?;
            let resource = ApiResource::from_gvk(&gvk);
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            let name = obj.name_any();
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .with_context(|| format!("applying {} from {}", name, file.display()))?;
            if types.kind == "WebhookSource" {
                sources.push(name);
            }
        }
    }
    Ok(sources)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for e in entries {
            collect(&e.path(), out)?;
        }
    } else if matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    ) {
        out.push(path.to_owned());
    }
    Ok(())
}

async fn wait_url(client: &Client, namespace: &str, name: &str) -> anyhow::Result<String> {
    let api: Api<WebhookSource> = Api::namespaced(client.clone(), namespace);
    let has_url = |s: Option<&WebhookSource>| {
        s.and_then(|s| s.status.as_ref())
            .is_some_and(|st| st.url.is_some())
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(api.clone(), name, has_url),
    )
    .await
    .context("no URL within 30 s")??;
    let source = api.get(name).await?;
    if let Some(ready) = source
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status != "True")
    {
        bail!("{}: {}", ready.reason, ready.message);
    }
    crate::verbs::url_with(client, namespace, name).await
}
