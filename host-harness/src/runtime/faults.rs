//! Injected host faults (a named hostcall answers as told instead of running) and the optional
//! trace of every hostcall.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::lock;
use super::Thread;
use crate::Status;

/// What an armed fault makes a hostcall do instead of running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FaultAction {
    /// Return this status (nothing is written to the out-params).
    Status(Status),
    /// Return `Ok` with these bytes as the result: for a call that hands a buffer back (header
    /// values and maps, properties, buffers, shared data, queue items) they are the buffer (empty:
    /// pointer 0, size 0, as cpp-host hands over nothing); for a call that writes a number (sizes,
    /// time, metric ids and values, tokens) they are written raw to its out-param, so 2 bytes are
    /// a short write; a call with no output answers `Ok` without doing anything.
    Bytes(Vec<u8>),
}

/// One armed fault: `hostcall` (e.g. `"proxy_get_property"`), optionally only as called by the
/// plugin named `filter`, lets `skip` matching calls run and then acts on the next `times`
/// matching calls (`None`: every one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    hostcall: String,
    action: FaultAction,
    filter: Option<String>,
    skip: u32,
    times: Option<u32>,
}

impl Fault {
    pub fn new(hostcall: &str, action: FaultAction) -> Fault {
        Fault {
            hostcall: hostcall.to_string(),
            action,
            filter: None,
            skip: 0,
            times: None,
        }
    }
    /// Only calls made by plugin `name`.
    pub fn filter(mut self, name: &str) -> Fault {
        self.filter = Some(name.to_string());
        self
    }
    /// Only the `n`-th matching call (0-based), once.
    pub fn nth(mut self, n: u32) -> Fault {
        self.skip = n;
        self.times = Some(1);
        self
    }
    pub fn times(mut self, times: Option<u32>) -> Fault {
        self.times = times;
        self
    }
}

/// One hostcall as the trace saw it (only while tracing is on, see [`crate::Host::trace`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostcallRecord {
    /// The thread whose VM made the call.
    pub thread: Thread,
    /// Plugin name of the calling filter.
    pub filter: String,
    pub hostcall: &'static str,
    /// Whether it was made for a request (an HTTP context), not a root context.
    pub in_stream: bool,
    /// The key, property path or cluster it named, for the calls that name one.
    pub detail: String,
    /// Whether an armed fault answered it.
    pub faulted: bool,
}

/// Injected host faults (the named hostcall answers as told instead of running) and the
/// optional trace of every hostcall.
#[derive(Default)]
pub(crate) struct Faults {
    /// Fast path: false when nothing is armed and nothing traced.
    any: AtomicBool,
    tracing: AtomicBool,
    inner: Mutex<FaultsInner>,
}

#[derive(Default)]
struct FaultsInner {
    armed: Vec<Fault>,
    trace: Vec<HostcallRecord>,
}

impl Faults {
    /// The status-only form: replaces any fault armed for `hostcall`.
    pub fn inject(&self, hostcall: &str, status: Status, times: Option<u32>) {
        let mut inner = lock(&self.inner);
        inner.armed.retain(|f| f.hostcall != hostcall);
        inner
            .armed
            .push(Fault::new(hostcall, FaultAction::Status(status)).times(times));
        self.any.store(true, Ordering::SeqCst);
    }

    /// Arms one more fault (several may target one hostcall; the first that matches acts).
    pub fn arm(&self, fault: Fault) {
        lock(&self.inner).armed.push(fault);
        self.any.store(true, Ordering::SeqCst);
    }

    pub fn clear(&self) {
        lock(&self.inner).armed.clear();
        self.any
            .store(self.tracing.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Starts (clearing) or stops the trace.
    pub fn set_tracing(&self, on: bool) {
        let mut inner = lock(&self.inner);
        if on {
            inner.trace.clear();
        }
        self.tracing.store(on, Ordering::SeqCst);
        let any = on || !inner.armed.is_empty();
        self.any.store(any, Ordering::SeqCst);
    }

    pub fn trace(&self) -> Vec<HostcallRecord> {
        lock(&self.inner).trace.clone()
    }

    /// Whether any fault is armed or the trace is on (else [`Faults::take`] has nothing to do:
    /// callers skip gathering its arguments).
    pub fn is_active(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// What to do instead of running `hostcall` for plugin `filter`, if a fault is armed; records
    /// the call when tracing.
    pub fn take(
        &self,
        hostcall: &'static str,
        thread: Thread,
        filter: &str,
        in_stream: bool,
    ) -> Option<FaultAction> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let mut inner = lock(&self.inner);
        let mut action = None;
        for f in inner.armed.iter_mut() {
            if f.hostcall != hostcall || f.filter.as_deref().is_some_and(|n| n != filter) {
                continue;
            }
            if f.skip > 0 {
                f.skip -= 1;
                continue;
            }
            match &mut f.times {
                Some(0) => continue,
                Some(n) => *n -= 1,
                None => {}
            }
            action = Some(f.action.clone());
            break;
        }
        if self.tracing.load(Ordering::Relaxed) {
            inner.trace.push(HostcallRecord {
                thread,
                filter: filter.to_string(),
                hostcall,
                in_stream,
                detail: String::new(),
                faulted: action.is_some(),
            });
        }
        action
    }

    /// Names what the last traced call of `thread` acted on (a key, a property path).
    pub fn note(&self, thread: Thread, detail: impl FnOnce() -> String) {
        if !self.tracing.load(Ordering::Relaxed) {
            return;
        }
        let mut inner = lock(&self.inner);
        if let Some(r) = inner.trace.iter_mut().rev().find(|r| r.thread == thread) {
            if r.detail.is_empty() {
                r.detail = detail();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W0: Thread = Thread::Worker(0);

    #[test]
    fn faults_hit_the_nth_matching_call_of_the_named_plugin_and_are_traced() {
        let f = Faults::default();
        assert_eq!(f.take("proxy_log", W0, "a", true), None);
        f.arm(
            Fault::new("proxy_get_property", FaultAction::Bytes(vec![1]))
                .filter("a")
                .nth(1),
        );
        f.set_tracing(true);
        // Another plugin's calls neither match nor count.
        assert_eq!(f.take("proxy_get_property", W0, "b", true), None);
        assert_eq!(f.take("proxy_get_property", W0, "a", true), None);
        f.note(W0, || "source.principal".to_string());
        assert_eq!(
            f.take("proxy_get_property", W0, "a", true),
            Some(FaultAction::Bytes(vec![1]))
        );
        // Once only.
        assert_eq!(f.take("proxy_get_property", W0, "a", true), None);
        let trace = f.trace();
        assert_eq!(trace.len(), 4);
        assert_eq!(trace[1].detail, "source.principal");
        assert!(trace[2].faulted && !trace[1].faulted);
        // The status-only form replaces what was armed for the call; clear keeps the trace on.
        f.inject("proxy_log", Status::INTERNAL_FAILURE, Some(1));
        f.clear();
        assert_eq!(f.take("proxy_log", Thread::Main, "a", false), None);
        assert_eq!(f.trace().len(), 5);
    }
}
