//! The generated path family (issue 12): random spellings of protected paths, run on the built
//! `spiffe_authz.wasm`, thousands in the harness and a bounded sample in real Envoy 1.40.
//!
//! Each variant of `/admin`, `/admin/users`, … mixes percent-encoding of any character (either hex
//! case), dot segments (`/./`, `/x/../`, encoded dots), `//`, `;params` on any segment (also
//! `%3B`-introduced), encoded slashes, a trailing `/` or `/.`, and a query. An independent model of
//! a permissive backend (decode every `%XX` once, drop `;params` per segment, merge slashes, resolve
//! dot segments — what Tomcat does, and more than any single common server) says how the upstream
//! would read it. The expectation is written from that model and the documented refusal rules, not
//! from the filter's code:
//! - a spelling the rules refuse (`%2F`, `%5C`, `%00`; `;` or `%3B` with `pathParameters: REJECT`;
//!   `%3B` with `STRIP`) ⇒ 400, never reaching the upstream;
//! - else, read by the backend as a protected path ⇒ 403, never reaching the upstream;
//! - else ⇒ 200, and the upstream received exactly the backend's reading (plus the query): the
//!   path that was authorized is the path that is served.
//!
//! `MESHWARD_WASM_DIR` runs the family on other builds (e.g. a copy of an older filter).

use std::fmt::Write as _;
use std::path::PathBuf;

use meshward_rig::default_wasm_dir;
use meshward_scenario::suite::{run_file, Targets};
use meshward_tests::repo;
use serde_json::{json, Value};

