//! The stdout sink: one CloudEvent JSON object per line, flushed before acknowledging.
//!
//! Writes are combined twice over, so that one `write` acknowledges many requests:
//!
//! - **Within a worker's turn.** The first request a runtime worker delivers opens a *tick*
//!   with its lines and yields to the back of the worker's run queue; the requests already
//!   ready on the worker run meanwhile, add their lines to the open tick and wait. The first
//!   then writes the tick's lines at once and tells the others, before the worker polls for
//!   more I/O. Under load a worker has many connections ready per turn, so a `write` (about
//!   1.6 µs of kernel time into a file, on the load-run VM) serves all of them; alone, a
//!   request costs one yield.
//! - **Across workers (group commit).** A tick whose output is free writes at once; one that
//!   finds it taken queues its lines, and whichever tick holds the output writes every buffer
//!   waiting, then flushes once, so lines of concurrent requests never interleave.
//!
//! The writing happens on the runtime's worker, inline: a hand-off to a writer thread cost two
//! thread wake-ups per request (a fifth of the ingest's CPU), while a write to a file or a log
//! pipe takes microseconds. If the output blocks (a full pipe nobody reads), the worker holding
//! it waits, with the requests of its tick; ticks on other workers queue, their first requests
//! get the ingest's delivery timeout (a 503 the sender retries) and the others wait for their
//! tick's write. A tick whose first request goes away before writing it (its sender
//! disconnected) is written as that request is dropped, so the others are not failed for it.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, LockResult, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::{Batch, DeliverFuture, Sink, SinkError, waiting_for_turn};

/// JSON lines to any [`Write`]: standard output in production, a file or an in-memory buffer in
/// tests.
pub struct WriterSink {
    shared: Arc<Shared>,
    kind: &'static str,
}

struct Shared {
    /// Buffers waiting for the writer, with the tick each finishes.
    queue: Mutex<Vec<(Vec<u8>, Arc<Tick>)>>,
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
    fn push(&self, buffer: Vec<u8>, tick: Arc<Tick>) {
        {
            let mut queue = unpoisoned(self.queue.lock());
            queue.push((buffer, tick));
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

fn write_all(writer: &mut dyn Write, mut pending: Vec<(Vec<u8>, Arc<Tick>)>) {
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
    for (i, (_, tick)) in pending.drain(..).enumerate() {
        let answer = match &result {
            Ok(()) => Ok(()),
            Err(e) if i < written => Err(format!("flushing the output failed: {e}")),
            Err(e) => Err(format!("writing the output failed: {e}")),
        };
        tick.finish(answer);
    }
}

impl Sink for WriterSink {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn deliver<'a>(&'a self, batch: Batch<'a>) -> DeliverFuture<'a> {
        let lines = |lines: &mut Vec<u8>| {
            for event in batch.events {
                event.write_json_line(batch.source, lines);
            }
        };
        match Tick::join(&self.shared, lines) {
            Ok(tick) => Box::pin(Outcome {
                tick,
                waiting: None,
                turn: true,
            }),
            Err(lines_of) => {
                let mut lines = SPARE.take();
                lines.reserve(TICK_BYTES);
                lines_of(&mut lines);
                Box::pin(self.lead(lines))
            }
        }
    }
}

/// What a tick's buffer holds before growing: the lines of a dozen or more requests of
/// typical size, so that requests joining a tick seldom move it.
const TICK_BYTES: usize = 16 * 1024;

/// The largest buffer kept for the next tick: one a burst grew further is let go.
const SPARE_BYTES: usize = 256 * 1024;

thread_local! {
    /// The buffer of this thread's last tick, emptied, for the next one: a buffer of
    /// [`TICK_BYTES`] allocated and freed per tick cost more than the rest of the sink.
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl WriterSink {
    /// Opens a tick with `lines`, lets the requests already ready on this worker add theirs,
    /// then writes the tick (or hands it to the writer holding the output) and waits for the
    /// outcome with the others.
    async fn lead(&self, lines: Vec<u8>) -> Result<(), SinkError> {
        let mut leader = Leader {
            shared: &self.shared,
            tick: Tick::open(&self.shared, lines),
            handed: false,
        };
        // A task that wakes itself while being polled goes to the back of its worker's run
        // queue: behind the requests already ready in this turn, which join the tick, and
        // ahead of whatever the next poll for I/O wakes, so the tick's answers go out first.
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            waiting_for_turn();
            Poll::Pending
        })
        .await;
        if let Some(result) = leader.write() {
            return result.map_err(SinkError::new);
        }
        // Handed to the holder of the output, who tells; this wait is bounded by the ingest's
        // timer (it is not a turn).
        Outcome {
            tick: leader.tick.clone(),
            waiting: None,
            turn: false,
        }
        .await
    }
}

/// The lines of the requests one worker delivers in one turn, written together.
struct Tick {
    state: Mutex<TickState>,
}

#[derive(Default)]
struct TickState {
    lines: Vec<u8>,
    /// Taken by the writer: later requests open a tick of their own.
    closed: bool,
    outcome: Option<Result<(), String>>,
    waiting: Vec<Waker>,
}

thread_local! {
    /// The tick open on this thread, per sink (by the address of its shared state; a sink with
    /// an open tick is alive, since the tick's leader borrows it).
    static OPEN: RefCell<Vec<(*const Shared, Arc<Tick>)>> = const { RefCell::new(Vec::new()) };
}

impl Tick {
    fn lock(&self) -> MutexGuard<'_, TickState> {
        unpoisoned(self.state.lock())
    }

    /// Writes this request's lines (`lines_of`) into the tick open on this thread for
    /// `shared`, straight into its buffer; gives `lines_of` back when no tick is open.
    fn join<F: FnOnce(&mut Vec<u8>)>(shared: &Arc<Shared>, lines_of: F) -> Result<Arc<Tick>, F> {
        let key = Arc::as_ptr(shared);
        OPEN.with(|open| {
            let open = open.borrow();
            let Some((_, tick)) = open.iter().find(|(k, _)| *k == key) else {
                return Err(lines_of);
            };
            let mut state = tick.lock();
            if state.closed {
                return Err(lines_of);
            }
            lines_of(&mut state.lines);
            drop(state);
            Ok(tick.clone())
        })
    }

    fn open(shared: &Arc<Shared>, lines: Vec<u8>) -> Arc<Tick> {
        let key = Arc::as_ptr(shared);
        let tick = Arc::new(Tick {
            state: Mutex::new(TickState {
                lines,
                ..TickState::default()
            }),
        });
        OPEN.with(|open| {
            let mut open = open.borrow_mut();
            // Closed ticks, of this sink or of sinks since dropped, are of no further use.
            open.retain(|(k, t)| *k != key && !t.lock().closed);
            open.push((key, tick.clone()));
        });
        tick
    }

    fn close(&self) -> Vec<u8> {
        let mut state = self.lock();
        state.closed = true;
        std::mem::take(&mut state.lines)
    }

    fn finish(&self, outcome: Result<(), String>) {
        let waiting = {
            let mut state = self.lock();
            state.closed = true;
            state.outcome = Some(outcome);
            std::mem::take(&mut state.waiting)
        };
        for waker in waiting {
            waker.wake();
        }
    }
}

/// The request that opened a tick, until it has written it or handed it to the writer
/// holding the output. Dropped before that (its sender went away, or the ingest's timeout),
/// it does so on the way out: the others' lines are written all the same, and its own too (at
/// least once: a sender that went away retries, and dedup absorbs the copy).
struct Leader<'a> {
    shared: &'a Shared,
    tick: Arc<Tick>,
    handed: bool,
}

