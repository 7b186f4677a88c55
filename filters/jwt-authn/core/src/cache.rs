//! Verified-token cache: a repeated token costs a SHA-256 instead of a signature check. Only
//! tokens that fully verified are stored; the time and audience checks still run on every hit
//! (like Envoy). Entries are tied to the key-set generation that verified them, so a JWKS change
//! (rotation) invalidates them. Bounded; oldest entries leave first; expired entries are dropped.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

use crate::token::Claims;

pub const DEFAULT_CAPACITY: usize = 256;

#[derive(Debug, Clone)]
pub struct Entry {
    pub rule: usize,
    pub generation: u64,
    pub claims: Claims,
    pub payload_b64: String,
}

#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<[u8; 32], Entry>,
    order: VecDeque<[u8; 32]>,
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `hash` if it is still usable at `now` (not past `exp + skew`).
    pub fn get(&mut self, hash: &[u8; 32], now_secs: u64, skew_secs: u64) -> Option<&Entry> {
        let expired = self.entries.get(hash).map(|e| {
            e.claims
                .exp
                .is_some_and(|exp| now_secs > exp.saturating_add(skew_secs))
        })?;
        if expired {
            self.entries.remove(hash);
            self.order.retain(|h| h != hash);
            return None;
        }
        self.entries.get(hash)
    }

    pub fn insert(&mut self, hash: [u8; 32], entry: Entry) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.insert(hash, entry).is_none() {
            self.order.push_back(hash);
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::parse_claims;

    fn entry(exp: u64) -> Entry {
        Entry {
            rule: 0,
            generation: 1,
            claims: parse_claims(format!(r#"{{"exp":{exp}}}"#).as_bytes()).unwrap(),
            payload_b64: String::new(),
        }
    }

    #[test]
    fn bounded_fifo() {
        let mut c = TokenCache::new(2);
        c.insert(token_hash("a"), entry(100));
        c.insert(token_hash("b"), entry(100));
        c.insert(token_hash("c"), entry(100));
        assert_eq!(c.len(), 2);
        assert!(c.get(&token_hash("a"), 0, 0).is_none());
        assert!(c.get(&token_hash("c"), 0, 0).is_some());
    }

    #[test]
    fn honours_exp() {
        let mut c = TokenCache::new(4);
        c.insert(token_hash("a"), entry(100));
        assert!(c.get(&token_hash("a"), 160, 60).is_some());
        assert!(c.get(&token_hash("a"), 161, 60).is_none());
        assert!(c.is_empty(), "expired entry dropped");
    }
}
