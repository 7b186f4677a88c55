//! What every suite in `tests/*.rs` needs to find: the repository, the filters' release modules
//! the fixture tokens, the Istio CRD schemas ([`crd`]) and the test gRPC server ([`grpc`]). The rig the suites drive is `meshward_rig`.

use std::path::{Path, PathBuf};

pub mod crd;
pub mod grpc;
mod parity;

pub use parity::{assert_every_file_has_its_test, parity_file, parity_suite};

/// The repository root (the parent of `tests/`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `*.yaml` files of `dir`, sorted (scenario and mesh directories).
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// A release module built by `scripts/build-wasm.sh`, by file stem or filter name
/// (`rate_limit` or `rate-limit`); a missing file fails the test, never skips it.
pub fn wasm(name: &str) -> PathBuf {
    let p =
        meshward_rig::default_wasm_dir(&repo()).join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        p.is_file(),
        "{} missing: run scripts/build-wasm.sh",
        p.display()
    );
    p
}

/// A file of `tests/fixtures/jwt/` (keys, key sets, tokens), as text.
pub fn jwt_fixture(name: &str) -> String {
    let p = repo().join("tests/fixtures/jwt").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A token from `tests/fixtures/jwt/tokens.json` (written by `tests/fixtures/jwt/gen.py`).
pub fn jwt_token(name: &str) -> String {
    let path = repo().join("tests/fixtures/jwt/tokens.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("tokens.json")).expect("JSON");
    json["tokens"][name]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token {name} in {}", path.display()))
        .to_string()
}

/// One refused configuration of `tests/config-rejections/<filter>.yaml`: the config, and the field
/// the filter's error must name.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    pub name: String,
    pub field: String,
    pub config: serde_json::Value,
}

/// The rejection list of `filter` (never empty: an empty list would test nothing).
pub fn config_rejections(filter: &str) -> Vec<Rejection> {
    let path = repo()
        .join("tests/config-rejections")
        .join(format!("{filter}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases: Vec<Rejection> =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(!cases.is_empty(), "{}: no case", path.display());
    cases
}
