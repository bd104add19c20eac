//! The NATS sink: each event is published to JetStream as its CloudEvent JSON (structured
//! mode, `application/cloudevents+json`), with `Nats-Msg-Id` set to the event id, and the
//! batch is acknowledged only when every event's PubAck arrived.
//!
//! - `Nats-Msg-Id` makes JetStream drop a second copy of an event within the stream's
//!   duplicate window (2 minutes by default), so a sender's retry after a lost answer, or a
//!   publish that reached the server after we had given up on it, is stored once.
//! - With `stream` set, `Nats-Expected-Stream` makes the server refuse the event if the
//!   subject is captured by another stream, instead of acknowledging it into the wrong one.
//! - The connection is made on first use and kept; async-nats reconnects in the background.
//!   While it is down, publishes wait for the PubAck until the delivery budget is spent, then
//!   the sender gets 503 and retries later.
//! - Failed publishes (no stream yet, timeout, broken connection) are retried with backoff
//!   within the budget, like the HTTP sink.
//!
//! - Authentication: one of a credentials file, an NKey seed, a token, or user and password
//!   ([`NatsAuth`], from the Secret `credentialsSecretRef` names). A refused login shows in
//!   the 503 as "the server refused the credentials" (from the client's connection events),
//!   never with the credentials themselves.
//!
//! The stream is not created here: its retention, replicas and limits are the platform
//! team's decision (`nats stream add`, NACK, or the chart of their broker).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::{Batch, DeliverFuture, Sink, SinkError};
use crate::mapping::{EventSource, MappedEvent};
use crate::route::NatsAuth;

const CONCURRENCY: usize = 16;

#[derive(Clone)]
pub struct NatsSinkConfig {
    pub url: String,
    pub subject: String,
    pub stream: Option<String>,
    /// How to authenticate; `None` for a server without authentication. Never logged.
    pub auth: Option<NatsAuth>,
    /// All attempts of one batch together; below the ingest's sink timeout.
    pub budget: Duration,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl std::fmt::Debug for NatsSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSinkConfig")
            .field("subject", &self.subject)
            .field("stream", &self.stream)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl NatsSinkConfig {
    pub fn new(url: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            subject: subject.into(),
            stream: None,
            auth: None,
            budget: Duration::from_millis(3500),
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

pub struct NatsSink {
    config: NatsSinkConfig,
    /// What error messages call this sink: the subject (the URL may carry a password).
    label: String,
    context: OnceCell<jetstream::Context>,
    /// Why the connection is down, from the client's events (a fixed phrase such as
    /// "authorization violation", never server-supplied credentials): the 503 says it.
    connection_problem: Arc<Mutex<Option<String>>>,
}

impl NatsSink {
    pub fn new(config: NatsSinkConfig) -> Result<Self, SinkError> {
        if config.subject.is_empty() {
            return Err(SinkError::new("nats sink: the subject is empty"));
        }
        let label = format!("nats sink (subject {})", config.subject);
        Ok(Self {
            config,
            label,
            context: OnceCell::new(),
            connection_problem: Arc::default(),
        })
    }

    async fn context(&self) -> Result<&jetstream::Context, SinkError> {
        self.context
            .get_or_try_init(|| async {
                let mut options = async_nats::ConnectOptions::new()
                    .name("hookgate-ingest")
                    // Connect (and reconnect) in the background: the ingest starts and serves
                    // other sources while the broker is away; this one answers 503 meanwhile.
                    .retry_on_initial_connect()
                    .max_reconnects(None)
                    .connection_timeout(Duration::from_secs(2));
                options = match &self.config.auth {
                    None => options,
                    // The parse error could quote the file: say only that it is unusable.
                    Some(NatsAuth::Creds(creds)) => options.credentials(creds).map_err(|_| {
                        SinkError::new(format!(
                            "{}: the credentials are not a valid NATS credentials file",
                            self.label
                        ))
                    })?,
                    Some(NatsAuth::Nkey(seed)) => options.nkey(seed.clone()),
                    Some(NatsAuth::Token(token)) => options.token(token.clone()),
                    Some(NatsAuth::UserPassword { user, password }) => {
                        options.user_and_password(user.clone(), password.clone())
                    }
                };
                let problem = self.connection_problem.clone();
                options = options.event_callback(move |event| {
                    let problem = problem.clone();
                    async move {
                        let now = match event {
                            async_nats::Event::Connected => None,
                            async_nats::Event::ClientError(e) => Some(e.to_string()),
                            async_nats::Event::ServerError(e) => Some(e.to_string()),
                            async_nats::Event::Disconnected => Some("disconnected".to_owned()),
                            _ => return,
                        };
                        *problem.lock().unwrap_or_else(|p| p.into_inner()) = now;
                    }
                });
                let client = options
                    .connect(self.config.url.as_str())
                    .await
                    .map_err(|e| {
                        SinkError::new(format!("{}: cannot connect: {}", self.label, e.kind()))
                    })?;
                let mut context = jetstream::new(client);
                // Per publish; the loop below bounds all attempts together.
                context.set_timeout(self.config.budget);
                Ok(context)
            })
            .await
    }

    fn message(&self, source: &EventSource, event: &MappedEvent) -> PublishMessage {
        let mut payload = Vec::with_capacity(512);
        event.write_json(source, &mut payload);
        let mut message = PublishMessage::build()
            .payload(Bytes::from(payload))
            .message_id(&event.id)
            .header("content-type", "application/cloudevents+json");
        if let Some(stream) = &self.config.stream {
            message = message.expected_stream(stream);
        }
        message
    }

    async fn deliver_one(
        &self,
        context: &jetstream::Context,
        source: &EventSource,
        event: &MappedEvent<'_>,
        deadline: Instant,
    ) -> Result<(), SinkError> {
        let mut backoff = self.config.first_backoff;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = async {
                let ack = context
                    .send_publish(self.config.subject.clone(), self.message(source, event))
                    .await
                    .map_err(|e| e.kind().to_string())?;
                ack.await.map_err(|e| e.kind().to_string())
            };
            let reason = match tokio::time::timeout(remaining, attempt).await {
                // A duplicate is an acknowledgement: the event is stored, once.
                Ok(Ok(_ack)) => return Ok(()),
                Ok(Err(reason)) => reason,
                Err(_) => "no PubAck in time".to_owned(),
            };
            if Instant::now() + backoff >= deadline {
                let connection = self
                    .connection_problem
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|p| format!(" (connection: {p})"))
                    .unwrap_or_default();
                return Err(SinkError::new(format!(
                    "{}: event {} not acknowledged after {attempts} attempt(s): {reason}{connection}",
                    self.label, event.id
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }
}

impl Sink for NatsSink {
    fn kind(&self) -> &'static str {
        "nats"
    }

    fn deliver<'a>(&'a self, batch: Batch<'a>) -> DeliverFuture<'a> {
        Box::pin(async move {
            let deadline = Instant::now() + self.config.budget;
            let context = self.context().await?;
            // Futures built first, then polled a few at a time: a closure inside the stream
            // would make the boxed future's lifetimes higher-ranked, which rustc cannot prove
            // `Send` for.
            let pending: Vec<_> = batch
                .events
                .iter()
                .map(|event| self.deliver_one(context, batch.source, event, deadline))
                .collect();
            let mut results = futures::stream::iter(pending).buffer_unordered(CONCURRENCY);
            while let Some(result) = results.next().await {
                result?;
            }
            Ok(())
        })
    }
}
