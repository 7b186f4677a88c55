//! The remote-JWKS scheduler natively, through its events and effects: the failure paths the
//! proxy-wasm adapter cannot reach (a refused dispatch, a fetch that never answers, a non-200, a
//! bad body, a lease held by another worker, a request gone before its keys, stale keys, the retry
//! backoff, many waiters on one fetch, a tick with nothing to do). Workers share one
//! `MemoryStore` (Envoy's shared-data semantics).

#![allow(clippy::restriction)] // a test: the filter crates' no-panic lints are for Envoy

use std::time::Duration;

use jwt_authn_core::b64::encode;
use jwt_authn_core::remote::{FetchOutcome, FAILED_RETRY_MS};
use jwt_authn_core::schedule::{Effect, Event, Reply, Scheduler, TICK};
use jwt_authn_core::{Config, KeyLookup, Keys};
use meshward_common::shared_store::MemoryStore;
use serde_json::json;

const T0: u64 = 1_000_000_000;
/// `timeout` 5 s plus the lease margin: how long a request waits for keys.
const WAIT_BOUND: u64 = 6_000;
const CACHE: u64 = 300_000;
const MAX_STALE: u64 = 10_000;

fn config() -> Config {
    let raw = json!({"jwtRules": [
        {"issuer": "https://inline", "jwks": oct_jwks()},
        {"issuer": "https://idp", "jwksUri": "https://idp.example.com/keys", "jwksCluster": "jwks",
         "timeout": "5s", "jwksCacheDuration": "300s", "jwksMaxStale": "10s"}
    ]});
    Config::parse(raw.to_string().as_bytes()).unwrap()
}

/// The remote rule of [`config`].
const RULE: usize = 1;

fn oct_jwks() -> String {
    json!({"keys":[{"kty":"oct","k":encode(&[7u8; 32]),"kid":"k","alg":"HS256"}]}).to_string()
}

fn jwks() -> Vec<u8> {
    let kp = jwt_simple::prelude::Ed25519KeyPair::generate();
    json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":encode(&kp.public_key().to_bytes()),"kid":"ed"}]})
        .to_string()
        .into_bytes()
}

/// One VM: its scheduler and its handle on the shared store.
struct Worker {
    sched: Scheduler,
    store: MemoryStore,
}

impl Worker {
    fn new(store: &MemoryStore, owner: u64) -> Self {
        Self {
            sched: Scheduler::new(&config(), owner),
            store: store.clone(),
        }
    }

    fn alone() -> Self {
        Self::new(&MemoryStore::new(), 1)
    }

    /// A lone VM whose request `waiter` is parked on the fetch its root dispatched (token 7).
    fn fetching(waiter: u32) -> Self {
        let mut w = Self::alone();
        assert_eq!(w.wants(T0, waiter), vec![Effect::WakeRoot]);
        w.run(Some(T0), Event::QueueReady);
        w
    }

    fn handle(&mut self, now: Option<u64>, event: Event<'_>) -> Vec<Effect> {
        self.sched.handle(&mut self.store, now, event)
    }

    /// A request (context `waiter`) whose verdict was "wait for the remote rule's keys".
    fn wants(&mut self, now: u64, waiter: u32) -> Vec<Effect> {
        self.handle(
            Some(now),
            Event::KeysWanted {
                waiter,
                rules: &[RULE],
                refetch: &[],
                may_decide_again: true,
            },
        )
    }

    /// The follow-on effects of the callback, answering each dispatch with `dispatch`.
    fn drain(
        &mut self,
        now: Option<u64>,
        mut dispatch: impl FnMut(usize) -> Event<'static>,
    ) -> Vec<Effect> {
        let mut seen = Vec::new();
        while let Some(effect) = self.sched.next_effect(&mut self.store) {
            if let Effect::Dispatch { rule, .. } = &effect {
                let answer = dispatch(*rule);
                seen.push(effect);
                seen.extend(self.handle(now, answer));
            } else {
                seen.push(effect);
            }
        }
        seen
    }

    /// A callback's event and everything it leads to; dispatches are accepted with token 7.
    fn run(&mut self, now: Option<u64>, event: Event<'_>) -> Vec<Effect> {
        let mut seen = self.handle(now, event);
        seen.extend(self.drain(now, |rule| Event::Dispatched { rule, token: 7 }));
        seen
    }

