//! Guest memory as host calls reach it: reads and writes that answer `InvalidMemoryAccess`
//! instead of trapping, and buffers handed to the guest through its own allocator.

use wasmtime::Caller;

use super::VmState;
use crate::Status;

/// Reads guest memory; `InvalidMemoryAccess` when out of bounds.
pub(crate) fn mem_read(c: &Caller<'_, VmState>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let memory = c.data().vm().memory;
    let data = memory.data(c);
    let start = ptr as u32 as usize;
    let end = start
        .checked_add(len as u32 as usize)
        .ok_or(Status::INVALID_MEMORY_ACCESS)?;
    data.get(start..end)
        .map(|s| s.to_vec())
        .ok_or(Status::INVALID_MEMORY_ACCESS)
}

pub(crate) fn mem_write(c: &mut Caller<'_, VmState>, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let memory = c.data().vm().memory;
    let data = memory.data_mut(&mut *c);
    let start = ptr as u32 as usize;
    let end = start
        .checked_add(bytes.len())
        .ok_or(Status::INVALID_MEMORY_ACCESS)?;
    data.get_mut(start..end)
        .ok_or(Status::INVALID_MEMORY_ACCESS)?
        .copy_from_slice(bytes);
    Ok(())
}

/// Host → guest buffer: allocate exactly `len` bytes with the guest allocator, copy, and write
/// pointer and size (u32 LE) to the out-params. Empty data: pointer 0, size 0, no allocation
/// (cpp-host `copyToPointerSize`). A trap in the allocator propagates.
pub(crate) fn copy_out(
    c: &mut Caller<'_, VmState>,
    bytes: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> wasmtime::Result<Result<(), Status>> {
    let mut ptr: u32 = 0;
    if !bytes.is_empty() {
        let alloc = c.data().vm().alloc.clone();
        ptr = alloc.call(&mut *c, bytes.len() as i32)? as u32;
        if ptr == 0 || mem_write(c, ptr as i32, bytes).is_err() {
            return Ok(Err(Status::INVALID_MEMORY_ACCESS));
        }
    }
    if mem_write(c, ptr_ptr, &ptr.to_le_bytes()).is_err()
        || mem_write(c, size_ptr, &(bytes.len() as u32).to_le_bytes()).is_err()
    {
        return Ok(Err(Status::INVALID_MEMORY_ACCESS));
    }
    Ok(Ok(()))
}
