use super::*;
use std::collections::HashMap;

use crate::bucket::Decision;
use crate::keys::BucketChoice;
use crate::table::SlotEvent;

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_000 * SEC;

fn cfg(json: &str) -> Config {
    Config::parse(json.as_bytes()).unwrap()
}

fn small() -> Config {
    cfg(
        r#"{"tokenBucket":{"maxTokens":5,"tokensPerFill":1,"fillInterval":"1s"},
            "descriptors":[{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}}],"maxKeys":64}"#,
    )
}

/// A configured table and a request's slot in it.
fn setup(c: &Config, store: &mut MemoryStore, value: &str) -> (String, SlotRef) {
    let keys = TableKeys::new("rl", c);
    let (seed, _) = init_table(store, &keys, c, [5; 16]).unwrap();
    let slot = SlotRef::locate(
        c,
        seed,
        &BucketChoice {
            bucket: 1,
            value: value.as_bytes().to_vec(),
        },
    );
    (keys.entry(slot.entry), slot)
}

fn allowed(outcome: &LoopOutcome) -> bool {
    matches!(outcome, LoopOutcome::Decided { decided, .. } if decided.decision.allowed)
}

/// Wraps a store and runs `before_set` (another worker's actions) before some of its writes:
/// the forced interleaving "A reads, B reads and writes, A writes".
struct Interleave<F: FnMut(u32)> {
    store: MemoryStore,
    sets: u32,
    before_set: F,
}

impl<F: FnMut(u32)> SharedStore for Interleave<F> {
    fn get(&mut self, key: &str) -> Result<Option<Stored>, StoreError> {
        self.store.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        self.sets += 1;
        (self.before_set)(self.sets);
        self.store.set(key, value, cas)
    }
    fn creation_cas(&mut self) -> u32 {
        self.store.creation_cas()
    }
}

#[test]
fn memory_store_models_envoy() {
    let mut s = MemoryStore::new();
    assert_eq!(s.get("k").unwrap(), None);
    // A missing key is created whatever the cas.
    s.set("k", b"a", 12345).unwrap();
    let a = s.get("k").unwrap().unwrap();
    assert_eq!(a.value, b"a");
    assert_ne!(a.cas, 0);
    assert_eq!(s.set("k", b"b", a.cas + 1), Err(SetError::CasMismatch));
    s.set("k", b"b", a.cas).unwrap();
    let b = s.get("k").unwrap().unwrap();
    assert!(b.cas > a.cas);
    assert_eq!(s.set("k", b"c", a.cas), Err(SetError::CasMismatch));
    // cas 0 overwrites.
    s.set("k", b"d", 0).unwrap();
    assert_eq!(s.get("k").unwrap().unwrap().value, b"d");
}

/// Why creation must not be a plain set: with Envoy's semantics a late create overwrites a bucket
/// a peer has already consumed from (the lost update this design avoids).
#[test]
fn a_plain_late_create_loses_an_update() {
    let c = small();
    let mut store = MemoryStore::new();
    let slot = SlotRef::locate(
        &c,
        [0; 16],
        &BucketChoice {
            bucket: 1,
            value: b"ip".to_vec(),
        },
    );
    let key = "entry";
    // Worker A sees the key missing ...
    assert_eq!(store.get(key).unwrap(), None);
    // ... worker B creates it and spends all 5 tokens ...
    store.set(key, &empty_entry(slot.ways), 0).unwrap();
    let mut b = store.handle(7);
    for _ in 0..5 {
        assert!(allowed(&run_cas_loop(&mut b, key, &slot, T0, &c)));
    }
    assert!(!allowed(&run_cas_loop(&mut b, key, &slot, T0, &c)));
    // ... and A's plain create (any cas: the key was missing when A looked) lands late.
    store.set(key, &empty_entry(slot.ways), 0).unwrap();
    assert!(
        allowed(&run_cas_loop(&mut b, key, &slot, T0, &c)),
        "the bucket was reset"
    );
}

