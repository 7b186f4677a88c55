//! jwt-authn's two signature paths give the same verdict on every Project Wycheproof JWS vector:
//! the pure-Rust path (jwt-simple) and the host path (Envoy's `verify_signature` foreign function,
//! `jwt_authn_core::host_verify`).
//!
//! - In the harness: each vector is checked on both paths; the host path's calls are answered by
//!   the harness's own `verify_signature` and recorded.
//! - In Envoy 1.40: every recorded call — the exact bytes the core hands the host — is sent to
//!   Envoy's `verify_signature` through the `verify` test module, and Envoy must answer it as the
//!   harness did. Together: the host path verifies in Envoy exactly as the pure path does here.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use jwt_authn_core::host_verify::{Availability, HostRefusal, HostVerifier, SignatureHost};
use jwt_authn_core::jwk::{parse_jwks, KeySet};
use jwt_authn_core::token::parse_jws;
use jwt_authn_core::verify::{verify_signature, verify_signature_with};
use meshward_harness::{foreign_function, Status};
use meshward_rig::{self as envoy, EchoUpstream, Envoy, EnvoyConfig, WasmFilter};
use serde_json::{json, Value};

fn vectors() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/wycheproof/json_web_signature_test.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The group's key as an inline JWKS (as filters/jwt-authn/core/tests/wycheproof.rs does).
fn group_jwks(group: &Value) -> Option<String> {
    let key = group.get("public").or_else(|| group.get("private"))?;
    Some(if key.get("keys").is_some() {
        key.to_string()
    } else {
        json!({"keys": [key]}).to_string()
    })
}

/// One host call: the arguments and the harness's answer (status, result bytes).
type Call = (Vec<u8>, u32, Option<Vec<u8>>);

/// The harness's `verify_signature`, recording every call.
struct Recording(Rc<RefCell<Vec<Call>>>);

impl SignatureHost for Recording {
    fn verify_signature(&self, arguments: &[u8]) -> Result<Vec<u8>, HostRefusal> {
        let (status, result) = foreign_function("verify_signature", arguments)
            .expect("the harness registers verify_signature");
        self.0
            .borrow_mut()
            .push((arguments.to_vec(), status.0, result.clone()));
        match status {
            Status::OK => Ok(result.unwrap_or_default()),
            Status::NOT_FOUND => Err(HostRefusal::NotFound),
            other => Err(HostRefusal::Failed(other.0)),
        }
    }
}

struct Run {
    calls: Vec<Call>,
    /// Vectors whose verdict came from the host (at least one host call).
    via_host: usize,
    total: usize,
    /// Per algorithm: vectors checked on the host path.
    by_alg: BTreeMap<String, usize>,
}

