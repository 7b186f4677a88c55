//! The `env.proxy_*` host functions of ABI 0.2.x with Envoy's (cpp-host + Envoy `Context`)
//! results. Nothing here traps on guest input: bad pointers give `InvalidMemoryAccess`, what is
//! not modelled gives the status Envoy gives. Only a trap inside the guest's own allocator
//! propagates (it is the guest's trap).

use std::time::Duration;

use wasmtime::{Caller, Linker};

use crate::abi::{buffer, map, stream, Status, LOG_LEVEL_MAX};
use crate::callout::CalloutRequest;
use crate::clock::Event;
use crate::headers::{deserialize_pairs, HeaderMap};
use crate::module::AbiVersion;
use crate::properties::{self, PropertyContext};
use crate::shared::{FaultAction, QueueOwner};
use crate::types::LogLevel;
use crate::worker::{copy_out, mem_read, mem_write, schedule, LocalReply, Stage, WorkerState};

type C<'a> = Caller<'a, WorkerState>;
type R = wasmtime::Result<i32>;

fn ok() -> R {
    Ok(Status::Ok.code())
}

fn st(s: Status) -> R {
    Ok(s.code())
}

fn res(r: Result<(), Status>) -> R {
    Ok(match r {
        Ok(()) => Status::Ok.code(),
        Err(s) => s.code(),
    })
}

/// An injected fault for `name`, if armed (and the call recorded, when tracing).
fn fault(c: &C<'_>, name: &'static str) -> Option<FaultAction> {
    let data = c.data();
    data.shared.faults.take(
        name,
        data.slot,
        &data.vm().info.name,
        data.stream().is_some(),
    )
}

/// Tells the trace what the current call named (a key, a property path, a cluster).
fn note(c: &C<'_>, detail: &[u8]) {
    let data = c.data();
    data.shared.faults.note(data.slot, || {
        String::from_utf8_lossy(detail).replace('\0', ".")
    });
}

/// An injected `Ok` with `bytes` for a call that hands a buffer back.
fn fake_out(c: &mut C<'_>, bytes: &[u8], pp: i32, sp: i32) -> R {
    Ok(match copy_out(c, bytes, pp, sp)? {
        Ok(()) => Status::Ok.code(),
        Err(s) => s.code(),
    })
}

macro_rules! read {
    ($c:expr, $p:expr, $l:expr) => {
        match mem_read(&$c, $p, $l) {
            Ok(v) => v,
            Err(s) => return st(s),
        }
    };
}

/// Answers an armed fault instead of running the call: its status, or `Ok` with fake output
/// (`out(pp, sp)`: a buffer; `raw(p)`: bytes written to a number's out-param; neither: no output).
macro_rules! faulted {
    ($c:expr, $name:literal) => {
        match fault(&$c, $name) {
            Some(FaultAction::Status(s)) => return st(s),
            Some(FaultAction::Bytes(_)) => return ok(),
            None => {}
        }
    };
    ($c:expr, $name:literal, out($pp:expr, $sp:expr)) => {
        match fault(&$c, $name) {
            Some(FaultAction::Status(s)) => return st(s),
            Some(FaultAction::Bytes(b)) => return fake_out(&mut $c, &b, $pp, $sp),
            None => {}
        }
    };
    ($c:expr, $name:literal, raw($p:expr)) => {
        match fault(&$c, $name) {
            Some(FaultAction::Status(s)) => return st(s),
            Some(FaultAction::Bytes(b)) => return res(mem_write(&mut $c, $p, &b)),
            None => {}
        }
    };
}

fn put_u32(c: &mut C<'_>, ptr: i32, v: u32) -> Result<(), Status> {
    mem_write(c, ptr, &v.to_le_bytes())
}

fn put_u64(c: &mut C<'_>, ptr: i32, v: u64) -> Result<(), Status> {
    mem_write(c, ptr, &v.to_le_bytes())
}

