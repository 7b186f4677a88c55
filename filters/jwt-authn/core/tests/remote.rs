//! The remote JWKS state machine with two workers sharing one store (CAS semantics like
//! proxy-wasm-cpp-host: a missing key ignores CAS, a mismatch fails).

#![allow(clippy::restriction)] // a test: the filter crates' no-panic lints are for Envoy

use jwt_authn_core::b64::encode;
use jwt_authn_core::config::RemoteSpec;
use jwt_authn_core::remote::{FetchOutcome, RemoteJwks, Trigger, FAILED_RETRY_MS, KID_REFETCH_MS};
use jwt_authn_core::Keys;
use meshward_common::shared_store::MemoryStore;
use serde_json::json;

/// One store shared by every worker (Envoy's semantics: a missing key ignores CAS, a mismatch
/// fails).
type Store = MemoryStore;

fn spec() -> RemoteSpec {
    RemoteSpec {
        uri: "https://idp/jwks".into(),
        cluster: "jwks".into(),
        authority: "idp".into(),
        path: "/jwks".into(),
        timeout_ms: 5_000,
        cache_duration_ms: 300_000,
        max_stale_ms: 86_400_000,
    }
}

fn jwks(kid: &str) -> Vec<u8> {
    let kp = jwt_simple::prelude::Ed25519KeyPair::generate();
    json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":encode(&kp.public_key().to_bytes()),"kid":kid}]}).to_string().into_bytes()
}

fn ready(r: &RemoteJwks, now: u64) -> Option<u64> {
    match r.keys(now) {
        Keys::Ready { generation, .. } => Some(generation),
        _ => None,
    }
}

#[test]
fn one_fetch_serves_both_workers() {
    let mut store = Store::default();
    let (mut a, mut b) = (
        RemoteJwks::new("iss", spec()),
        RemoteJwks::new("iss", spec()),
    );
    let t0 = 1_000_000;
    assert!(matches!(a.keys(t0), Keys::Pending));
    assert!(
        a.poll(&mut store, t0, 1, Trigger::NeedKeys),
        "first worker takes the lease"
    );
    assert!(
        !b.poll(&mut store, t0 + 10, 2, Trigger::NeedKeys),
        "second worker waits on the lease"
    );
    assert!(
        !a.poll(&mut store, t0 + 20, 1, Trigger::NeedKeys),
        "no second fetch while one is in flight"
    );
    let outcome = a.on_fetch_done(&mut store, t0 + 100, 1, Ok(&jwks("k1")));
    assert!(matches!(outcome, FetchOutcome::Installed { .. }));
    assert!(ready(&a, t0 + 100).is_some());
    let epoch = b.epoch();
    assert!(
        !b.poll(&mut store, t0 + 200, 2, Trigger::Tick),
        "keys are fresh: nothing to fetch"
    );
    assert!(
        ready(&b, t0 + 200).is_some(),
        "worker 2 read the keys from shared data"
    );
    assert_ne!(b.epoch(), epoch, "waiters on worker 2 are told");
    // Within the cache period nobody fetches; near its end exactly one worker refreshes.
    for t in (t0 + 1_000..t0 + 200_000).step_by(500) {
        assert!(!a.poll(&mut store, t, 1, Trigger::Tick));
        assert!(!b.poll(&mut store, t, 2, Trigger::Tick));
    }
    let refresh = t0 + 100 + 300_000 - 60_000;
    let fetchers = [
        a.poll(&mut store, refresh, 1, Trigger::Tick),
        b.poll(&mut store, refresh, 2, Trigger::Tick),
    ];
    assert_eq!(
        fetchers.iter().filter(|f| **f).count(),
        1,
        "refresh before expiry, once"
    );
}

