//! `hookgate suggest`: a first Mapping for a source, guessed from the fields its payloads carry.
//!
//! The core, [`suggest`], is pure and reads only field paths and JSON types — what a
//! WebhookSource's `status.observedFields` and the standalone `/status` hold — plus header
//! names when a sample request has them. So the same guesses come from a payload file, from a
//! running standalone, or from a cluster's status. Payload values, when a sample is at hand,
//! only narrow the Mapping with a `when` condition on the sample's event type.
//!
//! The result always passes the CRD's CEL rules (a name, at least one identity, properties
//! with `fields` or `from`) and compiles: when no identity-like field exists, `externalId`
//! reads a placeholder path that makes every event fail loudly (422, "identity missing")
//! rather than deliver events under a made-up identity.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::api::mapping::{
    EventTemplate, Mapping, MappingSpec, Privacy, Properties, SourceRef, WhenCondition,
};
use crate::api::webhook_source::ObservedField;
use crate::mapping::ShapeObserver;

/// How many scalar fields become properties at most: enough to be useful, few enough to read.
const MAX_PROPERTIES: usize = 6;

/// The placeholder identity used when no field looks like one.
pub const PLACEHOLDER_IDENTITY: &str = "{{REPLACE_ME.user_id}}";

/// A suggested Mapping and why each field was chosen.
#[derive(Clone, Debug)]
pub struct Suggestion {
    pub mapping: Mapping,
    /// `(field of spec.event or spec, explanation)`, in output order. Every entry is a guess.
    pub guesses: Vec<(String, String)>,
}

/// The suggested Mapping alone, for callers that print their own YAML.
pub fn suggest_mapping(source: &str, fields: &[ObservedField]) -> Mapping {
    suggest(source, fields, &[]).mapping
}

/// A field reduced to what the heuristics read.
#[derive(Clone, Debug)]
struct Field {
    /// As observed, braces included: `{{data.object.customer}}`.
    template: String,
    /// Keys, lowercased, without array indexes' brackets: `["data", "object", "customer"]`.
    keys: Vec<String>,
    /// The last key as written, for property names.
    name: String,
    /// Seen as a string or number: what names, ids, identities and times can be.
    textual: bool,
    /// Seen as a string, number or boolean: what properties can be.
    scalar: bool,
    object: bool,
}

impl Field {
    fn parse(field: &ObservedField) -> Option<Self> {
        let inner = field.path.strip_prefix("{{")?.strip_suffix("}}")?.trim();
        if inner.is_empty() || inner.starts_with('$') {
            return None;
        }
        let written = split_keys(inner);
        let name = written.last().cloned().unwrap_or_default();
        let keys = written.iter().map(|k| k.to_lowercase()).collect();
        let has = |t: &str| field.types.iter().any(|x| x == t);
        Some(Self {
            template: format!("{{{{{inner}}}}}"),
            keys,
            name,
            textual: has("string") || has("number"),
            scalar: has("string") || has("number") || has("boolean"),
            object: has("object"),
        })
    }

    fn depth(&self) -> usize {
        self.keys.len()
    }

    fn last(&self) -> &str {
        self.keys.last().map(String::as_str).unwrap_or_default()
    }

    fn parent(&self) -> &str {
        self.keys
            .len()
            .checked_sub(2)
            .map(|i| self.keys[i].as_str())
            .unwrap_or_default()
    }

    /// Inside an array (`items.0.sku`): not one value per request.
    fn in_array(&self) -> bool {
        self.keys[..self.keys.len() - 1]
            .iter()
            .any(|k| k.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// Splits `a.b["c.d"].0` into the keys `a`, `b`, `c.d`, `0`.
fn split_keys(path: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("[\"") {
            let end = after.find("\"]").unwrap_or(after.len());
            keys.push(after[..end].replace("\\\"", "\""));
            rest = after.get(end + 2..).unwrap_or_default();
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end > 0 {
                keys.push(rest[..end].to_owned());
            }
            rest = &rest[end..];
        }
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    keys
}

/// The scope the event fields are read in: the whole body, or the elements of a batch array
/// (`forEach`), whose fields are read as `{{$item....}}`.
struct Scope<'f> {
    for_each: Option<String>,
    fields: Vec<Scoped<'f>>,
}

struct Scoped<'f> {
    field: &'f Field,
    /// Template in this scope: `{{$item.user_id}}` inside a forEach, else the field's own.
    template: String,
    /// Keys relative to the scope.
    keys: &'f [String],
}

impl Scoped<'_> {
    fn depth(&self) -> usize {
        self.keys.len()
    }

