//! The host functions a module imports, with Envoy's (cpp-host + Envoy `Context`) results.
//! Nothing here traps on guest input: bad pointers give `InvalidMemoryAccess`, what is not
//! modelled gives the status Envoy gives. Only a trap inside the guest's own allocator propagates
//! (it is the guest's trap).
//!
//! Each `env.proxy_*` function is declared once, in `meshward_abi::host_functions!` (name,
//! parameters, what it hands back); [`register`] turns that table into linker entries, each
//! answering an armed fault (see `runtime::Faults`) before it calls the implementation of the same
//! name in the file of its ABI area. WASI is table-driven the same way ([`wasi`]).

use wasmtime::{Caller, Linker};

use crate::runtime::FaultAction;
use crate::vm::{copy_out, mem_write, VmState};
use crate::Status;
use meshward_abi::AbiVersion;

mod buffers;
mod callouts;
mod context;
mod foreign;
mod grpc;
mod header_maps;
mod logging;
mod metrics;
mod network;
mod properties;
mod shared;
mod stream_control;
mod time;
mod wasi;

use buffers::*;
use callouts::*;
use context::*;
use grpc::*;
use header_maps::*;
use logging::*;
use metrics::*;
use properties::*;
use shared::*;
use stream_control::*;
use time::*;

pub(crate) use wasi::{WASI_FUNCTION_NAMES, WASI_MODULES};

/// Call the foreign function the harness registers as `name` directly, without a guest: the status
/// and the result bytes it would hand a module, or `None` when no such function is modelled (a
/// guest would get `NotFound`). For suites that compare a filter's two signature paths on the
/// exact bytes it would send the host.
pub fn foreign_function(name: &str, arguments: &[u8]) -> Option<(Status, Option<Vec<u8>>)> {
    foreign::lookup(name.as_bytes()).map(|function| function(arguments))
}

/// What cpp-host lets start-up code (`_initialize`, `_start`, `main`) call: logging, args,
/// environment, preopens, clocks and randomness. Anything else traps with `restricted_callback`.
fn allowed_at_start(name: &str) -> bool {
    matches!(
        name,
        "proxy_log"
            | "fd_write"
            | "args_sizes_get"
            | "args_get"
            | "environ_sizes_get"
            | "environ_get"
            | "fd_prestat_get"
            | "fd_prestat_dir_name"
            | "clock_time_get"
            | "random_get"
    )
}

/// The trap of a host call start-up code may not make (cpp-host's message).
fn restricted(c: &C<'_>, name: &str) -> wasmtime::Result<()> {
    if c.data().starting && !allowed_at_start(name) {
        return Err(wasmtime::Error::msg(format!(
            "restricted_callback: {name} may not be called from a module's start-up code"
        )));
    }
    Ok(())
}

/// A host call's caller: the VM set's store data, with the calling filter and context.
type C<'a> = Caller<'a, VmState>;
/// What a host function returns to the guest: a `proxy_status_t`, or a trap (only the guest's
/// own allocator traps).
type R = wasmtime::Result<i32>;

fn ok() -> R {
    Ok(Status::OK.0 as i32)
}

fn st(s: Status) -> R {
    Ok(s.0 as i32)
}

fn res(r: Result<(), Status>) -> R {
    match r {
        Ok(()) => ok(),
        Err(s) => st(s),
    }
}

/// Hands `bytes` to the guest as a buffer (pointer and size written to the out-params).
fn out(c: &mut C<'_>, bytes: &[u8], data_out: i32, size_out: i32) -> R {
    Ok(match copy_out(c, bytes, data_out, size_out)? {
        Ok(()) => Status::OK.0 as i32,
        Err(s) => s.0 as i32,
    })
}

fn put_u32(c: &mut C<'_>, ptr: i32, v: u32) -> Result<(), Status> {
    mem_write(c, ptr, &v.to_le_bytes())
}

fn put_u64(c: &mut C<'_>, ptr: i32, v: u64) -> Result<(), Status> {
    mem_write(c, ptr, &v.to_le_bytes())
}

/// Reads guest memory or returns the status from the host function.
macro_rules! read {
    ($c:expr, $p:expr, $l:expr) => {
        match crate::vm::mem_read(&$c, $p, $l) {
            Ok(v) => v,
            Err(s) => return st(s),
        }
    };
}
use read;

/// Tells the trace what the current call named (a key, a property path, a cluster).
fn note(c: &C<'_>, detail: &[u8]) {
    let data = c.data();
    data.shared.faults.note(data.thread, || {
        String::from_utf8_lossy(detail).replace('\0', ".")
    });
}

