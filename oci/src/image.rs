//! Building a filter image in memory, reproducibly, and writing it as an OCI image layout.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use flate2::{Compression, GzBuilder};

use crate::media;
use crate::spec::{
    sha256_digest, sha256_hex, Descriptor, ImageConfig, ImageManifest, Index, RootFs,
    WasmRuntimeConfig,
};

/// The two image shapes Istio's fetcher accepts that we produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OCI image whose single (hence last) layer is a tar+gzip holding `plugin.wasm`.
    Compat,
    /// Two layers: the runtime config and the raw module (`vnd.module.wasm.content.layer.v1+wasm`).
    OciModule,
}

/// gzip's "unknown" OS byte: the same on every build machine.
const GZIP_OS_UNKNOWN: u8 = 255;
/// A fixed level: the compressed bytes (hence the layer digest) depend on it.
const GZIP_LEVEL: u32 = 9;
/// Platform of the compat image config. Istio reads no config for a plain manifest; when its
/// client (go-containerregistry) has to pick a platform from an index it picks linux/amd64, so
/// that is the one value consistent with Istio wherever the image ends up.
const CONFIG_OS: &str = "linux";
const CONFIG_ARCHITECTURE: &str = "amd64";

/// One blob of an image: its descriptor and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub descriptor: Descriptor,
    pub data: Vec<u8>,
}

impl Blob {
    fn new(descriptor: Descriptor, data: Vec<u8>) -> Self {
        Blob { descriptor, data }
    }
}

/// A built image: config, layers and the exact manifest bytes that get pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub format: Format,
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// The serialized manifest; its sha256 is the manifest digest.
    pub manifest: Vec<u8>,
    /// sha256 (hex) of the module itself.
    pub module_sha256: String,
    pub module_size: usize,
}

impl Image {
    /// `sha256:<hex>` of the manifest bytes: what a registry reports and `@sha256:` pins.
    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest)
    }

    /// The value for a WasmPlugin's `sha256` field when `url` is `oci://…`: Istio compares it
    /// with the hex manifest digest (not the module's hash).
    pub fn wasmplugin_sha256(&self) -> String {
        sha256_hex(&self.manifest)
    }

    /// Descriptor of the manifest (for an index or a layout's `index.json`).
    pub fn manifest_descriptor(&self) -> Descriptor {
        Descriptor::of(media::OCI_MANIFEST, &self.manifest)
    }

    /// Every distinct blob (config first, then layers), each once.
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut out: Vec<&Blob> = Vec::new();
        for blob in std::iter::once(&self.config).chain(self.layers.iter()) {
            if !out
                .iter()
                .any(|b| b.descriptor.digest == blob.descriptor.digest)
            {
                out.push(blob);
            }
        }
        out
    }

    /// Writes an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) into `dir`.
    ///
    /// `tag` becomes the `org.opencontainers.image.ref.name` annotation, so that e.g.
    /// `skopeo copy oci:DIR:TAG …` finds the image. Existing blobs are overwritten; an existing
    /// `index.json` is replaced (the layout then holds exactly this image).
    pub fn write_layout(&self, dir: &Path, tag: Option<&str>) -> Result<()> {
        let blob_dir = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blob_dir)
            .with_context(|| format!("creating {}", blob_dir.display()))?;
        let manifest_blob = Blob::new(self.manifest_descriptor(), self.manifest.clone());
        for blob in self
            .blobs()
            .into_iter()
            .chain(std::iter::once(&manifest_blob))
        {
            let hex = blob
                .descriptor
                .digest
                .strip_prefix("sha256:")
                .context("blob digest without sha256: prefix")?;
            let path = blob_dir.join(hex);
            fs::write(&path, &blob.data).with_context(|| format!("writing {}", path.display()))?;
        }
        let mut entry = self.manifest_descriptor();
        if let Some(tag) = tag {
            entry = entry.annotated(media::REF_NAME_ANNOTATION, tag);
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(media::OCI_INDEX.to_owned()),
            manifests: vec![entry],
        };
        write_json(&dir.join("index.json"), &index)?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .with_context(|| format!("writing {}/oci-layout", dir.display()))?;
        Ok(())
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value)?;
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Checks the 8-byte module header (magic + version 1): refuse to package something that is
/// not a core wasm module, since Istio would only notice on the proxy.
pub fn check_module_header(wasm: &[u8]) -> Result<()> {
    match wasm.get(..8) {
        Some(b"\0asm\x01\0\0\0") => Ok(()),
        Some(header) if header.starts_with(b"\0asm") => bail!(
            "not a core wasm module (version bytes {:02x?}; components are not loadable by Envoy)",
            header.get(4..).unwrap_or_default()
        ),
        _ => bail!("not a wasm module (missing the \\0asm magic)"),
    }
}

