//! Contexts and the VM: `proxy_set_effective_context`, `proxy_done`, `proxy_get_status` and
//! `proxy_call_foreign_function` (no foreign functions are modelled).

use super::{ok, out, put_u32, read, st, C, R};
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
    if let Err(s) = put_u32(c, return_code, 0) {
        return st(s);
    }
    out(c, &[], return_message_data, return_message_size)
}

pub(super) fn proxy_call_foreign_function(
    c: &mut C<'_>,
    name_data: i32,
    name_size: i32,
    arguments_data: i32,
    arguments_size: i32,
    _return_results_data: i32,
    _return_results_size: i32,
) -> R {
    let _ = read!(c, name_data, name_size);
    let _ = read!(c, arguments_data, arguments_size);
    // No foreign functions are modelled.
    st(Status::NOT_FOUND)
}