    fn last(&self) -> &str {
        self.keys.last().map(String::as_str).unwrap_or_default()
    }

    /// Inside an array of this scope (`items.0.sku`): not one value per event.
    fn in_array(&self) -> bool {
        self.keys[..self.keys.len().saturating_sub(1)]
            .iter()
            .any(|k| k.bytes().all(|b| b.is_ascii_digit()))
    }

    /// One text or number per event: outside any array of the scope.
    fn single_scalar(&self) -> bool {
        self.field.textual && !self.in_array()
    }
}

fn names(list: &[&str], key: &str) -> bool {
    list.contains(&key)
}

const NAME_KEYS: &[&str] = &[
    "type",
    "event",
    "event_type",
    "eventtype",
    "event_name",
    "eventname",
    "topic",
];
const ID_KEYS: &[&str] = &[
    "id",
    "event_id",
    "eventid",
    "uuid",
    "message_id",
    "messageid",
    "messagesid",
    "smssid",
    "delivery_id",
];
const EMAIL_KEYS: &[&str] = &[
    "email",
    "email_address",
    "emailaddress",
    "customer_email",
    "user_email",
    "receipt_email",
];
const EXTERNAL_KEYS: &[&str] = &[
    "customer",
    "customer_id",
    "customerid",
    "user_id",
    "userid",
    "account_id",
    "accountid",
    "member_id",
    "memberid",
    "contact_id",
    "contactid",
    "client_id",
    "external_id",
    "externalid",
];
/// Parents whose `id` identifies a person (`customer.id`, `sender.id`).
const PERSON_PARENTS: &[&str] = &[
    "customer", "user", "sender", "account", "member", "contact", "client", "actor", "buyer",
];
const PHONE_KEYS: &[&str] = &[
    "from",
    "phone",
    "phone_number",
    "phonenumber",
    "msisdn",
    "mobile",
];
const VISITOR_KEYS: &[&str] = &[
    "anonymous_id",
    "anonymousid",
    "visitor_id",
    "visitorid",
    "device_id",
    "deviceid",
    "distinct_id",
    "distinctid",
    "session_id",
    "sessionid",
    "cookie_id",
];
/// In order of preference: the time the event happened before the time a record was made.
const TIME_KEYS: &[&str] = &[
    "timestamp",
    "occurred_at",
    "occurredat",
    "sent_at",
    "sentat",
    "event_time",
    "time",
    "created",
    "created_at",
    "createdat",
    "date_created",
    "datecreated",
];
const PROPERTY_OBJECTS: &[&str] = &[
    "metadata",
    "properties",
    "traits",
    "custom_data",
    "attributes",
];
/// Fields that are noise as properties, or too sensitive to copy without thought.
const NOT_PROPERTIES: &[&str] = &[
    "object",
    "api_version",
    "livemode",
    "pending_webhooks",
    "node_id",
    "gravatar_id",
    "password",
    "token",
    "secret",
    "signature",
    "accountsid",
    "apiversion",
];
/// Property names worth more than their depth suggests.
const VALUABLE: &[&str] = &[
    "amount",
    "total",
    "price",
    "currency",
    "status",
    "plan",
    "quantity",
    "value",
    "revenue",
    "sku",
    "ref",
    "full_name",
    "to",
    "body",
    "country",
    "tier",
    "product",
];

/// Personal or secret data, anywhere in a path (`billing_address.city` included).
fn is_sensitive(key: &str) -> bool {
    key.contains("email")
        || key.contains("phone")
        || key.contains("address")
        || key.contains("password")
        || key.contains("card")
        || key == "body"
        || key.contains("first_name")
        || key.contains("last_name")
        || key.contains("customer_name")
        || key.contains("billing")
        || key.contains("shipping")
        || names(PHONE_KEYS, key)
}

/// Fields that say nothing about the event.
fn is_noise(key: &str) -> bool {
    key.ends_with("url") || names(NOT_PROPERTIES, key)
}

