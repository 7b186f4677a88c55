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
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::image::{build, Format};
    use crate::spec::{Index, Platform};

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    /// Blobs and manifests by digest.
    #[derive(Default)]
    struct Memory(BTreeMap<String, Vec<u8>>);

    impl Memory {
        fn add(&mut self, bytes: &[u8]) -> String {
            let d = sha256_digest(bytes);
            self.0.insert(d.clone(), bytes.to_vec());
            d
        }
        fn get(&self, d: &Descriptor) -> Result<Vec<u8>> {
            self.0
                .get(&d.digest)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("blob {} unknown", d.digest))
        }
        fn with_image(image: &crate::image::Image) -> Self {
            let mut m = Memory::default();
            for b in image.blobs() {
                m.add(&b.data);
            }
            m.add(&image.manifest);
            m
        }
    }

    impl Content for Memory {
        fn manifest(&mut self, d: &Descriptor) -> Result<Vec<u8>> {
            self.get(d)
        }
        fn blob(&mut self, d: &Descriptor) -> Result<Vec<u8>> {
            self.get(d)
        }
    }

    fn loaded(report: &Report) -> &Loaded {
        match &report.outcome {
            Outcome::Load(l) => l,
            Outcome::Reject(r) => panic!("rejected: {r}"),
        }
    }

    fn rejected(report: &Report) -> &str {
        match &report.outcome {
            Outcome::Reject(r) => r,
            Outcome::Load(l) => panic!("loaded {:?}", l.variant),
        }
    }

    fn gz_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &tar).unwrap();
        e.finish().unwrap()
    }

    fn manifest(media_type: Option<&str>, layers: &[(&str, &[u8])], mem: &mut Memory) -> Vec<u8> {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        mem.add(config);
        let m = ImageManifest {
            schema_version: 2,
            media_type: media_type.map(str::to_owned),
            config: Some(Descriptor::of(media::OCI_IMAGE_CONFIG, config)),
            layers: layers
                .iter()
                .map(|(mt, data)| {
                    mem.add(data);
                    Descriptor::of(mt, data)
                })
                .collect(),
            annotations: None,
        };
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn both_built_formats_load_the_module_byte_for_byte() {
        for (format, variant, layer) in [
            (Format::Compat, Variant::OciCompat, 0),
            (Format::OciModule, Variant::OciModule, 1),
        ] {
            let image = build(MODULE, format).unwrap();
            let mut mem = Memory::with_image(&image);
            let report = evaluate(&image.manifest, None, &mut mem).unwrap();
            let l = loaded(&report);
            assert_eq!((l.variant, l.layer), (variant, layer));
            assert_eq!(l.wasm, MODULE);
            assert_eq!(report.manifest_digest, Some(image.manifest_digest()));
        }
    }

    #[test]
    fn the_wasmplugin_sha256_must_be_the_manifest_digest() {
        let image = build(MODULE, Format::Compat).unwrap();
        let mut mem = Memory::with_image(&image);
        let ok = evaluate(&image.manifest, Some(&image.wasmplugin_sha256()), &mut mem).unwrap();
        loaded(&ok);
        // The module's own hash is the classic mistake.
        let bad = evaluate(&image.manifest, Some(&image.module_sha256), &mut mem).unwrap();
        assert!(rejected(&bad).contains("does not match"), "{bad:?}");
    }

    #[test]
    fn a_single_module_layer_is_rejected_by_both_paths() {
        let mut mem = Memory::default();
        let m = manifest(None, &[(media::WASM_MODULE_LAYER, MODULE)], &mut mem);
        let report = evaluate(&m, None, &mut mem).unwrap();
        let reason = rejected(&report);
        assert!(reason.contains(&format!(
            "invalid media type {} (expect {})",
            media::WASM_MODULE_LAYER,
            media::OCI_LAYER_TAR_GZIP
        )));
        assert!(
            reason.contains("number of layers must be 2 but got 1"),
            "{reason}"
        );
    }

    #[test]
    fn cncf_wasm_artifacts_are_rejected() {
        let mut mem = Memory::default();
        let m = manifest(
            None,
            &[("application/vnd.wasm.content.layer.v1+wasm", MODULE)],
            &mut mem,
        );
        rejected(&evaluate(&m, None, &mut mem).unwrap());
    }

    #[test]
    fn only_the_last_layer_counts_for_compat() {
        let mut mem = Memory::default();
        let good = gz_tar(&[("plugin.wasm", MODULE)]);
        let other = gz_tar(&[("other.txt", b"x")]);
        let m = manifest(
            None,
            &[
                (media::OCI_LAYER_TAR_GZIP, &good),
                (media::OCI_LAYER_TAR_GZIP, &other),
            ],
            &mut mem,
        );
        let reason = evaluate(&m, None, &mut mem).unwrap();
        assert!(rejected(&reason).contains("plugin.wasm not found in the archive"));
        let m = manifest(
            None,
            &[
                (media::OCI_LAYER_TAR_GZIP, &other),
                (media::OCI_LAYER_TAR_GZIP, &good),
            ],
            &mut mem,
        );
        assert_eq!(loaded(&evaluate(&m, None, &mut mem).unwrap()).layer, 1);
    }

    #[test]
    fn plugin_wasm_matches_by_base_name_first_entry_wins() {
        let mut mem = Memory::default();
        let mut second = MODULE.to_vec();
        second.extend_from_slice(&[0, 1, 0]);
        let layer = gz_tar(&[("a/b/plugin.wasm", MODULE), ("plugin.wasm", &second)]);
        let m = manifest(None, &[(media::OCI_LAYER_TAR_GZIP, &layer)], &mut mem);
        let report = evaluate(&m, None, &mut mem).unwrap();
        let l = loaded(&report);
        assert_eq!(l.entry.as_deref(), Some("a/b/plugin.wasm"));
        assert_eq!(l.wasm, MODULE);
    }

    #[test]
    fn docker_manifests_only_take_the_docker_path() {
        let mut mem = Memory::default();
        let layer = gz_tar(&[("plugin.wasm", MODULE)]);
        let m = manifest(
            Some(media::DOCKER_MANIFEST),
            &[(media::DOCKER_LAYER_TAR_GZIP, &layer)],
            &mut mem,
        );
        assert_eq!(
            loaded(&evaluate(&m, None, &mut mem).unwrap()).variant,
            Variant::DockerCompat
        );
        // An OCI layer type in a Docker manifest is not tried as OCI.
        let m = manifest(
            Some(media::DOCKER_MANIFEST),
            &[(media::OCI_LAYER_TAR_GZIP, &layer)],
            &mut mem,
        );
        let report = evaluate(&m, None, &mut mem).unwrap();
        assert!(rejected(&report).contains("as Docker container"));
    }

    #[test]
    fn a_plugin_that_is_not_wasm_is_rejected_after_extraction() {
        let mut mem = Memory::default();
        let layer = gz_tar(&[("plugin.wasm", b"#!/bin/sh\necho hi\n")]);
        let m = manifest(None, &[(media::OCI_LAYER_TAR_GZIP, &layer)], &mut mem);
        let report = evaluate(&m, None, &mut mem).unwrap();
        assert!(rejected(&report).contains("is invalid"));
    }

    #[test]
    fn a_layer_sharing_the_config_digest_takes_the_config_media_type() {
        // Two layers: the module, and a copy of the config blob typed as a module layer.
        // go-containerregistry reports the config's media type for the second one.
        let mut mem = Memory::default();
        let config = br#"{"type":"envoy_proxy"}"#;
        mem.add(config);
        mem.add(MODULE);
        let m = ImageManifest {
            schema_version: 2,
            media_type: None,
            config: Some(Descriptor::of(media::WASM_MODULE_CONFIG, config)),
            layers: vec![
                Descriptor::of(media::WASM_MODULE_LAYER, config),
                Descriptor::of(media::WASM_MODULE_LAYER, MODULE),
            ],
            annotations: None,
        };
        let m = serde_json::to_vec(&m).unwrap();
        let report = evaluate(&m, None, &mut mem).unwrap();
        assert_eq!(loaded(&report).layer, 1);
    }

    fn index_of(children: Vec<(Descriptor, Option<Platform>)>) -> Vec<u8> {
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_owned()),
            manifests: children
                .into_iter()
                .map(|(mut d, p)| {
                    d.platform = p;
                    d
                })
                .collect(),
        };
        serde_json::to_vec(&index).unwrap()
    }

    fn platform(os: &str, arch: &str) -> Option<Platform> {
        Some(Platform {
            architecture: arch.to_owned(),
            os: os.to_owned(),
            os_version: String::new(),
            os_features: vec![],
            variant: String::new(),
            features: vec![],
        })
    }

    #[test]
    fn an_index_resolves_to_linux_amd64_and_the_checksum_is_the_childs() {
        let image = build(MODULE, Format::Compat).unwrap();
        let mut mem = Memory::with_image(&image);
        let index = index_of(vec![
            (image.manifest_descriptor(), platform("wasip1", "wasm")),
            (image.manifest_descriptor(), platform("linux", "amd64")),
        ]);
        let report = evaluate(&index, None, &mut mem).unwrap();
        loaded(&report);
        assert_eq!(report.manifest_digest, Some(image.manifest_digest()));
        // Pinning the index digest (url@sha256:<index>) therefore fails Istio's checksum.
        let pinned = evaluate(&index, Some(&sha256_hex(&index)), &mut mem).unwrap();
        assert!(rejected(&pinned).contains("does not match"));
    }

    #[test]
    fn an_index_without_linux_amd64_is_rejected() {
        let image = build(MODULE, Format::Compat).unwrap();
        let mut mem = Memory::with_image(&image);
        let index = index_of(vec![(
            image.manifest_descriptor(),
            platform("wasip1", "wasm"),
        )]);
        let report = evaluate(&index, None, &mut mem).unwrap();
        assert!(rejected(&report).contains("no child with platform linux/amd64"));
        assert!(rejected(&report).contains("wasip1/wasm"));
    }

    #[test]
    fn go_base_matches_go() {
        assert_eq!(go_base(b"plugin.wasm"), b"plugin.wasm");
        assert_eq!(go_base(b"./x/plugin.wasm"), b"plugin.wasm");
        assert_eq!(go_base(b"plugin.wasm/"), b"plugin.wasm");
        assert_eq!(go_base(b"///"), b"/");
        assert_eq!(go_base(b""), b".");
    }
}
