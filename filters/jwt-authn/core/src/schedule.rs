//! When and what to fetch: the remote-JWKS scheduling of one VM (= one worker thread) as a sans-IO
//! state machine, events in and effects out (rustls's shape). The adapter turns proxy-wasm
//! callbacks into [`Event`]s, carries out the [`Effect`]s with host calls and reports their
//! answers back as events; every decision (who fetches, who waits for which fetch, when a wait
//! ends, what a failure does to the waiters) is taken here, where native tests reach it.
//!
//! Shape of one callback:
//! 1. The adapter reads the clock and calls [`Scheduler::handle`] with the callback's event. The
//!    returned effects are to be carried out at once, in order.
//! 2. It then drains [`Scheduler::next_effect`] until `None`. Follow-on work that depends on the
//!    answers to earlier effects (re-deciding the waiters after a dispatch was refused, dispatching
//!    fetches that re-decided requests asked for) is queued as steps and only turned into effects
//!    when it is its turn, against the state at that moment.
//! 3. Carrying out [`Effect::Dispatch`] ends with reporting [`Event::Dispatched`] or
//!    [`Event::DispatchRefused`]; carrying out [`Effect::Decide`] runs the request's verdict, which
//!    may report [`Event::KeysWanted`]. Their effects are again carried out at once.
//!
//! Shared data (the keys and fetch leases of every worker, see [`crate::remote`]) is not an
//! effect: its calls answer synchronously and the lease protocol is a read-compare-write, so it is
//! passed in as a [`SharedStore`] with every event.
//!
//! Fetches are only ever dispatched from the root context ([`Effect::ActAsRoot`] precedes the
//! dispatches made outside the root's own tick): a callout belongs to the context that made it,
//! and Envoy cancels a request context's callouts when the client resets the stream, so a fetch
//! started by a request would die with it. A request that needs keys takes the fetch lease, is
//! parked, and wakes the root ([`Effect::WakeRoot`], the VM's own queue); if the wake-up is lost,
//! the next tick (at most [`TICK`] later) dispatches instead.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::config::{Config, KeySource};
use crate::engine::{KeyLookup, Keys};
use crate::jwk::MAX_JWKS_BYTES;
use meshward_common::shared_store::SharedStore;

use crate::remote::{FetchOutcome, RemoteJwks, Trigger};

/// Tick period while any rule uses a remote JWKS: drives refresh and the parked requests'
/// deadlines.
pub const TICK: Duration = Duration::from_millis(500);

/// Largest JWKS response body read.
pub const MAX_BODY: usize = MAX_JWKS_BYTES;

/// Something that happened, as the adapter reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The root context's tick.
    Tick,
    /// This VM's wake-up queue had items (the adapter drained them; they carry nothing).
    QueueReady,
    /// A request's verdict was "wait for the keys of `rules`" (`refetch`: rules to fetch again for
    /// an unknown `kid`). `may_decide_again`: the request has not yet been decided again for keys
    /// that were only adopted from shared data (at most once per request).
    KeysWanted {
        waiter: u32,
        rules: &'a [usize],
        refetch: &'a [usize],
        may_decide_again: bool,
    },
    /// The host accepted [`Effect::Dispatch`] of `rule`: its answer comes with `token`.
    Dispatched { rule: usize, token: u32 },
    /// The host refused [`Effect::Dispatch`] of `rule` at once (`status`, e.g. unknown cluster):
    /// a failed fetch.
    DispatchRefused { rule: usize, status: String },
    /// The answer to the callout `token` (the root's `on_http_call_response`).
    FetchResponse { token: u32, reply: Reply },
    /// The request is gone (answered, or reset by the client).
    WaiterGone { waiter: u32 },
}

/// What the host handed over of a callout's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The body is larger than [`MAX_BODY`] (not read).
    TooLarge(usize),
    /// No headers at all: the host's way of reporting a reset or a timeout.
    NoResponse,
    /// A status other than `200` (body not read).
    Status(Vec<u8>),
    /// Status `200` and this body.
    Body(Vec<u8>),
    /// The host would not hand the response over: why.
    Unreadable(String),
}

impl Reply {
    /// The only status whose body is read.
    pub fn is_ok_status(status: &[u8]) -> bool {
        status == b"200"
    }

    /// The JWKS body, or why there is none.
    pub fn into_body(self) -> Result<Vec<u8>, String> {
        match self {
            Reply::TooLarge(size) => Err(format!("body of {size} bytes is too large")),
            Reply::NoResponse => Err("status none (reset or timeout)".to_string()),
            Reply::Status(status) => Err(format!("status {}", String::from_utf8_lossy(&status))),
            Reply::Body(body) if body.is_empty() => Err("empty body".to_string()),
            Reply::Body(body) => Ok(body),
            Reply::Unreadable(why) => Err(why),
        }
    }
}