/// Builds the image for `wasm` in the given format. Pure function of its inputs.
pub fn build(wasm: &[u8], format: Format) -> Result<Image> {
    check_module_header(wasm)?;
    let (config, layers, annotations) = match format {
        Format::Compat => compat_parts(wasm)?,
        Format::OciModule => oci_module_parts(wasm)?,
    };
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_owned()),
        config: Some(config.descriptor.clone()),
        layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
        annotations,
    };
    Ok(Image {
        format,
        config,
        layers,
        manifest: serde_json::to_vec(&manifest)?,
        module_sha256: sha256_hex(wasm),
        module_size: wasm.len(),
    })
}

type Parts = (Blob, Vec<Blob>, Option<BTreeMap<String, String>>);

fn compat_parts(wasm: &[u8]) -> Result<Parts> {
    let tar = plugin_tar(wasm)?;
    let diff_id = sha256_digest(&tar);
    let layer_bytes = gzip(&tar)?;
    let layer = Blob::new(
        Descriptor::of(media::OCI_LAYER_TAR_GZIP, &layer_bytes),
        layer_bytes,
    );
    let config = ImageConfig {
        architecture: CONFIG_ARCHITECTURE.to_owned(),
        os: CONFIG_OS.to_owned(),
        config: BTreeMap::new(),
        rootfs: RootFs {
            kind: "layers".to_owned(),
            diff_ids: vec![diff_id],
        },
    };
    let config_bytes = serde_json::to_vec(&config)?;
    let config = Blob::new(
        Descriptor::of(media::OCI_IMAGE_CONFIG, &config_bytes),
        config_bytes,
    );
    let annotations = BTreeMap::from([(media::VARIANT_ANNOTATION.to_owned(), "compat".to_owned())]);
    Ok((config, vec![layer], Some(annotations)))
}

fn oci_module_parts(wasm: &[u8]) -> Result<Parts> {
    let runtime = serde_json::to_vec(&WasmRuntimeConfig {
        kind: "envoy_proxy".to_owned(),
    })?;
    // The runtime config is both the manifest config and the first layer, as in solo.io's
    // spec: Istio demands exactly two layers, one of them the module.
    let config = Blob::new(
        Descriptor::of(media::WASM_MODULE_CONFIG, &runtime),
        runtime.clone(),
    );
    let config_layer = Blob::new(
        Descriptor::of(media::WASM_MODULE_CONFIG, &runtime)
            .annotated(media::TITLE_ANNOTATION, "runtime-config.json"),
        runtime,
    );
    let module_layer = Blob::new(
        Descriptor::of(media::WASM_MODULE_LAYER, wasm)
            .annotated(media::TITLE_ANNOTATION, media::PLUGIN_FILE_NAME),
        wasm.to_vec(),
    );
    Ok((config, vec![config_layer, module_layer], None))
}

/// A tar with the single entry `plugin.wasm`: fixed mode, owner, and time.
fn plugin_tar(wasm: &[u8]) -> Result<Vec<u8>> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(wasm.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    let mut builder = tar::Builder::new(Vec::new());
    // append_data sets the path and the checksum.
    builder.append_data(&mut header, media::PLUGIN_FILE_NAME, wasm)?;
    Ok(builder.into_inner()?)
}

