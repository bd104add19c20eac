//! The mapping engine: pure (no I/O, no clock, no Kubernetes), compiled once per Mapping and
//! evaluated per request.
//!
//! How the ingest uses it:
//!
//! ```
//! use hookgate::api::mapping::MappingSpec;
//! use hookgate::mapping::{self, CompiledMapping, EventSource, Request, Verdict};
//!
//! let spec: MappingSpec = serde_yaml::from_str(r#"
//! sourceRef: {name: stripe}
//! when: [{path: "{{type}}", equals: invoice.paid}]
//! event:
//!   name: Purchase
//!   id: "{{id}}"
//!   externalId: "{{data.object.customer}}"
//! "#).unwrap();
//! // When the Mapping is accepted (errors go on its Ready condition):
//! let compiled = vec![CompiledMapping::compile("stripe-invoice-paid", &spec).unwrap()];
//! let source = EventSource::new("shop", "stripe");
//!
//! // Per request:
//! let body = mapping::parse_body(Some("application/json"),
//!     br#"{"id": "evt_1", "type": "invoice.paid", "data": {"object": {"customer": "cus_9"}}}"#).unwrap();
//! let headers = [("Stripe-Signature", "t=1,v1=abc")];
//! let request = Request::new(&body, jiff::Timestamp::now()).with_headers(&headers);
//! let outcome = mapping::map_request(&compiled, &request);
//! assert_eq!(outcome.verdict(), Verdict::Accepted);
//! let mut line = Vec::new();
//! outcome.events[0].write_json_line(&source, &mut line);
//! ```
//!
//! Semantics worth knowing (each has a test in this module):
//!
//! - JSON `null` is treated as missing everywhere: `default` replaces it, `exists: false`
//!   holds, properties leave it out.
//! - A concatenation (`order-{{id}}`) with a missing variable is missing as a whole, so a
//!   half-filled identity can never pass the identity rule; `| default: ""` opts in.
//! - Conditions compare text: numbers as JSON writes them (`42`, `1.5`, `1e+20`), booleans as
//!   `true`/`false`, objects as compact JSON. Missing values never equal, start with or
//!   belong to anything.
//! - `when` conditions reading `$item` are checked per forEach element and filter elements; if
//!   none passes, the mapping did not match. A forEach path that is not an array is a mapping
//!   error (guard it with `exists` to ignore such requests instead).
//! - Identity fields, the event id and the name are text; empty or whitespace-only counts as
//!   missing. Properties keep JSON types; missing fields are left out.
//! - Timestamps: unix seconds below 1e11, then milliseconds, microseconds and nanoseconds by
//!   magnitude (numbers or numeric strings, fractions kept), or RFC 3339 with an offset;
//!   missing means the receive time; anything else is a mapping error.
//! - Keys containing `.`, spaces or quotes are written `{{metadata["order.ref"]}}`. Text cannot
//!   contain a literal `{{`.
//! - Error messages name fields, templates and JSON types, never payload values.
//!
//! - [`template`]: the template language (`{{data.object.customer | lower}}`).
//! - [`body`]: JSON and form bodies into one `serde_json::Value`.
//! - [`compile`]: a `MappingSpec` into a [`CompiledMapping`], with positioned errors.
//! - [`engine`]: conditions, forEach, identity, privacy: a request into a [`MapOutcome`].
//! - `lookup`: the body paths a mapping reads, numbered, and resolved together in one walk of a
//!   parsed tree (a projected body has them by slot already).
//! - [`event`]: the canonical CloudEvent.
//! - [`shape`]: the learned payload shape and the fields no mapping reads.
//! - [`projection`]: parsing only the fields the mappings read, into values by slot.

pub mod body;
pub mod compile;
pub mod engine;
pub mod event;
mod lookup;
mod privacy;
pub mod projection;
pub mod request;
pub mod shape;
pub mod template;
mod time;

#[cfg(test)]
mod tests;

pub use body::{BodyError, BodyFormat, detect_format, parse_body};
pub use compile::{CompileError, CompileErrors, CompiledMapping};
pub use engine::{Events, MapOutcome, MappingError, Verdict, map_request};
pub use event::{CloudEvent, EventData, EventSource, MappedEvent, Name, Properties};
pub use projection::{Kept, Members, ProjectedBody, Projection, Slots};
pub use request::{Headers, Query, Request};
pub use shape::{JsonTypes, ObservedField, ShapeObserver};
pub use template::{Path, Template, TemplateError};
