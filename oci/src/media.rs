//! Media types, and the names Istio's fetcher (`pkg/wasm/imagefetcher.go`) matches on.

/// OCI image manifest (what we push, in both formats).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-platform); Istio resolves it to the linux/amd64 child.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest: Istio takes its Docker-only path for these.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list: resolved like an OCI index.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// OCI image config (the `compat` format's config).
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// gzip'd tar layer: the only layer type the OCI `compat` path accepts.
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// gzip'd tar layer, Docker flavour: the only layer type the Docker path accepts.
pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The raw module layer of solo.io's "oci" Wasm image variant.
pub const WASM_MODULE_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The runtime config of solo.io's "oci" Wasm image variant.
pub const WASM_MODULE_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";

/// The file Istio looks for in a `compat` layer (it compares the entry's base name).
pub const PLUGIN_FILE_NAME: &str = "plugin.wasm";
/// Annotation the compat spec asks for on OCI-typed compat images (Istio itself ignores it).
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";
/// OCI pre-defined annotation naming a layer's file, used by ORAS-style tools.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
/// OCI image-layout annotation naming a manifest in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
