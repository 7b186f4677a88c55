//! The Envoy threads that hold a VM set.

/// Where a VM set runs: Envoy's main thread (it configures each plugin first and has its own
/// root contexts and timers) or worker `n` (it serves requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Thread {
    Main,
    Worker(usize),
}

impl Thread {
    /// The worker index, `None` on the main thread.
    pub fn worker(self) -> Option<usize> {
        match self {
            Thread::Main => None,
            Thread::Worker(n) => Some(n),
        }
    }
}
