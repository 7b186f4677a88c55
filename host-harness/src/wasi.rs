//! The WASI preview1 functions Envoy's proxy-wasm host (cpp-host `src/exports.cc`) provides,
//! implemented directly instead of through wasmtime-wasi, for two reasons:
//! - faithfulness: Envoy offers exactly this set, under both `wasi_snapshot_preview1` and
//!   `wasi_unstable`, with these results (stdout/stderr become log lines, no files, no args,
//!   no environment, `proc_exit` only logs). A module that needs more WASI than Envoy gives fails
//!   to load here as it does there. Even the arities follow cpp-host (its `path_link` takes 6
//!   parameters and `path_symlink` 4, so a module importing the standard 7/5-parameter versions
//!   fails to link, as in Envoy).
//! - build time: wasmtime-wasi's preview1 pulls the component model, async and tokio
//!   (+~135 s per clean build on two cores).
//!
//! Clocks read the host clock (virtual or real), so guest code sees the same time as
//! `proxy_get_current_time_nanoseconds`.

use wasmtime::{Caller, Linker};

use crate::types::LogLevel;
use crate::worker::{mem_read, mem_write, WorkerState};

/// Every WASI function cpp-host registers (`FOR_ALL_WASI_FUNCTIONS`).
pub(crate) const WASI_FUNCTIONS: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "clock_res_get",
    "fd_advise",
    "fd_allocate",
    "fd_datasync",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_pwrite",
    "fd_readdir",
    "fd_renumber",
    "fd_sync",
    "fd_tell",
    "path_create_directory",
    "path_filestat_set_times",
    "path_link",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
    "random_get",
    "sched_yield",
    "poll_oneoff",
    "proc_exit",
    "path_open",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "path_filestat_get",
    "fd_filestat_get",
];

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOTDIR: i32 = 20;
const ENOENT: i32 = 44;
const ENOSYS: i32 = 52;
const ENOTSUP: i32 = 58;
const RANDOM_GET_MAX: u32 = 64 * 1024;

type C<'a> = Caller<'a, WorkerState>;

fn is_std(fd: i32) -> bool {
    fd == 1 || fd == 2
}

fn put_u32(c: &mut C<'_>, ptr: i32, v: u32) -> bool {
    mem_write(c, ptr, &v.to_le_bytes()).is_ok()
}

