//! Metrics: Envoy's stats as the wasm filter sees them (`runtime::Metrics`).

use super::{note, put_u32, put_u64, read, res, st, C, R};

pub(super) fn proxy_define_metric(
    c: &mut C<'_>,
    metric_type: i32,
    name_data: i32,
    name_size: i32,
    return_id: i32,
) -> R {
    let name = read!(c, name_data, name_size);
    note(c, &name);
    match c.data().shared.metrics.define(metric_type as u32, &name) {
        Ok(id) => res(put_u32(c, return_id, id)),
        Err(s) => st(s),
    }
}

pub(super) fn proxy_increment_metric(c: &mut C<'_>, metric_id: i32, offset: i64) -> R {
    res(c.data().shared.metrics.increment(metric_id as u32, offset))
}

pub(super) fn proxy_record_metric(c: &mut C<'_>, metric_id: i32, value: i64) -> R {
    res(c
        .data()
        .shared
        .metrics
        .record(metric_id as u32, value as u64))
}

pub(super) fn proxy_get_metric(c: &mut C<'_>, metric_id: i32, return_value: i32) -> R {
    match c.data().shared.metrics.get(metric_id as u32) {
        Ok(v) => res(put_u64(c, return_value, v)),
        Err(s) => st(s),
    }
}
