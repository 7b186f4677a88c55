//! Remote JWKS: a pure state machine per `jwksUri` rule, per worker VM, coordinated across
//! workers through proxy-wasm shared data.
//!
//! Shared data (one store per `vm_id`, see docs/jwt-authn.md):
//! - `meshward.jwks.<id>.keys`: `{"fetchedAt":ms,"expiresAt":ms,"failedAt":ms,"jwks":"<body>"}`:
//!   the last good JWKS body and when the last fetch failed. Every worker installs a newer body.
//! - `meshward.jwks.<id>.lease`: `{"owner":u64,"until":ms}`: whoever takes the lease (CAS write)
//!   fetches; the others wait for `.keys` to change. A lease ends at `until` even if its holder died.
//!
//! The adapter calls [`RemoteJwks::poll`] on ticks and when a request needs keys; `true` means
//! "dispatch the fetch now", and the result comes back through [`RemoteJwks::on_fetch_done`].

use std::sync::Arc;

use meshward_common::shared_store::{SharedStore, Stored};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::RemoteSpec;
use crate::engine::Keys;
use crate::jwk::{parse_jwks, KeySet};

/// After a failed fetch, wait this long before the next attempt (Envoy's
/// `failed_refetch_duration` default).
pub const FAILED_RETRY_MS: u64 = 1_000;
/// An unknown `kid` may trigger a refetch only if the last fetch (good or failed) is at least this old.
pub const KID_REFETCH_MS: u64 = 30_000;
/// Extra time a fetch lease lives beyond the fetch timeout.
pub const LEASE_MARGIN_MS: u64 = 1_000;

/// Read `key`. A value that cannot be read, an empty one (the host handed over no buffer) or one
/// without a CAS (nothing to compare-and-swap against) cannot be a record this filter wrote: it
/// counts as missing. Shared data only spreads keys and fetch leases between workers, so a host
/// error there costs an extra fetch or a wait, never a verdict (requests without keys are denied).
pub fn read_shared(store: &mut dyn SharedStore, key: &str) -> Option<(Vec<u8>, u32)> {
    match store.get(key) {
        Ok(Some(Stored { value, cas })) if !value.is_empty() && cas != 0 => Some((value, cas)),
        Ok(_) | Err(_) => None,
    }
}

/// Write `key` (`cas: None` unconditionally); `false` on CAS mismatch or host error: the write
/// is lost, as a failed one would be.
pub fn write_shared(
    store: &mut dyn SharedStore,
    key: &str,
    value: &[u8],
    cas: Option<u32>,
) -> bool {
    // CAS 0 is the ABI's unconditional write.
    store.set(key, value, cas.unwrap_or(0)).is_ok()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct KeysRecord {
    #[serde(default)]
    fetched_at: u64,
    #[serde(default)]
    expires_at: u64,
    #[serde(default)]
    failed_at: u64,
    #[serde(default)]
    jwks: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Lease {
    owner: u64,
    until: u64,
}

/// Why a trigger asks for keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Tick,
    /// A request needs keys now.
    NeedKeys,
    /// A token's `kid` matched no key.
    UnknownKid,
}

/// What a finished fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// New keys installed; reasons for keys that were skipped.
    Installed { skipped: Vec<String> },
    /// Kept the previous keys (if any); why the fetch was refused.
    Failed(String),
}

#[derive(Debug)]
pub struct RemoteJwks {
    pub spec: RemoteSpec,
    keys_key: String,
    lease_key: String,
    keys: Option<Arc<KeySet>>,
    generation: u64,
    fetched_at: u64,
    expires_at: u64,
    failed_at: u64,
    epoch: u64,
    fetching_until: Option<u64>,
}

impl RemoteJwks {
    pub fn new(issuer: &str, spec: RemoteSpec) -> Self {
        let digest = Sha256::digest(format!("{issuer}\n{}", spec.uri).as_bytes());
        let id: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Self {
            spec,
            keys_key: format!("meshward.jwks.{id}.keys"),
            lease_key: format!("meshward.jwks.{id}.lease"),
            keys: None,
            generation: 0,
            fetched_at: 0,
            expires_at: 0,
            failed_at: 0,
            epoch: 0,
            fetching_until: None,
        }
    }

