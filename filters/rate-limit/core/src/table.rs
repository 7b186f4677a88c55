//! The slot table: bounded bucket state in Envoy shared data, and [`decide_slot`].
//!
//! Shared data has no delete, so the state lives in a fixed table created up front: `sets` entries
//! of `ways` slots each (`sets * ways <= maxKeys`), plus one entry for the default bucket. A key
//! value hashes (SipHash-1-3, 128 bits, keyed by a per-table random seed) to one set (low half)
//! and a 64-bit fingerprint (high half). A slot holds `(fingerprint, bucket id, TAT)`.
//!
//! Slot choice for a key that is not in its set (see docs/rate-limit.md for the argument):
//! 1. an empty slot, else
//! 2. the slot whose bucket is closest to full (smallest time-to-full; the lowest index on ties).
//!    If that bucket is full, it is idle: reusing it loses nothing (the new key starts full, as it
//!    would anyway). Otherwise it is an *eviction under pressure*, and the new key **inherits**
//!    the evicted bucket's time-to-full instead of a full bucket. Since a key is only evicted when
//!    it is the fullest of its set, and time-to-full only shrinks with time for every slot alike,
//!    a key that comes back never finds a slot fuller than its own bucket would have been: cycling
//!    keys cannot reset a bucket.
//!
//! A denied request writes nothing (its read is the linearization point), so neither does a
//! denied eviction.

use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

use crate::bucket::Decision;
use crate::config::{Config, DEFAULT_BUCKET};
use crate::keys::BucketChoice;
use crate::layout::FORMAT_VERSION;

const HEADER_BYTES: usize = 2; // version, ways
const SLOT_BYTES: usize = 8 + 2 + 16; // fingerprint, bucket id, TAT
/// The fingerprint of the default bucket's single slot (table fingerprints are never 0).
const DEFAULT_FINGERPRINT: u64 = 1;

/// Which shared-data entry a request's bucket lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryRef {
    Default,
    Set(u32),
}

/// A request's bucket: its entry, the entry's ways, and the slot identity within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRef {
    pub entry: EntryRef,
    pub ways: u8,
    pub fingerprint: u64,
    pub bucket: u16,
}

impl SlotRef {
    /// Locate the bucket of `choice` in the table keyed by `seed`.
    pub fn locate(cfg: &Config, seed: [u8; 16], choice: &BucketChoice) -> Self {
        if choice.bucket == DEFAULT_BUCKET {
            return Self {
                entry: EntryRef::Default,
                ways: 1,
                fingerprint: DEFAULT_FINGERPRINT,
                bucket: DEFAULT_BUCKET,
            };
        }
        let (k0, k1) = split_seed(seed);
        let mut h = SipHasher13::new_with_keys(k0, k1);
        h.write_u16(choice.bucket);
        h.write_usize(choice.value.len());
        h.write(&choice.value);
        let hash = h.finish128();
        let set = u32::try_from(
            hash.h1
                .checked_rem(u64::from(cfg.layout.sets()))
                .unwrap_or(0),
        )
        .unwrap_or(0);
        Self {
            entry: EntryRef::Set(set),
            ways: cfg.layout.ways(),
            fingerprint: hash.h2.max(1),
            bucket: choice.bucket,
        }
    }
}

fn split_seed(seed: [u8; 16]) -> (u64, u64) {
    let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = seed;
    (
        u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
    )
}

/// Shared-data key names of one table: `meshward.rate_limit/<plugin>/<state id>/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableKeys {
    prefix: String,
}

impl TableKeys {
    pub fn new(plugin_name: &str, cfg: &Config) -> Self {
        Self {
            prefix: format!(
                "meshward.rate_limit/{plugin_name}/v{FORMAT_VERSION}-{:016x}",
                cfg.state_id
            ),
        }
    }
    pub fn seed(&self) -> String {
        format!("{}/seed", self.prefix)
    }
    pub fn entry(&self, entry: EntryRef) -> String {
        match entry {
            EntryRef::Default => format!("{}/default", self.prefix),
            EntryRef::Set(i) => format!("{}/s{i}", self.prefix),
        }
    }
}