/// Header map of `kind` for the current context: `Err` is the status Envoy returns when the map
/// is not available (BadArgument; NotFound in the access-log phase).
fn with_map<T>(c: &mut C<'_>, kind: u32, f: impl FnOnce(&mut HeaderMap) -> T) -> Result<T, Status> {
    let data = c.data_mut();
    if matches!(
        kind,
        map::HTTP_CALL_RESPONSE_HEADERS | map::HTTP_CALL_RESPONSE_TRAILERS
    ) {
        let Some(callout) = data.callout.as_mut() else {
            return Err(Status::BadArgument);
        };
        let pairs = if kind == map::HTTP_CALL_RESPONSE_HEADERS {
            callout.headers.clone().unwrap_or_default()
        } else {
            callout.trailers.clone()
        };
        let mut m = HeaderMap::from_pairs(pairs);
        let out = f(&mut m);
        let entries = m.entries().to_vec();
        if kind == map::HTTP_CALL_RESPONSE_HEADERS {
            if callout.headers.is_some() || !entries.is_empty() {
                callout.headers = Some(entries);
            }
        } else {
            callout.trailers = entries;
        }
        return Ok(out);
    }
    let Some(s) = data.stream_mut() else {
        return Err(Status::BadArgument);
    };
    let missing = if s.in_access_log {
        Status::NotFound
    } else {
        Status::BadArgument
    };
    let m = match kind {
        map::REQUEST_HEADERS => Some(&mut s.req_headers),
        map::REQUEST_TRAILERS => s.req_trailers.as_mut(),
        map::RESPONSE_HEADERS => s.resp_headers.as_mut(),
        map::RESPONSE_TRAILERS => s.resp_trailers.as_mut(),
        _ => None,
    };
    m.map(f).ok_or(missing)
}

/// A readable buffer of `kind` for the current context; NotFound when Envoy has none.
fn get_buffer(c: &C<'_>, kind: u32) -> Result<Vec<u8>, Status> {
    let data = c.data();
    let vm = data.vm();
    match kind {
        buffer::VM_CONFIGURATION => Ok(vm.info.vm_config.clone()),
        buffer::PLUGIN_CONFIGURATION if data.in_config => Ok(vm.info.plugin_config.clone()),
        buffer::HTTP_CALL_RESPONSE_BODY => data
            .callout
            .as_ref()
            .map(|r| r.body.clone())
            .ok_or(Status::NotFound),
        buffer::REQUEST_BODY => {
            let s = data.stream().ok_or(Status::NotFound)?;
            if s.stage == Stage::ReqHeaders {
                return Err(Status::NotFound);
            }
            Ok(s.req_body.clone())
        }
        buffer::RESPONSE_BODY => {
            let s = data.stream().ok_or(Status::NotFound)?;
            if matches!(s.stage, Stage::RespBody | Stage::Finish | Stage::Done) {
                Ok(s.resp_body.clone())
            } else {
                Err(Status::NotFound)
            }
        }
        _ => Err(Status::NotFound),
    }
}

/// Envoy `Buffer::copyFrom`: prepend (0,0), replace (0, ≥len), append (≥len, _), else BadArgument.
fn splice(buf: &mut Vec<u8>, start: usize, length: usize, data: &[u8]) -> Result<(), Status> {
    if start == 0 {
        if length == 0 {
            let mut v = data.to_vec();
            v.extend_from_slice(buf);
            *buf = v;
            Ok(())
        } else if length >= buf.len() {
            *buf = data.to_vec();
            Ok(())
        } else {
            Err(Status::BadArgument)
        }
    } else if start >= buf.len() {
        buf.extend_from_slice(data);
        Ok(())
    } else {
        Err(Status::BadArgument)
    }
}

fn gate(c: &C<'_>, op: &'static str) {
    let slot = c.data().slot;
    c.data().shared.gate.pass(slot, op);
}

fn gate_release(c: &C<'_>) {
    let slot = c.data().slot;
    c.data().shared.gate.release(slot);
}

