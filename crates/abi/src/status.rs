//! `proxy_status_t`: what every host call returns.

use std::fmt;

/// A host status code. Kept as the raw `u32` the host returned: a value this crate does not know
/// is still representable (the SDK's `Status` enum makes such a value undefined behaviour).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    pub const OK: Status = Status(0);
    pub const NOT_FOUND: Status = Status(1);
    pub const BAD_ARGUMENT: Status = Status(2);
    /// Also returned by this crate when the host hands over a serialized map it cannot decode.
    pub const SERIALIZATION_FAILURE: Status = Status(3);
    pub const PARSE_FAILURE: Status = Status(4);
    /// Not in the ABI 0.2.1 spec; proxy-wasm-cpp-host (Envoy) defines it.
    pub const BAD_EXPRESSION: Status = Status(5);
    pub const INVALID_MEMORY_ACCESS: Status = Status(6);
    pub const EMPTY: Status = Status(7);
    pub const CAS_MISMATCH: Status = Status(8);
    /// Not in the ABI 0.2.1 spec; proxy-wasm-cpp-host (Envoy) defines it.
    pub const RESULT_MISMATCH: Status = Status(9);
    pub const INTERNAL_FAILURE: Status = Status(10);
    /// Not in the ABI 0.2.1 spec; proxy-wasm-cpp-host (Envoy) defines it.
    pub const BROKEN_CONNECTION: Status = Status(11);
    /// Also what every call returns in native (non-wasm32) builds, which have no host.
    pub const UNIMPLEMENTED: Status = Status(12);

    /// The status's name, if it is one the spec or Envoy defines.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "Ok",
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            5 => "BadExpression",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            9 => "ResultMismatch",
            10 => "InternalFailure",
            11 => "BrokenConnection",
            12 => "Unimplemented",
            _ => return None,
        })
    }

    /// `Ok(())` for OK, the status otherwise.
    pub const fn check(raw: u32) -> Result<(), Status> {
        if raw == Self::OK.0 {
            Ok(())
        } else {
            Err(Status(raw))
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "unknown status {}", self.0),
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({self})")
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_known_statuses_and_keeps_unknown_ones() {
        assert_eq!(Status::NOT_FOUND.to_string(), "NotFound (1)");
        assert_eq!(Status::CAS_MISMATCH.to_string(), "CasMismatch (8)");
        assert_eq!(
            Status::BROKEN_CONNECTION.to_string(),
            "BrokenConnection (11)"
        );
        assert_eq!(Status(13).to_string(), "unknown status 13");
        assert_eq!(Status(u32::MAX).name(), None);
        assert_eq!(format!("{:?}", Status::EMPTY), "Status(Empty (7))");
    }

    #[test]
    fn every_code_up_to_unimplemented_is_named_distinctly() {
        let names: Vec<_> = (0..=12).map(|c| Status(c).name().unwrap()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn check_maps_only_ok_to_ok() {
        assert_eq!(Status::check(0), Ok(()));
        assert_eq!(Status::check(1), Err(Status::NOT_FOUND));
        assert_eq!(Status::check(99), Err(Status(99)));
    }
}
