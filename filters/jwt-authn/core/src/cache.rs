//! Verified-token cache: a repeated token costs a hash-map lookup instead of a signature check,
//! a claims parse and the identity's serialization. Only tokens that fully verified are stored;
//! the time and audience checks still run on every hit (like Envoy). Entries are tied to the
//! key-set generation that verified them, so a JWKS change (rotation) invalidates them.
//!
//! Keyed by the token itself, compared in full: a forged token can never hit another token's
//! entry, whatever its hash. The map's hasher is std's keyed SipHash with a per-VM random key, so
//! an attacker cannot aim tokens at one bucket either. Bounded (least recently used leaves first;
//! the `lru` crate) and expired entries are dropped when met.

use std::collections::hash_map::RandomState;
use std::num::NonZeroUsize;
use std::rc::Rc;

use lru::LruCache;

use crate::token::Claims;
use meshward_common::identity::RequestIdentity;

pub const DEFAULT_CAPACITY: usize = 256;

/// What a verified token yields, computed once when it is verified and shared by every hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The `jwtRules` index whose issuer it names.
    pub rule: usize,
    /// The key-set generation that verified it (0 for inline keys).
    pub generation: u64,
    /// The checks every hit repeats read these (`exp`, `nbf`, `aud`); `all` is empty, the
    /// claims having moved into the published identity.
    pub claims: Claims,
    /// The base64url payload, as forwarded by `forwardPayloadHeader`.
    pub payload_b64: Box<str>,
    /// The request identity and its checked serialization, or why it cannot be published
    /// (shared with every verdict that hands them out: a hit copies no claim).
    pub published: Result<(Rc<RequestIdentity>, Rc<[u8]>), crate::status::AuthError>,
}

#[derive(Debug)]
pub struct TokenCache {
    /// `None` when the capacity is 0 (caching off).
    entries: Option<LruCache<Box<str>, Rc<Verified>, RandomState>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: NonZeroUsize::new(capacity)
                .map(|cap| LruCache::with_hasher(cap, RandomState::new())),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, LruCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry for exactly `token` if it is still usable at `now` (not past `exp + skew`).
    pub fn get(&mut self, token: &str, now_secs: u64, skew_secs: u64) -> Option<Rc<Verified>> {
        let entries = self.entries.as_mut()?;
        let hit = entries.get(token)?;
        if hit
            .claims
            .exp
            .is_some_and(|exp| now_secs > exp.saturating_add(skew_secs))
        {
            entries.pop(token);
            return None;
        }
        Some(Rc::clone(hit))
    }

    pub fn insert(&mut self, token: &str, entry: Rc<Verified>) {
        if let Some(entries) = self.entries.as_mut() {
            entries.put(token.into(), entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::parse_claims;

    fn entry(exp: u64) -> Rc<Verified> {
        Rc::new(Verified {
            rule: 0,
            generation: 1,
            claims: parse_claims(format!(r#"{{"exp":{exp}}}"#).as_bytes()).unwrap(),
            payload_b64: "".into(),
            published: Err(crate::status::AuthError::UnknownIssuer),
        })
    }

    #[test]
    fn bounded_least_recently_used_leaves_first() {
        let mut c = TokenCache::new(2);
        c.insert("a", entry(100));
        c.insert("b", entry(100));
        assert!(c.get("a", 0, 0).is_some()); // `a` is now the most recently used
        c.insert("c", entry(100));
        assert_eq!(c.len(), 2);
        assert!(c.get("b", 0, 0).is_none(), "b was least recently used");
        assert!(c.get("a", 0, 0).is_some());
        assert!(c.get("c", 0, 0).is_some());
    }

    #[test]
    fn only_the_exact_token_hits() {
        let mut c = TokenCache::new(4);
        c.insert("header.payload.sig", entry(100));
        for other in [
            "header.payload.sih",
            "header.payload.si",
            "header.payload.sig ",
            "",
        ] {
            assert!(c.get(other, 0, 0).is_none(), "{other:?}");
        }
        assert!(c.get("header.payload.sig", 0, 0).is_some());
    }

    #[test]
    fn honours_exp() {
        let mut c = TokenCache::new(4);
        c.insert("a", entry(100));
        assert!(c.get("a", 160, 60).is_some());
        assert!(c.get("a", 161, 60).is_none());
        assert!(c.is_empty(), "expired entry dropped");
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let mut c = TokenCache::new(0);
        c.insert("a", entry(100));
        assert!(c.get("a", 0, 0).is_none());
        assert!(c.is_empty());
    }
}
