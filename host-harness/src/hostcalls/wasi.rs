//! The WASI preview1 functions Envoy's proxy-wasm host (cpp-host `src/exports.cc`) provides,
//! implemented directly instead of through wasmtime-wasi, for two reasons:
//! - faithfulness: Envoy offers exactly this set, under both `wasi_snapshot_preview1` and
//!   `wasi_unstable`, with these results (stdout/stderr become log lines, no files, no args,
//!   the environment is `vm_config.environment_variables`, `proc_exit` only logs). A module that needs more WASI than Envoy gives fails
//!   to load here as it does there. Even the arities follow cpp-host (its `path_link` takes 6
//!   parameters and `path_symlink` 4, so a module importing the standard 7/5-parameter versions
//!   fails to link, as in Envoy).
//! - build time: wasmtime-wasi's preview1 pulls the component model, async and tokio
//!   (+~135 s per clean build on two cores).
//!
//! Clocks read the host clock (virtual or real), so guest code sees the same time as
//! `proxy_get_current_time_nanoseconds`.

use wasmtime::{Caller, FuncType, Linker, Val, ValType};

use crate::outcome::LogLevel;
use crate::vm::{mem_read, mem_write, VmState};

/// The module names cpp-host registers the WASI functions under.
pub(crate) const WASI_MODULES: &[&str] = &["wasi_snapshot_preview1", "wasi_unstable"];

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOTDIR: i32 = 20;
const ENOENT: i32 = 44;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;
const RANDOM_GET_MAX: u32 = 64 * 1024;

type C<'a> = Caller<'a, VmState>;

/// A parameter's wasm type.
#[derive(Clone, Copy)]
enum P {
    I32,
    I64,
}
use P::{I32, I64};

