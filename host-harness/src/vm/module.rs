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

pub use meshward_abi::AbiVersion;
use meshward_abi::HOST_FUNCTION_NAMES;

use super::state::ModuleShape;
use crate::error::HostError;
use crate::hostcalls::{ENV_HELPERS, WASI_FUNCTION_NAMES, WASI_MODULES};
use crate::runtime::lock;

/// Every import Envoy 1.40 satisfies for `abi` (see `meshward_abi::host_functions!` for what
/// 0.2.x does not have).
pub fn supported_imports(abi: AbiVersion) -> HashSet<(String, String)> {
    let env = HOST_FUNCTION_NAMES
        .iter()
        .filter(|(_, since)| *since <= abi)
        .map(|(name, _)| *name)
        .chain(ENV_HELPERS.iter().copied())
        .map(|name| ("env".to_string(), name.to_string()));
    let wasi = WASI_MODULES.iter().flat_map(|module| {
        WASI_FUNCTION_NAMES
            .iter()
            .map(move |name| (module.to_string(), name.to_string()))
    });
    env.chain(wasi).collect()
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
