//! The `hookgate` command line: one binary, one subcommand per role.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "hookgate",
    version,
    about = "Turns inbound webhooks into clean, identity-bearing events"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crds {
        /// Write `<crd name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Run the operator: reconcile WebhookSources and Mappings, publish routes, deploy the ingest.
    Operator(crate::operator::OperatorArgs),
    /// Run the ingest in a cluster: serve the operator's routes, write status to the resources.
    Ingest(crate::ingest::cluster::IngestArgs),
    /// A local control plane with the CRDs, the operator and the ingest running; Ctrl-C stops it.
    Dev(crate::dev::DevArgs),
    /// Print a WebhookSource's full webhook URL (it contains the secret token).
    Url(crate::verbs::Target),
    /// Regenerate a WebhookSource's URL and wait until the new one is in force.
    Rotate {
        #[command(flatten)]
        target: crate::verbs::Target,
        /// How long to wait for the operator.
        #[arg(long, default_value = "60s", value_parser = crate::api::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Show a WebhookSource's recent events and errors.
    Events {
        #[command(flatten)]
        target: crate::verbs::Target,
        /// Keep watching and print again when they change.
        #[arg(short, long)]
        follow: bool,
    },
    /// Serve webhooks locally from a directory of WebhookSource and Mapping manifests; events
    /// are printed to stdout. No cluster needed.
    Standalone(crate::standalone::StandaloneArgs),
    /// POST a payload file to a webhook URL the way a provider would, optionally signed
    /// (github, stripe, standardWebhooks, shopify, hmac), and print the answer.
    Send(crate::send::SendArgs),
    /// A paced load client: fixed request rate, latency percentiles from the scheduled send time.
    #[command(hide = true)]
    BenchLoad(crate::ingest::bare::LoadArgs),
    /// Slow and abusive clients against an ingest while good senders post (scripts/abuse).
    #[command(hide = true)]
    BenchAbuse(crate::ingest::abuse::AbuseArgs),
    /// The no-loss ledger: recording senders, a recording receiver, reconciliation
    /// (scripts/ledger).
    #[command(hide = true)]
    BenchLedger(crate::ingest::ledger::LedgerArgs),
    /// Propose a Mapping (YAML, ready to apply) from a sample payload or a source's learned
    /// shape.
    Suggest(crate::suggest::SuggestArgs),
    /// A bare hyper server that reads the body and answers 200: the baseline of load runs.
    #[command(hide = true)]
    BenchServer {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hookgate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Crds { out_dir } => crds(out_dir),
        Command::Dev(args) => {
            init_tracing();
            crate::dev::run(args)
        }
        Command::Url(target) => {
            println!("{}", tokio_runtime()?.block_on(crate::verbs::url(&target))?);
            Ok(())
        }
        Command::Rotate { target, timeout } => {
            let url = tokio_runtime()?.block_on(crate::verbs::rotate(&target, timeout))?;
            eprintln!(
                "rotated {}: the previous URL no longer works (unless a grace period is set)",
                target.name
            );
            println!("{url}");
            Ok(())
        }
        Command::Events { target, follow } => {
            tokio_runtime()?.block_on(crate::verbs::events(&target, follow))
        }
        Command::Ingest(args) => {
            init_tracing();
            tokio_runtime()?.block_on(crate::ingest::cluster::run(args))
        }
        Command::Operator(args) => {
            init_tracing();
            tokio_runtime()?.block_on(crate::operator::run(args))
        }
        Command::Send(args) => tokio_runtime()?.block_on(crate::send::run(args)),
        Command::Standalone(args) => {
            init_tracing();
            crate::standalone::run(args)
        }
        Command::Suggest(args) => crate::suggest::run(&args),
        Command::BenchLoad(args) => crate::ingest::bare::load(args),
        Command::BenchLedger(args) => crate::ingest::ledger::run(args),
        Command::BenchAbuse(args) => crate::ingest::abuse::run(args),
        Command::BenchServer { listen } => {
            tokio_runtime()?.block_on(crate::ingest::bare::run(listen))
        }
    }
}

fn crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let files = crate::api::crds_yaml().context("rendering the CRDs")?;
    match out_dir {
        None => {
            let docs: Vec<&str> = files.iter().map(|(_, yaml)| yaml.as_str()).collect();
            print!("{}", docs.join("---\n"));
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (file, yaml) in files {
                let path = dir.join(file);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Logs to stderr; `RUST_LOG` filters (default `info`), `HOOKGATE_LOG_FORMAT=json` for JSON lines.
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("HOOKGATE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
