//! VM sets: a wasmtime store per Envoy thread holding one instance of each filter of the chain,
//! what all of them share, the compiled-module cache, guest memory access, and calls into the
//! guest.

mod instance;
mod memory;
mod module;
mod shared;
mod state;

pub(crate) use instance::{call, VmSet};
pub(crate) use memory::{copy_out, mem_read, mem_write};
pub use module::meter_guest_instructions;
pub(crate) use module::{compile, shared_engine};
pub(crate) use shared::HostShared;
pub use state::FailStrategy;
pub(crate) use state::{Callbacks, FilterInfo, GrpcDelivery, GrpcOp, ModuleShape, VmState};
