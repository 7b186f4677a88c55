//! Duration strings as Istio/protobuf JSON writes them (`5s`, `1.5s`) plus `ms`, `m`, `h`.

/// Parse into milliseconds. `None` for anything malformed, negative or absurdly large.
pub fn parse_millis(text: &str) -> Option<u64> {
    let (number, unit_ms): (&str, u64) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        return None;
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || whole.len() > 9 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
        || (number.contains('.') && frac.is_empty())
    {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut millis = whole.checked_mul(unit_ms)?;
    // Fractional part: digits d1 d2 … scaled by unit/10, unit/100, …; sub-millisecond remainders drop.
    let mut scale = unit_ms;
    for digit in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        millis = millis.checked_add(u64::from(digit - b'0').checked_mul(scale)?)?;
    }
    Some(millis)
}

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
            "",
            "s",
            "5",
            "-1s",
            "1.s",
            ".5s",
            "1,5s",
            "5 s",
            "5S",
            "1e3s",
            "9999999999s",
            "1.0000000001s",
        ] {
            assert_eq!(parse_millis(bad), None, "{bad}");
        }
    }
}
