//! OCI images of proxy-wasm filters (Istio WasmPlugin).
