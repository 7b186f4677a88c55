//! header_limits_core::decide on arbitrary limits and header maps (any bytes in names and
//! values, duplicates, pseudo-headers).
//!
//! Oracle: the limits are recomputed here independently, from docs/header-limits.md ("What is
//! counted, exactly" and "Order of checks"); the verdict must be exactly the first failing check
//! of that model — so a rejected map really violates a limit and an accepted one violates none —
//! and under DROP_HEADER the drop list is exactly the distinct underscore names.
#![no_main]

use header_limits_core::{decide, Config, Reason, UnderscoreAction, Verdict};
use libfuzzer_sys::fuzz_target;
use meshward_fuzz::bytes::Reader;

fn model(l: &Config, map: &[(Vec<u8>, Vec<u8>)]) -> Result<(Vec<Vec<u8>>, usize), Reason> {
    let all = || map.iter().flat_map(|(n, v)| [n, v]);
    let forbidden = all().any(|b| b.iter().any(|&c| c == 0 || c == b'\r' || c == b'\n'));
    let control = all().any(|b| b.iter().any(|&c| c < 0x20 || c == 0x7f));
    let total: usize = map.iter().map(|(n, v)| n.len() + v.len()).sum();
    let longest = map.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let path_len = map
        .iter()
        .find(|(n, _)| n == b":path")
        .map_or(0, |(_, v)| v.len());
    let underscore = |n: &Vec<u8>| n.first() != Some(&b':') && n.contains(&b'_');
    let underscores = map.iter().filter(|(n, _)| underscore(n)).count();
    if forbidden {
        return Err(Reason::InvalidChar);
    }
    if control && l.reject_control_characters {
        return Err(Reason::ControlChar);
    }
    if total > l.max_request_headers_bytes {
        return Err(Reason::Size);
    }
    if map.len() > l.max_headers_count {
        return Err(Reason::Count);
    }
    if l.max_path_bytes.is_some_and(|m| path_len > m) {
        return Err(Reason::PathBytes);
    }
    if l.max_header_value_bytes.is_some_and(|m| longest > m) {
        return Err(Reason::ValueBytes);
    }
    match l.headers_with_underscores_action {
        UnderscoreAction::RejectRequest if underscores > 0 => Err(Reason::Underscore),
        UnderscoreAction::DropHeader => {
            let mut names: Vec<Vec<u8>> = map
                .iter()
                .map(|(n, _)| n.clone())
                .filter(underscore)
                .collect();
            names.sort();
            names.dedup();
            Ok((names, underscores))
        }
        _ => Ok((Vec::new(), 0)),
    }
}

const NAMES: [&[u8]; 8] = [
    b":path",
    b":authority",
    b":method",
    b"x_a",
    b"x-a",
    b"host",
    b"a_b_c",
    b":x_y",
];

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let flags = r.u8();
    let limits = Config {
        // Small limits, so that the fuzzer reaches every boundary.
        max_request_headers_bytes: usize::from(r.u16() % 4096),
        max_headers_count: usize::from(r.u8() % 40),
        max_header_value_bytes: (flags & 1 != 0).then(|| usize::from(r.u16() % 1024)),
        max_path_bytes: (flags & 2 != 0).then(|| usize::from(r.u16() % 1024)),
        headers_with_underscores_action: match (flags >> 2) % 3 {
            0 => UnderscoreAction::Allow,
            1 => UnderscoreAction::RejectRequest,
            _ => UnderscoreAction::DropHeader,
        },
        reject_control_characters: flags & 0x20 != 0,
    };
    let mut map: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    while !r.is_empty() && map.len() < 64 {
        let tag = r.u8();
        // Either a well-known name (so `:path`, duplicates and underscores are common) or raw bytes.
        let name = match NAMES.get(usize::from(tag & 0x0f)) {
            Some(n) => n.to_vec(),
            None => r.until(0xff).to_vec(),
        };
        let value = if tag & 0x80 != 0 {
            vec![b'v'; usize::from(r.u16() % 2048)] // long values without long inputs
        } else {
            r.until(0xff).to_vec()
        };
        map.push((name, value));
    }

    let verdict = decide(&limits, &map);
    match (model(&limits, &map), verdict) {
        (Err(want), Verdict::Reject(got)) => {
            assert_eq!(got.reason, want, "{limits:?} {map:?}");
            assert_eq!(got.status, want.status());
        }
        (
            Ok((names, entries)),
            Verdict::Continue {
                drop,
                dropped_entries,
            },
        ) => {
            let drop: Vec<Vec<u8>> = drop.iter().map(|n| n.to_vec()).collect();
            assert_eq!(drop, names, "{limits:?} {map:?}");
            assert_eq!(dropped_entries, entries);
        }
        (want, got) => panic!("model {want:?} but verdict {got:?} for {limits:?} {map:?}"),
    }
});
