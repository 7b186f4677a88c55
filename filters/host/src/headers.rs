//! Header (and trailer, and metadata) maps. Names and values are bytes throughout.

use crate::abi::{self, returned_buffer, MapType};
use crate::{wire, Status};

/// The map exactly as the host serialized it; decode it (borrowing) with [`wire::decode_map`].
/// NOT_FOUND (the map is not available in this callback) stays an error: an adapter deciding on
/// headers must not mistake a missing map for an empty one.
pub fn get_map_raw(map: MapType) -> Result<Vec<u8>, Status> {
    // SAFETY: the out-params are returned_buffer's live locals.
    let bytes = returned_buffer(|data, size| unsafe {
        abi::proxy_get_header_map_pairs(map as u32, data, size)
    })?;
    bytes.ok_or(Status::NOT_FOUND)
}

/// Owned header pairs (name, value), in the host's order.
pub type HeaderPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every pair of the map, in order, duplicates kept. A map the host serialized wrongly is
/// [`Status::SERIALIZATION_FAILURE`].
pub fn get_map(map: MapType) -> Result<HeaderPairs, Status> {
    let raw = get_map_raw(map)?;
    let pairs = wire::decode_map(&raw).ok_or(Status::SERIALIZATION_FAILURE)?;
    Ok(pairs
        .into_iter()
        .map(|(name, value)| (name.to_vec(), value.to_vec()))
        .collect())
}

/// One value of `name` (the host picks; Envoy joins repeated headers with `,`); `None` if absent.
pub fn get_map_value(map: MapType, name: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Status> {
    let name = name.as_ref();
    // SAFETY: pointer and length of a live slice; the out-params are returned_buffer's.
    returned_buffer(|data, size| unsafe {
        abi::proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), data, size)
    })
}

/// Add a value of `name` (keeping existing ones).
pub fn add_map_value(
    map: MapType,
    name: impl AsRef<[u8]>,
    value: impl AsRef<[u8]>,
) -> Result<(), Status> {
    let (name, value) = (name.as_ref(), value.as_ref());
    // SAFETY: pointers and lengths of live slices.
    Status::check(unsafe {
        abi::proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Set `name` to exactly `value` (adding it if absent).
pub fn replace_map_value(
    map: MapType,
    name: impl AsRef<[u8]>,
    value: impl AsRef<[u8]>,
) -> Result<(), Status> {
    let (name, value) = (name.as_ref(), value.as_ref());
    // SAFETY: pointers and lengths of live slices.
    Status::check(unsafe {
        abi::proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Remove every value of `name`. A name that is already absent is not an error (NOT_FOUND from
/// an older host counts as success too).
pub fn remove_map_value(map: MapType, name: impl AsRef<[u8]>) -> Result<(), Status> {
    let name = name.as_ref();
    // SAFETY: pointer and length of a live slice.
    match Status::check(unsafe {
        abi::proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len())
    }) {
        Err(Status::NOT_FOUND) => Ok(()),
        other => other,
    }
}

/// Replace the whole map with `pairs`. A map too large to serialize is [`Status::BAD_ARGUMENT`].
pub fn set_map<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    map: MapType,
    pairs: &[(N, V)],
) -> Result<(), Status> {
    let bytes = wire::encode_map(pairs).ok_or(Status::BAD_ARGUMENT)?;
    // SAFETY: pointer and length of a live buffer.
    Status::check(unsafe {
        abi::proxy_set_header_map_pairs(map as u32, bytes.as_ptr(), bytes.len())
    })
}
