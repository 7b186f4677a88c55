//! `oci://` modules in a chain: pulled from the registry and checked the way Istio's WasmPlugin
//! fetcher does it (meshward-oci's model of it), so that a scenario runs exactly the bytes that
//! ship. The module Istio would load is written to a cache file named by its digests, and the
//! chain entry then points at that file for both the harness and the Envoy run.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use meshward_oci::{verify, ImageRef, Outcome, RegistryOptions};

use crate::model::Scenario;

/// One pulled module, for the report.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub reference: String,
    /// `sha256:…` of the image manifest (what a WasmPlugin `sha256` names).
    pub manifest_digest: String,
    /// How Istio's rules found the module (variant, layer).
    pub how: String,
    pub bytes: usize,
    pub file: PathBuf,
}

/// Pulls every `oci://` module of the chain and points its entry at the module Istio would
/// load. Istio refusing the image (a `sha256` mismatch, no module in it…) is an error carrying
/// Istio's reason; so is a registry that cannot be reached.
pub fn pull_modules(scenario: &mut Scenario) -> Result<Vec<Pulled>> {
    let mut pulled = Vec::new();
    for (i, entry) in scenario.chain.iter_mut().enumerate() {
        let Some(url) = entry.oci_reference().map(str::to_string) else {
            continue;
        };
        let reference = ImageRef::parse(&url).with_context(|| format!("chain[{i}].module"))?;
        let options = RegistryOptions {
            insecure: entry.insecure_registry,
            ..RegistryOptions::default()
        };
        let report = verify(&reference, &options, entry.sha256.as_deref())
            .with_context(|| format!("chain[{i}]: pulling {url}"))?;
        let loaded = match report.outcome {
            Outcome::Load(l) => l,
            Outcome::Reject(reason) => {
                bail!("chain[{i}]: Istio would not load {url}: {reason}")
            }
        };
        let manifest_digest = report.manifest_digest.unwrap_or_default();
        let dir = std::env::temp_dir().join("meshward-oci");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join(format!(
            "{}-{}.wasm",
            manifest_digest.trim_start_matches("sha256:"),
            loaded.sha256()
        ));
        // Write then rename: a concurrent run never sees half a module.
        let partial = file.with_extension(format!("partial.{}", std::process::id()));
        std::fs::write(&partial, &loaded.wasm)
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, &file).with_context(|| format!("writing {}", file.display()))?;
        entry.module = Some(file.clone());
        pulled.push(Pulled {
            reference: url,
            manifest_digest,
            how: match &loaded.entry {
                Some(e) => format!("{}, layer {}, {e}", loaded.variant, loaded.layer),
                None => format!("{}, layer {}", loaded.variant, loaded.layer),
            },
            bytes: loaded.wasm.len(),
            file,
        });
    }
    Ok(pulled)
}
