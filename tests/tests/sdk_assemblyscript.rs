//! A module written with the AssemblyScript proxy-wasm SDK (`@solo-io/proxy-runtime` from npm),
//! built here from its published package (`npm ci` against the committed lock file, then the
//! AssemblyScript compiler), then run in the harness and in real Envoy 1.40 with the scenario
//! files under tests/scenarios/conformance/assemblyscript/: same cases, same outcomes.
//! A missing `npm` or a failed build fails the test (never a skip): scripts/setup.sh installs
//! Node.js and npm.

use std::path::Path;
use std::process::Command;

use meshward_tests::{parity_suite, repo};

fn npm(dir: &Path, args: &[&str]) {
    let out = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("npm {args:?}: {e} (scripts/setup.sh installs Node.js and npm)")
        });
    assert!(
        out.status.success(),
        "npm {args:?} in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn assemblyscript_sdk_module_agrees_in_harness_and_envoy() {
    let dir = repo().join("tests/modules/assemblyscript");
    let wasm = dir.join("build/as_conformance.wasm");
    let _ = std::fs::remove_file(&wasm);
    npm(&dir, &["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
    npm(&dir, &["run", "build", "--silent"]);
    assert!(wasm.is_file(), "{} was not built", wasm.display());
    parity_suite("conformance/assemblyscript");
}
