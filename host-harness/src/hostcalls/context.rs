//! Contexts and the VM: `proxy_set_effective_context`, `proxy_done`, `proxy_get_status` and
//! `proxy_call_foreign_function` (the functions modelled are in [`super::foreign`]).

use super::{foreign, ok, out, put_u32, read, st, C, R};
use crate::vm::copy_out;
use crate::Status;

pub(super) fn proxy_set_effective_context(c: &mut C<'_>, context_id: i32) -> R {
    let ctx = context_id as u32;
    let known = {
        let vm = c.data().vm();
        ctx == vm.root_ctx || vm.contexts.contains_key(&ctx)
    };
    if !known {
        return st(Status::BAD_ARGUMENT);
    }
    c.data_mut().effective_ctx = Some(ctx);
    ok()
}

pub(super) fn proxy_done(_c: &mut C<'_>) -> R {
    // Nothing is ever pending "done" here (on_done always answers before on_delete).
    st(Status::NOT_FOUND)
}

pub(super) fn proxy_get_status(
    c: &mut C<'_>,
    return_code: i32,
    return_message_data: i32,
    return_message_size: i32,
) -> R {
    // The root context's status (cpp-host keeps callouts there): the last gRPC close's code,
    // and its message only while that close is delivered.
    let code = c.data().vm().status_code;
    let message = c.data().status_message.clone().unwrap_or_default();
    if let Err(s) = put_u32(c, return_code, code) {
        return st(s);
    }
    out(
        c,
        message.as_bytes(),
        return_message_data,
        return_message_size,
    )
}

pub(super) fn proxy_call_foreign_function(
    c: &mut C<'_>,
    name_data: i32,
    name_size: i32,
    arguments_data: i32,
    arguments_size: i32,
    return_results_data: i32,
    return_results_size: i32,
) -> R {
    let name = read!(c, name_data, name_size);
    let arguments = read!(c, arguments_data, arguments_size);
    if let Some(refusal) = foreign::refusal(&name, &arguments) {
        return Err(wasmtime::Error::msg(refusal));
    }
    let Some(function) = foreign::lookup(&name) else {
        return st(Status::NOT_FOUND);
    };
    let (status, result) = function(&arguments);
    // cpp-host writes the result pointer and size whatever the function returned (0 and 0 when
    // it allocated nothing), skips an out-param that is 0, and then returns the function's status.
    let result = result.unwrap_or_default();
    if return_results_data != 0 && return_results_size != 0 {
        return match copy_out(c, &result, return_results_data, return_results_size)? {
            Ok(()) => st(status),
            Err(s) => st(s),
        };
    }
    if return_results_data != 0 {
        // No size out-param: the guest still gets the buffer (and cannot know its size).
        let mut ptr = 0u32;
        if !result.is_empty() {
            let alloc = c.data().vm().alloc.clone();
            ptr = alloc.call(&mut *c, result.len() as i32)? as u32;
            if ptr == 0 || crate::vm::mem_write(c, ptr as i32, &result).is_err() {
                return st(Status::INVALID_MEMORY_ACCESS);
            }
        }
        if let Err(s) = put_u32(c, return_results_data, ptr) {
            return st(s);
        }
    } else if return_results_size != 0 {
        if let Err(s) = put_u32(c, return_results_size, result.len() as u32) {
            return st(s);
        }
    }
    st(status)
}
