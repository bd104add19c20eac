//! Verbs for people at a terminal: `url`, `rotate`, `events`. They read and write the
//! resources like `kubectl` does (same kubeconfig, same namespace default), and work as a
//! kubectl plugin when the binary is reachable as `kubectl-hookgate`.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::api::webhook_source::{ROTATE_TOKEN_ANNOTATION, WebhookSource, WebhookSourceStatus};
use crate::operator::token::{self, Token};

/// The field manager of edits made by these verbs.
pub const FIELD_MANAGER: &str = "hookgate.dev/cli";

#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The WebhookSource.
    pub name: String,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

impl Target {
    async fn api(&self) -> anyhow::Result<(Client, Api<WebhookSource>, String)> {
        let client = Client::try_default()
            .await
            .context("connecting to the cluster (is KUBECONFIG set?)")?;
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Ok((client.clone(), Api::namespaced(client, &ns), ns))
    }
}

/// The full webhook URL: the generated Secret's `url`, or for a user's own token, the
/// redacted status URL completed with the token.
pub async fn url(target: &Target) -> anyhow::Result<String> {
    let (client, _, ns) = target.api().await?;
    url_with(&client, &ns, &target.name).await
}

pub async fn url_with(client: &Client, ns: &str, name: &str) -> anyhow::Result<String> {
    let source = Api::<WebhookSource>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("reading WebhookSource {ns}/{name}"))?;
    full_url(client, ns, &source).await
}

async fn full_url(client: &Client, ns: &str, source: &WebhookSource) -> anyhow::Result<String> {
    let status = source.status.clone().unwrap_or_default();
    let (secret_name, key) = match &source.spec.token_secret_ref {
        Some(r) => (
            r.name.clone(),
            r.key.clone().unwrap_or_else(|| token::TOKEN_KEY.into()),
        ),
        None => (
            status
                .token_secret_name
                .clone()
                .unwrap_or_else(|| crate::operator::source::token_secret_name(&source.name_any())),
            token::TOKEN_KEY.into(),
        ),
    };
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get(&secret_name)
        .await
        .with_context(|| {
            format!("reading Secret {ns}/{secret_name} (has the operator reconciled the source?)")
        })?;
    if source.spec.token_secret_ref.is_none()
        && let Some(url) = token::secret_value(&secret, token::URL_KEY)
    {
        return Ok(String::from_utf8(url)?);
    }
    let token = token::secret_value(&secret, &key)
        .and_then(|v| Token::from_secret_value(&v))
        .with_context(|| format!("Secret {secret_name} has no key {key}"))?;
    let Some(redacted) = status.url else {
        bail!("the source has no URL in its status yet: is the operator running?");
    };
    let base = redacted
        .rsplit_once("/h/")
        .map(|(base, _)| base)
        .context("unexpected status.url")?;
    Ok(token::webhook_url(base, token.expose()))
}

/// Sets the rotate annotation and waits until the operator has issued the new token and
/// published it; returns the new URL.
pub async fn rotate(target: &Target, timeout: Duration) -> anyhow::Result<String> {
    let (client, api, ns) = target.api().await?;
    let source = api.get(&target.name).await?;
    if source.spec.token_secret_ref.is_some() {
        bail!(
            "{}/{} uses its own token (tokenSecretRef): rotate it where it is managed",
            ns,
            target.name
        );
    }
    let value = Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {ROTATE_TOKEN_ANNOTATION: value}}});
    api.patch(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotating {}/{}", ns, target.name))?;

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret_name = crate::operator::source::token_secret_name(&target.name);
    let done = async {
        loop {
            // Rotation is done when the Secret answers the new annotation value and the status
            // (written after the route was published) shows the new token's tail.
            if let Some(secret) = secrets.get_opt(&secret_name).await?
                && secret.annotations().get(token::ROTATION_KEY_ANNOTATION) == Some(&value)
                && let Some(tok) = token::secret_value(&secret, token::TOKEN_KEY)
                    .and_then(|v| Token::from_secret_value(&v))
            {
                let current = api.get(&target.name).await?;
                if current
                    .status
                    .as_ref()
                    .and_then(|s| s.url.as_deref())
                    .is_some_and(|u| u.ends_with(&tok.redacted()))
                {
                    return full_url(&client, &ns, &current).await;
                }
            }
            wait_for_change(&api, &target.name).await;
        }
    };
    tokio::time::timeout(timeout, done).await.with_context(|| {
        format!(
            "the operator did not rotate {}/{} within {timeout:?}",
            ns, target.name
        )
    })?
}

