//! The per-request decision: extract tokens, check each (all must pass), then say what to do
//! with the request. Keys come from a [`KeyLookup`] (inline sets, or the remote JWKS state).

use meshward_common::identity::RequestIdentity;
use serde_json::{Map, Value};

use std::rc::Rc;

use crate::cache::{TokenCache, Verified, DEFAULT_CAPACITY};
use crate::config::{Config, KeySource, LocationKind};
use crate::extract::extract;
use crate::host_verify::HostVerifier;
use crate::jwk::KeySet;
use crate::status::AuthError;
use crate::token::{check_audience, check_time, parse_claims, parse_jws};
use crate::verify::{verify_signature_with, Signature};

/// What the filter sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Every header (pseudo-headers included), in order, names as the host gives them.
    pub headers: &'a [(&'a str, &'a str)],
    /// `:path`, query included.
    pub path: &'a str,
    /// `x-forwarded-proto`, else `:scheme`.
    pub scheme: &'a str,
    /// `:authority`.
    pub authority: &'a str,
}

impl<'a> Request<'a> {
    /// The request as its header map describes it: `:path`, `x-forwarded-proto` else `:scheme`
    /// else `http`, `:authority` (first of each, names matched case-insensitively; missing ones
    /// empty).
    pub fn from_headers(headers: &'a [(&'a str, &'a str)]) -> Self {
        Self {
            headers,
            path: header(headers, ":path").unwrap_or_default(),
            scheme: header(headers, "x-forwarded-proto")
                .or_else(|| header(headers, ":scheme"))
                .unwrap_or("http"),
            authority: header(headers, ":authority").unwrap_or_default(),
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        header(self.headers, name)
    }
}

fn header<'a>(headers: &'a [(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
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
    /// Continue. The adapter has already removed every request header that folds to a configured
    /// output header ([`Config::spoofed_output_headers`]); now it removes `remove_headers`
    /// (stripped token headers), sets `set_headers` and publishes `identity_bytes` (the checked
    /// serialization of `identity`).
    Allow {
        identity: Option<Rc<RequestIdentity>>,
        identity_bytes: Option<Rc<[u8]>>,
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
    /// Where signatures are checked: the host's `verify_signature` when it has one, else Rust.
    host: HostVerifier,
}

enum Checked {
    Ok(Rc<Verified>),
    Wait { rule: usize, refetch: bool },
}

impl Authenticator {
    /// Signatures checked in pure Rust (see [`Authenticator::with_host`]).
    pub fn new(config: Config) -> Self {
        Self {
            config,
            cache: TokenCache::new(DEFAULT_CAPACITY),
            host: HostVerifier::none(),
        }
    }

    pub fn with_cache_capacity(config: Config, capacity: usize) -> Self {
        Self {
            cache: TokenCache::new(capacity),
            ..Self::new(config)
        }
    }

    /// Check signatures through `host` where it can (`crate::host_verify`).
    pub fn with_host(self, host: HostVerifier) -> Self {
        Self { host, ..self }
    }

    /// The host path's state (for logs and tests).
    pub fn host(&self) -> &HostVerifier {
        &self.host
    }

    /// Decide on a request at `now_secs` (host clock). `expired_wait` is true when the request
    /// has already waited for keys as long as allowed: pending keys then count as failed.
    ///
    /// One request, one identity: every present location must yield one clean token
    /// ([`extract`]), and all the tokens found must be the same string; otherwise 401 before any
    /// key is looked at. The outputs and the published identity then all come from that token.
    pub fn decide(
        &mut self,
        req: &Request<'_>,
        now_secs: u64,
        keys: &dyn KeyLookup,
        expired_wait: bool,
        stats: &mut Stats,
    ) -> Verdict {
        let found = match extract(&self.config.locations, req.headers, req.path) {
            Ok(found) => found,
            Err(error) => return Verdict::Deny(denial(error, req)),
        };
        let mut token: Option<&str> = None;
        let mut at: Vec<usize> = Vec::with_capacity(found.len());
        for f in &found {
            match token {
                Some(t) if t != f.token => {
                    return Verdict::Deny(denial(AuthError::MultipleTokens, req));
                }
                _ => token = Some(&*f.token),
            }
            at.push(f.location);
        }
        let Some(token) = token else {
            if self.config.require_token {
                return Verdict::Deny(denial(AuthError::Missing, req));
            }
            return Verdict::Allow {
                identity: None,
                identity_bytes: None,
                remove_headers: Vec::new(),
                set_headers: Vec::new(),
            };
        };
        match self.check(token, &at, now_secs, keys, expired_wait, stats) {
            Err(error) => Verdict::Deny(denial(error, req)),
            Ok(Checked::Ok(v)) => self.allow(&v, &at, req),
            Ok(Checked::Wait { rule, refetch }) => Verdict::Wait {
                rules: vec![rule],
                refetch: if refetch { vec![rule] } else { Vec::new() },
            },
        }
    }

    fn check(
        &mut self,
        token: &str,
        at: &[usize],
        now: u64,
        keys: &dyn KeyLookup,
        expired_wait: bool,
        stats: &mut Stats,
    ) -> Result<Checked, AuthError> {
        let skew = self.config.clock_skew_secs;
        if let Some(hit) = self.cache.get(token, now, skew) {
            let generation = match self.config.rules.get(hit.rule).map(|r| &r.keys) {
                Some(KeySource::Inline(_)) => Some(0),
                Some(KeySource::Remote(_)) => match keys.remote_keys(hit.rule) {
                    Keys::Ready { generation, .. } => Some(generation),
                    _ => None,
                },
                None => None,
            };
            if generation == Some(hit.generation) && reads_all(&self.config, hit.rule, at) {
                stats.cache_hits = stats.cache_hits.saturating_add(1);
                let rule = self
                    .config
                    .rules
                    .get(hit.rule)
                    .ok_or(AuthError::VerificationFail)?;
                check_time(&hit.claims, now, skew)?;
                check_audience(&hit.claims, &rule.audiences)?;
                return Ok(Checked::Ok(hit));
            }
        }
        stats.cache_misses = stats.cache_misses.saturating_add(1);

        let jws = parse_jws(token)?;
        let claims = parse_claims(&jws.payload)?;
        // An empty or missing `iss` never matches (envoy#20279); the rule must also read tokens
        // from every location this one came from.
        let iss = claims
            .iss
            .as_deref()
            .filter(|i| !i.is_empty())
            .ok_or(AuthError::UnknownIssuer)?;
        let rule_index = self
            .config
            .rules
            .iter()
            .position(|rule| rule.issuer == iss)
            .filter(|&r| reads_all(&self.config, r, at))
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
        match verify_signature_with(&jws, set, &mut self.host) {
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
        // What the token yields is computed once, here, and shared by every later hit. The claims
        // move into the published identity (outputs read them there); the cache entry keeps
        // only what its checks on every hit read (`exp`, `nbf`, `aud`).
        let mut claims = claims;
        let all = std::mem::take(&mut claims.all);
        let published = RequestIdentity::from_claims(all)
            .ok_or(AuthError::UnknownIssuer)
            .and_then(|identity| {
                let bytes = identity
                    .to_published_bytes()
                    .ok_or(AuthError::PayloadParse)?;
                Ok((Rc::new(identity), Rc::from(bytes)))
            });
        let verified = Rc::new(Verified {
            rule: rule_index,
            generation,
            claims,
            payload_b64: jws.payload_b64.into(),
            published,
        });
        self.cache.insert(token, Rc::clone(&verified));
        Ok(Checked::Ok(verified))
    }

    /// Outputs of the one verified token found at the locations `at`. The identity is published
    /// only in a form every reader parses back to the same value; otherwise the request is
    /// refused (401): an identity a reader cannot read must never look like "no identity".
    fn allow(&self, v: &Verified, at: &[usize], req: &Request<'_>) -> Verdict {
        let (identity, identity_bytes) = match &v.published {
            Ok(published) => published.clone(),
            Err(error) => return Verdict::Deny(denial(*error, req)),
        };
        let mut remove_headers = Vec::new();
        let mut set_headers: Vec<(String, String)> = Vec::new();
        let Some(rule) = self.config.rules.get(v.rule) else {
            return Verdict::Deny(denial(AuthError::VerificationFail, req));
        };
        if !rule.forward {
            for &l in at {
                if let Some(LocationKind::Header { name, .. }) =
                    self.config.locations.get(l).map(|l| &l.kind)
                {
                    if !remove_headers.contains(name) {
                        remove_headers.push(name.clone());
                    }
                }
            }
        }
        if let Some(header) = &rule.payload_header {
            set_headers.push((header.clone(), v.payload_b64.to_string()));
        }
        for (header, path) in &rule.claim_headers {
            if let Some(value) = claim_text(&identity.claims, path) {
                set_headers.push((header.clone(), value));
            }
        }
        Verdict::Allow {
            identity: Some(identity),
            identity_bytes: Some(identity_bytes),
            remove_headers,
            set_headers,
        }
    }
}

/// Whether `rule` reads tokens from every location in `at`.
fn reads_all(config: &Config, rule: usize, at: &[usize]) -> bool {
    at.iter().all(|&l| {
        config
            .locations
            .get(l)
            .is_some_and(|loc| loc.rules.contains(&rule))
    })
}

/// A claim as header text: strings as is, numbers and booleans as JSON; objects, arrays and
/// missing claims give nothing (Envoy `claim_to_headers`).
fn claim_text(claims: &Map<String, Value>, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
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
