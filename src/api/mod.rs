//! The custom resources, group `hookgate.dev`, version `v1alpha1`.
//!
//! The schemas in `crds/` are generated from these types (`hookgate crds`); validation the
//! API server can enforce lives here as CEL rules so bad YAML is refused at `kubectl apply`.

pub mod mapping;
pub mod webhook_source;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use mapping::{Mapping, MappingSpec, MappingStatus};
pub use webhook_source::{WebhookSource, WebhookSourceSpec, WebhookSourceStatus};

pub const GROUP: &str = "hookgate.dev";
pub const VERSION: &str = "v1alpha1";

/// CEL rule accepting Go-style durations (`0s`, `1m30s`, `500ms`), as `metav1.Duration` does.
pub(crate) const DURATION_PATTERN: &str =
    "self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')";

/// CEL rule accepting an RFC 3339 time (`2026-12-01T00:00:00Z`, `2026-12-01T01:00:00.5+01:00`).
pub(crate) const RFC3339_PATTERN: &str = "self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$')";

/// Parses a Go-style duration (`500ms`, `30s`, `1h30m`), the form the CRDs and flags use.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<kube::core::Duration>()
        .map(std::time::Duration::from)
        .map_err(|e| format!("{text:?} is not a duration such as 500ms, 30s or 5m: {e}"))
}

/// A key in a Secret in the resource's own namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretKeyRef {
    pub name: String,
    /// The key within the Secret; each field documents its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Condition types and reasons, shared by the operator, the ingest and the tests.
pub mod conditions {
    pub const READY: &str = "Ready";
    pub const SOURCE_FOUND: &str = "SourceFound";
}

/// Every CRD hookgate serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![WebhookSource::crd(), Mapping::crd()]
}

/// The CRDs as the multi-document YAML that `hookgate crds` prints and `crds/` holds.
pub fn crds_yaml() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let file = format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("crd"));
            serde_yaml::to_string(&crd).map(|yaml| (file, yaml))
        })
        .collect()
}
