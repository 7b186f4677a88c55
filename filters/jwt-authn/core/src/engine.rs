//! The per-request decision: extract tokens, check each (all must pass), then say what to do
//! with the request. Keys come from a [`KeyLookup`] (inline sets, or the remote JWKS state).

use meshward_common::identity::RequestIdentity;
use serde_json::Value;

use crate::cache::{token_hash, Entry, TokenCache, DEFAULT_CAPACITY};
use crate::config::{Config, KeySource, LocationKind};
use crate::extract::{extract, Found};
use crate::jwk::KeySet;
use crate::status::AuthError;
use crate::token::{check_audience, check_time, parse_claims, parse_jws, Claims};
use crate::verify::{verify_signature, Signature};

/// What the filter sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Every header (pseudo-headers included), in order, names as the host gives them.
    pub headers: &'a [(String, String)],
    /// `:path`, query included.
    pub path: &'a str,
    /// `x-forwarded-proto`, else `:scheme`.
    pub scheme: &'a str,
    /// `:authority`.
    pub authority: &'a str,
}

/// Keys for a rule, as far as this worker knows them.
#[derive(Debug, Clone, Copy)]
pub enum Keys<'a> {
    Ready {
        set: &'a KeySet,
        generation: u64,
    },
    /// The first fetch is under way (here or on another worker): wait.
    Pending,
    /// No keys, and none are coming (fetch failed, or the wait ran out).
    Failed,
}

pub trait KeyLookup {
    /// Keys of a remote rule (inline rules never reach this).
    fn remote_keys(&self, rule: usize) -> Keys<'_>;
    /// Whether an unknown `kid` may trigger a (rate-limited) refetch of this rule's JWKS now.
    fn may_refetch_for_kid(&self, rule: usize) -> bool;
}

/// A refusal, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub error: AuthError,
    pub status: u32,
    pub body: &'static str,
    pub www_authenticate: String,
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Continue. The adapter has already removed every configured output header; now it removes
    /// `remove_headers` (stripped token headers), sets `set_headers` and publishes `identity`.
    Allow {
        identity: Option<RequestIdentity>,
        remove_headers: Vec<String>,
        set_headers: Vec<(String, String)>,
    },
    Deny(Denial),
    /// Pause until the keys of these remote rules change (or the wait bound passes).
    /// `refetch` lists rules whose JWKS should be fetched again because of an unknown `kid`.
    Wait {
        rules: Vec<usize>,
        refetch: Vec<usize>,
    },
}

/// Counters for the adapter's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub cache_hits: u32,
    pub cache_misses: u32,
}

pub struct Authenticator {
    pub config: Config,
    cache: TokenCache,
}

/// One verified token.
struct Verified {
    rule: usize,
    claims: Claims,
    payload_b64: String,
    location: usize,
}

enum Checked {
    Ok(Verified),
    Wait { rule: usize, refetch: bool },
}

