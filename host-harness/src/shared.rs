//! Host-wide state shared by every VM of a `Host`: shared data and queues (per `vm_id`, with
//! proxy-wasm-cpp-host's semantics), metrics, and injected faults.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::abi::Status;

/// Shared data, as cpp-host `shared_data.cc`: one map per vm_id; CAS values come from one
/// counter starting at 1 (never 0); `cas == 0` overwrites; setting a missing key ignores `cas`;
/// a mismatch is `CasMismatch`; there is no delete through the ABI.
#[derive(Default)]
pub(crate) struct SharedData {
    inner: Mutex<SharedDataInner>,
}

/// key → (value, cas) of one vm_id.
type VmData = HashMap<Vec<u8>, (Vec<u8>, u32)>;

struct SharedDataInner {
    next_cas: u32,
    maps: HashMap<String, VmData>,
}

impl Default for SharedDataInner {
    fn default() -> Self {
        SharedDataInner {
            next_cas: 1,
            maps: HashMap::new(),
        }
    }
}

impl SharedDataInner {
    fn next_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = self.next_cas.wrapping_add(1);
        if self.next_cas == 0 {
            self.next_cas = 1;
        }
        cas
    }
}

impl SharedData {
    pub fn get(&self, vm_id: &str, key: &[u8]) -> Result<(Vec<u8>, u32), Status> {
        let inner = lock(&self.inner);
        inner
            .maps
            .get(vm_id)
            .and_then(|m| m.get(key))
            .cloned()
            .ok_or(Status::NotFound)
    }

    pub fn set(&self, vm_id: &str, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
        let mut inner = lock(&self.inner);
        let current = inner
            .maps
            .get(vm_id)
            .and_then(|m| m.get(key))
            .map(|(_, c)| *c);
        if let Some(current) = current {
            if cas != 0 && cas != current {
                return Err(Status::CasMismatch);
            }
        }
        let next = inner.next_cas();
        inner
            .maps
            .entry(vm_id.to_string())
            .or_default()
            .insert(key.to_vec(), (value.to_vec(), next));
        Ok(())
    }

