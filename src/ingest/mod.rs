//! The data plane: webhook requests in, acknowledged events out (DESIGN §4–5).
//!
//! - [`server`]: where a request is answered (`POST /h/<token>`), the acknowledgement contract;
//!   the accept loop, which gives each connection to a thread of its own that keeps it.
//! - [`table`]: the swappable route table, keyed by token hash; per-source state.
//! - [`limits`]: rate limiting and the dedup window.
//! - [`verify`]: the signature verification hook (schemes: issue #6).
//! - [`status`]: per-source counters, recent events and errors, learned shape.
//! - [`metrics`]: Prometheus metrics; [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/status`.
//! - [`token`]: URL tokens (generation, hashing, redaction).
//! - [`cluster`]: `hookgate ingest`: routes from the operator's route Secrets;
//!   [`status_writer`]: status back onto the resources, exact across replicas.
//!
//! Plugging in a route provider and a status writer:
//!
//! ```no_run
//! # async fn demo(routes: Vec<hookgate::route::Route>) -> std::io::Result<()> {
//! use std::sync::Arc;
//! use hookgate::ingest::{Ingest, IngestConfig, Metrics, RouteTable, Sinks};
//! use hookgate::sink::WriterSink;
//!
//! let table = Arc::new(RouteTable::new(Sinks::single(WriterSink::stdout()), Arc::new(Metrics::new())));
//! table.replace(routes); // again on every change: in force for the next request
//! let ingest = Arc::new(Ingest::new(table.clone(), IngestConfig::default()));
//! let (addr, _server) = hookgate::ingest::bind_ingest("127.0.0.1:8080".parse().unwrap(), ingest,
//!     std::future::pending()).await?;
//! // A status writer: `table.status()` gives each source's snapshot; skip unchanged `version`s.
//! # Ok(()) }
//! ```

pub mod abuse;
pub mod admin;
pub mod bare;
pub mod body;
pub mod cluster;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod shard;
pub mod status;
pub mod status_writer;
pub mod table;
/// URL tokens, shared with the operator.
pub use crate::token;
pub mod verify;

pub use admin::bind_admin;
pub use metrics::{Metrics, Outcome};
pub use server::{Ingest, IngestConfig, bind_ingest};
pub use status::{MappingSnapshot, SourceSnapshot, SourceStatus};
pub use table::{InstallReport, LiveRoute, RouteTable, Sinks, SourceNotes};
pub use token::Token;
