//! VM sets: a wasmtime store per Envoy thread holding one instance of each filter of the chain,
//! the compiled-module cache and Envoy's load-time checks, guest memory access, and calls into
//! the guest (root contexts included).

mod instance;
mod memory;
mod module;
mod root;
mod state;
mod thread;

pub(crate) use instance::{call, VmSet};
pub(crate) use memory::{copy_out, mem_read, mem_write};
pub(crate) use module::{compile, inspect_module, shape, shared_engine};
pub use module::{supported_imports, ModuleReport};
pub use state::FailStrategy;
pub(crate) use state::{Callbacks, FilterInfo, VmState};
pub use thread::Thread;
