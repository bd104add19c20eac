//! `WebhookSource`: one inbound endpoint with a secret URL.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DURATION_PATTERN, RFC3339_PATTERN, SecretKeyRef};

/// The annotation whose value, when changed, makes the operator generate a new token.
pub const ROTATE_TOKEN_ANNOTATION: &str = "hookgate.dev/rotate-token";

// Each `printcolumn(...)` repeats `type_ = ...`: clippy reads the list as one attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "hookgate.dev",
    version = "v1alpha1",
    kind = "WebhookSource",
    derive = "PartialEq",
    namespaced,
    status = "WebhookSourceStatus",
    shortname = "whs",
    category = "hookgate",
    doc = "An inbound webhook endpoint: a secret URL that senders POST to.",
    printcolumn(
        name = "Display name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    printcolumn(
        name = "Received",
        type_ = "integer",
        json_path = ".status.counters.received"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.counters.failed"
    ),
    printcolumn(name = "Last event", type_ = "date", json_path = ".status.lastEventAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSourceSpec {
    /// Free text shown to people; changing it never changes the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,

    /// A disabled source answers 503 with Retry-After and delivers nothing.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Bring your own token (for Sealed or External Secrets); the key defaults to `token`.
    /// Without it the operator generates `<name>-webhook-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_rotation: Option<TokenRotation>,

    /// Signature verification on top of the URL token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<Dedup>,

    /// Where this source's events go; the operator's default sink when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<Sink>,
}

fn default_true() -> bool {
    true
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRotation {
    /// How long the previous token keeps working after a rotation. `0s` (the default)
    /// invalidates the old URL at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(DURATION_PATTERN)
        .message("gracePeriod must be a duration such as 0s, 30s, 5m or 1h"))]
    pub grace_period: Option<String>,
}

/// Supported sender signature schemes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SignatureScheme {
    /// `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// `Stripe-Signature: t=..,v1=..` with a timestamp tolerance.
    Stripe,
    /// `webhook-id` / `webhook-timestamp` / `webhook-signature` (Svix and others).
    StandardWebhooks,
    /// `X-Shopify-Hmac-Sha256: <base64>`.
    Shopify,
    /// A generic HMAC in a header of your choice.
    Hmac,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    Sha256,
    Sha1,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef)")
    .message("signature.secretRef is required: name the Secret (and key) that holds the signing secret"))]
#[x_kube(validation = Rule::new("self.type != 'hmac' || has(self.header)")
    .message("signature.header is required for type hmac: name the header that carries the signature"))]
#[x_kube(validation = Rule::new("has(self.previousSecretRef) == has(self.previousSecretExpiresAt)")
    .message("signature.previousSecretRef and signature.previousSecretExpiresAt go together: the previous signing secret is accepted until that time"))]
#[x_kube(validation = Rule::new(
    "!has(self.previousSecretRef) || !has(self.secretRef) || self.previousSecretRef.name != self.secretRef.name || (has(self.previousSecretRef.key) ? self.previousSecretRef.key : 'secret') != (has(self.secretRef.key) ? self.secretRef.key : 'secret')"
)
    .message("signature.previousSecretRef must name another Secret or key than signature.secretRef"))]
pub struct Signature {
    #[serde(rename = "type")]
    pub scheme: SignatureScheme,

    /// The Secret holding the signing secret; the key defaults to `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,

    /// During a signing-secret rotation: the Secret holding the secret being replaced (the key
    /// defaults to `secret`). It is accepted alongside `secretRef` until
    /// `previousSecretExpiresAt`, then dropped by the operator without any further change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_ref: Option<SecretKeyRef>,

    /// When the previous signing secret stops being accepted, as an RFC 3339 time
    /// (`2026-12-01T00:00:00Z`). An absolute time, so the window is the same whenever and
    /// however often the manifest is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(RFC3339_PATTERN)
        .message("signature.previousSecretExpiresAt must be an RFC 3339 time such as 2026-12-01T00:00:00Z"))]
    pub previous_secret_expires_at: Option<String>,

    /// Accepted clock difference for timestamped schemes (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(DURATION_PATTERN)
        .message("tolerance must be a duration such as 30s or 5m"))]
    pub tolerance: Option<String>,

    /// `hmac` only: the header carrying the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,

    /// `hmac` only (default sha256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<HmacAlgorithm>,

    /// `hmac` only (default hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<SignatureEncoding>,

    /// `hmac` only: a prefix before the encoded MAC, e.g. `sha256=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.burst) || has(self.requestsPerSecond)")
    .message("limits.burst needs limits.requestsPerSecond"))]
pub struct Limits {
    /// The largest body accepted; larger requests get 413.
    #[serde(default = "default_max_body_bytes")]
    #[x_kube(validation = Rule::new("self > 0")
        .message("limits.maxBodyBytes must be a positive number of bytes"))]
    pub max_body_bytes: i64,

    /// Sustained requests per second; above it senders get 429 with Retry-After.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0")
        .message("limits.requestsPerSecond must be positive (leave it out for no limit)"))]
    pub requests_per_second: Option<i32>,

    /// Requests allowed in a burst above the sustained rate (default: requestsPerSecond).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("limits.burst must be positive"))]
    pub burst: Option<i32>,
}

pub const DEFAULT_MAX_BODY_BYTES: i64 = 1024 * 1024;

