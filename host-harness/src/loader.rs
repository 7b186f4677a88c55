//! Envoy's load-time checks of a module: the imports its proxy-wasm host provides (and so the
//! ones a module must not need), the exports it requires, the ABI version it speaks.

use std::collections::HashSet;

use meshward_abi::{AbiVersion, HOST_FUNCTION_NAMES};
use wasmtime::{ExternType, Module};

use crate::error::HostError;
use crate::hostcalls::{ENV_HELPERS, WASI_FUNCTION_NAMES, WASI_MODULES};
use crate::vm::ModuleShape;

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
