//! hookgate: a Kubernetes operator that turns inbound webhooks into clean,
//! identity-bearing events.
//!
//! - [`api`]: the custom resources (`WebhookSource`, `Mapping`).
//! - [`cli`]: the subcommands of the single `hookgate` binary.

pub mod api;
pub mod cli;