fn default_max_body_bytes() -> i64 {
    DEFAULT_MAX_BODY_BYTES
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            requests_per_second: None,
            burst: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Dedup {
    /// Duplicate event ids within this window are acknowledged and not delivered again.
    /// `0s` turns deduplication off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(DURATION_PATTERN)
        .message("dedup.window must be a duration such as 0s, 10m or 1h"))]
    pub window: Option<String>,
}

/// Exactly one of `stdout`, `http` or `nats`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.stdout) ? 1 : 0) + (has(self.http) ? 1 : 0) + (has(self.nats) ? 1 : 0) == 1"
).message("sink must set exactly one of stdout, http or nats"))]
pub struct Sink {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<StdoutSink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsSink>,
}

/// JSON lines on the ingest's standard output.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct StdoutSink {}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CloudEventsMode {
    /// `ce-*` headers, the event's `data` as the body.
    #[default]
    Binary,
    /// The whole CloudEvent as `application/cloudevents+json`.
    Structured,
}

/// CloudEvents 1.0 over HTTP (Knative brokers, Argo Events, any collector).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.serviceRef)")
    .message("sink.http sets exactly one of url or serviceRef"))]
pub struct HttpSink {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("sink.http.url must start with http:// or https://"))]
    pub url: Option<String>,
    /// A Service in the cluster instead of a URL; the operator resolves it to
    /// `http://<name>.<namespace>.svc.<cluster domain>:<port><path>` and reports a missing
    /// Service or port on the source's `SinkReady` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_ref: Option<ServiceRef>,
    #[serde(default)]
    pub mode: CloudEventsMode,
    /// Per-attempt timeout (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(DURATION_PATTERN)
        .message("sink.http.timeout must be a duration such as 500ms or 5s"))]
    pub timeout: Option<String>,
    /// Extra request headers, from a Secret (each key a header name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretKeyRef>,
}

/// A Service receiving CloudEvents over plain HTTP inside the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    #[x_kube(validation = Rule::new("self != ''").message("sink.http.serviceRef.name must name a Service"))]
    pub name: String,
    /// Defaults to the source's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// One of the Service's ports (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535")
        .message("sink.http.serviceRef.port must be a port number from 1 to 65535"))]
    pub port: Option<i32>,
    /// The request path (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('/')")
        .message("sink.http.serviceRef.path must start with /"))]
    pub path: Option<String>,
}

/// NATS JetStream publish, acknowledged by PubAck; `Nats-Msg-Id` is the event id.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NatsSink {
    #[x_kube(validation = Rule::new("self.startsWith('nats://') || self.startsWith('tls://')")
        .message("sink.nats.url must start with nats:// or tls://"))]
    pub url: String,
    #[x_kube(validation = Rule::new("self != ''").message("sink.nats.subject must not be empty"))]
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// A Secret with the NATS credentials, by key: `creds` (a credentials file: user JWT and
    /// NKey seed), `nkey` (an NKey seed), `token`, or `user` and `password`; exactly one kind.
    /// `key` names the credentials-file key when it is not `creds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeyRef>,
}

/// Counters since the source was created; written by the ingest.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    #[serde(default)]
    pub received: i64,
    #[serde(default)]
    pub delivered: i64,
    #[serde(default)]
    pub ignored: i64,
    #[serde(default)]
    pub duplicates: i64,
    #[serde(default)]
    pub rejected: i64,
    #[serde(default)]
    pub failed: i64,
}

/// One event of a handled request, or a request without events; identities are masked.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecentEvent {
    pub time: Time,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// e.g. `j***@e***.com`; never the raw value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// delivered, ignored, duplicate, rejected or failed.
    pub outcome: String,
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ErrorStage {
    Auth,
    Parse,
    Map,
    Deliver,
}

/// An error, deduplicated: the same stage and message only bump `count` and `time`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecentError {
    /// When it last happened.
    pub time: Time,
    pub stage: ErrorStage,
    pub message: String,
    #[serde(default)]
    pub count: i64,
}

/// A payload path seen by the ingest, in template syntax.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObservedField {
    /// e.g. `{{data.object.customer}}`.
    pub path: String,
    /// JSON types seen at this path: string, number, boolean, object, array, null.
    #[serde(default)]
    pub types: Vec<String>,
    /// How often this path arrived (per array element for paths inside arrays): counted for a
    /// source's first 64 bodies and while it sends fewer than 100 a second, above that
    /// estimated from 100 bodies a second, which the ingest parses whole to learn the shape.
    #[serde(default)]
    pub seen: i64,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSourceStatus {
    /// The generation the operator last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The webhook URL with the token redacted to its last 4 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_rotated_at: Option<Time>,

    /// While a signing-secret rotation window is open: when the previous signing secret
    /// (`signature.previousSecretRef`) stops being accepted. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_signing_secret_expires_at: Option<Time>,

    /// Names of the Mappings attached to this source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mappings: Vec<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_event_at: Option<Time>,

    /// The last 10 events, newest first; a request without events (ignored, rejected, failed)
    /// is listed once, a batch once per event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_events: Vec<RecentEvent>,

    /// The last 10 distinct errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_errors: Vec<RecentError>,

    /// The learned payload shape (at most 100 paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub observed_fields: Vec<ObservedField>,

    /// Observed paths that no mapping reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmapped_fields: Vec<String>,
}
