//! The raw ABI 0.2.1 imports (module `env`), declared from `meshward_abi`'s one table.
//!
//! Every import returns its status as a plain `u32`. The SDK declares the same imports with its
//! `Status` enum as the return type; both lower to wasm `i32`, so the linker merges them, and a
//! `u32` cannot hold an out-of-range enum value.
//!
//! Native builds (used for `cargo test` and clippy) have no host: the same functions exist as
//! stubs that return [`Status::UNIMPLEMENTED`], so adapters compile, lint and even run their
//! failure paths natively without unresolved symbols.

#[cfg(not(target_arch = "wasm32"))]
use crate::Status;

/// Declares every import of `meshward_abi`'s table: an `extern "C"` import on wasm32 (only those a
/// filter calls end up in its module), a stub elsewhere.
macro_rules! imports {
    ($(fn $name:ident ($($arg:ident : $ty:ident),* $(,)?) => $out:ident $(($($o:ident),*))? $since:ident;)*) => {
        // Not every filter calls every import (an unused one never reaches its module).
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "env")]
        #[allow(dead_code)]
        extern "C" {
            $( pub fn $name( $( $arg: meshward_abi::types::$ty ),* ) -> u32; )*
        }

        $(
            /// Native stub: there is no host.
            ///
            /// # Safety
            /// Always safe; `unsafe` only to match the wasm32 import.
            #[cfg(not(target_arch = "wasm32"))]
            #[allow(unused_variables, dead_code, clippy::too_many_arguments)]
            pub unsafe fn $name( $( $arg: meshward_abi::types::$ty ),* ) -> u32 {
                Status::UNIMPLEMENTED.0
            }
        )*
    };
}

meshward_abi::host_functions!(imports);

pub use meshward_abi::{BufferType, LogLevel, MapType, MetricType, StreamType};

/// Take ownership of a buffer the host wrote into guest memory.
///
/// # Safety
/// `data`/`size` must come from a host call that returned OK and allocated them through the
/// module's `proxy_on_memory_allocate` export (the SDK's: a boxed `[u8]` of exactly `size` bytes,
/// alignment 1), as ABI 0.2.1 prescribes. Each such buffer must be taken at most once.
pub(crate) unsafe fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        // The host passes a null pointer for an empty value (it allocates nothing for 0 bytes).
        Vec::new()
    } else {
        // SAFETY: see the function contract; capacity == length == the allocated size.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

/// Run a host call that hands back a buffer; `Ok(None)` for NOT_FOUND.
pub(crate) fn returned_buffer(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> Result<Option<Vec<u8>>, crate::Status> {
    let mut data = std::ptr::null_mut();
    let mut size = 0;
    match call(&mut data, &mut size) {
        // SAFETY: the host returned OK, so it allocated `data` for us (see `take`).
        0 => Ok(Some(unsafe { take(data, size) })),
        1 => Ok(None),
        other => Err(crate::Status(other)),
    }
}

/// A pointer to pass for an optional byte string: null when empty, like the SDK does (a host may
/// not accept a dangling pointer to nothing).
pub(crate) fn ptr_or_null(bytes: &[u8]) -> *const u8 {
    if bytes.is_empty() {
        std::ptr::null()
    } else {
        bytes.as_ptr()
    }
}