fn wasm_dir() -> PathBuf {
    match std::env::var_os("MESHWARD_WASM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => default_wasm_dir(&repo()),
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Reject,
    Strip,
}

const PROTECTED: [&str; 4] = ["/admin", "/admin/users", "/admin/users/42", "/admin/"];
/// Ordinary paths that stay allowed, including the issue's `/%61pi/x` and `/administrator`.
const ALLOWED: [&str; 7] = [
    "/%61pi/x",
    "/administrator",
    "/api/x",
    "/public/admin",
    "/adminx/users",
    "/ADMIN/users",
    "/admin.html",
];

/// Percent-encode `c` with a random hex case.
fn encode(c: char, rng: &mut Rng) -> String {
    let hex = format!("{:02X}", c as u32);
    if rng.chance(50) {
        format!("%{}", hex.to_ascii_lowercase())
    } else {
        format!("%{hex}")
    }
}

/// One random spelling of `base`. Half the variants use path parameters somewhere, so that every
/// outcome (refused, protected, allowed) is well represented in both modes.
fn variant(base: &str, rng: &mut Rng) -> String {
    let plain_detours = [
        "",
        "",
        "",
        "/.",
        "/%2e",
        "/%2E",
        "/x/..",
        "/x/%2e%2e",
        "/x/%2E%2e",
        "/",
    ];
    let param_detours = ["", "/.;x", "/x;y/..", "/x/..;", "/x/..;p=1", "/x/%2e%2e;"];
    let params = [
        "",
        ";",
        ";x",
        ";jsessionid=A1",
        ";a=b;c",
        ";..",
        "%3B",
        "%3bx",
    ];
    let plain_trailing = ["", "", "", "/", "/.", "/x/.."];
    let param_trailing = ["", "/;x", ";"];
    let queries = ["", "", "", "?q=1", "?next=/admin;x", "?a=%2F"];
    let with_params = rng.chance(50);
    let detour = |rng: &mut Rng| {
        if with_params && rng.chance(40) {
            rng.pick(&param_detours)
        } else {
            rng.pick(&plain_detours)
        }
    };
    let segments: Vec<&str> = base.split('/').skip(1).collect();
    let mut out = String::new();
    for (i, segment) in segments.iter().enumerate() {
        out.push_str(detour(rng));
        // The separator itself, now and then encoded (a decoding backend splits there anyway).
        if i > 0 && rng.chance(4) {
            out.push_str(if rng.chance(50) { "%2F" } else { "%2f" });
        } else {
            out.push('/');
        }
        let mut chars = segment.chars().peekable();
        while let Some(c) = chars.next() {
            // An already-encoded `%XX` in the base stays as it is.
            if c == '%' {
                out.push(c);
                out.extend(chars.next());
                out.extend(chars.next());
                continue;
            }
            if rng.chance(20) {
                out.push_str(&encode(c, rng));
            } else {
                out.push(c);
            }
        }
        if with_params && !segment.is_empty() && rng.chance(50) {
            out.push_str(rng.pick(&params));
        }
    }
    out.push_str(if with_params && rng.chance(30) {
        rng.pick(&param_trailing)
    } else {
        rng.pick(&plain_trailing)
    });
    out.push_str(rng.pick(&queries));
    out
}

/// Every `%XX` decoded once; `None` for a malformed escape.
fn decode_once(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The permissive backend's reading of a request-target's path part.
fn backend_reading(target: &str) -> Option<String> {
    let path = target.split('?').next().unwrap_or_default();
    let decoded = decode_once(path)?;
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                stack.pop();
                trailing_slash = true;
            }
            s => {
                stack.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out: String = stack.iter().map(|s| format!("/{s}")).collect();
    if trailing_slash || stack.is_empty() {
        out.push('/');
    }
    Some(out)
}

fn is_protected(reading: &str) -> bool {
    reading == "/admin" || reading.starts_with("/admin/")
}

/// The refusal rules of docs/spiffe-authz.md, restated on the raw path part.
fn refused(target: &str, mode: Mode) -> bool {
    let path = target
        .split('?')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let escaped = ["%2f", "%5c", "%00", "%3b"]
        .iter()
        .any(|e| path.contains(e));
    escaped || (mode == Mode::Reject && path.contains(';'))
}

/// The expectation for one variant, as a scenario case (JSON is YAML).
fn case(index: usize, target: &str, mode: Mode, counts: &mut [usize; 3]) -> Value {
    let reading = backend_reading(target).expect("the generator writes well-formed escapes");
    let peer = json!({"peer": "spiffe://cluster.local/ns/default/sa/frontend"});
    let expect = if refused(target, mode) {
        counts[0] += 1;
        json!({"status": 400, "upstream": false})
    } else if is_protected(&reading) {
        counts[1] += 1;
        json!({"status": 403, "upstream": false})
    } else {
        counts[2] += 1;
        let query = target
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        json!({"status": 200, "body": {"contains": format!("\"path\":\"{reading}{query}\",\"headers\"")}})
    };
    json!({
        "name": format!("{index}: {target} (backend reads {reading})"),
        "request": {"path": target, "tls": peer},
        "expect": expect,
    })
}

/// Write a scenario file of `n` variants (a third of them of allowed paths) and run it.
fn family(name: &str, seed: u64, n: usize, mode: Mode, targets: Targets) {
    let mut rng = Rng(seed);
    let mut cases = Vec::with_capacity(n);
    let mut counts = [0usize; 3];
    // The bases themselves first, then random spellings.
    let mut targets_seen = std::collections::BTreeSet::new();
    for base in PROTECTED.iter().chain(ALLOWED.iter()) {
        targets_seen.insert(base.to_string());
        cases.push(case(cases.len(), base, mode, &mut counts));
    }
    while cases.len() < n {
        let base = if rng.chance(67) {
            PROTECTED[rng.below(PROTECTED.len())]
        } else {
            ALLOWED[rng.below(ALLOWED.len())]
        };
        let target = variant(base, &mut rng);
        if targets_seen.insert(target.clone()) {
            cases.push(case(cases.len(), &target, mode, &mut counts));
        }
    }
    let mut config = json!({"policies": [
        {"name": "deny-admin", "action": "DENY",
         "rules": [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}]},
        {"name": "allow-mesh", "rules": [{"from": [{"source": {"principals": ["cluster.local/*"]}}]}]},
    ]});
    if mode == Mode::Strip {
        config["pathParameters"] = json!("STRIP");
    }
    let scenario = json!({
        "description": format!("generated path family {name} ({mode:?}, seed {seed:#x})"),
        "chain": [{"filter": "spiffe-authz", "config": config}],
        "cases": cases,
    });
    let dir = std::env::temp_dir().join(format!("meshward-path-family-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, serde_json::to_vec_pretty(&scenario).expect("json")).expect("write");
    let report = run_file(&file, &wasm_dir(), targets, false);
    let mut summary = String::new();
    let _ = write!(
        summary,
        "{name}: {} variants ({} refused 400, {} protected 403, {} allowed 200): {} passed, {} failed",
        cases.len(),
        counts[0],
        counts[1],
        counts[2],
        report.passed,
        report.failed
    );
    println!("{}\n{summary}", report.text);
    assert_eq!(report.failed, 0, "{summary}\n{}", report.text);
    assert_eq!(report.passed, cases.len(), "{summary}");
    // The family is only a test if every outcome is represented (at least 5% each).
    assert!(
        counts.iter().all(|&c| c * 20 >= cases.len()),
        "unbalanced family: {summary}"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn model_examples() {
    assert_eq!(
        backend_reading("/public/..;/admin").as_deref(),
        Some("/admin")
    );
    assert_eq!(
        backend_reading("/admin;x/users?q").as_deref(),
        Some("/admin/users")
    );
    assert_eq!(backend_reading("/%61dmin%2fx").as_deref(), Some("/admin/x"));
    assert_eq!(
        backend_reading("//x/%2e%2e/admin/.").as_deref(),
        Some("/admin/")
    );
    assert_eq!(backend_reading("/%61pi/x").as_deref(), Some("/api/x"));
    assert!(!is_protected("/administrator") && is_protected("/admin/"));
    assert!(refused("/a;b", Mode::Reject) && !refused("/a;b", Mode::Strip));
    assert!(refused("/a%3Bb", Mode::Strip) && !refused("/a?x=;%2F", Mode::Reject));
    // The generator is deterministic and produces every ingredient.
    let mut rng = Rng(7);
    let all: String = (0..500)
        .map(|_| variant("/admin/users", &mut rng))
        .collect();
    for ingredient in [";", "%3B", "%2e", "/x/..", "//", "%2F", "?", "%6", "%6D"] {
        assert!(all.contains(ingredient), "{ingredient}");
    }
}

#[test]
fn path_family_reject_mode_in_the_harness() {
    family(
        "reject-harness",
        0x00C0_FFEE_0000_0012,
        3000,
        Mode::Reject,
        Targets::Harness,
    );
}

#[test]
fn path_family_strip_mode_in_the_harness() {
    family(
        "strip-harness",
        0x00C0_FFEE_0001_0012,
        2000,
        Mode::Strip,
        Targets::Harness,
    );
}

/// A bounded sample in real Envoy 1.40 (and the harness, which must agree case by case).
#[test]
fn path_family_sample_in_envoy() {
    family(
        "reject-envoy",
        0x00E0_7000_0000_0012,
        200,
        Mode::Reject,
        Targets::HarnessAndEnvoy,
    );
    family(
        "strip-envoy",
        0x00E0_7000_0001_0012,
        150,
        Mode::Strip,
        Targets::HarnessAndEnvoy,
    );
}
