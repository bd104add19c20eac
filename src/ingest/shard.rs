//! State that every request updates, split per thread.
//!
//! A source's status and counters were each one lock or atomic shared by all requests, so the
//! runtime's workers took turns owning those cache lines on every request; on a node with many
//! cores, every request to a busy source waits for the same line. (On 2 cores, removing the
//! status and metrics updates altogether saved about 1 µs of ~24 µs per request; BENCHMARKS.md.)
//! Here each thread updates its own shard, which stays in its core's cache; readers (status
//! writers, `/metrics`) add the shards up, a few times a minute.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Atomic;
use prometheus_client::metrics::{MetricType, TypedMetric};

/// How many shards each value has: one per CPU, as the ingest has connection threads by
/// default (the threads that serve requests, each [`pin`]ned to its own), at most 16.
pub fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16)
    })
}

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Gives the calling thread shard `i` (modulo the count). The ingest's connection threads,
/// which make nearly every write, each take their own this way: given in turn on first use, two
/// of them shared a shard whenever another thread's first write fell between theirs.
pub fn pin(i: usize) {
    INDEX.with(|index| index.set(i % count()));
}

/// This thread's shard: the one it was pinned to, or else one given in turn on its first use.
pub(crate) fn index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    INDEX.with(|index| {
        let mut i = index.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % count();
            index.set(i);
        }
        i
    })
}

/// A cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Line<T>(T);

/// One `T` per shard, each created when a thread first writes to it: an idle source costs a
/// pointer per shard.
#[derive(Debug)]
pub struct Sharded<T> {
    shards: Box<[OnceLock<Box<Line<T>>>]>,
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Self {
            shards: (0..count()).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl<T: Default> Sharded<T> {
    /// The calling thread's shard.
    pub fn local(&self) -> &T {
        let shard = &self.shards[index() % self.shards.len()];
        &shard.get_or_init(|| Box::new(Line(T::default()))).0
    }
}

impl<T> Sharded<T> {
    /// Every shard written so far.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards
            .iter()
            .filter_map(|s| s.get().map(|line| &line.0))
    }
}

/// A counter for prometheus-client's `Counter<u64, ShardedU64>`.
#[derive(Debug, Default)]
pub struct ShardedU64(Sharded<AtomicU64>);

impl Atomic<u64> for ShardedU64 {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Returns this shard's previous value (the total would need every shard).
    fn inc_by(&self, v: u64) -> u64 {
        self.0.local().fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.0.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}

/// A Prometheus histogram with fixed buckets, sharded like [`ShardedU64`]. Clones share it,
/// as prometheus-client's metrics do.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds, ascending; a last bucket catches the rest (`+Inf`).
    bounds: Box<[f64]>,
    shards: Sharded<HistogramShard>,
}

#[derive(Debug, Default)]
struct HistogramShard {
    count: AtomicU64,
    /// The sum's `f64` bits: only this shard's thread adds to it.
    sum: AtomicU64,
    /// One per bound, then `+Inf`; created on the first observation.
    buckets: OnceLock<Box<[AtomicU64]>>,
}

impl Histogram {
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let mut bounds: Vec<f64> = bounds.into_iter().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        Self(Arc::new(HistogramInner {
            bounds: bounds.into(),
            shards: Sharded::default(),
        }))
    }

    pub fn observe(&self, value: f64) {
        let HistogramInner { bounds, shards } = &*self.0;
        let shard = shards.local();
        let buckets = shard
            .buckets
            .get_or_init(|| (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect());
        let bucket = bounds.partition_point(|bound| *bound < value);
        buckets[bucket].fetch_add(1, Ordering::Relaxed);
        // Threads that share a shard may race here; the loop keeps every addition.
        let _ = shard
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
        shard.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Sum, count and per-bucket counts (not cumulative) over every shard.
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let HistogramInner { bounds, shards } = &*self.0;
        let mut buckets: Vec<(f64, u64)> = bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .map(|bound| (bound, 0))
            .collect();
        let (mut sum, mut count) = (0.0, 0);
        for shard in shards.iter() {
            sum += f64::from_bits(shard.sum.load(Ordering::Relaxed));
            count += shard.count.load(Ordering::Relaxed);
            for (total, n) in buckets
                .iter_mut()
                .zip(shard.buckets.get().into_iter().flatten())
            {
                total.1 += n.load(Ordering::Relaxed);
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_thread_writes_to_the_shard_it_was_given() {
        let value = Arc::new(Sharded::<AtomicU64>::default());
        let threads: Vec<_> = (0..count())
            .map(|_| {
                let value = value.clone();
                std::thread::spawn(move || {
                    // Pinned to a shard other than the one its turn gave it (when there are two).
                    let wanted = (index() + 1) % count();
                    pin(wanted);
                    value.local().fetch_add(1, Ordering::Relaxed);
                    (wanted, index())
                })
            })
            .collect();
        for thread in threads {
            let (wanted, got) = thread.join().expect("pinned thread");
            assert_eq!(got, wanted);
        }
        let written: u64 = value.iter().map(|v| v.load(Ordering::Relaxed)).sum();
        assert_eq!(written, count() as u64);
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let counter = Arc::new(ShardedU64::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.inc();
                    }
                    counter.inc_by(5);
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("counting thread");
        }
        assert_eq!(counter.get(), 8 * 1005);
    }

    #[test]
    fn a_histogram_puts_values_in_the_first_bucket_they_fit() {
        let histogram = Histogram::new([0.1, 1.0, 10.0]);
        let threads: Vec<_> = [0.05, 0.1, 0.5, 20.0]
            .into_iter()
            .map(|value| {
                let histogram = histogram.clone();
                std::thread::spawn(move || histogram.observe(value))
            })
            .collect();
        for thread in threads {
            thread.join().expect("observing thread");
        }
        let (sum, count, buckets) = histogram.totals();
        assert_eq!(count, 4);
        assert!((sum - 20.65).abs() < 1e-9, "sum {sum}");
        assert_eq!(buckets, [(0.1, 2), (1.0, 1), (10.0, 0), (f64::INFINITY, 1)]);
    }
}
