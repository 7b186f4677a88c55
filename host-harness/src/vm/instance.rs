//! Instantiating a VM set (every filter of the chain, then each root context's create /
//! vm_start / configure, as Envoy does on each thread) and calling into a guest.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Instance, Linker, Store, TypedFunc, WasmParams, WasmResults};

use super::module::{metering, shared_engine};
use super::shared::HostShared;
use super::state::{Callbacks, FailStrategy, FilterInfo, GrpcCallbacks, Vm, VmCore, VmState};
use crate::error::HostError;
use crate::outcome::{LogLevel, LogLine};
use crate::runtime::lock;
use crate::runtime::Thread;

/// One Envoy thread's VM set: a store with one instance per filter of the chain.
pub(crate) struct VmSet {
    pub store: Store<VmState>,
    /// Plugin names in chain order (verdicts name the filter that answered).
    pub names: Vec<String>,
    /// For FAIL_RELOAD: a failed VM is replaced by a fresh instance.
    linker: Linker<VmState>,
}

fn typed<P: WasmParams, R: WasmResults>(
    store: &mut Store<VmState>,
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

/// Instantiates `info`'s module as a fresh VM and runs its start-up (`_initialize` or `_start`,
/// then `main`), as the plugin at `slot` (a reload) or a new one at the end.
fn load(
    store: &mut Store<VmState>,
    info: &Arc<FilterInfo>,
    linker: &Linker<VmState>,
    slot: Option<usize>,
) -> Result<(), HostError> {
    let inst = linker
        .instantiate(&mut *store, &info.module)
        .map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
    let memory = inst
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| HostError::MissingExport("memory".to_string()))?;
    let alloc = typed::<i32, i32>(&mut *store, &inst, info.shape.allocator)?
        .ok_or_else(|| HostError::MissingExport(info.shape.allocator.to_string()))?;
    let cb = Callbacks {
        context_create: typed(&mut *store, &inst, "proxy_on_context_create")?,
        vm_start: typed(&mut *store, &inst, "proxy_on_vm_start")?,
        configure: typed(&mut *store, &inst, "proxy_on_configure")?,
        tick: typed(&mut *store, &inst, "proxy_on_tick")?,
        queue_ready: typed(&mut *store, &inst, "proxy_on_queue_ready")?,
        request_headers: typed(&mut *store, &inst, "proxy_on_request_headers")?,
        request_body: typed(&mut *store, &inst, "proxy_on_request_body")?,
        request_trailers: typed(&mut *store, &inst, "proxy_on_request_trailers")?,
        response_headers: typed(&mut *store, &inst, "proxy_on_response_headers")?,
        response_body: typed(&mut *store, &inst, "proxy_on_response_body")?,
        http_call_response: typed(&mut *store, &inst, "proxy_on_http_call_response")?,
        grpc: GrpcCallbacks {
            initial_metadata: typed(&mut *store, &inst, "proxy_on_grpc_receive_initial_metadata")?,
            receive: typed(&mut *store, &inst, "proxy_on_grpc_receive")?,
            trailing_metadata: typed(
                &mut *store,
                &inst,
                "proxy_on_grpc_receive_trailing_metadata",
            )?,
            close: typed(&mut *store, &inst, "proxy_on_grpc_close")?,
        },
        log: typed(&mut *store, &inst, "proxy_on_log")?,
        done: typed(&mut *store, &inst, "proxy_on_done")?,
        delete: typed(&mut *store, &inst, "proxy_on_delete")?,
        network: crate::connection::NetworkCallbacks::lookup(&mut *store, &inst)?,
    };
    let init: Option<TypedFunc<(), ()>> = match typed(&mut *store, &inst, "_initialize")? {
        Some(f) => Some(f),
        None => typed(&mut *store, &inst, "_start")?,
    };
    // cpp-host's `startVm`: a reactor (`_initialize`) that also exports `main` gets
    // `main(0, 0)` right after, for early set-up (C and TinyGo modules); a command
    // (`_start`) calls its own `main`.
    let main: Option<TypedFunc<(i32, i32), i32>> =
        if typed::<(), ()>(&mut *store, &inst, "_initialize")?.is_some() {
            typed(&mut *store, &inst, "main")?
        } else {
            None
        };
    let loaded_at = store.data().shared.clock.monotonic_ns();
    let vm = Vm::new(
        info.clone(),
        memory,
        alloc,
        cb,
        Arc::new(VmCore::new(loaded_at)),
    );
    let index = match slot {
        Some(i) => {
            let generation = store.data().vms[i].tick_generation;
            store.data_mut().vms[i] = vm;
            // Ticks scheduled for the failed VM must not fire into the fresh one.
            store.data_mut().vms[i].tick_generation = generation + 1;
            i
        }
        None => {
            store.data_mut().vms.push(vm);
            store.data().vms.len() - 1
        }
    };
    // cpp-host's `startVm` restricts the host calls start-up code may make.
    store.data_mut().starting = true;
    if let Some(init) = init {
        let name = if typed::<(), ()>(&mut *store, &inst, "_initialize")?.is_some() {
            "_initialize"
        } else {
            "_start"
        };
        call(store, index, 0, None, name, |s| init.call(s, ())).map_err(|message| {
            HostError::Trap {
                plugin: info.name.clone(),
                function: name.to_string(),
                message,
            }
        })?;
    }
    if let Some(main) = main {
        call(store, index, 0, None, "main", |s| main.call(s, (0, 0))).map_err(|message| {
            HostError::Trap {
                plugin: info.name.clone(),
                function: "main".to_string(),
                message,
            }
        })?;
    }
    store.data_mut().starting = false;
    Ok(())
}

