//! The filter's counters (names documented in docs/rate-limit.md). Metrics are best-effort: a
//! failed define or increment never changes a decision; `meshward_host::Counters` logs the first
//! failure per VM.

use meshward_host::Counters;

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
    TooManyValues,
    IdentityUnreadable,
}

const NAMES: [(Counter, &str); 10] = [
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
    (Counter::TooManyValues, "rate_limit.too_many_values"),
    (
        Counter::IdentityUnreadable,
        "rate_limit.identity_unreadable",
    ),
];

/// Define [`NAMES`]' counters, in that order: a [`Counter`] is its own index.
pub fn define_counters() -> Counters {
    Counters::define("rate-limit", NAMES.iter().map(|(_, name)| *name))
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

    #[test]
    fn every_counter_is_listed_under_its_name() {
        let counters = define_counters();
        assert_eq!(counters.len(), NAMES.len());
        for (counter, name) in NAMES {
            assert_eq!(counters.name(counter as usize), Some(name));
        }
        // Natively the host refuses every metric: counting must still be harmless.
        counters.increment(Counter::StoreErrors as usize);
        assert!(counters.has_warned());
    }
}
