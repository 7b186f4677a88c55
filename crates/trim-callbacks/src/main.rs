//! `trim-callbacks FILE.wasm…`: removes, in place, the callback exports each module does not list
//! in its `meshward.callbacks` section (see the library). scripts/build-wasm.sh runs it on the
//! shipped filters.

use std::process::ExitCode;

fn main() -> ExitCode {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() || paths.iter().any(|p| p == "-h" || p == "--help") {
        eprintln!("usage: trim-callbacks FILE.wasm...\n\nRemoves, in place, the proxy-wasm event callbacks each module does not list in its `meshward.callbacks` custom section.");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for path in &paths {
        match run(path) {
            Ok(line) => eprintln!("{line}"),
            Err(e) => {
                eprintln!("trim-callbacks: {path}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run(path: &str) -> Result<String, String> {
    let wasm = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let trimmed = meshward_trim_callbacks::trim(&wasm)?;
    let name = std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned());
    if trimmed.removed.is_empty() {
        return Ok(format!("{name}: nothing to drop"));
    }
    // A new file renamed over the old: cargo hard-links its output into deps/, which must keep the
    // linker's bytes.
    let tmp = format!("{path}.trim.tmp");
    std::fs::write(&tmp, &trimmed.wasm).map_err(|e| format!("cannot write {tmp}: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace it: {e}"))?;
    Ok(format!(
        "{name}: exports {} and none of the other {} event callbacks",
        trimmed
            .handled
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        trimmed.removed.len()
    ))
}
