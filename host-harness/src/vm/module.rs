//! Compiling and inspecting proxy-wasm modules.
//!
//! One wasmtime `Engine` serves the whole process so that a compiled `Module` can be shared:
//! compiling is the slow part (seconds for a large filter), so modules are cached by the
//! SHA-256 of their bytes. Every `Host` still has its own `Store`s, so hosts share no mutable
//! state and tests run in parallel.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::error::HostError;
use crate::runtime::lock;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        // `MESHWARD_PERFMAP=1`: write /tmp/perf-<pid>.map, so that `perf record` names the
        // modules' functions (from their name sections: build them unstripped) beside the host's.
        // Where the guest's own time goes, e.g. `MESHWARD_PERFMAP=1 perf record -g meshward bench
        // …` then `perf report` (BENCHMARKS.md, "Where the cost goes now").
        if std::env::var_os("MESHWARD_PERFMAP").is_some_and(|v| v == "1") {
            let mut config = wasmtime::Config::new();
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
            if let Ok(engine) = Engine::new(&config) {
                return engine;
            }
        }
        Engine::default()
    })
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
