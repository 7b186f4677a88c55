//! Foreign functions (`proxy_call_foreign_function`): functions a host registers beyond the ABI,
//! such as Envoy's `verify_signature`.

use crate::abi::{self, returned_buffer};
use crate::Status;

/// Call the host's foreign function `name` with `arguments`: its result bytes (empty when it handed
/// back none), `Ok(None)` when the host has no function of that name (`NotFound`), or the status
/// it returned.
pub fn call_foreign_function(name: &str, arguments: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: pointers and lengths of live buffers; the out-params are returned_buffer's.
    returned_buffer(|data, size| unsafe {
        abi::proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            abi::ptr_or_null(arguments),
            arguments.len(),
            data,
            size,
        )
    })
}
