//! jwt-authn-core's whole per-request decision (`Authenticator::decide`: token locations,
//! parsing, signature, claims, the verified-token cache, outputs) on requests built from fuzz
//! bytes: any headers (`authorization` in any spelling, `_` for `-`, duplicates), any query, and
//! values that mix the fixture tokens (valid, expired, forged…) with arbitrary bytes. One
//! authenticator lives across inputs, so its cache sees a long stream of them.
//!
//! Oracle:
//! - an allowed request with an identity carries a payload the fixture IdP signed (no forgery, no
//!   cache confusion), its published bytes read back as that identity, and the `x-jwt-sub` output
//!   is that identity's `sub`;
//! - an anonymous allow (no identity) never happens while a default token location is present:
//!   a header named `authorization` after folding case and `_`/`-` whose value starts with the
//!   word `bearer` in any case, or a query parameter (before any `#`) whose percent-decoded name
//!   is `access_token` in any case (issue 12, findings 2 and 4).
#![no_main]

use std::collections::HashSet;

use jwt_authn_core::{Authenticator, Config, KeyLookup, Keys, Request, Stats, Verdict};
use libfuzzer_sys::fuzz_target;
use meshward_common::identity::RequestIdentity;
use meshward_fuzz::backend::percent_decode;
use meshward_fuzz::bytes::Reader;

const TOKENS: &str = include_str!("../../tests/fixtures/jwt/tokens.json");
const JWKS: &str = include_str!("../../tests/fixtures/jwt/jwks.json");

struct NoRemote;
impl KeyLookup for NoRemote {
    fn remote_keys(&self, _rule: usize) -> Keys<'_> {
        Keys::Failed
    }
    fn may_refetch_for_kid(&self, _rule: usize) -> bool {
        false
    }
}

struct State {
    auth: Authenticator,
    tokens: Vec<String>,
    /// Payloads (decoded JSON objects) of every fixture token.
    signed: HashSet<String>,
    now: u64,
}

fn b64_payload(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let p = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

// Per thread (libFuzzer runs the target on one): the authenticator is not `Send` (its cache
// shares entries with `Rc`, its host is a `Box<dyn SignatureHost>`), like the filter's VM.
thread_local! {
    static STATE: std::cell::RefCell<State> = std::cell::RefCell::new(new_state());
}

fn new_state() -> State {
    {
        let doc: serde_json::Value = serde_json::from_str(TOKENS).expect("tokens.json");
        let config = serde_json::json!({
            "jwtRules": [{
                "issuer": doc["issuer"],
                "audiences": ["orders"],
                "jwks": JWKS,
                "outputPayloadToHeader": "x-jwt-payload",
                "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}],
            }]
        });
        let config = Config::parse(config.to_string().as_bytes()).expect("fixture config");
        let mut tokens = Vec::new();
        let mut signed = HashSet::new();
        for t in doc["tokens"].as_object().expect("tokens").values() {
            let token = t["token"].as_str().expect("token").to_string();
            if let Some(p) = b64_payload(&token) {
                signed.insert(p.to_string());
            }
            tokens.push(token);
        }
        State {
            auth: Authenticator::with_cache_capacity(config, 8),
            tokens,
            signed,
            now: doc["virtualNow"].as_u64().expect("virtualNow"),
        }
    }
}

const NAMES: [&str; 8] = [
    "authorization",
    "Authorization",
    "AUTHORIZATION",
    "authorization_",
    "x-jwt-sub",
    "x_jwt_sub",
    "cookie",
    "x-other",
];

fn text(r: &mut Reader<'_>, tokens: &[String]) -> String {
    let tag = r.u8();
    let token = tokens
        .get(usize::from(r.u8()) % tokens.len())
        .cloned()
        .unwrap_or_default();
    let raw = String::from_utf8_lossy(r.until(0xff)).into_owned();
    match tag % 6 {
        0 => format!("Bearer {token}"),
        1 => format!("{raw}{token}"),
        2 => format!("Bearer {token}{raw}"),
        3 => {
            // The token with one byte changed.
            let mut b = token.into_bytes();
            let len = b.len().max(1);
            if let Some(x) = b.get_mut(usize::from(r.u16()) % len) {
                *x = r.u8().max(0x21) & 0x7f;
            }
            String::from_utf8_lossy(&b).into_owned()
        }
        4 => token,
        _ => raw,
    }
}

fn location_present(headers: &[(String, String)], path: &str) -> bool {
    let header = headers.iter().any(|(n, v)| {
        n.to_ascii_lowercase().replace('_', "-") == "authorization"
            && v.trim_start().to_ascii_lowercase().starts_with("bearer")
    });
    // The fragment is not part of the query: Envoy refuses a target with `#` by default, and
    // meshward reads (and normalizes) the target only up to it.
    let without_fragment = path.split('#').next().unwrap_or("");
    let query = without_fragment.split_once('?').is_some_and(|(_, q)| {
        q.split(['&', ';']).any(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            String::from_utf8_lossy(&percent_decode(name.as_bytes())).to_ascii_lowercase()
                == "access_token"
        })
    });
    header || query
}

fuzz_target!(|data: &[u8]| STATE.with_borrow_mut(|st| run(st, data)));

fn run(st: &mut State, data: &[u8]) {
    let mut r = Reader::new(data);
    let mut headers: Vec<(String, String)> = vec![
        (":authority".into(), "example.com".into()),
        (":scheme".into(), "http".into()),
    ];
    let count = r.u8() % 5;
    for _ in 0..count {
        let name = NAMES[usize::from(r.u8()) % NAMES.len()].to_string();
        let value = text(&mut r, &st.tokens);
        headers.push((name, value));
    }
    let mut path = String::from("/p");
    if r.u8() & 1 == 1 {
        let name = ["access_token", "acc%65ss_token", "ACCESS_TOKEN", "x"][usize::from(r.u8() % 4)];
        path = format!("/p?{name}={}", text(&mut r, &st.tokens));
    }
    headers.push((":path".into(), path.clone()));
    // The core borrows its headers (the filter hands it text views of the host's map).
    let borrowed: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let req = Request {
        headers: &borrowed,
        path: &path,
        scheme: "http",
        authority: "example.com",
    };
    let mut stats = Stats::default();
    let verdict = st.auth.decide(&req, st.now, &NoRemote, false, &mut stats);
    let Verdict::Allow {
        identity,
        identity_bytes,
        set_headers,
        ..
    } = verdict
    else {
        return;
    };
    match identity {
        None => assert!(
            !location_present(&headers, &path),
            "anonymous allow with a token location present: {headers:?}"
        ),
        Some(id) => {
            let claims = serde_json::Value::Object(id.claims.clone()).to_string();
            assert!(
                st.signed.contains(&claims),
                "unsigned payload allowed: {claims}"
            );
            let bytes = identity_bytes.expect("an identity is published");
            let back = RequestIdentity::read(Some(&bytes));
            assert!(matches!(&back, Ok(Some(b)) if *b == *id), "{back:?}");
            for (name, value) in &set_headers {
                if name == "x-jwt-sub" {
                    assert_eq!(Some(value.as_str()), id.sub.as_deref(), "{set_headers:?}");
                }
            }
        }
    }
}
