//! With the `embedded-filters` feature: the shipped filters become part of the crate (an
//! `include_bytes!` of each release module in `$MESHWARD_EMBED_WASM_DIR`), with their sha256.
//! Without it, nothing happens and a build needs no .wasm file.

/// The modules an installed `meshward` carries: the four filters, spiffe-authz-tcp and the bundle
/// (scripts/build-wasm.sh builds them). The test modules stay in the repository.
#[cfg_attr(not(feature = "embedded-filters"), allow(dead_code))]
const SHIPPED: [&str; 6] = [
    "header_limits",
    "jwt_authn",
    "spiffe_authz",
    "spiffe_authz_tcp",
    "rate_limit",
    "meshward",
];

fn main() -> Result<(), String> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "embedded-filters")]
    embed()?;
    Ok(())
}

/// Writes `$OUT_DIR/embedded_filters.rs`: `FILTERS` (file name, bytes) and `SHA256`, over each
/// module's name, length and bytes, so that two builds carrying the same modules share one cache
/// directory and any other pair does not.
#[cfg(feature = "embedded-filters")]
fn embed() -> Result<(), String> {
    use sha2::{Digest, Sha256};
    use std::env;
    use std::fmt::Write as _;
    use std::path::PathBuf;

    println!("cargo:rerun-if-env-changed=MESHWARD_EMBED_WASM_DIR");
    let dir = env::var_os("MESHWARD_EMBED_WASM_DIR").ok_or(
        "the embedded-filters feature needs MESHWARD_EMBED_WASM_DIR, the directory holding the \
         release .wasm files: install with scripts/install.sh, which builds them and sets it",
    )?;
    let dir = std::fs::canonicalize(&dir).map_err(|e| {
        format!(
            "MESHWARD_EMBED_WASM_DIR={}: {e}",
            PathBuf::from(&dir).display()
        )
    })?;
    let mut hasher = Sha256::new();
    let mut entries = String::new();
    for name in SHIPPED {
        let path = dir.join(format!("{name}.wasm"));
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "{}: {e} (scripts/build-wasm.sh builds the filters)",
                path.display()
            )
        })?;
        let literal = path
            .to_str()
            .ok_or_else(|| format!("{}: not UTF-8, cannot be embedded", path.display()))?;
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
        // `{:?}` of a str is a valid Rust string literal (quotes and escapes).
        let _ = writeln!(
            entries,
            "    ({:?}, include_bytes!({literal:?})),",
            format!("{name}.wasm")
        );
    }
    let sha256: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let source = format!(
        "/// The modules this binary carries: (file name, bytes).\n\
         pub(crate) const FILTERS: &[(&str, &[u8])] = &[\n{entries}];\n\
         /// sha256 of their names, lengths and bytes (hex).\n\
         pub(crate) const SHA256: &str = {sha256:?};\n"
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?)
        .join("embedded_filters.rs");
    std::fs::write(&out, source).map_err(|e| format!("{}: {e}", out.display()))
}