impl Authenticator {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            cache: TokenCache::new(DEFAULT_CAPACITY),
        }
    }

    pub fn with_cache_capacity(config: Config, capacity: usize) -> Self {
        Self {
            config,
            cache: TokenCache::new(capacity),
        }
    }

    /// Decide on a request at `now_secs` (host clock). `expired_wait` is true when the request
    /// has already waited for keys as long as allowed: pending keys then count as failed.
    pub fn decide(
        &mut self,
        req: &Request<'_>,
        now_secs: u64,
        keys: &dyn KeyLookup,
        expired_wait: bool,
        stats: &mut Stats,
    ) -> Verdict {
        let found = extract(&self.config.locations, req.headers, req.path);
        if found.is_empty() {
            if self.config.require_token {
                return Verdict::Deny(denial(AuthError::Missing, req));
            }
            return Verdict::Allow {
                identity: None,
                remove_headers: Vec::new(),
                set_headers: Vec::new(),
            };
        }
        let mut verified = Vec::with_capacity(found.len());
        let mut wait_rules = Vec::new();
        let mut refetch = Vec::new();
        for f in &found {
            match self.check(f, now_secs, keys, expired_wait, stats) {
                Err(error) => return Verdict::Deny(denial(error, req)),
                Ok(Checked::Ok(v)) => verified.push(v),
                Ok(Checked::Wait {
                    rule,
                    refetch: again,
                }) => {
                    if !wait_rules.contains(&rule) {
                        wait_rules.push(rule);
                    }
                    if again && !refetch.contains(&rule) {
                        refetch.push(rule);
                    }
                }
            }
        }
        if !wait_rules.is_empty() {
            return Verdict::Wait {
                rules: wait_rules,
                refetch,
            };
        }
        self.allow(verified)
    }

    fn check(
        &mut self,
        found: &Found,
        now: u64,
        keys: &dyn KeyLookup,
        expired_wait: bool,
        stats: &mut Stats,
    ) -> Result<Checked, AuthError> {
        let skew = self.config.clock_skew_secs;
        let location = self
            .config
            .locations
            .get(found.location)
            .ok_or(AuthError::VerificationFail)?;
        let hash = token_hash(&found.token);
        if let Some(hit) = self.cache.get(&hash, now, skew) {
            let generation = match self.config.rules.get(hit.rule).map(|r| &r.keys) {
                Some(KeySource::Inline(_)) => Some(0),
                Some(KeySource::Remote(_)) => match keys.remote_keys(hit.rule) {
                    Keys::Ready { generation, .. } => Some(generation),
                    _ => None,
                },
                None => None,
            };
            if generation == Some(hit.generation) && location.rules.contains(&hit.rule) {
                stats.cache_hits = stats.cache_hits.saturating_add(1);
                let rule = self
                    .config
                    .rules
                    .get(hit.rule)
                    .ok_or(AuthError::VerificationFail)?;
                check_time(&hit.claims, now, skew)?;
                check_audience(&hit.claims, &rule.audiences)?;
                return Ok(Checked::Ok(Verified {
                    rule: hit.rule,
                    claims: hit.claims.clone(),
                    payload_b64: hit.payload_b64.clone(),
                    location: found.location,
                }));
            }
        }
        stats.cache_misses = stats.cache_misses.saturating_add(1);

        let jws = parse_jws(&found.token)?;
        let claims = parse_claims(&jws.payload)?;
        // An empty or missing `iss` never matches (envoy#20279); the rule must also read tokens
        // from the location this one came from.
        let iss = claims
            .iss
            .as_deref()
            .filter(|i| !i.is_empty())
            .ok_or(AuthError::UnknownIssuer)?;
        let rule_index = location
            .rules
            .iter()
            .copied()
            .find(|&r| {
                self.config
                    .rules
                    .get(r)
                    .is_some_and(|rule| rule.issuer == iss)
            })
            .ok_or(AuthError::UnknownIssuer)?;
        let rule = self
            .config
            .rules
            .get(rule_index)
            .ok_or(AuthError::UnknownIssuer)?;
        check_time(&claims, now, skew)?;
        check_audience(&claims, &rule.audiences)?;
        let (set, generation, remote) = match &rule.keys {
            KeySource::Inline(set) => (set.as_ref(), 0, false),
            KeySource::Remote(_) => match keys.remote_keys(rule_index) {
                Keys::Ready { set, generation } => (set, generation, true),
                Keys::Pending if !expired_wait => {
                    return Ok(Checked::Wait {
                        rule: rule_index,
                        refetch: false,
                    })
                }
                Keys::Pending | Keys::Failed => return Err(AuthError::FetchFailed),
            },
        };
        match verify_signature(&jws, set) {
            Ok(Signature::Verified) => {}
            Ok(Signature::VerifiedPayloadNotClaims) => return Err(AuthError::VerificationFail),
            Err(AuthError::KidAlgMismatch)
                if remote
                    && !expired_wait
                    && jws.kid.is_some()
                    && keys.may_refetch_for_kid(rule_index) =>
            {
                return Ok(Checked::Wait {
                    rule: rule_index,
                    refetch: true,
                });
            }
            Err(e) => return Err(e),
        }
        let payload_b64 = jws.payload_b64.to_string();
        self.cache.insert(
            hash,
            Entry {
                rule: rule_index,
                generation,
                claims: claims.clone(),
                payload_b64: payload_b64.clone(),
            },
        );
        Ok(Checked::Ok(Verified {
            rule: rule_index,
            claims,
            payload_b64,
            location: found.location,
        }))
    }

    fn allow(&self, verified: Vec<Verified>) -> Verdict {
        let mut remove_headers = Vec::new();
        let mut set_headers: Vec<(String, String)> = Vec::new();
        let mut set =
            |name: &String, value: String| match set_headers.iter_mut().find(|(n, _)| n == name) {
                Some(existing) => existing.1 = value,
                None => set_headers.push((name.clone(), value)),
            };
        for v in &verified {
            let Some(rule) = self.config.rules.get(v.rule) else {
                continue;
            };
            if !rule.forward {
                if let Some(LocationKind::Header { name, .. }) =
                    self.config.locations.get(v.location).map(|l| &l.kind)
                {
                    if !remove_headers.contains(name) {
                        remove_headers.push(name.clone());
                    }
                }
            }
            if let Some(header) = &rule.payload_header {
                set(header, v.payload_b64.clone());
            }
            for (header, path) in &rule.claim_headers {
                if let Some(value) = claim_text(&v.claims, path) {
                    set(header, value);
                }
            }
        }
        // The identity is the first token's (location order); with one token there is no choice.
        let identity = verified
            .into_iter()
            .next()
            .and_then(|v| RequestIdentity::from_claims(v.claims.all));
        Verdict::Allow {
            identity,
            remove_headers,
            set_headers,
        }
    }
}

/// A claim as header text: strings as is, numbers and booleans as JSON; objects, arrays and
/// missing claims give nothing (Envoy `claim_to_headers`).
fn claim_text(claims: &Claims, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.all.get(first)?;
    for segment in rest {
        value = value.get(segment)?;
    }
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    // Never emit a header value a proxy would reject or split.
    (!text.chars().any(|c| c.is_control())).then_some(text)
}

/// Build the 401/403 with Envoy's body and `WWW-Authenticate`.
pub fn denial(error: AuthError, req: &Request<'_>) -> Denial {
    Denial {
        error,
        status: error.http_status(),
        body: error.message(),
        www_authenticate: www_authenticate(error, req.scheme, req.authority, req.path),
    }
}

/// `Bearer realm="<scheme>://<host><path>"` (path with query, at most 256 characters, `"` and
/// `\` escaped) plus `, error="invalid_token"` unless the token was missing.
pub fn www_authenticate(error: AuthError, scheme: &str, host: &str, path: &str) -> String {
    let path: String = path.chars().take(256).collect();
    let realm: String = format!("{scheme}://{host}{path}")
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    if error == AuthError::Missing {
        format!("Bearer realm=\"{realm}\"")
    } else {
        format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
    }
}
