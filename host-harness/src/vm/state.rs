//! The data of one VM set's wasmtime `Store`: one instance per filter of the chain (as one Envoy
//! thread holds one VM per plugin), the streams in flight on that thread, and which filter and
//! context the current callback runs as — what every host call reads first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use wasmtime::{Memory, Module, TypedFunc};

use super::shared::HostShared;
use crate::envoy_model::{CalloutResult, Plugin, PropertyContext};
use crate::outcome::{LogLevel, LogLine};
use crate::runtime::lock;
use crate::runtime::Thread;
use crate::stream::Stream;
use meshward_abi::AbiVersion;

/// What the host does when a filter's VM has failed (Envoy's `fail_open` and `failure_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailStrategy {
    /// Envoy's default (`FAIL_CLOSED`): every request through the failed filter gets 503, the
    /// VM is never reloaded.
    #[default]
    FailClosed,
    /// The legacy `fail_open: true`: the request that trapped goes on without the filter, and
    /// so do later ones.
    FailOpen,
    /// `failure_policy: FAIL_OPEN`: the request that trapped gets 503; later ones skip the
    /// filter.
    FailOpenAfterTrap,
    /// `failure_policy: FAIL_RELOAD`: the request that trapped gets 503; a later request
    /// reloads the VM (a fresh instance, the plugin started again in it) when `backoff` has
    /// passed since the VM was last loaded, else gets 503.
    Reload { backoff: std::time::Duration },
}

/// What loading needs to know about a module.
#[derive(Debug, Clone)]
pub(crate) struct ModuleShape {
    pub abi: AbiVersion,
    /// `malloc` (wasm32-unknown-unknown) or `proxy_on_memory_allocate` (wasip1).
    pub allocator: &'static str,
}

/// Immutable facts about one filter of the chain.
pub(crate) struct FilterInfo {
    pub name: String,
    pub root_id: String,
    pub vm_id: String,
    pub vm_config: Vec<u8>,
    /// `vm_config.environment_variables`: the WASI environment, as `KEY=VALUE` strings.
    pub env: Vec<String>,
    pub plugin_config: Vec<u8>,
    pub fail: FailStrategy,
    pub module: Module,
    pub shape: ModuleShape,
    pub log_level: LogLevel,
    /// Envoy's VM key: plugins with the same vm_id, code and VM configuration (its
    /// `configuration` and environment variables) share one VM per thread.
    pub vm_key: [u8; 32],
}

/// `proxy_on_http_call_response(context, token, headers, body_size, trailers)`.
pub(crate) type HttpCallResponseFn = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// The module's exported callbacks (absent ones are simply not called, as in cpp-host).
#[derive(Clone)]
pub(crate) struct Callbacks {
    pub context_create: Option<ContextCreateFn>,
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
    pub grpc: GrpcCallbacks,
    pub log: Option<TypedFunc<i32, ()>>,
    pub done: Option<TypedFunc<i32, i32>>,
    pub delete: Option<TypedFunc<i32, ()>>,
    /// The network (L4) callbacks (`crate::connection`).
    pub network: crate::connection::NetworkCallbacks,
}

/// The gRPC callbacks, each `(context_id, token, count or size or status)`.
#[derive(Clone)]
pub(crate) struct GrpcCallbacks {
    pub initial_metadata: Option<TypedFunc<(i32, i32, i32), ()>>,
    pub receive: Option<TypedFunc<(i32, i32, i32), ()>>,
    pub trailing_metadata: Option<TypedFunc<(i32, i32, i32), ()>>,
    pub close: Option<TypedFunc<(i32, i32, i32), ()>>,
}

/// `proxy_on_context_create(context_id, root_context_id)`.
pub(crate) type ContextCreateFn = TypedFunc<(i32, i32), ()>;

