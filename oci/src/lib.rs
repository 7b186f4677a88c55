//! OCI images of proxy-wasm filters for Istio `WasmPlugin` (`url: oci://…`).
//!
//! - [`image`]: build an image reproducibly (same module ⇒ same manifest digest) in Istio's
//!   `compat` or `oci-module` shape, and write it as an OCI image layout.
//! - [`registry`]: push it with `oci-client`; pull one back.
//! - [`istio`]: decide, by the rules of Istio's fetcher, which module Istio would load.
//! - [`report`]: what `meshward image verify` prints, and whether the image passes.
//! - [`wasmplugin`]: render an Istio `WasmPlugin` resource for a filter, a policy and an image.
//!
//! A library: the `meshward image` and `meshward wasmplugin` command lines are meshward-cli's.
//!
//! docs/images.md explains the formats, the digests and Istio's rules.

pub mod credentials;
pub mod image;
pub mod istio;
pub mod media;
pub mod registry;
pub mod report;
pub mod spec;
pub mod wasmplugin;

pub use image::{build, Format, Image};
pub use istio::{Loaded, Outcome, Report, Variant};
pub use registry::{push, verify, ImageRef, PushOutcome, RegistryOptions};
