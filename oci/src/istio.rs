//! What Istio's Wasm fetcher would do with an image, decided the way it decides.
//!
//! A model of `pkg/wasm/imagefetcher.go` and the checksum step of `pkg/wasm/cache.go`
//! (istio/istio at 2026-08), with go-containerregistry's resolution rules underneath. See
//! docs/images.md for the rules in prose. Transport problems are `Err`; everything Istio
//! itself would refuse is an [`Outcome::Reject`] carrying Istio's reason.

use std::io::Read as _;

use anyhow::Result;
use serde::Deserialize;

use crate::media;
use crate::spec::{sha256_digest, sha256_hex, Descriptor, ImageManifest};

/// Istio's default `ISTIO_WASM_MAX_BINARY_SIZE_BYTES` (256 MiB): it reads at most this much
/// decompressed tar stream, or raw module layer.
pub const MAX_WASM_BINARY_SIZE: u64 = 256 * 1024 * 1024;

/// Nested indexes are followed (go-containerregistry recurses); a bound stops cycles.
const MAX_INDEX_DEPTH: usize = 8;

/// Where manifests and blobs come from (a registry, or memory in tests).
pub trait Content {
    /// The manifest with this digest (a child of an index), raw bytes.
    fn manifest(&mut self, descriptor: &Descriptor) -> Result<Vec<u8>>;
    /// The blob a descriptor points at, raw bytes.
    fn blob(&mut self, descriptor: &Descriptor) -> Result<Vec<u8>>;
}

/// Which of Istio's extraction paths accepted the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Docker schema 2 manifest, last layer a Docker tar.gzip holding `plugin.wasm`.
    DockerCompat,
    /// OCI manifest, last layer an OCI tar+gzip holding `plugin.wasm`.
    OciCompat,
    /// Exactly two layers, one of them the raw `vnd.module.wasm.content.layer.v1+wasm` module.
    OciModule,
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::DockerCompat => "compat variant, Docker media types",
            Variant::OciCompat => "compat variant, OCI media types",
            Variant::OciModule => "oci variant (raw module layer)",
        })
    }
}

/// The module Istio would hand to Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub variant: Variant,
    /// Index in the manifest's `layers` of the layer the module came from.
    pub layer: usize,
    /// For the compat variants: the tar entry that matched.
    pub entry: Option<String>,
    pub wasm: Vec<u8>,
}

impl Loaded {
    pub fn sha256(&self) -> String {
        sha256_hex(&self.wasm)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Load(Loaded),
    Reject(String),
}

/// The whole decision, with what led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// How the reference resolved, e.g. an index to its linux/amd64 child.
    pub steps: Vec<String>,
    /// `sha256:<hex>` of the image manifest Istio ends up with: its hex is what Istio compares
    /// with a WasmPlugin's `sha256`. `None` if resolution failed before a manifest was chosen.
    pub manifest_digest: Option<String>,
    pub outcome: Outcome,
}

impl Report {
    fn reject(steps: Vec<String>, digest: Option<String>, reason: String) -> Self {
        Report {
            steps,
            manifest_digest: digest,
            outcome: Outcome::Reject(reason),
        }
    }
}

