//! One VM set: a wasmtime `Store` holding one instance per filter of the chain, as one Envoy
//! thread (the main thread or a worker) holds one VM per plugin. The request driver lives here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::{
    Caller, Instance, Linker, Memory, Module, Store, TypedFunc, WasmParams, WasmResults,
};

use crate::abi::{Status, ACTION_CONTINUE};
use crate::callout::{CalloutResult, Clusters};
use crate::clock::{Clock, Event, Timers};
use crate::error::HostError;
use crate::hcm::{self, ListenerSettings};
use crate::headers::HeaderMap;
use crate::module::ModuleShape;
use crate::shared::{lock, Faults, Metrics, SharedData, SharedQueues};
use crate::types::{LogLevel, LogLine, Phase, RequestHead, Response, Tls, Verdict};
use crate::upstream;

/// What the host does when a filter's VM has failed (Envoy's `fail_open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailStrategy {
    /// Envoy's default: every request through the failed filter gets 503.
    #[default]
    FailClosed,
    /// `fail_open: true`: the failed filter is skipped.
    FailOpen,
}

/// Immutable facts about one filter of the chain.
pub(crate) struct FilterInfo {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub fail: FailStrategy,
    pub module: Module,
    pub shape: ModuleShape,
    pub log_level: LogLevel,
}

/// State every VM set of one host shares.
pub(crate) struct HostShared {
    pub clock: Clock,
    pub timers: Timers,
    pub shared_data: SharedData,
    pub queues: SharedQueues,
    pub metrics: Metrics,
    pub faults: Faults,
    pub clusters: Clusters,
    pub logs: Mutex<Vec<LogLine>>,
    pub listener: ListenerSettings,
    pub connection_ids: AtomicU64,
    pub gate: crate::interleave::Gate,
}

/// `proxy_on_http_call_response(context, token, headers, body_size, trailers)`.
pub(crate) type HttpCallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

pub(crate) struct Callbacks {
    pub context_create: Option<TypedFunc<(i32, i32), ()>>,
    pub vm_start: Option<TypedFunc<(i32, i32), i32>>,
    pub configure: Option<TypedFunc<(i32, i32), i32>>,
    pub tick: Option<TypedFunc<i32, ()>>,
    pub queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    pub request_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub request_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub request_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub response_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub response_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    pub http_call_response: Option<HttpCallResponseFn>,
    pub log: Option<TypedFunc<i32, ()>>,
    pub done: Option<TypedFunc<i32, i32>>,
    pub delete: Option<TypedFunc<i32, ()>>,
}

/// One filter's instance in this VM set.
pub(crate) struct Vm {
    pub info: Arc<FilterInfo>,
    pub memory: Memory,
    pub alloc: TypedFunc<i32, i32>,
    pub cb: Callbacks,
    pub root_ctx: u32,
    pub next_ctx: u32,
    /// Stream contexts alive in this VM → stream key.
    pub contexts: HashMap<u32, u64>,
    pub failed: bool,
    pub tick_generation: u64,
    pub tick_period_ms: u32,
    pub next_callout: u32,
    /// Callout results waiting for their completion event.
    pub callouts: HashMap<u32, CalloutResult>,
}

/// A local reply a filter asked for.
#[derive(Debug, Clone)]
pub(crate) struct LocalReply {
    pub status: u16,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub by: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    ReqHeaders,
    ReqBody,
    ReqTrailers,
    Upstream,
    RespHeaders,
    RespBody,
    Finish,
    Done,
}

/// The downstream connection of a request.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub id: u64,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub tls: Option<Tls>,
}

/// An in-flight request.
pub(crate) struct Stream {
    pub req_headers: HeaderMap,
    pub req_body: Vec<u8>,
    pub req_trailers: Option<HeaderMap>,
    pub resp_headers: Option<HeaderMap>,
    pub resp_body: Vec<u8>,
    pub resp_trailers: Option<HeaderMap>,
    /// Envoy filter state set through `proxy_set_property` (key = the raw path bytes).
    pub filter_state: HashMap<Vec<u8>, Vec<u8>>,
    pub conn: Connection,
    pub start_ns: u64,
    pub stage: Stage,
    pub pos: usize,
    pub ctx: Vec<Option<u32>>,
    pub paused: bool,
    pub continue_requested: bool,
    pub reset: Option<usize>,
    pub local_reply: Option<LocalReply>,
    pub stream_failed: Vec<bool>,
    pub in_access_log: bool,
    pub upstream_request: Option<RequestHead>,
    pub verdict: Option<Verdict>,
    pub logs: Vec<LogLine>,
    pub filter_nanos: Vec<u64>,
}

