//! Project Wycheproof JWS and JWK vectors through the signature layer (`parse_jws` +
//! `verify_signature` with the group's key as a JWKS). None of the valid vectors has a JSON claims
//! payload, so claims parsing is deliberately not part of this layer (see the vectors' README).

#![allow(clippy::restriction)] // a test: the filter crates' no-panic lints are for Envoy

use std::collections::BTreeMap;
use std::path::PathBuf;

use jwt_authn_core::jwk::{parse_jwks, KeySet};
use jwt_authn_core::token::parse_jws;
use jwt_authn_core::verify::verify_signature;
use serde_json::{json, Value};

fn vectors(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../../shared/testdata/wycheproof")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The group's key as an inline JWKS: `public` for asymmetric keys, `private` for `oct` (a shared
/// secret has no public half). A `{"keys":[…]}` value is used as is.
fn group_jwks(group: &Value) -> Option<String> {
    let key = group.get("public").or_else(|| group.get("private"))?;
    Some(if key.get("keys").is_some() {
        key.to_string()
    } else {
        json!({"keys": [key]}).to_string()
    })
}

fn check(token: &str, keys: &Result<KeySet, String>) -> Result<(), String> {
    let keys = keys.as_ref().map_err(|e| format!("key set refused: {e}"))?;
    let jws = parse_jws(token).map_err(|e| format!("parse: {}", e.message()))?;
    verify_signature(&jws, keys)
        .map(|_| ())
        .map_err(|e| format!("verify: {}", e.message()))
}

/// Valid vectors we reject on purpose, with the reason. Asserted to be rejected (so the list
/// cannot go stale silently).
const VALID_BUT_REJECTED: &[(u64, &str)] = &[
    (346, "token alg PS384 but the JWK says alg PS256: we bind alg to the JWK's alg (RFC 7517 §4.4, Envoy)"),
    (350, "token alg PS384 but the JWK says alg PS256: we bind alg to the JWK's alg"),
    (347, "ES512 / P-521 is not supported (not in the issue's algorithm list; jwt-simple has no P-521)"),
    (351, "ES512 / P-521 is not supported"),
    (372, "`?` inside the header segment is not base64url: strict decoding refuses it"),
    (373, "`?` inside the payload segment is not base64url: strict decoding refuses it"),
];

/// Invalid vectors whose bytes are identical to a valid one (an upstream data error): they are
/// accepted, and the test asserts the identity so that a corrected file fails here.
const INVALID_BUT_IDENTICAL_TO_VALID: &[(u64, u64)] = &[(367, 357), (370, 357)];

#[test]
fn json_web_signature_vectors() {
    let doc = vectors("json_web_signature_test.json");
    let groups = doc["testGroups"].as_array().unwrap();
    let mut by_id: BTreeMap<u64, String> = BTreeMap::new();
    for g in groups {
        for t in g["tests"].as_array().unwrap() {
            if let Some(jws) = t["jws"].as_str() {
                by_id.insert(t["tcId"].as_u64().unwrap(), jws.to_string());
            }
        }
    }
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut total = 0;
    for g in groups {
        let keys = match group_jwks(g) {
            Some(text) => parse_jwks(&text, true).map_err(|e| e.to_string()),
            None => Err("group has no key".into()),
        };
        for t in g["tests"].as_array().unwrap() {
            total += 1;
            let id = t["tcId"].as_u64().unwrap();
            let expected = t["result"].as_str().unwrap();
            let comment = t["comment"].as_str().unwrap_or("");
            // JSON-serialization vectors (an object instead of a string) are not compact JWS.
            let outcome = match t["jws"].as_str() {
                Some(token) => check(token, &keys),
                None => Err("not compact serialization".into()),
            };
            let accepted = outcome.is_ok();
            *counts
                .entry((
                    if expected == "valid" {
                        "valid"
                    } else {
                        "invalid"
                    },
                    if accepted { "accepted" } else { "rejected" },
                ))
                .or_default() += 1;
            let deviation = VALID_BUT_REJECTED.iter().find(|(d, _)| *d == id);
            let identical = INVALID_BUT_IDENTICAL_TO_VALID
                .iter()
                .find(|(d, _)| *d == id);
            match (expected, accepted, deviation, identical) {
                ("valid", true, None, None) | ("invalid", false, None, None) => {}
                ("valid", false, Some((_, why)), None) => println!(
                    "tcId {id} ({comment}) valid, rejected by policy: {why} [{}]",
                    outcome.unwrap_err()
                ),
                ("invalid", true, None, Some((_, twin))) => {
                    assert_eq!(
                        by_id.get(&id),
                        by_id.get(twin),
                        "tcId {id} no longer identical to {twin}"
                    );
                    println!("tcId {id} ({comment}) marked invalid but byte-identical to valid tcId {twin}: accepted");
                }
                _ => failures.push(format!(
                    "tcId {id} ({comment}): expected {expected}, got {outcome:?}"
                )),
            }
        }
    }
    println!("Wycheproof JWS: {total} vectors; {counts:?}");
    assert_eq!(total, 401);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        counts.get(&("valid", "rejected")).copied().unwrap_or(0),
        VALID_BUT_REJECTED.len()
    );
    assert_eq!(
        counts.get(&("invalid", "accepted")).copied().unwrap_or(0),
        INVALID_BUT_IDENTICAL_TO_VALID.len()
    );
}

#[test]
fn json_web_key_vectors() {
    let doc = vectors("json_web_key_test.json");
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut total = 0;
    for g in doc["testGroups"].as_array().unwrap() {
        let keys = match group_jwks(g) {
            Some(text) => parse_jwks(&text, true).map_err(|e| e.to_string()),
            None => Err("group has no key".into()),
        };
        for t in g["tests"].as_array().unwrap() {
            total += 1;
            let id = t["tcId"].as_u64().unwrap();
            let expected = t["result"].as_str().unwrap();
            let outcome = check(t["jws"].as_str().unwrap(), &keys);
            let accepted = outcome.is_ok();
            *counts
                .entry((
                    if expected == "valid" {
                        "valid"
                    } else {
                        "invalid"
                    },
                    if accepted { "accepted" } else { "rejected" },
                ))
                .or_default() += 1;
            if (expected == "valid") != accepted {
                failures.push(format!(
                    "tcId {id} ({}): expected {expected}, got {outcome:?}",
                    t["comment"]
                ));
            } else if !accepted {
                println!("tcId {id} rejected: {}", outcome.unwrap_err());
            }
        }
    }
    println!("Wycheproof JWK: {total} vectors; {counts:?}");
    assert_eq!(total, 26);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