fn run_both_paths() -> Run {
    let doc = vectors();
    let calls = Rc::new(RefCell::new(Vec::new()));
    let mut differences = Vec::new();
    let mut run = Run {
        calls: Vec::new(),
        via_host: 0,
        total: 0,
        by_alg: BTreeMap::new(),
    };
    for g in doc["testGroups"].as_array().unwrap() {
        let keys: Option<KeySet> = group_jwks(g).and_then(|t| parse_jwks(&t, true).ok());
        for t in g["tests"].as_array().unwrap() {
            let Some(token) = t["jws"].as_str() else {
                continue; // JSON serialization: not a compact JWS, never reaches a signature check
            };
            run.total += 1;
            let id = t["tcId"].as_u64().unwrap();
            let (Some(keys), Ok(jws)) = (&keys, parse_jws(token)) else {
                continue; // refused before any signature check, on both paths alike
            };
            let pure = verify_signature(&jws, keys);
            let mut host = HostVerifier::new(Box::new(Recording(calls.clone())));
            let before = calls.borrow().len();
            let via_host = verify_signature_with(&jws, keys, &mut host);
            if calls.borrow().len() > before {
                run.via_host += 1;
                *run.by_alg.entry(format!("{:?}", jws.alg)).or_default() += 1;
                assert_eq!(host.availability(), Availability::Present, "tcId {id}");
            }
            if pure != via_host {
                differences.push(format!(
                    "tcId {id} ({}): pure {pure:?}, host {via_host:?}",
                    t["comment"]
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "the two paths disagree:\n{}",
        differences.join("\n")
    );
    run.calls = calls.take();
    run
}

#[test]
fn every_wycheproof_vector_gets_the_same_verdict_on_both_paths() {
    let run = run_both_paths();
    println!(
        "{} compact vectors; {} checked through the host ({:?}), {} host calls",
        run.total,
        run.via_host,
        run.by_alg,
        run.calls.len()
    );
    // The host path must really have been taken for every algorithm it verifies.
    for alg in ["RS256", "ES256"] {
        assert!(
            run.by_alg.get(alg).copied().unwrap_or(0) > 5,
            "{alg} never reached the host: {:?}",
            run.by_alg
        );
    }
    assert!(run.via_host > 100, "{} vectors via the host", run.via_host);
    // No host call was refused: the core only sends arguments the host parses.
    for (args, status, _) in &run.calls {
        assert_eq!(*status, 0, "host refused {}", hex::encode(args));
    }
}

#[test]
fn envoy_answers_the_host_path_calls_as_the_harness_does() {
    let run = run_both_paths();
    let upstream = EchoUpstream::start().unwrap();
    let config = EnvoyConfig::new(upstream.addr()).filter(WasmFilter::new(
        "verify",
        meshward_tests::wasm("meshward_test_verify"),
        "",
    ));
    let envoy = Envoy::start(&config).unwrap();
    let client = envoy.client();
    let mut differences = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (args, status, result) in &run.calls {
        if !seen.insert(args.clone()) {
            continue;
        }
        let r = client
            .send(&envoy::Request::get("/").header("x-verify-args", hex::encode(args)))
            .unwrap();
        assert_eq!(r.status, 200);
        let envoy_status: u32 = r.header("x-verify-status").unwrap().parse().unwrap();
        let envoy_result = r.header("x-verify-result").map(|h| hex::decode(h).unwrap());
        let harness_result = result.clone().filter(|r| !r.is_empty());
        let envoy_result = envoy_result.filter(|r| !r.is_empty());
        if (envoy_status, &envoy_result) != (*status, &harness_result) {
            differences.push(format!(
                "args {}: harness {status} {:?}, envoy {envoy_status} {:?}",
                hex::encode(args),
                harness_result.as_deref().map(hex::encode),
                envoy_result.as_deref().map(hex::encode)
            ));
        }
    }
    println!("{} distinct host calls sent to Envoy", seen.len());
    assert!(seen.len() > 100);
    assert!(
        differences.is_empty(),
        "Envoy and the harness answer differently:\n{}",
        differences.join("\n")
    );
}

/// The shipped jwt-authn.wasm in the harness: with `verify_signature` it asks the host once per
/// token it verifies; on a host that does not have it (every call `NotFound`) it gives the same
/// verdicts in pure Rust; when the host's call fails it refuses a valid token (401), and does not
/// fall back.
#[test]
fn the_filter_uses_the_host_where_it_can_and_fails_closed_when_it_errs() {
    use meshward_harness::{FilterSpec, Host, Request};
    use meshward_tests::{jwt_fixture, jwt_token, wasm};
    let config = json!({
        "jwtRules": [{"issuer": "https://idp.example.com", "audiences": ["orders"],
                      "jwks": jwt_fixture("jwks.json")}],
        "requireToken": true
    })
    .to_string();
    let host = || {
        Host::builder()
            .filter(
                FilterSpec::from_file(wasm("jwt-authn"))
                    .unwrap()
                    .name("jwt-authn")
                    .config_json(&config),
            )
            .build()
            .unwrap()
    };
    let with = |name: &str| {
        Request::get("/orders").header("authorization", &format!("Bearer {}", jwt_token(name)))
    };
    // (token, verdict, checked by the host?)
    let tokens = [
        ("rs256_alice", 200, true),
        ("es256_bob", 200, true),
        ("ps256_alice", 200, false),
        ("eddsa_carol", 200, false),
        ("bad_signature", 401, true),
        ("wrong_kid", 401, false),
    ];
    let foreign_calls = |h: &Host| {
        h.hostcall_trace()
            .iter()
            .filter(|r| r.hostcall == "proxy_call_foreign_function")
            .count()
    };
    // One VM on a host without the function, for every token: only the first token the host could
    // have verified is a probe; the VM remembers the answer.
    let without = host();
    without.trace(true);
    without.inject_fault(
        "proxy_call_foreign_function",
        Err(Status::NOT_FOUND),
        Some("jwt-authn"),
        None,
    );
    for (name, status, via_host) in tokens {
        // Fresh hosts: the verified-token cache must not answer instead of a signature check.
        let h = host();
        h.trace(true);
        assert_eq!(h.send(&with(name)).status(), status, "{name} with the host");
        assert_eq!(foreign_calls(&h) > 0, via_host, "{name}: host asked?");

        assert_eq!(
            without.send(&with(name)).status(),
            status,
            "{name} on a host without verify_signature"
        );

        let h = host();
        h.inject_fault(
            "proxy_call_foreign_function",
            Err(Status::INTERNAL_FAILURE),
            Some("jwt-authn"),
            None,
        );
        let expect = if via_host { 401 } else { status };
        let o = h.send(&with(name));
        assert_eq!(o.status(), expect, "{name} with a failing host");
        if via_host {
            assert_eq!(o.response.body_text(), "Jwt verification fails");
        }
    }
    assert_eq!(foreign_calls(&without), 1, "probed once per VM");
}
