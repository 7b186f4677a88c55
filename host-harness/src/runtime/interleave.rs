//! Forcing an interleaving between two workers: while armed, the shared-data hostcalls of the
//! two participating VM sets take strict turns (A, B, A, B, …), so a read-modify-write done by
//! both runs as "both read, then both write". A participant that finishes stops taking turns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use super::lock;
use super::Thread;

#[derive(Default)]
pub(crate) struct Gate {
    armed: AtomicBool,
    state: Mutex<Option<Lockstep>>,
    cv: Condvar,
}

struct Lockstep {
    threads: [Thread; 2],
    turn: usize,
    finished: [bool; 2],
    /// Order in which the participants passed the gate (thread, hostcall), for tests.
    trace: Vec<(Thread, &'static str)>,
}

impl Gate {
    pub fn arm(&self, a: Thread, b: Thread) {
        *lock(&self.state) = Some(Lockstep {
            threads: [a, b],
            turn: 0,
            finished: [false, false],
            trace: Vec::new(),
        });
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Disarms and returns the trace.
    pub fn disarm(&self) -> Vec<(Thread, &'static str)> {
        self.armed.store(false, Ordering::SeqCst);
        let trace = lock(&self.state)
            .take()
            .map(|l| l.trace)
            .unwrap_or_default();
        self.cv.notify_all();
        trace
    }

    pub fn finish(&self, thread: Thread) {
        let mut st = lock(&self.state);
        if let Some(l) = st.as_mut() {
            if let Some(i) = l.threads.iter().position(|t| *t == thread) {
                l.finished[i] = true;
            }
        }
        self.cv.notify_all();
    }

    /// Blocks until it is `thread`'s turn (no-op unless armed and `thread` participates). The turn
    /// passes to the other participant only at `release`, once the hostcall has done its work,
    /// so the shared state is read and written in exactly the traced order.
    pub fn pass(&self, thread: Thread, op: &'static str) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let mut st = lock(&self.state);
        loop {
            let Some(l) = st.as_mut() else { return };
            let Some(me) = l.threads.iter().position(|t| *t == thread) else {
                return;
            };
            let other = 1 - me;
            if l.turn == me || l.finished[other] {
                l.trace.push((thread, op));
                return;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Ends `thread`'s turn.
    pub fn release(&self, thread: Thread) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let mut st = lock(&self.state);
        if let Some(l) = st.as_mut() {
            if let Some(me) = l.threads.iter().position(|t| *t == thread) {
                let other = 1 - me;
                if l.turn == me && !l.finished[other] {
                    l.turn = other;
                }
            }
        }
        self.cv.notify_all();
    }
}
