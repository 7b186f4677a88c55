//! The host clock (virtual or real) and the timer queue (ticks, callout responses, queue-ready
//! notifications) that it drives.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::lock;
use super::Thread;

/// How the host reads time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// Time moves only when the test calls `Host::advance` (or a request waits on a callout).
    /// Starts at 2026-01-01T00:00:00Z.
    Virtual,
    /// Like `Virtual`, but starting at this wall time (ns since the epoch), for tests pinned
    /// to a date (token expiry edges).
    VirtualFrom(u64),
    /// Wall-clock time; `Host::advance` sleeps.
    Real,
}

/// Start of virtual time (2026-01-01T00:00:00Z) in ns since the epoch.
const VIRTUAL_EPOCH_NS: u64 = 1_767_225_600 * 1_000_000_000;

pub(crate) struct Clock {
    mode: ClockMode,
    /// Virtual: ns since VIRTUAL_EPOCH_NS.
    offset_ns: AtomicU64,
    started: Instant,
}

impl Clock {
    pub fn new(mode: ClockMode) -> Self {
        Clock {
            mode,
            offset_ns: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Monotonic ns since the host started: the timer queue's time base.
    pub fn monotonic_ns(&self) -> u64 {
        match self.mode {
            ClockMode::Virtual | ClockMode::VirtualFrom(_) => self.offset_ns.load(Ordering::SeqCst),
            ClockMode::Real => self.started.elapsed().as_nanos() as u64,
        }
    }

    /// Wall time in ns since the epoch (`proxy_get_current_time_nanoseconds`, WASI realtime).
    pub fn realtime_ns(&self) -> u64 {
        match self.mode {
            ClockMode::Virtual => VIRTUAL_EPOCH_NS + self.offset_ns.load(Ordering::SeqCst),
            ClockMode::VirtualFrom(start) => {
                start.saturating_add(self.offset_ns.load(Ordering::SeqCst))
            }
            ClockMode::Real => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        }
    }

    /// Virtual mode: move time forward to `monotonic` (never backwards).
    pub fn set_monotonic(&self, monotonic: u64) {
        if self.mode != ClockMode::Real {
            self.offset_ns.fetch_max(monotonic, Ordering::SeqCst);
        }
    }

    pub fn sleep_until(&self, monotonic: u64) {
        if self.mode == ClockMode::Real {
            let now = self.monotonic_ns();
            if monotonic > now {
                std::thread::sleep(Duration::from_nanos(monotonic - now));
            }
        } else {
            self.set_monotonic(monotonic);
        }
    }
}

/// Something due at a time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Event {
    /// `proxy_on_tick` on the root context of `filter` on `thread`; `generation` drops
    /// ticks scheduled under an older tick period.
    Tick {
        thread: Thread,
        filter: usize,
        generation: u64,
    },
    /// An HTTP callout completes.
    Callout {
        thread: Thread,
        filter: usize,
        token: u32,
    },
    /// `proxy_on_queue_ready`.
    QueueReady {
        thread: Thread,
        filter: usize,
        context_id: u32,
        token: u32,
    },
}

#[derive(Default)]
pub(crate) struct Timers {
    inner: Mutex<TimersInner>,
}

#[derive(Default)]
struct TimersInner {
    seq: u64,
    heap: BinaryHeap<Reverse<(u64, u64, Event)>>,
}

impl Timers {
    pub fn schedule(&self, due: u64, event: Event) {
        let mut inner = lock(&self.inner);
        inner.seq += 1;
        let seq = inner.seq;
        inner.heap.push(Reverse((due, seq, event)));
    }

    /// Pops the earliest event due at or before `now`.
    pub fn pop_due(&self, now: u64) -> Option<(u64, Event)> {
        let mut inner = lock(&self.inner);
        match inner.heap.peek() {
            Some(Reverse((due, _, _))) if *due <= now => {
                inner.heap.pop().map(|Reverse((d, _, e))| (d, e))
            }
            _ => None,
        }
    }

    /// Due time of the earliest event matching `pred`.
    pub fn next_due(&self, pred: impl Fn(&Event) -> bool) -> Option<u64> {
        let inner = lock(&self.inner);
        inner
            .heap
            .iter()
            .filter(|Reverse((_, _, e))| pred(e))
            .map(|Reverse((d, _, _))| *d)
            .min()
    }
}
