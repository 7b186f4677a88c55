//! Properties: Envoy's attributes (read through `envoy_model`) and filter state.

use super::{note, ok, out, read, st, C, R};
use crate::envoy_model::{get_property, unmodelled_property};
use crate::Status;

pub(super) fn proxy_get_property(
    c: &mut C<'_>,
    path_data: i32,
    path_size: i32,
    return_value_data: i32,
    return_value_size: i32,
) -> R {
    let path = read!(c, path_data, path_size);
    note(c, &path);
    if let Some(refusal) = unmodelled_property(&path) {
        return Err(wasmtime::Error::msg(refusal));
    }
    // The request attributes read from headers depend on which filter asks (the maps its
    // context holds): the stream reads them for this filter.
    let filter = c.data().cur_vm;
    if let Some(s) = c.data_mut().stream_mut() {
        s.set_viewer(filter);
    }
    match get_property(&path, &c.data().property_context()) {
        Ok(v) => out(c, &v, return_value_data, return_value_size),
        Err(s) => st(s),
    }
}

pub(super) fn proxy_set_property(
    c: &mut C<'_>,
    path_data: i32,
    path_size: i32,
    value_data: i32,
    value_size: i32,
) -> R {
    let path = read!(c, path_data, path_size);
    let value = read!(c, value_data, value_size);
    match c.data_mut().stream_mut() {
        Some(s) => {
            s.set_filter_state(path, value);
            ok()
        }
        // Envoy's root context has no stream info to hold filter state.
        None => st(Status::NOT_FOUND),
    }
}
