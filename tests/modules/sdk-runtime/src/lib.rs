//! Conformance module `sdk-runtime`, written as a Rust SDK user would (proxy-wasm 0.2): host
//! behaviour around the stream, reported in request headers (seen upstream) so one scenario file
//! checks it in the harness and in Envoy alike.
//!
//! Request headers:
//! - `x-rt-queue: <vm_id>/<name>` → `x-rt-queue-found: yes|no` (`resolve_shared_queue`; the root
//!   context registered the queue `q` in `on_configure`);
//! - `x-rt-callout: <cluster>;<timeout ms>;<calls>` → dispatches `<calls>` GET callouts and
//!   pauses; `x-rt-token-<i>` is each token (or `error:<status>`), and when the last answer came
//!   `x-rt-callout-status-<i>` its `:status` (`none` for a failed call) and `x-rt-get-status-<i>`
//!   what `proxy_get_status` said in the callback (`<code>:<message>`);
//! - `x-rt-callout-headers: <cluster>;<n>` → a callout with `n` extra headers (`x-h-<i>: v`):
//!   `x-rt-dispatch: ok|error:<status>` (cpp-host refuses more than 1024 pairs or 1 MiB);
//!   `x-rt-callout-big: <cluster>;<n>` the same with one extra header of `n` KiB;
//! - `x-rt-continue: <stream type>` → `x-rt-continue-status: <status>` of
//!   `proxy_continue_stream(type)` (0 request, 1 response, 2 downstream, 3 upstream);
//! - the VM environment variable `MESHWARD_RT_START` makes `main` call a host function:
//!   `log` (allowed at start-up) or `time` (`proxy_get_current_time_nanoseconds`, which is not);
//! - `x-rt-main: 1` → `x-rt-main-calls: <n>`, how often the host called the module's exported
//!   `main(argc, argv)` (cpp-host: once, right after `_initialize`);
//! - `x-rt-env: <name>` → `x-rt-env-value: <value>` (`std::env::var`, i.e. WASI `environ_get`),
//!   or `<unset>`;
//! - `x-rt-vm-start: 1` → `x-rt-vm-start-plugin-config: <status>[:<size>]`, what
//!   `proxy_get_buffer_bytes(PluginConfiguration)` answered inside `on_vm_start`;
//! - `x-rt-vm: 1` → each plugin adds `x-rt-vm-<plugin>` (`<plugin>` the `plugin_name` property):
//!   `configures=<n>,vm_starts=<n>,roots=<n>,http=<n>,ctx=<id>,root=<id>,shared_configures=<n>,
//!   shared_vm_starts=<n>` — how many `on_configure`, `on_vm_start`, root contexts and HTTP
//!   contexts this wasm instance saw (module statics: one count per VM, whichever plugins share
//!   it), this HTTP context's id and its root context's, and the shared-data counters
//!   `rt.configures` / `rt.vm_starts` that every `on_configure` / `on_vm_start` bumps (shared data
//!   is per vm_id but process-wide: they count canary VMs and every thread's VM); and
//!   `x-rt-vm-log-<plugin>`: what the instance's host called, in order, space-separated —
//!   `r<id>` a root context created, `s<id>:<vm configuration size>` its `on_vm_start`,
//!   `c<id>:<plugin configuration size>` its `on_configure` (both also bump the counter metrics
//!   `rt.configures` / `rt.vm_starts`, process-wide as shared data);
//! - `x-rt-trap: 1` → every plugin panics in `on_http_request_headers` (a trap: the release
//!   profile aborts on panic); `x-rt-trap: <plugin name>` → only that plugin does.

#[cfg(target_arch = "wasm32")]
mod filter;