impl Leader<'_> {
    /// Writes the tick, with its outcome when written here; `None` when handed to the writer
    /// holding the output.
    fn write(&mut self) -> Option<Result<(), String>> {
        self.handed = true;
        let mut lines = self.tick.close();
        // The usual case, nobody else writing: write here, without queueing. Whatever others
        // queue meanwhile is written on the way out.
        if let Ok(mut output) = self.shared.output.try_lock() {
            let result = write_flushed(&mut **output, &lines);
            drop(output);
            self.shared.written();
            if lines.capacity() <= SPARE_BYTES {
                lines.clear();
                SPARE.set(lines);
            }
            self.tick.finish(result.clone());
            Some(result)
        } else {
            self.shared.push(lines, self.tick.clone());
            None
        }
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.handed {
            let _ = self.write();
        }
    }
}

/// A request waiting to hear how the write of its tick went.
struct Outcome {
    tick: Arc<Tick>,
    /// Where this request's waker is in the tick's list, once registered.
    waiting: Option<usize>,
    /// Whether the write is this worker's own, due at the end of its turn (no timer needed),
    /// rather than another's holding the output.
    turn: bool,
}

impl Future for Outcome {
    type Output = Result<(), SinkError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = this.tick.lock();
        if let Some(outcome) = &state.outcome {
            return Poll::Ready(outcome.clone().map_err(SinkError::new));
        }
        match this.waiting {
            Some(i) if state.waiting[i].will_wake(cx.waker()) => {}
            Some(i) => state.waiting[i] = cx.waker().clone(),
            None => {
                this.waiting = Some(state.waiting.len());
                state.waiting.push(cx.waker().clone());
            }
        }
        if this.turn {
            waiting_for_turn();
        }
        Poll::Pending
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