fn put_u64(c: &mut C<'_>, ptr: i32, v: u64) -> bool {
    mem_write(c, ptr, &v.to_le_bytes()).is_ok()
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

fn clock_now(c: &C<'_>, id: i32) -> Option<u64> {
    let clock = &c.data().shared.clock;
    match id {
        0 => Some(clock.realtime_ns()),
        1 => Some(clock.monotonic_ns()),
        _ => None,
    }
}

macro_rules! both {
    ($linker:expr, $name:literal, $f:expr) => {
        $linker.func_wrap("wasi_snapshot_preview1", $name, $f)?;
        $linker.func_wrap("wasi_unstable", $name, $f)?;
    };
}

pub(crate) fn add_to_linker(l: &mut Linker<WorkerState>) -> wasmtime::Result<()> {
    both!(l, "fd_write", |mut c: C<'_>,
                          fd: i32,
                          iovs: i32,
                          n: i32,
                          out: i32|
     -> i32 {
        match writev(&mut c, fd, iovs, n) {
            Ok(w) => {
                if put_u32(&mut c, out, w) {
                    ESUCCESS
                } else {
                    EFAULT
                }
            }
            Err(e) => e,
        }
    });
    both!(l, "fd_pwrite", |mut c: C<'_>,
                           fd: i32,
                           iovs: i32,
                           n: i32,
                           _off: i64,
                           out: i32|
     -> i32 {
        if !is_std(fd) {
            return EBADF;
        }
        match writev(&mut c, fd, iovs, n) {
            Ok(w) => {
                if put_u32(&mut c, out, w) {
                    ESUCCESS
                } else {
                    EFAULT
                }
            }
            Err(e) => e,
        }
    });
    both!(l, "fd_read", |_c: C<'_>,
                         _fd: i32,
                         _i: i32,
                         _n: i32,
                         _o: i32|
     -> i32 { ENOSYS });
    both!(l, "fd_seek", |mut c: C<'_>,
                         _fd: i32,
                         _off: i64,
                         _w: i32,
                         _o: i32|
     -> i32 {
        c.data_mut()
            .log(LogLevel::Trace, "wasi_unstable fd_seek".to_string());
        ESUCCESS
    });
    both!(l, "fd_close", |mut c: C<'_>, _fd: i32| -> i32 {
        c.data_mut()
            .log(LogLevel::Trace, "wasi_unstable fd_close".to_string());
        ESUCCESS
    });
    both!(l, "fd_fdstat_get", |mut c: C<'_>,
                               fd: i32,
                               out: i32|
     -> i32 {
        if !is_std(fd) {
            return EBADF;
        }
        // 24 bytes: filetype/flags zeroed, fs_rights_base = FD_WRITE (64), inheriting 0.
        let mut stat = [0u8; 24];
        stat[8] = 64;
        let _ = mem_write(&mut c, out, &stat);
        ESUCCESS
    });
    both!(l, "fd_fdstat_set_flags", |_c: C<'_>,
                                     _fd: i32,
                                     _f: i32|
     -> i32 { ENOSYS });
    both!(l, "fd_fdstat_set_rights", |_c: C<'_>,
                                      fd: i32,
                                      _b: i64,
                                      _i: i64|
     -> i32 {
        if is_std(fd) {
            ESUCCESS
        } else {
            EBADF
        }
    });
    both!(l, "environ_get", |_c: C<'_>, _a: i32, _b: i32| -> i32 {
        ESUCCESS
    });
    both!(l, "environ_sizes_get", |mut c: C<'_>,
                                   count: i32,
                                   size: i32|
     -> i32 {
        if put_u32(&mut c, count, 0) && put_u32(&mut c, size, 0) {
            ESUCCESS
        } else {
            EFAULT
        }
    });
    both!(l, "args_get", |_c: C<'_>, _a: i32, _b: i32| -> i32 {
        ESUCCESS
    });
    both!(l, "args_sizes_get", |mut c: C<'_>,
                                argc: i32,
                                size: i32|
     -> i32 {
        if put_u32(&mut c, argc, 0) && put_u32(&mut c, size, 0) {
            ESUCCESS
        } else {
            EFAULT
        }
    });
    both!(l, "clock_time_get", |mut c: C<'_>,
                                id: i32,
                                _precision: i64,
                                out: i32|
     -> i32 {
        match clock_now(&c, id) {
            Some(t) => {
                if put_u64(&mut c, out, t) {
                    ESUCCESS
                } else {
                    EFAULT
                }
            }
            None => ENOTSUP,
        }
    });
    both!(l, "clock_res_get", |mut c: C<'_>,
                               id: i32,
                               out: i32|
     -> i32 {
        if id != 0 && id != 1 {
            return ENOTSUP;
        }
        if put_u64(&mut c, out, 1) {
            ESUCCESS
        } else {
            EFAULT
        }
    });
    both!(l, "fd_advise", |_c: C<'_>,
                           _fd: i32,
                           _o: i64,
                           _l: i64,
                           _a: i32|
     -> i32 { ESUCCESS });
    both!(l, "fd_allocate", |_c: C<'_>,
                             fd: i32,
                             _o: i64,
                             _l: i64|
     -> i32 {
        if is_std(fd) {
            ESUCCESS
        } else {
            EBADF
        }
    });
    both!(l, "fd_datasync", |_c: C<'_>, fd: i32| -> i32 {
        if is_std(fd) {
            ESUCCESS
        } else {
            EBADF
        }
    });
    both!(l, "fd_sync", |_c: C<'_>, fd: i32| -> i32 {
        if is_std(fd) {
            ESUCCESS
        } else {
            EBADF
        }
    });
    both!(l, "fd_filestat_set_size", |_c: C<'_>,
                                      fd: i32,
                                      _s: i64|
     -> i32 {
        if is_std(fd) {
            ESUCCESS
        } else {
            EBADF
        }
    });
    both!(l, "fd_filestat_set_times", |_c: C<'_>,
                                       fd: i32,
                                       _a: i64,
                                       _m: i64,
                                       _f: i32|
     -> i32 {
        if is_std(fd) {
            ESUCCESS
        } else {
            EBADF
        }
    });
    both!(l, "fd_pread", |_c: C<'_>,
                          _fd: i32,
                          _i: i32,
                          _n: i32,
                          _o: i64,
                          _r: i32|
     -> i32 { ENOSYS });
    both!(l, "fd_readdir", |mut c: C<'_>,
                            _fd: i32,
                            _b: i32,
                            _l: i32,
                            _k: i64,
                            out: i32|
     -> i32 {
        if put_u32(&mut c, out, 0) {
            ENOTDIR
        } else {
            EFAULT
        }
    });
    both!(l, "fd_renumber", |_c: C<'_>, fd: i32, to: i32| -> i32 {
        if is_std(fd) && is_std(to) {
            ENOTSUP
        } else {
            EBADF
        }
    });
    both!(l, "fd_tell", |mut c: C<'_>, fd: i32, out: i32| -> i32 {
        if !is_std(fd) {
            return EBADF;
        }
        if put_u64(&mut c, out, 0) {
            ESUCCESS
        } else {
            EFAULT
        }
    });
    both!(l, "path_create_directory", |_c: C<'_>,
                                       _fd: i32,
                                       _p: i32,
                                       _l: i32|
     -> i32 { ENOTSUP });
    both!(l, "path_filestat_set_times", |_c: C<'_>,
                                         _fd: i32,
                                         _f: i32,
                                         _p: i32,
                                         _l: i32,
                                         _a: i64,
                                         _m: i64,
                                         _s: i32|
     -> i32 { ENOTSUP });
    // cpp-host's arity (6), not WASI's 7: see the module comment.
    both!(l, "path_link", |_c: C<'_>,
                           _a: i32,
                           _b: i32,
                           _p: i32,
                           _l: i32,
                           _n: i32,
                           _q: i32|
     -> i32 { ENOTSUP });
    both!(l, "path_readlink", |mut c: C<'_>,
                               _fd: i32,
                               _p: i32,
                               _l: i32,
                               _b: i32,
                               _bl: i32,
                               out: i32|
     -> i32 {
        if put_u32(&mut c, out, 0) {
            ENOTSUP
        } else {
            EFAULT
        }
    });
    both!(l, "path_remove_directory", |_c: C<'_>,
                                       _fd: i32,
                                       _p: i32,
                                       _l: i32|
     -> i32 { ENOTSUP });
    both!(l, "path_rename", |_c: C<'_>,
                             _fd: i32,
                             _p: i32,
                             _l: i32,
                             _n: i32,
                             _q: i32,
                             _m: i32|
     -> i32 { ENOTSUP });
    // cpp-host's arity (4), not WASI's 5.
    both!(l, "path_symlink", |_c: C<'_>,
                              _p: i32,
                              _l: i32,
                              _fd: i32,
                              _q: i32|
     -> i32 { ENOTSUP });
    both!(l, "path_unlink_file", |_c: C<'_>,
                                  _fd: i32,
                                  _p: i32,
                                  _l: i32|
     -> i32 { ENOTSUP });
    both!(l, "path_open", |_c: C<'_>,
                           _fd: i32,
                           _d: i32,
                           _p: i32,
                           _l: i32,
                           _o: i32,
                           _rb: i64,
                           _ri: i64,
                           _f: i32,
                           _out: i32|
     -> i32 { ENOENT });
    both!(l, "path_filestat_get", |_c: C<'_>,
                                   _fd: i32,
                                   _f: i32,
                                   _p: i32,
                                   _l: i32,
                                   _b: i32|
     -> i32 { ENOTSUP });
    both!(l, "fd_prestat_get", |_c: C<'_>, _fd: i32, _b: i32| -> i32 {
        EBADF
    });
    both!(l, "fd_prestat_dir_name", |_c: C<'_>,
                                     _fd: i32,
                                     _p: i32,
                                     _l: i32|
     -> i32 { ENOSYS });
    both!(l, "fd_filestat_get", |_c: C<'_>,
                                 _fd: i32,
                                 _b: i32|
     -> i32 { EBADF });
    both!(l, "sock_accept", |mut c: C<'_>,
                             _fd: i32,
                             _f: i32,
                             out: i32|
     -> i32 {
        if put_u64(&mut c, out, 0) {
            ENOTSUP
        } else {
            EFAULT
        }
    });
    both!(l, "sock_recv", |mut c: C<'_>,
                           _fd: i32,
                           _d: i32,
                           _l: i32,
                           _f: i32,
                           out0: i32,
                           out1: i32|
     -> i32 {
        if put_u32(&mut c, out0, 0) && mem_write(&mut c, out1, &[0, 0]).is_ok() {
            ENOTSUP
        } else {
            EFAULT
        }
    });
    both!(l, "sock_send", |mut c: C<'_>,
                           _fd: i32,
                           _d: i32,
                           _l: i32,
                           _f: i32,
                           out: i32|
     -> i32 {
        if put_u32(&mut c, out, 0) {
            ENOTSUP
        } else {
            EFAULT
        }
    });
    both!(l, "sock_shutdown", |_c: C<'_>, _fd: i32, _h: i32| -> i32 {
        ENOTSUP
    });
    both!(l, "random_get", |mut c: C<'_>, buf: i32, len: i32| -> i32 {
        let len = len as u32;
        if len > RANDOM_GET_MAX {
            return EINVAL;
        }
        if len == 0 {
            return ESUCCESS;
        }
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        if mem_write(&mut c, buf, &bytes).is_ok() {
            ESUCCESS
        } else {
            EFAULT
        }
    });
    both!(l, "sched_yield", |_c: C<'_>| -> i32 { ESUCCESS });
    both!(l, "poll_oneoff", |mut c: C<'_>,
                             _i: i32,
                             _o: i32,
                             _n: i32,
                             out: i32|
     -> i32 {
        if put_u32(&mut c, out, 0) {
            ESUCCESS
        } else {
            EFAULT
        }
    });
    both!(l, "proc_exit", |mut c: C<'_>, _code: i32| {
        c.data_mut()
            .log(LogLevel::Trace, "wasi_unstable proc_exit".to_string());
    });
    Ok(())
}
