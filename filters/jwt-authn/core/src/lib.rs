//! Pure decision core of the meshward jwt-authn filter (Istio `RequestAuthentication`, Envoy
//! `jwt_authn` semantics). No proxy-wasm here: the adapter feeds plain request facts and the host
//! clock in, and executes the verdict and JWKS effects that come out.
//!
//! - [`config`]: pluginConfig parsing and validation.
//! - [`jwk`]: JWK/JWKS → verification keys (our own conversion into jwt-simple keys).
//! - [`token`]: compact JWS parsing, claim types, time and audience checks.
//! - [`verify`]: key selection and signature checks.
//! - [`extract`]: token locations.
//! - [`engine`]: the per-request verdict, response shaping, verified-token cache use.
//! - [`remote`]: the remote JWKS state machine and its cross-worker lease.
//! - [`schedule`]: when and what to fetch, who waits for which fetch: a sans-IO state machine
//!   (events in, effects out) the adapter carries out.
//! - [`logtext`]: bounded, escaped text for log lines.

pub mod alg;
pub mod b64;
pub mod cache;
pub mod config;
pub mod duration;
pub mod engine;
pub mod extract;
pub mod host_verify;
pub mod jwk;
/// Shared with the other filters (`meshward_common::logtext`).
pub use meshward_common::logtext;
pub mod remote;
pub mod roca;
pub mod schedule;
pub mod status;
pub mod token;
pub mod verify;

pub use config::Config;
pub use engine::{Authenticator, Denial, KeyLookup, Keys, Request, Stats, Verdict};
pub use status::AuthError;
