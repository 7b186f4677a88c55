//! Compiling and inspecting proxy-wasm modules.
//!
//! One wasmtime `Engine` serves the whole process so that a compiled `Module` can be shared:
//! compiling is the slow part (seconds for a large filter), so modules are cached by the
//! SHA-256 of their bytes. Every `Host` still has its own `Store`s, so hosts share no mutable
//! state and tests run in parallel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

use crate::error::HostError;
use crate::runtime::lock;

/// Whether the process counts the wasm instructions each filter executes (see
/// [`meter_guest_instructions`]).
static FUEL: AtomicBool = AtomicBool::new(false);

/// Count the wasm instructions every filter callback executes (wasmtime's fuel: about one unit
/// per wasm operator), into `Outcome::filter_fuel`: a measure of a filter's own work that, unlike
/// its time, does not move with the machine's load (`meshward bench --fuel`). Metered code runs
/// slower, so times measured alongside are not the unmetered ones. Must be called before the
/// first module is compiled; `false` if it came too late.
pub fn meter_guest_instructions() -> bool {
    FUEL.store(true, Ordering::SeqCst);
    ENGINE.get().is_none()
}

/// Whether guest instructions are metered (the engine was made with fuel).
pub(crate) fn metering() -> bool {
    METERED.get().copied().unwrap_or(false)
}

static ENGINE: OnceLock<Engine> = OnceLock::new();
/// Whether [`ENGINE`] was made with fuel.
static METERED: OnceLock<bool> = OnceLock::new();

fn engine() -> &'static Engine {
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        let fuel = FUEL.load(Ordering::SeqCst);
        config.consume_fuel(fuel);
        // `MESHWARD_PERFMAP=1`: write /tmp/perf-<pid>.map, so that `perf record` names the
        // modules' functions (from their name sections: build them unstripped) beside the host's.
        // Where the guest's own time goes, e.g. `MESHWARD_PERFMAP=1 perf record -g meshward bench
        // …` then `perf report` (BENCHMARKS.md, "Where the cost goes now").
        if std::env::var_os("MESHWARD_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let (engine, metered) = match Engine::new(&config) {
            Ok(engine) => (engine, fuel),
            Err(_) => (Engine::default(), false),
        };
        // Set once, here, before any store exists.
        let _ = METERED.set(metered);
        engine
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
