//! Duration strings in configs (`fillInterval: 1s`, `timeout: 1.5s`, `jwksCacheDuration: 10m`):
//! a decimal number and one unit, parsed once here for every filter.

/// Nanoseconds of a duration string: a decimal number and one unit (`ns`, `us`, `ms`, `s`, `m`,
/// `h`, `d`), e.g. `1s`, `0.25s`, `100ms`, `1m`. Fractions below a nanosecond are dropped. `None`
/// for anything else (no unit, a sign, `.5s`, `1.s`, a comma) or a value over `u64::MAX` ns.
pub fn parse_nanos(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = (text.get(..split)?, text.get(split..)?);
    let unit_ns: u128 = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || !all_digits(whole)
        || !all_digits(frac)
        || frac.len() > 18
        || (number.contains('.') && frac.is_empty())
    {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let frac_scale = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let ns = whole
        .checked_mul(unit_ns)?
        .checked_add(frac_value.checked_mul(unit_ns)?.checked_div(frac_scale)?)?;
    u64::try_from(ns).ok()
}

/// Whole milliseconds of a duration string (sub-millisecond parts dropped); see [`parse_nanos`].
pub fn parse_millis(text: &str) -> Option<u64> {
    parse_nanos(text).map(|ns| ns / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn units_and_fractions() {
        assert_eq!(parse_nanos("1ns"), Some(1));
        assert_eq!(parse_nanos("2us"), Some(2_000));
        assert_eq!(parse_nanos("250ms"), Some(250_000_000));
        assert_eq!(parse_nanos("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_nanos("0.25s"), Some(250_000_000));
        assert_eq!(parse_nanos("1m"), Some(60_000_000_000));
        assert_eq!(parse_nanos("1h"), Some(3_600_000_000_000));
        assert_eq!(parse_nanos("1d"), Some(86_400_000_000_000));
        assert_eq!(parse_nanos("0.5ns"), Some(0));
        assert_eq!(parse_millis("1.5s"), Some(1_500));
        assert_eq!(parse_millis("10m"), Some(600_000));
        assert_eq!(parse_millis("0s"), Some(0));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn malformed_or_too_large() {
        for bad in [
            "",
            "s",
            "5",
            "-1s",
            "1.s",
            ".5s",
            "1,5s",
            "1 s",
            "1S",
            "1sec",
            "1e3s",
            "99999999999d",
        ] {
            assert_eq!(parse_nanos(bad), None, "{bad:?}");
        }
    }
}
