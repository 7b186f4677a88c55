//! The rate-limit table in Envoy's shared data: table creation and the CAS loop, over
//! [`SharedStore`] (the one trait of `meshward_common::shared_store`, re-exported here with its
//! error types and in-memory model).
//!
//! A missing key is created by any write whatever its cas (see `meshward_common::shared_store`),
//! so two workers that both see "missing" and both create would race, and a late create could
//! overwrite a bucket a peer already consumed from. Hence:
//! - every table entry is created in `on_configure` (Envoy runs it first in the configuration
//!   canary, on the main thread, before any worker serves), so per-request writes are real CAS
//!   writes on existing keys;
//! - creation itself ([`create_if_absent`]) writes with a random nonzero cas, so even a racing or
//!   late creation does not overwrite live state.

pub use meshward_common::shared_store::{
    create_if_absent, MemoryStore, SetError, SharedStore, StoreError, Stored,
};

use crate::bucket::Decision;
use crate::config::Config;
use crate::table::{decide_slot, empty_entry, Decided, EntryRef, SlotEvent, SlotRef, TableKeys};

/// Attempts of one CAS loop (reads + compare-and-set writes) before giving up.
pub const MAX_CAS_ATTEMPTS: u32 = 16;

/// What [`init_table`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableInit {
    /// Entries this call created (0 when a peer VM or an earlier config created the table).
    pub created: u32,
    pub existing: u32,
}

/// Create the table's seed and entries where missing, and return the table's seed (the one in the
/// store, which is `fresh_seed` only if this call created it).
pub fn init_table(
    store: &mut dyn SharedStore,
    keys: &TableKeys,
    cfg: &Config,
    fresh_seed: [u8; 16],
) -> Result<([u8; 16], TableInit), StoreError> {
    create_if_absent(store, &keys.seed(), &fresh_seed)?;
    let seed = match store.get(&keys.seed())? {
        Some(s) => <[u8; 16]>::try_from(s.value.as_slice()).map_err(|_| StoreError::Status(0))?,
        None => return Err(StoreError::Status(0)),
    };
    let mut init = TableInit::default();
    let mut count = |created: bool| {
        if created {
            init.created = init.created.saturating_add(1);
        } else {
            init.existing = init.existing.saturating_add(1);
        }
    };
    count(create_if_absent(
        store,
        &keys.entry(EntryRef::Default),
        &empty_entry(1),
    )?);
    let set_entry = empty_entry(cfg.layout.ways());
    for i in 0..cfg.layout.sets() {
        count(create_if_absent(
            store,
            &keys.entry(EntryRef::Set(i)),
            &set_entry,
        )?);
    }
    Ok((seed, init))
}

/// The result of one request's CAS loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopOutcome {
    /// A decision that is committed (allowed: the CAS write succeeded; denied: as of the read).
    Decided {
        decided: Decided,
        /// CAS mismatches before it went through.
        retries: u32,
        /// The entry was missing and this loop created it (a table not set up in on_configure).
        late_create: bool,
    },
    /// Every attempt lost a race: the caller fails closed.
    RetriesExhausted,
    /// A host error: the caller fails closed.
    StoreFailure(StoreError),
}

/// get → [`decide_slot`] → compare-and-set, retried on `CasMismatch` up to [`MAX_CAS_ATTEMPTS`] times.
pub fn run_cas_loop(
    store: &mut dyn SharedStore,
    key: &str,
    slot: &SlotRef,
    now_ns: u64,
    cfg: &Config,
) -> LoopOutcome {
    run_cas_loop_from(store, key, slot, now_ns, cfg, None)
}

/// [`run_cas_loop`] whose first attempt uses `first`, a read the caller already made (saves a
/// `get`; a stale read only costs a CAS mismatch and a retry).
fn run_cas_loop_from(
    store: &mut dyn SharedStore,
    key: &str,
    slot: &SlotRef,
    now_ns: u64,
    cfg: &Config,
    mut first: Option<Stored>,
) -> LoopOutcome {
    let mut retries = 0;
    let mut late_create = false;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let read = match first.take() {
            Some(stored) => Ok(Some(stored)),
            None => store.get(key),
        };
        let stored = match read {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                // Never created (or a host that lost it): create it without overwriting a peer's.
                match create_if_absent(store, key, &empty_entry(slot.ways)) {
                    Ok(created) => late_create |= created,
                    Err(e) => return LoopOutcome::StoreFailure(e),
                }
                continue;
            }
            Err(e) => return LoopOutcome::StoreFailure(e),
        };
        if stored.cas == 0 {
            return LoopOutcome::StoreFailure(StoreError::NoCas);
        }
        let decided = decide_slot(Some(&stored.value), slot, now_ns, cfg);
        let Some(write) = &decided.write else {
            return LoopOutcome::Decided {
                decided,
                retries,
                late_create,
            };
        };
        match store.set(key, write, stored.cas) {
            Ok(()) => {
                return LoopOutcome::Decided {
                    decided,
                    retries,
                    late_create,
                }
            }
            Err(SetError::CasMismatch) => retries += 1,
            Err(SetError::Status(s)) => return LoopOutcome::StoreFailure(StoreError::Status(s)),
        }
    }
    LoopOutcome::RetriesExhausted
}