    fn batch<'a>(source: &'a EventSource, events: &'a [MappedEvent]) -> Batch<'a> {
        Batch { source, events }
    }

    fn event(id: usize) -> MappedEvent<'static> {
        MappedEvent::with_id(format!("evt_{id}"))
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
                sink.deliver(batch(&source, &events)).await
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
                let delivery = sink.deliver(batch(&source, &events));
                block_on_new_runtime(delivery)
            })
        };
        entered.recv().unwrap();
        // The output is taken: this delivery only queues, and is not acknowledged yet.
        let events = [event(2)];
        let mut second = sink.deliver(batch(&source, &events));
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

    /// A writer that counts its flushes: one per write of a tick or a queued batch.
    #[derive(Clone, Default)]
    struct Counted {
        out: Shared,
        flushes: Arc<Mutex<usize>>,
    }

    impl Write for Counted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.out.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            *self.flushes.lock().unwrap() += 1;
            Ok(())
        }
    }

    fn ids(out: &Shared) -> Vec<String> {
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn the_requests_of_one_turn_share_one_write() {
        let out = Counted::default();
        let sink = Arc::new(WriterSink::new("memory", Box::new(out.clone())));
        let source = Arc::new(EventSource::new("ns", "src"));
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let (sink, source) = (sink.clone(), source.clone());
                tokio::spawn(async move {
                    let events = [event(t)];
                    sink.deliver(batch(&source, &events)).await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let expected: Vec<String> = (0..8).map(|t| format!("\"evt_{t}\"")).collect();
        assert_eq!(ids(&out.out), expected);
        // All eight ran in the runtime's first turn; only the first of them writes.
        assert_eq!(*out.flushes.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn a_tick_whose_first_request_goes_away_is_written_all_the_same() {
        let out = Counted::default();
        let sink = WriterSink::new("memory", Box::new(out.clone()));
        let source = EventSource::new("ns", "src");
        let (first, second, third) = ([event(1)], [event(2)], [event(3)]);
        let mut leader = sink.deliver(batch(&source, &first));
        let polled = std::future::poll_fn(|cx| Poll::Ready(leader.as_mut().poll(cx))).await;
        assert!(
            polled.is_pending(),
            "the first request waits for the turn to end"
        );
        let follower = sink.deliver(batch(&source, &second));
        drop(leader);
        // Written on the leader's way out: the follower is acknowledged, and the leader's own
        // line is there too (its sender, gone, retries; dedup absorbs the copy).
        follower.await.unwrap();
        assert_eq!(ids(&out.out), ["\"evt_1\"", "\"evt_2\""]);
        assert_eq!(*out.flushes.lock().unwrap(), 1);
        // The next request opens a tick of its own.
        sink.deliver(batch(&source, &third)).await.unwrap();
        assert_eq!(ids(&out.out), ["\"evt_1\"", "\"evt_2\"", "\"evt_3\""]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_acknowledged_line_is_written_once_whatever_requests_go_away() {
        let out = Counted::default();
        let sink = Arc::new(WriterSink::new("memory", Box::new(out.clone())));
        let source = Arc::new(EventSource::new("ns", "src"));
        let deliver = move |t: usize| {
            let (sink, source) = (sink.clone(), source.clone());
            async move {
                let events = [event(t)];
                let acked = sink.deliver(batch(&source, &events)).await.is_ok();
                (t, acked)
            }
        };
        // Spawned from a worker, so that groups of requests share its turns; in every other
        // group a task aborts the group's first request, often a tick's leader after others
        // joined its tick (which is then written as the leader is dropped).
        let tasks = tokio::spawn(async move {
            let mut tasks = Vec::new();
            for group in 0..100 {
                let first = tokio::spawn(deliver(group * 5));
                for t in 1..5 {
                    tasks.push(tokio::spawn(deliver(group * 5 + t)));
                }
                if group % 2 == 0 {
                    let abort = first.abort_handle();
                    tokio::spawn(async move { abort.abort() });
                }
                tasks.push(first);
                if group % 3 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            tasks
        })
        .await
        .unwrap();
        let mut acked = Vec::new();
        for task in tasks {
            // Refused (a 503 to the sender) or aborted: the sender retries.
            if let Ok((t, true)) = task.await {
                acked.push(format!("\"evt_{t}\""));
            }
        }
        let written = ids(&out.out);
        let mut unique = written.clone();
        unique.dedup();
        assert_eq!(unique, written, "a line was written twice");
        for id in &acked {
            assert!(written.contains(id), "{id} acknowledged but not written");
        }
        assert!(
            acked.len() >= 300,
            "only {} of 500 acknowledged",
            acked.len()
        );
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
        let err = sink.deliver(batch(&source, &events)).await.unwrap_err();
        assert!(err.message.contains("pipe closed"), "{err}");
    }
}
