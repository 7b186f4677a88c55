//! Response headers for a decision.

use crate::bucket::Decision;
use crate::config::HeaderStyle;

/// Body of a rejection (Envoy's local_ratelimit text).
pub const REJECT_BODY: &str = "local_rate_limited";

/// The configured rate-limit headers (on allowed and rejected responses alike).
pub fn rate_limit_headers(style: HeaderStyle, d: &Decision) -> Vec<(&'static str, String)> {
    match style {
        HeaderStyle::None => Vec::new(),
        HeaderStyle::DraftVersion03 => vec![
            ("x-ratelimit-limit", d.limit.to_string()),
            ("x-ratelimit-remaining", d.remaining.to_string()),
            ("x-ratelimit-reset", d.reset_secs.to_string()),
        ],
        HeaderStyle::Ietf => vec![
            (
                "ratelimit-policy",
                format!("\"default\";q={};w={}", d.limit, d.window_secs),
            ),
            (
                "ratelimit",
                format!("\"default\";r={};t={}", d.remaining, d.reset_secs),
            ),
        ],
    }
}

/// Headers of a rejection: `retry-after` (seconds, at least 1) and the configured headers.
pub fn rejection_headers(style: HeaderStyle, d: &Decision) -> Vec<(&'static str, String)> {
    let mut headers = vec![("retry-after", d.retry_after_secs.max(1).to_string())];
    headers.extend(rate_limit_headers(style, d));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(allowed: bool) -> Decision {
        Decision {
            allowed,
            limit: 20,
            remaining: if allowed { 7 } else { 0 },
            reset_secs: 1,
            retry_after_secs: if allowed { 0 } else { 3 },
            window_secs: 2,
        }
    }

    #[test]
    fn draft_03() {
        assert_eq!(
            rate_limit_headers(HeaderStyle::DraftVersion03, &d(true)),
            vec![
                ("x-ratelimit-limit", "20".to_string()),
                ("x-ratelimit-remaining", "7".to_string()),
                ("x-ratelimit-reset", "1".to_string())
            ]
        );
    }

    #[test]
    fn ietf() {
        assert_eq!(
            rate_limit_headers(HeaderStyle::Ietf, &d(true)),
            vec![
                ("ratelimit-policy", "\"default\";q=20;w=2".to_string()),
                ("ratelimit", "\"default\";r=7;t=1".to_string())
            ]
        );
    }

    #[test]
    fn rejection_has_retry_after_first() {
        assert!(rate_limit_headers(HeaderStyle::None, &d(false)).is_empty());
        assert_eq!(
            rejection_headers(HeaderStyle::None, &d(false)),
            vec![("retry-after", "3".to_string())]
        );
        let h = rejection_headers(HeaderStyle::DraftVersion03, &d(false));
        assert_eq!(h.len(), 4);
        assert_eq!(h[2], ("x-ratelimit-remaining", "0".to_string()));
        let mut zero = d(false);
        zero.retry_after_secs = 0;
        assert_eq!(rejection_headers(HeaderStyle::None, &zero)[0].1, "1");
    }
}