/// One filter's instance in this VM set.
pub(crate) struct Vm {
    pub info: Arc<FilterInfo>,
    pub memory: Memory,
    pub alloc: TypedFunc<i32, i32>,
    pub cb: Callbacks,
    pub root_ctx: u32,
    /// What the plugins sharing this VM share (Envoy: one VM per thread for plugins with the
    /// same vm_id, code and VM configuration).
    pub core: Arc<VmCore>,
    /// Stream contexts alive in this VM → stream key.
    pub contexts: HashMap<u32, u64>,
    /// Context ids taken when a request's filters were created, until the filter's context is
    /// (stream key → id).
    pub reserved: HashMap<u64, u32>,
    pub tick_generation: u64,
    pub tick_period_ms: u32,
    /// Callout results waiting for their completion event.
    pub callouts: HashMap<u32, CalloutResult>,
    /// gRPC calls and streams in flight, by token (the root context's, as cpp-host makes
    /// every callout on it).
    pub grpc: HashMap<u32, GrpcOp>,
    /// The root context's status code (`proxy_get_status`): the last gRPC close's, kept after
    /// it (Envoy clears only the message).
    pub status_code: u32,
}

/// A gRPC call or stream as the VM's context keeps it (Envoy's `grpc_call_request_` and
/// `grpc_stream_` maps of the context).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GrpcOp {
    pub stream: bool,
    /// The module half-closed the stream (`proxy_grpc_close`, or a send with end of stream).
    pub local_closed: bool,
    /// The server closed it (`proxy_on_grpc_close` delivered).
    pub remote_closed: bool,
}

/// What a gRPC callback lets the module read while it runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct GrpcDelivery {
    /// `GrpcReceiveInitialMetadata` / `GrpcReceiveTrailingMetadata` during those callbacks.
    pub initial: Option<crate::envoy_model::grpc::Pairs>,
    pub trailing: Option<crate::envoy_model::grpc::Pairs>,
    /// `GrpcReceiveBuffer` during `proxy_on_grpc_receive`.
    pub message: Option<Vec<u8>>,
}

impl Vm {
    pub fn new(
        info: Arc<FilterInfo>,
        memory: Memory,
        alloc: TypedFunc<i32, i32>,
        cb: Callbacks,
        core: Arc<VmCore>,
    ) -> Vm {
        Vm {
            info,
            memory,
            alloc,
            cb,
            root_ctx: 0,
            core,
            contexts: HashMap::new(),
            reserved: HashMap::new(),
            tick_generation: 0,
            tick_period_ms: 0,
            callouts: HashMap::new(),
            grpc: HashMap::new(),
            status_code: 0,
        }
    }

    /// A new context id for the stream or connection `key` (recorded in `contexts`), with the root
    /// context it belongs to and the `proxy_on_context_create` to call: what both drivers do
    /// before a filter first sees a request or a connection.
    pub fn new_context(&mut self, key: u64) -> (u32, u32, Option<ContextCreateFn>) {
        let ctx = self
            .reserved
            .remove(&key)
            .unwrap_or_else(|| self.core.next_context());
        self.contexts.insert(ctx, key);
        (ctx, self.root_ctx, self.cb.context_create.clone())
    }

    /// Its callbacks, unless the VM has failed (a failed VM gets no more calls).
    pub fn live(&self) -> Option<&Callbacks> {
        (!self.failed()).then_some(&self.cb)
    }

    /// Whether the VM has failed (a trap in any plugin it holds).
    pub fn failed(&self) -> bool {
        self.core.failed.load(Ordering::Relaxed)
    }

    pub fn fail(&self) {
        self.core.failed.store(true, Ordering::Relaxed);
    }
}

/// The state of one wasm VM that every plugin it holds shares: its context ids, whether it
/// failed, its callout token counters. (Atomics only so that two plugins' `Vm`s can hold it; one
/// thread uses it.)
#[derive(Debug)]
pub(crate) struct VmCore {
    /// When the VM was loaded (start-up or reload): FAIL_RELOAD's backoff counts from here.
    pub loaded_at: u64,
    next_ctx: AtomicU32,
    failed: AtomicBool,
    /// Envoy numbers a VM's HTTP callouts 4, 8, 12, …, its gRPC calls 5, 9, 13, … and its
    /// streams 6, 10, 14, … (the low two bits tell callout kinds apart).
    next_http_call: AtomicU32,
    next_grpc_call: AtomicU32,
    next_grpc_stream: AtomicU32,
}

impl VmCore {
    /// A fresh VM's, loaded at `loaded_at` (host monotonic ns).
    pub fn new(loaded_at: u64) -> Self {
        VmCore {
            loaded_at,
            next_ctx: AtomicU32::new(1),
            failed: AtomicBool::new(false),
            next_http_call: AtomicU32::new(0),
            next_grpc_call: AtomicU32::new(1),
            next_grpc_stream: AtomicU32::new(2),
        }
    }
}

