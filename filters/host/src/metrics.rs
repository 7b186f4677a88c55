//! Metrics, and [`Counters`]: a filter's fixed set of best-effort counters.

use std::cell::Cell;

use crate::abi::{self, MetricType};
use crate::Status;

/// Define (or look up, if this VM defined it already) a metric; its id.
pub fn define_metric(kind: MetricType, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: pointer and length of a live str; the out-param is a live local.
    Status::check(unsafe {
        abi::proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id)
    })?;
    Ok(id)
}

/// Add `delta` to a counter or gauge (a counter refuses a negative delta: BAD_ARGUMENT).
pub fn increment_metric(id: u32, delta: i64) -> Result<(), Status> {
    // SAFETY: plain values.
    Status::check(unsafe { abi::proxy_increment_metric(id, delta) })
}

/// Set a gauge, or record a histogram sample.
pub fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: plain values.
    Status::check(unsafe { abi::proxy_record_metric(id, value) })
}

/// A metric's current value.
pub fn get_metric(id: u32) -> Result<u64, Status> {
    let mut value = 0;
    // SAFETY: the out-param is a live local.
    Status::check(unsafe { abi::proxy_get_metric(id, &mut value) })?;
    Ok(value)
}

/// A fixed list of counters, defined together at configure time (so they exist, at 0, before the
/// first request) and addressed by their index in that list.
///
/// Counting is best effort: a counter the host would not define or increment is skipped and never
/// changes a request's fate. The first such failure is logged (at warn), later ones are not, so
/// a broken metrics backend cannot flood the log.
#[derive(Debug)]
pub struct Counters {
    owner: &'static str,
    entries: Vec<(String, Option<u32>)>,
    warned: Cell<bool>,
}

impl Counters {
    /// Define every counter in `names`; `owner` (the filter's name) prefixes the warning.
    pub fn define<S: Into<String>>(
        owner: &'static str,
        names: impl IntoIterator<Item = S>,
    ) -> Self {
        let mut counters = Self {
            owner,
            entries: Vec::new(),
            warned: Cell::new(false),
        };
        for name in names {
            let name = name.into();
            let id = match define_metric(MetricType::Counter, &name) {
                Ok(id) => Some(id),
                Err(status) => {
                    counters.warn_once(&name, status);
                    None
                }
            };
            counters.entries.push((name, id));
        }
        counters
    }

    /// Add one to counter `index`.
    pub fn increment(&self, index: usize) {
        self.add(index, 1);
    }

    /// Add `by` to counter `index` (saturating at `i64::MAX` per call).
    pub fn add(&self, index: usize, by: u64) {
        let Some((name, id)) = self.entries.get(index) else {
            self.warn_once(&format!("#{index}"), Status::NOT_FOUND);
            return;
        };
        if let Some(id) = *id {
            let by = i64::try_from(by).unwrap_or(i64::MAX);
            if let Err(status) = increment_metric(id, by) {
                self.warn_once(name, status);
            }
        }
    }

    /// The host's id of counter `index`, if it was defined.
    pub fn id(&self, index: usize) -> Option<u32> {
        self.entries.get(index).and_then(|(_, id)| *id)
    }

    /// The name of counter `index`.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.entries.get(index).map(|(name, _)| name.as_str())
    }

    /// How many counters the list has (defined or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a failure has been logged already.
    pub fn has_warned(&self) -> bool {
        self.warned.get()
    }

    fn warn_once(&self, name: &str, status: Status) {
        if !self.warned.replace(true) {
            log::warn!(
                "{}: metric `{name}` unavailable (host status {status}); requests are not \
                 affected, further metric failures are not logged",
                self.owner
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_without_a_host_are_listed_undefined_and_warn_once() {
        // Natively every host call fails (UNIMPLEMENTED): the list keeps its shape anyway.
        let counters = Counters::define("test", ["a.one", "a.two"]);
        assert_eq!(counters.len(), 2);
        assert_eq!(counters.name(1), Some("a.two"));
        assert_eq!(counters.name(2), None);
        assert_eq!(counters.id(0), None);
        assert!(counters.has_warned());
        // Counting an undefined or unknown counter neither panics nor un-warns.
        counters.increment(0);
        counters.add(7, u64::MAX);
        assert!(counters.has_warned());
    }

    #[test]
    fn an_empty_list_never_warns_until_misused() {
        let counters = Counters::define::<String>("test", []);
        assert!(counters.is_empty());
        assert!(!counters.has_warned());
        counters.increment(0);
        assert!(counters.has_warned());
    }
}
