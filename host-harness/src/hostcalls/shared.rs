//! Shared data and queues, scoped by the plugin's vm_id. The shared-data calls pass the
//! interleaving gate (`runtime::Gate`), which can force two workers' read-modify-writes to
//! alternate.

use super::{note, ok, out, put_u32, read, res, st, C, R};
use crate::runtime::{Event, QueueOwner};
use crate::Status;

/// Runs `f` between the gate's turn for `op` and its release.
fn gated<T>(c: &C<'_>, op: &'static str, f: impl FnOnce() -> T) -> T {
    let (thread, gate) = (c.data().thread, &c.data().shared.gate);
    gate.pass(thread, op);
    let result = f();
    gate.release(thread);
    result
}

pub(super) fn proxy_get_shared_data(
    c: &mut C<'_>,
    key_data: i32,
    key_size: i32,
    return_value_data: i32,
    return_value_size: i32,
    return_cas: i32,
) -> R {
    let key = read!(c, key_data, key_size);
    note(c, &key);
    let got = gated(c, "get_shared_data", || {
        let data = c.data();
        data.shared.shared_data.get(&data.vm().info.vm_id, &key)
    });
    match got {
        Ok((value, cas)) => {
            let status = out(c, &value, return_value_data, return_value_size)?;
            if status != Status::OK.0 as i32 {
                return Ok(status);
            }
            res(put_u32(c, return_cas, cas))
        }
        Err(s) => st(s),
    }
}

pub(super) fn proxy_set_shared_data(
    c: &mut C<'_>,
    key_data: i32,
    key_size: i32,
    value_data: i32,
    value_size: i32,
    cas: i32,
) -> R {
    let key = read!(c, key_data, key_size);
    let value = read!(c, value_data, value_size);
    note(c, &key);
    res(gated(c, "set_shared_data", || {
        let data = c.data();
        data.shared
            .shared_data
            .set(&data.vm().info.vm_id, &key, &value, cas as u32)
    }))
}

pub(super) fn proxy_register_shared_queue(
    c: &mut C<'_>,
    name_data: i32,
    name_size: i32,
    return_id: i32,
) -> R {
    let name = read!(c, name_data, name_size);
    let token = {
        let data = c.data();
        let owner = QueueOwner {
            thread: data.thread,
            filter: data.cur_vm,
            context_id: data.vm().root_ctx,
        };
        data.shared
            .queues
            .register(&data.vm().info.vm_id, &name, owner)
    };
    res(put_u32(c, return_id, token))
}

pub(super) fn proxy_resolve_shared_queue(
    c: &mut C<'_>,
    vm_id_data: i32,
    vm_id_size: i32,
    name_data: i32,
    name_size: i32,
    return_id: i32,
) -> R {
    let mut vm_id = read!(c, vm_id_data, vm_id_size);
    let name = read!(c, name_data, name_size);
    // Envoy reads an empty vm_id as the caller's own.
    if vm_id.is_empty() {
        vm_id = c.data().vm().info.vm_id.as_bytes().to_vec();
    }
    match c.data().shared.queues.resolve(&vm_id, &name) {
        Some(t) => res(put_u32(c, return_id, t)),
        None => st(Status::NOT_FOUND),
    }
}

pub(super) fn proxy_dequeue_shared_queue(
    c: &mut C<'_>,
    queue_id: i32,
    return_value_data: i32,
    return_value_size: i32,
) -> R {
    match c.data().shared.queues.dequeue(queue_id as u32) {
        Ok(v) => out(c, &v, return_value_data, return_value_size),
        Err(s) => st(s),
    }
}

pub(super) fn proxy_enqueue_shared_queue(
    c: &mut C<'_>,
    queue_id: i32,
    value_data: i32,
    value_size: i32,
) -> R {
    let value = read!(c, value_data, value_size);
    let shared = c.data().shared.clone();
    match shared.queues.enqueue(queue_id as u32, &value) {
        Ok(owner) => {
            // Delivered later on the owner's thread, never inside this call.
            shared.schedule(
                0,
                Event::QueueReady {
                    thread: owner.thread,
                    filter: owner.filter,
                    context_id: owner.context_id,
                    token: queue_id as u32,
                },
            );
            ok()
        }
        Err(s) => st(s),
    }
}
