//! A source's `sink` as the ingest needs it: a Service reference resolved to a URL, and the
//! Secrets it names (HTTP headers, NATS credentials) copied into the route, since the ingest
//! may read no Secrets outside its own namespace.
//!
//! Neither a missing Service nor a missing Secret withdraws the route: deliveries fail with a
//! retryable 503 (the sender tries again later) and the `SinkReady` condition says why, instead
//! of the URL answering 404.

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::Api;

use super::conditions::Verdict;
use super::{Context, Error, token};
use crate::api::webhook_source::{HttpSink, ServiceRef, Sink, WebhookSource};
use crate::route::{NatsAuth, SinkSecrets};

pub const SINK_READY: &str = "SinkReady";
const DEFAULT_SERVICE_PORT: i32 = 80;
/// The credentials-file key of `nats.credentialsSecretRef` unless `key` says otherwise.
pub const NATS_CREDS_KEY: &str = "creds";

/// The sink to publish in the route, what its Secret resolved to, and the `SinkReady` verdict
/// (`None` when the sink names nothing to resolve).
pub struct SinkOutcome {
    pub spec: Option<Sink>,
    pub secrets: Option<SinkSecrets>,
    pub verdict: Option<Verdict>,
    /// The sink reads something the operator does not watch: re-read it every resync.
    pub reads_external: bool,
}

pub async fn resolve(
    source: &WebhookSource,
    ns: &str,
    ctx: &Context,
) -> Result<SinkOutcome, Error> {
    let Some(sink) = &source.spec.sink else {
        return Ok(SinkOutcome {
            spec: None,
            secrets: None,
            verdict: None,
            reads_external: false,
        });
    };
    let mut spec = sink.clone();
    let mut oks = Vec::new();
    let mut failure = None;

    if let Some(reference) = sink.http.as_ref().and_then(|h| h.service_ref.as_ref()) {
        match service_url(reference, ns, &ctx.args.cluster_domain, ctx).await? {
            Ok(url) => {
                oks.push(format!("sink.http.serviceRef resolved to {url}"));
                spec.http = Some(HttpSink {
                    url: Some(url),
                    service_ref: None,
                    ..sink.http.clone().unwrap_or_default()
                });
            }
            // The route keeps the unresolved reference: the ingest answers 503 naming it.
            Err(verdict) => failure = Some(verdict),
        }
    }

    let mut secrets = None;
    if failure.is_none() {
        match sink_secrets(sink, ns, ctx).await? {
            Some(Ok((resolved, message))) => {
                secrets = Some(resolved);
                oks.push(message);
            }
            Some(Err(verdict)) => failure = Some(verdict),
            None => {}
        }
    }

    let reads_external = sink
        .http
        .as_ref()
        .is_some_and(|h| h.service_ref.is_some() || h.headers_secret_ref.is_some())
        || sink
            .nats
            .as_ref()
            .is_some_and(|n| n.credentials_secret_ref.is_some());
    let verdict = match failure {
        Some(v) => Some(v),
        None if oks.is_empty() => None,
        None => Some(Verdict::ok(SINK_READY, "Resolved", oks.join("; "))),
    };
    Ok(SinkOutcome {
        spec: Some(spec),
        secrets,
        verdict,
        reads_external,
    })
}

/// The cluster-DNS URL of a Service port, or the verdict saying why there is none.
async fn service_url(
    reference: &ServiceRef,
    source_ns: &str,
    cluster_domain: &str,
    ctx: &Context,
) -> Result<Result<String, Verdict>, Error> {
    let ns = reference.namespace.as_deref().unwrap_or(source_ns);
    let port = reference.port.unwrap_or(DEFAULT_SERVICE_PORT);
    let found = Api::<Service>::namespaced(ctx.client.clone(), ns)
        .get_opt(&reference.name)
        .await
        .map_err(Error::GetService)?;
    let Some(service) = found else {
        return Ok(Err(Verdict::fail(
            SINK_READY,
            "ServiceNotFound",
            format!(
                "sink.http.serviceRef: Service {} not found in namespace {ns}; deliveries answer 503 until it exists",
                reference.name
            ),
        )));
    };
    let spec = service.spec.unwrap_or_default();
    let ports = spec.ports.unwrap_or_default();
    // An ExternalName Service is a DNS alias with no port list; a headless one may list none.
    let external = spec.type_.as_deref() == Some("ExternalName");
    if !external && !ports.is_empty() && !ports.iter().any(|p| p.port == port) {
        let listed: Vec<String> = ports.iter().map(|p| p.port.to_string()).collect();
        return Ok(Err(Verdict::fail(
            SINK_READY,
            "ServicePortNotFound",
            format!(
                "sink.http.serviceRef: Service {ns}/{} has no port {port} (it has {}); set serviceRef.port",
                reference.name,
                listed.join(", ")
            ),
        )));
    }
    Ok(Ok(service_dns_url(reference, ns, port, cluster_domain)))
}

/// Pure: `http://<name>.<ns>.svc.<domain>[:<port>]<path>`. Fully qualified (with the trailing
/// domain) so a resolver's search list costs no extra lookups.
pub fn service_dns_url(
    reference: &ServiceRef,
    ns: &str,
    port: i32,
    cluster_domain: &str,
) -> String {
    let domain = cluster_domain.trim_matches('.');
    let port = if port == 80 {
        String::new()
    } else {
        format!(":{port}")
    };
    let path = reference.path.as_deref().unwrap_or("/");
    format!("http://{}.{ns}.svc.{domain}{port}{path}", reference.name)
}