/// Guesses a Mapping for `source` from observed field paths and types and the names of
/// headers a request carried (`X-GitHub-Event`).
pub fn suggest(source: &str, observed: &[ObservedField], headers: &[&str]) -> Suggestion {
    let fields: Vec<Field> = observed.iter().filter_map(Field::parse).collect();
    let scope = choose_scope(&fields);
    let mut guesses = Vec::new();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut note = |field: &str, why: String| guesses.push((field.to_owned(), why));

    // Each role takes the shallowest matching scalar field; ties go to the key list's order.
    let pick = |keys: &[&str], used: &BTreeSet<String>, max_depth: usize| -> Option<&Scoped> {
        scope
            .fields
            .iter()
            .filter(|s| s.single_scalar() && s.depth() <= max_depth)
            .filter(|s| !used.contains(&s.template))
            .filter_map(|s| {
                let rank = keys.iter().position(|k| *k == s.last())?;
                Some((s.depth(), rank, s))
            })
            .min_by_key(|(depth, rank, _)| (*depth, *rank))
            .map(|(_, _, s)| s)
    };
    let header = |pred: &dyn Fn(&str) -> bool| -> Option<&str> {
        headers
            .iter()
            .copied()
            .find(|h| pred(&h.to_ascii_lowercase()))
    };

    if let Some(each) = &scope.for_each {
        note(
            "forEach",
            format!("{each} is an array of objects that carry the identity: one event per element"),
        );
    }

    // Event name: a top-level type field, else an event/topic header, else a static name.
    let name = if let Some(s) = pick(NAME_KEYS, &used, 1) {
        used.insert(s.template.clone());
        note(
            "name",
            format!("from {}, a field named like an event type", s.template),
        );
        s.template.clone()
    } else if let Some(h) = header(&|h| h.contains("event") || h.contains("topic")) {
        note("name", format!("from the {h} header"));
        format!("{{{{$header.{h}}}}}")
    } else {
        note(
            "name",
            "no event type field or header found: a static name".into(),
        );
        format!("{source} event")
    };

    let id = if let Some(s) = pick(ID_KEYS, &used, 1) {
        used.insert(s.template.clone());
        note("id", format!("from {}: deduplicates retries", s.template));
        Some(s.template.clone())
    } else if let Some(h) =
        header(&|h| h.contains("delivery") || h.ends_with("webhook-id") || h.ends_with("event-id"))
    {
        note("id", format!("from the {h} header: deduplicates retries"));
        Some(format!("{{{{$header.{h}}}}}"))
    } else {
        note(
            "id",
            "no id field found: each event gets a generated UUID (no dedup)".into(),
        );
        None
    };

    let deep = usize::MAX;
    let email = pick(EMAIL_KEYS, &used, deep)
        .or_else(|| {
            // Any other field whose name ends in "email".
            scope
                .fields
                .iter()
                .filter(|s| s.single_scalar() && s.last().ends_with("email"))
                .min_by_key(|s| s.depth())
        })
        .map(|s| {
            used.insert(s.template.clone());
            note(
                "email",
                format!("from {}, a field named like an email", s.template),
            );
            with_filter(&s.template, "trim | lower")
        });

    let person_id = scope
        .fields
        .iter()
        .filter(|s| s.single_scalar() && s.keys.len() >= 2 && s.last() == "id")
        .filter(|s| names(PERSON_PARENTS, &s.keys[s.keys.len() - 2]))
        .min_by_key(|s| s.depth());
    let external = pick(EXTERNAL_KEYS, &used, deep)
        .map(|s| (s, false))
        .or(person_id.map(|s| (s, false)))
        .or_else(|| pick(PHONE_KEYS, &used, 1).map(|s| (s, true)))
        .map(|(s, phone)| {
            used.insert(s.template.clone());
            if phone {
                note(
                    "externalId",
                    format!(
                        "from {}, a phone number, hashed (sha256) to keep it out of events",
                        s.template
                    ),
                );
                with_filter(&s.template, "sha256")
            } else {
                note(
                    "externalId",
                    format!("from {}, a field naming a customer or user", s.template),
                );
                s.template.clone()
            }
        });

    let visitor = pick(VISITOR_KEYS, &used, deep)
        .or_else(|| {
            scope
                .fields
                .iter()
                .filter(|s| s.single_scalar() && s.keys.len() >= 2 && s.last() == "login")
                .filter(|s| names(PERSON_PARENTS, &s.keys[s.keys.len() - 2]))
                .min_by_key(|s| s.depth())
        })
        .map(|s| {
            used.insert(s.template.clone());
            note(
                "visitorId",
                format!("from {}, an anonymous or login id", s.template),
            );
            s.template.clone()
        });

    let mut external = external;
    if email.is_none() && external.is_none() && visitor.is_none() {
        note(
            "externalId",
            format!(
                "no identity-like field found: {PLACEHOLDER_IDENTITY} is a placeholder that fails every event until replaced"
            ),
        );
        external = Some(PLACEHOLDER_IDENTITY.to_owned());
    }

    let timestamp = pick(TIME_KEYS, &used, deep).map(|s| {
        used.insert(s.template.clone());
        note(
            "timestamp",
            format!("from {} (unix time or RFC 3339 expected)", s.template),
        );
        s.template.clone()
    });
    if timestamp.is_none() {
        note(
            "timestamp",
            "no time field found: the receive time is used".into(),
        );
    }

    // Properties: a metadata-like object whole, plus a few scalars.
    let from = scope
        .fields
        .iter()
        .filter(|s| s.field.object && !s.in_array() && names(PROPERTY_OBJECTS, s.last()))
        .min_by_key(|s| s.depth())
        .map(|s| s.template.clone());
    let mut candidates: Vec<&Scoped> = scope
        .fields
        .iter()
        .filter(|s| s.field.scalar && !s.in_array() && !used.contains(&s.template))
        .filter(|s| !s.keys.iter().any(|k| is_sensitive(k)) && !is_noise(s.last()))
        .filter(|s| !names(ID_KEYS, s.last()))
        .filter(|s| {
            // Not inside the object `from` already copies.
            from.as_deref()
                .and_then(|f| f.strip_suffix("}}"))
                .is_none_or(|f| !s.template.starts_with(&format!("{f}.")))
        })
        .collect();
    let value_of = |s: &Scoped| -> usize {
        let last = s.last();
        let valuable = VALUABLE.iter().any(|v| last.contains(v));
        s.depth() * 2 - if valuable { 4.min(s.depth() * 2) } else { 0 }
    };
    candidates.sort_by_key(|s| (value_of(s), s.template.clone()));
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    for s in candidates {
        if props.len() == MAX_PROPERTIES {
            break;
        }
        let mut key = property_name(&s.field.name);
        if props.contains_key(&key) {
            key = property_name(&s.keys.join("_"));
        }
        if props.contains_key(&key) {
            continue;
        }
        props.insert(key, s.template.clone());
    }
    if from.is_some() || !props.is_empty() {
        note(
            "properties",
            match &from {
                Some(f) => format!("all of {f}, plus a few scalar fields; edit to taste"),
                None => "a few scalar fields; edit to taste".into(),
            },
        );
    }
    let properties = (from.is_some() || !props.is_empty()).then(|| Properties {
        from,
        fields: (!props.is_empty()).then_some(props),
    });
    let privacy = email.as_ref().map(|_| {
        note(
            "privacy",
            "email is hashed (normalised SHA-256) so no raw address leaves the ingest".into(),
        );
        Privacy {
            hash: vec!["email".into()],
            drop: Vec::new(),
        }
    });

    let spec = MappingSpec {
        source_ref: SourceRef {
            name: source.to_owned(),
        },
        when: Vec::new(),
        for_each: scope.for_each.clone(),
        event: EventTemplate {
            name,
            id,
            visitor_id: visitor,
            external_id: external,
            email,
            timestamp,
            properties,
        },
        privacy,
    };
    Suggestion {
        mapping: Mapping::new(&format!("{source}-events"), spec),
        guesses,
    }
}