    fn keys(&self, now: u64) -> &'static str {
        match self.sched.keys_at(now).remote_keys(RULE) {
            Keys::Ready { .. } => "ready",
            Keys::Pending => "pending",
            Keys::Failed => "failed",
        }
    }

    /// The answer to callout 7: a good JWKS, at `now`.
    fn keys_arrive(&mut self, now: u64) -> Vec<Effect> {
        self.run(
            Some(now),
            Event::FetchResponse {
                token: 7,
                reply: Reply::Body(jwks()),
            },
        )
    }

    /// Park `waiter`, dispatch from the root (token 7), answer with `reply` at `at`.
    fn fetch_answered(&mut self, waiter: u32, reply: Reply, at: u64) -> Vec<Effect> {
        assert_eq!(self.wants(T0, waiter), vec![Effect::WakeRoot]);
        self.run(Some(T0), Event::QueueReady);
        self.run(Some(at), Event::FetchResponse { token: 7, reply })
    }
}

fn dispatch() -> Effect {
    Effect::Dispatch {
        rule: RULE,
        cluster: "jwks".into(),
        headers: vec![
            (":method", "GET".into()),
            (":path", "/keys".into()),
            (":authority", "idp.example.com".into()),
            ("accept", "application/json".into()),
        ],
        timeout: Duration::from_secs(5),
    }
}

fn installed() -> Effect {
    Effect::Fetched {
        uri: "https://idp.example.com/keys".into(),
        outcome: FetchOutcome::Installed {
            skipped: Vec::new(),
        },
    }
}

fn failed(why: &str) -> Effect {
    Effect::Fetched {
        uri: "https://idp.example.com/keys".into(),
        outcome: FetchOutcome::Failed(why.into()),
    }
}

fn decide(waiter: u32) -> Effect {
    Effect::Decide {
        waiter,
        expired: false,
    }
}