impl VmCore {
    /// The next context id of the VM (root and stream contexts alike).
    pub fn next_context(&self) -> u32 {
        self.next_ctx.fetch_add(1, Ordering::Relaxed)
    }
    pub fn next_http_call(&self) -> u32 {
        self.next_http_call
            .fetch_add(4, Ordering::Relaxed)
            .wrapping_add(4)
    }
    pub fn next_grpc_call(&self) -> u32 {
        self.next_grpc_call
            .fetch_add(4, Ordering::Relaxed)
            .wrapping_add(4)
    }
    pub fn next_grpc_stream(&self) -> u32 {
        self.next_grpc_stream
            .fetch_add(4, Ordering::Relaxed)
            .wrapping_add(4)
    }
}

/// The data of a VM set's `Store`.
pub(crate) struct VmState {
    pub thread: Thread,
    pub vms: Vec<Vm>,
    /// The filter whose callback runs now.
    pub cur_vm: usize,
    /// The context the callback was called for.
    pub cur_ctx: u32,
    /// `proxy_set_effective_context`'s choice, until the callback returns.
    pub effective_ctx: Option<u32>,
    pub streams: HashMap<u64, Stream>,
    /// The TCP connections in flight on this thread (`crate::connection`; keys shared with
    /// `streams`' numbering, so a context maps to one or the other).
    pub flows: HashMap<u64, crate::connection::Flow>,
    pub shared: Arc<HostShared>,
    /// The callout response being delivered (`HttpCallResponse*` maps and body).
    pub callout: Option<CalloutResult>,
    /// The gRPC answer being delivered.
    pub grpc: GrpcDelivery,
    /// The message `proxy_get_status` gives during a gRPC close callback.
    pub status_message: Option<String>,
    /// Whether the current root call is `on_configure` / `on_vm_start` (configuration buffers).
    pub in_config: bool,
    /// Inside `_initialize` / `_start` / `main`: cpp-host lets start-up code call only a few
    /// host functions (`hostcalls::allowed_at_start`); any other traps `restricted_callback`.
    pub starting: bool,
    /// `env.proxy_*` calls made so far by this VM set's guests (a plain counter: the call in
    /// `vm::instance` charges the difference to the stream the callback ran for).
    pub hostcalls: u64,
}

impl VmState {
    pub fn new(thread: Thread, shared: Arc<HostShared>) -> Self {
        VmState {
            thread,
            vms: Vec::new(),
            cur_vm: 0,
            cur_ctx: 0,
            effective_ctx: None,
            streams: HashMap::new(),
            flows: HashMap::new(),
            shared,
            callout: None,
            grpc: GrpcDelivery::default(),
            status_message: None,
            in_config: false,
            starting: false,
            hostcalls: 0,
        }
    }

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

    fn stream_key(&self) -> Option<u64> {
        self.vm().contexts.get(&self.ctx_id()).copied()
    }

    /// The stream of the context hostcalls act on (`None` in a root context).
    pub fn stream(&self) -> Option<&Stream> {
        let key = self.stream_key()?;
        self.streams.get(&key)
    }

    pub fn stream_mut(&mut self) -> Option<&mut Stream> {
        let key = self.stream_key()?;
        self.streams.get_mut(&key)
    }

    /// What `proxy_get_property` reads for the current context.
    pub fn property_context(&self) -> PropertyContext<'_> {
        let info = &self.vm().info;
        PropertyContext {
            plugin: Plugin {
                name: &info.name,
                root_id: &info.root_id,
                vm_id: &info.vm_id,
            },
            stream: self
                .stream()
                .map(|s| s as _)
                .or_else(|| self.flow().map(|f| f as _)),
        }
    }

    /// A log line of the current filter: to its stream's outcome and to the host's log.
    pub fn log(&mut self, level: LogLevel, message: String) {
        let line = LogLine {
            level,
            plugin: self.vm().info.name.clone(),
            message,
        };
        if let Some(s) = self.stream_mut() {
            s.log(line.clone());
        }
        lock(&self.shared.logs).push(line);
    }
}
