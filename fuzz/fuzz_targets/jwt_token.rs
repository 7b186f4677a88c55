//! jwt-authn-core's token layer on arbitrary bytes: `parse_jws`, then `verify_signature` against
//! a fixed JWKS (tests/fixtures/jwt: RSA, P-256, Ed25519, plus the inline HS256 secret), then
//! `parse_claims`.
//!
//! Oracle: a signature that verifies means the content was signed by the fixture's IdP: its
//! (alg, kid, payload) must be one of the fixture tokens' that verify at start-up. Any other
//! accepted token is a forgery (alg confusion, `none`, key mix-up, a malleable encoding of the
//! payload…). Start-up also checks that the fixture's known-bad tokens do not verify, so the
//! known set cannot silently contain a forgery.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use jwt_authn_core::jwk::{parse_jwks, KeySet};
use jwt_authn_core::token::{parse_claims, parse_jws};
use jwt_authn_core::verify::verify_signature;
use libfuzzer_sys::fuzz_target;

const TOKENS: &str = include_str!("../../tests/fixtures/jwt/tokens.json");
const JWKS: &str = include_str!("../../tests/fixtures/jwt/jwks.json");
const JWKS_HS: &str = include_str!("../../tests/fixtures/jwt/jwks-inline-hs.json");
/// Fixture tokens that must never verify against these keys.
const MUST_FAIL: [&str; 5] = [
    "alg_none",
    "alg_none_signed",
    "bad_signature",
    "hs256_rsa_pubkey",
    "wrong_kid",
];

type Content = (String, Option<String>, Vec<u8>);

struct Fixture {
    sets: [KeySet; 2],
    signed: HashSet<Content>,
}

fn content(token: &str, sets: &[KeySet; 2]) -> Option<Content> {
    let jws = parse_jws(token).ok()?;
    sets.iter()
        .any(|set| verify_signature(&jws, set).is_ok())
        .then(|| {
            (
                format!("{:?}", jws.alg),
                jws.kid.clone(),
                jws.payload.clone(),
            )
        })
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let sets = [
            parse_jwks(JWKS, false).expect("fixture JWKS"),
            parse_jwks(JWKS_HS, true).expect("fixture HS JWKS"),
        ];
        let doc: serde_json::Value = serde_json::from_str(TOKENS).expect("tokens.json");
        let mut signed = HashSet::new();
        for (name, t) in doc["tokens"].as_object().expect("tokens") {
            let token = t["token"].as_str().expect("token");
            let c = content(token, &sets);
            if MUST_FAIL.contains(&name.as_str()) {
                assert!(c.is_none(), "fixture token {name} verifies");
            }
            signed.extend(c);
        }
        assert!(
            signed.len() >= 10,
            "only {} fixture tokens verify",
            signed.len()
        );
        Fixture { sets, signed }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(jws) = parse_jws(token) else {
        return;
    };
    let _ = parse_claims(&jws.payload);
    for set in &f.sets {
        if verify_signature(&jws, set).is_ok() {
            let c = (
                format!("{:?}", jws.alg),
                jws.kid.clone(),
                jws.payload.clone(),
            );
            assert!(
                f.signed.contains(&c),
                "forgery accepted: {token:?} (alg {}, kid {:?})",
                c.0,
                c.1
            );
        }
    }
});