/// The result of charging every bucket a request draws from ([`charge_all`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Decided {
        /// Allowed: every bucket took a token, and this is the decision of the bucket with the
        /// fewest tokens left (the first such one): what the rate-limit headers describe.
        /// Denied: the bucket that refused (of several, the one with the longest Retry-After).
        decision: Decision,
        /// Slot changes the committed writes made (for the metrics).
        events: Vec<SlotEvent>,
        /// Entries created on the request path.
        late_creates: u32,
    },
    /// Some bucket's CAS loop lost every race: the caller fails closed.
    RetriesExhausted,
    /// A host error: the caller fails closed.
    StoreFailure(StoreError),
}

/// Take one token from every bucket of `charges` (shared-data key and slot), all or none as far
/// as the store allows:
///
/// 1. **check**: read every bucket's entry and decide. If any bucket is empty, the request is
///    denied and nothing is written (each read is that bucket's linearization point).
/// 2. **commit**: run each bucket's CAS loop in order (the first attempt reuses the check's read).
///    Only when another worker drained a bucket between the check and its commit is a later
///    bucket denied after an earlier one was charged: the request is then denied and the earlier
///    token stays spent, an error toward limiting, never toward allowing.
///
/// Every allowed request is committed in every bucket by a successful compare-and-set, so each
/// bucket's allowed count stays exact across workers.
pub fn charge_all(
    store: &mut dyn SharedStore,
    charges: &[(String, SlotRef)],
    now_ns: u64,
    cfg: &Config,
) -> ChargeOutcome {
    let mut reads = Vec::with_capacity(charges.len());
    let mut refused: Option<Decision> = None;
    for (key, slot) in charges {
        let stored = match store.get(key) {
            Ok(stored) => stored,
            Err(e) => return ChargeOutcome::StoreFailure(e),
        };
        let decided = decide_slot(
            stored.as_ref().map(|s| s.value.as_slice()),
            slot,
            now_ns,
            cfg,
        );
        if !decided.decision.allowed
            && refused.is_none_or(|r| decided.decision.retry_after_secs > r.retry_after_secs)
        {
            refused = Some(decided.decision);
        }
        reads.push(stored);
    }
    let mut events = Vec::new();
    let mut late_creates = 0u32;
    if let Some(decision) = refused {
        return ChargeOutcome::Decided {
            decision,
            events,
            late_creates,
        };
    }
    let mut reported: Option<Decision> = None;
    for ((key, slot), first) in charges.iter().zip(reads) {
        match run_cas_loop_from(store, key, slot, now_ns, cfg, first) {
            LoopOutcome::Decided {
                decided,
                late_create,
                ..
            } => {
                late_creates = late_creates.saturating_add(u32::from(late_create));
                if !decided.decision.allowed {
                    // Drained by another worker since the check.
                    return ChargeOutcome::Decided {
                        decision: decided.decision,
                        events,
                        late_creates,
                    };
                }
                events.extend(decided.event);
                if reported.is_none_or(|r| decided.decision.remaining < r.remaining) {
                    reported = Some(decided.decision);
                }
            }
            LoopOutcome::RetriesExhausted => return ChargeOutcome::RetriesExhausted,
            LoopOutcome::StoreFailure(e) => return ChargeOutcome::StoreFailure(e),
        }
    }
    match reported {
        Some(decision) => ChargeOutcome::Decided {
            decision,
            events,
            late_creates,
        },
        // No bucket at all: `keys::choose` never returns an empty list; refuse rather than
        // allow a request nothing was charged for.
        None => ChargeOutcome::StoreFailure(StoreError::Status(0)),
    }
}

#[cfg(test)]
mod tests;
