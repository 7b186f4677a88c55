//! The filter's counters. Best-effort: a counter the host would not define or increment is
//! skipped (logged once per VM), and never changes a request's fate.

use std::cell::Cell;

use header_limits_core::{Reason, DROPPED_UNDERSCORE_METRIC};

use crate::host;

pub struct Metrics {
    /// One id per [`Reason::ALL`] entry, same order.
    rejected: [Option<u32>; Reason::ALL.len()],
    dropped: Option<u32>,
    warned: Cell<bool>,
}

impl Metrics {
    /// Define every counter (at configure time, so they exist, at 0, before the first request).
    pub fn define() -> Self {
        let metrics = Self {
            rejected: [None; Reason::ALL.len()],
            dropped: None,
            warned: Cell::new(false),
        };
        let rejected = Reason::ALL.map(|r| metrics.define_one(r.metric()));
        let dropped = metrics.define_one(DROPPED_UNDERSCORE_METRIC);
        Self {
            rejected,
            dropped,
            ..metrics
        }
    }

    fn define_one(&self, name: &str) -> Option<u32> {
        match host::define_counter(name) {
            Ok(id) => Some(id),
            Err(status) => {
                self.warn_once(name, status);
                None
            }
        }
    }

    pub fn rejected(&self, reason: Reason) -> Option<u32> {
        let index = Reason::ALL.iter().position(|r| *r == reason)?;
        self.rejected.get(index).copied().flatten()
    }

    pub fn count_rejection(&self, reason: Reason) {
        self.add(self.rejected(reason), reason.metric(), 1);
    }

    pub fn count_dropped(&self, entries: usize) {
        self.add(
            self.dropped,
            DROPPED_UNDERSCORE_METRIC,
            i64::try_from(entries).unwrap_or(i64::MAX),
        );
    }

    fn add(&self, id: Option<u32>, name: &str, by: i64) {
        if let Some(id) = id {
            if let Err(status) = host::increment(id, by) {
                self.warn_once(name, status);
            }
        }
    }

    fn warn_once(&self, name: &str, status: host::Status) {
        if !self.warned.replace(true) {
            log::warn!(
                "header-limits: metric `{name}` unavailable (host status {}); limits are still \
                 enforced, further metric failures are not logged",
                status.0
            );
        }
    }
}
