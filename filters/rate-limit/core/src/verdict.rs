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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdentityFact;
    use crate::store::{init_table, MemoryStore};

    /// A request with no descriptor facts: it draws from the default bucket only.
    struct Facts {
        failed: bool,
    }

    impl RequestFacts for Facts {
        fn source_principal(&mut self) -> Option<String> {
            None
        }
        fn source_ip(&mut self) -> Option<String> {
            None
        }
        fn headers(&mut self) -> &[(Vec<u8>, Vec<u8>)] {
            &[]
        }
        fn identity(&mut self) -> IdentityFact {
            IdentityFact::Absent
        }
        fn path(&mut self) -> Option<String> {
            None
        }
        fn method(&mut self) -> Option<String> {
            None
        }
        fn read_failed(&self) -> bool {
            self.failed
        }
    }

    /// One token per hour, in a fresh table.
    fn one_token() -> (Config, TableKeys, [u8; 16], MemoryStore) {
        let config = Config::parse(
            br#"{"tokenBucket":{"maxTokens":1,"tokensPerFill":1,"fillInterval":"1h"}}"#,
        )
        .unwrap();
        let keys = TableKeys::new("rl", &config);
        let mut store = MemoryStore::new();
        let (seed, _) = init_table(&mut store, &keys, &config, [3; 16]).unwrap();
        (config, keys, seed, store)
    }

    fn allowed(verdict: &Verdict) -> Option<bool> {
        match verdict {
            Verdict::Charged(ChargeOutcome::Decided { decision, .. }) => Some(decision.allowed),
            _ => None,
        }
    }

    #[test]
    fn the_default_bucket_is_charged_until_empty() {
        let (config, keys, seed, mut store) = one_token();
        let mut run = || {
            let mut facts = Facts { failed: false };
            decide(&config, &mut facts, &keys, seed, &mut store, || Some(1))
        };
        assert_eq!(allowed(&run()), Some(true));
        assert_eq!(allowed(&run()), Some(false));
    }

    #[test]
    fn an_unreadable_fact_or_clock_charges_nothing() {
        let (config, keys, seed, mut store) = one_token();
        let mut failed = Facts { failed: true };
        let verdict = decide(&config, &mut failed, &keys, seed, &mut store, || {
            panic!("the clock is not read when nothing will be charged")
        });
        assert_eq!(verdict, Verdict::FactUnavailable);
        let mut facts = Facts { failed: false };
        let verdict = decide(&config, &mut facts, &keys, seed, &mut store, || None);
        assert_eq!(verdict, Verdict::NoClock);
        // The one token is still there.
        let verdict = decide(&config, &mut facts, &keys, seed, &mut store, || Some(1));
        assert_eq!(allowed(&verdict), Some(true));
    }
}
