//! The `meshward` binary as a user runs it: `test` prints `N passed, M failed`, a readable diff for
//! a wrong expectation, and exits 1; `check` names imports Envoy would not satisfy.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn wasm_dir() -> PathBuf {
    meshward_rig::default_wasm_dir(&repo())
}

fn meshward(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(args)
        .env("MESHWARD_WASM_DIR", wasm_dir())
        .output()
        .expect("run meshward");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn test_passes_the_header_limits_scenarios() {
    let files: Vec<String> = std::fs::read_dir(repo().join("tests/scenarios/header-limits"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    let mut args = vec!["test"];
    args.extend(files.iter().map(String::as_str));
    let (code, out) = meshward(&args);
    assert_eq!(code, 0, "{out}");
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.ends_with(" passed, 0 failed") && !last.starts_with("0 "),
        "{out}"
    );
}

#[test]
fn a_wrong_expectation_prints_a_diff_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.yaml");
    std::fs::write(
        &file,
        format!(
            "listener: {{maxRequestHeadersKb: 96}}\nchain:\n  - module: {}\n    config: {{maxRequestHeadersKb: 64}}\ncases:\n  - name: expects the wrong status\n    request:\n      headers: [{{name: x-big, repeat: a, times: 71680}}]\n    expect: {{status: 200}}\n",
            wasm_dir().join("header_limits.wasm").display()
        ),
    )
    .unwrap();
    let (code, out) = meshward(&["test", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  expects the wrong status"), "{out}");
    assert!(
        out.contains("- expected: 200") && out.contains("+ actual:   431"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("0 passed, 1 failed"), "{out}");
}

#[test]
fn check_is_clean_on_our_filters() {
    for (f, policy) in [
        ("header_limits", "header-limits/default.json"),
        ("spiffe_authz", "spiffe-authz/issue-example.json"),
        ("jwt_authn", "jwt-authn/inline-fixture-keys.json"),
        ("rate_limit", "rate-limit/per-identity.json"),
    ] {
        let module = wasm_dir().join(format!("{f}.wasm"));
        let policy = repo().join("policies").join(policy);
        let (code, out) = meshward(&[
            "check",
            module.to_str().unwrap(),
            "--config",
            policy.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{f}: {out}");
        assert!(
            out.contains("imports: all satisfied by Envoy 1.40"),
            "{f}: {out}"
        );
    }
}

#[test]
fn check_says_what_the_listener_must_provide() {
    let run = |wasm: &str, policy: &str| {
        let module = wasm_dir().join(wasm);
        let policy = repo().join("policies").join(policy);
        meshward(&[
            "check",
            module.to_str().unwrap(),
            "--config",
            policy.to_str().unwrap(),
        ])
    };
    let (code, out) = run("spiffe_authz.wasm", "spiffe-authz/issue-example.json");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("notice: spiffe-authz: `connection.mtls`")
            && out.contains("require_client_certificate: true"),
        "{out}"
    );
    let (code, out) = run("rate_limit.wasm", "rate-limit/per-client-ip-edge.json");
    assert_eq!(code, 0, "warnings do not fail the check: {out}");
    assert!(
        out.contains("warning: rate-limit descriptors[0] (key source.ip)"),
        "{out}"
    );
}

#[test]
fn check_names_imports_envoy_does_not_provide() {
    // What a wasm-bindgen build for wasm32-unknown-unknown imports (module `__wbindgen_placeholder__`),
    // next to a proper proxy-wasm export set.
    let wat = r#"(module
        (import "__wbindgen_placeholder__" "__wbindgen_describe" (func (param i32)))
        (import "__wbindgen_externref_xform__" "__wbindgen_externref_table_grow" (func (param i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "proxy_abi_version_0_2_1"))
        (func (export "malloc") (param i32) (result i32) i32.const 0)
        (func (export "proxy_on_context_create") (param i32 i32)))"#;
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("bindgen.wasm");
    std::fs::write(&module, wat::parse_str(wat).unwrap()).unwrap();
    let (code, out) = meshward(&["check", module.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("__wbindgen_placeholder__.__wbindgen_describe"),
        "{out}"
    );
    assert!(
        out.contains("__wbindgen_externref_xform__.__wbindgen_externref_table_grow"),
        "{out}"
    );
}
