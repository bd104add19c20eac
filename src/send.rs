//! `hookgate send URL FILE`: posts a payload to a webhook URL the way a provider would —
//! signed with the provider's scheme and carrying its usual delivery headers — and prints the
//! answer. For "test your integration" by hand: try a source end to end, signature included,
//! before pointing the real sender at it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::api::webhook_source::{HmacAlgorithm, SignatureEncoding, SignatureScheme};
use crate::ingest::verify::{SignRequest, sign};

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// The webhook URL (from `hookgate url`, or printed by `hookgate standalone`).
    pub url: String,
    /// The payload file, sent byte for byte; `-` reads standard input.
    pub file: PathBuf,
    /// Sign as this sender does.
    #[arg(long, value_enum, requires = "secret")]
    pub sign: Option<Scheme>,
    /// The signing secret (for standardWebhooks `whsec_<base64>`). Prefer the environment
    /// variable: arguments are visible to other users of the machine.
    #[arg(long, env = "HOOKGATE_SIGNING_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// `--sign hmac`: the header that carries the signature.
    #[arg(long, required_if_eq("sign", "hmac"))]
    pub header: Option<String>,
    /// `--sign hmac`: the digest.
    #[arg(long, value_enum, default_value = "sha256")]
    pub algorithm: Algorithm,
    /// `--sign hmac`: how the MAC is written.
    #[arg(long, value_enum, default_value = "hex")]
    pub encoding: Encoding,
    /// `--sign hmac`: text before the MAC, e.g. `sha256=`.
    #[arg(long)]
    pub prefix: Option<String>,
    /// The event/topic header where the sender has one (`X-GitHub-Event`, `X-Shopify-Topic`).
    #[arg(long)]
    pub event: Option<String>,
    /// Delivery id (`webhook-id`, `X-GitHub-Delivery`, `X-Shopify-Webhook-Id`); default: a new
    /// UUID, so each send is a new delivery. Repeat one to see deduplication.
    #[arg(long)]
    pub id: Option<String>,
    /// Content type; default: JSON when the payload starts with `{` or `[`, else form.
    #[arg(long)]
    pub content_type: Option<String>,
    /// Extra header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "add-header")]
    pub add_header: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Github,
    Stripe,
    #[value(name = "standardWebhooks", alias = "standard-webhooks")]
    StandardWebhooks,
    Shopify,
    Hmac,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Algorithm {
    Sha256,
    Sha1,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Encoding {
    Hex,
    Base64,
}

impl From<Scheme> for SignatureScheme {
    fn from(s: Scheme) -> Self {
        match s {
            Scheme::Github => SignatureScheme::Github,
            Scheme::Stripe => SignatureScheme::Stripe,
            Scheme::StandardWebhooks => SignatureScheme::StandardWebhooks,
            Scheme::Shopify => SignatureScheme::Shopify,
            Scheme::Hmac => SignatureScheme::Hmac,
        }
    }
}

/// The request's headers, in order: content type, the provider's delivery headers, the
/// signature, then `--add-header`s.
pub fn headers(
    args: &SendArgs,
    body: &[u8],
    now_unix: i64,
) -> anyhow::Result<Vec<(String, String)>> {
    let content_type = args.content_type.clone().unwrap_or_else(|| {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') | Some(b'[') => "application/json".into(),
            _ => "application/x-www-form-urlencoded".into(),
        }
    });
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut out = vec![("Content-Type".to_owned(), content_type)];
    match args.sign {
        Some(Scheme::Github) => {
            out.push(("User-Agent".into(), "GitHub-Hookshot/hookgate-send".into()));
            out.push(("X-GitHub-Delivery".into(), id.clone()));
            out.push((
                "X-GitHub-Event".into(),
                args.event.clone().unwrap_or_else(|| "ping".into()),
            ));
        }
        Some(Scheme::Shopify) => {
            out.push(("X-Shopify-Webhook-Id".into(), id.clone()));
            if let Some(topic) = &args.event {
                out.push(("X-Shopify-Topic".into(), topic.clone()));
            }
        }
        _ => {}
    }
    if let Some(scheme) = args.sign {
        let secret = args
            .secret
            .as_deref()
            .context("--sign needs --secret (or HOOKGATE_SIGNING_SECRET)")?;
        let signed = sign(&SignRequest {
            scheme: scheme.into(),
            secret,
            body,
            now_unix,
            message_id: &id,
            header: args.header.as_deref(),
            algorithm: Some(match args.algorithm {
                Algorithm::Sha256 => HmacAlgorithm::Sha256,
                Algorithm::Sha1 => HmacAlgorithm::Sha1,
            }),
            encoding: Some(match args.encoding {
                Encoding::Hex => SignatureEncoding::Hex,
                Encoding::Base64 => SignatureEncoding::Base64,
            }),
            prefix: args.prefix.as_deref(),
        })?;
        out.extend(signed);
    }
    for h in &args.add_header {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("--add-header {h:?}: expected `Name: value`"))?;
        out.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(out)
}

/// Sends and prints `HTTP <status>` and the body; an answer other than 2xx is an error (exit
/// status 1), so scripts can use it.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let body = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading stdin")?;
        buf
    } else {
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?
    };
    let now = jiff::Timestamp::now().as_second();
    let mut request = Request::builder().method("POST").uri(&args.url);
    for (name, value) in headers(&args, &body, now)? {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .context("building the request (check the URL and headers)")?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("loading TLS root certificates")?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .context("no answer within 30s")?
        .context("sending the request")?;
    let status = response.status();
    let answer = response
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    println!("HTTP {}", status.as_u16());
    println!("{}", String::from_utf8_lossy(&answer));
    anyhow::ensure!(status.is_success(), "the endpoint answered {status}");
    Ok(())
}