/// Something for the adapter to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// At configuration: set the root's tick period; the filter cannot work without it.
    SetTickPeriod(Duration),
    /// At configuration: register this VM's wake-up queue under a name of its own (a queue shared
    /// by name would wake another worker's root). Without it fetches start on the next tick.
    OpenWakeQueue(String),
    /// Make the root context the effective context again (before dispatching, so the callout is
    /// the root's; after acting on requests).
    ActAsRoot,
    /// Start a JWKS fetch; report [`Event::Dispatched`] or [`Event::DispatchRefused`].
    Dispatch {
        rule: usize,
        cluster: String,
        headers: Vec<(&'static str, String)>,
        timeout: Duration,
    },
    /// A fetch finished (log and count it): from `uri`, with this outcome.
    Fetched { uri: String, outcome: FetchOutcome },
    /// Decide the parked request `waiter` again, in its own context, and resume it if it may
    /// continue. `expired`: it has waited as long as allowed (pending keys count as failed).
    Decide { waiter: u32, expired: bool },
    /// Answer to [`Event::KeysWanted`]: the keys changed by adopting shared data and no fetch was
    /// started; decide the same request again now instead of parking it.
    DecideAgain,
    /// Wake this VM's root context (enqueue on the wake-up queue) so that it dispatches the
    /// fetches requests asked for.
    WakeRoot,
}

/// A request parked while keys are fetched.
#[derive(Debug)]
struct Waiter {
    /// Arrival order: parked requests are re-decided in the order they came.
    seq: u64,
    deadline_ms: u64,
    /// (rule, epoch seen when parked): a change of epoch means new keys or a failure.
    epochs: Vec<(usize, u64)>,
}

/// Queued follow-on work, turned into effects by [`Scheduler::next_effect`] when it is its turn.
#[derive(Debug)]
enum Step {
    Do(Effect),
    /// Dispatch the fetches requests asked for, from the root context.
    DispatchWanted,
    /// Re-decide the waiters whose keys changed or whose wait ran out (`now`: the callback's
    /// clock, `None` without one: then every wait has run out). `sync_first`: adopt shared data
    /// before looking.
    Resolve {
        now: Option<u64>,
        sync_first: bool,
    },
}

/// The remote-JWKS scheduling of one VM.
#[derive(Debug)]
pub struct Scheduler {
    /// Indexed like `config.rules`; `None` for inline-JWKS rules.
    remotes: Vec<Option<RemoteJwks>>,
    /// This VM's identity in the fetch leases.
    owner: u64,
    /// Parked requests by context id: adding, replacing and removing one is O(1), however many.
    waiters: HashMap<u32, Waiter>,
    next_seq: u64,
    /// Rules whose fetch a request decided on (lease taken) and the root has yet to dispatch.
    want_fetch: Vec<usize>,
    /// Outstanding fetches: callout token → rule.
    inflight: Vec<(u32, usize)>,
    agenda: VecDeque<Step>,
}

impl Scheduler {
    /// The scheduler of a VM whose lease identity is `owner` (random per VM, never 0).
    pub fn new(config: &Config, owner: u64) -> Self {
        let remotes = config
            .rules
            .iter()
            .map(|r| match &r.keys {
                KeySource::Remote(spec) => Some(RemoteJwks::new(&r.issuer, spec.clone())),
                KeySource::Inline(_) => None,
            })
            .collect();
        Self {
            remotes,
            owner,
            waiters: HashMap::new(),
            next_seq: 0,
            want_fetch: Vec::new(),
            inflight: Vec::new(),
            agenda: VecDeque::new(),
        }
    }

    /// What to set up at configuration: a tick and a wake-up queue, if any rule fetches its keys.
    pub fn start(&self) -> Vec<Effect> {
        if self.remotes.iter().all(Option::is_none) {
            return Vec::new();
        }
        vec![
            Effect::SetTickPeriod(TICK),
            Effect::OpenWakeQueue(format!("meshward.jwt-authn.fetch.{:016x}", self.owner)),
        ]
    }