/// gzip with a fixed header (no name, no comment, mtime 0, OS "unknown") and level.
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNKNOWN)
        .write(Vec::new(), Compression::new(GZIP_LEVEL));
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn gzip_header_carries_no_name_time_or_host_os() {
        let gz = gzip(b"hello").unwrap();
        // ID1 ID2 CM FLG MTIME(4) XFL OS
        assert_eq!(
            &gz[..4],
            &[0x1f, 0x8b, 8, 0],
            "no FNAME/FCOMMENT/FEXTRA flags"
        );
        assert_eq!(&gz[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(gz[9], GZIP_OS_UNKNOWN);
    }

    #[test]
    fn tar_entry_has_fixed_metadata() {
        let tar = plugin_tar(EMPTY_MODULE).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<_> = archive.entries().unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(entries.len(), 1);
        let h = entries[0].header();
        assert_eq!(&*entries[0].path_bytes(), b"plugin.wasm");
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.size().unwrap(), 8);
        assert!(h.entry_type().is_file());
    }

    #[test]
    fn compat_manifest_has_a_last_tar_gzip_layer_and_a_linux_amd64_config() {
        let image = build(EMPTY_MODULE, Format::Compat).unwrap();
        let m: ImageManifest = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(m.media_type.as_deref(), Some(media::OCI_MANIFEST));
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].media_type, media::OCI_LAYER_TAR_GZIP);
        let config: ImageConfig = serde_json::from_slice(&image.config.data).unwrap();
        assert_eq!(
            (config.os.as_str(), config.architecture.as_str()),
            ("linux", "amd64")
        );
        // The diff ID is the digest of the uncompressed layer.
        let mut tar = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(image.layers[0].data.as_slice()),
            &mut tar,
        )
        .unwrap();
        assert_eq!(config.rootfs.diff_ids, vec![sha256_digest(&tar)]);
        let text = String::from_utf8(image.config.data.clone()).unwrap();
        assert!(
            !text.contains("created"),
            "no timestamps in the config: {text}"
        );
    }

    #[test]
    fn oci_module_has_two_layers_one_the_raw_module() {
        let image = build(EMPTY_MODULE, Format::OciModule).unwrap();
        let m: ImageManifest = serde_json::from_slice(&image.manifest).unwrap();
        let types: Vec<&str> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
        assert_eq!(types, [media::WASM_MODULE_CONFIG, media::WASM_MODULE_LAYER]);
        assert_eq!(image.layers[1].data, EMPTY_MODULE);
        assert_eq!(m.config.unwrap().media_type, media::WASM_MODULE_CONFIG);
        // The config blob is shared with the first layer: stored once.
        assert_eq!(image.blobs().len(), 2);
    }

    #[test]
    fn same_module_same_digest_different_module_different_digest() {
        for format in [Format::Compat, Format::OciModule] {
            let a = build(EMPTY_MODULE, format).unwrap();
            let b = build(EMPTY_MODULE, format).unwrap();
            assert_eq!(a.manifest_digest(), b.manifest_digest());
            let mut other = EMPTY_MODULE.to_vec();
            other.extend_from_slice(&[0, 1, 0]); // a custom section: still a valid module
            let c = build(&other, format).unwrap();
            assert_ne!(a.manifest_digest(), c.manifest_digest());
        }
        let compat = build(EMPTY_MODULE, Format::Compat).unwrap();
        let module = build(EMPTY_MODULE, Format::OciModule).unwrap();
        assert_ne!(compat.manifest_digest(), module.manifest_digest());
    }

    #[test]
    fn wasmplugin_sha256_is_the_manifest_digest_hex() {
        let image = build(EMPTY_MODULE, Format::Compat).unwrap();
        assert_eq!(
            format!("sha256:{}", image.wasmplugin_sha256()),
            image.manifest_digest()
        );
        assert_ne!(image.wasmplugin_sha256(), image.module_sha256);
        assert_eq!(image.module_sha256, sha256_hex(EMPTY_MODULE));
    }

    #[test]
    fn refuses_non_modules() {
        assert!(build(b"hello world!", Format::Compat).is_err());
        assert!(build(b"\0asm", Format::Compat).is_err());
        // A component (version 0x0d, layer 1) is not a core module.
        assert!(build(b"\0asm\x0d\0\x01\0", Format::Compat).is_err());
    }

    #[test]
    fn layout_holds_every_blob_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let image = build(EMPTY_MODULE, Format::OciModule).unwrap();
        image.write_layout(dir.path(), Some("v1")).unwrap();
        let index: Index =
            serde_json::from_slice(&fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index.manifests.len(), 1);
        assert_eq!(index.manifests[0].digest, image.manifest_digest());
        let read =
            |digest: &str| fs::read(dir.path().join("blobs/sha256").join(&digest[7..])).unwrap();
        assert_eq!(read(&image.manifest_digest()), image.manifest);
        for blob in image.blobs() {
            assert_eq!(
                sha256_digest(&read(&blob.descriptor.digest)),
                blob.descriptor.digest
            );
        }
        assert!(dir.path().join("oci-layout").is_file());
    }
}
