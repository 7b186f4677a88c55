//! Envoy's stats store as wasm filters see it (`proxy_define_metric` and friends).

use std::collections::HashMap;
use std::sync::Mutex;

use super::lock;
use crate::Status;

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
            _ => return Err(Status::BAD_ARGUMENT),
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
        let index = *inner.ids.get(&id).ok_or(Status::NOT_FOUND)?;
        let stat = inner.stats.get_mut(index).ok_or(Status::NOT_FOUND)?;
        match stat.kind {
            MetricKind::Counter if offset > 0 => stat.value = stat.value.saturating_add(offset),
            MetricKind::Counter => return Err(Status::BAD_ARGUMENT),
            MetricKind::Gauge => stat.value = stat.value.saturating_add(offset),
            MetricKind::Histogram => return Err(Status::BAD_ARGUMENT),
        }
        Ok(())
    }

    pub fn record(&self, id: u32, value: u64) -> Result<(), Status> {
        let mut inner = lock(&self.inner);
        let index = *inner.ids.get(&id).ok_or(Status::NOT_FOUND)?;
        let stat = inner.stats.get_mut(index).ok_or(Status::NOT_FOUND)?;
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
        let index = *inner.ids.get(&id).ok_or(Status::NOT_FOUND)?;
        let stat = inner.stats.get(index).ok_or(Status::NOT_FOUND)?;
        match stat.kind {
            MetricKind::Histogram => Err(Status::BAD_ARGUMENT),
            _ => Ok(stat.value as u64),
        }
    }

    pub fn all(&self) -> Vec<MetricValue> {
        lock(&self.inner).stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_rules() {
        let m = Metrics::default();
        let c = m.define(0, b"c").unwrap();
        let c2 = m.define(0, b"c").unwrap();
        assert_ne!(c, c2);
        m.increment(c, 2).unwrap();
        m.increment(c2, 3).unwrap();
        assert_eq!(m.get(c).unwrap(), 5);
        assert_eq!(m.increment(c, -1), Err(Status::BAD_ARGUMENT));
        let h = m.define(2, b"h").unwrap();
        m.record(h, 7).unwrap();
        assert_eq!(m.get(h), Err(Status::BAD_ARGUMENT));
        assert_eq!(m.get(999), Err(Status::NOT_FOUND));
    }
}
