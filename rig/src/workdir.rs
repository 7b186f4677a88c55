//! Where the rig writes its files: temporary directories under `<repo>/.work/` (git-ignored), so a
//! failing test leaves nothing behind in the source tree and nothing outside the project.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The repository root: the parent of this crate's manifest directory when it still exists (a
/// checkout), else the current directory (an installed `meshward` run from a project).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    match manifest.parent() {
        Some(root) if root.join("Cargo.toml").is_file() => root.to_path_buf(),
        _ => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
}

/// Find the wasm directory: `$MESHWARD_WASM_DIR`, else `<target>/wasm32-wasip1/release` where
/// target is `$CARGO_TARGET_DIR` or `target`, relative paths taken from the nearest ancestor of
/// `start` holding a `Cargo.lock` or `.git` (the workspace root, where cargo resolves them too).
pub fn default_wasm_dir(start: &Path) -> PathBuf {
    if let Some(d) = std::env::var_os("MESHWARD_WASM_DIR") {
        return PathBuf::from(d);
    }
    let start = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
    let root = start
        .ancestors()
        .find(|a| a.join("Cargo.lock").is_file() || a.join(".git").exists())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    root.join(target).join("wasm32-wasip1").join("release")
}

/// A temporary directory under `<repo>/.work/`, removed on drop.
#[derive(Debug)]
pub struct WorkDir {
    dir: tempfile::TempDir,
}

impl WorkDir {
    /// Creates `<repo>/.work/<prefix>XXXXXX`.
    pub fn new(prefix: &str) -> Result<Self> {
        let base = repo_root().join(".work");
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&base)
            .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
        Ok(Self { dir })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `name` inside the directory and returns the file's path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}