impl Stream {
    pub fn new(
        n: usize,
        conn: Connection,
        req_headers: HeaderMap,
        body: Vec<u8>,
        trailers: Option<HeaderMap>,
        start_ns: u64,
    ) -> Self {
        Stream {
            req_headers,
            req_body: body,
            req_trailers: trailers,
            resp_headers: None,
            resp_body: Vec::new(),
            resp_trailers: None,
            filter_state: HashMap::new(),
            conn,
            start_ns,
            stage: Stage::ReqHeaders,
            pos: 0,
            ctx: vec![None; n],
            paused: false,
            continue_requested: false,
            reset: None,
            local_reply: None,
            stream_failed: vec![false; n],
            in_access_log: false,
            upstream_request: None,
            verdict: None,
            logs: Vec::new(),
            filter_nanos: vec![0; n],
        }
    }

    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }
}

/// The data of a VM set's `Store`.
pub(crate) struct WorkerState {
    pub slot: usize,
    pub vms: Vec<Vm>,
    pub cur_vm: usize,
    pub cur_ctx: u32,
    pub effective_ctx: Option<u32>,
    pub streams: HashMap<u64, Stream>,
    pub shared: Arc<HostShared>,
    /// The callout response being delivered (`HttpCallResponse*` maps and body).
    pub callout: Option<CalloutResult>,
    /// Whether the current root call is `on_configure` / `on_vm_start` (configuration buffers).
    pub in_config: bool,
}

impl WorkerState {
    pub fn vm(&self) -> &Vm {
        &self.vms[self.cur_vm]
    }

    pub fn vm_mut(&mut self) -> &mut Vm {
        let i = self.cur_vm;
        &mut self.vms[i]
    }

    /// The context hostcalls act on (`set_effective_context` overrides the callee's).
    pub fn ctx_id(&self) -> u32 {
        self.effective_ctx.unwrap_or(self.cur_ctx)
    }

    pub fn stream_key(&self) -> Option<u64> {
        self.vm().contexts.get(&self.ctx_id()).copied()
    }

    pub fn stream(&self) -> Option<&Stream> {
        let key = self.stream_key()?;
        self.streams.get(&key)
    }

    pub fn stream_mut(&mut self) -> Option<&mut Stream> {
        let key = self.stream_key()?;
        self.streams.get_mut(&key)
    }

    pub fn log(&mut self, level: LogLevel, message: String) {
        let line = LogLine {
            level,
            plugin: self.vm().info.name.clone(),
            message,
        };
        if let Some(s) = self.stream_mut() {
            s.logs.push(line.clone());
        }
        lock(&self.shared.logs).push(line);
    }
}

