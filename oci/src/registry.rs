//! Talking to a registry with `oci-client`: push an [`Image`], pull one back for [`istio`].
//!
//! oci-client is async; each public function here runs its own current-thread runtime, so
//! callers (the CLI, tests) stay synchronous.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::credentials;
use crate::image::Image;
use crate::istio::{self, Content, Report};
use crate::media;
use crate::spec::Descriptor;

/// Manifest types we ask for when pulling, the set Istio's client accepts (minus schema 1).
const ACCEPTED_MANIFESTS: &[&str] = &[
    media::OCI_MANIFEST,
    media::DOCKER_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST_LIST,
];

/// An image reference as written in a WasmPlugin `url`: `oci://HOST/REPO:TAG` or
/// `oci://HOST/REPO@sha256:…` (the `oci://` prefix is optional, as it is for Istio).
#[derive(Debug, Clone)]
pub struct ImageRef(Reference);

impl ImageRef {
    pub fn parse(url: &str) -> Result<Self> {
        let bare = url.strip_prefix("oci://").unwrap_or(url);
        if bare.contains("://") {
            bail!("{url}: only oci:// image URLs are images (Istio fetches http(s):// as raw modules)");
        }
        let reference: Reference = bare
            .parse()
            .with_context(|| format!("{url} is not an image reference"))?;
        Ok(ImageRef(reference))
    }

    /// The registry as written (`127.0.0.1:5000`, `docker.io`).
    pub fn registry(&self) -> &str {
        self.0.registry()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.0.digest()
    }

    /// The same repository pinned to `digest`: the URL form that needs no `sha256` field.
    pub fn pinned(&self, digest: &str) -> ImageRef {
        ImageRef(Reference::with_digest(
            self.0.registry().to_owned(),
            self.0.repository().to_owned(),
            digest.to_owned(),
        ))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}", self.0.whole())
    }
}

/// How to reach and authenticate to the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Plain HTTP (local registries).
    pub insecure: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Docker config file to read credentials from; `None` = the docker CLI's default lookup.
    pub docker_config: Option<PathBuf>,
}

impl RegistryOptions {
    fn auth(&self, reference: &ImageRef) -> Result<RegistryAuth> {
        let path = self
            .docker_config
            .clone()
            .or_else(credentials::default_docker_config_path);
        credentials::resolve(
            reference.registry(),
            self.username.as_deref(),
            self.password.as_deref(),
            path.as_deref(),
        )
    }

    fn client(&self) -> Client {
        Client::new(ClientConfig {
            protocol: if self.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            ..ClientConfig::default()
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOutcome {
    /// `sha256:<hex>` the registry reports for the tag after the push.
    pub registry_digest: String,
    /// Blobs uploaded (the others were already there).
    pub uploaded_blobs: usize,
}

/// Pushes `image` (blobs, then the exact manifest bytes) to `reference`.
pub fn push(image: &Image, reference: &ImageRef, options: &RegistryOptions) -> Result<PushOutcome> {
    let auth = options.auth(reference)?;
    let client = options.client();
    let r = &reference.0;
    runtime()?.block_on(async {
        client
            .auth(r, &auth, RegistryOperation::Push)
            .await
            .with_context(|| format!("authenticating to {}", r.registry()))?;
        let mut uploaded_blobs = 0;
        for blob in image.blobs() {
            let digest = &blob.descriptor.digest;
            if client.blob_exists(r, digest).await.unwrap_or(false) {
                continue;
            }
            client
                .push_blob(r, blob.data.clone(), digest)
                .await
                .with_context(|| format!("uploading blob {digest}"))?;
            uploaded_blobs += 1;
        }
        let content_type = media::OCI_MANIFEST
            .parse()
            .context("manifest media type as a header value")?;
        client
            .push_manifest_raw(r, image.manifest.clone(), content_type)
            .await
            .with_context(|| format!("uploading the manifest to {reference}"))?;
        let registry_digest = client
            .fetch_manifest_digest(r, &auth)
            .await
            .with_context(|| format!("reading back the digest of {reference}"))?;
        if registry_digest != image.manifest_digest() {
            bail!(
                "the registry reports {registry_digest} for {reference}, not the pushed {}",
                image.manifest_digest()
            );
        }
        Ok(PushOutcome {
            registry_digest,
            uploaded_blobs,
        })
    })
}

/// Pulls `reference` and decides, as Istio would, which module it loads.
///
/// `expected_sha256` is the WasmPlugin `sha256` field; when it is absent and the reference
/// pins a digest, Istio checks against that digest, and so does this.
pub fn verify(
    reference: &ImageRef,
    options: &RegistryOptions,
    expected_sha256: Option<&str>,
) -> Result<Report> {
    let auth = options.auth(reference)?;
    let client = options.client();
    let rt = runtime()?;
    let r = &reference.0;
    let (top, _digest) = rt
        .block_on(client.pull_manifest_raw(r, &auth, ACCEPTED_MANIFESTS))
        .with_context(|| format!("could not fetch manifest of {reference}"))?;
    let expected = expected_sha256.or_else(|| r.digest());
    let mut content = RegistryContent {
        rt: &rt,
        client: &client,
        reference: r,
    };
    istio::evaluate(&top, expected, &mut content)
}

struct RegistryContent<'a> {
    rt: &'a tokio::runtime::Runtime,
    client: &'a Client,
    reference: &'a Reference,
}

impl Content for RegistryContent<'_> {
    fn manifest(&mut self, descriptor: &Descriptor) -> Result<Vec<u8>> {
        let child = self.reference.clone_with_digest(descriptor.digest.clone());
        let (bytes, _) = self
            .rt
            .block_on(self.client.pull_manifest_raw(
                &child,
                &RegistryAuth::Anonymous, // already stored for this registry by the first pull
                ACCEPTED_MANIFESTS,
            ))
            .with_context(|| format!("fetching manifest {}", descriptor.digest))?;
        Ok(bytes.to_vec())
    }

    fn blob(&mut self, descriptor: &Descriptor) -> Result<Vec<u8>> {
        let oci = OciDescriptor {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest.clone(),
            size: i64::try_from(descriptor.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let mut out = Vec::new();
        // pull_blob checks the bytes against the digest.
        self.rt
            .block_on(self.client.pull_blob(self.reference, &oci, &mut out))
            .with_context(|| format!("fetching blob {}", descriptor.digest))?;
        Ok(out)
    }
}
