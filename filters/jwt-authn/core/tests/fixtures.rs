//! The committed fixtures (signed by Python `cryptography`, tests/fixtures/jwt/gen.py) through the
//! engine: an independent signer cross-checks our JWK conversion and verification.

#![allow(clippy::restriction)] // a test: the filter crates' no-panic lints are for Envoy

use std::path::PathBuf;

use jwt_authn_core::{Authenticator, Config, KeyLookup, Keys, Request, Stats, Verdict};
use serde_json::{json, Value};

struct NoRemote;
impl KeyLookup for NoRemote {
    fn remote_keys(&self, _: usize) -> Keys<'_> {
        Keys::Failed
    }
    fn may_refetch_for_kid(&self, _: usize) -> bool {
        false
    }
}

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../tests/fixtures/jwt")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn auth(jwks_file: &str) -> Authenticator {
    let config = json!({"jwtRules":[{"issuer":"https://idp.example.com","audiences":["orders"],"jwks":fixture(jwks_file)}]});
    Authenticator::new(Config::parse(config.to_string().as_bytes()).unwrap())
}

fn outcome(auth: &mut Authenticator, token: &str, now: u64) -> String {
    let value = format!("Bearer {token}");
    let headers = [("authorization", value.as_str())];
    let req = Request {
        headers: &headers,
        path: "/",
        scheme: "http",
        authority: "svc",
    };
    match auth.decide(&req, now, &NoRemote, false, &mut Stats::default()) {
        Verdict::Allow { .. } => "allow".into(),
        Verdict::Deny(d) => format!("{} {}", d.status, d.body),
        Verdict::Wait { .. } => "wait".into(),
    }
}

#[test]
fn every_fixture_token_gets_its_expected_verdict() {
    let doc: Value = serde_json::from_str(&fixture("tokens.json")).unwrap();
    let now = doc["virtualNow"].as_u64().unwrap();
    let mut main = auth("jwks.json");
    let mut rotated = auth("jwks-rotated.json");
    let mut inline_hs = auth("jwks-inline-hs.json");
    let tokens = doc["tokens"].as_object().unwrap();
    assert!(tokens.len() >= 20);
    for (name, t) in tokens {
        let token = t["token"].as_str().unwrap();
        let expect = t["expect"].as_str().unwrap();
        let expect = expect.trim_end_matches(" at VIRTUAL_NOW");
        match name.as_str() {
            "hs256_inline" => assert_eq!(outcome(&mut inline_hs, token, now), "allow"),
            "rotated_alice" => {
                assert_eq!(
                    outcome(&mut main, token, now),
                    "401 Jwks doesn't have key to match kid or alg from Jwt"
                );
                assert_eq!(outcome(&mut rotated, token, now), "allow");
            }
            _ => assert_eq!(outcome(&mut main, token, now), expect, "{name}"),
        }
    }
    // The skew edges move with the clock.
    let edge = tokens["exp_skew_edge_ok"]["token"].as_str().unwrap();
    assert_eq!(outcome(&mut main, edge, now + 1), "401 Jwt is expired");
}
