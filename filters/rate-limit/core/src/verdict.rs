//! [`decide`]: one request, from its facts to the buckets it is charged in.

use crate::config::Config;
use crate::keys::{choose, RequestFacts, Unchargeable};
use crate::store::{charge_all, ChargeOutcome, SharedStore};
use crate::table::{SlotRef, TableKeys};

/// What became of a request. Only [`Verdict::Charged`] touched the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A fact the bucket choice read could not be read ([`RequestFacts::read_failed`]): the
    /// choice may have skipped the request's real bucket for a looser one, so nothing is charged
    /// and the caller fails closed.
    FactUnavailable,
    /// The request cannot be charged: the caller fails closed.
    Unchargeable(Unchargeable),
    /// The clock could not be read: the caller fails closed.
    NoClock,
    /// Every bucket the request draws from was charged (or one refused): [`charge_all`]'s outcome.
    Charged(ChargeOutcome),
}

/// Choose the request's buckets from its `facts` ([`choose`]), locate them in the table (`table`,
/// keyed by its `seed`), read the clock (`now_ns`, only when there is something to charge), and
/// charge them all in `store` ([`charge_all`]).
pub fn decide(
    config: &Config,
    facts: &mut impl RequestFacts,
    table: &TableKeys,
    seed: [u8; 16],
    store: &mut dyn SharedStore,
    now_ns: impl FnOnce() -> Option<u64>,
) -> Verdict {
    let chosen = choose(config, facts);
    if facts.read_failed() {
        return Verdict::FactUnavailable;
    }
    let choices = match chosen {
        Ok(choices) => choices,
        Err(unchargeable) => return Verdict::Unchargeable(unchargeable),
    };
    let charges: Vec<(String, SlotRef)> = choices
        .iter()
        .map(|choice| {
            let slot = SlotRef::locate(config, seed, choice);
            (table.entry(slot.entry), slot)
        })
        .collect();
    let Some(now) = now_ns() else {
        return Verdict::NoClock;
    };
    Verdict::Charged(charge_all(store, &charges, now, config))
}
