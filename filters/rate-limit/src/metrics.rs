//! The filter's counters (names documented in docs/rate-limit.md). Metrics are best-effort: a
//! failed define or increment never changes a decision; it is logged once per VM.

use std::cell::Cell;

use crate::host;

#[derive(Debug, Clone, Copy)]
pub enum Counter {
    Allowed,
    Limited,
    ShadowLimited,
    CasRetriesExhausted,
    Evictions,
    Reclaimed,
    StoreErrors,
    LateCreates,
}

const NAMES: [(Counter, &str); 8] = [
    (Counter::Allowed, "rate_limit.allowed"),
    (Counter::Limited, "rate_limit.limited"),
    (Counter::ShadowLimited, "rate_limit.shadow_limited"),
    (
        Counter::CasRetriesExhausted,
        "rate_limit.cas_retries_exhausted",
    ),
    (Counter::Evictions, "rate_limit.evictions"),
    (Counter::Reclaimed, "rate_limit.reclaimed"),
    (Counter::StoreErrors, "rate_limit.store_errors"),
    (Counter::LateCreates, "rate_limit.late_creates"),
];

pub struct Metrics {
    ids: [Option<u32>; 8],
    warned: Cell<bool>,
}

impl Metrics {
    pub fn define() -> Self {
        let mut ids = [None; 8];
        let mut failed = false;
        for ((_, name), id) in NAMES.iter().zip(ids.iter_mut()) {
            match host::define_counter(name) {
                Ok(v) => *id = Some(v),
                Err(_) => failed = true,
            }
        }
        if failed {
            log::warn!("rate-limit: some metrics could not be defined");
        }
        Self {
            ids,
            warned: Cell::new(failed),
        }
    }

    pub fn bump(&self, counter: Counter) {
        let Some(Some(id)) = self.ids.get(counter as usize) else {
            return;
        };
        if host::increment(*id).is_err() && !self.warned.replace(true) {
            log::warn!("rate-limit: incrementing a metric failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_indexed_by_counter() {
        for (i, (counter, name)) in NAMES.iter().enumerate() {
            assert_eq!(*counter as usize, i, "{name}");
            assert!(name.starts_with("rate_limit."));
        }
    }
}
