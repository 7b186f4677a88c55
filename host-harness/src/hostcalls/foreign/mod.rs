//! The foreign functions Envoy 1.40 registers (`proxy_call_foreign_function` answers `NotFound`
//! for every other name, as Envoy does for a name it never registered). Each answers as Envoy's
//! does, or the call is refused loudly ([`refusal`]) where the effect is not modelled.

mod envoy_ext;
mod verify_signature;
mod zlib;

use crate::Status;

/// A foreign function: the status it returns, and the bytes it handed to `alloc_result` (`None`
/// when it never allocated a result).
type Foreign = fn(&[u8]) -> (Status, Option<Vec<u8>>);

/// The modelled foreign function called `name`.
pub(super) fn lookup(name: &[u8]) -> Option<Foreign> {
    match name {
        b"verify_signature" => Some(verify_signature::call),
        b"compress" => Some(zlib::compress),
        b"uncompress" => Some(zlib::uncompress),
        b"clear_route_cache" => Some(envoy_ext::clear_route_cache),
        b"set_envoy_filter_state" => Some(envoy_ext::set_envoy_filter_state),
        b"declare_property" => Some(envoy_ext::declare_property),
        b"sign" => Some(envoy_ext::sign),
        _ => None,
    }
}

/// The error to trap with when the harness will not answer a call of `name` as Envoy 1.40
/// would (it registers the function, but its effect here is not modelled).
pub(super) fn refusal(name: &[u8], arguments: &[u8]) -> Option<String> {
    envoy_ext::refusal(name, arguments)
}
