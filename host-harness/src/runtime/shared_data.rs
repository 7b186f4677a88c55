//! Shared data (`proxy_get_shared_data` / `proxy_set_shared_data`), per vm_id, with
//! proxy-wasm-cpp-host's semantics.

use std::collections::HashMap;
use std::sync::Mutex;

use super::lock;
use crate::Status;

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
            .ok_or(Status::NOT_FOUND)
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
                return Err(Status::CAS_MISMATCH);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_semantics_match_cpp_host() {
        let d = SharedData::default();
        assert_eq!(d.get("vm", b"k"), Err(Status::NOT_FOUND));
        // A missing key ignores cas.
        d.set("vm", b"k", b"1", 12345).unwrap();
        let (v, cas) = d.get("vm", b"k").unwrap();
        assert_eq!((v.as_slice(), cas), (&b"1"[..], 1));
        assert_eq!(d.set("vm", b"k", b"2", cas + 7), Err(Status::CAS_MISMATCH));
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
}
