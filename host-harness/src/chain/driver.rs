//! The request driver: runs a stream through the chain — request callbacks in chain order, the
//! router and echo upstream, response callbacks in reverse order, then log / done / delete — and
//! carries out what filters asked of it (continue, local reply, reset) and what a failed VM means
//! (Envoy's `fail_open`).

use meshward_abi::Action;

use crate::envoy_model::{
    echo, finalize_response_headers, local_reply_headers, router_response_headers,
    router_upstream_headers,
};
use crate::outcome::{Phase, RequestHead, Verdict};
use crate::stream::{LocalReply, Stage, Stream};
use crate::vm::{call, Callbacks, FailStrategy, VmSet};

/// Filters in the order a stage visits them.
fn order(stream: &Stream, stage: Stage, n: usize) -> Vec<usize> {
    match stage {
        Stage::RespHeaders | Stage::RespBody => {
            (0..n).rev().filter(|i| stream.ctx[*i].is_some()).collect()
        }
        _ => (0..n).collect(),
    }
}

enum Step {
    Continue,
    Pause,
    Reply(LocalReply),
}

impl VmSet {
    pub fn insert_stream(&mut self, key: u64, stream: Stream) {
        self.store.data_mut().streams.insert(key, stream);
    }

    pub fn take_stream(&mut self, key: u64) -> Option<Stream> {
        self.store.data_mut().streams.remove(&key)
    }

    pub fn stream(&self, key: u64) -> Option<&Stream> {
        self.store.data().streams.get(&key)
    }