/// `{{a.b}}` + `lower` → `{{a.b | lower}}`.
fn with_filter(template: &str, filter: &str) -> String {
    let inner = template
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .unwrap_or(template);
    format!("{{{{{inner} | {filter}}}}}")
}

/// Property names as written in the mapping: keys are lowercase already; keep them readable.
fn property_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The whole body, or a batch array's elements when the body has no identity of its own but
/// the elements of a top-level array do.
fn choose_scope(fields: &[Field]) -> Scope<'_> {
    let identity_like =
        |key: &str| names(EMAIL_KEYS, key) || names(EXTERNAL_KEYS, key) || names(VISITOR_KEYS, key);
    let top_level_identity = fields
        .iter()
        .any(|f| !f.in_array() && f.scalar && identity_like(f.last()))
        || fields
            .iter()
            .any(|f| !f.in_array() && f.last() == "id" && names(PERSON_PARENTS, f.parent()));
    let batch = (!top_level_identity)
        .then(|| {
            fields
                .iter()
                .find(|f| f.depth() == 3 && f.keys[1] == "0" && f.scalar && identity_like(f.last()))
        })
        .flatten();
    match batch {
        Some(element_field) => {
            let array = &element_field.keys[0];
            let array_field = fields
                .iter()
                .find(|f| f.depth() == 1 && &f.keys[0] == array);
            let array_template = array_field
                .map(|f| f.template.clone())
                .unwrap_or_else(|| format!("{{{{{array}}}}}"));
            let scoped = fields
                .iter()
                .filter(|f| f.depth() > 2 && &f.keys[0] == array && f.keys[1] == "0")
                .filter_map(|f| {
                    // `{{events.0.user_id}}` → `{{$item.user_id}}`: drop the array and index.
                    let inner = f.template.strip_prefix("{{")?.strip_suffix("}}")?;
                    let rest = inner.split_once(".0")?.1;
                    Some(Scoped {
                        field: f,
                        template: format!("{{{{$item{rest}}}}}"),
                        keys: &f.keys[2..],
                    })
                })
                .collect();
            Scope {
                for_each: Some(array_template),
                fields: scoped,
            }
        }
        None => Scope {
            for_each: None,
            fields: fields
                .iter()
                .map(|f| Scoped {
                    field: f,
                    template: f.template.clone(),
                    keys: &f.keys,
                })
                .collect(),
        },
    }
}

