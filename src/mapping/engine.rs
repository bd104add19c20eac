//! Evaluating compiled mappings against one request.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use smallvec::SmallVec;

use super::compile::CompiledMapping;
use super::event::{MappedEvent, Name, Properties, PropertiesWriter};
use super::privacy::Identity;
use super::projection::Kept;
use super::request::{Request, Scope};
use super::template::{Found, Template, Val, article};
use super::time::to_timestamp;

/// A mapping matched but could not produce an event. The message names fields and templates,
/// never payload values (it lands in status, Events and the sender's 422 body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingError {
    pub mapping: Arc<str>,
    /// The forEach element index, for batched mappings.
    pub item: Option<usize>,
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Some(item) => write!(
                f,
                "mapping {}: forEach item {}: {}",
                self.mapping, item, self.message
            ),
            None => write!(f, "mapping {}: {}", self.mapping, self.message),
        }
    }
}

impl std::error::Error for MappingError {}

/// What the ingest answers (DESIGN §5), before delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No mapping matched, or matched ones produced nothing (an empty batch): 200 `ignored`.
    Ignored,
    /// At least one event to deliver; errors of other mappings/elements are recorded, not
    /// answered.
    Accepted,
    /// Mappings matched but every one failed: 422.
    Unprocessable,
}

/// A request's events: inline, because nearly every request makes one.
pub type Events<'m> = SmallVec<[MappedEvent<'m>; 1]>;

/// Everything the mappings of one source made of one request; its events borrow the
/// mappings' names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MapOutcome<'m> {
    /// Events to deliver, in mapping order then element order.
    pub events: Events<'m>,
    pub errors: Vec<MappingError>,
    /// The mappings whose conditions held (for their `matched` counters), as indexes into
    /// those given to [`map_request`]: a name would be a reference count that every request
    /// to the mapping writes. Inline: a source has a few mappings.
    pub matched: SmallVec<[usize; 4]>,
}

impl MapOutcome<'_> {
    /// The outcome with events that have names of their own, to outlive the mappings.
    pub fn into_owned(self) -> MapOutcome<'static> {
        MapOutcome {
            events: self
                .events
                .into_iter()
                .map(MappedEvent::into_owned)
                .collect(),
            errors: self.errors,
            matched: self.matched,
        }
    }

    pub fn verdict(&self) -> Verdict {
        if !self.events.is_empty() {
            Verdict::Accepted
        } else if !self.errors.is_empty() {
            Verdict::Unprocessable
        } else {
            Verdict::Ignored
        }
    }
}

/// Body paths a mapping can read before their values spill from the stack to the heap.
const INLINE_VALUES: usize = 16;

