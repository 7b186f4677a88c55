//! The request driver: runs a stream through the chain — request callbacks in chain order, the
//! router and echo upstream, response callbacks in reverse order, then log / done / delete — and
//! carries out what filters asked of it (continue, local reply, reset) and what a failed VM means
//! (Envoy's `fail_open`). The stream's own methods make each move (`crate::stream`); the driver
//! decides which, and calls into the guests.

use meshward_abi::Action;

use crate::outcome::Phase;
use crate::stream::{LocalReply, Stage, Stream};
use crate::vm::{call, Callbacks, FailStrategy, VmSet};

/// What one callback left the stream to do next.
enum Step {
    /// On to the next filter.
    Continue,
    /// The callback paused the stream, or answered it.
    Pause,
    /// The host answers (a failed VM's 503).
    Reply(LocalReply),
}

impl VmSet {
    /// A new request: Envoy creates the chain's filters for it in order — a FAIL_RELOAD plugin
    /// whose VM failed reloads here — and each filter's context takes its id from its VM then
    /// (`proxy_on_context_create` comes later, when the filter first sees the request).
    pub fn insert_stream(&mut self, key: u64, stream: Stream) {
        self.store.data_mut().streams.insert(key, stream);
        for i in 0..self.store.data().vms.len() {
            if self.store.data().vms[i].failed() {
                self.reload(i);
            }
            let vm = &mut self.store.data_mut().vms[i];
            if !vm.failed() {
                let id = vm.core.next_context();
                vm.reserved.insert(key, id);
            }
        }
    }

    pub fn take_stream(&mut self, key: u64) -> Option<Stream> {
        self.store.data_mut().streams.remove(&key)
    }

    pub fn stream(&self, key: u64) -> Option<&Stream> {
        self.store.data().streams.get(&key)
    }

    fn stream_mut(&mut self, key: u64) -> Option<&mut Stream> {
        self.store.data_mut().streams.get_mut(&key)
    }

