//! One filter of a chain: its module and its plugin settings, as Envoy's `PluginConfig` holds them.

use std::path::Path;
use std::sync::Arc;

use crate::error::HostError;
use crate::outcome::LogLevel;
use crate::vm::FailStrategy;

/// One filter of the chain: a module plus its plugin settings.
#[derive(Clone)]
pub struct FilterSpec {
    pub(super) bytes: Arc<Vec<u8>>,
    pub(super) stem: String,
    pub(super) name: Option<String>,
    pub(super) root_id: Option<String>,
    pub(super) vm_id: String,
    pub(super) config: Vec<u8>,
    pub(super) vm_config: Vec<u8>,
    pub(super) env: Vec<(String, String)>,
    pub(super) fail: FailStrategy,
    pub(super) log_level: LogLevel,
}

impl FilterSpec {
    /// A module file; the plugin name defaults to the file stem.
    pub fn from_file(path: impl AsRef<Path>) -> Result<FilterSpec, HostError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| HostError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "module".to_string());
        Ok(FilterSpec::from_bytes(bytes).with_stem(stem))
    }

    /// Module bytes (binary wasm); the plugin name defaults to `module`.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> FilterSpec {
        FilterSpec {
            bytes: Arc::new(bytes.into()),
            stem: "module".to_string(),
            name: None,
            root_id: None,
            vm_id: String::new(),
            config: Vec::new(),
            vm_config: Vec::new(),
            env: Vec::new(),
            fail: FailStrategy::FailClosed,
            log_level: LogLevel::Info,
        }
    }

    fn with_stem(mut self, stem: String) -> Self {
        self.stem = stem;
        self
    }

    /// Plugin name (`plugin_name`) and, unless set separately, root id.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
    pub fn root_id(mut self, root_id: &str) -> Self {
        self.root_id = Some(root_id.to_string());
        self
    }
    /// VM id (`plugin_vm_id`; scopes shared data and queues). Envoy's default is empty.
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.vm_id = vm_id.to_string();
        self
    }
    /// Plugin configuration bytes.
    pub fn config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.config = config.into();
        self
    }
    pub fn config_json(self, json: &str) -> Self {
        self.config(json.as_bytes().to_vec())
    }
    /// VM configuration bytes (`proxy_on_vm_start`).
    pub fn vm_config(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.vm_config = config.into();
        self
    }
    /// Envoy's `fail_open` as a bool (`true` = `FailStrategy::FailOpen`).
    /// An environment variable of the VM (Envoy's `vm_config.environment_variables.key_values`):
    /// what the module's WASI `environ_get` hands it, in the order given.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn fail_open(self, fail_open: bool) -> Self {
        self.fail_strategy(if fail_open {
            FailStrategy::FailOpen
        } else {
            FailStrategy::FailClosed
        })
    }
    /// Envoy's `fail_open`.
    pub fn fail_strategy(mut self, fail: FailStrategy) -> Self {
        self.fail = fail;
        self
    }
    /// Envoy's wasm log level for this plugin (lines below it are dropped). Default `Info`.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }
    /// The module bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn plugin_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.stem.clone())
    }
}