/// The sink's Secret, read into what the route carries; `None` when the sink names none.
async fn sink_secrets(
    sink: &Sink,
    ns: &str,
    ctx: &Context,
) -> Result<Option<Result<(SinkSecrets, String), Verdict>>, Error> {
    let reference = match (&sink.http, &sink.nats) {
        (Some(h), _) => h.headers_secret_ref.as_ref(),
        (_, Some(n)) => n.credentials_secret_ref.as_ref(),
        _ => None,
    };
    let Some(reference) = reference else {
        return Ok(None);
    };
    let found = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&reference.name)
        .await
        .map_err(Error::GetSecret)?;
    let Some(secret) = found else {
        return Ok(Some(Err(Verdict::fail(
            SINK_READY,
            "SinkSecretNotFound",
            format!(
                "sink: Secret {} not found in namespace {ns}",
                reference.name
            ),
        ))));
    };
    let mut secrets = SinkSecrets::default();
    if sink.http.is_some() {
        // Every key of the Secret is a header (e.g. `Authorization`).
        for key in keys(&secret) {
            if let Some(value) = text(&secret, &key) {
                secrets.headers.insert(key, value);
            }
        }
    } else {
        match nats_auth(&secret, reference.key.as_deref()) {
            Ok(auth) => secrets.nats = Some(auth),
            Err(problem) => {
                return Ok(Some(Err(Verdict::fail(
                    SINK_READY,
                    "SinkSecretInvalid",
                    format!("sink: Secret {} {problem}", reference.name),
                ))));
            }
        }
    }
    let what = match &secrets.nats {
        Some(auth) => format!("NATS {} from Secret {}", auth.kind(), reference.name),
        None => format!("headers from Secret {}", reference.name),
    };
    Ok(Some(Ok((secrets, what))))
}

fn keys(secret: &Secret) -> Vec<String> {
    let mut keys: Vec<String> = secret.data.iter().flat_map(|d| d.keys().cloned()).collect();
    keys.extend(secret.string_data.iter().flat_map(|d| d.keys().cloned()));
    keys
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    token::secret_value(secret, key)
        .and_then(|v| String::from_utf8(v).ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Pure: the one way of authenticating a NATS Secret holds. `creds_key` (the reference's `key`)
/// names the credentials-file key when it is not `creds`. The error completes "Secret NAME …"
/// and names keys only.
pub fn nats_auth(secret: &Secret, creds_key: Option<&str>) -> Result<NatsAuth, String> {
    let creds_key = creds_key.unwrap_or(NATS_CREDS_KEY);
    let mut found = Vec::new();
    if let Some(creds) = text(secret, creds_key) {
        // A credentials file ends with a newline that `text` trimmed; the parser wants the
        // armoured blocks only, so the trim is harmless.
        found.push((creds_key.to_owned(), NatsAuth::Creds(creds)));
    }
    if let Some(seed) = text(secret, "nkey") {
        found.push(("nkey".into(), NatsAuth::Nkey(seed)));
    }
    if let Some(token) = text(secret, "token") {
        found.push(("token".into(), NatsAuth::Token(token)));
    }
    match (text(secret, "user"), text(secret, "password")) {
        (Some(user), Some(password)) => found.push((
            "user/password".into(),
            NatsAuth::UserPassword { user, password },
        )),
        (Some(_), None) => return Err("has key user but no non-empty key password".into()),
        (None, Some(_)) => return Err("has key password but no non-empty key user".into()),
        (None, None) => {}
    }
    match found.len() {
        1 => Ok(found.pop().expect("one").1),
        0 => Err(format!(
            "has none of the keys {creds_key} (credentials file), nkey, token, or user and password"
        )),
        _ => Err(format!(
            "holds more than one kind of NATS credentials ({}); keep one",
            found
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            string_data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_nats_secret_holds_exactly_one_kind_of_credentials() {
        assert_eq!(
            nats_auth(&secret(&[("token", "t0k")]), None),
            Ok(NatsAuth::Token("t0k".into()))
        );
        assert_eq!(
            nats_auth(&secret(&[("user", "u"), ("password", "p")]), None),
            Ok(NatsAuth::UserPassword {
                user: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            nats_auth(&secret(&[("nkey", "SUAB")]), None),
            Ok(NatsAuth::Nkey("SUAB".into()))
        );
        assert_eq!(
            nats_auth(&secret(&[("my.creds", "-----BEGIN")]), Some("my.creds")),
            Ok(NatsAuth::Creds("-----BEGIN".into()))
        );
        let both = nats_auth(&secret(&[("token", "t0k"), ("nkey", "SUAB")]), None).unwrap_err();
        assert!(both.contains("nkey, token"), "{both}");
        assert!(!both.contains("t0k") && !both.contains("SUAB"), "{both}");
        let half = nats_auth(&secret(&[("user", "u")]), None).unwrap_err();
        assert!(half.contains("password"), "{half}");
        let none = nats_auth(&secret(&[("other", "x")]), None).unwrap_err();
        assert!(none.contains("creds"), "{none}");
    }

    #[test]
    fn a_service_reference_becomes_a_fully_qualified_cluster_url() {
        let mut reference = ServiceRef {
            name: "broker-ingress".into(),
            namespace: None,
            port: None,
            path: Some("/shop/default".into()),
        };
        assert_eq!(
            service_dns_url(&reference, "knative-eventing", 80, "cluster.local"),
            "http://broker-ingress.knative-eventing.svc.cluster.local/shop/default"
        );
        reference.path = None;
        assert_eq!(
            service_dns_url(&reference, "shop", 8080, "corp.internal."),
            "http://broker-ingress.shop.svc.corp.internal:8080/"
        );
    }
}