/// The same interleaving with `create_if_absent`: the late create fails, nothing is lost.
#[test]
fn create_if_absent_never_overwrites_a_peer() {
    let c = small();
    let shared = MemoryStore::new();
    let slot = SlotRef::locate(
        &c,
        [0; 16],
        &BucketChoice {
            bucket: 1,
            value: b"ip".to_vec(),
        },
    );
    let key = "entry";
    let peer = shared.handle(0x1111_1111);
    let mut a = Interleave {
        store: shared.handle(0x2222_2222),
        sets: 0,
        before_set: |n| {
            if n == 1 {
                // Between A's "missing" read and A's create: B creates and drains the bucket.
                let mut b = peer.clone();
                assert!(create_if_absent(&mut b, key, &empty_entry(slot.ways)).unwrap());
                for _ in 0..5 {
                    assert!(allowed(&run_cas_loop(&mut b, key, &slot, T0, &c)));
                }
            }
        },
    };
    assert!(
        !create_if_absent(&mut a, key, &empty_entry(slot.ways)).unwrap(),
        "A must not create"
    );
    let mut b = shared.handle(3);
    assert!(
        !allowed(&run_cas_loop(&mut b, key, &slot, T0, &c)),
        "the drained bucket survived"
    );
}

/// A late-created entry on the request path, under the same race: still exact.
#[test]
fn late_creation_in_the_loop_is_exact() {
    let c = small();
    let shared = MemoryStore::new();
    let slot = SlotRef::locate(
        &c,
        [0; 16],
        &BucketChoice {
            bucket: 1,
            value: b"ip".to_vec(),
        },
    );
    let key = "never-initialised";
    let peer = shared.handle(0x1111_1111);
    let mut a = Interleave {
        store: shared.handle(0x2222_2222),
        sets: 0,
        before_set: |n| {
            if n == 1 {
                let mut b = peer.clone();
                for _ in 0..5 {
                    assert!(allowed(&run_cas_loop(&mut b, key, &slot, T0, &c)));
                }
            }
        },
    };
    let outcome = run_cas_loop(&mut a, key, &slot, T0, &c);
    assert!(
        matches!(
            outcome,
            LoopOutcome::Decided {
                late_create: false,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(!allowed(&outcome), "A sees the 5 tokens B spent");
    let mut fresh = shared.handle(9);
    let other = SlotRef::locate(
        &c,
        [0; 16],
        &BucketChoice {
            bucket: 1,
            value: b"other".to_vec(),
        },
    );
    match run_cas_loop(&mut fresh, "another-missing", &other, T0, &c) {
        LoopOutcome::Decided {
            late_create,
            decided,
            ..
        } => {
            assert!(late_create);
            assert!(decided.decision.allowed);
        }
        o => panic!("{o:?}"),
    }
}

/// Two workers read the same version; the second write gets CasMismatch and retries on fresh
/// state.
#[test]
fn interleaved_workers_retry_and_stay_exact() {
    let c = small();
    let mut shared = MemoryStore::new();
    let (key, slot) = setup(&c, &mut shared, "10.0.0.1");
    let peer = shared.handle(1);
    let mut a = Interleave {
        store: shared.handle(2),
        sets: 0,
        before_set: |_| {
            // Before every one of A's writes, B completes a request on the same bucket.
            let mut b = peer.clone();
            let _ = run_cas_loop(&mut b, &key, &slot, T0, &c);
        },
    };
    let first = run_cas_loop(&mut a, &key, &slot, T0, &c);
    // A's first write lost to B's; A re-read and wrote again, losing again ... until B's requests
    // emptied the bucket, at which point A's re-read denies without writing.
    match first {
        LoopOutcome::Decided {
            retries, decided, ..
        } => {
            assert_eq!(retries, 5, "each of B's 5 successful writes forced a retry");
            assert!(!decided.decision.allowed);
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn a_single_interleaving_costs_one_retry() {
    let c = small();
    let mut shared = MemoryStore::new();
    let (key, slot) = setup(&c, &mut shared, "10.0.0.1");
    let peer = shared.handle(1);
    let mut total_allowed = 0;
    let mut a = Interleave {
        store: shared.handle(2),
        sets: 0,
        before_set: |n| {
            if n == 1 {
                let mut b = peer.clone();
                assert!(allowed(&run_cas_loop(&mut b, &key, &slot, T0, &c)));
            }
        },
    };
    match run_cas_loop(&mut a, &key, &slot, T0, &c) {
        LoopOutcome::Decided {
            retries: 1,
            decided,
            ..
        } => {
            assert!(decided.decision.allowed);
            assert_eq!(decided.decision.remaining, 3, "A's token came after B's");
        }
        o => panic!("{o:?}"),
    }
    total_allowed += 2;
    let mut b = shared.handle(3);
    while allowed(&run_cas_loop(&mut b, &key, &slot, T0, &c)) {
        total_allowed += 1;
    }
    assert_eq!(total_allowed, 5);
}

#[test]
fn retries_run_out_and_the_caller_is_told() {
    let c = cfg(
        r#"{"tokenBucket":{"maxTokens":1000,"tokensPerFill":1,"fillInterval":"1s"},
                    "descriptors":[{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}}],"maxKeys":8}"#,
    );
    let mut shared = MemoryStore::new();
    let (key, slot) = setup(&c, &mut shared, "x");
    let peer = shared.handle(1);
    let mut a = Interleave {
        store: shared.handle(2),
        sets: 0,
        before_set: |_| {
            let mut b = peer.clone();
            assert!(allowed(&run_cas_loop(&mut b, &key, &slot, T0, &c)));
        },
    };
    assert_eq!(
        run_cas_loop(&mut a, &key, &slot, T0, &c),
        LoopOutcome::RetriesExhausted
    );
    assert_eq!(a.sets, MAX_CAS_ATTEMPTS);
}

/// A store whose calls fail with a given status.
struct Failing {
    get: Option<StoreError>,
    set: Option<SetError>,
    inner: MemoryStore,
}

impl SharedStore for Failing {
    fn get(&mut self, key: &str) -> Result<Option<Stored>, StoreError> {
        match self.get {
            Some(e) => Err(e),
            None => self.inner.get(key),
        }
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        match self.set {
            Some(e) => Err(e),
            None => self.inner.set(key, value, cas),
        }
    }
    fn creation_cas(&mut self) -> u32 {
        5
    }
}

#[test]
fn host_errors_are_store_failures() {
    let c = small();
    let mut shared = MemoryStore::new();
    let (key, slot) = setup(&c, &mut shared, "x");
    let mut f = Failing {
        get: Some(StoreError::Status(10)),
        set: None,
        inner: shared.clone(),
    };
    assert_eq!(
        run_cas_loop(&mut f, &key, &slot, T0, &c),
        LoopOutcome::StoreFailure(StoreError::Status(10))
    );
    let mut f = Failing {
        get: None,
        set: Some(SetError::Status(2)),
        inner: shared.clone(),
    };
    assert_eq!(
        run_cas_loop(&mut f, &key, &slot, T0, &c),
        LoopOutcome::StoreFailure(StoreError::Status(2))
    );
    // Missing key whose creation fails.
    let mut f = Failing {
        get: None,
        set: Some(SetError::Status(11)),
        inner: MemoryStore::new(),
    };
    assert_eq!(
        run_cas_loop(&mut f, "k", &slot, T0, &c),
        LoopOutcome::StoreFailure(StoreError::Status(11))
    );
    // An existing key without a cas cannot be compare-and-set.
    struct NoCas;
    impl SharedStore for NoCas {
        fn get(&mut self, _: &str) -> Result<Option<Stored>, StoreError> {
            Ok(Some(Stored {
                value: empty_entry(8),
                cas: 0,
            }))
        }
        fn set(&mut self, _: &str, _: &[u8], _: u32) -> Result<(), SetError> {
            Ok(())
        }
        fn creation_cas(&mut self) -> u32 {
            1
        }
    }
    assert_eq!(
        run_cas_loop(&mut NoCas, &key, &slot, T0, &c),
        LoopOutcome::StoreFailure(StoreError::NoCas)
    );
}

#[test]
fn init_is_idempotent_and_every_vm_agrees_on_the_seed() {
    let c = small();
    let keys = TableKeys::new("rl", &c);
    let shared = MemoryStore::new();
    let (seed1, init1) = init_table(&mut shared.handle(1), &keys, &c, [1; 16]).unwrap();
    assert_eq!(seed1, [1; 16]);
    assert_eq!(
        init1,
        TableInit {
            created: 1 + c.layout.sets(),
            existing: 0
        }
    );
    let (seed2, init2) = init_table(&mut shared.handle(2), &keys, &c, [2; 16]).unwrap();
    assert_eq!(seed2, seed1, "a later VM adopts the table's seed");
    assert_eq!(
        init2,
        TableInit {
            created: 0,
            existing: 1 + c.layout.sets()
        }
    );
    assert_eq!(shared.len(), 2 + c.layout.sets() as usize);
    // Another plugin name or other bucket semantics: another table.
    let other = TableKeys::new("rl2", &c);
    assert_ne!(other.seed(), keys.seed());
    // Racing first inits: B initialises completely between A's "missing" read and A's write.
    let shared = MemoryStore::new();
    let peer = shared.handle(11);
    let mut a = Interleave {
        store: shared.handle(12),
        sets: 0,
        before_set: |n| {
            if n == 1 {
                init_table(&mut peer.clone(), &keys, &c, [0xbb; 16]).unwrap();
            }
        },
    };
    let (seed_a, init_a) = init_table(&mut a, &keys, &c, [0xaa; 16]).unwrap();
    assert_eq!(seed_a, [0xbb; 16]);
    assert_eq!(init_a.created, 0);
}

/// 4 workers on real threads, one bucket of 1,000 tokens, no refill during the burst: exactly
/// 1,000 requests pass.
#[test]
fn real_threads_exact_total() {
    let c = cfg(
        r#"{"tokenBucket":{"maxTokens":1000,"tokensPerFill":1,"fillInterval":"1h"},
                    "descriptors":[{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}}],"maxKeys":64}"#,
    );
    let mut shared = MemoryStore::new();
    let (key, slot) = setup(&c, &mut shared, "10.0.0.9");
    let results: Vec<(u32, u32, u32)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u32)
            .map(|w| {
                let mut store = shared.handle(100 + w);
                let (key, c) = (&key, &c);
                s.spawn(move || {
                    let (mut ok, mut retries, mut exhausted) = (0, 0, 0);
                    for _ in 0..600 {
                        match run_cas_loop(&mut store, key, &slot, T0, c) {
                            LoopOutcome::Decided {
                                decided,
                                retries: r,
                                ..
                            } => {
                                ok += u32::from(decided.decision.allowed);
                                retries += r;
                            }
                            LoopOutcome::RetriesExhausted => exhausted += 1,
                            LoopOutcome::StoreFailure(e) => panic!("{e:?}"),
                        }
                    }
                    (ok, retries, exhausted)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: u32 = results.iter().map(|r| r.0).sum();
    let exhausted: u32 = results.iter().map(|r| r.2).sum();
    // A thread preempted mid-loop on a loaded machine can exhaust its retries now and then; that
    // request is refused (the documented safe outcome) and never allowed past the bucket, so the
    // allowed total is still exactly the bucket (2,400 requests for 1,000 tokens).
    assert!(exhausted < 120, "{results:?}");
    assert_eq!(ok, 1000, "{results:?}");
}

/// Refill over a virtual clock, two workers alternating.
#[test]
fn refill_over_virtual_time_across_workers() {
    let c = small(); // 5 tokens, 1 per second
    let mut shared = MemoryStore::new();
    let (key, slot) = setup(&c, &mut shared, "10.0.0.1");
    let mut workers = [shared.handle(1), shared.handle(2)];
    let mut ok = 0;
    // 100 requests per second for 60 s, alternating workers.
    for i in 0..6_000u64 {
        let w = &mut workers[(i % 2) as usize];
        ok += u32::from(allowed(&run_cas_loop(
            w,
            &key,
            &slot,
            T0 + i * 10_000_000,
            &c,
        )));
    }
    // 5 at start + 1 per second over 59.99 s.
    assert_eq!(ok, 5 + 59);
}

/// A million distinct keys: the table never grows, and the events say what happened.
#[test]
fn a_million_distinct_keys_stay_in_a_bounded_table() {
    let c = cfg(
        r#"{"tokenBucket":{"maxTokens":3,"tokensPerFill":1,"fillInterval":"1s"},
                    "descriptors":[{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}}],"maxKeys":1000}"#,
    );
    let keys = TableKeys::new("rl", &c);
    let mut store = MemoryStore::new();
    let (seed, _) = init_table(&mut store, &keys, &c, [3; 16]).unwrap();
    let (entries, bytes) = (store.len(), store.bytes());
    assert_eq!(entries, 2 + 125);
    let mut events = HashMap::<Option<SlotEvent>, u32>::new();
    let mut allowed_count = 0u32;
    for i in 0..1_000_000u64 {
        let choice = BucketChoice {
            bucket: 1,
            value: format!("k{i}").into_bytes(),
        };
        let slot = SlotRef::locate(&c, seed, &choice);
        // 10,000 new keys per virtual second: a slot is reused ~0.1 s after its last request.
        let now = T0 + i * 100_000;
        match run_cas_loop(&mut store, &keys.entry(slot.entry), &slot, now, &c) {
            LoopOutcome::Decided { decided, .. } => {
                allowed_count += u32::from(decided.decision.allowed);
                *events.entry(decided.event).or_default() += 1;
            }
            o => panic!("{o:?}"),
        }
        if i % 100_000 == 0 {
            assert_eq!(store.len(), entries);
            assert_eq!(store.bytes(), bytes, "entries have a fixed size");
        }
    }
    assert_eq!(store.len(), entries);
    assert_eq!(store.bytes(), bytes);
    let claimed = events.get(&Some(SlotEvent::Claimed)).copied().unwrap_or(0);
    let evicted = events.get(&Some(SlotEvent::Evicted)).copied().unwrap_or(0);
    assert_eq!(claimed, 1000, "every slot is claimed once: {events:?}");
    // Keys arrive at 10,000/s into 1,000 slots and a bucket is full again only 1 s after its
    // request: the table is under pressure, so new keys evict and inherit partly used buckets.
    assert!(evicted > 50_000, "{events:?}");
    // Nobody got a fresh bucket by cycling keys: over the 100 virtual seconds the million keys
    // together got at most what the 1,000 slots hold and refill (3 + 1/s each).
    assert!(allowed_count <= 1000 * 3 + 1000 * 100, "{allowed_count}");
    assert!(
        allowed_count >= 1000 * 100,
        "{allowed_count}: the slots' refill is not wasted"
    );
}

/// With the same pressure but buckets that are idle again by the time a slot is reused, every
/// reuse is a harmless reclaim.
#[test]
fn slots_of_idle_buckets_are_reclaimed_not_evicted() {
    let c = cfg(
        r#"{"tokenBucket":{"maxTokens":3,"tokensPerFill":1,"fillInterval":"1s"},
                    "descriptors":[{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}}],"maxKeys":1000}"#,
    );
    let keys = TableKeys::new("rl", &c);
    let mut store = MemoryStore::new();
    let (seed, _) = init_table(&mut store, &keys, &c, [3; 16]).unwrap();
    let mut evicted = 0;
    let mut reclaimed = 0;
    for i in 0..100_000u64 {
        let slot = SlotRef::locate(
            &c,
            seed,
            &BucketChoice {
                bucket: 1,
                value: format!("k{i}").into_bytes(),
            },
        );
        // 10 new keys per second: a bucket is full again 1 s after its one request.
        match run_cas_loop(
            &mut store,
            &keys.entry(slot.entry),
            &slot,
            T0 + i * 100_000_000,
            &c,
        ) {
            LoopOutcome::Decided { decided, .. } => {
                assert!(decided.decision.allowed);
                evicted += u32::from(decided.event == Some(SlotEvent::Evicted));
                reclaimed += u32::from(decided.event == Some(SlotEvent::Reclaimed));
            }
            o => panic!("{o:?}"),
        }
    }
    assert_eq!(evicted, 0);
    assert!(reclaimed > 90_000);
}

/// A request's buckets (as `keys::choose` lists them) located in a configured table.
fn charges(
    c: &Config,
    keys: &TableKeys,
    seed: [u8; 16],
    choices: &[BucketChoice],
) -> Vec<(String, SlotRef)> {
    choices
        .iter()
        .map(|choice| {
            let slot = SlotRef::locate(c, seed, choice);
            (keys.entry(slot.entry), slot)
        })
        .collect()
}

fn key(bucket: u16, value: &str) -> BucketChoice {
    BucketChoice {
        bucket,
        value: value.as_bytes().to_vec(),
    }
}

fn charged(outcome: &ChargeOutcome) -> Decision {
    match outcome {
        ChargeOutcome::Decided { decision, .. } => *decision,
        o => panic!("{o:?}"),
    }
}

const PER_KEY_AND_DEFAULT: &str = r#"{"tokenBucket":{"maxTokens":20,"tokensPerFill":1,"fillInterval":"1h"},
    "descriptors":[{"key":"request.headers[x-api-key]",
        "tokenBucket":{"maxTokens":5,"tokensPerFill":1,"fillInterval":"1h"}}],"maxKeys":1000}"#;

