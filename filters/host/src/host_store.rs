//! [`HostStore`]: the one implementation of `meshward_common::shared_store::SharedStore` over the
//! host's shared data, for every filter core that keeps state across workers.

use meshward_common::shared_store::{SetError, SharedStore, StoreError, Stored};

use crate::{current_time_nanos, get_shared_data, set_shared_data, Status};

/// Envoy's shared data, with host statuses passed on to the core as values (the core decides what
/// a failure means; meshward cores fail closed).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&mut self, key: &str) -> Result<Option<Stored>, StoreError> {
        match get_shared_data(key) {
            Ok(found) => Ok(found.map(|(value, cas)| Stored { value, cas })),
            Err(status) => Err(StoreError::Status(status.0)),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        match set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(Status::CAS_MISMATCH) => Err(SetError::CasMismatch),
            Err(status) => Err(SetError::Status(status.0)),
        }
    }

    fn creation_cas(&mut self) -> u32 {
        let mut b = [0u8; 4];
        match getrandom::fill(&mut b) {
            Ok(()) => u32::from_le_bytes(b).max(1),
            // Without randomness, the low bits of the clock are still unlikely to equal a cas.
            Err(_) => current_time_nanos().map_or(0x5bd1_e995, |t| (t as u32).max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_statuses_are_passed_on() {
        // Natively every host call answers UNIMPLEMENTED.
        let mut store = HostStore;
        assert_eq!(
            store.get("k"),
            Err(StoreError::Status(Status::UNIMPLEMENTED.0))
        );
        assert_eq!(
            store.set("k", b"v", 3),
            Err(SetError::Status(Status::UNIMPLEMENTED.0))
        );
        assert_ne!(store.creation_cas(), 0);
    }
}
