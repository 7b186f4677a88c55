//! Native cost of a jwt-authn decision (the same core the wasm filter runs), for the
//! wasm-vs-native ratio in BENCHMARKS.md. No Criterion (no new dependencies): timed rounds.
//!
//! `cargo bench -p jwt-authn-core --bench verify` reads the tokens and config of
//! benches/scenarios/jwt-authn-{rs256,es256}-cold.yaml (300 distinct tokens each, written by
//! tests/fixtures/jwt/gen.py --bench) and times `Authenticator::decide` per request:
//! - cold: cycling through all 300 tokens (more than the 256-entry cache: every request parses
//!   the token and checks its signature), as `meshward bench` does without `--case`;
//! - warm: one token again and again (cache hit), as `meshward bench --case user-0`.

#![allow(clippy::restriction)] // a bench: the filter crates' no-panic lints are for Envoy

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jwt_authn_core::{Authenticator, Config, KeyLookup, Keys, Request, Stats, Verdict};

const ROUNDS: usize = 5;

struct NoRemote;

impl KeyLookup for NoRemote {
    fn remote_keys(&self, _: usize) -> Keys<'_> {
        Keys::Failed
    }
    fn may_refetch_for_kid(&self, _: usize) -> bool {
        false
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

/// The bearer tokens of a generated bench scenario, in case order.
fn tokens(file: &str) -> Vec<String> {
    let path = repo().join("benches/scenarios").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run tests/fixtures/jwt/gen.py --bench)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| l.split_once("\"Bearer ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once('"').map(|(t, _)| t.to_string()))
        .collect()
}

fn config() -> Config {
    let jwks = std::fs::read_to_string(repo().join("tests/fixtures/jwt/jwks.json")).unwrap();
    let json = serde_json::json!({"jwtRules": [{
        "issuer": "https://idp.example.com",
        "audiences": ["orders"],
        "jwks": jwks,
    }]});
    Config::parse(json.to_string().as_bytes()).unwrap()
}

/// Mean time of one decision over `n` requests cycling through `tokens`, best and median of
/// ROUNDS rounds (one Authenticator for all rounds, as one VM serves many requests).
fn time(tokens: &[String], n: usize) -> (Duration, Duration) {
    let mut auth = Authenticator::new(config());
    let values: Vec<String> = tokens.iter().map(|t| format!("Bearer {t}")).collect();
    let headers: Vec<Vec<(&str, &str)>> = values
        .iter()
        .map(|v| {
            vec![
                (":method", "GET"),
                (":path", "/orders"),
                (":authority", "example.com"),
                ("authorization", v.as_str()),
            ]
        })
        .collect();
    let now = 1_800_000_000;
    let mut one = |i: usize| {
        let h = &headers[i % headers.len()];
        let req = Request {
            headers: h,
            path: "/orders",
            scheme: "http",
            authority: "example.com",
        };
        let mut stats = Stats::default();
        let verdict = auth.decide(&req, now, &NoRemote, false, &mut stats);
        assert!(matches!(verdict, Verdict::Allow { .. }), "{verdict:?}");
        black_box(stats)
    };
    // Warm-up: fill the cache as a running VM would have.
    for i in 0..tokens.len() {
        one(i);
    }
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for i in 0..n {
                one(i);
            }
            start.elapsed() / n as u32
        })
        .collect();
    rounds.sort();
    (rounds[0], rounds[ROUNDS / 2])
}

fn main() {
    println!("jwt-authn-core decide(), native, per request: best / median of {ROUNDS} rounds");
    for (alg, file) in [
        ("RS256", "jwt-authn-rs256-cold.yaml"),
        ("ES256", "jwt-authn-es256-cold.yaml"),
    ] {
        let all = tokens(file);
        assert!(
            all.len() > 256,
            "{file}: {} tokens, need more than the cache",
            all.len()
        );
        let (best, median) = time(&all, 3 * all.len());
        println!(
            "{alg} cold ({} distinct tokens): {best:?} / {median:?}",
            all.len()
        );
        let (best, median) = time(&all[..1], 20_000);
        println!("{alg} warm (cache hit):           {best:?} / {median:?}");
    }
}
