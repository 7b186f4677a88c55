//! Which proxy-wasm callbacks a module handles: [`callbacks!`](crate::callbacks) writes their
//! names into the module's `meshward.callbacks` custom section, and scripts/build-wasm.sh
//! (`meshward-trim-callbacks`) then removes the SDK's exports of every other event callback, so
//! that Envoy does not enter the VM for callbacks that would do nothing.

/// Lists the event callbacks this module handles (export names, e.g.
/// `"proxy_on_request_headers"`), once per entry point, next to the contexts that implement them.
/// A callback left out is never called by Envoy once the module is trimmed: list every one the
/// contexts override (`on_http_response_headers` ⇒ `"proxy_on_response_headers"`, `on_tick` ⇒
/// `"proxy_on_tick"`, …).
#[macro_export]
macro_rules! callbacks {
    ($($name:literal),+ $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            const LIST: &str = concat!($($name, "\n"),+);
            #[link_section = "meshward.callbacks"]
            #[used]
            static CALLBACKS: [u8; LIST.len()] = $crate::section_bytes::<{ LIST.len() }>(LIST);
        };
    };
}

/// `text` as an array of exactly `N` bytes (`N == text.len()`), for a custom section's static.
/// Evaluated at compile time only: a wrong `N` is a build error, never a panic in a filter.
#[doc(hidden)]
pub const fn section_bytes<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let mut src = text.as_bytes();
    let mut dst: &mut [u8] = &mut out;
    // Slice patterns rather than indexing: the filter crates deny `indexing_slicing`.
    while let ([byte, src_rest @ ..], [slot, dst_rest @ ..]) = (src, dst) {
        *slot = *byte;
        src = src_rest;
        dst = dst_rest;
    }
    out
}
