//! `check`: will Envoy 1.40 load this module and accept its configuration?

use crate::error::HostError;
use crate::host::{FilterSpec, Host};
use crate::loader::{inspect_module, ModuleReport};
use crate::outcome::LogLine;
use crate::vm::compile;

/// What `check` found.
#[derive(Debug)]
pub struct CheckReport {
    /// Imports Envoy 1.40 would not satisfy, missing exports, detected ABI.
    pub module: ModuleReport,
    /// The error loading/configuring gave (`ConfigRejected` carries the module's logs); `None`
    /// when the module loaded and `proxy_on_configure` accepted the configuration.
    pub error: Option<HostError>,
    /// Every log line the module wrote while starting.
    pub logs: Vec<LogLine>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
            && self.module.unsupported_imports.is_empty()
            && self.module.missing_exports.is_empty()
    }
}

/// Inspects `spec`'s module like Envoy's loader, then starts it with its configuration.
pub fn check(spec: &FilterSpec) -> CheckReport {
    let module = match compile(spec.bytes()) {
        Ok(m) => m,
        Err(e) => {
            return CheckReport {
                module: ModuleReport::default(),
                error: Some(e),
                logs: Vec::new(),
            }
        }
    };
    let report = inspect_module(&module);
    match Host::builder().filter(spec.clone()).build() {
        Ok(host) => CheckReport {
            module: report,
            error: None,
            logs: host.logs(),
        },
        Err(e) => {
            let logs = match &e {
                HostError::ConfigRejected { logs, .. } | HostError::VmStartFailed { logs, .. } => {
                    logs.clone()
                }
                _ => Vec::new(),
            };
            CheckReport {
                module: report,
                error: Some(e),
                logs,
            }
        }
    }
}