/// Observed fields of one payload, as status would show them after that one request.
pub fn observe_payload(body: &Value) -> Vec<ObservedField> {
    let mut observer = ShapeObserver::default();
    observer.observe(body);
    observer
        .fields()
        .into_iter()
        .map(|f| ObservedField {
            path: f.path,
            types: f.types.names().map(str::to_owned).collect(),
            seen: i64::try_from(f.seen).unwrap_or(i64::MAX),
        })
        .collect()
}

/// From a sample request: the guesses of [`suggest`], narrowed by a `when` condition to the
/// sample's event type when the name comes from a field or header that has a value.
pub fn suggest_from_payload(source: &str, body: &Value, headers: &[(&str, &str)]) -> Suggestion {
    let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
    let mut suggestion = suggest(source, &observe_payload(body), &names);
    let spec = &mut suggestion.mapping.spec;
    let name = spec.event.name.clone();
    let value = if let Some(header) = name
        .strip_prefix("{{$header.")
        .and_then(|h| h.strip_suffix("}}"))
    {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(header))
            .map(|(_, v)| (*v).to_owned())
    } else if spec.for_each.is_none() && name.starts_with("{{") {
        // A top-level field: read the sample's value.
        let key = name.trim_start_matches("{{").trim_end_matches("}}");
        body.get(key).and_then(Value::as_str).map(str::to_owned)
    } else {
        None
    };
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        spec.when.push(WhenCondition {
            path: name,
            equals: Some(value.clone()),
            ..Default::default()
        });
        let slug: String = value
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let slug = slug.trim_matches('-');
        suggestion.mapping.metadata.name = Some(format!("{source}-{slug}"));
        suggestion.guesses.insert(
            0,
            (
                "when".into(),
                format!("only requests like the sample ({value}); remove it to map every type"),
            ),
        );
    }
    suggestion
}

