//! The stdout sink: one CloudEvent JSON object per line, flushed before acknowledging.
//!
//! All writes go through one writer thread that owns the output. Each batch arrives as one
//! pre-serialised buffer, so lines of concurrent requests never interleave, and the thread
//! writes every buffer that is waiting before a single flush (group commit): under load one
//! `flush` acknowledges many requests. A dedicated thread (rather than `tokio::io::stdout`)
//! keeps blocking writes — a slow pipe, a full terminal — off the runtime's workers; the
//! ingest's delivery timeout still answers the sender 503 while the thread is stuck.

use std::io::{self, Write};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Batch, DeliverFuture, Sink, SinkError};

type Job = (Vec<u8>, oneshot::Sender<Result<(), String>>);

/// JSON lines to any [`Write`]: standard output in production, a file or an in-memory buffer in
/// tests.
pub struct WriterSink {
    jobs: mpsc::UnboundedSender<Job>,
    kind: &'static str,
}

impl WriterSink {
    /// Events to the process's standard output.
    pub fn stdout() -> Arc<dyn Sink> {
        Arc::new(Self::new("stdout", Box::new(io::stdout())))
    }

    /// Events to `writer`; `kind` names the sink in errors. The writer moves to a thread of its
    /// own, which ends when the sink is dropped.
    pub fn new(kind: &'static str, writer: Box<dyn Write + Send>) -> Self {
        let (jobs, receiver) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("hookgate-sink-writer".into())
            .spawn(move || write_loop(writer, receiver))
            .expect("spawning the sink writer thread");
        Self { jobs, kind }
    }
}

fn write_loop(mut writer: Box<dyn Write + Send>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut pending: Vec<Job> = Vec::new();
    while let Some(job) = jobs.blocking_recv() {
        pending.push(job);
        while let Ok(job) = jobs.try_recv() {
            pending.push(job);
        }
        // Write each buffer whole; after the first failure the rest are not written, so no
        // later batch lands after a half-written one and claims success.
        let mut result: io::Result<()> = Ok(());
        let mut written = 0;
        for (buffer, _) in &pending {
            result = writer.write_all(buffer);
            if result.is_err() {
                break;
            }
            written += 1;
        }
        if result.is_ok() {
            result = writer.flush();
        }
        for (i, (_, ack)) in pending.drain(..).enumerate() {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(e) if i < written => Err(format!("flushing the output failed: {e}")),
                Err(e) => Err(format!("writing the output failed: {e}")),
            };
            // The requester may have timed out and gone; nothing to tell then.
            let _ = ack.send(answer);
        }
    }
}

impl Sink for WriterSink {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn deliver<'a>(&'a self, batch: Batch<'a>) -> DeliverFuture<'a> {
        let mut buffer = Vec::with_capacity(batch.events.len() * 512);
        for event in batch.events {
            event.write_json_line(batch.source, &mut buffer);
        }
        let (ack, acked) = oneshot::channel();
        let sent = self.jobs.send((buffer, ack));
        Box::pin(async move {
            if sent.is_err() {
                return Err(SinkError::new("the output writer has stopped"));
            }
            match acked.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(SinkError::new(message)),
                Err(_) => Err(SinkError::new("the output writer has stopped")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use jiff::Timestamp;
    use serde_json::Map;

    use super::*;
    use crate::mapping::{EventSource, MappedEvent};

    /// A writer that appends to shared memory.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            // Write in small pieces so interleaving would show if batches were not atomic.
            let n = buf.len().min(7);
            self.0.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "pipe closed"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn event(id: usize) -> MappedEvent {
        MappedEvent {
            mapping: "m".into(),
            name: "E".into(),
            id: format!("evt_{id}"),
            id_generated: false,
            visitor_id: Some("v".into()),
            external_id: None,
            email: None,
            timestamp: Timestamp::UNIX_EPOCH,
            received_at: Timestamp::UNIX_EPOCH,
            properties: Map::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batches_produce_whole_lines() {
        let out = Shared::default();
        let sink = Arc::new(WriterSink::new("memory", Box::new(out.clone())));
        let source = Arc::new(EventSource::new("ns", "src"));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (sink, source) = (sink.clone(), source.clone());
            tasks.push(tokio::spawn(async move {
                let events: Vec<_> = (0..5).map(|i| event(t * 100 + i)).collect();
                sink.deliver(Batch {
                    source: &source,
                    events: &events,
                })
                .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 40);
        for line in lines {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["source"], "/namespaces/ns/webhooksources/src");
        }
    }

    #[tokio::test]
    async fn write_failure_is_reported_not_acknowledged() {
        let sink = WriterSink::new("broken", Box::new(Broken));
        let source = EventSource::new("ns", "src");
        let events = [event(1)];
        let err = sink
            .deliver(Batch {
                source: &source,
                events: &events,
            })
            .await
            .unwrap_err();
        assert!(err.message.contains("pipe closed"), "{err}");
    }
}