/// What a WASI function does.
enum Answer {
    /// Returns this errno, whatever the arguments.
    Errno(i32),
    /// `ESUCCESS` for stdout/stderr (the first argument), `EBADF` for any other fd.
    StdFd,
    /// Writes zeros (`(argument index, bytes)`) to out-params, then returns the errno (`EFAULT`
    /// when an out-param is outside memory).
    Zeros(&'static [(usize, usize)], i32),
    /// Its own function of the caller and the `i32`/`i64` arguments.
    Call(fn(&mut C<'_>, &[Val]) -> i32),
    /// `proc_exit`: logs, returns nothing.
    Exit,
}
use Answer::{Call, Errno, StdFd, Zeros};

/// Every WASI function cpp-host registers (`FOR_ALL_WASI_FUNCTIONS`), each once: name,
/// parameters (cpp-host's arities) and what it does.
const WASI: &[(&str, &[P], Answer)] = &[
    ("fd_write", &[I32, I32, I32, I32], Call(fd_write)),
    ("fd_read", &[I32, I32, I32, I32], Errno(ENOSYS)),
    ("fd_seek", &[I32, I64, I32, I32], Call(fd_seek)),
    ("fd_close", &[I32], Call(fd_close)),
    ("fd_fdstat_get", &[I32, I32], Call(fd_fdstat_get)),
    ("fd_fdstat_set_flags", &[I32, I32], Errno(ENOSYS)),
    ("fd_fdstat_set_rights", &[I32, I64, I64], StdFd),
    ("environ_get", &[I32, I32], Call(environ_get)),
    ("environ_sizes_get", &[I32, I32], Call(environ_sizes_get)),
    ("args_get", &[I32, I32], Errno(ESUCCESS)),
    (
        "args_sizes_get",
        &[I32, I32],
        Zeros(&[(0, 4), (1, 4)], ESUCCESS),
    ),
    ("clock_time_get", &[I32, I64, I32], Call(clock_time_get)),
    ("clock_res_get", &[I32, I32], Call(clock_res_get)),
    ("fd_advise", &[I32, I64, I64, I32], Errno(ESUCCESS)),
    ("fd_allocate", &[I32, I64, I64], StdFd),
    ("fd_datasync", &[I32], StdFd),
    ("fd_filestat_set_size", &[I32, I64], StdFd),
    ("fd_filestat_set_times", &[I32, I64, I64, I32], StdFd),
    ("fd_pread", &[I32, I32, I32, I64, I32], Errno(ENOSYS)),
    ("fd_pwrite", &[I32, I32, I32, I64, I32], Call(fd_pwrite)),
    (
        "fd_readdir",
        &[I32, I32, I32, I64, I32],
        Zeros(&[(4, 4)], ENOTDIR),
    ),
    ("fd_renumber", &[I32, I32], Call(fd_renumber)),
    ("fd_sync", &[I32], StdFd),
    ("fd_tell", &[I32, I32], Call(fd_tell)),
    ("path_create_directory", &[I32, I32, I32], Errno(ENOTSUP)),
    (
        "path_filestat_set_times",
        &[I32, I32, I32, I32, I64, I64, I32],
        Errno(ENOTSUP),
    ),
    // cpp-host's arity (6), not WASI's 7: see the module comment.
    ("path_link", &[I32, I32, I32, I32, I32, I32], Errno(ENOTSUP)),
    (
        "path_readlink",
        &[I32, I32, I32, I32, I32, I32],
        Zeros(&[(5, 4)], ENOTSUP),
    ),
    ("path_remove_directory", &[I32, I32, I32], Errno(ENOTSUP)),
    (
        "path_rename",
        &[I32, I32, I32, I32, I32, I32],
        Errno(ENOTSUP),
    ),
    // cpp-host's arity (4), not WASI's 5.
    ("path_symlink", &[I32, I32, I32, I32], Errno(ENOTSUP)),
    ("path_unlink_file", &[I32, I32, I32], Errno(ENOTSUP)),
    ("sock_accept", &[I32, I32, I32], Zeros(&[(2, 8)], ENOTSUP)),
    (
        "sock_recv",
        &[I32, I32, I32, I32, I32, I32],
        Zeros(&[(4, 4), (5, 2)], ENOTSUP),
    ),
    (
        "sock_send",
        &[I32, I32, I32, I32, I32],
        Zeros(&[(4, 4)], ENOTSUP),
    ),
    ("sock_shutdown", &[I32, I32], Errno(ENOTSUP)),
    ("random_get", &[I32, I32], Call(random_get)),
    ("sched_yield", &[], Errno(ESUCCESS)),
    (
        "poll_oneoff",
        &[I32, I32, I32, I32],
        Zeros(&[(3, 4)], ESUCCESS),
    ),
    ("proc_exit", &[I32], Answer::Exit),
    (
        "path_open",
        &[I32, I32, I32, I32, I32, I64, I64, I32, I32],
        Errno(ENOENT),
    ),
    ("fd_prestat_get", &[I32, I32], Errno(EBADF)),
    ("fd_prestat_dir_name", &[I32, I32, I32], Errno(ENOSYS)),
    (
        "path_filestat_get",
        &[I32, I32, I32, I32, I32],
        Errno(ENOTSUP),
    ),
    ("fd_filestat_get", &[I32, I32], Errno(EBADF)),
];

/// The names of [`WASI`], for the loader's import check.
pub(crate) const WASI_FUNCTION_NAMES: [&str; WASI.len()] = {
    let mut names = [""; WASI.len()];
    let mut i = 0;
    while i < WASI.len() {
        names[i] = WASI[i].0;
        i += 1;
    }
    names
};

pub(crate) fn add_to_linker(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    for (name, params, answer) in WASI {
        let params = params.iter().map(|p| match p {
            I32 => ValType::I32,
            I64 => ValType::I64,
        });
        let results: &[ValType] = match answer {
            Answer::Exit => &[],
            _ => &[ValType::I32],
        };
        let ty = FuncType::new(l.engine(), params, results.iter().cloned());
        for module in WASI_MODULES {
            l.func_new(module, name, ty.clone(), move |mut c, args, results| {
                super::restricted(&c, name)?;
                let errno = match answer {
                    Errno(errno) => *errno,
                    StdFd => std_fd(arg(args, 0)),
                    Zeros(outs, errno) => zeros(&mut c, args, outs, *errno),
                    Call(f) => f(&mut c, args),
                    Answer::Exit => {
                        log(&mut c, LogLevel::Trace, "wasi_unstable proc_exit");
                        return Ok(());
                    }
                };
                if let Some(r) = results.first_mut() {
                    *r = Val::I32(errno);
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// Argument `i` as an `i32` (0 when absent or an `i64`: the table gives every function the
/// arguments its code reads).
fn arg(args: &[Val], i: usize) -> i32 {
    args.get(i).and_then(Val::i32).unwrap_or(0)
}

fn is_std(fd: i32) -> bool {
    fd == 1 || fd == 2
}

fn std_fd(fd: i32) -> i32 {
    if is_std(fd) {
        ESUCCESS
    } else {
        EBADF
    }
}

fn zeros(c: &mut C<'_>, args: &[Val], outs: &[(usize, usize)], errno: i32) -> i32 {
    for &(i, len) in outs {
        if mem_write(c, arg(args, i), &[0; 8][..len]).is_err() {
            return EFAULT;
        }
    }
    errno
}

fn put(c: &mut C<'_>, ptr: i32, bytes: &[u8]) -> bool {
    mem_write(c, ptr, bytes).is_ok()
}

fn log(c: &mut C<'_>, level: LogLevel, message: &str) {
    c.data_mut().log(level, message.to_string());
}

/// stdout → info, stderr → error log lines, trailing newline removed (cpp-host `writevImpl`).
fn writev(c: &mut C<'_>, fd: i32, iovs: i32, iovs_len: i32) -> Result<u32, i32> {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Err(EBADF),
    };
    let mut s = Vec::new();
    for i in 0..iovs_len.max(0) {
        let at = (iovs as u32).wrapping_add((i as u32).wrapping_mul(8)) as i32;
        let iov = mem_read(c, at, 8).map_err(|_| EFAULT)?;
        let buf = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        if len != 0 {
            s.extend(mem_read(c, buf as i32, len as i32).map_err(|_| EFAULT)?);
        }
    }
    let written = s.len() as u32;
    if !s.is_empty() {
        if s.last() == Some(&b'\n') {
            s.pop();
        }
        c.data_mut()
            .log(level, String::from_utf8_lossy(&s).into_owned());
    }
    Ok(written)
}

/// `writev` then the count written to `out`.
fn write_counted(c: &mut C<'_>, fd: i32, iovs: i32, iovs_len: i32, out: i32) -> i32 {
    match writev(c, fd, iovs, iovs_len) {
        Ok(written) if put(c, out, &written.to_le_bytes()) => ESUCCESS,
        Ok(_) => EFAULT,
        Err(errno) => errno,
    }
}

fn fd_write(c: &mut C<'_>, a: &[Val]) -> i32 {
    write_counted(c, arg(a, 0), arg(a, 1), arg(a, 2), arg(a, 3))
}

fn fd_pwrite(c: &mut C<'_>, a: &[Val]) -> i32 {
    if !is_std(arg(a, 0)) {
        return EBADF;
    }
    write_counted(c, arg(a, 0), arg(a, 1), arg(a, 2), arg(a, 4))
}

fn fd_seek(c: &mut C<'_>, _a: &[Val]) -> i32 {
    log(c, LogLevel::Trace, "wasi_unstable fd_seek");
    ESUCCESS
}

fn fd_close(c: &mut C<'_>, _a: &[Val]) -> i32 {
    log(c, LogLevel::Trace, "wasi_unstable fd_close");
    ESUCCESS
}

fn fd_fdstat_get(c: &mut C<'_>, a: &[Val]) -> i32 {
    if !is_std(arg(a, 0)) {
        return EBADF;
    }
    // 24 bytes: filetype/flags zeroed, fs_rights_base = FD_WRITE (64), inheriting 0.
    let mut stat = [0u8; 24];
    stat[8] = 64;
    let _ = put(c, arg(a, 1), &stat);
    ESUCCESS
}

fn fd_renumber(_c: &mut C<'_>, a: &[Val]) -> i32 {
    if is_std(arg(a, 0)) && is_std(arg(a, 1)) {
        ENOTSUP
    } else {
        EBADF
    }
}

fn fd_tell(c: &mut C<'_>, a: &[Val]) -> i32 {
    if !is_std(arg(a, 0)) {
        return EBADF;
    }
    if put(c, arg(a, 1), &0u64.to_le_bytes()) {
        ESUCCESS
    } else {
        EFAULT
    }
}

/// The VM's `vm_config.environment_variables` (cpp-host hands them to every WASI environ call).
fn environ_sizes_get(c: &mut C<'_>, a: &[Val]) -> i32 {
    let (count, bytes) = {
        let env = &c.data().vm().info.env;
        (
            env.len() as u32,
            env.iter().map(|e| e.len() as u32 + 1).sum::<u32>(),
        )
    };
    if put(c, arg(a, 0), &count.to_le_bytes()) && put(c, arg(a, 1), &bytes.to_le_bytes()) {
        ESUCCESS
    } else {
        EFAULT
    }
}

/// Writes each `KEY=VALUE\0` into the buffer at `a[1]` and its address into the array at `a[0]`.
fn environ_get(c: &mut C<'_>, a: &[Val]) -> i32 {
    let env = c.data().vm().info.env.clone();
    let (mut pointers, mut buf) = (arg(a, 0), arg(a, 1));
    for entry in &env {
        let mut bytes = entry.as_bytes().to_vec();
        bytes.push(0);
        if !put(c, pointers, &buf.to_le_bytes()) || !put(c, buf, &bytes) {
            return EFAULT;
        }
        pointers = pointers.wrapping_add(4);
        buf = buf.wrapping_add(bytes.len() as i32);
    }
    ESUCCESS
}

/// Clocks read the host clock: 0 = realtime, 1 = monotonic.
fn clock_time_get(c: &mut C<'_>, a: &[Val]) -> i32 {
    let clock = &c.data().shared.clock;
    let now = match arg(a, 0) {
        0 => clock.realtime_ns(),
        1 => clock.monotonic_ns(),
        _ => return ENOTSUP,
    };
    if put(c, arg(a, 2), &now.to_le_bytes()) {
        ESUCCESS
    } else {
        EFAULT
    }
}

fn clock_res_get(c: &mut C<'_>, a: &[Val]) -> i32 {
    if !matches!(arg(a, 0), 0 | 1) {
        return ENOTSUP;
    }
    if put(c, arg(a, 1), &1u64.to_le_bytes()) {
        ESUCCESS
    } else {
        EFAULT
    }
}

fn random_get(c: &mut C<'_>, a: &[Val]) -> i32 {
    let len = arg(a, 1) as u32;
    if len > RANDOM_GET_MAX {
        return EINVAL;
    }
    if len == 0 {
        return ESUCCESS;
    }
    let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    if put(c, arg(a, 0), &bytes) {
        ESUCCESS
    } else {
        EFAULT
    }
}
