//! `privacy.hash` and `privacy.drop`, applied to each event before delivery.

use std::borrow::Cow;

use serde_json::Value;

use crate::api::mapping::Privacy;

use super::compile::spec_path;
use super::event::{MappedEvent, Properties};
use super::template::{Path, Val, lowercase, sha256_hex};

#[derive(Clone, Debug, Default)]
pub(crate) struct CompiledPrivacy {
    hash: Box<[HashTarget]>,
    /// Paths inside `properties`.
    drop: Box<[Path]>,
    /// Whether any rule reads or changes `properties`.
    edits_properties: bool,
}

#[derive(Clone, Debug, PartialEq)]
enum HashTarget {
    Identity(Identity),
    /// A path inside `properties`.
    Property(Path),
}

/// An event's identity fields, which `privacy.hash` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    Email,
    VisitorId,
    ExternalId,
}

/// Receives `(field, position, message)` for each problem found.
pub(crate) type Report<'r> = dyn FnMut(String, Option<usize>, String) + 'r;

impl CompiledPrivacy {
    pub(crate) fn compile(spec: Option<&Privacy>, report: &mut Report<'_>) -> Self {
        let Some(spec) = spec else {
            return Self::default();
        };
        let mut hash = Vec::new();
        for (i, entry) in spec.hash.iter().enumerate() {
            let field = format!("privacy.hash[{i}]");
            match entry.trim() {
                "email" => hash.push(HashTarget::Identity(Identity::Email)),
                "visitorId" => hash.push(HashTarget::Identity(Identity::VisitorId)),
                "externalId" => hash.push(HashTarget::Identity(Identity::ExternalId)),
                other => match property_path(other, HASHABLE) {
                    Ok(path) => hash.push(HashTarget::Property(path)),
                    Err((position, message)) => report(field, position, message),
                },
            }
        }
        let mut drop = Vec::new();
        for (i, entry) in spec.drop.iter().enumerate() {
            match property_path(entry, DROPPABLE) {
                Ok(path) => drop.push(path),
                Err((position, message)) => report(format!("privacy.drop[{i}]"), position, message),
            }
        }
        let edits_properties =
            !drop.is_empty() || hash.iter().any(|t| matches!(t, HashTarget::Property(_)));
        Self {
            hash: hash.into(),
            drop: drop.into(),
            edits_properties,
        }
    }

    /// An identity field's value as the event carries it. A field `privacy.hash` names is
    /// hashed from the template's text as it is, not first copied into a string of the event's.
    pub(crate) fn identity(&self, field: Identity, value: Val<'_>) -> Option<String> {
        if !self.hash.contains(&HashTarget::Identity(field)) {
            return value.into_nonempty_string();
        }
        let text = value.nonempty_text()?;
        let text = text.trim();
        Some(match field {
            // Emails are compared case-insensitively everywhere that matters, so the hash must
            // be of the normalised form to join with other systems' hashed emails.
            Identity::Email => sha256_hex(lowercase(Cow::Borrowed(text)).as_bytes()),
            Identity::VisitorId | Identity::ExternalId => sha256_hex(text.as_bytes()),
        })
    }

    /// The rules on `properties`; identity fields were hashed as they were read
    /// ([`CompiledPrivacy::identity`]).
    pub(crate) fn apply(&self, event: &mut MappedEvent<'_>) {
        if !self.edits_properties {
            return;
        }
        // Properties are held as JSON text; rules on them edit a parsed copy.
        let mut properties = Value::Object(event.properties.to_map());
        for target in &self.hash {
            if let HashTarget::Property(path) = target
                && let Some(value) = path.resolve_mut(&mut properties)
            {
                let hashed = match &*value {
                    Value::Null => continue,
                    Value::String(s) => sha256_hex(s.trim().as_bytes()),
                    other => sha256_hex(other.to_string().trim().as_bytes()),
                };
                *value = Value::String(hashed);
            }
        }
        for path in &self.drop {
            path.remove(&mut properties);
        }
        if let Value::Object(map) = properties {
            event.properties = Properties::from_map(&map);
        }
    }
}

const HASHABLE: &str = "email, visitorId, externalId or properties.<name>";
const DROPPABLE: &str = "a property path such as properties.card.number";

/// `properties.<path>` to the path inside properties.
fn property_path(entry: &str, expected: &str) -> Result<Path, (Option<usize>, String)> {
    let path = spec_path(entry)?;
    if path.keys().next() != Some("properties") || path.keys().len() < 2 {
        return Err((None, format!("\"{}\" is not {expected}", entry.trim())));
    }
    Ok(path.tail())
}