    /// The keys as this VM knows them at `now_ms`, for the verdict.
    pub fn keys_at(&self, now_ms: u64) -> KeysAt<'_> {
        KeysAt {
            remotes: &self.remotes,
            now_ms,
        }
    }

    /// The remote JWKS state of `rule` (`None` for inline rules).
    pub fn remote(&self, rule: usize) -> Option<&RemoteJwks> {
        self.remotes.get(rule).and_then(Option::as_ref)
    }

    /// Whether the request `waiter` is parked.
    pub fn is_parked(&self, waiter: u32) -> bool {
        self.waiters.contains_key(&waiter)
    }

    /// Take in an event at the host clock `now` (ms since the Unix epoch; `None` when the host
    /// has no clock: then nothing is scheduled, failures are recorded "at 0", which looks old and
    /// is retried sooner, never trusted longer, and every wait counts as run out). Returns what
    /// to do at once, in order; follow-on work waits in [`Scheduler::next_effect`].
    pub fn handle(
        &mut self,
        store: &mut dyn SharedStore,
        now: Option<u64>,
        event: Event<'_>,
    ) -> Vec<Effect> {
        match event {
            Event::Tick => {
                if let Some(now) = now {
                    let owner = self.owner;
                    let due: Vec<usize> = self
                        .remotes
                        .iter_mut()
                        .enumerate()
                        .filter_map(|(i, r)| {
                            r.as_mut()
                                .and_then(|r| r.poll(store, now, owner, Trigger::Tick).then_some(i))
                        })
                        .collect();
                    // The tick runs in the root context already: no `ActAsRoot` before these.
                    for rule in due {
                        if let Some(effect) = self.dispatch(rule) {
                            self.agenda.push_back(Step::Do(effect));
                        }
                    }
                }
                self.agenda.push_back(Step::Resolve {
                    now,
                    sync_first: true,
                });
                // Also the fallback for requests whose wake-up did not go through.
                self.agenda.push_back(Step::DispatchWanted);
                Vec::new()
            }
            Event::QueueReady => {
                self.agenda.push_back(Step::DispatchWanted);
                // A dispatch the host refused at once is a failed fetch: answer its waiters now.
                self.agenda.push_back(Step::Resolve {
                    now,
                    sync_first: false,
                });
                self.agenda.push_back(Step::Do(Effect::ActAsRoot));
                Vec::new()
            }
            Event::KeysWanted {
                waiter,
                rules,
                refetch,
                may_decide_again,
            } => self.park(
                store,
                now.unwrap_or(0),
                waiter,
                rules,
                refetch,
                may_decide_again,
            ),
            Event::Dispatched { rule, token } => {
                self.inflight.push((token, rule));
                Vec::new()
            }
            Event::DispatchRefused { rule, status } => {
                let owner = self.owner;
                let Some(Some(remote)) = self.remotes.get_mut(rule) else {
                    return Vec::new();
                };
                let why = format!("dispatch to `{}` failed: {status}", remote.spec.cluster);
                let outcome = remote.on_fetch_done(store, now.unwrap_or(0), owner, Err(why));
                vec![Effect::Fetched {
                    uri: remote.spec.uri.clone(),
                    outcome,
                }]
            }
            Event::FetchResponse { token, reply } => {
                let done = self.fetch_done(store, now.unwrap_or(0), token, reply);
                self.agenda.push_back(Step::Resolve {
                    now,
                    sync_first: false,
                });
                // Re-decided requests may have asked for another fetch (an unknown `kid`).
                self.agenda.push_back(Step::DispatchWanted);
                done.into_iter().collect()
            }
            Event::WaiterGone { waiter } => {
                // A fetch it asked for is the root's and carries on for the requests after it.
                self.waiters.remove(&waiter);
                Vec::new()
            }
        }
    }

    /// The next thing to do for the callback being handled; `None` when it is done.
    pub fn next_effect(&mut self, store: &mut dyn SharedStore) -> Option<Effect> {
        loop {
            match self.agenda.pop_front()? {
                Step::Do(effect) => return Some(effect),
                Step::DispatchWanted => {
                    let wanted = std::mem::take(&mut self.want_fetch);
                    for rule in wanted.into_iter().rev() {
                        if let Some(effect) = self.dispatch(rule) {
                            self.agenda.push_front(Step::Do(effect));
                        }
                    }
                    return Some(Effect::ActAsRoot);
                }
                Step::Resolve { now, sync_first } => {
                    for (waiter, expired) in self.due(store, now, sync_first).into_iter().rev() {
                        self.agenda
                            .push_front(Step::Do(Effect::Decide { waiter, expired }));
                    }
                }
            }
        }
    }

    /// The dispatch of `rule`'s JWKS fetch.
    fn dispatch(&self, rule: usize) -> Option<Effect> {
        let spec = &self.remote(rule)?.spec;
        Some(Effect::Dispatch {
            rule,
            cluster: spec.cluster.clone(),
            headers: vec![
                (":method", "GET".to_string()),
                (":path", spec.path.clone()),
                (":authority", spec.authority.clone()),
                ("accept", "application/json".to_string()),
            ],
            timeout: Duration::from_millis(spec.timeout_ms),
        })
    }

    /// A request waits for keys: poll each rule (which adopts shared data and may take the fetch
    /// lease), then park it, unless adopting alone changed the keys and no fetch was started: then
    /// it is decided again at once rather than parked for a change that has already happened (it
    /// would otherwise wait out its deadline, `timeout + 1 s`).
    fn park(
        &mut self,
        store: &mut dyn SharedStore,
        now: u64,
        waiter: u32,
        rules: &[usize],
        refetch: &[usize],
        may_decide_again: bool,
    ) -> Vec<Effect> {
        let owner = self.owner;
        let mut fetch = Vec::new();
        let mut adopted = false;
        let mut bound = 0u64;
        let mut epochs = Vec::new();
        for &rule in rules {
            if let Some(Some(remote)) = self.remotes.get_mut(rule) {
                let trigger = if refetch.contains(&rule) {
                    Trigger::UnknownKid
                } else {
                    Trigger::NeedKeys
                };
                let before = remote.epoch();
                if remote.poll(store, now, owner, trigger) {
                    fetch.push(rule);
                }
                adopted |= remote.epoch() != before;
                bound = bound.max(remote.wait_bound_ms());
                epochs.push((rule, remote.epoch()));
            }
        }
        if adopted && fetch.is_empty() && may_decide_again {
            return vec![Effect::DecideAgain];
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.waiters.insert(
            waiter,
            Waiter {
                seq,
                deadline_ms: now.saturating_add(bound),
                epochs,
            },
        );
        if fetch.is_empty() {
            return Vec::new();
        }
        for rule in fetch {
            if !self.want_fetch.contains(&rule) {
                self.want_fetch.push(rule);
            }
        }
        vec![Effect::WakeRoot]
    }

    /// Record the answer to the callout `token`, if it is one of this VM's fetches.
    fn fetch_done(
        &mut self,
        store: &mut dyn SharedStore,
        now: u64,
        token: u32,
        reply: Reply,
    ) -> Option<Effect> {
        let pos = self.inflight.iter().position(|(t, _)| *t == token)?;
        let (_, rule) = self.inflight.swap_remove(pos);
        let owner = self.owner;
        let remote = self.remotes.get_mut(rule)?.as_mut()?;
        let body = reply.into_body();
        let outcome =
            remote.on_fetch_done(store, now, owner, body.as_deref().map_err(Clone::clone));
        Some(Effect::Fetched {
            uri: remote.spec.uri.clone(),
            outcome,
        })
    }

    /// The waiters to decide again, in arrival order, with whether their wait ran out; they are
    /// no longer parked. One pass over the waiters, O(n); each due one is removed in O(1).
    fn due(
        &mut self,
        store: &mut dyn SharedStore,
        now: Option<u64>,
        sync_first: bool,
    ) -> Vec<(u32, bool)> {
        // Without a clock every wait counts as run out: the verdict then denies, so no request
        // stays parked on a broken clock.
        let now = now.unwrap_or(u64::MAX);
        if sync_first {
            for remote in self.remotes.iter_mut().flatten() {
                remote.sync(store);
            }
        }
        let remotes = &self.remotes;
        let changed = |w: &Waiter| {
            w.epochs.iter().any(
                |(rule, epoch)| matches!(remotes.get(*rule), Some(Some(r)) if r.epoch() != *epoch),
            )
        };
        let mut due: Vec<(u64, u32, bool)> = self
            .waiters
            .iter()
            .filter(|(_, w)| changed(w) || now >= w.deadline_ms)
            .map(|(id, w)| (w.seq, *id, now >= w.deadline_ms))
            .collect();
        due.sort_unstable();
        for (_, id, _) in &due {
            self.waiters.remove(id);
        }
        due.into_iter()
            .map(|(_, id, expired)| (id, expired))
            .collect()
    }
}

/// The keys of every remote rule at one instant, as the verdict looks them up.
#[derive(Debug, Clone, Copy)]
pub struct KeysAt<'a> {
    remotes: &'a [Option<RemoteJwks>],
    now_ms: u64,
}

impl KeyLookup for KeysAt<'_> {
    fn remote_keys(&self, rule: usize) -> Keys<'_> {
        match self.remotes.get(rule) {
            Some(Some(r)) => r.keys(self.now_ms),
            _ => Keys::Failed,
        }
    }

    fn may_refetch_for_kid(&self, rule: usize) -> bool {
        matches!(self.remotes.get(rule), Some(Some(r)) if r.may_refetch_for_kid(self.now_ms))
    }
}
