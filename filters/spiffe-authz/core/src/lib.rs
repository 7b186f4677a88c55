//! Pure decision core of the spiffe-authz filter: Istio `AuthorizationPolicy` semantics on the
//! peer's SPIFFE ID (and the request's L7 attributes), with no proxy-wasm types.
//!
//! - [`config`]: the pluginConfig types (serde, camelCase, unknown fields rejected).
//! - [`Config`]: [`Config::parse`] validates and compiles the pluginConfig (once), and
//!   [`decide`] goes from [`RequestFacts`] (the host's, or [`PlainFacts`]) to a [`Decision`]
//!   (per request).
//! - [`Needs`]: what the compiled policies read, so the adapter reads nothing else.
//! - [`explain`]: for `meshward explain`, the same verdict with every policy's and rule's trace
//!   (never called by the filter).

pub mod config;
mod explain;
mod facts;
mod matchers;
mod policy;

pub use config::{Action, RawConfig};
pub use explain::{explain, Explanation, Failure, PolicyTrace, RuleTrace};
pub use facts::{Needs, PlainFacts, RequestFacts};
pub use policy::{decide, Config, Decision, DenyReason, Protocol, SUPPORTED_WHEN_KEYS};

/// The body of a 403, as Envoy's RBAC filter sends it.
pub const DENY_BODY: &str = "RBAC: access denied";
/// The body of a 400 for a refused path, as Envoy's codec sends it.
pub const BAD_REQUEST_BODY: &str = "Bad Request";

#[cfg(test)]
mod tests;