/// The evasion of issue 12: a fresh key per request is a fresh bucket, but the default bucket is
/// charged too, so 60 keys against a default of 20 get exactly 20 requests through.
#[test]
fn fresh_keys_still_draw_from_the_default_bucket() {
    let c = cfg(PER_KEY_AND_DEFAULT);
    let keys = TableKeys::new("rl", &c);
    let mut store = MemoryStore::new();
    let (seed, _) = init_table(&mut store, &keys, &c, [4; 16]).unwrap();
    let mut allowed = 0;
    for i in 0..60 {
        let request = [key(1, &format!("k{i}")), BucketChoice::default_bucket()];
        let d = charged(&charge_all(
            &mut store,
            &charges(&c, &keys, seed, &request),
            T0,
            &c,
        ));
        allowed += u32::from(d.allowed);
        if i >= 20 {
            // The default bucket refused: its numbers are the ones reported.
            assert!(!d.allowed);
            // One token an hour.
            assert_eq!((d.limit, d.remaining, d.retry_after_secs), (20, 0, 3600));
        }
    }
    assert_eq!(allowed, 20);
    // A refused request took nothing: key 59 never got a token, so it still has 5.
    let d = charged(&charge_all(
        &mut store,
        &charges(&c, &keys, seed, &[key(1, "k59")]),
        T0,
        &c,
    ));
    assert_eq!((d.allowed, d.remaining), (true, 4));
}

