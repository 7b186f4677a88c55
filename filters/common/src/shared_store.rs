//! Envoy's shared data as a filter core sees it: one [`SharedStore`] trait (implemented over the
//! host by `meshward_host::HostStore`, and in memory by [`MemoryStore`] for native tests), its
//! error types, and [`create_if_absent`].
//!
//! Envoy's semantics (proxy-wasm-cpp-host `shared_data.cc`), which [`MemoryStore`] reproduces:
//! `get` returns the value and its cas (a nonzero number from one global counter, bumped on every
//! write); `set` with cas 0 overwrites; with a nonzero cas it fails with
//! [`SetError::CasMismatch`] unless the key's cas is equal — **but only when the key exists**: on
//! a missing key the cas is ignored and the key is created. Two workers that both see "missing"
//! and both create would race, so creation ([`create_if_absent`]) writes with a random nonzero cas
//! ([`SharedStore::creation_cas`]): on a missing key it creates, on a key a peer created meanwhile
//! it fails with `CasMismatch` (unless the random value equals that key's cas: probability
//! 2^-32), so even a racing or late creation does not overwrite live state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A value and its cas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: Vec<u8>,
    /// Nonzero for an existing key.
    pub cas: u32,
}

/// A failed read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The host returned this status.
    Status(u32),
    /// The key exists but came back without a cas: it cannot be compare-and-set.
    NoCas,
}

/// A failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    CasMismatch,
    Status(u32),
}

/// Envoy's shared data as the core sees it.
pub trait SharedStore {
    /// `Ok(None)` when the key does not exist.
    fn get(&mut self, key: &str) -> Result<Option<Stored>, StoreError>;
    /// `cas` 0 overwrites; nonzero compares, except on a missing key (created regardless).
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError>;
    /// A random nonzero cas for [`create_if_absent`].
    fn creation_cas(&mut self) -> u32;
}

/// Create `key` with `value` unless it exists. `Ok(true)` when this call created it.
pub fn create_if_absent(
    store: &mut dyn SharedStore,
    key: &str,
    value: &[u8],
) -> Result<bool, StoreError> {
    if store.get(key)?.is_some() {
        return Ok(false);
    }
    let cas = store.creation_cas().max(1);
    match store.set(key, value, cas) {
        Ok(()) => Ok(true),
        Err(SetError::CasMismatch) => Ok(false),
        Err(SetError::Status(s)) => Err(StoreError::Status(s)),
    }
}

/// An in-memory model of Envoy's shared data, shared by clones (one clone per simulated worker),
/// with exactly the semantics described in the module docs.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    creation_cas: u32,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl Inner {
    fn next_cas(&mut self) -> u32 {
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.next_cas
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            creation_cas: 0x9e37_79b9,
        }
    }

    /// A handle with its own creation cas (stands in for each VM's random number).
    pub fn handle(&self, creation_cas: u32) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            creation_cas,
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total bytes of keys and values.
    pub fn bytes(&self) -> usize {
        self.inner
            .lock()
            .map(|i| i.map.iter().map(|(k, (v, _))| k.len() + v.len()).sum())
            .unwrap_or(0)
    }
}

impl SharedStore for MemoryStore {
    fn get(&mut self, key: &str) -> Result<Option<Stored>, StoreError> {
        let inner = self.inner.lock().map_err(|_| StoreError::Status(10))?;
        Ok(inner.map.get(key).map(|(value, cas)| Stored {
            value: value.clone(),
            cas: *cas,
        }))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        let mut inner = self.inner.lock().map_err(|_| SetError::Status(10))?;
        if let Some((_, current)) = inner.map.get(key) {
            if cas != 0 && cas != *current {
                return Err(SetError::CasMismatch);
            }
        }
        // A missing key is created whatever the cas.
        let next = inner.next_cas();
        inner.map.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    fn creation_cas(&mut self) -> u32 {
        self.creation_cas
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn a_missing_key_is_created_whatever_the_cas_an_existing_one_compares() {
        let mut store = MemoryStore::new();
        assert_eq!(store.get("k"), Ok(None));
        store.set("k", b"a", 77).unwrap();
        let cas = store.get("k").unwrap().unwrap().cas;
        assert_ne!(cas, 0);
        assert_eq!(store.set("k", b"b", cas + 1), Err(SetError::CasMismatch));
        store.set("k", b"b", cas).unwrap();
        store.set("k", b"c", 0).unwrap();
        assert_eq!(store.get("k").unwrap().unwrap().value, b"c");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn create_if_absent_never_overwrites_a_peers_key() {
        let store = MemoryStore::new();
        let (mut a, mut b) = (store.handle(5), store.handle(6));
        assert_eq!(create_if_absent(&mut a, "k", b"a"), Ok(true));
        assert_eq!(create_if_absent(&mut b, "k", b"b"), Ok(false));
        assert_eq!(b.get("k").unwrap().unwrap().value, b"a");
        assert_eq!((store.len(), store.bytes()), (1, 2));
    }
}
