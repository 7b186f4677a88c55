//! `meshward lint FILES…`: the traps in Istio security YAML, each with the resource and field.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use meshward_mesh::lint::{lint as find, Severity};
use meshward_mesh::MeshSettings;

#[derive(Args)]
pub struct LintArgs {
    /// Istio YAML files or directories (multi-document files and `kind: List` too).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The mesh's root namespace (policies there apply mesh-wide).
    #[arg(long, default_value = "istio-system")]
    root_namespace: String,
    /// Exit non-zero on warnings too.
    #[arg(long)]
    strict: bool,
}

/// Ok(true) when nothing fails the run: no error (and with --strict no warning either).
pub fn run(args: LintArgs) -> Result<bool> {
    let loaded = meshward_mesh::load(&args.files)?;
    for note in &loaded.notes {
        println!("note: {note}");
    }
    let mesh = MeshSettings {
        root_namespace: args.root_namespace.clone(),
        ..MeshSettings::default()
    };
    let findings = find(&loaded.resources, &mesh);
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    for f in &findings {
        println!("{f}");
    }
    println!(
        "{} resources: {errors} error(s), {warnings} warning(s)",
        loaded.resources.len()
    );
    Ok(errors == 0 && (!args.strict || warnings == 0))
}