#[test]
fn the_reported_bucket_is_the_tightest_one() {
    let c = cfg(PER_KEY_AND_DEFAULT);
    let keys = TableKeys::new("rl", &c);
    let mut store = MemoryStore::new();
    let (seed, _) = init_table(&mut store, &keys, &c, [4; 16]).unwrap();
    let both = |v: &str| [key(1, v), BucketChoice::default_bucket()];
    // Allowed: the key's bucket (4 left) is tighter than the default one (19 left).
    let d = charged(&charge_all(
        &mut store,
        &charges(&c, &keys, seed, &both("a")),
        T0,
        &c,
    ));
    assert_eq!((d.allowed, d.limit, d.remaining), (true, 5, 4));
    for _ in 0..4 {
        assert!(
            charged(&charge_all(
                &mut store,
                &charges(&c, &keys, seed, &both("a")),
                T0,
                &c
            ))
            .allowed
        );
    }
    // Refused by the key's bucket: its numbers; the default bucket was not charged (15 left).
    let d = charged(&charge_all(
        &mut store,
        &charges(&c, &keys, seed, &both("a")),
        T0,
        &c,
    ));
    assert_eq!(
        (d.allowed, d.limit, d.remaining, d.retry_after_secs),
        (false, 5, 0, 3600)
    );
    // With 11 more of the default's tokens spent elsewhere it becomes the tightest (3 left after
    // this request, against 4 in the new key's bucket).
    for i in 0..11 {
        charged(&charge_all(
            &mut store,
            &charges(&c, &keys, seed, &both(&format!("x{i}"))),
            T0,
            &c,
        ));
    }
    let d = charged(&charge_all(
        &mut store,
        &charges(&c, &keys, seed, &both("b")),
        T0,
        &c,
    ));
    assert_eq!((d.allowed, d.limit, d.remaining), (true, 20, 3));
    // Several values of one request: every one is charged; a drained one refuses the request.
    let d = charged(&charge_all(
        &mut store,
        &charges(
            &c,
            &keys,
            seed,
            &[key(1, "decoy"), key(1, "a"), BucketChoice::default_bucket()],
        ),
        T0,
        &c,
    ));
    assert!(!d.allowed);
    assert_eq!(d.limit, 5);
    // ... and the decoy was not charged for it.
    let d = charged(&charge_all(
        &mut store,
        &charges(&c, &keys, seed, &[key(1, "decoy")]),
        T0,
        &c,
    ));
    assert_eq!(d.remaining, 4);
}