/// Runs `f` on the values of `len` body paths, set by `fill`: on the stack for any mapping of
/// a sensible size.
fn with_values<'v, R>(
    len: usize,
    fill: impl FnOnce(&mut [Found<'v>]),
    f: impl FnOnce(&[Found<'v>]) -> R,
) -> R {
    let mut inline = [Found::Missing; INLINE_VALUES];
    let mut spilled = Vec::new();
    let values = match inline.get_mut(..len) {
        Some(values) => values,
        None => {
            spilled.resize(len, Found::Missing);
            &mut spilled[..]
        }
    };
    fill(values);
    f(values)
}

/// Runs every mapping of a source against a request.
pub fn map_request<'m>(mappings: &'m [CompiledMapping], request: &Request<'_>) -> MapOutcome<'m> {
    let mut outcome = MapOutcome::default();
    for (index, mapping) in mappings.iter().enumerate() {
        mapping.apply(index, request, &mut outcome);
    }
    outcome
}

impl CompiledMapping {
    /// Adds this mapping's events (or errors) for `request` to `outcome`; nothing when its
    /// conditions do not hold. `index` is the mapping's place in the list a projected request's
    /// projection was made of.
    fn apply<'m, 'r>(
        &'m self,
        index: usize,
        request: &'r Request<'_>,
        outcome: &mut MapOutcome<'m>,
    ) {
        let scope = request.scope();
        let fill = |values: &mut [Found<'r>]| match request.projected {
            // Each value is where the projection put it: a copy of a reference, no search.
            Some((projection, body_values)) => {
                let wires = projection.wiring(index).unwrap_or_default();
                debug_assert_eq!(wires.len(), values.len(), "projected for other mappings");
                for (value, wire) in values.iter_mut().zip(wires) {
                    *value = wire.resolve(body_values);
                }
            }
            None => self.lookups.resolve(scope.body, values),
        };
        with_values(self.lookups.len(), fill, |values| {
            let scope = scope.with_values(values);
            if self.conditions.iter().all(|c| c.holds(&scope)) {
                self.emit_all(index, &scope, request, outcome);
            }
        });
    }

    fn emit_all<'m>(
        &'m self,
        index: usize,
        scope: &Scope<'_>,
        request: &Request<'_>,
        outcome: &mut MapOutcome<'m>,
    ) {
        let Some(for_each) = &self.for_each else {
            outcome.matched.push(index);
            self.emit(scope, None, request, outcome);
            return;
        };
        match for_each.evaluate(scope) {
            Val::Json(Value::Array(items)) => {
                let mut matched = self.item_conditions.is_empty();
                for (index, item) in items.iter().enumerate() {
                    let scope = scope.with_item(item);
                    if self.item_conditions.iter().all(|c| c.holds(&scope)) {
                        matched = true;
                        self.emit(&scope, Some(index), request, outcome);
                    }
                }
                if matched {
                    outcome.matched.push(index);
                }
            }
            other => {
                outcome.matched.push(index);
                outcome.errors.push(MappingError {
                    mapping: self.name.clone(),
                    item: None,
                    message: format!(
                        "forEach ({for_each}) is {}, not an array",
                        article(other.type_name())
                    ),
                });
            }
        }
    }

    fn emit<'m>(
        &'m self,
        scope: &Scope<'_>,
        item: Option<usize>,
        request: &Request<'_>,
        outcome: &mut MapOutcome<'m>,
    ) {
        match self.build(scope, request) {
            Ok(event) => outcome.events.push(event),
            Err(message) => outcome.errors.push(MappingError {
                mapping: self.name.clone(),
                item,
                message,
            }),
        }
    }

    fn build<'m>(
        &'m self,
        scope: &Scope<'_>,
        request: &Request<'_>,
    ) -> Result<MappedEvent<'m>, String> {
        let e = &self.event;
        let name = match &e.constant_name {
            Some(name) => Name::Mapping(name),
            None => e
                .name
                .evaluate(scope)
                .nonempty_text()
                .map(|text| Name::Owned(Arc::from(&*text)))
                .ok_or_else(|| format!("event.name ({}) resolved empty", e.name))?,
        };

        let identity = |field, template: &Option<Template>| {
            let value = template.as_ref()?.evaluate(scope);
            self.privacy.identity(field, value)
        };
        let visitor_id = identity(Identity::VisitorId, &e.visitor_id);
        let external_id = identity(Identity::ExternalId, &e.external_id);
        let email = identity(Identity::Email, &e.email);
        if visitor_id.is_none() && external_id.is_none() && email.is_none() {
            return Err(self.no_identity_message());
        }

        let id =
            e.id.as_ref()
                .and_then(|t| t.evaluate(scope).into_nonempty_string());
        let (id, id_generated) = match id {
            Some(id) => (id, false),
            None => (uuid::Uuid::new_v4().to_string(), true),
        };

        let timestamp = match &e.timestamp {
            None => request.received_at,
            Some(template) => match template.evaluate(scope) {
                Val::Missing => request.received_at,
                value => to_timestamp(&value)
                    .map_err(|err| format!("event.timestamp ({template}) {err}"))?,
            },
        };

        let from = match e.properties_from.as_ref().map(|t| (t, t.evaluate(scope))) {
            None | Some((_, Val::Missing)) => FromMembers::Nothing,
            Some((_, Val::Json(Value::Object(object)))) => FromMembers::Map(object.iter()),
            Some((_, Val::Members(members))) => FromMembers::Members(members.iter()),
            Some((template, other)) => {
                return Err(format!(
                    "event.properties.from ({template}) is {}, not an object",
                    article(other.type_name())
                ));
            }
        };
        let properties = write_properties(from, &e.fields, scope);

        let mut event = MappedEvent {
            mapping: Name::Mapping(&self.name),
            name,
            id,
            id_generated,
            visitor_id,
            external_id,
            email,
            timestamp,
            received_at: request.received_at,
            properties,
        };
        self.privacy.apply(&mut event);
        Ok(event)
    }

    /// Names the identity fields that resolved empty and their templates — not their values.
    fn no_identity_message(&self) -> String {
        let e = &self.event;
        let configured: Vec<String> = [
            ("visitorId", &e.visitor_id),
            ("email", &e.email),
            ("externalId", &e.external_id),
        ]
        .into_iter()
        .filter_map(|(field, template)| Some(format!("{field} ({})", template.as_ref()?)))
        .collect();
        let verb = if configured.len() == 1 {
            "resolved"
        } else {
            "all resolved"
        };
        format!(
            "event has no identity: {} {verb} empty",
            configured.join(", ")
        )
    }
}

/// The members of `properties.from`, in key order, whether the object is in a tree or was
/// borrowed by the projection.
enum FromMembers<'a> {
    Nothing,
    Map(serde_json::map::Iter<'a>),
    Members(std::slice::Iter<'a, (&'a str, Kept<'a>)>),
}

impl<'a> Iterator for FromMembers<'a> {
    type Item = (&'a str, Found<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            FromMembers::Nothing => None,
            FromMembers::Map(map) => map
                .next()
                .map(|(key, value)| (key.as_str(), Found::Json(value))),
            FromMembers::Members(members) => {
                members.next().map(|(key, value)| (*key, value.found()))
            }
        }
    }
}

/// `from`'s members and the fields, merged in key order; a field replaces a member of the same
/// name unless it is missing. Fields are left out rather than sent as null, so a property that
/// is present always has a value and `privacy.hash` never has to hash an absence.
fn write_properties(
    from: FromMembers<'_>,
    fields: &[(String, Template)],
    scope: &Scope<'_>,
) -> Properties {
    let mut out = PropertiesWriter::new();
    let mut members = from.peekable();
    for (key, template) in fields {
        while let Some((name, value)) = members.next_if(|(name, _)| *name < key.as_str()) {
            out.found(name, value);
        }
        let replaced = members.next_if(|(name, _)| *name == key);
        match template.evaluate(scope) {
            Val::Missing => {
                if let Some((name, value)) = replaced {
                    out.found(name, value);
                }
            }
            Val::Json(value) => out.json(key, value),
            Val::Text(text) => out.text(key, &text),
            Val::Members(members) => out.found(key, Found::Members(members)),
        }
    }
    for (name, value) in members {
        out.found(name, value);
    }
    out.finish()
}
