//! Compiling and inspecting proxy-wasm modules.
//!
//! One wasmtime `Engine` serves the whole process so that a compiled `Module` can be shared:
//! compiling is the slow part (seconds for a large filter), so modules are cached by the
//! SHA-256 of their bytes. Every `Host` still has its own `Store`s, so hosts share no mutable
//! state and tests run in parallel.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, ExternType, Module};

use crate::error::HostError;
use crate::shared::lock;
use crate::wasi::WASI_FUNCTIONS;

/// The ABI versions Envoy's host (proxy-wasm-cpp-host) knows and we model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiVersion {
    V0_2_0,
    V0_2_1,
}

/// `proxy_*` functions cpp-host registers for every ABI (`FOR_ALL_HOST_FUNCTIONS`).
const HOST_FUNCTIONS: &[&str] = &[
    "proxy_log",
    "proxy_get_status",
    "proxy_set_property",
    "proxy_get_property",
    "proxy_send_local_response",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_size",
    "proxy_get_buffer_status",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_close",
    "proxy_grpc_cancel",
    "proxy_grpc_send",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_current_time_nanoseconds",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_call_foreign_function",
];

/// Legacy `env` helpers cpp-host registers for emscripten-built modules.
const ENV_HELPERS: &[&str] = &["pthread_equal", "emscripten_notify_memory_growth"];

/// Every import Envoy 1.40 satisfies for `abi`. Note: for ABI 0.2.x cpp-host does *not* register
/// `proxy_continue_request`, `proxy_continue_response`, `proxy_clear_route_cache` or
/// `proxy_get_configuration` (0.1.0 only), so a 0.2.1 module importing them fails to load there.
pub fn supported_imports(abi: AbiVersion) -> HashSet<(String, String)> {
    let mut set = HashSet::new();
    for f in HOST_FUNCTIONS.iter().chain(ENV_HELPERS) {
        set.insert(("env".to_string(), f.to_string()));
    }
    set.insert(("env".to_string(), "proxy_continue_stream".to_string()));
    set.insert(("env".to_string(), "proxy_close_stream".to_string()));
    if abi == AbiVersion::V0_2_1 {
        set.insert(("env".to_string(), "proxy_get_log_level".to_string()));
    }
    for m in ["wasi_snapshot_preview1", "wasi_unstable"] {
        for f in WASI_FUNCTIONS {
            set.insert((m.to_string(), f.to_string()));
        }
    }
    set
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// The process-wide engine (hosts create their stores on it).
pub(crate) fn shared_engine() -> &'static Engine {
    engine()
}

/// Compiles `bytes`, once per process per content.
pub(crate) fn compile(bytes: &[u8]) -> Result<Module, HostError> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Module>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key: [u8; 32] = Sha256::digest(bytes).into();
    if let Some(m) = lock(cache).get(&key) {
        return Ok(m.clone());
    }
    // Compile outside the lock: parallel tests compile different modules concurrently.
    let module = Module::new(engine(), bytes).map_err(|e| HostError::Compile(format!("{e:#}")))?;
    lock(cache).insert(key, module.clone());
    Ok(module)
}

/// What loading needs to know about a module.
#[derive(Debug, Clone)]
pub(crate) struct ModuleShape {
    pub abi: AbiVersion,
    /// `malloc` (wasm32-unknown-unknown) or `proxy_on_memory_allocate` (wasip1).
    pub allocator: &'static str,
}

/// Checks exports and imports the way Envoy does when it loads a module.
pub(crate) fn shape(module: &Module) -> Result<ModuleShape, HostError> {
    let report = inspect_module(module);
    if let Some((m, n)) = report.unsupported_imports.first() {
        return Err(HostError::UnknownImport {
            module: m.clone(),
            name: n.clone(),
        });
    }
    let abi = report.abi.ok_or(HostError::UnsupportedAbi)?;
    if let Some(missing) = report.missing_exports.first() {
        return Err(HostError::MissingExport(missing.clone()));
    }
    let allocator = if report.exports.iter().any(|e| e == "malloc") {
        "malloc"
    } else {
        "proxy_on_memory_allocate"
    };
    Ok(ModuleShape { abi, allocator })
}

/// What `check` reports about a module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleReport {
    pub abi: Option<AbiVersion>,
    /// Imports Envoy 1.40 would not satisfy, as (module, name).
    pub unsupported_imports: Vec<(String, String)>,
    /// Required exports that are missing.
    pub missing_exports: Vec<String>,
    pub exports: Vec<String>,
}

pub(crate) fn inspect_module(module: &Module) -> ModuleReport {
    let exports: Vec<String> = module.exports().map(|e| e.name().to_string()).collect();
    let has = |n: &str| exports.iter().any(|e| e == n);
    let abi = if has("proxy_abi_version_0_2_1") {
        Some(AbiVersion::V0_2_1)
    } else if has("proxy_abi_version_0_2_0") {
        Some(AbiVersion::V0_2_0)
    } else {
        None
    };
    let supported = supported_imports(abi.unwrap_or(AbiVersion::V0_2_1));
    let unsupported_imports = module
        .imports()
        .filter(|i| {
            !(matches!(i.ty(), ExternType::Func(_))
                && supported.contains(&(i.module().to_string(), i.name().to_string())))
        })
        .map(|i| (i.module().to_string(), i.name().to_string()))
        .collect();
    let mut missing_exports = Vec::new();
    if abi.is_none() {
        missing_exports.push("proxy_abi_version_0_2_1".to_string());
    }
    if !has("memory") {
        missing_exports.push("memory".to_string());
    }
    if !has("malloc") && !has("proxy_on_memory_allocate") {
        missing_exports.push("proxy_on_memory_allocate".to_string());
    }
    ModuleReport {
        abi,
        unsupported_imports,
        missing_exports,
        exports,
    }
}