/// A bucket drained by another worker between the check and its commit: the request is refused
/// and the bucket committed before it stays charged (an error toward limiting).
#[test]
fn a_bucket_drained_between_check_and_commit_refuses_the_request() {
    let c = cfg(PER_KEY_AND_DEFAULT);
    let keys = TableKeys::new("rl", &c);
    let shared = MemoryStore::new();
    let mut setup = shared.handle(1);
    let (seed, _) = init_table(&mut setup, &keys, &c, [4; 16]).unwrap();
    // The default bucket has one token left.
    for i in 0..19 {
        let request = [key(1, &format!("warm{i}")), BucketChoice::default_bucket()];
        assert!(
            charged(&charge_all(
                &mut setup,
                &charges(&c, &keys, seed, &request),
                T0,
                &c
            ))
            .allowed
        );
    }
    let request = charges(
        &c,
        &keys,
        seed,
        &[key(1, "k"), BucketChoice::default_bucket()],
    );
    let default_entry = request[1].clone();
    let peer = shared.handle(2);
    let mut a = Interleave {
        store: shared.handle(3),
        sets: 0,
        before_set: |n| {
            if n == 1 {
                // After A's check, before A's first commit: a peer takes the last default token.
                let mut b = peer.clone();
                let o = run_cas_loop(&mut b, &default_entry.0, &default_entry.1, T0, &c);
                assert!(allowed(&o));
            }
        },
    };
    let d = charged(&charge_all(&mut a, &request, T0, &c));
    assert!(!d.allowed);
    assert_eq!(d.limit, 20);
    // The key's token was committed before the default bucket refused.
    let mut check = shared.handle(4);
    let d = charged(&charge_all(
        &mut check,
        &charges(&c, &keys, seed, &[key(1, "k")]),
        T0,
        &c,
    ));
    assert_eq!(d.remaining, 3);
}

#[test]
fn a_store_failure_while_charging_fails_closed() {
    struct Broken;
    impl SharedStore for Broken {
        fn get(&mut self, _: &str) -> Result<Option<Stored>, StoreError> {
            Err(StoreError::Status(2))
        }
        fn set(&mut self, _: &str, _: &[u8], _: u32) -> Result<(), SetError> {
            Err(SetError::Status(2))
        }
        fn creation_cas(&mut self) -> u32 {
            1
        }
    }
    let c = cfg(PER_KEY_AND_DEFAULT);
    let keys = TableKeys::new("rl", &c);
    let request = charges(
        &c,
        &keys,
        [0; 16],
        &[key(1, "k"), BucketChoice::default_bucket()],
    );
    assert_eq!(
        charge_all(&mut Broken, &request, T0, &c),
        ChargeOutcome::StoreFailure(StoreError::Status(2))
    );
    // Nothing to charge is not an allowed request.
    assert!(matches!(
        charge_all(&mut MemoryStore::new(), &[], T0, &c),
        ChargeOutcome::StoreFailure(_)
    ));
}