/// Reads guest memory; `InvalidMemoryAccess` when out of bounds.
pub(crate) fn mem_read(c: &Caller<'_, WorkerState>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let memory = c.data().vm().memory;
    let data = memory.data(c);
    let start = ptr as u32 as usize;
    let end = start
        .checked_add(len as u32 as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    data.get(start..end)
        .map(|s| s.to_vec())
        .ok_or(Status::InvalidMemoryAccess)
}

pub(crate) fn mem_write(
    c: &mut Caller<'_, WorkerState>,
    ptr: i32,
    bytes: &[u8],
) -> Result<(), Status> {
    let memory = c.data().vm().memory;
    let data = memory.data_mut(&mut *c);
    let start = ptr as u32 as usize;
    let end = start
        .checked_add(bytes.len())
        .ok_or(Status::InvalidMemoryAccess)?;
    data.get_mut(start..end)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(bytes);
    Ok(())
}

/// Host → guest buffer: allocate exactly `len` bytes with the guest allocator, copy, and write
/// pointer and size (u32 LE) to the out-params. Empty data: pointer 0, size 0, no allocation
/// (cpp-host `copyToPointerSize`). A trap in the allocator propagates.
pub(crate) fn copy_out(
    c: &mut Caller<'_, WorkerState>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> wasmtime::Result<Result<(), Status>> {
    let mut ptr: u32 = 0;
    if !bytes.is_empty() {
        let alloc = c.data().vm().alloc.clone();
        ptr = alloc.call(&mut *c, bytes.len() as i32)? as u32;
        if ptr == 0 || mem_write(c, ptr as i32, bytes).is_err() {
            return Ok(Err(Status::InvalidMemoryAccess));
        }
    }
    if mem_write(c, ptr_ptr, &ptr.to_le_bytes()).is_err()
        || mem_write(c, size_ptr, &(bytes.len() as u32).to_le_bytes()).is_err()
    {
        return Ok(Err(Status::InvalidMemoryAccess));
    }
    Ok(Ok(()))
}

/// A VM set: the store and its slot number (0 = main thread, 1.. = workers).
pub(crate) struct Worker {
    pub store: Store<WorkerState>,
}

fn typed<P: WasmParams, R: WasmResults>(
    store: &mut Store<WorkerState>,
    inst: &Instance,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>, HostError> {
    match inst.get_func(&mut *store, name) {
        None => Ok(None),
        Some(f) => f
            .typed::<P, R>(&*store)
            .map(Some)
            .map_err(|e| HostError::Instantiate(format!("export {name} has a bad signature: {e}"))),
    }
}

impl Worker {
    /// Instantiates every filter; runs `_initialize` (or `_start`), then the root context's
    /// create / vm_start / configure, as Envoy does on each thread.
    pub fn new(
        slot: usize,
        filters: &[Arc<FilterInfo>],
        linker: &Linker<WorkerState>,
        shared: Arc<HostShared>,
    ) -> Result<Worker, HostError> {
        let engine = crate::module::shared_engine();
        let mut store = Store::new(
            engine,
            WorkerState {
                slot,
                vms: Vec::new(),
                cur_vm: 0,
                cur_ctx: 0,
                effective_ctx: None,
                streams: HashMap::new(),
                shared,
                callout: None,
                in_config: false,
            },
        );
        for info in filters {
            let inst = linker
                .instantiate(&mut store, &info.module)
                .map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
            let memory = inst
                .get_memory(&mut store, "memory")
                .ok_or_else(|| HostError::MissingExport("memory".to_string()))?;
            let alloc = typed::<i32, i32>(&mut store, &inst, info.shape.allocator)?
                .ok_or_else(|| HostError::MissingExport(info.shape.allocator.to_string()))?;
            let cb = Callbacks {
                context_create: typed(&mut store, &inst, "proxy_on_context_create")?,
                vm_start: typed(&mut store, &inst, "proxy_on_vm_start")?,
                configure: typed(&mut store, &inst, "proxy_on_configure")?,
                tick: typed(&mut store, &inst, "proxy_on_tick")?,
                queue_ready: typed(&mut store, &inst, "proxy_on_queue_ready")?,
                request_headers: typed(&mut store, &inst, "proxy_on_request_headers")?,
                request_body: typed(&mut store, &inst, "proxy_on_request_body")?,
                request_trailers: typed(&mut store, &inst, "proxy_on_request_trailers")?,
                response_headers: typed(&mut store, &inst, "proxy_on_response_headers")?,
                response_body: typed(&mut store, &inst, "proxy_on_response_body")?,
                http_call_response: typed(&mut store, &inst, "proxy_on_http_call_response")?,
                log: typed(&mut store, &inst, "proxy_on_log")?,
                done: typed(&mut store, &inst, "proxy_on_done")?,
                delete: typed(&mut store, &inst, "proxy_on_delete")?,
            };
            let init: Option<TypedFunc<(), ()>> = match typed(&mut store, &inst, "_initialize")? {
                Some(f) => Some(f),
                None => typed(&mut store, &inst, "_start")?,
            };
            store.data_mut().vms.push(Vm {
                info: info.clone(),
                memory,
                alloc,
                cb,
                root_ctx: 0,
                next_ctx: 1,
                contexts: HashMap::new(),
                failed: false,
                tick_generation: 0,
                tick_period_ms: 0,
                next_callout: 0,
                callouts: HashMap::new(),
            });
            let index = store.data().vms.len() - 1;
            if let Some(init) = init {
                let name = if typed::<(), ()>(&mut store, &inst, "_initialize")?.is_some() {
                    "_initialize"
                } else {
                    "_start"
                };
                call(&mut store, index, 0, None, name, |s| init.call(s, ())).map_err(
                    |message| HostError::Trap {
                        plugin: info.name.clone(),
                        function: name.to_string(),
                        message,
                    },
                )?;
            }
        }
        let mut worker = Worker { store };
        for i in 0..filters.len() {
            worker.start_root(i)?;
        }
        Ok(worker)
    }

    fn start_root(&mut self, i: usize) -> Result<(), HostError> {
        let store = &mut self.store;
        let info = store.data().vms[i].info.clone();
        let root = {
            let vm = &mut store.data_mut().vms[i];
            let id = vm.next_ctx;
            vm.next_ctx += 1;
            vm.root_ctx = id;
            id
        };
        let logs_before = lock(&store.data().shared.logs).len();
        let trap = |function: &str, message: String| HostError::Trap {
            plugin: info.name.clone(),
            function: function.to_string(),
            message,
        };
        if let Some(f) = store.data().vms[i].cb.context_create.clone() {
            call(store, i, root, None, "proxy_on_context_create", |s| {
                f.call(s, (root as i32, 0))
            })
            .map_err(|m| trap("proxy_on_context_create", m))?;
        }
        store.data_mut().in_config = true;
        let plugin_logs = |store: &Store<WorkerState>| -> Vec<LogLine> {
            lock(&store.data().shared.logs)
                .get(logs_before..)
                .unwrap_or_default()
                .iter()
                .filter(|l| l.plugin == info.name)
                .cloned()
                .collect()
        };
        if let Some(f) = store.data().vms[i].cb.vm_start.clone() {
            let len = info.vm_config.len() as i32;
            let ok = call(store, i, root, None, "proxy_on_vm_start", |s| {
                f.call(s, (root as i32, len))
            })
            .map_err(|m| trap("proxy_on_vm_start", m))?;
            if ok == 0 {
                store.data_mut().in_config = false;
                return Err(HostError::VmStartFailed {
                    plugin: info.name.clone(),
                    logs: plugin_logs(store),
                });
            }
        }
        if let Some(f) = store.data().vms[i].cb.configure.clone() {
            let len = info.plugin_config.len() as i32;
            let ok = call(store, i, root, None, "proxy_on_configure", |s| {
                f.call(s, (root as i32, len))
            })
            .map_err(|m| trap("proxy_on_configure", m))?;
            if ok == 0 {
                store.data_mut().in_config = false;
                return Err(HostError::ConfigRejected {
                    plugin: info.name.clone(),
                    logs: plugin_logs(store),
                });
            }
        }
        store.data_mut().in_config = false;
        Ok(())
    }
}

/// Calls into filter `vm` as context `ctx`. A trap marks the VM failed (Envoy logs the failed
/// function at critical level) and returns the trap message.
pub(crate) fn call<R>(
    store: &mut Store<WorkerState>,
    vm: usize,
    ctx: u32,
    stream: Option<u64>,
    name: &str,
    f: impl FnOnce(&mut Store<WorkerState>) -> wasmtime::Result<R>,
) -> Result<R, String> {
    {
        let st = store.data_mut();
        st.cur_vm = vm;
        st.cur_ctx = ctx;
        st.effective_ctx = None;
    }
    let started = Instant::now();
    let result = f(store);
    let elapsed = started.elapsed().as_nanos() as u64;
    let st = store.data_mut();
    st.effective_ctx = None;
    if let Some(key) = stream {
        if let Some(s) = st.streams.get_mut(&key) {
            if let Some(n) = s.filter_nanos.get_mut(vm) {
                *n += elapsed;
            }
        }
    }
    match result {
        Ok(r) => Ok(r),
        Err(e) => {
            let message = match e.downcast_ref::<wasmtime::Trap>() {
                Some(t) => format!("{t}"),
                None => format!("{e:#}"),
            };
            st.vms[vm].failed = true;
            st.cur_vm = vm;
            st.cur_ctx = ctx;
            st.log(
                LogLevel::Critical,
                format!("Function: {name} failed: {message}"),
            );
            Err(message)
        }
    }
}

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

impl Worker {
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
            .filter(|(_, s)| {
                s.paused && (s.continue_requested || s.local_reply.is_some() || s.reset.is_some())
            })
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
                .and_then(|s| s.reset.take());
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
            if let Some(reply) = s.local_reply.take() {
                s.paused = false;
                self.apply_local_reply(key, reply);
                continue;
            }
            if s.paused {
                if !s.continue_requested {
                    return;
                }
                s.paused = false;
                s.continue_requested = false;
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
                        if s.local_reply.is_none() && s.reset.is_none() {
                            if s.continue_requested {
                                // continue_stream during the very callback that paused.
                                s.continue_requested = false;
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
                        s.local_reply = Some(reply);
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
        let in_response = matches!(
            s.stage,
            Stage::RespHeaders | Stage::RespBody | Stage::Finish
        );
        s.resp_headers = Some(hcm::local_reply_headers(
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
        hcm::router_upstream_headers(&mut s.req_headers);
        s.upstream_request = Some(RequestHead {
            headers: s.req_headers.to_strings(),
            body: s.req_body.clone(),
        });
        let (mut headers, body) = upstream::echo(&s.req_headers, &s.req_body);
        hcm::router_response_headers(&mut headers);
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
                if s.local_reply.is_some() || s.reset.is_some() {
                    // cpp-host: a local reply stops iteration (`stopNextIteration`).
                    return Step::Pause;
                }
                if action == ACTION_CONTINUE {
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
            || (matches!(s.verdict, Some(Verdict::LocalReply { .. })) && stage_is_response(stage))
        {
            // Already failed (or answering): let the reply through.
            return Step::Continue;
        }
        s.stream_failed[filter] = true;
        s.local_reply = None;
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
                hcm::finalize_response_headers(h);
            }
        }
    }

    fn live(&self, i: usize) -> Option<&Callbacks> {
        let vm = &self.store.data().vms[i];
        if vm.failed {
            None
        } else {
            Some(&vm.cb)
        }
    }

    /// Abandons a paused stream (nothing can resume it): runs the end-of-stream callbacks.
    pub fn abandon(&mut self, key: u64) -> Option<Phase> {
        let s = self.store.data_mut().streams.get_mut(&key)?;
        let phase = stage_phase(s.stage);
        s.stage = Stage::Finish;
        s.paused = false;
        self.finish(key);
        Some(phase)
    }

    /// Root-context callback helpers (ticks, callouts, queues).
    pub fn on_tick(&mut self, filter: usize) {
        let (root, f) = {
            let vm = &self.store.data().vms[filter];
            if vm.failed {
                return;
            }
            (vm.root_ctx, vm.cb.tick.clone())
        };
        if let Some(f) = f {
            let _ = call(&mut self.store, filter, root, None, "proxy_on_tick", |st| {
                f.call(st, root as i32)
            });
        }
        self.drive_all();
    }

    pub fn on_queue_ready(&mut self, filter: usize, context_id: u32, token: u32) {
        let f = {
            let vm = &self.store.data().vms[filter];
            if vm.failed {
                return;
            }
            vm.cb.queue_ready.clone()
        };
        if let Some(f) = f {
            let _ = call(
                &mut self.store,
                filter,
                context_id,
                None,
                "proxy_on_queue_ready",
                |st| f.call(st, (context_id as i32, token as i32)),
            );
        }
        self.drive_all();
    }

    pub fn on_callout(&mut self, filter: usize, token: u32) {
        let (root, f, result) = {
            let vm = &mut self.store.data_mut().vms[filter];
            let result = vm.callouts.remove(&token);
            if vm.failed {
                return;
            }
            (vm.root_ctx, vm.cb.http_call_response.clone(), result)
        };
        let Some(result) = result else { return };
        let nh = result.headers.as_ref().map(|h| h.len()).unwrap_or(0) as i32;
        let body = result.body.len() as i32;
        let nt = result.trailers.len() as i32;
        self.store.data_mut().callout = Some(result);
        if let Some(f) = f {
            let _ = call(
                &mut self.store,
                filter,
                root,
                None,
                "proxy_on_http_call_response",
                |st| f.call(st, (root as i32, token as i32, nh, body, nt)),
            );
        }
        self.store.data_mut().callout = None;
        self.drive_all();
    }
}

fn stage_is_response(stage: Stage) -> bool {
    matches!(stage, Stage::RespHeaders | Stage::RespBody | Stage::Finish)
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

pub(crate) fn stage_phase(stage: Stage) -> Phase {
    match stage {
        Stage::ReqHeaders | Stage::Upstream => Phase::RequestHeaders,
        Stage::ReqBody => Phase::RequestBody,
        Stage::ReqTrailers => Phase::RequestTrailers,
        Stage::RespHeaders => Phase::ResponseHeaders,
        Stage::RespBody => Phase::ResponseBody,
        Stage::Finish => Phase::Log,
        Stage::Done => Phase::Done,
    }
}

/// Builds the client-visible response of a finished stream.
pub(crate) fn response_of(s: Stream) -> Response {
    let Some(h) = s.resp_headers.as_ref() else {
        return Response::default();
    };
    let status = h
        .get_str(":status")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        headers: h
            .to_strings()
            .into_iter()
            .filter(|(n, _)| n != ":status")
            .collect(),
        body: s.resp_body,
    }
}

/// Schedules a timer event on the host clock.
pub(crate) fn schedule(shared: &HostShared, delay_ns: u64, event: Event) {
    let due = shared.clock.monotonic_ns().saturating_add(delay_ns);
    shared.timers.schedule(due, event);
}