#[test]
fn failed_or_garbage_fetch_keeps_last_good_keys() {
    let mut store = Store::default();
    let mut a = RemoteJwks::new("iss", spec());
    let t0 = 5_000_000;
    assert!(a.poll(&mut store, t0, 1, Trigger::NeedKeys));
    a.on_fetch_done(&mut store, t0, 1, Ok(&jwks("k1")));
    let generation = ready(&a, t0).unwrap();
    let later = t0 + 300_000;
    assert!(
        a.poll(&mut store, later, 1, Trigger::Tick),
        "expired: refetch"
    );
    assert!(matches!(
        a.on_fetch_done(&mut store, later, 1, Ok(b"<html>oops")),
        FetchOutcome::Failed(_)
    ));
    assert_eq!(
        ready(&a, later),
        Some(generation),
        "garbage keeps the old keys"
    );
    assert!(
        !a.poll(&mut store, later + 10, 1, Trigger::Tick),
        "backoff after a failure"
    );
    assert!(a.poll(&mut store, later + FAILED_RETRY_MS, 1, Trigger::Tick));
    a.on_fetch_done(
        &mut store,
        later + FAILED_RETRY_MS,
        1,
        Err("status 503".into()),
    );
    assert_eq!(ready(&a, later + FAILED_RETRY_MS), Some(generation));
    // A JWKS with only a shared secret is garbage from the network.
    assert!(a.poll(&mut store, later + 3 * FAILED_RETRY_MS, 1, Trigger::Tick));
    let oct = json!({"keys":[{"kty":"oct","k":encode(&[1u8; 32])}]}).to_string();
    assert!(matches!(
        a.on_fetch_done(
            &mut store,
            later + 3 * FAILED_RETRY_MS,
            1,
            Ok(oct.as_bytes())
        ),
        FetchOutcome::Failed(_)
    ));
    assert_eq!(ready(&a, later + 3 * FAILED_RETRY_MS), Some(generation));
}

#[test]
fn no_keys_at_all_fails_fast_after_a_failure_and_never_invents_keys() {
    let mut store = Store::default();
    let (mut a, mut b) = (
        RemoteJwks::new("iss", spec()),
        RemoteJwks::new("iss", spec()),
    );
    let t0 = 9_000_000;
    assert!(a.poll(&mut store, t0, 1, Trigger::NeedKeys));
    assert!(!b.poll(&mut store, t0, 2, Trigger::NeedKeys));
    assert!(matches!(b.keys(t0), Keys::Pending));
    a.on_fetch_done(&mut store, t0 + 50, 1, Err("connection reset".into()));
    assert!(matches!(a.keys(t0 + 60), Keys::Failed));
    b.sync(&mut store);
    assert!(
        matches!(b.keys(t0 + 60), Keys::Failed),
        "worker 2 learns of the failure"
    );
    assert!(
        matches!(a.keys(t0 + 50 + FAILED_RETRY_MS), Keys::Pending),
        "after the backoff a new fetch may run"
    );
    assert!(
        b.poll(&mut store, t0 + 50 + FAILED_RETRY_MS, 2, Trigger::NeedKeys),
        "the lease was released"
    );
}

#[test]
fn a_lost_response_expires_the_lease() {
    let mut store = Store::default();
    let (mut a, mut b) = (
        RemoteJwks::new("iss", spec()),
        RemoteJwks::new("iss", spec()),
    );
    let t0 = 1_000;
    assert!(a.poll(&mut store, t0, 1, Trigger::NeedKeys));
    assert!(!b.poll(&mut store, t0 + 5_999, 2, Trigger::NeedKeys));
    assert!(
        b.poll(&mut store, t0 + 6_000, 2, Trigger::NeedKeys),
        "lease ends at timeout + margin"
    );
    assert!(
        !a.poll(&mut store, t0 + 6_001, 1, Trigger::NeedKeys),
        "worker 1 gives up its own fetch, records the failure"
    );
}

