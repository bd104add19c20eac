//! Per-source admission: the token bucket behind `limits.requestsPerSecond` / `burst`, and the
//! event-id window behind `dedup.window`.
//!
//! Both keep their state per source across route updates (a reload must not reset a rate
//! limit or forget which events were delivered). Their locks are `std` mutexes held for a few
//! arithmetic steps and never across an `.await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::route::RateLimit;

/// A token bucket: `burst` requests at once, refilled at `rate` per second.
#[derive(Debug)]
pub struct TokenBucket {
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        let (rate, burst) = Self::params(limit);
        Self {
            state: Mutex::new(Bucket {
                rate,
                burst,
                tokens: burst,
                last: now,
            }),
        }
    }

    fn params(limit: RateLimit) -> (f64, f64) {
        let rate = f64::from(limit.requests_per_second.max(1));
        let burst = f64::from(limit.burst.max(1));
        (rate, burst)
    }

    /// Applies new settings, keeping the tokens already earned (capped at the new burst).
    pub fn reconfigure(&self, limit: RateLimit) {
        let (rate, burst) = Self::params(limit);
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        b.rate = rate;
        b.burst = burst;
        b.tokens = b.tokens.min(burst);
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_acquire(&self, now: Instant) -> Result<(), Duration> {
        let mut b = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.rate).min(b.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / b.rate))
        }
    }
}

/// What [`DedupWindow::reserve`] found for an event id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not seen: reserved for this request until [`DedupWindow::commit`] or
    /// [`DedupWindow::release`].
    New,
    /// Delivered within the window: acknowledge, do not deliver again.
    Delivered,
    /// Another request is delivering it right now. Its outcome is unknown, so this request
    /// must not claim it delivered: the sender is asked to retry.
    InFlight,
}

#[derive(Debug, Clone, Copy)]
enum Entry {
    InFlight,
    Delivered(Instant),
}

/// Event ids delivered within the last `window`, bounded in size.
#[derive(Debug)]
pub struct DedupWindow {
    state: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    ids: HashMap<String, Entry>,
    /// Delivered ids in delivery order, for expiry and the size bound.
    order: VecDeque<(Instant, String)>,
}

/// Past this many remembered ids the oldest are forgotten early: memory stays bounded when a
/// sender floods one source, at the cost of dedup for ids older than the newest million.
pub const MAX_REMEMBERED_IDS: usize = 1_000_000;

impl Default for DedupWindow {
    fn default() -> Self {
        Self {
            state: Mutex::new(Window::default()),
        }
    }
}

impl DedupWindow {
    /// Checks and reserves each id (ids repeated within `ids` count as delivered after the
    /// first). `window` zero disables dedup: every id is new and nothing is remembered.
    pub fn reserve(&self, ids: &[&str], window: Duration, now: Instant) -> Vec<Seen> {
        if window.is_zero() {
            return vec![Seen::New; ids.len()];
        }
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        w.expire(window, now);
        let mut mine: HashSet<&str> = HashSet::with_capacity(ids.len());
        ids.iter()
            .map(|id| match w.ids.get(*id) {
                // Reserved earlier in this same call: the request repeats the id.
                Some(Entry::InFlight) if mine.contains(id) => Seen::Delivered,
                Some(Entry::Delivered(_)) => Seen::Delivered,
                Some(Entry::InFlight) => Seen::InFlight,
                None => {
                    w.ids.insert((*id).to_owned(), Entry::InFlight);
                    mine.insert(id);
                    Seen::New
                }
            })
            .collect()
    }

    /// Marks reserved ids delivered.
    pub fn commit(&self, ids: &[&str], window: Duration, now: Instant) {
        if window.is_zero() {
            return;
        }
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            w.ids.insert((*id).to_owned(), Entry::Delivered(now));
            w.order.push_back((now, (*id).to_owned()));
        }
        while w.order.len() > MAX_REMEMBERED_IDS {
            if let Some((at, id)) = w.order.pop_front() {
                w.forget(&id, at);
            }
        }
    }

    /// Gives reserved ids back after a failed delivery, so a retry delivers them.
    pub fn release(&self, ids: &[&str]) {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if matches!(w.ids.get(*id), Some(Entry::InFlight)) {
                w.ids.remove(*id);
            }
        }
    }
}

impl Window {
    fn expire(&mut self, window: Duration, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < window {
                break;
            }
            if let Some((at, id)) = self.order.pop_front() {
                self.forget(&id, at);
            }
        }
    }

    /// Removes an id only if its entry is the delivery at `at`: a later delivery of the same
    /// id (after expiry) has a newer entry that must stay.
    fn forget(&mut self, id: &str, at: Instant) {
        if let Some(Entry::Delivered(when)) = self.ids.get(id)
            && *when == at
        {
            self.ids.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new(
            RateLimit {
                requests_per_second: 2,
                burst: 3,
            },
            t0,
        );
        for _ in 0..3 {
            bucket.try_acquire(t0).unwrap();
        }
        let wait = bucket.try_acquire(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        bucket.try_acquire(t0 + Duration::from_millis(500)).unwrap();
        assert!(bucket.try_acquire(t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn dedup_reserves_commits_releases_and_expires() {
        let w = DedupWindow::default();
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(w.reserve(&["a", "b"], hour, t0), [Seen::New, Seen::New]);
        assert_eq!(w.reserve(&["a"], hour, t0), [Seen::InFlight]);
        w.commit(&["a"], hour, t0);
        w.release(&["b"]);
        assert_eq!(
            w.reserve(&["a", "b"], hour, t0),
            [Seen::Delivered, Seen::New]
        );
        w.release(&["b"]);
        assert_eq!(w.reserve(&["a"], hour, t0 + hour), [Seen::New]);
        assert_eq!(
            w.reserve(&["c", "c"], hour, t0),
            [Seen::New, Seen::Delivered]
        );
    }

    #[test]
    fn zero_window_turns_dedup_off() {
        let w = DedupWindow::default();
        let t0 = Instant::now();
        w.commit(&["a"], Duration::ZERO, t0);
        assert_eq!(w.reserve(&["a"], Duration::ZERO, t0), [Seen::New]);
    }
}