/// One slot's stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Slot {
    fingerprint: u64,
    bucket: u16,
    tat: u128,
}

/// The encoding of an entry with `ways` empty slots (what table creation writes).
pub fn empty_entry(ways: u8) -> Vec<u8> {
    encode(&vec![Slot::default(); usize::from(ways)])
}

fn encode(slots: &[Slot]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(HEADER_BYTES.saturating_add(slots.len().saturating_mul(SLOT_BYTES)));
    out.push(FORMAT_VERSION);
    out.push(u8::try_from(slots.len()).unwrap_or(u8::MAX));
    for s in slots {
        out.extend_from_slice(&s.fingerprint.to_le_bytes());
        out.extend_from_slice(&s.bucket.to_le_bytes());
        out.extend_from_slice(&s.tat.to_le_bytes());
    }
    out
}

/// `None` unless `bytes` is exactly an entry of `ways` slots in this format.
fn decode(bytes: &[u8], ways: u8) -> Option<Vec<Slot>> {
    let (&[version, n], body) = bytes.split_first_chunk::<HEADER_BYTES>()?;
    if version != FORMAT_VERSION
        || n != ways
        || body.len() != usize::from(ways).checked_mul(SLOT_BYTES)?
    {
        return None;
    }
    body.chunks_exact(SLOT_BYTES)
        .map(|c| {
            let (fp, rest) = c.split_first_chunk::<8>()?;
            let (bucket, rest) = rest.split_first_chunk::<2>()?;
            let tat = rest.first_chunk::<16>()?;
            Some(Slot {
                fingerprint: u64::from_le_bytes(*fp),
                bucket: u16::from_le_bytes(*bucket),
                tat: u128::from_le_bytes(*tat),
            })
        })
        .collect()
}

/// What happened to a slot, when a decision changed the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotEvent {
    /// The key took a never-used slot (full bucket).
    Claimed,
    /// The key took an idle slot (that bucket was full: nothing lost; full bucket).
    Reclaimed,
    /// The key evicted a bucket that was not full, inheriting its time-to-full.
    Evicted,
    /// The entry was unreadable (not written by this format) and was replaced by a fresh one.
    Reset,
}

/// The result of [`decide_slot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The new entry to compare-and-set; `None` when nothing changes (a denial).
    pub write: Option<Vec<u8>>,
    pub decision: Decision,
    /// The slot change `write` commits, if any.
    pub event: Option<SlotEvent>,
}

