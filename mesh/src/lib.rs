//! Istio security resources as people keep them in Git, for `meshward test`, `explain` and
//! `lint`: [`load`] reads YAML files and directories, [`select`] decides which resources apply to
//! a workload exactly as istiod does, and [`compile`] turns them into the meshward filter chain
//! (jwt-authn, spiffe-authz) and the listener's mTLS mode that the harness and Envoy then run;
//! [`native_rbac`] renders AuthorizationPolicies (or a spiffe-authz config) as the RBAC filters
//! istiod would emit, and [`native_sidecar`] a whole inbound port as istiod gives it to a sidecar
//! (filter chains, path handling, `jwt_authn`, RBAC) for the native differential; [`deploy`] says what the chain deploys as (`meshward wasmplugin --from-istio`).
//!
//! No wasm, no I/O beyond reading the files: the decisions themselves are the filters'.

pub mod compile;
pub mod deploy;
pub mod explain;
pub mod lint;
pub mod load;
pub mod native_rbac;
pub mod native_sidecar;
pub mod resource;
pub mod select;
pub mod support;

pub use compile::{compile, Compiled, CompiledPolicy, CustomAnswer, JwksSource};
pub use deploy::{deployment, CustomPolicies, Deployment};
pub use explain::{explain_request, RequestFacts};
pub use lint::{lint, Finding, Severity};
pub use load::{load, Loaded};
pub use native_rbac::{network_rbac_filters, network_rbac_yaml};
pub use resource::{Kind, MtlsMode, Resource, ResourceId};
pub use select::{select, MeshSettings, PortMode, Selection, Workload};
