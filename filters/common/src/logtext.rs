//! Text that may come from a client or a JWKS server, made safe for one log line: at most `max`
//! bytes of output (then `…`), control characters, `"` and `\` escaped (`\n`, `\x1b`, `\"`,
//! `\\`), so an attacker can neither forge log lines nor flood the log with one request. Every
//! filter that logs request-derived text uses it.

/// Bound for request-derived text in a log line (paths, reasons quoting a server's answer).
pub const MAX_LOGGED_CHARS: usize = 256;

/// `text` escaped and cut to at most `max` bytes of output, `…` marking a cut.
pub fn loggable(text: &str, max: usize) -> String {
    loggable_cut(text, max).0
}

/// [`loggable`], and whether `text` was cut.
pub fn loggable_cut(text: &str, max: usize) -> (String, bool) {
    let mut out = String::with_capacity(text.len().min(max).saturating_add(8));
    for c in text.chars() {
        let escaped;
        let piece: &str = match c {
            '\\' => "\\\\",
            '"' => "\\\"",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if c.is_control() => {
                escaped = format!("\\x{:02x}", u32::from(c));
                &escaped
            }
            c => {
                escaped = c.to_string();
                &escaped
            }
        };
        if out.len().saturating_add(piece.len()) > max {
            out.push('…');
            return (out, true);
        }
        out.push_str(piece);
    }
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn bounded_and_escaped() {
        assert_eq!(loggable("/a b", 10), "/a b");
        assert_eq!(
            loggable("x\ny\r\u{1b}[31m\\\u{7f}\"", 100),
            "x\\ny\\r\\x1b[31m\\\\\\x7f\\\""
        );
        let long = "a".repeat(10_000);
        let out = loggable(&long, MAX_LOGGED_CHARS);
        assert_eq!(out.chars().count(), MAX_LOGGED_CHARS + 1);
        assert!(out.ends_with('…'));
        assert!(loggable_cut(&long, MAX_LOGGED_CHARS).1);
        assert_eq!(loggable_cut("a…", 10), ("a…".to_string(), false));
        // The bound is on the output: escapes count, multi-byte characters count in bytes.
        let nasty = "\u{1}".repeat(10_000);
        assert!(loggable(&nasty, MAX_LOGGED_CHARS).len() <= MAX_LOGGED_CHARS + '…'.len_utf8());
        let wide = "é".repeat(10_000);
        assert!(loggable(&wide, MAX_LOGGED_CHARS).len() <= MAX_LOGGED_CHARS + '…'.len_utf8());
    }
}
