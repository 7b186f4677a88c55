//! Errors of building a host or loading a module.

use crate::outcome::LogLine;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read module {path}: {message}")]
    Io { path: String, message: String },
    #[error("cannot compile module: {0}")]
    Compile(String),
    /// Envoy refuses such a module: "Failed to load Wasm module due to a missing import".
    #[error("module imports {module}.{name}, which Envoy's proxy-wasm host does not provide")]
    UnknownImport { module: String, name: String },
    #[error("module does not export {0}")]
    MissingExport(String),
    #[error("module does not declare a supported proxy-wasm ABI (export proxy_abi_version_0_2_1 or proxy_abi_version_0_2_0)")]
    UnsupportedAbi,
    #[error("cannot instantiate module: {0}")]
    Instantiate(String),
    #[error("plugin {plugin}: the module trapped in {function}: {message}")]
    Trap {
        plugin: String,
        function: String,
        message: String,
    },
    #[error("plugin {plugin}: proxy_on_vm_start returned false")]
    VmStartFailed { plugin: String, logs: Vec<LogLine> },
    /// `proxy_on_configure` returned false (Envoy: "Unable to create Wasm plugin <name>").
    #[error("plugin {plugin}: configuration rejected (proxy_on_configure returned false){}", render_logs(.logs))]
    ConfigRejected { plugin: String, logs: Vec<LogLine> },
    /// A behaviour of Envoy the harness does not reproduce: it refuses rather than answer
    /// differently.
    #[error("harness: {0} is not modelled")]
    NotModelled(String),
    #[error("invalid host setup: {0}")]
    Setup(String),
}

fn render_logs(logs: &[LogLine]) -> String {
    logs.iter()
        .map(|l| format!("\n  [{:?}] {}", l.level, l.message))
        .collect()
}