    /// Test access: every key/value of one vm_id.
    pub fn snapshot(&self, vm_id: &str) -> Vec<(Vec<u8>, Vec<u8>, u32)> {
        let inner = lock(&self.inner);
        let mut out: Vec<_> = inner
            .maps
            .get(vm_id)
            .map(|m| {
                m.iter()
                    .map(|(k, (v, c))| (k.clone(), v.clone(), *c))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// Where a queue's `on_queue_ready` goes: the last registrant's root context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueOwner {
    pub worker: usize,
    pub filter: usize,
    pub context_id: u32,
}

#[derive(Default)]
pub(crate) struct SharedQueues {
    inner: Mutex<QueuesInner>,
}

#[derive(Default)]
struct QueuesInner {
    next_token: u32,
    tokens: HashMap<(String, Vec<u8>), u32>,
    queues: HashMap<u32, (QueueOwner, VecDeque<Vec<u8>>)>,
}

impl SharedQueues {
    /// cpp-host `registerQueue`: same token for the same (vm_id, name); the last registrant
    /// receives `on_queue_ready`; queued data is kept.
    pub fn register(&self, vm_id: &str, name: &[u8], owner: QueueOwner) -> u32 {
        let mut inner = lock(&self.inner);
        let key = (vm_id.to_string(), name.to_vec());
        let token = match inner.tokens.get(&key) {
            Some(t) => *t,
            None => {
                let mut t = inner.next_token.wrapping_add(1);
                while t == 0 || inner.queues.contains_key(&t) {
                    t = t.wrapping_add(1);
                }
                inner.next_token = t;
                inner.tokens.insert(key, t);
                t
            }
        };
        let entry = inner
            .queues
            .entry(token)
            .or_insert_with(|| (owner, VecDeque::new()));
        entry.0 = owner;
        token
    }

    pub fn resolve(&self, vm_id: &[u8], name: &[u8]) -> Option<u32> {
        let inner = lock(&self.inner);
        let key = (String::from_utf8_lossy(vm_id).into_owned(), name.to_vec());
        inner.tokens.get(&key).copied()
    }

    pub fn dequeue(&self, token: u32) -> Result<Vec<u8>, Status> {
        let mut inner = lock(&self.inner);
        let (_, q) = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
        q.pop_front().ok_or(Status::Empty)
    }

    pub fn enqueue(&self, token: u32, data: &[u8]) -> Result<QueueOwner, Status> {
        let mut inner = lock(&self.inner);
        let (owner, q) = inner.queues.get_mut(&token).ok_or(Status::NotFound)?;
        q.push_back(data.to_vec());
        Ok(*owner)
    }
}

/// Kinds of metrics (proxy-wasm `MetricType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric as tests read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricValue {
    pub name: String,
    pub kind: MetricKind,
    /// Counter/gauge value; for a histogram the number of recorded samples.
    pub value: i64,
    /// Recorded histogram samples (empty for counters and gauges).
    pub samples: Vec<u64>,
}

/// Envoy's stats store as the wasm filter sees it: a define returns a fresh id whose low two
/// bits encode the type, and ids of the same name share one stat.
#[derive(Default)]
pub(crate) struct Metrics {
    inner: Mutex<MetricsInner>,
}

#[derive(Default)]
struct MetricsInner {
    stats: Vec<MetricValue>,
    by_name: HashMap<(String, MetricKindKey), usize>,
    ids: HashMap<u32, usize>,
    next_id: u32,
}

type MetricKindKey = u8;

impl Metrics {
    pub fn define(&self, kind: u32, name: &[u8]) -> Result<u32, Status> {
        let kind = match kind {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            2 => MetricKind::Histogram,
            _ => return Err(Status::BadArgument),
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let mut inner = lock(&self.inner);
        let key = (name.clone(), kind as u8);
        let index = match inner.by_name.get(&key) {
            Some(i) => *i,
            None => {
                inner.stats.push(MetricValue {
                    name,
                    kind,
                    value: 0,
                    samples: Vec::new(),
                });
                let i = inner.stats.len() - 1;
                inner.by_name.insert(key, i);
                i
            }
        };
        inner.next_id = inner.next_id.wrapping_add(4);
        let id = inner.next_id | kind as u32;
        inner.ids.insert(id, index);
        Ok(id)
    }

    pub fn increment(&self, id: u32, offset: i64) -> Result<(), Status> {
        let mut inner = lock(&self.inner);
        let index = *inner.ids.get(&id).ok_or(Status::NotFound)?;
        let stat = inner.stats.get_mut(index).ok_or(Status::NotFound)?;
        match stat.kind {
            MetricKind::Counter if offset > 0 => stat.value = stat.value.saturating_add(offset),
            MetricKind::Counter => return Err(Status::BadArgument),
            MetricKind::Gauge => stat.value = stat.value.saturating_add(offset),
            MetricKind::Histogram => return Err(Status::BadArgument),
        }
        Ok(())
    }

    pub fn record(&self, id: u32, value: u64) -> Result<(), Status> {
        let mut inner = lock(&self.inner);
        let index = *inner.ids.get(&id).ok_or(Status::NotFound)?;
        let stat = inner.stats.get_mut(index).ok_or(Status::NotFound)?;
        match stat.kind {
            MetricKind::Counter => stat.value = stat.value.saturating_add(value as i64),
            MetricKind::Gauge => stat.value = value as i64,
            MetricKind::Histogram => {
                stat.samples.push(value);
                stat.value = stat.samples.len() as i64;
            }
        }
        Ok(())
    }

    pub fn get(&self, id: u32) -> Result<u64, Status> {
        let inner = lock(&self.inner);
        let index = *inner.ids.get(&id).ok_or(Status::NotFound)?;
        let stat = inner.stats.get(index).ok_or(Status::NotFound)?;
        match stat.kind {
            MetricKind::Histogram => Err(Status::BadArgument),
            _ => Ok(stat.value as u64),
        }
    }

    pub fn all(&self) -> Vec<MetricValue> {
        lock(&self.inner).stats.clone()
    }
}

/// What an armed fault makes a hostcall do instead of running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FaultAction {
    /// Return this status (nothing is written to the out-params).
    Status(Status),
    /// Return `Ok` with these bytes as the result: for a call that hands a buffer back (header
    /// values and maps, properties, buffers, shared data, queue items) they are the buffer (empty:
    /// pointer 0, size 0, as cpp-host hands over nothing); for a call that writes a number (sizes,
    /// time, metric ids and values, tokens) they are written raw to its out-param, so 2 bytes are
    /// a short write; a call with no output answers `Ok` without doing anything.
    Bytes(Vec<u8>),
}

/// One armed fault: `hostcall` (e.g. `"proxy_get_property"`), optionally only as called by the
/// plugin named `filter`, lets `skip` matching calls run and then acts on the next `times`
/// matching calls (`None`: every one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    hostcall: String,
    action: FaultAction,
    filter: Option<String>,
    skip: u32,
    times: Option<u32>,
}

impl Fault {
    pub fn new(hostcall: &str, action: FaultAction) -> Fault {
        Fault {
            hostcall: hostcall.to_string(),
            action,
            filter: None,
            skip: 0,
            times: None,
        }
    }
    /// Only calls made by plugin `name`.
    pub fn filter(mut self, name: &str) -> Fault {
        self.filter = Some(name.to_string());
        self
    }
    /// Only the `n`-th matching call (0-based), once.
    pub fn nth(mut self, n: u32) -> Fault {
        self.skip = n;
        self.times = Some(1);
        self
    }
    pub fn times(mut self, times: Option<u32>) -> Fault {
        self.times = times;
        self
    }
}

/// One hostcall as the trace saw it (only while tracing is on, see [`crate::Host::trace`]).
/// (Not re-exported by name yet: read it through `Host::hostcall_trace`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostcallRecord {
    /// 0 = main thread, 1.. = workers.
    pub slot: usize,
    /// Plugin name of the calling filter.
    pub filter: String,
    pub hostcall: &'static str,
    /// Whether it was made for a request (an HTTP context), not a root context.
    pub in_stream: bool,
    /// The key, property path or cluster it named, for the calls that name one.
    pub detail: String,
    /// Whether an armed fault answered it.
    pub faulted: bool,
}

