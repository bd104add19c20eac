//! `Mapping`: how a source's payload becomes events.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::webhook_source::RecentError;

// Each `printcolumn(...)` repeats `type_ = ...`: clippy reads the list as one attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "hookgate.dev",
    version = "v1alpha1",
    kind = "Mapping",
    derive = "PartialEq",
    namespaced,
    status = "MappingStatus",
    shortname = "whm",
    category = "hookgate",
    // Lets the operator list one source's mappings with a field selector instead of all of them.
    selectable = ".spec.sourceRef.name",
    doc = "Which fields of a WebhookSource's payload become the event name, identity, id and properties.",
    printcolumn(name = "Source", type_ = "string", json_path = ".spec.sourceRef.name"),
    printcolumn(name = "Event", type_ = "string", json_path = ".spec.event.name"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.matched"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MappingSpec {
    /// The WebhookSource (same namespace) whose requests this mapping reads.
    pub source_ref: SourceRef,

    /// All conditions must hold for the mapping to apply; a request no mapping matches is
    /// acknowledged and counted as ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<WhenCondition>,

    /// A template selecting an array: one event per element, read inside with `{{$item.path}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,

    pub event: EventTemplate,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<Privacy>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SourceRef {
    #[x_kube(validation = Rule::new("self != ''").message("sourceRef.name must name a WebhookSource"))]
    pub name: String,
}

/// One condition on the payload or headers; set `path` and exactly one operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.equals) ? 1 : 0) + (has(self.exists) ? 1 : 0) + (has(self.__in__) ? 1 : 0) + (has(self.prefix) ? 1 : 0) == 1"
).message("each `when` condition sets exactly one of equals, exists, in or prefix"))]
pub struct WhenCondition {
    /// A template such as `{{type}}` or `{{$header.X-GitHub-Event}}`.
    pub path: String,
    /// The value, compared as text (`42` equals the number 42).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// true: the path must be present and not null; false: it must be absent or null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// The value must be one of these (compared as text).
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub in_: Option<Vec<String>>,
    /// The value, as text, must start with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// The event to emit. Every value is a template (`{{path}}`, text around variables,
/// filters) or, without braces, a static value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.visitorId) || has(self.email) || has(self.externalId)")
    .message("event needs an identity: set at least one of event.visitorId, event.email or event.externalId"))]
pub struct EventTemplate {
    /// The event name, e.g. `Purchase` or `{{$header.X-GitHub-Event}}`.
    #[x_kube(validation = Rule::new("self != ''").message("event.name must not be empty"))]
    pub name: String,
    /// The event id (used for deduplication); a UUID is generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Unix seconds, milliseconds or RFC 3339; the receive time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Properties>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.from) || has(self.fields)")
    .message("event.properties needs `from` (a whole object) or `fields` (selected values), or both"))]
pub struct Properties {
    /// A template selecting an object whose fields all become properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Named properties, each a template or a static value; they win over `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

/// Applied before delivery.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Privacy {
    /// Event fields to replace with their normalised SHA-256 (`email`, `visitorId`,
    /// `externalId`, or `properties.<name>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hash: Vec<String>,
    /// Property paths to remove (`properties.card.number`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MappingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Requests this mapping matched (written by the ingest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<i64>,

    /// Events this mapping failed to produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_matched_at: Option<Time>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_errors: Vec<RecentError>,
}
