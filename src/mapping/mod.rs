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
//! - [`template`]: the template language (`{{data.object.customer | lower}}`).
//! - [`body`]: JSON and form bodies into one `serde_json::Value`.
//! - [`compile`]: a `MappingSpec` into a [`CompiledMapping`], with positioned errors.
//! - [`engine`]: conditions, forEach, identity, privacy: a request into a [`MapOutcome`].
//! - [`event`]: the canonical CloudEvent.
//! - [`shape`]: the learned payload shape and the fields no mapping reads.

pub mod body;
pub mod compile;
pub mod engine;
pub mod event;
mod privacy;
pub mod request;
pub mod shape;
pub mod template;
mod time;

#[cfg(test)]
mod tests;

pub use body::{BodyError, BodyFormat, detect_format, parse_body};
pub use compile::{CompileError, CompileErrors, CompiledMapping};
pub use engine::{MapOutcome, MappingError, Verdict, map_request};
pub use event::{CloudEvent, EventData, EventSource, MappedEvent};
pub use request::{Headers, Query, Request};
pub use shape::{JsonTypes, ObservedField, ShapeObserver};
pub use template::{Path, Template, TemplateError};