    /// Drives every stream that was continued or answered from another context.
    pub fn drive_all(&mut self) {
        let keys: Vec<u64> = self
            .store
            .data()
            .streams
            .iter()
            .filter(|(_, s)| s.paused && s.has_requests())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.drive(key);
        }
    }

    /// Runs a stream until it pauses or completes.
    pub fn drive(&mut self, key: u64) {
        let n = self.store.data().vms.len();
        loop {
            let reset_by = self
                .store
                .data_mut()
                .streams
                .get_mut(&key)
                .and_then(Stream::take_reset);
            let reset_name = reset_by
                .and_then(|i| self.store.data().vms.get(i))
                .map(|v| v.info.name.clone());
            let Some(s) = self.store.data_mut().streams.get_mut(&key) else {
                return;
            };
            if reset_by.is_some() {
                // proxy_close_stream: Envoy resets the stream; the client gets no response.
                s.paused = false;
                s.verdict = Some(Verdict::LocalReply {
                    status: 0,
                    details: "wasm_close_stream".to_string(),
                    by: reset_name,
                });
                s.resp_headers = None;
                s.stage = Stage::Finish;
            }
            if let Some(reply) = s.take_local_reply() {
                s.paused = false;
                self.apply_local_reply(key, reply);
                continue;
            }
            if s.paused {
                if !s.take_continue() {
                    return;
                }
                s.paused = false;
                s.pos += 1;
            }
            let stage = s.stage;
            match stage {
                Stage::Done => return,
                Stage::Upstream => {
                    self.upstream(key);
                    continue;
                }
                Stage::Finish => {
                    self.finish(key);
                    return;
                }
                _ => {}
            }
            let ord = order(s, stage, n);
            let Some(&filter) = ord.get(s.pos) else {
                s.stage = next_stage(s, stage);
                s.pos = 0;
                continue;
            };
            match self.step(key, filter, stage) {
                Step::Continue => {
                    if let Some(s) = self.store.data_mut().streams.get_mut(&key) {
                        s.pos += 1;
                    }
                }
                Step::Pause => {
                    if let Some(s) = self.store.data_mut().streams.get_mut(&key) {
                        if !s.is_answered() {
                            if s.take_continue() {
                                // continue_stream during the very callback that paused.
                                s.pos += 1;
                            } else {
                                s.paused = true;
                                return;
                            }
                        } else {
                            s.paused = true;
                        }
                    }
                }
                Step::Reply(reply) => {
                    if let Some(s) = self.store.data_mut().streams.get_mut(&key) {
                        s.send_local_reply(reply);
                    }
                }
            }
        }
    }

    fn apply_local_reply(&mut self, key: u64, reply: LocalReply) {
        let names: Vec<String> = self
            .store
            .data()
            .vms
            .iter()
            .map(|v| v.info.name.clone())
            .collect();
        let Some(s) = self.store.data_mut().streams.get_mut(&key) else {
            return;
        };
        let in_response = s.stage.is_response();
        s.resp_headers = Some(local_reply_headers(
            reply.status,
            &reply.body,
            &reply.headers,
        ));
        s.resp_body = reply.body;
        s.verdict = Some(Verdict::LocalReply {
            status: reply.status,
            details: reply.details,
            by: reply.by.and_then(|i| names.get(i).cloned()),
        });
        if in_response {
            // A reply sent while encoding replaces the response; it does not re-enter the filters.
            s.stage = Stage::Finish;
        } else {
            s.stage = Stage::RespHeaders;
        }
        s.pos = 0;
    }

    fn upstream(&mut self, key: u64) {
        let Some(s) = self.store.data_mut().streams.get_mut(&key) else {
            return;
        };
        router_upstream_headers(&mut s.req_headers);
        s.upstream_request = Some(RequestHead {
            headers: s.req_headers.to_strings(),
            body: s.req_body.clone(),
        });
        let (mut headers, body) = echo(&s.req_headers, &s.req_body);
        router_response_headers(&mut headers);
        s.resp_headers = Some(headers);
        s.resp_body = body;
        s.verdict = Some(Verdict::Upstream { status: 200 });
        s.stage = Stage::RespHeaders;
        s.pos = 0;
    }

    /// Runs one callback of one filter for one stage.
    fn step(&mut self, key: u64, filter: usize, stage: Stage) -> Step {
        let (failed, fail) = {
            let vm = &self.store.data().vms[filter];
            (vm.failed, vm.info.fail)
        };
        if failed {
            return self.failed_filter(key, filter, stage, fail);
        }
        let Some(s) = self.store.data().streams.get(&key) else {
            return Step::Continue;
        };
        let existing = s.ctx[filter];
        let ctx = match existing {
            Some(c) => c,
            None if stage == Stage::ReqHeaders => match self.create_context(key, filter) {
                Some(c) => c,
                None => return self.failed_filter(key, filter, stage, fail),
            },
            // A filter that never saw the request skips later callbacks (cpp-host
            // `in_vm_context_created_`).
            None => return Step::Continue,
        };
        let s = &self.store.data().streams[&key];
        let cb = &self.store.data().vms[filter].cb;
        let c = ctx as i32;
        let body_eos = s.req_trailers.is_none() as i32;
        let result = match stage {
            Stage::ReqHeaders => {
                let eos = (s.req_body.is_empty() && s.req_trailers.is_none()) as i32;
                let nh = s.req_headers.len() as i32;
                cb.request_headers.clone().map(|f| {
                    call(
                        &mut self.store,
                        filter,
                        ctx,
                        Some(key),
                        "proxy_on_request_headers",
                        |st| f.call(st, (c, nh, eos)),
                    )
                })
            }
            Stage::ReqBody => {
                let len = s.req_body.len() as i32;
                cb.request_body.clone().map(|f| {
                    call(
                        &mut self.store,
                        filter,
                        ctx,
                        Some(key),
                        "proxy_on_request_body",
                        |st| f.call(st, (c, len, body_eos)),
                    )
                })
            }
            Stage::ReqTrailers => {
                let nt = s.req_trailers.as_ref().map(|t| t.len()).unwrap_or(0) as i32;
                cb.request_trailers.clone().map(|f| {
                    call(
                        &mut self.store,
                        filter,
                        ctx,
                        Some(key),
                        "proxy_on_request_trailers",
                        |st| f.call(st, (c, nt)),
                    )
                })
            }
            Stage::RespHeaders => {
                let nh = s.resp_headers.as_ref().map(|h| h.len()).unwrap_or(0) as i32;
                let eos = s.resp_body.is_empty() as i32;
                cb.response_headers.clone().map(|f| {
                    call(
                        &mut self.store,
                        filter,
                        ctx,
                        Some(key),
                        "proxy_on_response_headers",
                        |st| f.call(st, (c, nh, eos)),
                    )
                })
            }
            Stage::RespBody => {
                let len = s.resp_body.len() as i32;
                cb.response_body.clone().map(|f| {
                    call(
                        &mut self.store,
                        filter,
                        ctx,
                        Some(key),
                        "proxy_on_response_body",
                        |st| f.call(st, (c, len, 1)),
                    )
                })
            }
            _ => None,
        };
        match result {
            None => Step::Continue,
            Some(Ok(action)) => {
                let s = &self.store.data().streams[&key];
                if s.is_answered() {
                    // cpp-host: a local reply stops iteration (`stopNextIteration`).
                    return Step::Pause;
                }
                if action == Action::Continue as i32 {
                    Step::Continue
                } else {
                    Step::Pause
                }
            }
            Some(Err(_trap)) => self.failed_filter(key, filter, stage, fail),
        }
    }

    /// CHECK_FAIL_HTTP: fail open skips the filter; fail closed fails the stream once with 503.
    fn failed_filter(&mut self, key: u64, filter: usize, stage: Stage, fail: FailStrategy) -> Step {
        if fail == FailStrategy::FailOpen {
            return Step::Continue;
        }
        let Some(s) = self.store.data_mut().streams.get_mut(&key) else {
            return Step::Continue;
        };
        if s.stream_failed[filter]
            || (matches!(s.verdict, Some(Verdict::LocalReply { .. })) && stage.is_response())
        {
            // Already failed (or answering): let the reply through.
            return Step::Continue;
        }
        s.stream_failed[filter] = true;
        s.drop_local_reply();
        Step::Reply(LocalReply {
            status: 503,
            details: "wasm_fail_stream".to_string(),
            body: Vec::new(),
            headers: Vec::new(),
            by: Some(filter),
        })
    }

    fn create_context(&mut self, key: u64, filter: usize) -> Option<u32> {
        let (ctx, root, f) = {
            let vm = &mut self.store.data_mut().vms[filter];
            let ctx = vm.next_ctx;
            vm.next_ctx += 1;
            vm.contexts.insert(ctx, key);
            (ctx, vm.root_ctx, vm.cb.context_create.clone())
        };
        if let Some(s) = self.store.data_mut().streams.get_mut(&key) {
            s.ctx[filter] = Some(ctx);
        }
        if let Some(f) = f {
            if call(
                &mut self.store,
                filter,
                ctx,
                Some(key),
                "proxy_on_context_create",
                |st| f.call(st, (ctx as i32, root as i32)),
            )
            .is_err()
            {
                return None;
            }
        }
        Some(ctx)
    }

    /// on_log for every filter that saw the request, then on_done, then on_delete (Envoy logs
    /// before it destroys the filters).
    fn finish(&mut self, key: u64) {
        let n = self.store.data().vms.len();
        if let Some(s) = self.store.data_mut().streams.get_mut(&key) {
            s.in_access_log = true;
        }
        let ctxs: Vec<(usize, u32)> = match self.store.data().streams.get(&key) {
            Some(s) => (0..n).filter_map(|i| s.ctx[i].map(|c| (i, c))).collect(),
            None => return,
        };
        for &(i, c) in &ctxs {
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
        if let Some(s) = self.store.data_mut().streams.get_mut(&key) {
            s.stage = Stage::Done;
            s.paused = false;
            if let Some(h) = s.resp_headers.as_mut() {
                finalize_response_headers(h);
            }
        }
    }

    fn live(&self, i: usize) -> Option<&Callbacks> {
        self.store.data().vms[i].live()
    }

    /// Abandons a paused stream (nothing can resume it): runs the end-of-stream callbacks.
    pub fn abandon(&mut self, key: u64) -> Option<Phase> {
        let s = self.store.data_mut().streams.get_mut(&key)?;
        let phase = s.stage.phase();
        s.stage = Stage::Finish;
        s.paused = false;
        self.finish(key);
        Some(phase)
    }
}

fn next_stage(s: &Stream, stage: Stage) -> Stage {
    match stage {
        Stage::ReqHeaders if !s.req_body.is_empty() => Stage::ReqBody,
        Stage::ReqHeaders | Stage::ReqBody if s.req_trailers.is_some() => Stage::ReqTrailers,
        Stage::ReqHeaders | Stage::ReqBody | Stage::ReqTrailers => Stage::Upstream,
        Stage::RespHeaders if !s.resp_body.is_empty() => Stage::RespBody,
        _ => Stage::Finish,
    }
}
