//! `meshward image …`: the clap subcommands over meshward-oci, and what they print.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use meshward_oci::registry::{self, ImageRef, RegistryOptions};
use meshward_oci::report::{judge, render_report};
use meshward_oci::{image, Format, Image};

/// OCI images of filters (the bundle too) for Istio `WasmPlugin` (`url: oci://…`).
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an OCI image layout directory (oci-layout, index.json, blobs/sha256/…).
    Build {
        /// The filter module (.wasm; the bundle of all four is meshward.wasm).
        wasm: PathBuf,
        /// Directory to write the layout into (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = FormatArg::Compat)]
        format: FormatArg,
        /// Name the image in index.json (org.opencontainers.image.ref.name), e.g. for
        /// `skopeo copy oci:DIR:TAG …`.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Build and push to a registry: oci://HOST/REPO:TAG.
    Push {
        /// The filter module (.wasm; the bundle of all four is meshward.wasm).
        wasm: PathBuf,
        /// Target, e.g. oci://registry.example/meshward/header-limits:0.1.0
        target: String,
        #[arg(long, value_enum, default_value_t = FormatArg::Compat)]
        format: FormatArg,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull an image and apply Istio's extraction rules: which module it would load, or why it
    /// would reject the image. Exits non-zero on reject or mismatch.
    Verify {
        /// The WasmPlugin url, e.g. oci://registry.example/meshward/header-limits:0.1.0
        target: String,
        /// Also require the loaded module to equal this file byte for byte.
        #[arg(long)]
        expect_wasm: Option<PathBuf>,
        /// The WasmPlugin `sha256` value to check, as Istio does, against the manifest digest.
        #[arg(long)]
        sha256: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// Registry access flags shared by push and verify.
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryArgs {
    /// Plain HTTP, for local registries.
    #[arg(long)]
    pub insecure: bool,
    /// Registry user (with --password); default: the docker config's `auths`
    /// ($DOCKER_CONFIG/config.json or ~/.docker/config.json).
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    #[arg(long, requires = "username")]
    pub password: Option<String>,
}

impl From<RegistryArgs> for RegistryOptions {
    fn from(a: RegistryArgs) -> Self {
        RegistryOptions {
            insecure: a.insecure,
            username: a.username,
            password: a.password,
            docker_config: None,
        }
    }
}

/// Runs one `meshward image` subcommand, printing to stdout.
pub fn run(cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Build {
            wasm,
            out,
            format,
            tag,
        } => {
            let image = build_from_file(&wasm, format.into())?;
            image.write_layout(&out, tag.as_deref())?;
            print_image(&image);
            println!("layout:             {}", out.display());
            Ok(())
        }
        ImageCommand::Push {
            wasm,
            target,
            format,
            registry,
        } => {
            let reference = ImageRef::parse(&target)?;
            let image = build_from_file(&wasm, format.into())?;
            let pushed = registry::push(&image, &reference, &registry.into())?;
            print_image(&image);
            println!(
                "pushed:             {reference} ({} new blobs)",
                pushed.uploaded_blobs
            );
            println!(
                "pinned url:         {}",
                reference.pinned(&pushed.registry_digest)
            );
            Ok(())
        }
        ImageCommand::Verify {
            target,
            expect_wasm,
            sha256,
            registry,
        } => {
            let reference = ImageRef::parse(&target)?;
            let report = registry::verify(&reference, &registry.into(), sha256.as_deref())?;
            println!("image:              {reference}");
            print!("{}", render_report(&report));
            judge(&report, expect_wasm.as_deref())
        }
    }
}

fn build_from_file(path: &Path, format: Format) -> Result<Image> {
    let wasm = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    image::build(&wasm, format).with_context(|| format!("packaging {}", path.display()))
}

fn print_image(image: &Image) {
    let format = match image.format {
        Format::Compat => "compat (OCI image, last layer tar+gzip with plugin.wasm)",
        Format::OciModule => "oci-module (two layers, raw module)",
    };
    println!("format:             {format}");
    println!("manifest digest:    {}", image.manifest_digest());
    println!(
        "WasmPlugin sha256:  {}   (Istio checks the manifest digest for oci:// urls)",
        image.wasmplugin_sha256()
    );
    println!(
        "module sha256:      {}   ({} bytes; not the WasmPlugin sha256)",
        image.module_sha256, image.module_size
    );
}

/// `--format`: the image shapes of [`Format`], as the command line spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// OCI image whose single (hence last) layer is a tar+gzip holding `plugin.wasm`.
    Compat,
    /// Two layers: the runtime config and the raw module (`vnd.module.wasm.content.layer.v1+wasm`).
    OciModule,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Compat => Format::Compat,
            FormatArg::OciModule => Format::OciModule,
        }
    }
}

impl From<Format> for FormatArg {
    fn from(f: Format) -> Self {
        match f {
            Format::Compat => FormatArg::Compat,
            Format::OciModule => FormatArg::OciModule,
        }
    }
}
