//! Text that may come from a client or a JWKS server, made safe for one log line: at most
//! `max` characters (then `…`), control characters and `\` escaped (`\n`, `\x1b`, `\\`), so an
//! attacker can neither forge log lines nor flood the log with one request.

/// Bound for request-derived text in a log line (paths, reasons quoting a server's answer).
pub const MAX_LOGGED_CHARS: usize = 256;

pub fn loggable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 8);
    for (n, c) in text.chars().enumerate() {
        if n >= max {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_escaped() {
        assert_eq!(loggable("/a b", 10), "/a b");
        assert_eq!(
            loggable("x\ny\r\u{1b}[31m\\\u{7f}", 100),
            "x\\ny\\r\\x1b[31m\\\\\\x7f"
        );
        let long = "a".repeat(10_000);
        let out = loggable(&long, MAX_LOGGED_CHARS);
        assert_eq!(out.chars().count(), MAX_LOGGED_CHARS + 1);
        assert!(out.ends_with('…'));
        // Escaping cannot multiply the bound by more than the escape width.
        let nasty = "\u{1}".repeat(10_000);
        assert!(loggable(&nasty, MAX_LOGGED_CHARS).len() <= MAX_LOGGED_CHARS * 4 + 3);
    }
}