/// The pure per-request step: given the current entry bytes (`None`: an entry with no state yet)
/// and the time, take a token from `slot`'s bucket. `cfg` gives the bucket parameters.
pub fn decide_slot(entry: Option<&[u8]>, slot: &SlotRef, now_ns: u64, cfg: &Config) -> Decided {
    let (mut slots, reset) = match entry.map(|b| decode(b, slot.ways)) {
        Some(Some(slots)) => (slots, false),
        Some(None) => (vec![Slot::default(); usize::from(slot.ways)], true),
        None => (vec![Slot::default(); usize::from(slot.ways)], false),
    };
    let Some(bucket) = cfg.bucket(slot.bucket).copied() else {
        // A slot for a bucket id this config does not have cannot be located; deny.
        let decision = cfg.default_bucket.take(u128::MAX, now_ns).1;
        return Decided {
            write: None,
            decision,
            event: None,
        };
    };
    // The stored TAT of a bucket, converted when the slot was another bucket's (inheritance).
    let deficit_ns = |s: &Slot| {
        cfg.bucket(s.bucket)
            .map_or(0, |b| b.deficit_ns(s.tat, now_ns))
    };

    let (index, tat, mut event) =
        if let Some(i) = slots.iter().position(|s| s.fingerprint == slot.fingerprint) {
            let found = slots.get(i).copied().unwrap_or_default();
            let tat = if found.bucket == slot.bucket {
                found.tat
            } else {
                bucket.tat_for_deficit(deficit_ns(&found), now_ns)
            };
            (i, tat, None)
        } else if let Some(i) = slots.iter().position(|s| s.fingerprint == 0) {
            (i, 0, Some(SlotEvent::Claimed))
        } else {
            let victim = slots
                .iter()
                .enumerate()
                .map(|(i, s)| (deficit_ns(s), i))
                .min();
            match victim {
                Some((0, i)) => (i, 0, Some(SlotEvent::Reclaimed)),
                Some((d, i)) => (
                    i,
                    bucket.tat_for_deficit(d, now_ns),
                    Some(SlotEvent::Evicted),
                ),
                None => (0, 0, Some(SlotEvent::Claimed)), // zero ways: not produced by any layout
            }
        };
    if reset {
        event = Some(SlotEvent::Reset);
    }
    let (taken, decision) = bucket.take(tat, now_ns);
    let write = match (taken, slots.get_mut(index)) {
        (Some(new_tat), Some(s)) => {
            *s = Slot {
                fingerprint: slot.fingerprint,
                bucket: slot.bucket,
                tat: new_tat,
            };
            Some(encode(&slots))
        }
        _ => None,
    };
    if write.is_none() {
        event = None;
    }
    Decided {
        write,
        decision,
        event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{TableLayout, WAYS};

    const SEC: u64 = 1_000_000_000;
    const T0: u64 = 1_000 * SEC;

    fn cfg(extra: &str) -> Config {
        Config::parse(
            format!(
                r#"{{"tokenBucket":{{"maxTokens":4,"tokensPerFill":1,"fillInterval":"1s"}},
                "descriptors":[{{"key":"source.ip","sourceIp":{{"trustedAddress":"USE_REMOTE_ADDRESS"}}}}]{extra}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    fn slot_in_set0(fp: u64) -> SlotRef {
        SlotRef {
            entry: EntryRef::Set(0),
            ways: WAYS,
            fingerprint: fp,
            bucket: 1,
        }
    }

    /// Apply decide_slot to a local entry, keeping the write.
    fn hit(entry: &mut Vec<u8>, slot: &SlotRef, now: u64, c: &Config) -> Decided {
        let d = decide_slot(Some(entry), slot, now, c);
        if let Some(w) = &d.write {
            entry.clone_from(w);
        }
        d
    }

    #[test]
    fn layout_bounds() {
        assert_eq!(TableLayout::for_max_keys(10_000).capacity(), 10_000);
        assert_eq!(TableLayout::for_max_keys(10_000).sets(), 1_250);
        assert_eq!(
            TableLayout::for_max_keys(3),
            TableLayout { sets: 1, ways: 3 }
        );
        assert_eq!(
            TableLayout::for_max_keys(1),
            TableLayout { sets: 1, ways: 1 }
        );
        for n in [1, 7, 9, 15, 100_001, 1_000_000] {
            let l = TableLayout::for_max_keys(n);
            assert!(l.capacity() <= n && l.capacity() + 8 > n, "{n}: {l:?}");
        }
        assert_eq!(empty_entry(8).len(), 2 + 8 * 26);
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let slots = vec![
            Slot {
                fingerprint: 7,
                bucket: 2,
                tat: u128::MAX - 3,
            },
            Slot::default(),
        ];
        assert_eq!(decode(&encode(&slots), 2).unwrap(), slots);
        assert!(decode(&encode(&slots), 3).is_none());
        assert!(decode(b"", 2).is_none());
        assert!(decode(&[FORMAT_VERSION], 0).is_none());
        let mut bytes = encode(&slots);
        bytes.pop();
        assert!(decode(&bytes, 2).is_none());
        let mut bytes = encode(&slots);
        bytes[0] = 99;
        assert!(decode(&bytes, 2).is_none());
    }

    #[test]
    fn locate_is_deterministic_per_seed_and_spreads() {
        let c = cfg("");
        let choice = |v: &str| BucketChoice {
            bucket: 1,
            value: v.as_bytes().to_vec(),
        };
        let a = SlotRef::locate(&c, [1; 16], &choice("10.0.0.1"));
        assert_eq!(a, SlotRef::locate(&c, [1; 16], &choice("10.0.0.1")));
        assert_ne!(
            a.fingerprint,
            SlotRef::locate(&c, [2; 16], &choice("10.0.0.1")).fingerprint
        );
        assert_ne!(
            a.fingerprint,
            SlotRef::locate(&c, [1; 16], &choice("10.0.0.2")).fingerprint
        );
        let d = SlotRef::locate(&c, [1; 16], &BucketChoice::default_bucket());
        assert_eq!(d.entry, EntryRef::Default);
        // The same value under another descriptor is another bucket.
        let other = SlotRef::locate(
            &c,
            [1; 16],
            &BucketChoice {
                bucket: 2,
                value: b"10.0.0.1".to_vec(),
            },
        );
        assert_ne!(a.fingerprint, other.fingerprint);
        // Sets are used roughly evenly.
        let mut counts = vec![0u32; c.layout.sets() as usize];
        for i in 0..100_000 {
            if let EntryRef::Set(s) = SlotRef::locate(&c, [9; 16], &choice(&format!("k{i}"))).entry
            {
                counts[s as usize] += 1;
            }
        }
        let expected = 100_000 / c.layout.sets();
        assert!(
            counts.iter().all(|&n| n > expected / 3 && n < expected * 3),
            "uneven sets"
        );
    }

    #[test]
    fn starts_full_and_denies_without_writing() {
        let c = cfg("");
        let mut entry = empty_entry(WAYS);
        let s = slot_in_set0(42);
        let first = hit(&mut entry, &s, T0, &c);
        assert!(first.decision.allowed);
        assert_eq!(first.event, Some(SlotEvent::Claimed));
        assert_eq!(first.decision.remaining, 3);
        for _ in 0..3 {
            let d = hit(&mut entry, &s, T0, &c);
            assert!(d.decision.allowed);
            assert_eq!(d.event, None);
        }
        let denied = decide_slot(Some(&entry), &s, T0, &c);
        assert!(!denied.decision.allowed);
        assert_eq!(denied.write, None);
        assert_eq!(denied.decision.retry_after_secs, 1);
        assert!(hit(&mut entry, &s, T0 + SEC, &c).decision.allowed);
    }

    #[test]
    fn missing_entry_behaves_as_empty_and_garbage_is_reset() {
        let c = cfg("");
        let s = slot_in_set0(42);
        let d = decide_slot(None, &s, T0, &c);
        assert!(d.decision.allowed);
        assert_eq!(d.event, Some(SlotEvent::Claimed));
        let d = decide_slot(Some(b"garbage"), &s, T0, &c);
        assert!(d.decision.allowed);
        assert_eq!(d.event, Some(SlotEvent::Reset));
        assert_eq!(decode(d.write.as_deref().unwrap(), WAYS).unwrap().len(), 8);
    }

    #[test]
    fn idle_slots_are_reclaimed_with_a_full_bucket() {
        let c = cfg("");
        let mut entry = empty_entry(WAYS);
        for fp in 1..=8 {
            assert_eq!(
                hit(&mut entry, &slot_in_set0(fp), T0, &c).event,
                Some(SlotEvent::Claimed)
            );
        }
        // All 8 are partly used: a ninth key evicts, inheriting 1 s of deficit (3 of 4 tokens).
        let d = hit(&mut entry, &slot_in_set0(9), T0, &c);
        assert_eq!(d.event, Some(SlotEvent::Evicted));
        assert_eq!(d.decision.remaining, 2);
        // 4 s later every bucket is full again: taking a slot loses nothing.
        let d = hit(&mut entry, &slot_in_set0(10), T0 + 4 * SEC, &c);
        assert_eq!(d.event, Some(SlotEvent::Reclaimed));
        assert_eq!(d.decision.remaining, 3);
    }

    #[test]
    fn eviction_picks_the_fullest_bucket() {
        let c = cfg("");
        let mut entry = empty_entry(WAYS);
        // fp k takes min(k, 4) tokens: fp 1 is the fullest.
        for fp in 1..=8u64 {
            for _ in 0..fp.min(4) {
                hit(&mut entry, &slot_in_set0(fp), T0, &c);
            }
        }
        let d = hit(&mut entry, &slot_in_set0(100), T0, &c);
        assert_eq!(d.event, Some(SlotEvent::Evicted));
        let slots = decode(&entry, WAYS).unwrap();
        assert_eq!(slots[0].fingerprint, 100);
        assert!(slots.iter().all(|s| s.fingerprint != 1));
        // Inherited fp 1's level (3 left), then took one.
        assert_eq!(d.decision.remaining, 2);
    }

    /// The attacker-cycling property: a key whose bucket is drained cannot get tokens back by
    /// making other keys push it out of the table and then returning.
    #[test]
    fn cycling_keys_does_not_reset_a_drained_bucket() {
        let c = cfg("");
        let mut entry = empty_entry(WAYS);
        let attacker = slot_in_set0(7);
        for _ in 0..4 {
            assert!(hit(&mut entry, &attacker, T0, &c).decision.allowed);
        }
        assert!(!hit(&mut entry, &attacker, T0, &c).decision.allowed);
        // The attacker floods the set with fresh keys, each spending one token: its own drained
        // bucket is never the fullest, so it is never the one evicted.
        let mut evictions = 0;
        for fp in 1000..1100u64 {
            evictions += u32::from(
                hit(&mut entry, &slot_in_set0(fp), T0, &c).event == Some(SlotEvent::Evicted),
            );
            assert!(decode(&entry, WAYS)
                .unwrap()
                .iter()
                .any(|s| s.fingerprint == 7));
        }
        assert!(evictions > 0);
        assert!(
            !decide_slot(Some(&entry), &attacker, T0, &c)
                .decision
                .allowed
        );
        // Keep flooding while time passes: the attacker gets at most its own refill rate,
        // whether or not its slot survives (1 token/s, drained at T0: at most 10 in 10 s).
        let mut allowed = 0;
        let mut fresh = 2000u64;
        for ms in (50..=10_000u64).step_by(50) {
            let now = T0 + ms * 1_000_000;
            for _ in 0..3 {
                fresh += 1;
                hit(&mut entry, &slot_in_set0(fresh), now, &c);
            }
            allowed += u32::from(hit(&mut entry, &attacker, now, &c).decision.allowed);
        }
        assert!(allowed <= 10, "allowed {allowed} in 10 s at 1 token/s");
    }

    /// Randomised version of the property: whatever other keys do, a returning key never holds
    /// more tokens than the bucket it had, refilled at its rate, would hold.
    #[test]
    fn no_key_gains_from_eviction_randomised() {
        let c = Config::parse(
            br#"{"tokenBucket":{"maxTokens":4,"tokensPerFill":1,"fillInterval":"1s"},
                "descriptors":[{"key":"source.ip","sourceIp":{"trustedAddress":"USE_REMOTE_ADDRESS"}},
                               {"key":"source.principal","tokenBucket":{"maxTokens":10,"tokensPerFill":5,"fillInterval":"1s"}}]}"#,
        )
        .unwrap();
        let mut entry = empty_entry(WAYS);
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // A reference (unbounded) bucket per key: TAT per (fp, bucket).
        let mut reference = std::collections::HashMap::<(u64, u16), u128>::new();
        let mut now = T0;
        for _ in 0..200_000 {
            now += next() % 200_000_000;
            let fp = 1 + next() % 24; // 24 keys competing for 8 slots
            let bucket = 1 + (fp % 2) as u16;
            let s = SlotRef {
                entry: EntryRef::Set(0),
                ways: WAYS,
                fingerprint: fp,
                bucket,
            };
            let b = *c.bucket(bucket).unwrap();
            let d = hit(&mut entry, &s, now, &c);
            // The reference bucket sees exactly the requests the table allowed. Whenever the
            // table allows, that per-key bucket must have had a token too.
            if d.decision.allowed {
                let r = reference.entry((fp, bucket)).or_insert(0);
                let (r_next, _) = b.take(*r, now);
                *r = r_next.expect("table allowed what the key's own bucket would deny");
            }
        }
    }
}
