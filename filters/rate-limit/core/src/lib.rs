//! Pure decision core of the meshward rate-limit filter (no proxy-wasm here).
//!
//! - [`config`]: pluginConfig parsing and validation into [`Config`].
//! - [`key_spec`]: descriptor keys as the config names them.
//! - [`layout`]: the slot table's geometry and format version, fixed by the config.
//! - [`keys`]: which bucket a request draws from (descriptor keys, `match`, the default bucket).
//! - [`bucket`]: the token bucket arithmetic (GCRA in exact integer time units).
//! - [`table`]: the fixed slot table in shared data (slot choice, eviction) and [`decide_slot`].
//! - [`store`]: the CAS loop (one bucket; [`charge_all`] for every bucket of a request) over a [`SharedStore`] (Envoy's shared data, or [`MemoryStore`]).
//! - [`verdict`]: [`decide`]: one request from its [`RequestFacts`] to its charged buckets.
//! - [`headers`]: the response headers of a decision.
//!
//! The design and its arithmetic are documented in docs/rate-limit.md.
// A filter never panics: no unwrap/expect/panic, no indexing that input could reach (tests may).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

pub mod bucket;
pub mod config;
pub mod headers;
pub mod key_spec;
pub mod keys;
pub mod layout;
pub mod store;
pub mod table;
pub mod verdict;

pub use bucket::{Decision, TokenBucket};
pub use config::{Config, HeaderStyle};
pub use key_spec::KeySpec;
pub use keys::{BucketChoice, IdentityFact, RequestFacts, Unchargeable};
pub use layout::TableLayout;
pub use store::{
    charge_all, init_table, run_cas_loop, ChargeOutcome, LoopOutcome, MemoryStore, SetError,
    SharedStore, StoreError, Stored, TableInit, MAX_CAS_ATTEMPTS,
};
pub use table::{decide_slot, empty_entry, Decided, EntryRef, SlotEvent, SlotRef, TableKeys};
pub use verdict::{decide, Verdict};
