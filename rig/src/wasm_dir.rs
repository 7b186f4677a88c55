//! Where the filters' .wasm files come from: one lookup for every command and runner.
//!
//! In order: the directory a command was given (`--wasm-dir`), `$MESHWARD_WASM_DIR`, and the
//! enclosing workspace's `target/wasm32-wasip1/release`. A binary built with the
//! `embedded-filters` feature (scripts/install.sh) carries the shipped filters; when that last
//! directory holds none of them — a user's own repository, with no meshward build beside it — it
//! uses its own copies, written once to a cache directory named by their sha256.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[cfg(feature = "embedded-filters")]
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_filters.rs"));
}

#[cfg(not(feature = "embedded-filters"))]
mod embedded {
    pub(crate) const FILTERS: &[(&str, &[u8])] = &[];
    pub(crate) const SHA256: &str = "";
}

/// The filters a binary built with the `embedded-filters` feature carries.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedFilters {
    /// (file name, module bytes): `header_limits.wasm`, `jwt_authn.wasm`, `spiffe_authz.wasm`,
    /// `spiffe_authz_tcp.wasm`, `rate_limit.wasm` and the bundle `meshward.wasm`.
    pub modules: &'static [(&'static str, &'static [u8])],
    /// sha256 (hex) over the modules' names, lengths and bytes.
    pub sha256: &'static str,
}

/// The filters this binary carries; `None` for a build without `embedded-filters` (`cargo run`,
/// the test suites), which reads them from the wasm directory only.
pub fn embedded_filters() -> Option<EmbeddedFilters> {
    if embedded::FILTERS.is_empty() {
        return None;
    }
    Some(EmbeddedFilters {
        modules: embedded::FILTERS,
        sha256: embedded::SHA256,
    })
}

impl EmbeddedFilters {
    /// The first 16 hex digits of [`Self::sha256`]: enough to tell builds apart in a directory name.
    pub fn short_sha256(&self) -> &'static str {
        self.sha256.get(..16).unwrap_or(self.sha256)
    }

    /// Writes the modules into `<cache>/meshward/filters-<sha256 prefix>/`, where `<cache>` is
    /// `$XDG_CACHE_HOME` or `~/.cache`, unless they are there already, and returns that directory.
    pub fn extract(&self) -> Result<PathBuf> {
        let dir = cache_home()?
            .join("meshward")
            .join(format!("filters-{}", self.short_sha256()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, bytes) in self.modules {
            let path = dir.join(name);
            // Compared in full, not trusted by name: a file cut short (a full disk) or edited by
            // hand is rewritten, so the harness runs exactly the bytes this binary carries.
            if std::fs::read(&path).is_ok_and(|on_disk| on_disk == *bytes) {
                continue;
            }
            // A temporary file renamed into place: a meshward running at the same time sees no
            // file or a whole one, never a module half written.
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)
                .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
            tmp.write_all(bytes)
                .with_context(|| format!("writing {}", tmp.path().display()))?;
            tmp.persist(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(dir)
    }
}

/// `$XDG_CACHE_HOME`, else `$HOME/.cache` (the XDG base directory rules: a relative
/// `XDG_CACHE_HOME` is ignored).
fn cache_home() -> Result<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = absolute("XDG_CACHE_HOME") {
        return Ok(dir);
    }
    if let Some(home) = absolute("HOME") {
        return Ok(home.join(".cache"));
    }
    bail!(
        "neither XDG_CACHE_HOME nor HOME is set to an absolute path: meshward writes the filters \
         it carries under one of them (or give --wasm-dir or MESHWARD_WASM_DIR)"
    )
}

/// The wasm directory: `given` (a command's `--wasm-dir`), else `$MESHWARD_WASM_DIR`, else the
/// workspace's build (`<target>/wasm32-wasip1/release`, target being `$CARGO_TARGET_DIR` or
/// `target`, relative paths taken from the nearest ancestor of `start` holding a `Cargo.lock` or
/// `.git`: the workspace root, where cargo resolves them too). A binary that carries its filters
/// uses its own copies instead when the workspace's build holds none of them ([`EmbeddedFilters::extract`]).
///
/// "None of them" rather than "not the one requested": a directory holding some of meshward's
/// modules is a meshward build, and a freshly built filter there must win over the copy the
/// binary was installed with; a missing one is then reported as missing, not silently replaced.
pub fn wasm_dir(given: Option<&Path>, start: &Path) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os("MESHWARD_WASM_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let workspace = workspace_wasm_dir(start);
    match embedded_filters() {
        Some(embedded)
            if !embedded
                .modules
                .iter()
                .any(|(name, _)| workspace.join(name).is_file()) =>
        {
            embedded.extract()
        }
        _ => Ok(workspace),
    }
}

/// [`wasm_dir`] with no directory given, for callers that cannot return an error: when the
/// filters this binary carries cannot be written to the cache, says why on stderr and answers the
/// workspace's directory (so the module that is then missing is named by the caller's error).
pub fn default_wasm_dir(start: &Path) -> PathBuf {
    match wasm_dir(None, start) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("meshward: {e:#}");
            workspace_wasm_dir(start)
        }
    }
}

fn workspace_wasm_dir(start: &Path) -> PathBuf {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_directory_wins() {
        let given = Path::new("/somewhere/wasm");
        assert_eq!(wasm_dir(Some(given), Path::new(".")).unwrap(), given);
    }

    #[test]
    fn the_workspace_build_is_under_the_nearest_cargo_lock() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.lock"), "").unwrap();
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap();
        let found = workspace_wasm_dir(&nested);
        assert!(
            found.ends_with("wasm32-wasip1/release"),
            "{}",
            found.display()
        );
        // The root itself, unless CARGO_TARGET_DIR is absolute (then it replaces root/target).
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            assert_eq!(
                found,
                std::fs::canonicalize(dir.path())
                    .unwrap()
                    .join("target/wasm32-wasip1/release")
            );
        }
    }

    #[cfg(feature = "embedded-filters")]
    #[test]
    fn the_embedded_filters_are_written_once_and_rewritten_when_changed() {
        let embedded = embedded_filters().expect("built with embedded-filters");
        assert_eq!(embedded.modules.len(), 6);
        let home = tempfile::tempdir().unwrap();
        // The process environment is shared by the tests of this binary: this is its only
        // reader of XDG_CACHE_HOME, and extract() is called with the variable set.
        std::env::set_var("XDG_CACHE_HOME", home.path());
        let dir = embedded.extract().unwrap();
        assert!(dir.starts_with(home.path().join("meshward")));
        let (name, bytes) = embedded.modules[0];
        assert_eq!(std::fs::read(dir.join(name)).unwrap(), bytes);
        std::fs::write(dir.join(name), b"not the module").unwrap();
        assert_eq!(embedded.extract().unwrap(), dir);
        assert_eq!(std::fs::read(dir.join(name)).unwrap(), bytes);
    }
}
