//! Duration strings as Istio/protobuf JSON writes them (`5s`, `1.5s`) plus `ms`, `m`, `h`: the
//! shared parser of `meshward_common::duration`, in milliseconds.

/// Parse into milliseconds. `None` for anything malformed, negative or absurdly large.
pub use meshward_common::duration::parse_millis;

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn forms() {
        assert_eq!(parse_millis("5s"), Some(5_000));
        assert_eq!(parse_millis("1.5s"), Some(1_500));
        assert_eq!(parse_millis("0.25s"), Some(250));
        assert_eq!(parse_millis("500ms"), Some(500));
        assert_eq!(parse_millis("10m"), Some(600_000));
        assert_eq!(parse_millis("1h"), Some(3_600_000));
        assert_eq!(parse_millis("0s"), Some(0));
        for bad in [
            "", "s", "5", "-1s", "1.s", ".5s", "1,5s", "5 s", "5S", "1e3s",
        ] {
            assert_eq!(parse_millis(bad), None, "{bad}");
        }
        // Large values parse (the shared parser works in u64 nanoseconds); the config bounds each
        // field (timeout ≤ 60s, jwksCacheDuration 1s..24h).
        assert_eq!(parse_millis("9999999999s"), Some(9_999_999_999_000));
        assert_eq!(parse_millis("1.0000000001s"), Some(1_000));
    }
}
