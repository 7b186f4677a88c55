//! Sending requests from several real threads at once: forced interleavings of two workers, and
//! parallel load.

use super::Host;
use crate::outcome::Outcome;
use crate::request::Request;
use crate::runtime::Thread;

impl Host {
    /// Sends `a` on worker `wa` and `b` on worker `wb` concurrently, forcing their shared-data
    /// hostcalls to alternate strictly (a, b, a, b, …) until one of them finishes. Returns both
    /// outcomes and the order the shared-data calls ran in as (worker, hostcall).
    pub fn send_interleaved(
        &self,
        a: &Request,
        wa: usize,
        b: &Request,
        wb: usize,
    ) -> (Outcome, Outcome, Vec<(usize, &'static str)>) {
        assert_ne!(
            wa % self.workers(),
            wb % self.workers(),
            "interleaving needs two different workers"
        );
        let (sa, sb) = (
            Thread::Worker(wa % self.workers()),
            Thread::Worker(wb % self.workers()),
        );
        let gate = &self.shared.gate;
        gate.arm(sa, sb);
        let (oa, ob) = std::thread::scope(|scope| {
            let ha = scope.spawn(|| {
                let out = self.send(&a.clone().worker(wa));
                gate.finish(sa);
                out
            });
            let hb = scope.spawn(|| {
                let out = self.send(&b.clone().worker(wb));
                gate.finish(sb);
                out
            });
            (join(ha), join(hb))
        });
        let trace = gate.disarm();
        let trace = trace
            .into_iter()
            .filter_map(|(thread, op)| Some((thread.worker()?, op)))
            .collect();
        (oa, ob, trace)
    }

    /// Sends `requests` from `threads` real threads (thread t uses worker t % workers).
    pub fn send_parallel(&self, requests: &[Request], threads: usize) -> Vec<Outcome> {
        let threads = threads.max(1);
        let workers = self.workers();
        let mut out: Vec<Option<Outcome>> = vec![None; requests.len()];
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        requests
                            .iter()
                            .enumerate()
                            .skip(t)
                            .step_by(threads)
                            .map(|(i, r)| (i, self.send(&r.clone().worker(t % workers))))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (i, o) in join(h) {
                    out[i] = Some(o);
                }
            }
        });
        out.into_iter().flatten().collect()
    }
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match h.join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}