/// Just enough of a manifest to tell an index from an image, as the client would.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// Decides what Istio does with the manifest `top` (fetched for the WasmPlugin `url`).
///
/// `expected_checksum` is the WasmPlugin `sha256` (hex, optionally `sha256:`-prefixed), or the
/// digest of a `@sha256:` URL when the field is empty — Istio uses that as the checksum too.
pub fn evaluate(
    top: &[u8],
    expected_checksum: Option<&str>,
    content: &mut dyn Content,
) -> Result<Report> {
    let mut steps = Vec::new();
    let mut manifest = top.to_vec();
    let mut depth = 0;
    // go-containerregistry's Descriptor.Image(): indexes resolve to their linux/amd64 child.
    loop {
        let probe: Probe = match serde_json::from_slice(&manifest) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Report::reject(
                    steps,
                    None,
                    format!("could not fetch manifest: not a JSON manifest: {e}"),
                ))
            }
        };
        if probe.schema_version == 1 {
            return Ok(Report::reject(
                steps,
                None,
                "could not fetch image: Docker schema 1 manifests are not supported by Istio's client"
                    .to_owned(),
            ));
        }
        let is_index = match probe.media_type.as_deref() {
            Some(media::OCI_INDEX | media::DOCKER_MANIFEST_LIST) => true,
            Some(_) => false,
            None => probe.manifests.is_some(),
        };
        if !is_index {
            break;
        }
        depth += 1;
        if depth > MAX_INDEX_DEPTH {
            return Ok(Report::reject(
                steps,
                None,
                "could not fetch image: indexes nested too deeply".to_owned(),
            ));
        }
        let children = probe.manifests.unwrap_or_default();
        let Some(child) = children.iter().find(|c| is_linux_amd64(c)) else {
            let platforms: Vec<String> = children.iter().map(platform_name).collect();
            return Ok(Report::reject(
                steps,
                None,
                format!(
                    "could not fetch image: no child with platform linux/amd64 in the index \
                     (it has: {})",
                    if platforms.is_empty() {
                        "nothing".to_owned()
                    } else {
                        platforms.join(", ")
                    }
                ),
            ));
        };
        steps.push(format!(
            "index {} resolves to its {} child {}",
            sha256_digest(&manifest),
            platform_name(child),
            child.digest
        ));
        manifest = content.manifest(child)?;
    }

    let digest = sha256_digest(&manifest);
    let actual_hex = sha256_hex(&manifest);
    if let Some(expected) = expected_checksum {
        let expected = expected.strip_prefix("sha256:").unwrap_or(expected);
        if expected != actual_hex {
            return Ok(Report::reject(
                steps,
                Some(digest),
                format!(
                    "checksum mismatch: the image manifest has checksum {actual_hex}, which does \
                     not match: {expected}"
                ),
            ));
        }
    }

    let image: ImageManifest = match serde_json::from_slice(&manifest) {
        Ok(m) => m,
        Err(e) => {
            return Ok(Report::reject(
                steps,
                Some(digest),
                format!("could not fetch Wasm binary: could not retrieve manifest: {e}"),
            ))
        }
    };

    let extracted = if image.media_type.as_deref() == Some(media::DOCKER_MANIFEST) {
        // Docker manifests get only the Docker path; no fallback to the other variants.
        match last_layer_plugin(&image, media::DOCKER_LAYER_TAR_GZIP, content)? {
            Ok((layer, entry, wasm)) => Ok(Loaded {
                variant: Variant::DockerCompat,
                layer,
                entry: Some(entry),
                wasm,
            }),
            Err(e) => Err(format!(
                "could not extract Wasm file from the image as Docker container {e}"
            )),
        }
    } else {
        match last_layer_plugin(&image, media::OCI_LAYER_TAR_GZIP, content)? {
            Ok((layer, entry, wasm)) => Ok(Loaded {
                variant: Variant::OciCompat,
                layer,
                entry: Some(entry),
                wasm,
            }),
            Err(compat) => match module_layer(&image, content)? {
                Ok((layer, wasm)) => Ok(Loaded {
                    variant: Variant::OciModule,
                    layer,
                    entry: None,
                    wasm,
                }),
                Err(oci) => Err(format!(
                    "the given image is in invalid format as an OCI image: could not parse as \
                     compat variant: {compat}; could not parse as oci variant: {oci}"
                )),
            },
        }
    };

    let outcome = match extracted {
        Err(reason) => Outcome::Reject(format!("could not fetch Wasm binary: {reason}")),
        // cache.go's isValidWasmBinary: at least 8 bytes starting with the wasm magic.
        Ok(loaded) if !(loaded.wasm.len() >= 8 && loaded.wasm.starts_with(b"\0asm")) => {
            Outcome::Reject(format!(
                "fetched Wasm binary is invalid (Istio checks for at least 8 bytes starting with \
                 \\0asm; got {} bytes from layer {})",
                loaded.wasm.len(),
                loaded.layer
            ))
        }
        Ok(loaded) => Outcome::Load(loaded),
    };
    Ok(Report {
        steps,
        manifest_digest: Some(digest),
        outcome,
    })
}

/// A child without a platform counts as linux/amd64 (go-containerregistry's default). Only
/// os and architecture are compared: the required platform sets nothing else.
fn is_linux_amd64(child: &Descriptor) -> bool {
    match &child.platform {
        None => true,
        Some(p) => p.os == "linux" && p.architecture == "amd64",
    }
}

fn platform_name(child: &Descriptor) -> String {
    match &child.platform {
        None => "linux/amd64 (no platform given)".to_owned(),
        Some(p) if p.variant.is_empty() => format!("{}/{}", p.os, p.architecture),
        Some(p) => format!("{}/{}/{}", p.os, p.architecture, p.variant),
    }
}

