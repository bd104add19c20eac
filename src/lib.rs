//! hookgate: a Kubernetes operator that turns inbound webhooks into clean,
//! identity-bearing events.
//!
//! - [`api`]: the custom resources (`WebhookSource`, `Mapping`).
//! - [`cli`]: the subcommands of the single `hookgate` binary.
//! - [`ingest`]: the data plane: webhook requests answered, events delivered, status kept.
//! - [`mapping`]: the pure mapping engine (templates, conditions, events, payload shape).
//! - [`operator`]: reconciles sources and mappings, publishes routes, deploys the ingest.
//! - [`route`]: what the operator publishes and the ingest serves, one route per source.
//! - [`verbs`]: `url`, `rotate`, `events` for people at a terminal (also a kubectl plugin).
//! - [`sink`]: where events go (stdout JSON lines; HTTP and NATS later).
//! - [`standalone`]: `hookgate standalone DIR`, the ingest without a cluster.
//! - [`suggest`]: `hookgate suggest`, a first Mapping guessed from a payload or a learned shape.

pub mod api;
pub mod cli;
pub mod dev;
pub mod ingest;
pub mod mapping;
pub mod operator;
pub mod route;
pub mod send;
pub mod sink;
pub mod standalone;
pub mod suggest;
pub mod token;
pub mod verbs;