impl VmSet {
    /// Instantiates every filter; runs `_initialize` (or `_start`), then the root context's
    /// create / vm_start / configure, as Envoy does on each thread.
    pub fn new(
        thread: Thread,
        filters: &[Arc<FilterInfo>],
        linker: &Linker<VmState>,
        shared: Arc<HostShared>,
    ) -> Result<VmSet, HostError> {
        let mut store = Store::new(shared_engine(), VmState::new(thread, shared));
        if metering() {
            // Metered for counting, never to stop a filter: a store that runs dry traps.
            store
                .set_fuel(u64::MAX)
                .map_err(|e| HostError::Instantiate(format!("cannot meter instructions: {e:#}")))?;
        }
        for info in filters {
            // A plugin whose VM key an earlier one has joins that VM: a second root context in
            // the same instance (its statics, memory, context ids and callout tokens), started
            // and configured on its own.
            let sibling = store
                .data()
                .vms
                .iter()
                .find(|v| v.info.vm_key == info.vm_key)
                .map(|v| (v.memory, v.alloc.clone(), v.cb.clone(), v.core.clone()));
            if let Some((memory, alloc, cb, core)) = sibling {
                store
                    .data_mut()
                    .vms
                    .push(Vm::new(info.clone(), memory, alloc, cb, core));
                continue;
            }
            load(&mut store, info, linker, None)?;
        }
        let names = filters.iter().map(|f| f.name.clone()).collect();
        let mut set = VmSet {
            store,
            names,
            linker: linker.clone(),
        };
        for i in 0..filters.len() {
            set.start_root(i)?;
        }
        Ok(set)
    }

    /// FAIL_RELOAD for filter `i` whose VM failed, as Envoy does when it creates the filter for a
    /// request: join the fresh VM another plugin of the same VM key already reloaded into, else
    /// load a fresh one if the backoff has passed since the failed VM was loaded. Whether the
    /// filter now has a live VM (its root context started in it).
    pub fn reload(&mut self, i: usize) -> bool {
        let (info, core) = {
            let vm = &self.store.data().vms[i];
            (vm.info.clone(), vm.core.clone())
        };
        let FailStrategy::Reload { backoff } = info.fail else {
            return false;
        };
        let fresh =
            self.store.data().vms.iter().find(|v| {
                v.info.vm_key == info.vm_key && !v.failed() && !Arc::ptr_eq(&v.core, &core)
            });
        if let Some(v) = fresh {
            let (memory, alloc, cb, fresh_core) =
                (v.memory, v.alloc.clone(), v.cb.clone(), v.core.clone());
            let generation = self.store.data().vms[i].tick_generation;
            let mut vm = Vm::new(info.clone(), memory, alloc, cb, fresh_core);
            vm.tick_generation = generation + 1;
            self.store.data_mut().vms[i] = vm;
        } else {
            let now = self.store.data().shared.clock.monotonic_ns();
            if now.saturating_sub(core.loaded_at) < backoff.as_nanos() as u64 {
                return false;
            }
            let linker = self.linker.clone();
            if load(&mut self.store, &info, &linker, Some(i)).is_err() {
                self.store.data().vms[i].fail();
                return false;
            }
        }
        if self.start_root(i).is_err() {
            self.store.data().vms[i].fail();
            return false;
        }
        true
    }

    fn start_root(&mut self, i: usize) -> Result<(), HostError> {
        let store = &mut self.store;
        let info = store.data().vms[i].info.clone();
        let root = {
            let vm = &mut store.data_mut().vms[i];
            let id = vm.core.next_context();
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
        let plugin_logs = |store: &Store<VmState>| -> Vec<LogLine> {
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
                return Err(HostError::VmStartFailed {
                    plugin: info.name.clone(),
                    logs: plugin_logs(store),
                });
            }
        }
        // The plugin configuration is readable from here on only: Envoy hands it over with
        // `on_configure`, and inside `on_vm_start` the buffer is NotFound.
        store.data_mut().in_config = true;
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
    store: &mut Store<VmState>,
    vm: usize,
    ctx: u32,
    stream: Option<u64>,
    name: &str,
    f: impl FnOnce(&mut Store<VmState>) -> wasmtime::Result<R>,
) -> Result<R, String> {
    {
        let st = store.data_mut();
        st.cur_vm = vm;
        st.cur_ctx = ctx;
        st.effective_ctx = None;
    }
    let calls_before = store.data().hostcalls;
    // `Err` when instructions are not metered (`meter_guest_instructions`): counted as 0.
    let fuel_before = store.get_fuel().ok();
    let started = Instant::now();
    let result = f(store);
    let elapsed = started.elapsed().as_nanos() as u64;
    let fuel = fuel_before
        .zip(store.get_fuel().ok())
        .map_or(0, |(before, after)| before.saturating_sub(after));
    let st = store.data_mut();
    st.effective_ctx = None;
    let calls = st.hostcalls.wrapping_sub(calls_before);
    if let Some(key) = stream {
        if let Some(s) = st.streams.get_mut(&key) {
            s.add_filter_nanos(vm, elapsed);
            s.add_filter_hostcalls(vm, calls);
            s.add_filter_fuel(vm, fuel);
        }
    }
    match result {
        Ok(r) => Ok(r),
        Err(e) => {
            let message = match e.downcast_ref::<wasmtime::Trap>() {
                Some(t) => format!("{t}"),
                None => format!("{e:#}"),
            };
            st.vms[vm].fail();
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