/// What a host call hands back on success, so that a fault can fake it (`meshward_abi`'s
/// `nothing`, `number(p)`, `buffer(p, s)`, `buffer_cas(p, s, cas)`).
enum Output {
    Nothing,
    Number(i32),
    Buffer(i32, i32),
    BufferCas(i32, i32, i32),
}

macro_rules! output {
    (nothing) => {
        Output::Nothing
    };
    (number($p:ident)) => {
        Output::Number($p)
    };
    (buffer($p:ident, $s:ident)) => {
        Output::Buffer($p, $s)
    };
    (buffer_cas($p:ident, $s:ident, $cas:ident)) => {
        Output::BufferCas($p, $s, $cas)
    };
}

/// The answer of an armed fault for `name`, if one is armed (the call is recorded when tracing):
/// its status, or `Ok` with the fault's bytes as the call's output.
fn faulted(c: &mut C<'_>, name: &'static str, output: Output) -> wasmtime::Result<Option<i32>> {
    let action = {
        let data = c.data();
        if !data.shared.faults.is_active() {
            return Ok(None);
        }
        let in_stream = data.stream().is_some();
        data.shared
            .faults
            .take(name, data.thread, &data.vm().info.name, in_stream)
    };
    let bytes = match action {
        None => return Ok(None),
        Some(FaultAction::Status(s)) => return Ok(Some(s.0 as i32)),
        Some(FaultAction::Bytes(bytes)) => bytes,
    };
    let answer = match output {
        Output::Nothing => ok(),
        Output::Number(p) => res(mem_write(c, p, &bytes)),
        Output::Buffer(p, s) => out(c, &bytes, p, s),
        Output::BufferCas(p, s, cas) => match copy_out(c, &bytes, p, s)? {
            // A fake value with a plausible cas (1: the first one cpp-host hands out).
            Ok(()) => res(put_u32(c, cas, 1)),
            Err(s) => st(s),
        },
    }?;
    Ok(Some(answer))
}

/// The wasm type of each `meshward_abi::types` name.
macro_rules! wasm_ty {
    (I64) => {
        i64
    };
    (U64) => {
        i64
    };
    ($other:ident) => {
        i32
    };
}

/// Registers the table of `meshward_abi::host_functions!` for `abi`.
macro_rules! register {
    ($(fn $name:ident ($($arg:ident : $ty:ident),* $(,)?) => $out:ident $(($($o:ident),*))? $since:ident;)*) => {
        fn register_abi(l: &mut Linker<VmState>, abi: AbiVersion) -> wasmtime::Result<()> {
            $(
                if AbiVersion::$since <= abi {
                    l.func_wrap(
                        "env",
                        stringify!($name),
                        |mut c: C<'_>, $($arg: wasm_ty!($ty)),*| -> R {
                            restricted(&c, stringify!($name))?;
                            c.data_mut().hostcalls += 1;
                            let output = output!($out $(($($o),*))?);
                            if let Some(answer) = faulted(&mut c, stringify!($name), output)? {
                                return Ok(answer);
                            }
                            $name(&mut c, $($arg),*)
                        },
                    )?;
                }
            )*
            Ok(())
        }
    };
}
meshward_abi::host_functions!(register);

/// Helpers outside the ABI that cpp-host registers in `env` for emscripten-built modules.
macro_rules! env_helpers {
    ($(fn $name:ident ($($arg:ident : $ty:ty),*) $(-> $ret:ty)? $body:block)*) => {
        /// The names of the `env` helpers cpp-host provides besides the ABI.
        pub(crate) const ENV_HELPERS: &[&str] = &[$(stringify!($name)),*];

        fn register_env_helpers(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
            $(
                fn $name($($arg: $ty),*) $(-> $ret)? $body
                l.func_wrap("env", stringify!($name), |c: C<'_>, $($arg: $ty),*| -> wasmtime::Result<_> {
                    restricted(&c, stringify!($name))?;
                    Ok($name($($arg),*))
                })?;
            )*
            Ok(())
        }
    };
}
env_helpers! {
    fn pthread_equal(a: i32, b: i32) -> i32 { (a == b) as i32 }
    fn emscripten_notify_memory_growth(_memory: i32) {}
}

/// Every import Envoy provides a module of `abi`: the proxy-wasm host functions, the emscripten
/// helpers and WASI.
pub(crate) fn add_to_linker(l: &mut Linker<VmState>, abi: AbiVersion) -> wasmtime::Result<()> {
    register_env_helpers(l)?;
    register_abi(l, abi)?;
    wasi::add_to_linker(l)
}
