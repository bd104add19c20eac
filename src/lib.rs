//! hookgate: a Kubernetes operator that turns inbound webhooks into clean,
//! identity-bearing events.
//!
//! - [`api`]: the custom resources (`WebhookSource`, `Mapping`).
//! - [`cli`]: the subcommands of the single `hookgate` binary.
//! - [`mapping`]: the pure mapping engine (templates, conditions, events, payload shape).
//! - [`route`]: what the operator publishes and the ingest serves, one route per source.

pub mod api;
pub mod cli;
pub mod mapping;
pub mod operator;
pub mod route;
