//! Conformance module `sdk-properties`, written as a Rust SDK user would (proxy-wasm 0.2): it
//! reads the properties a request names and reports the host's answers in headers, so one
//! scenario file can check them in the harness and in Envoy alike.
//!
//! Request headers (each may repeat with different suffixes `<k>`):
//! - `x-prop-<k>: <spec>` → in `on_http_request_headers`, request header `x-val-<k>`;
//! - `x-resp-prop-<k>: <spec>` → in `on_http_response_headers`, response header `x-val-<k>`;
//! - `x-add-resp: name=value` → added to the response (before the reads above), once per line.
//!
//! `<spec>` is a dotted path (`request.headers.x-a`, sent as the SDK sends it: segments joined
//! by NUL, none trailing), or `raw:<bytes>` where each `\0` stands for a NUL byte (how the C++ SDK
//! sends a path: every segment NUL-terminated), optionally after `shape:` (below).
//!
//! The report: the value if it is printable UTF-8, else `hex:<lowercase hex>`; `<empty>` for an
//! Ok answer with no bytes; `<none>` for NotFound; `status:<n>` for any other status. With
//! `shape:` a value is reduced to its format, for values that differ between two runs (ports,
//! durations, times): printable text with each run of digits as `N` (`N.N.N.N:N`), else
//! `bin<length>`. With `len:` only the value's length is reported (`len=<n>`), for values
//! that change every run (the digest of a certificate minted per run).

#[cfg(target_arch = "wasm32")]
mod filter;

/// How a spec's path is sent: dotted segments joined by NUL, or `raw:` bytes with `\0` as NUL.
/// Returns the path bytes and whether only the value's shape is reported.
pub fn parse_spec(spec: &str) -> (Vec<u8>, Form) {
    let (spec, form) = if let Some(rest) = spec.strip_prefix("shape:") {
        (rest, Form::Shape)
    } else if let Some(rest) = spec.strip_prefix("len:") {
        (rest, Form::Len)
    } else {
        (spec, Form::Value)
    };
    let path = match spec.strip_prefix("raw:") {
        Some(raw) => raw.replace("\\0", "\0").into_bytes(),
        None => spec.split('.').collect::<Vec<_>>().join("\0").into_bytes(),
    };
    (path, form)
}

/// What a report shows of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Value,
    Shape,
    Len,
}

/// The report of a `proxy_get_property` answer (see the module docs).
pub fn render(answer: Result<Option<Vec<u8>>, u32>, form: Form) -> String {
    let shape = form == Form::Shape;
    match answer {
        Err(1) => "<none>".to_string(),
        Err(status) => format!("status:{status}"),
        Ok(None) => "<empty>".to_string(),
        Ok(Some(v)) if v.is_empty() => "<empty>".to_string(),
        Ok(Some(v)) if form == Form::Len => format!("len={}", v.len()),
        Ok(Some(v)) => match std::str::from_utf8(&v) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => {
                if shape {
                    let mut out = String::new();
                    for c in s.chars() {
                        if c.is_ascii_digit() {
                            if !out.ends_with('N') {
                                out.push('N');
                            }
                        } else {
                            out.push(c);
                        }
                    }
                    out
                } else {
                    s.to_string()
                }
            }
            _ if shape => format!("bin{}", v.len()),
            _ => {
                let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
                format!("hex:{hex}")
            }
        },
    }
}
