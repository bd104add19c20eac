//! The stdout sink: one CloudEvent JSON object per line, flushed before acknowledging.
//!
//! Writes are combined: a delivering request that finds the output free writes its
//! pre-serialised buffer at once; one that finds it taken queues the buffer, and whichever
//! request holds the output writes every buffer waiting, then flushes once (group commit), so
//! under load one `flush` acknowledges many requests and lines of concurrent requests never
//! interleave. The writing happens on the runtime's worker, inline: a hand-off to a writer
//! thread cost two thread wake-ups per request (a fifth of the ingest's CPU), while a write to
//! a file or a log pipe takes microseconds. If the output blocks (a full pipe nobody reads), the
//! worker holding it waits; requests on other workers queue and get the ingest's delivery
//! timeout, a 503 the sender retries.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, LockResult, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

use super::{Batch, DeliverFuture, Sink, SinkError};

type Ack = oneshot::Sender<Result<(), String>>;

/// JSON lines to any [`Write`]: standard output in production, a file or an in-memory buffer in
/// tests.
pub struct WriterSink {
    shared: Arc<Shared>,
    kind: &'static str,
}

struct Shared {
    /// Buffers waiting for the writer, with whom to tell the outcome.
    queue: Mutex<Vec<(Vec<u8>, Ack)>>,
    /// Whether `queue` holds anything; changed only under its lock. A writer that found the
    /// output free reads this instead of locking the queue: the lock is a write to a cache
    /// line both workers share, and with the output's lock it was four locked instructions
    /// per request on the usual path.
    queued: AtomicBool,
    /// Held by whoever writes; the queue lock is never held while writing.
    output: Mutex<Box<dyn Write + Send>>,
}

impl WriterSink {
    /// Events to the process's standard output.
    pub fn stdout() -> Arc<dyn Sink> {
        Arc::new(Self::new("stdout", Box::new(io::stdout())))
    }

    /// Events to `writer`; `kind` names the sink in errors.
    pub fn new(kind: &'static str, writer: Box<dyn Write + Send>) -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::new()),
                queued: AtomicBool::new(false),
                output: Mutex::new(writer),
            }),
            kind,
        }
    }
}

fn unpoisoned<'a, T>(result: LockResult<MutexGuard<'a, T>>) -> MutexGuard<'a, T> {
    result.unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Writes what is queued, unless someone else is writing: then they will, because a
    /// writer looks at the queue again after letting the output go.
    fn drain(&self) {
        loop {
            let Ok(mut output) = self.output.try_lock() else {
                return;
            };
            loop {
                let pending = {
                    let mut queue = unpoisoned(self.queue.lock());
                    self.queued.store(false, Ordering::Relaxed);
                    std::mem::take(&mut *queue)
                };
                if pending.is_empty() {
                    break;
                }
                write_all(&mut **output, pending);
            }
            drop(output);
            // A buffer queued after the last look, by a request that found the output taken.
            if unpoisoned(self.queue.lock()).is_empty() {
                return;
            }
        }
    }

    /// Queues `buffer` for whoever holds the output, or writes it if nobody does.
    fn push(&self, buffer: Vec<u8>, ack: Ack) {
        {
            let mut queue = unpoisoned(self.queue.lock());
            queue.push((buffer, ack));
            self.queued.store(true, Ordering::Relaxed);
        }
        // Pairs with the fence in `written`: either this `try_lock` finds the output free, or
        // the writer holding it sees `queued` after letting it go, and writes the buffer.
        fence(Ordering::SeqCst);
        self.drain();
    }

    /// Called after letting the output go: writes what was queued while it was held.
    fn written(&self) {
        fence(Ordering::SeqCst);
        if self.queued.load(Ordering::Relaxed) {
            self.drain();
        }
    }
}

fn write_all(writer: &mut dyn Write, mut pending: Vec<(Vec<u8>, Ack)>) {
    // Write each buffer whole; after the first failure the rest are not written, so no later
    // batch lands after a half-written one and claims success.
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

impl Sink for WriterSink {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn deliver<'a>(&'a self, batch: Batch<'a>) -> DeliverFuture<'a> {
        let mut buffer = Vec::with_capacity(batch.events.len() * 512);
        for event in batch.events {
            event.write_json_line(batch.source, &mut buffer);
        }
        // The usual case, nobody else writing: write and answer here, without queueing and a
        // channel to hear back. Whatever others queue meanwhile is written on the way out.
        if let Ok(mut output) = self.shared.output.try_lock() {
            let result = write_flushed(&mut **output, &buffer);
            drop(output);
            self.shared.written();
            return Box::pin(std::future::ready(result.map_err(SinkError::new)));
        }
        let (ack, acked) = oneshot::channel();
        self.shared.push(buffer, ack);
        Box::pin(async move {
            match acked.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(SinkError::new(message)),
                Err(_) => Err(SinkError::new("the output writer has stopped")),
            }
        })
    }
}

fn write_flushed(writer: &mut dyn Write, buffer: &[u8]) -> Result<(), String> {
    writer
        .write_all(buffer)
        .map_err(|e| format!("writing the output failed: {e}"))?;
    writer
        .flush()
        .map_err(|e| format!("flushing the output failed: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use jiff::Timestamp;

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
            properties: Default::default(),
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

    /// A writer whose first write waits until the test lets it go.
    struct Gate {
        entered: std::sync::mpsc::Sender<()>,
        release: Option<std::sync::mpsc::Receiver<()>>,
        out: Shared,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(release) = self.release.take() {
                let _ = self.entered.send(());
                let _ = release.recv();
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_queued_behind_a_blocked_write_is_written_by_the_writer() {
        let out = Shared::default();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let gate = Gate {
            entered: entered_tx,
            release: Some(release_rx),
            out: out.clone(),
        };
        let sink = Arc::new(WriterSink::new("gated", Box::new(gate)));
        let source = Arc::new(EventSource::new("ns", "src"));
        let first = {
            let (sink, source) = (sink.clone(), source.clone());
            std::thread::spawn(move || {
                let events = [event(1)];
                let delivery = sink.deliver(Batch {
                    source: &source,
                    events: &events,
                });
                block_on_new_runtime(delivery)
            })
        };
        entered.recv().unwrap();
        // The output is taken: this delivery only queues, and is not acknowledged yet.
        let events = [event(2)];
        let mut second = sink.deliver(Batch {
            source: &source,
            events: &events,
        });
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "acknowledged before it was written"
        );
        release.send(()).unwrap();
        second.await.unwrap();
        first.join().unwrap().unwrap();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
            .collect();
        assert_eq!(ids, ["\"evt_1\"", "\"evt_2\""]);
    }

    fn block_on_new_runtime<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
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