impl Suggestion {
    /// The Mapping as YAML, ready for `kubectl apply`, with the guesses as comments: a summary
    /// on top and `# guess` after each guessed event field.
    pub fn to_yaml(&self) -> String {
        let yaml = serde_yaml::to_string(&self.mapping).unwrap_or_default();
        let mut out = String::from(
            "# Suggested by `hookgate suggest`: every field below is a guess from the payload's\n\
             # field names. Check them, then `kubectl apply -f` this file.\n",
        );
        for (field, why) in &self.guesses {
            out.push_str(&format!("#   {field}: {why}\n"));
        }
        // Marks `spec.<key>` and `spec.event.<key>` lines whose key was guessed.
        let (mut in_spec, mut in_event) = (false, false);
        for line in yaml.lines() {
            out.push_str(line);
            let indent = line.len() - line.trim_start().len();
            let key = line.trim_start().split(':').next().unwrap_or_default();
            if indent == 0 {
                in_spec = key == "spec";
            }
            if indent <= 2 {
                in_event = in_spec && indent == 2 && key == "event";
            }
            let guessed = self.guesses.iter().any(|(f, _)| f == key);
            if guessed && ((in_event && indent == 4) || (in_spec && indent == 2 && key != "event"))
            {
                out.push_str("  # guess");
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests;

/// `hookgate suggest`: where the fields come from.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["name", "payload", "from_status"])))]
pub struct SuggestArgs {
    /// A WebhookSource in the cluster: suggests from the shape in its `status.observedFields`.
    #[arg(conflicts_with = "source")]
    pub name: Option<String>,
    /// With NAME: its namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, requires = "name")]
    pub namespace: Option<String>,
    /// A sample request body (JSON or form-encoded) saved from the sender.
    #[arg(long, value_name = "FILE")]
    pub payload: Option<std::path::PathBuf>,
    /// The `/status` JSON of a running `hookgate standalone` (an http:// URL, or a saved file):
    /// suggests from the shape the source learned.
    #[arg(long, value_name = "URL|FILE")]
    pub from_status: Option<String>,
    /// The WebhookSource the Mapping is for (with --payload or --from-status).
    #[arg(long, required_unless_present = "name")]
    pub source: Option<String>,
    /// Content type of `--payload` (default: sniffed, JSON or form).
    #[arg(long)]
    pub content_type: Option<String>,
    /// A header of the sample request, `Name: value` (repeatable): event names and ids often
    /// travel in headers (`X-GitHub-Event`).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
}

/// Prints the suggested Mapping as YAML on stdout.
pub fn run(args: &SuggestArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let headers: Vec<(&str, &str)> = args
        .headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim(), v.trim()))
                .with_context(|| format!("--header {h:?} is not `Name: value`"))
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(name) = &args.name {
        let target = crate::verbs::Target {
            name: name.clone(),
            namespace: args.namespace.clone(),
        };
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        let yaml = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(crate::verbs::suggest(&target, &names))?;
        print!("{yaml}");
        return Ok(());
    }
    let source = args.source.as_deref().unwrap_or_default();
    let suggestion = if let Some(path) = &args.payload {
        let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let body = crate::mapping::parse_body(args.content_type.as_deref(), &raw)
            .with_context(|| format!("{} is not a payload hookgate can read", path.display()))?;
        suggest_from_payload(source, &body, &headers)
    } else {
        let location = args.from_status.as_deref().unwrap_or_default();
        let text = if location.starts_with("http://") {
            http_get(location).with_context(|| format!("fetching {location}"))?
        } else {
            std::fs::read_to_string(location).with_context(|| format!("reading {location}"))?
        };
        let fields = fields_from_status(&text, source)?;
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        suggest(source, &fields, &names)
    };
    print!("{}", suggestion.to_yaml());
    Ok(())
}

/// The observed fields of `source` in a standalone's `/status` JSON (`{"sources": [...]}`),
/// or in a WebhookSource's status (`{"observedFields": [...]}`, as `kubectl get -o json`
/// prints under `.status`).
pub fn fields_from_status(text: &str, source: &str) -> anyhow::Result<Vec<ObservedField>> {
    let value: Value = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
    let status = match value.get("sources").and_then(Value::as_array) {
        Some(sources) => {
            let known: Vec<&str> = sources
                .iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .collect();
            sources
                .iter()
                .find(|s| s.get("name").and_then(Value::as_str) == Some(source))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no source {source:?} in the status (sources: {})",
                        known.join(", ")
                    )
                })?
        }
        None => value.get("status").unwrap_or(&value),
    };
    let fields: Vec<ObservedField> = serde_json::from_value(
        status
            .get("observedFields")
            .cloned()
            .unwrap_or(Value::Array(Vec::new())),
    )?;
    if fields.is_empty() {
        anyhow::bail!("source {source:?} has no observed fields yet: send it a webhook first");
    }
    Ok(fields)
}

/// A plain HTTP/1.1 GET for the loopback admin port (no TLS: `/status` is never exposed).
fn http_get(url: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = rest.split_once('/').map_or((rest, "/"), |(a, p)| (a, p));
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let mut stream = std::net::TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8(response)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        anyhow::bail!("answered {status}");
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}
