//! rate-limit-core's decision: the token bucket and the shared table (`SlotRef::locate` +
//! `decide_slot` over entry bytes kept as the host's shared data would keep them), driven by a
//! sequence of operations derived from the fuzz bytes (advance the clock, charge a key, corrupt
//! an entry).
//!
//! Oracle: no bucket ever grants more than it holds plus what it refilled: over any window
//! [t_i, t_j] of one bucket's granted requests, count ≤ maxTokens + ⌊tokensPerFill·(t_j−t_i) /
//! fillInterval⌋. This holds for the default bucket always, and for every key while no key was
//! evicted (eviction is the documented bounded-memory trade-off, docs/rate-limit.md); with at
//! most `ways` distinct keys, no eviction may happen at all. A decision reports `remaining ≤
//! limit`, writes an entry exactly when it allows, and never panics on corrupt entry bytes.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use meshward_fuzz::bytes::Reader;
use rate_limit_core::{decide_slot, BucketChoice, Config, SlotEvent, SlotRef};

const INTERVALS: [(&str, u64); 4] = [
    ("1s", 1_000_000_000),
    ("3s", 3_000_000_000),
    ("1m", 60_000_000_000),
    ("100ms", 100_000_000),
];

struct Params {
    max: u64,
    per_fill: u64,
    interval_ns: u64,
}

/// Over every window of grants, at most max + refills.
fn check_bound(grants: &[u64], p: &Params, what: &str) {
    for i in 0..grants.len() {
        for j in i..grants.len() {
            let span = u128::from(grants[j] - grants[i]);
            let refills = span * u128::from(p.per_fill) / u128::from(p.interval_ns);
            let count = (j - i + 1) as u128;
            assert!(
                count <= u128::from(p.max) + refills,
                "{what}: {count} grants in {span} ns (max {}, {} per {} ns)",
                p.max,
                p.per_fill,
                p.interval_ns
            );
        }
    }
}

fn bucket(r: &mut Reader<'_>) -> (String, Params) {
    let max = u64::from(r.u8() % 8) + 1;
    let per_fill = u64::from(r.u8() % 3) + 1;
    let (name, interval_ns) = INTERVALS[usize::from(r.u8()) % INTERVALS.len()];
    (
        format!(r#"{{"maxTokens":{max},"tokensPerFill":{per_fill},"fillInterval":"{name}"}}"#),
        Params {
            max,
            per_fill,
            interval_ns,
        },
    )
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let (default_json, default_p) = bucket(&mut r);
    let (key_json, key_p) = bucket(&mut r);
    let max_keys = u32::from(r.u8() % 12) + 1;
    let keys_used = usize::from(r.u8() % 12) + 1;
    let json = format!(
        r#"{{"tokenBucket":{default_json},"maxKeys":{max_keys},
            "descriptors":[{{"key":"request.headers[x-k]","tokenBucket":{key_json}}}]}}"#
    );
    let cfg = Config::parse(json.as_bytes()).expect("generated config parses");
    let ways = usize::from(cfg.layout.ways());
    let seed = [r.u8(); 16];

    let mut store: HashMap<String, Vec<u8>> = HashMap::new();
    let mut now: u64 = 1_000_000_000_000;
    let mut grants: HashMap<Option<u8>, Vec<u64>> = HashMap::new();
    let mut evicted = false;
    let mut ops = 0;
    while !r.is_empty() && ops < 300 {
        ops += 1;
        let op = r.u8();
        match op % 8 {
            // Let time pass: up to ~65 s in 1 ms steps, or up to 65 ms in 1 µs steps.
            0 => now += u64::from(r.u16()) * 1_000_000,
            1 => now += u64::from(r.u16()) * 1_000,
            // Overwrite an entry with arbitrary bytes (another format, a torn write …).
            2 => {
                let key = (r.u8() as usize) % keys_used;
                let choice = BucketChoice {
                    bucket: 1,
                    value: vec![key as u8],
                };
                let slot = SlotRef::locate(&cfg, seed, &choice);
                let len = usize::from(r.u8() % 64);
                let bytes: Vec<u8> = (0..len).map(|_| r.u8()).collect();
                store.insert(format!("{:?}", slot.entry), bytes);
                // A corrupt entry may hold any level up to full: the bound still holds, but
                // only per bucket while nothing was evicted, as for eviction.
                evicted = true;
            }
            // Charge the default bucket or a key.
            _ => {
                let key = (op & 0x10 != 0).then(|| (r.u8() as usize % keys_used) as u8);
                let choice = match key {
                    None => BucketChoice::default_bucket(),
                    Some(k) => BucketChoice {
                        bucket: 1,
                        value: vec![k],
                    },
                };
                let slot = SlotRef::locate(&cfg, seed, &choice);
                let name = format!("{:?}", slot.entry);
                let d = decide_slot(store.get(&name).map(Vec::as_slice), &slot, now, &cfg);
                assert!(d.decision.remaining <= u64::from(d.decision.limit), "{d:?}");
                assert_eq!(d.decision.allowed, d.write.is_some(), "{d:?}");
                if d.event == Some(SlotEvent::Evicted) {
                    assert!(
                        keys_used > ways,
                        "eviction with {keys_used} keys and {ways} ways"
                    );
                    evicted = true;
                }
                if let Some(bytes) = d.write {
                    store.insert(name, bytes);
                    grants.entry(key).or_default().push(now);
                }
            }
        }
    }
    for (key, times) in &grants {
        match key {
            None => check_bound(times, &default_p, "default bucket"),
            Some(k) if !evicted => check_bound(times, &key_p, &format!("key {k}")),
            Some(_) => {}
        }
    }
});