    pub fn keys_key(&self) -> &str {
        &self.keys_key
    }

    pub fn lease_key(&self) -> &str {
        &self.lease_key
    }

    /// Changes whenever keys are installed or a failure is seen: waiters re-decide then.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether this worker has a fetch in flight.
    pub fn fetching(&self) -> bool {
        self.fetching_until.is_some()
    }

    /// The last good keys, unless they are past `expiresAt + jwksMaxStale`: keys the IdP has not
    /// confirmed for that long are dropped (a revoked key must not live forever because the IdP
    /// is down or its answers are refused).
    fn usable_keys(&self, now_ms: u64) -> Option<&Arc<KeySet>> {
        self.keys
            .as_ref()
            .filter(|_| now_ms < self.expires_at.saturating_add(self.spec.max_stale_ms))
    }

    /// Keys as a request sees them. With no usable keys: failed right after a failed fetch (fail
    /// fast while the JWKS server is down), otherwise pending (a fetch is coming; the wait is
    /// bounded).
    pub fn keys(&self, now_ms: u64) -> Keys<'_> {
        match self.usable_keys(now_ms) {
            Some(set) => Keys::Ready {
                set,
                generation: self.generation,
            },
            None if self.failed_at != 0
                && now_ms < self.failed_at.saturating_add(FAILED_RETRY_MS) =>
            {
                Keys::Failed
            }
            None => Keys::Pending,
        }
    }

    /// Rate limit for unknown-`kid` refetches: global, because `fetched_at`/`failed_at` are shared.
    pub fn may_refetch_for_kid(&self, now_ms: u64) -> bool {
        now_ms >= self.fetched_at.saturating_add(KID_REFETCH_MS)
            && now_ms >= self.failed_at.saturating_add(KID_REFETCH_MS)
    }

    /// How long a request may wait for keys.
    pub fn wait_bound_ms(&self) -> u64 {
        self.spec.timeout_ms.saturating_add(LEASE_MARGIN_MS)
    }

    fn refresh_at(&self) -> u64 {
        let margin = (self.spec.cache_duration_ms / 5).min(60_000);
        self.expires_at.saturating_sub(margin)
    }

    fn install(&mut self, set: KeySet, fetched_at: u64, expires_at: u64) {
        self.keys = Some(Arc::new(set));
        self.generation = self.generation.wrapping_add(1);
        self.fetched_at = fetched_at;
        self.expires_at = expires_at;
        self.epoch = self.epoch.wrapping_add(1);
    }

    fn read_record(&self, store: &mut dyn SharedStore) -> Option<(KeysRecord, u32)> {
        let (bytes, cas) = read_shared(store, &self.keys_key)?;
        serde_json::from_slice(&bytes).ok().map(|r| (r, cas))
    }

    /// Adopt what other workers fetched or saw fail.
    pub fn sync(&mut self, store: &mut dyn SharedStore) {
        let Some((record, _)) = self.read_record(store) else {
            return;
        };
        if record.fetched_at > self.fetched_at {
            if let Some(set) = record
                .jwks
                .as_deref()
                .and_then(|body| parse_jwks(body, false).ok())
            {
                self.install(set, record.fetched_at, record.expires_at);
            }
        }
        if record.failed_at > self.failed_at {
            self.failed_at = record.failed_at;
            self.epoch = self.epoch.wrapping_add(1);
        }
    }

    /// Sync, then decide whether this worker should fetch now (and take the lease if so).
    pub fn poll(
        &mut self,
        store: &mut dyn SharedStore,
        now_ms: u64,
        owner: u64,
        trigger: Trigger,
    ) -> bool {
        self.sync(store);
        if let Some(until) = self.fetching_until {
            if now_ms < until {
                return false;
            }
            // The response never came (context gone, host lost it): count it as a failure.
            self.fetching_until = None;
            self.record_failure(store, now_ms);
            self.release_lease(store, owner);
        }
        let retry_ok = now_ms >= self.failed_at.saturating_add(FAILED_RETRY_MS);
        let due = if self.usable_keys(now_ms).is_none() || now_ms >= self.refresh_at() {
            retry_ok
        } else {
            trigger == Trigger::UnknownKid && self.may_refetch_for_kid(now_ms)
        };
        if !due || !self.acquire_lease(store, now_ms, owner) {
            return false;
        }
        self.fetching_until = Some(now_ms.saturating_add(self.wait_bound_ms()));
        true
    }

    fn acquire_lease(&self, store: &mut dyn SharedStore, now_ms: u64, owner: u64) -> bool {
        let lease = Lease {
            owner,
            until: now_ms.saturating_add(self.wait_bound_ms()),
        };
        let Ok(bytes) = serde_json::to_vec(&lease) else {
            return false;
        };
        match read_shared(store, &self.lease_key) {
            Some((current, cas)) => {
                let held = serde_json::from_slice::<Lease>(&current).unwrap_or_default();
                if held.until > now_ms && held.owner != owner {
                    return false;
                }
                write_shared(store, &self.lease_key, &bytes, Some(cas))
            }
            None => {
                // A missing key has no CAS value: write, then read back to see who won a race.
                write_shared(store, &self.lease_key, &bytes, None)
                    && read_shared(store, &self.lease_key)
                        .and_then(|(v, _)| serde_json::from_slice::<Lease>(&v).ok())
                        .is_some_and(|l| l.owner == owner)
            }
        }
    }

    fn release_lease(&self, store: &mut dyn SharedStore, owner: u64) {
        if let Some((current, cas)) = read_shared(store, &self.lease_key) {
            let held = serde_json::from_slice::<Lease>(&current).unwrap_or_default();
            if held.owner == owner {
                if let Ok(bytes) = serde_json::to_vec(&Lease { owner, until: 0 }) {
                    write_shared(store, &self.lease_key, &bytes, Some(cas));
                }
            }
        }
    }

    fn record_failure(&mut self, store: &mut dyn SharedStore, now_ms: u64) {
        self.failed_at = now_ms;
        self.epoch = self.epoch.wrapping_add(1);
        // Read-modify-write with CAS so a concurrent good write is not lost.
        for _ in 0..3 {
            let (mut record, cas) = match self.read_record(store) {
                Some((r, cas)) => (r, Some(cas)),
                None => (KeysRecord::default(), None),
            };
            record.failed_at = record.failed_at.max(now_ms);
            let Ok(bytes) = serde_json::to_vec(&record) else {
                return;
            };
            if write_shared(store, &self.keys_key, &bytes, cas) {
                return;
            }
        }
    }

    /// A fetch finished: `Ok(body)` for a 200 response, `Err(reason)` otherwise.
    pub fn on_fetch_done(
        &mut self,
        store: &mut dyn SharedStore,
        now_ms: u64,
        owner: u64,
        result: Result<&[u8], String>,
    ) -> FetchOutcome {
        self.fetching_until = None;
        let parsed = result.and_then(|body| {
            let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
            parse_jwks(text, false)
                .map(|set| (set, text.to_string()))
                .map_err(|e| e.to_string())
        });
        let outcome = match parsed {
            Ok((set, body)) => {
                let skipped = set.skipped.clone();
                let expires_at = now_ms.saturating_add(self.spec.cache_duration_ms);
                self.install(set, now_ms, expires_at);
                let record = KeysRecord {
                    fetched_at: now_ms,
                    expires_at,
                    failed_at: self.failed_at,
                    jwks: Some(body),
                };
                if let Ok(bytes) = serde_json::to_vec(&record) {
                    write_shared(store, &self.keys_key, &bytes, None);
                }
                FetchOutcome::Installed { skipped }
            }
            Err(reason) => {
                self.record_failure(store, now_ms);
                FetchOutcome::Failed(reason)
            }
        };
        self.release_lease(store, owner);
        outcome
    }
}
