//! What `meshward image verify` prints about a pulled image, and whether it passes.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

use crate::istio::{Outcome, Report};
use crate::spec::sha256_hex;

/// The report as printed by `verify`.
pub fn render_report(report: &Report) -> String {
    let mut out = String::new();
    for step in &report.steps {
        out.push_str(&format!("resolved:           {step}\n"));
    }
    if let Some(digest) = &report.manifest_digest {
        out.push_str(&format!("manifest digest:    {digest}\n"));
        out.push_str(&format!(
            "WasmPlugin sha256:  {}\n",
            digest.strip_prefix("sha256:").unwrap_or(digest)
        ));
    }
    match &report.outcome {
        Outcome::Load(l) => {
            let from = match &l.entry {
                Some(entry) => format!("{entry} in layer {}", l.layer),
                None => format!("layer {}", l.layer),
            };
            out.push_str(&format!("istio:              ACCEPT ({})\n", l.variant));
            out.push_str(&format!("loads:              {from}\n"));
            out.push_str(&format!(
                "module sha256:      {}   ({} bytes)\n",
                l.sha256(),
                l.wasm.len()
            ));
        }
        Outcome::Reject(reason) => {
            out.push_str(&format!("istio:              REJECT: {reason}\n"));
        }
    }
    out
}

/// Exit status of `verify`: rejected, or not the expected module, is an error.
pub fn judge(report: &Report, expect_wasm: Option<&Path>) -> Result<()> {
    let loaded = match &report.outcome {
        Outcome::Reject(reason) => bail!("Istio would reject this image: {reason}"),
        Outcome::Load(l) => l,
    };
    if let Some(path) = expect_wasm {
        let expected =
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if expected != loaded.wasm {
            bail!(
                "Istio would load a different module than {} (sha256 {}, {} bytes)",
                path.display(),
                sha256_hex(&expected),
                expected.len()
            );
        }
        println!("expected module:    identical to {}", path.display());
    }
    Ok(())
}