    /// Drives every stream that was continued or answered from another context.
    pub fn drive_all(&mut self) {
        let keys: Vec<u64> = self
            .store
            .data()
            .streams
            .iter()
            .filter(|(_, s)| s.needs_driving())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.drive(key);
        }
    }

    /// Runs a stream until it pauses or completes.
    pub fn drive(&mut self, key: u64) {
        loop {
            let names = &self.names;
            let Some(s) = self.store.data_mut().streams.get_mut(&key) else {
                return;
            };
            if let Some(by) = s.take_reset() {
                s.reset(names.get(by).cloned());
            }
            if let Some(reply) = s.take_local_reply() {
                let by = reply.by.and_then(|i| names.get(i).cloned());
                s.answer_locally(reply, by);
                continue;
            }
            if !s.resume() {
                return;
            }
            let stage = s.stage();
            let filter = match stage {
                Stage::Done => return,
                Stage::Finish => {
                    self.finish(key);
                    return;
                }
                Stage::Upstream => {
                    s.reach_upstream();
                    continue;
                }
                _ => match s.current_filter() {
                    Some(filter) => filter,
                    None => {
                        s.enter_next_stage();
                        continue;
                    }
                },
            };
            let step = self.step(key, filter, stage);
            let Some(s) = self.stream_mut(key) else {
                return;
            };
            match step {
                Step::Continue => s.advance(filter),
                Step::Pause => {
                    if !s.settle_pause() {
                        return;
                    }
                }
                Step::Reply(reply) => s.send_local_reply(reply),
            }
        }
    }

    /// Runs filter `filter`'s callback for `stage` (creating its context on the request headers).
    fn step(&mut self, key: u64, filter: usize, stage: Stage) -> Step {
        // The filter's turn: it takes the stage's map or body chunk, whether its callback runs
        // or not (a skipped filter passes the chunk on).
        if let Some(s) = self.stream_mut(key) {
            s.begin_call(filter);
        }
        let (failed, fail) = {
            let vm = &self.store.data().vms[filter];
            (vm.failed(), vm.info.fail)
        };
        if failed {
            return self.failed_filter(key, filter, fail, false);
        }
        let Some(s) = self.stream(key) else {
            return Step::Continue;
        };
        let ctx = match s.context(filter) {
            Some(ctx) => ctx,
            None if stage == Stage::ReqHeaders => match self.create_context(key, filter) {
                Some(ctx) => ctx,
                None => return self.failed_filter(key, filter, fail, true),
            },
            // A filter that never saw the request skips later callbacks (cpp-host
            // `in_vm_context_created_`).
            None => return Step::Continue,
        };
        match self.call_stage(key, filter, ctx, stage) {
            None => Step::Continue,
            Some(Ok(action)) => {
                // cpp-host: a local reply stops iteration (`stopNextIteration`).
                let answered = self.stream(key).is_some_and(Stream::is_answered);
                if answered || action != Action::Continue as i32 {
                    Step::Pause
                } else {
                    Step::Continue
                }
            }
            Some(Err(_trap)) => self.failed_filter(key, filter, fail, true),
        }
    }

    /// Calls the callback of `stage` (`None`: the module does not export it): the action it
    /// returned, or the trap.
    fn call_stage(
        &mut self,
        key: u64,
        filter: usize,
        ctx: u32,
        stage: Stage,
    ) -> Option<Result<i32, String>> {
        let (a, b) = self.stream(key)?.callback_args();
        let c = ctx as i32;
        let cb = &self.store.data().vms[filter].cb;
        let (name, f) = match stage {
            Stage::ReqHeaders => ("proxy_on_request_headers", cb.request_headers.clone()),
            Stage::ReqBody => ("proxy_on_request_body", cb.request_body.clone()),
            Stage::RespHeaders => ("proxy_on_response_headers", cb.response_headers.clone()),
            Stage::RespBody => ("proxy_on_response_body", cb.response_body.clone()),
            Stage::ReqTrailers => {
                let f = cb.request_trailers.clone()?;
                let name = "proxy_on_request_trailers";
                return Some(call(&mut self.store, filter, ctx, Some(key), name, |st| {
                    f.call(st, (c, a))
                }));
            }
            Stage::Upstream | Stage::Finish | Stage::Done => return None,
        };
        let f = f?;
        Some(call(&mut self.store, filter, ctx, Some(key), name, |st| {
            f.call(st, (c, a, b))
        }))
    }

    /// CHECK_FAIL_HTTP: the legacy fail open skips the filter; `FAIL_OPEN` skips it on the
    /// requests after the one that trapped (`trapped_now`); otherwise the stream fails once with
    /// 503.
    fn failed_filter(
        &mut self,
        key: u64,
        filter: usize,
        fail: FailStrategy,
        trapped_now: bool,
    ) -> Step {
        let skip = match fail {
            FailStrategy::FailOpen => true,
            FailStrategy::FailOpenAfterTrap => !trapped_now,
            FailStrategy::FailClosed | FailStrategy::Reload { .. } => false,
        };
        if skip {
            return Step::Continue;
        }
        match self.stream_mut(key).and_then(|s| s.fail(filter)) {
            Some(reply) => Step::Reply(reply),
            // Already failed (or answering): let the reply through.
            None => Step::Continue,
        }
    }

    fn create_context(&mut self, key: u64, filter: usize) -> Option<u32> {
        let (ctx, root, f) = self.store.data_mut().vms[filter].new_context(key);
        if let Some(s) = self.stream_mut(key) {
            s.set_context(filter, ctx);
        }
        if let Some(f) = f {
            let name = "proxy_on_context_create";
            call(&mut self.store, filter, ctx, Some(key), name, |st| {
                f.call(st, (ctx as i32, root as i32))
            })
            .ok()?;
        }
        Some(ctx)
    }

    /// on_log for every filter, then on_done, then on_delete (Envoy logs before it destroys the
    /// filters). Every filter of the chain is an access logger in Envoy: one that never saw the
    /// request (behind a local reply or a reset) gets its context created now, then logs and
    /// is destroyed like the others (`Context::log` calls `onCreate` first).
    fn finish(&mut self, key: u64) {
        let Some(filters) = self.stream_mut(key).map(Stream::begin_access_log) else {
            return;
        };
        let mut ctxs = Vec::with_capacity(filters.len());
        for (i, ctx) in filters {
            let ctx = match ctx {
                Some(c) => Some(c),
                None if self.live(i).is_some() => self.create_context(key, i),
                None => None,
            };
            let Some(c) = ctx else { continue };
            ctxs.push((i, c));
            if let Some(f) = self.live(i).and_then(|cb| cb.log.clone()) {
                let _ = call(&mut self.store, i, c, Some(key), "proxy_on_log", |st| {
                    f.call(st, c as i32)
                });
            }
        }
        for &(i, c) in &ctxs {
            if let Some(f) = self.live(i).and_then(|cb| cb.done.clone()) {
                let _ = call(&mut self.store, i, c, Some(key), "proxy_on_done", |st| {
                    f.call(st, c as i32)
                });
            }
        }
        for &(i, c) in &ctxs {
            if let Some(f) = self.live(i).and_then(|cb| cb.delete.clone()) {
                let _ = call(&mut self.store, i, c, Some(key), "proxy_on_delete", |st| {
                    f.call(st, c as i32)
                });
            }
            self.store.data_mut().vms[i].contexts.remove(&c);
        }
        if let Some(s) = self.stream_mut(key) {
            s.complete();
        }
        for vm in &mut self.store.data_mut().vms {
            vm.reserved.remove(&key);
        }
    }

    fn live(&self, i: usize) -> Option<&Callbacks> {
        self.store.data().vms[i].live()
    }

    /// Abandons a paused stream (nothing can resume it): runs the end-of-stream callbacks.
    pub fn abandon(&mut self, key: u64) -> Option<Phase> {
        let phase = self.stream_mut(key)?.give_up();
        self.finish(key);
        Some(phase)
    }
}