/// go-containerregistry's `partial.BlobDescriptor`: a layer's media type is looked up by its
/// digest, the config first, then the first layer with that digest.
fn effective<'a>(image: &'a ImageManifest, layer: &'a Descriptor) -> &'a Descriptor {
    if let Some(config) = &image.config {
        if config.digest == layer.digest {
            return config;
        }
    }
    image
        .layers
        .iter()
        .find(|l| l.digest == layer.digest)
        .unwrap_or(layer)
}

/// Transport errors outside, Istio's rejection reason inside.
type Extracted<T> = Result<std::result::Result<T, String>>;

/// The compat paths: the last layer must have `expected` media type and be a tar.gz with an
/// entry whose base name is `plugin.wasm` (the first such entry wins).
fn last_layer_plugin(
    image: &ImageManifest,
    expected: &str,
    content: &mut dyn Content,
) -> Extracted<(usize, String, Vec<u8>)> {
    let Some((index, last)) = image.layers.iter().enumerate().next_back() else {
        return Ok(Err("number of layers must be greater than zero".to_owned()));
    };
    let desc = effective(image, last);
    if desc.media_type != expected {
        return Ok(Err(format!(
            "invalid media type {} (expect {expected})",
            desc.media_type
        )));
    }
    let blob = content.blob(desc)?;
    Ok(match plugin_from_tar_gz(&blob) {
        Ok((entry, wasm)) => Ok((index, entry, wasm)),
        Err(e) => Err(format!("could not extract wasm binary: {e}")),
    })
}

fn plugin_from_tar_gz(blob: &[u8]) -> std::result::Result<(String, Vec<u8>), String> {
    let gz = flate2::read::MultiGzDecoder::new(blob);
    let mut archive = tar::Archive::new(gz.take(MAX_WASM_BINARY_SIZE));
    let entries = archive
        .entries()
        .map_err(|e| format!("failed to parse layer as tar.gz: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("failed to parse layer as tar.gz: {e}"))?;
        let path = entry.path_bytes().into_owned();
        if go_base(&path) != media::PLUGIN_FILE_NAME.as_bytes() {
            continue;
        }
        let size = entry.size();
        let mut wasm = Vec::new();
        entry
            .read_to_end(&mut wasm)
            .map_err(|e| format!("failed to read {}: {e}", media::PLUGIN_FILE_NAME))?;
        if (wasm.len() as u64) < size {
            return Err(format!(
                "failed to read {}: unexpected EOF",
                media::PLUGIN_FILE_NAME
            ));
        }
        return Ok((String::from_utf8_lossy(&path).into_owned(), wasm));
    }
    Err(format!(
        "{} not found in the archive",
        media::PLUGIN_FILE_NAME
    ))
}

/// Go's `filepath.Base` on Unix: the last element after trailing slashes are dropped.
fn go_base(path: &[u8]) -> &[u8] {
    let trimmed = match path.iter().rposition(|&b| b != b'/') {
        Some(last) => path.get(..=last).unwrap_or(path),
        None if path.is_empty() => return b".",
        None => return b"/",
    };
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(slash) => trimmed.get(slash + 1..).unwrap_or(trimmed),
        None => trimmed,
    }
}

/// The oci variant: exactly two layers; the first with the module media type is read raw.
fn module_layer(image: &ImageManifest, content: &mut dyn Content) -> Extracted<(usize, Vec<u8>)> {
    if image.layers.len() != 2 {
        return Ok(Err(format!(
            "number of layers must be 2 but got {}",
            image.layers.len()
        )));
    }
    let found = image
        .layers
        .iter()
        .enumerate()
        .find(|(_, l)| effective(image, l).media_type == media::WASM_MODULE_LAYER);
    let Some((index, layer)) = found else {
        return Ok(Err(format!(
            "could not find the layer of type {}",
            media::WASM_MODULE_LAYER
        )));
    };
    let blob = content.blob(effective(image, layer))?;
    if blob.len() as u64 > MAX_WASM_BINARY_SIZE {
        // Istio reads through a LimitReader and would silently keep a truncated module.
        return Ok(Err(format!(
            "module layer is {} bytes; Istio reads only the first {MAX_WASM_BINARY_SIZE} \
             (ISTIO_WASM_MAX_BINARY_SIZE_BYTES) and Envoy would get a truncated module",
            blob.len()
        )));
    }
    Ok(Ok((index, blob)))
}

#[cfg(test)]
mod tests;
