//! The Envoy threads that hold a VM set.

/// Where a VM set runs: Envoy's main thread (it configures each plugin first and has its own
/// root contexts and timers) or worker `n` (it serves requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Thread {
    Main,
    Worker(usize),
    /// A configuration canary: a throwaway VM Envoy starts and configures once per plugin before
    /// the threads' VMs, then discards — nothing it schedules ever fires.
    Canary,
}

impl Thread {
    /// The worker index, `None` on the main thread.
    pub fn worker(self) -> Option<usize> {
        match self {
            Thread::Main | Thread::Canary => None,
            Thread::Worker(n) => Some(n),
        }
    }
}