/// Returns at the next change of the named source (or after a few seconds, whichever first).
async fn wait_for_change(api: &Api<WebhookSource>, name: &str) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut changes = watcher::watcher(api.clone(), config).boxed();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        let mut seen_init = false;
        while let Some(Ok(event)) = changes.next().await {
            match event {
                watcher::Event::InitDone => seen_init = true,
                watcher::Event::Apply(_) | watcher::Event::Delete(_) if seen_init => return,
                _ => {}
            }
        }
    })
    .await;
}

/// The recent events and errors of a source as text tables; with `follow`, again on change.
pub async fn events(target: &Target, follow: bool) -> anyhow::Result<()> {
    let (_, api, ns) = target.api().await?;
    let mut last = String::new();
    loop {
        let source = api
            .get(&target.name)
            .await
            .with_context(|| format!("reading WebhookSource {}/{}", ns, target.name))?;
        let text = render_events(&source.status.unwrap_or_default());
        if text != last {
            print!("{text}");
            last = text;
        }
        if !follow {
            return Ok(());
        }
        wait_for_change(&api, &target.name).await;
    }
}

pub fn render_events(status: &WebhookSourceStatus) -> String {
    let mut out = String::new();
    let c = status.counters.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "received {}  delivered {}  ignored {}  duplicates {}  rejected {}  failed {}",
        c.received, c.delivered, c.ignored, c.duplicates, c.rejected, c.failed
    );
    let _ = writeln!(out, "\nRECENT EVENTS");
    let _ = writeln!(
        out,
        "{:<22} {:<20} {:<10} {:<22} {:<24} {:<18} EVENT ID",
        "TIME", "REQUEST", "OUTCOME", "MAPPING", "EVENT", "IDENTITY"
    );
    for e in &status.recent_events {
        let _ = writeln!(
            out,
            "{:<22} {:<20} {:<10} {:<22} {:<24} {:<18} {}",
            e.time.0.strftime("%Y-%m-%d %H:%M:%S"),
            e.request_id,
            e.outcome,
            e.mapping.as_deref().unwrap_or("-"),
            e.event_name.as_deref().unwrap_or("-"),
            e.identity.as_deref().unwrap_or("-"),
            e.event_id.as_deref().unwrap_or("-"),
        );
    }
    let _ = writeln!(out, "\nRECENT ERRORS");
    let _ = writeln!(
        out,
        "{:<22} {:<8} {:>6}  MESSAGE",
        "LAST SEEN", "STAGE", "COUNT"
    );
    for e in &status.recent_errors {
        let stage = serde_json::to_value(e.stage)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<22} {:<8} {:>6}  {}",
            e.time.0.strftime("%Y-%m-%d %H:%M:%S"),
            stage,
            e.count,
            e.message
        );
    }
    out
}

/// A Mapping proposed from the payload shape the source learned (`status.observedFields`),
/// as YAML ready to apply.
pub async fn suggest(target: &Target, headers: &[&str]) -> anyhow::Result<String> {
    let (_, api, ns) = target.api().await?;
    let source = api
        .get(&target.name)
        .await
        .with_context(|| format!("reading WebhookSource {}/{}", ns, target.name))?;
    let fields = source.status.map(|s| s.observed_fields).unwrap_or_default();
    if fields.is_empty() {
        bail!(
            "{}/{} has not learned a payload shape yet: send it a request first (or use --payload FILE)",
            ns,
            target.name
        );
    }
    Ok(crate::suggest::suggest(&target.name, &fields, headers).to_yaml())
}