#[test]
fn start_sets_a_tick_and_opens_a_queue_of_this_vm_only_for_remote_rules() {
    let worker = Worker::alone();
    assert_eq!(
        worker.sched.start(),
        vec![
            Effect::SetTickPeriod(TICK),
            Effect::OpenWakeQueue("meshward.jwt-authn.fetch.0000000000000001".into()),
        ]
    );
    let inline = Config::parse(
        json!({"jwtRules": [{"issuer": "https://inline", "jwks": oct_jwks()}]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(Scheduler::new(&inline, 1).start(), Vec::new());
}

#[test]
fn a_request_that_needs_keys_is_parked_and_the_root_dispatches_the_fetch() {
    let mut w = Worker::alone();
    assert_eq!(w.keys(T0), "pending");
    assert_eq!(w.wants(T0, 5), vec![Effect::WakeRoot]);
    assert!(w.sched.is_parked(5));
    // The root dispatches from its own context, and is the effective context at the end.
    assert_eq!(
        w.run(Some(T0), Event::QueueReady),
        vec![Effect::ActAsRoot, dispatch(), Effect::ActAsRoot]
    );
    let done = w.keys_arrive(T0 + 50);
    assert_eq!(done, vec![installed(), decide(5), Effect::ActAsRoot]);
    assert!(!w.sched.is_parked(5));
    assert_eq!(w.keys(T0 + 50), "ready");
}

#[test]
fn many_waiters_share_one_fetch_and_are_decided_in_arrival_order() {
    let mut w = Worker::alone();
    assert_eq!(w.wants(T0, 30), vec![Effect::WakeRoot]);
    // The fetch is this VM's already: no second lease, no second wake-up.
    for waiter in [10, 20, 40] {
        assert_eq!(w.wants(T0 + 1, waiter), Vec::new());
    }
    let dispatches = w
        .run(Some(T0 + 2), Event::QueueReady)
        .into_iter()
        .filter(|e| matches!(e, Effect::Dispatch { .. }))
        .count();
    assert_eq!(dispatches, 1);
    let done = w.keys_arrive(T0 + 3);
    assert_eq!(
        done,
        vec![
            installed(),
            decide(30),
            decide(10),
            decide(20),
            decide(40),
            Effect::ActAsRoot
        ]
    );
}

#[test]
fn a_dispatch_the_host_refuses_fails_the_fetch_and_answers_its_waiters_at_once() {
    let mut w = Worker::alone();
    assert_eq!(w.wants(T0, 5), vec![Effect::WakeRoot]);
    w.handle(Some(T0), Event::QueueReady);
    let seen = w.drain(Some(T0), |rule| Event::DispatchRefused {
        rule,
        status: "BadArgument".into(),
    });
    assert_eq!(
        seen,
        vec![
            Effect::ActAsRoot,
            dispatch(),
            failed("dispatch to `jwks` failed: BadArgument"),
            decide(5),
            Effect::ActAsRoot,
        ]
    );
    // No keys and a fresh failure: requests fail fast instead of waiting.
    assert_eq!(w.keys(T0 + 1), "failed");
}

#[test]
fn a_fetch_that_never_answers_ends_its_waiters_at_their_deadline() {
    let mut w = Worker::fetching(5);
    // Before the bound: nothing due, nothing fetched again.
    assert_eq!(
        w.run(Some(T0 + WAIT_BOUND - 1), Event::Tick),
        vec![Effect::ActAsRoot]
    );
    assert!(w.sched.is_parked(5));
    // At the bound the lost fetch counts as failed (retried after the backoff, not now) and the
    // request is decided as having waited long enough.
    assert_eq!(
        w.run(Some(T0 + WAIT_BOUND), Event::Tick),
        vec![
            Effect::Decide {
                waiter: 5,
                expired: true
            },
            Effect::ActAsRoot
        ]
    );
    assert_eq!(w.keys(T0 + WAIT_BOUND), "failed");
    // The late answer to the abandoned callout still installs keys.
    let late = w.keys_arrive(T0 + WAIT_BOUND + 1);
    assert_eq!(late, vec![installed(), Effect::ActAsRoot]);
}

#[test]
fn a_timeout_or_reset_reported_by_the_host_fails_the_fetch() {
    let mut w = Worker::alone();
    let done = w.fetch_answered(5, Reply::NoResponse, T0 + 5_000);
    assert_eq!(
        done,
        vec![
            failed("status none (reset or timeout)"),
            decide(5),
            Effect::ActAsRoot
        ]
    );
}

#[test]
fn a_non_200_answer_fails_the_fetch() {
    let mut w = Worker::alone();
    let done = w.fetch_answered(5, Reply::Status(b"503".to_vec()), T0 + 10);
    assert_eq!(
        done,
        vec![failed("status 503"), decide(5), Effect::ActAsRoot]
    );
    assert_eq!(w.keys(T0 + 10), "failed");
}

#[test]
fn a_bad_jwks_body_fails_the_fetch() {
    for (reply, why) in [
        (Reply::Body(Vec::new()), "empty body".to_string()),
        (
            Reply::Body(vec![0xff, 0xfe]),
            "body is not UTF-8".to_string(),
        ),
        (
            Reply::TooLarge(1 << 30),
            "body of 1073741824 bytes is too large".to_string(),
        ),
        (
            Reply::Unreadable("cannot read the body (host status 3)".into()),
            "cannot read the body (host status 3)".to_string(),
        ),
    ] {
        let mut w = Worker::alone();
        let done = w.fetch_answered(5, reply, T0 + 10);
        assert_eq!(done, vec![failed(&why), decide(5), Effect::ActAsRoot]);
    }
    // JSON that is not a key set: refused with the parser's reason.
    let mut w = Worker::alone();
    let done = w.fetch_answered(5, Reply::Body(b"{\"keys\":5}".to_vec()), T0 + 10);
    assert!(
        matches!(
            done.first(),
            Some(Effect::Fetched {
                outcome: FetchOutcome::Failed(_),
                ..
            })
        ),
        "{done:?}"
    );
    assert_eq!(w.keys(T0 + 10), "failed");
}

#[test]
fn an_answer_to_a_callout_that_is_not_a_fetch_changes_nothing() {
    let mut w = Worker::fetching(5);
    let other = w.run(
        Some(T0 + 1),
        Event::FetchResponse {
            token: 99,
            reply: Reply::Body(jwks()),
        },
    );
    assert_eq!(other, vec![Effect::ActAsRoot]);
    assert!(w.sched.is_parked(5));
}

#[test]
fn a_lease_held_by_another_worker_parks_without_fetching_then_its_keys_are_adopted() {
    let store = MemoryStore::new();
    let mut a = Worker::new(&store, 1);
    let mut b = Worker::new(&store, 2);
    assert_eq!(a.wants(T0, 5), vec![Effect::WakeRoot]);
    // B sees A's lease: it parks its request and wakes nobody.
    assert_eq!(b.wants(T0 + 1, 6), Vec::new());
    assert!(b.sched.is_parked(6));
    assert_eq!(
        b.run(Some(T0 + 2), Event::QueueReady),
        vec![Effect::ActAsRoot, Effect::ActAsRoot]
    );
    a.run(Some(T0 + 3), Event::QueueReady);
    a.keys_arrive(T0 + 4);
    // B's tick adopts the keys A put in shared data and decides its request: no fetch of its own.
    assert_eq!(
        b.run(Some(T0 + 500), Event::Tick),
        vec![decide(6), Effect::ActAsRoot]
    );
    assert_eq!(b.keys(T0 + 500), "ready");
}

#[test]
fn keys_another_worker_already_fetched_are_used_at_once_instead_of_parking() {
    let store = MemoryStore::new();
    let mut a = Worker::new(&store, 1);
    a.fetch_answered(5, Reply::Body(jwks()), T0 + 10);
    let mut b = Worker::new(&store, 2);
    assert_eq!(b.wants(T0 + 20, 6), vec![Effect::DecideAgain]);
    assert!(!b.sched.is_parked(6));
    assert_eq!(b.keys(T0 + 20), "ready");
    // Only once per request: a second "wait" for adopted keys parks (bounded) instead.
    let mut c = Worker::new(&store, 3);
    let again = c.handle(
        Some(T0 + 20),
        Event::KeysWanted {
            waiter: 7,
            rules: &[RULE],
            refetch: &[],
            may_decide_again: false,
        },
    );
    assert_eq!(again, Vec::new());
    assert!(c.sched.is_parked(7));
}

#[test]
fn a_request_gone_before_its_keys_arrive_is_not_decided_and_the_fetch_carries_on() {
    let mut w = Worker::alone();
    assert_eq!(w.wants(T0, 5), vec![Effect::WakeRoot]);
    assert_eq!(w.wants(T0, 6), Vec::new());
    assert_eq!(w.handle(None, Event::WaiterGone { waiter: 5 }), Vec::new());
    assert!(!w.sched.is_parked(5));
    let queue = w.run(Some(T0 + 1), Event::QueueReady);
    assert!(queue.contains(&dispatch()), "{queue:?}");
    let done = w.keys_arrive(T0 + 2);
    assert_eq!(done, vec![installed(), decide(6), Effect::ActAsRoot]);
}

#[test]
fn stale_keys_are_used_within_jwks_max_stale_and_dropped_after() {
    let mut w = Worker::alone();
    w.fetch_answered(5, Reply::Body(jwks()), T0);
    let expiry = T0 + CACHE;
    // Past the cache duration the tick refreshes; the IdP is down (dispatch refused).
    w.handle(Some(expiry), Event::Tick);
    let refresh = w.drain(Some(expiry), |rule| Event::DispatchRefused {
        rule,
        status: "InternalFailure".into(),
    });
    assert_eq!(
        refresh,
        vec![
            dispatch(),
            failed("dispatch to `jwks` failed: InternalFailure"),
            Effect::ActAsRoot
        ]
    );
    assert_eq!(w.keys(expiry + MAX_STALE - 1), "ready");
    assert_eq!(w.keys(expiry + MAX_STALE), "pending");
}

#[test]
fn a_failed_fetch_is_retried_only_after_the_backoff() {
    let mut w = Worker::alone();
    let at = T0 + 10;
    w.fetch_answered(5, Reply::Status(b"500".to_vec()), at);
    // Within the backoff: neither a request nor a tick starts a fetch.
    assert_eq!(w.wants(at + FAILED_RETRY_MS - 1, 6), Vec::new());
    assert_eq!(
        w.run(Some(at + FAILED_RETRY_MS - 1), Event::Tick),
        vec![Effect::ActAsRoot]
    );
    // After it the tick fetches again (from the root's own tick: no context switch first).
    assert_eq!(
        w.run(Some(at + FAILED_RETRY_MS), Event::Tick),
        vec![dispatch(), Effect::ActAsRoot]
    );
}

#[test]
fn a_tick_with_nothing_to_do_only_restores_the_root() {
    let mut w = Worker::alone();
    assert_eq!(w.run(Some(T0), Event::Tick).len(), 2, "first tick fetches");
    w.keys_arrive(T0 + 1);
    assert_eq!(w.run(Some(T0 + 500), Event::Tick), vec![Effect::ActAsRoot]);
    assert_eq!(w.run(Some(T0 + 1000), Event::Tick), vec![Effect::ActAsRoot]);
}

#[test]
fn without_a_clock_nothing_is_fetched_and_every_wait_runs_out() {
    let mut w = Worker::alone();
    assert_eq!(w.wants(T0, 5), vec![Effect::WakeRoot]);
    assert_eq!(
        w.run(None, Event::Tick),
        vec![
            Effect::Decide {
                waiter: 5,
                expired: true
            },
            Effect::ActAsRoot,
            dispatch(),
        ]
    );
}
