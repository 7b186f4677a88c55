//! The foreign functions Envoy 1.40 registers that the harness models (`proxy_call_foreign_function`
//! answers `NotFound` for every other name, as Envoy does for a name it never registered).

mod verify_signature;

use crate::Status;

/// A foreign function: the status it returns, and the bytes it handed to `alloc_result` (`None`
/// when it never allocated a result).
type Foreign = fn(&[u8]) -> (Status, Option<Vec<u8>>);

/// The modelled foreign function called `name`.
pub(super) fn lookup(name: &[u8]) -> Option<Foreign> {
    match name {
        b"verify_signature" => Some(verify_signature::call),
        _ => None,
    }
}