/// Injected host faults (the named hostcall answers as told instead of running) and the
/// optional trace of every hostcall.
#[derive(Default)]
pub(crate) struct Faults {
    /// Fast path: false when nothing is armed and nothing traced.
    any: AtomicBool,
    tracing: AtomicBool,
    inner: Mutex<FaultsInner>,
}

#[derive(Default)]
struct FaultsInner {
    armed: Vec<Fault>,
    trace: Vec<HostcallRecord>,
}

impl Faults {
    /// The status-only form: replaces any fault armed for `hostcall`.
    pub fn inject(&self, hostcall: &str, status: Status, times: Option<u32>) {
        let mut inner = lock(&self.inner);
        inner.armed.retain(|f| f.hostcall != hostcall);
        inner
            .armed
            .push(Fault::new(hostcall, FaultAction::Status(status)).times(times));
        self.any.store(true, Ordering::SeqCst);
    }

    /// Arms one more fault (several may target one hostcall; the first that matches acts).
    pub fn arm(&self, fault: Fault) {
        lock(&self.inner).armed.push(fault);
        self.any.store(true, Ordering::SeqCst);
    }

    pub fn clear(&self) {
        lock(&self.inner).armed.clear();
        self.any
            .store(self.tracing.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Starts (clearing) or stops the trace.
    pub fn set_tracing(&self, on: bool) {
        let mut inner = lock(&self.inner);
        if on {
            inner.trace.clear();
        }
        self.tracing.store(on, Ordering::SeqCst);
        let any = on || !inner.armed.is_empty();
        self.any.store(any, Ordering::SeqCst);
    }

    pub fn trace(&self) -> Vec<HostcallRecord> {
        lock(&self.inner).trace.clone()
    }

    /// What to do instead of running `hostcall` for plugin `filter`, if a fault is armed; records
    /// the call when tracing.
    pub fn take(
        &self,
        hostcall: &'static str,
        slot: usize,
        filter: &str,
        in_stream: bool,
    ) -> Option<FaultAction> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let mut inner = lock(&self.inner);
        let mut action = None;
        for f in inner.armed.iter_mut() {
            if f.hostcall != hostcall || f.filter.as_deref().is_some_and(|n| n != filter) {
                continue;
            }
            if f.skip > 0 {
                f.skip -= 1;
                continue;
            }
            match &mut f.times {
                Some(0) => continue,
                Some(n) => *n -= 1,
                None => {}
            }
            action = Some(f.action.clone());
            break;
        }
        if self.tracing.load(Ordering::Relaxed) {
            inner.trace.push(HostcallRecord {
                slot,
                filter: filter.to_string(),
                hostcall,
                in_stream,
                detail: String::new(),
                faulted: action.is_some(),
            });
        }
        action
    }

    /// Names what the last traced call of `slot` acted on (a key, a property path).
    pub fn note(&self, slot: usize, detail: impl FnOnce() -> String) {
        if !self.tracing.load(Ordering::Relaxed) {
            return;
        }
        let mut inner = lock(&self.inner);
        if let Some(r) = inner.trace.iter_mut().rev().find(|r| r.slot == slot) {
            if r.detail.is_empty() {
                r.detail = detail();
            }
        }
    }
}

/// Locks, recovering from poisoning (a panicking test thread must not wedge the others).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics_match_cpp_host() {
        let d = SharedData::default();
        assert_eq!(d.get("vm", b"k"), Err(Status::NotFound));
        // A missing key ignores cas.
        d.set("vm", b"k", b"1", 12345).unwrap();
        let (v, cas) = d.get("vm", b"k").unwrap();
        assert_eq!((v.as_slice(), cas), (&b"1"[..], 1));
        assert_eq!(d.set("vm", b"k", b"2", cas + 7), Err(Status::CasMismatch));
        d.set("vm", b"k", b"2", cas).unwrap();
        assert_eq!(d.get("vm", b"k").unwrap().1, 2);
        // cas 0 overwrites.
        d.set("vm", b"k", b"3", 0).unwrap();
        assert_eq!(d.get("vm", b"k").unwrap(), (b"3".to_vec(), 3));
        // One counter across vm_ids; separate maps.
        d.set("other", b"k", b"x", 0).unwrap();
        assert_eq!(d.get("other", b"k").unwrap().1, 4);
        assert_eq!(d.get("vm", b"k").unwrap().0, b"3".to_vec());
    }

    #[test]
    fn faults_hit_the_nth_matching_call_of_the_named_plugin_and_are_traced() {
        let f = Faults::default();
        assert_eq!(f.take("proxy_log", 1, "a", true), None);
        f.arm(
            Fault::new("proxy_get_property", FaultAction::Bytes(vec![1]))
                .filter("a")
                .nth(1),
        );
        f.set_tracing(true);
        // Another plugin's calls neither match nor count.
        assert_eq!(f.take("proxy_get_property", 1, "b", true), None);
        assert_eq!(f.take("proxy_get_property", 1, "a", true), None);
        f.note(1, || "source.principal".to_string());
        assert_eq!(
            f.take("proxy_get_property", 1, "a", true),
            Some(FaultAction::Bytes(vec![1]))
        );
        // Once only.
        assert_eq!(f.take("proxy_get_property", 1, "a", true), None);
        let trace = f.trace();
        assert_eq!(trace.len(), 4);
        assert_eq!(trace[1].detail, "source.principal");
        assert!(trace[2].faulted && !trace[1].faulted);
        // The status-only form replaces what was armed for the call; clear keeps the trace on.
        f.inject("proxy_log", Status::InternalFailure, Some(1));
        f.clear();
        assert_eq!(f.take("proxy_log", 0, "a", false), None);
        assert_eq!(f.trace().len(), 5);
    }

    #[test]
    fn metric_rules() {
        let m = Metrics::default();
        let c = m.define(0, b"c").unwrap();
        let c2 = m.define(0, b"c").unwrap();
        assert_ne!(c, c2);
        m.increment(c, 2).unwrap();
        m.increment(c2, 3).unwrap();
        assert_eq!(m.get(c).unwrap(), 5);
        assert_eq!(m.increment(c, -1), Err(Status::BadArgument));
        let h = m.define(2, b"h").unwrap();
        m.record(h, 7).unwrap();
        assert_eq!(m.get(h), Err(Status::BadArgument));
        assert_eq!(m.get(999), Err(Status::NotFound));
    }
}
