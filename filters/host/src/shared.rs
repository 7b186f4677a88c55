//! Shared data (a key-value store per VM id, with compare-and-swap) and shared queues.

use crate::abi::{self, returned_buffer};
use crate::Status;

/// The value of `key` and its CAS token; `None` if the key is absent.
pub fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let mut cas = 0;
    // SAFETY: pointer and length of a live str; the out-params are live locals.
    let value = returned_buffer(|data, size| unsafe {
        abi::proxy_get_shared_data(key.as_ptr(), key.len(), data, size, &mut cas)
    })?;
    Ok(value.map(|value| (value, cas)))
}

/// Store `value` under `key`. With `cas` ≠ 0 the write only happens if the key's CAS token is
/// still `cas`; otherwise the result is `Err(Status::CAS_MISMATCH)` and the caller re-reads and
/// retries. `cas` = 0 writes unconditionally (the only way to create a key: a missing key has no
/// token).
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live buffers.
    Status::check(unsafe {
        abi::proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Create (or open) the queue `name` of this VM; its id.
pub fn register_shared_queue(name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: pointer and length of a live str; the out-param is a live local.
    Status::check(unsafe { abi::proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// The id of the queue `name` registered by VM `vm_id`; `None` if there is none.
pub fn resolve_shared_queue(vm_id: &str, name: &str) -> Result<Option<u32>, Status> {
    let mut id = 0;
    // SAFETY: pointers and lengths of live strs; the out-param is a live local.
    match Status::check(unsafe {
        abi::proxy_resolve_shared_queue(
            vm_id.as_ptr(),
            vm_id.len(),
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    }) {
        Ok(()) => Ok(Some(id)),
        Err(Status::NOT_FOUND) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Append `value` to the queue.
pub fn enqueue_shared_queue(queue_id: u32, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointer and length of a live slice.
    Status::check(unsafe { abi::proxy_enqueue_shared_queue(queue_id, value.as_ptr(), value.len()) })
}

/// The front item of the queue; `None` when the queue is empty. An unknown queue is
/// `Err(Status::NOT_FOUND)`.
pub fn dequeue_shared_queue(queue_id: u32) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: the out-params are returned_buffer's live locals.
    let result = returned_buffer(|data, size| unsafe {
        abi::proxy_dequeue_shared_queue(queue_id, data, size)
    });
    match result {
        // returned_buffer maps NOT_FOUND to None; here NOT_FOUND means the queue is unknown.
        Ok(None) => Err(Status::NOT_FOUND),
        Err(Status::EMPTY) => Ok(None),
        other => other,
    }
}