#[test]
fn unknown_kid_refetch_is_rate_limited_across_workers() {
    let mut store = Store::default();
    let (mut a, mut b) = (
        RemoteJwks::new("iss", spec()),
        RemoteJwks::new("iss", spec()),
    );
    let t0 = 50_000_000;
    assert!(a.poll(&mut store, t0, 1, Trigger::NeedKeys));
    a.on_fetch_done(&mut store, t0, 1, Ok(&jwks("old")));
    b.sync(&mut store);
    assert!(!a.may_refetch_for_kid(t0 + 1_000));
    assert!(
        !b.poll(&mut store, t0 + 1_000, 2, Trigger::UnknownKid),
        "too soon after the last fetch"
    );
    let t1 = t0 + KID_REFETCH_MS;
    assert!(b.may_refetch_for_kid(t1));
    assert!(
        b.poll(&mut store, t1, 2, Trigger::UnknownKid),
        "rotation: refetch once"
    );
    assert!(
        !a.poll(&mut store, t1, 1, Trigger::UnknownKid),
        "the other worker does not pile on"
    );
    b.on_fetch_done(&mut store, t1 + 10, 2, Ok(&jwks("new")));
    a.sync(&mut store);
    assert!(
        !a.may_refetch_for_kid(t1 + 20),
        "the fresh fetch resets the limit for everyone"
    );
    let Keys::Ready { set, .. } = a.keys(t1 + 20) else {
        panic!()
    };
    assert_eq!(
        set.keys[0].kid.as_deref(),
        Some("new"),
        "rotated keys reach worker 1"
    );
}

#[test]
fn shared_keys_differ_per_issuer_and_uri() {
    let a = RemoteJwks::new("iss-a", spec());
    let b = RemoteJwks::new("iss-b", spec());
    assert_ne!(a.keys_key(), b.keys_key());
    assert!(a.keys_key().starts_with("meshward.jwks.") && a.lease_key().ends_with(".lease"));
}

#[test]
fn last_good_keys_are_dropped_after_max_stale() {
    let mut store = Store::default();
    let spec = RemoteSpec {
        max_stale_ms: 3_600_000,
        ..spec()
    };
    let mut a = RemoteJwks::new("iss", spec.clone());
    let mut b = RemoteJwks::new("iss", spec.clone());
    let t0 = 7_000_000;
    assert!(a.poll(&mut store, t0, 1, Trigger::NeedKeys));
    a.on_fetch_done(&mut store, t0, 1, Ok(&jwks("k1")));
    b.sync(&mut store);
    let expires = t0 + spec.cache_duration_ms;
    // Every refresh fails from here on; keys stay until expiresAt + jwksMaxStale.
    let mut now = expires;
    while now < expires + spec.max_stale_ms {
        if a.poll(&mut store, now, 1, Trigger::Tick) {
            a.on_fetch_done(&mut store, now, 1, Err("status 503".into()));
        }
        assert!(ready(&a, now).is_some(), "still within max stale at {now}");
        now += 600_000;
    }
    let past = expires + spec.max_stale_ms;
    assert!(
        ready(&a, past).is_none(),
        "dropped at expiresAt + jwksMaxStale"
    );
    assert!(ready(&b, past).is_none(), "on every worker");
    // No keys: the next request asks for a fetch; if it fails the answer is "fetch failed".
    assert!(a.poll(&mut store, past, 1, Trigger::NeedKeys));
    a.on_fetch_done(&mut store, past, 1, Err("status 503".into()));
    assert!(matches!(a.keys(past + 1), Keys::Failed));
    // A good fetch brings them back.
    assert!(a.poll(&mut store, past + FAILED_RETRY_MS, 1, Trigger::NeedKeys));
    a.on_fetch_done(&mut store, past + FAILED_RETRY_MS, 1, Ok(&jwks("k2")));
    assert!(ready(&a, past + FAILED_RETRY_MS).is_some());
}

#[test]
fn zero_max_stale_drops_keys_when_they_expire() {
    let mut store = Store::default();
    let spec = RemoteSpec {
        max_stale_ms: 0,
        ..spec()
    };
    let mut a = RemoteJwks::new("iss", spec.clone());
    let t0 = 7_000_000;
    assert!(a.poll(&mut store, t0, 1, Trigger::NeedKeys));
    a.on_fetch_done(&mut store, t0, 1, Ok(&jwks("k1")));
    let expires = t0 + spec.cache_duration_ms;
    assert!(ready(&a, expires - 1).is_some());
    assert!(ready(&a, expires).is_none());
}
