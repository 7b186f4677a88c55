//! Where the rig writes its files: temporary directories under `<repo>/.work/` (git-ignored), so a
//! failing test leaves nothing behind in the source tree and nothing outside the project; for a
//! `meshward` that runs outside this repository, under the system's temporary directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The repository root: the parent of this crate's manifest directory when it still exists (a
/// checkout), else the current directory (an installed `meshward` run from a project).
pub fn repo_root() -> PathBuf {
    checkout().unwrap_or_else(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")))
}

/// The checkout this crate was built from, when it still exists.
fn checkout() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .filter(|root| root.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

/// Where [`WorkDir`]s go: `<checkout>/.work/` for the tests and `cargo run` in a checkout, else the
/// system's temporary directory. A binary that carries its filters (scripts/install.sh) is meant
/// to run anywhere: its files go to the temporary directory too, not into the checkout it happened
/// to be built from, and never into the user's repository (the current directory).
/// The second member is a prefix for the directories' names, so that those in the shared
/// temporary directory say whose they are.
fn work_base() -> (PathBuf, &'static str) {
    match checkout() {
        Some(root) if crate::embedded_filters().is_none() => (root.join(".work"), ""),
        _ => (std::env::temp_dir(), "meshward-"),
    }
}

/// A temporary directory under `<repo>/.work/` (see [`work_base`]), removed on drop.
#[derive(Debug)]
pub struct WorkDir {
    dir: tempfile::TempDir,
}

impl WorkDir {
    /// Creates `<repo>/.work/<prefix>XXXXXX` (or `<temp dir>/<prefix>XXXXXX`, see [`work_base`]).
    pub fn new(prefix: &str) -> Result<Self> {
        let (base, owner) = work_base();
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{owner}{prefix}"))
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