pub(crate) fn add_to_linker(l: &mut Linker<WorkerState>, abi: AbiVersion) -> wasmtime::Result<()> {
    l.func_wrap("env", "pthread_equal", |_c: C<'_>, a: i32, b: i32| -> i32 {
        (a == b) as i32
    })?;
    l.func_wrap(
        "env",
        "emscripten_notify_memory_growth",
        |_c: C<'_>, _m: i32| {},
    )?;

    // Logging.
    l.func_wrap(
        "env",
        "proxy_log",
        |mut c: C<'_>, level: i32, p: i32, len: i32| -> R {
            faulted!(c, "proxy_log");
            if level as u32 > LOG_LEVEL_MAX {
                return st(Status::BadArgument);
            }
            let msg = read!(c, p, len);
            let level = LogLevel::from_u32(level as u32).unwrap_or(LogLevel::Critical);
            if level >= c.data().vm().info.log_level {
                c.data_mut()
                    .log(level, String::from_utf8_lossy(&msg).into_owned());
            }
            ok()
        },
    )?;
    if abi == AbiVersion::V0_2_1 {
        l.func_wrap(
            "env",
            "proxy_get_log_level",
            |mut c: C<'_>, out: i32| -> R {
                faulted!(c, "proxy_get_log_level", raw(out));
                let level = c.data().vm().info.log_level.as_u32();
                res(put_u32(&mut c, out, level))
            },
        )?;
    }

    // Time.
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, out: i32| -> R {
            faulted!(c, "proxy_get_current_time_nanoseconds", raw(out));
            let now = c.data().shared.clock.realtime_ns();
            res(put_u64(&mut c, out, now))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, period: i32| -> R {
            faulted!(c, "proxy_set_tick_period_milliseconds");
            let (slot, filter) = (c.data().slot, c.data().cur_vm);
            let generation = {
                let vm = c.data_mut().vm_mut();
                vm.tick_generation += 1;
                vm.tick_period_ms = period as u32;
                vm.tick_generation
            };
            if period as u32 > 0 {
                let delay = u64::from(period as u32) * 1_000_000;
                schedule(
                    &c.data().shared,
                    delay,
                    Event::Tick {
                        slot,
                        filter,
                        generation,
                    },
                );
            }
            ok()
        },
    )?;

    // Buffers.
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, kind: i32, start: i32, max: i32, pp: i32, sp: i32| -> R {
            faulted!(c, "proxy_get_buffer_bytes", out(pp, sp));
            let kind = kind as u32;
            if kind > buffer::MAX {
                return st(Status::BadArgument);
            }
            let buf = match get_buffer(&c, kind) {
                Ok(b) => b,
                Err(s) => return st(s),
            };
            let (start, max) = (start as u32 as usize, max as u32 as usize);
            if start.checked_add(max).is_none() {
                return st(Status::BadArgument);
            }
            let slice = buf.get(start..).unwrap_or_default();
            let slice = slice.get(..max.min(slice.len())).unwrap_or_default();
            Ok(match copy_out(&mut c, slice, pp, sp)? {
                Ok(()) => Status::Ok.code(),
                Err(s) => s.code(),
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut c: C<'_>, kind: i32, lp: i32, fp: i32| -> R {
            faulted!(c, "proxy_get_buffer_status", raw(lp));
            let kind = kind as u32;
            if kind > buffer::MAX {
                return st(Status::BadArgument);
            }
            let buf = match get_buffer(&c, kind) {
                Ok(b) => b,
                Err(s) => return st(s),
            };
            res(put_u32(&mut c, lp, buf.len() as u32).and_then(|_| put_u32(&mut c, fp, 0)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>, kind: i32, start: i32, len: i32, p: i32, plen: i32| -> R {
            faulted!(c, "proxy_set_buffer_bytes");
            let kind = kind as u32;
            if kind > buffer::MAX {
                return st(Status::BadArgument);
            }
            if let Err(s) = get_buffer(&c, kind) {
                return st(s);
            }
            let data = read!(c, p, plen);
            let (start, len) = (start as u32 as usize, len as u32 as usize);
            let state = c.data_mut();
            let target = match kind {
                buffer::REQUEST_BODY => state.stream_mut().map(|s| &mut s.req_body),
                buffer::RESPONSE_BODY => state.stream_mut().map(|s| &mut s.resp_body),
                buffer::HTTP_CALL_RESPONSE_BODY => state.callout.as_mut().map(|r| &mut r.body),
                _ => return st(Status::BadArgument),
            };
            match target {
                Some(buf) => res(splice(buf, start, len, &data)),
                None => st(Status::NotFound),
            }
        },
    )?;

    // Header maps.
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, kind: i32, pp: i32, sp: i32| -> R {
            faulted!(c, "proxy_get_header_map_pairs", out(pp, sp));
            if kind as u32 > map::MAX {
                return st(Status::BadArgument);
            }
            let bytes = match with_map(&mut c, kind as u32, |m| m.serialize()) {
                Ok(b) => b,
                Err(s) => return st(s),
            };
            // cpp-host: an empty map is returned as an empty buffer (pointer 0, size 0).
            let bytes = if bytes.len() <= 4 { Vec::new() } else { bytes };
            Ok(match copy_out(&mut c, &bytes, pp, sp)? {
                Ok(()) => Status::Ok.code(),
                Err(s) => s.code(),
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, kind: i32, p: i32, len: i32| -> R {
            faulted!(c, "proxy_set_header_map_pairs");
            if kind as u32 > map::MAX {
                return st(Status::BadArgument);
            }
            let data = read!(c, p, len);
            let pairs = deserialize_pairs(&data);
            res(with_map(&mut c, kind as u32, |m| {
                m.clear();
                for (n, v) in &pairs {
                    m.add(n, v);
                }
            }))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>, kind: i32, kp: i32, kl: i32, vpp: i32, vsp: i32| -> R {
            faulted!(c, "proxy_get_header_map_value", out(vpp, vsp));
            if kind as u32 > map::MAX {
                return st(Status::BadArgument);
            }
            let key = read!(c, kp, kl);
            note(&c, &key);
            let value = match with_map(&mut c, kind as u32, |m| m.get(&key).map(|v| v.to_vec())) {
                Ok(Some(v)) => v,
                Ok(None) => return st(Status::NotFound),
                Err(s) => return st(s),
            };
            Ok(match copy_out(&mut c, &value, vpp, vsp)? {
                Ok(()) => Status::Ok.code(),
                Err(s) => s.code(),
            })
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: C<'_>, kind: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            faulted!(c, "proxy_add_header_map_value");
            if kind as u32 > map::MAX {
                return st(Status::BadArgument);
            }
            let key = read!(c, kp, kl);
            let value = read!(c, vp, vl);
            res(with_map(&mut c, kind as u32, |m| m.add(&key, &value)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: C<'_>, kind: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> R {
            faulted!(c, "proxy_replace_header_map_value");
            if kind as u32 > map::MAX {
                return st(Status::BadArgument);
            }
            let key = read!(c, kp, kl);
            let value = read!(c, vp, vl);
            res(with_map(&mut c, kind as u32, |m| m.replace(&key, &value)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, kind: i32, kp: i32, kl: i32| -> R {
            faulted!(c, "proxy_remove_header_map_value");
            if kind as u32 > map::MAX {
                return st(Status::BadArgument);
            }
            let key = read!(c, kp, kl);
            res(with_map(&mut c, kind as u32, |m| m.remove(&key)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: C<'_>, kind: i32, out: i32| -> R {
            faulted!(c, "proxy_get_header_map_size", raw(out));
            if kind as u32 > map::MAX {
                return st(Status::BadArgument);
            }
            // Envoy answers the map's byteSize() (Σ name + value), not the number of entries.
            match with_map(&mut c, kind as u32, |m| m.byte_size() as u32) {
                Ok(n) => res(put_u32(&mut c, out, n)),
                Err(s) => st(s),
            }
        },
    )?;

    // Stream control.
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: C<'_>, kind: i32| -> R {
            faulted!(c, "proxy_continue_stream");
            let kind = kind as u32;
            if kind > stream::MAX {
                return st(Status::BadArgument);
            }
            if let Some(s) = c.data_mut().stream_mut() {
                let in_request = matches!(
                    s.stage,
                    Stage::ReqHeaders | Stage::ReqBody | Stage::ReqTrailers
                );
                let in_response = matches!(s.stage, Stage::RespHeaders | Stage::RespBody);
                if (kind == stream::REQUEST && in_request)
                    || (kind == stream::RESPONSE && in_response)
                {
                    s.continue_requested = true;
                }
            }
            ok()
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_close_stream",
        |mut c: C<'_>, kind: i32| -> R {
            faulted!(c, "proxy_close_stream");
            let kind = kind as u32;
            if kind > stream::MAX {
                return st(Status::BadArgument);
            }
            let filter = c.data().cur_vm;
            if kind <= stream::RESPONSE {
                if let Some(s) = c.data_mut().stream_mut() {
                    s.reset = Some(filter);
                }
            }
            ok()
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>,
         status: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32|
         -> R {
            faulted!(c, "proxy_send_local_response");
            let details = read!(c, dp, dl);
            let body = read!(c, bp, bl);
            let headers = read!(c, hp, hl);
            let filter = c.data().cur_vm;
            if let Some(s) = c.data_mut().stream_mut() {
                if s.local_reply.is_none() {
                    s.local_reply = Some(LocalReply {
                        status: status as u32 as u16,
                        details: String::from_utf8_lossy(&details).into_owned(),
                        body,
                        headers: deserialize_pairs(&headers),
                        by: Some(filter),
                    });
                }
            }
            ok()
        },
    )?;

    // Properties.
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, pp: i32, pl: i32, vpp: i32, vsp: i32| -> R {
            faulted!(c, "proxy_get_property", out(vpp, vsp));
            let path = read!(c, pp, pl);
            note(&c, &path);
            let value = {
                let data = c.data();
                let cx = PropertyContext {
                    plugin: &data.vm().info,
                    stream: data.stream(),
                    listener: &data.shared.listener,
                };
                properties::get(&path, &cx)
            };
            match value {
                Ok(v) => Ok(match copy_out(&mut c, &v, vpp, vsp)? {
                    Ok(()) => Status::Ok.code(),
                    Err(s) => s.code(),
                }),
                Err(s) => st(s),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, pp: i32, pl: i32, vp: i32, vl: i32| -> R {
            faulted!(c, "proxy_set_property");
            let path = read!(c, pp, pl);
            let value = read!(c, vp, vl);
            match c.data_mut().stream_mut() {
                Some(s) => {
                    s.filter_state.insert(path, value);
                    ok()
                }
                // Envoy's root context has no stream info to hold filter state.
                None => st(Status::NotFound),
            }
        },
    )?;

    // Shared data and queues.
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, kp: i32, kl: i32, vpp: i32, vsp: i32, cp: i32| -> R {
            match fault(&c, "proxy_get_shared_data") {
                Some(FaultAction::Status(s)) => return st(s),
                Some(FaultAction::Bytes(b)) => {
                    // A fake value with a plausible cas (1: the first one cpp-host hands out).
                    if let Err(s) = copy_out(&mut c, &b, vpp, vsp)? {
                        return st(s);
                    }
                    return res(put_u32(&mut c, cp, 1));
                }
                None => {}
            }
            let key = read!(c, kp, kl);
            note(&c, &key);
            gate(&c, "get_shared_data");
            let got = {
                let data = c.data();
                data.shared.shared_data.get(&data.vm().info.vm_id, &key)
            };
            gate_release(&c);
            match got {
                Ok((value, cas)) => {
                    if let Err(s) = copy_out(&mut c, &value, vpp, vsp)? {
                        return st(s);
                    }
                    res(put_u32(&mut c, cp, cas))
                }
                Err(s) => st(s),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> R {
            faulted!(c, "proxy_set_shared_data");
            let key = read!(c, kp, kl);
            let value = read!(c, vp, vl);
            note(&c, &key);
            gate(&c, "set_shared_data");
            let result = {
                let data = c.data();
                data.shared
                    .shared_data
                    .set(&data.vm().info.vm_id, &key, &value, cas as u32)
            };
            gate_release(&c);
            res(result)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C<'_>, np: i32, nl: i32, tp: i32| -> R {
            faulted!(c, "proxy_register_shared_queue", raw(tp));
            let name = read!(c, np, nl);
            let token = {
                let data = c.data();
                let owner = QueueOwner {
                    worker: data.slot,
                    filter: data.cur_vm,
                    context_id: data.vm().root_ctx,
                };
                data.shared
                    .queues
                    .register(&data.vm().info.vm_id, &name, owner)
            };
            res(put_u32(&mut c, tp, token))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vp: i32, vl: i32, np: i32, nl: i32, tp: i32| -> R {
            faulted!(c, "proxy_resolve_shared_queue", raw(tp));
            let vm_id = read!(c, vp, vl);
            let name = read!(c, np, nl);
            match c.data().shared.queues.resolve(&vm_id, &name) {
                Some(t) => res(put_u32(&mut c, tp, t)),
                None => st(Status::NotFound),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, token: i32, vpp: i32, vsp: i32| -> R {
            faulted!(c, "proxy_dequeue_shared_queue", out(vpp, vsp));
            match c.data().shared.queues.dequeue(token as u32) {
                Ok(v) => Ok(match copy_out(&mut c, &v, vpp, vsp)? {
                    Ok(()) => Status::Ok.code(),
                    Err(s) => s.code(),
                }),
                Err(s) => st(s),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: C<'_>, token: i32, vp: i32, vl: i32| -> R {
            faulted!(c, "proxy_enqueue_shared_queue");
            let value = read!(c, vp, vl);
            let shared = c.data().shared.clone();
            match shared.queues.enqueue(token as u32, &value) {
                Ok(owner) => {
                    // Delivered later on the owner's thread, never inside this call.
                    schedule(
                        &shared,
                        0,
                        Event::QueueReady {
                            slot: owner.worker,
                            filter: owner.filter,
                            context_id: owner.context_id,
                            token: token as u32,
                        },
                    );
                    ok()
                }
                Err(s) => st(s),
            }
        },
    )?;

    // Metrics.
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, np: i32, nl: i32, out: i32| -> R {
            faulted!(c, "proxy_define_metric", raw(out));
            let name = read!(c, np, nl);
            note(&c, &name);
            match c.data().shared.metrics.define(kind as u32, &name) {
                Ok(id) => res(put_u32(&mut c, out, id)),
                Err(s) => st(s),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: i32, offset: i64| -> R {
            faulted!(c, "proxy_increment_metric");
            res(c.data().shared.metrics.increment(id as u32, offset))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |c: C<'_>, id: i32, value: i64| -> R {
            faulted!(c, "proxy_record_metric");
            res(c.data().shared.metrics.record(id as u32, value as u64))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, out: i32| -> R {
            faulted!(c, "proxy_get_metric", raw(out));
            match c.data().shared.metrics.get(id as u32) {
                Ok(v) => res(put_u64(&mut c, out, v)),
                Err(s) => st(s),
            }
        },
    )?;

    // HTTP callouts.
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout: i32,
         token_ptr: i32|
         -> R {
            faulted!(c, "proxy_http_call", raw(token_ptr));
            let upstream = read!(c, up, ul);
            note(&c, &upstream);
            let headers = read!(c, hp, hl);
            let body = read!(c, bp, bl);
            let trailers = read!(c, tp, tl);
            // cpp-host writes the token first to validate the pointer before starting anything.
            if let Err(s) = put_u32(&mut c, token_ptr, 0) {
                return st(s);
            }
            let cluster = String::from_utf8_lossy(&upstream).into_owned();
            let headers = deserialize_pairs(&headers);
            let has = |n: &[u8]| headers.iter().any(|(k, _)| k.as_slice() == n);
            if !c.data().shared.clusters.exists(&cluster)
                || !has(b":method")
                || !has(b":path")
                || !has(b":authority")
            {
                return st(Status::BadArgument);
            }
            let to_strings = |pairs: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<(String, String)> {
                pairs
                    .into_iter()
                    .map(|(n, v)| {
                        (
                            String::from_utf8_lossy(&n).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    })
                    .collect()
            };
            let request = CalloutRequest {
                cluster,
                headers: to_strings(headers),
                body,
                trailers: to_strings(deserialize_pairs(&trailers)),
                timeout: Duration::from_millis(u64::from(timeout as u32)),
            };
            let shared = c.data().shared.clone();
            let (result, delay) = shared.clusters.call(request);
            let (slot, filter) = (c.data().slot, c.data().cur_vm);
            let token = {
                let vm = c.data_mut().vm_mut();
                vm.next_callout = vm.next_callout.wrapping_add(1).max(1);
                vm.callouts.insert(vm.next_callout, result);
                vm.next_callout
            };
            schedule(
                &shared,
                delay,
                Event::Callout {
                    slot,
                    filter,
                    token,
                },
            );
            res(put_u32(&mut c, token_ptr, token))
        },
    )?;

    // gRPC: no gRPC services are modelled; Envoy answers BadArgument for an unknown service.
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |c: C<'_>,
         _a: i32,
         _b: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _k: i32,
         _t: i32,
         _o: i32|
         -> R {
            faulted!(c, "proxy_grpc_call");
            st(Status::BadArgument)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |c: C<'_>,
         _a: i32,
         _b: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _o: i32|
         -> R {
            faulted!(c, "proxy_grpc_stream");
            st(Status::BadArgument)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |c: C<'_>, _t: i32, _p: i32, _l: i32, _e: i32| -> R {
            faulted!(c, "proxy_grpc_send");
            st(Status::NotFound)
        },
    )?;
    l.func_wrap("env", "proxy_grpc_cancel", |c: C<'_>, _t: i32| -> R {
        faulted!(c, "proxy_grpc_cancel");
        st(Status::NotFound)
    })?;
    l.func_wrap("env", "proxy_grpc_close", |c: C<'_>, _t: i32| -> R {
        faulted!(c, "proxy_grpc_close");
        st(Status::NotFound)
    })?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: C<'_>, cp: i32, mpp: i32, msp: i32| -> R {
            faulted!(c, "proxy_get_status");
            if let Err(s) = put_u32(&mut c, cp, 0) {
                return st(s);
            }
            Ok(match copy_out(&mut c, &[], mpp, msp)? {
                Ok(()) => Status::Ok.code(),
                Err(s) => s.code(),
            })
        },
    )?;

    // Contexts and misc.
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, ctx: i32| -> R {
            faulted!(c, "proxy_set_effective_context");
            let ctx = ctx as u32;
            let known = {
                let vm = c.data().vm();
                ctx == vm.root_ctx || vm.contexts.contains_key(&ctx)
            };
            if !known {
                return st(Status::BadArgument);
            }
            c.data_mut().effective_ctx = Some(ctx);
            ok()
        },
    )?;
    l.func_wrap("env", "proxy_done", |c: C<'_>| -> R {
        faulted!(c, "proxy_done");
        // Nothing is ever pending "done" here (on_done always answers before on_delete).
        st(Status::NotFound)
    })?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |c: C<'_>, np: i32, nl: i32, ap: i32, al: i32, _rp: i32, _rs: i32| -> R {
            faulted!(c, "proxy_call_foreign_function");
            let _ = read!(c, np, nl);
            let _ = read!(c, ap, al);
            // No foreign functions are modelled.
            st(Status::NotFound)
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::splice;
    use crate::abi::Status;

    #[test]
    fn splice_follows_envoy_buffer_rules() {
        let mut b = b"body".to_vec();
        splice(&mut b, 0, 0, b">").unwrap();
        assert_eq!(b, b">body");
        splice(&mut b, 5, 0, b"<").unwrap();
        assert_eq!(b, b">body<");
        splice(&mut b, 0, 6, b"new").unwrap();
        assert_eq!(b, b"new");
        assert_eq!(splice(&mut b, 1, 1, b"x"), Err(Status::BadArgument));
    }
}
