//! The filter (wasm only: it calls the host's `proxy_get_property` directly).

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::{parse_spec, render};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PropsRoot) });
}}

// The raw import rather than the SDK's `get_property`: that one panics on any status but Ok and
// NotFound, and always sends dotted segments; the report needs every status and raw paths.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
}

fn get(path: &[u8]) -> Result<Option<Vec<u8>>, u32> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a buffer it allocated with this module's allocator (or null) and
    // its size, as the SDK's own `get_property` assumes.
    unsafe {
        let status = proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size);
        if status != 0 {
            return Err(status);
        }
        Ok((!data.is_null()).then(|| Vec::from_raw_parts(data, size, size)))
    }
}

fn report(spec: &str) -> String {
    let (path, form) = parse_spec(spec);
    render(get(&path), form)
}

struct PropsRoot;

impl Context for PropsRoot {}

impl RootContext for PropsRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Props::default()))
    }
}

#[derive(Default)]
struct Props {
    /// `(k, spec)` to read in the response phase (request headers are gone by then in Envoy).
    later: Vec<(String, String)>,
    /// Response headers to add first.
    add: Vec<(String, String)>,
}

impl Context for Props {}

impl HttpContext for Props {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (name, value) in self.get_http_request_headers() {
            if let Some(k) = name.strip_prefix("x-prop-") {
                let answer = report(&value);
                self.add_http_request_header(&format!("x-val-{k}"), &answer);
            } else if let Some(k) = name.strip_prefix("x-resp-prop-") {
                self.later.push((k.to_string(), value));
            } else if name == "x-add-resp" {
                if let Some((n, v)) = value.split_once('=') {
                    self.add.push((n.to_string(), v.to_string()));
                }
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        for (n, v) in std::mem::take(&mut self.add) {
            self.add_http_response_header(&n, &v);
        }
        for (k, spec) in std::mem::take(&mut self.later) {
            let answer = report(&spec);
            self.set_http_response_header(&format!("x-val-{k}"), Some(&answer));
        }
        Action::Continue
    }
}
