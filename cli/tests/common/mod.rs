//! What the binary's suites share: the repository root and a run of the built `meshward`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ is in the repository")
        .to_path_buf()
}

/// (exit code, stdout, stderr) of `meshward ARGS`, run from the repository root with the
/// workspace's filters.
pub fn meshward(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshward"))
        .args(args)
        .current_dir(repo())
        .env("MESHWARD_WASM_DIR", meshward_rig::default_wasm_dir(&repo()))
        .output()
        .expect("run meshward");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
