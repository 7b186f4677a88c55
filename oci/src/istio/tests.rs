//! Istio's fetcher rules, one case per rule (the tests of [`super`]).

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
